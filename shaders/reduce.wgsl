// Deterministic reductions over one axis of a tensor viewed as [outer, len, inner]:
// sum (scaled, so mean too), sum of squares, max, argmax, and the gradient of max.
// No atomics: every output is produced by one invocation (rows) or one workgroup (tree)
// in a fixed order, so results are bit-identical from run to run.
//
// Bindings (group 0): 0 = Params (uniform); then per entry point
//   reduce_rows:  1 x (read), 2 y (write)    y[o, i] = scale * (op over l of x[o, l, i])
//   reduce_team:  1 x (read), 2 y (write)    as reduce_rows, for inner == 1 (a contiguous axis)
//   reduce_tree:  1 x (read), 2 y (write)    y[o, c, i] = op over l in chunk c (scale on the last pass)
//   argmax_rows:  1 x (read), 2 idx (u32 write)
//   max_backward: 1 gy (read), 2 idx (u32 read), 3 gx (write)  gx[o, l, i] = gy[o, i] if l == idx[o, i]
// Workgroup: rows/argmax/max_backward: 256 x 1 x 1, one invocation per output (or input) element,
// grid folded into y past 65535 groups. reduce_team (GPUs): 32 lanes per output, 8 outputs per
// workgroup (output (wid.x + wid.y * nwg.x) * 8 + t / 32): lane l reads l, l + 32, .. so a
// team's loads coalesce (one invocation per output reads 4 len bytes apart from its neighbours),
// then a tree halves 32 -> 1. reduce_tree: 256 lanes, one workgroup per (o, i, chunk), each lane
// strides through its chunk, then a shared-memory tree halves 256 -> 1.
// Override constant OP: 0 = sum, 1 = max, 2 = sum of squares.

struct Params {
    outer: u32,
    len: u32,
    inner: u32,
    chunk: u32,   // reduce_tree: elements of the axis per workgroup
    scale: f32,   // multiplies the result of sum / sum of squares
    n: u32,       // number of invocations that do work
    chunks: u32,  // reduce_tree: chunks per output
    _pad: u32,
}

override OP: u32 = 0u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read_write> idx_out: array<u32>;
// max_backward
@group(0) @binding(1) var<storage, read> mb_gy: array<f32>;
@group(0) @binding(2) var<storage, read> mb_idx: array<u32>;
@group(0) @binding(3) var<storage, read_write> mb_gx: array<f32>;

var<workgroup> tree: array<f32, 256>;

fn identity() -> f32 {
    if (OP == 1u) { return -3.4028235e38; }
    return 0.0;
}

fn combine(acc: f32, v: f32) -> f32 {
    switch OP {
        case 1u: { return select(acc, v, v > acc || v != v); }
        case 2u: { return acc + v * v; }
        default: { return acc + v; }
    }
}

// Merges two partial results (squares are already squared).
fn merge(a: f32, b: f32) -> f32 {
    if (OP == 1u) { return select(a, b, b > a || b != b); }
    return a + b;
}

fn finish(v: f32) -> f32 {
    if (OP == 1u) { return v; }
    return v * p.scale;
}

@compute @workgroup_size(256)
fn reduce_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * 256u;
    if (t >= p.n) { return; }
    let o = t / p.inner;
    let i = t % p.inner;
    var acc = identity();
    var at = o * p.len * p.inner + i;
    for (var l = 0u; l < p.len; l++) {
        acc = combine(acc, x[at]);
        at += p.inner;
    }
    y[t] = finish(acc);
}

@compute @workgroup_size(256)
fn reduce_team(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let o = (wid.x + wid.y * nwg.x) * 8u + t / 32u;
    let lane = t % 32u;
    let live = o < p.n; // outputs past the end still join the barriers
    var acc = identity();
    if (live) {
        for (var l = lane; l < p.len; l += 32u) {
            acc = combine(acc, x[o * p.len + l]);
        }
    }
    tree[t] = acc;
    workgroupBarrier();
    for (var s = 16u; s > 0u; s >>= 1u) {
        if (lane < s) {
            tree[t] = merge(tree[t], tree[t + s]);
        }
        workgroupBarrier();
    }
    if (live && lane == 0u) {
        y[o] = finish(tree[t]);
    }
}

@compute @workgroup_size(256)
fn reduce_tree(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let w = wid.x + wid.y * nwg.x;     // (output, chunk) pair
    let live = w < p.n;
    let c = w % p.chunks;
    let t = w / p.chunks;              // output index (o, i)
    let o = t / p.inner;
    let i = t % p.inner;
    var acc = identity();
    if (live) {
        let start = c * p.chunk;
        let stop = min(start + p.chunk, p.len);
        for (var l = start + lid.x; l < stop; l += 256u) {
            acc = combine(acc, x[(o * p.len + l) * p.inner + i]);
        }
    }
    tree[lid.x] = acc;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (lid.x < s) {
            tree[lid.x] = merge(tree[lid.x], tree[lid.x + s]);
        }
        workgroupBarrier();
    }
    if (live && lid.x == 0u) {
        // partial results land as [outer, chunks, inner]
        let v = tree[0];
        y[(o * p.chunks + c) * p.inner + i] = select(v, finish(v), p.chunks == 1u);
    }
}

@compute @workgroup_size(256)
fn argmax_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * 256u;
    if (t >= p.n) { return; }
    let o = t / p.inner;
    let i = t % p.inner;
    var best = x[o * p.len * p.inner + i];
    var arg = 0u;
    for (var l = 1u; l < p.len; l++) {
        let v = x[(o * p.len + l) * p.inner + i];
        if (v > best) { best = v; arg = l; }  // ties keep the first index
    }
    idx_out[t] = arg;
}

@compute @workgroup_size(256)
fn max_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * 256u;   // input element (o, l, i)
    if (t >= p.n) { return; }
    let i = t % p.inner;
    let l = (t / p.inner) % p.len;
    let o = t / (p.inner * p.len);
    let out = o * p.inner + i;
    mb_gx[t] = select(0.0, mb_gy[out], mb_idx[out] == l);
}
