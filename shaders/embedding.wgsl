// Embedding lookup and its deterministic gradient, for a table [V, D] and n ids:
//   embedding_forward:       y[p, d] = table[ids[p], d]  (ids are validated on the host; an id >= V
//                            would write 0 instead of reading out of bounds)
//   embedding_backward_part: part[k, d] = sum over q in chunks[k] .. chunks[k + 1] of
//                            gy[positions[q], d], in increasing position order: `positions` lists
//                            the positions by the id they read (a CSR inverse index built on the
//                            host), cut into chunks of at most 32 positions of one id each
//   embedding_backward:      gtable[v, d] = sum over k in row_chunks[v] .. row_chunks[v + 1]
//                            (increasing) of part[k, d]; rows that no id reads get 0. No atomics.
// Two passes so that no invocation walks a frequent id's whole list (the padding id: thousands of
// dependent loads in a row, a quarter of a Transformer step on an H200 in one pass).
//
// Bindings (group 0): 0 = Params (uniform); then per entry point
//   embedding_forward:       1 table (read), 2 ids (u32 read), 3 y (write)
//   embedding_backward_part: 1 gy (read), 2 chunks (u32 read, K + 1), 3 positions (u32 read),
//                            4 part [K, D] (write)
//   embedding_backward:      1 part (read), 2 row_chunks (u32 read, V + 1), 3 gtable (write)
// Workgroup: 256 x 1 x 1, one invocation per output element ((p, d) forward, (k, d) and (v, d)
// backward, d fastest so neighbouring lanes touch neighbouring addresses); the grid folds into y
// past 65535 groups (flat index gid.x + gid.y * nwg.x * 256).

struct Params {
    n: u32,      // output elements
    d: u32,      // embedding width D
    vocab: u32,  // V
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

// embedding_forward
@group(0) @binding(1) var<storage, read> table: array<f32>;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
// embedding_backward_part
@group(0) @binding(1) var<storage, read> gy: array<f32>;
@group(0) @binding(2) var<storage, read> chunks: array<u32>;
@group(0) @binding(3) var<storage, read> positions: array<u32>;
@group(0) @binding(4) var<storage, read_write> part_out: array<f32>;
// embedding_backward
@group(0) @binding(1) var<storage, read> part: array<f32>;
@group(0) @binding(2) var<storage, read> row_chunks: array<u32>;
@group(0) @binding(3) var<storage, read_write> gtable: array<f32>;

fn flat(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 256u;
}

@compute @workgroup_size(256)
fn embedding_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.n) { return; }
    let id = ids[i / p.d];
    if (id >= p.vocab) {
        y[i] = 0.0;
        return;
    }
    y[i] = table[id * p.d + i % p.d];
}

@compute @workgroup_size(256)
fn embedding_backward_part(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.n) { return; }
    let k = i / p.d;
    let col = i % p.d;
    var acc = 0.0;
    for (var q = chunks[k]; q < chunks[k + 1u]; q++) {
        acc += gy[positions[q] * p.d + col];
    }
    part_out[i] = acc;
}

@compute @workgroup_size(256)
fn embedding_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.n) { return; }
    let v = i / p.d;
    let col = i % p.d;
    var acc = 0.0;
    for (var k = row_chunks[v]; k < row_chunks[v + 1u]; k++) {
        acc += part[k * p.d + col];
    }
    gtable[i] = acc;
}
