// Atom-modeling kernels (docs/spec: shared/spec/atom-modeling.md):
//   pdist:              dbar[A, B] = |z_A - z_B| for latents z [N, D]; NORM (override) picks the distance:
//                       0 = sqrt(|.|_2^2 + eps^2) (the loss's floored distance), 1 = |.|_1, 2 = |.|_2.
//                       One invocation per 4 x 4 block of pairs (A, B), 8 loads per 16 differences.
//                       For long latents on GPUs the dims are split into p.splits runs of p.chunks:
//                       each part writes its raw sums (PART) and pdist_finish adds them in order
//                       and takes the distance (a block per invocation alone keeps too few busy).
//   pdist_coef:         coef[B, A] = (G[A, B] + G[B, A]) / dbar[A, B] (NORM 0, 2; 0 where dbar = 0) or
//                       G[A, B] + G[B, A] (NORM 1): the pair's weight in the gradient, once per pair.
//   pdist_backward:     dz[A, d] = sum_B coef[B, A] * (z_A - z_B)[d] (NORM 0, 2) or
//                       sum_B coef[B, A] * sign((z_A - z_B)[d]) (NORM 1; 0 at 0), gathered: one
//                       invocation per 4 samples A x 4 dims d, looping B in order.
//   structure_partial:  for tokens h [N, n, m], importances w [N, n] and per-sample token counts
//                       cnt [N] (tokens i >= cnt[A] are padding and never read), the weighted
//                       all-pairs token distance S[A, B] = sum_i sum_j w_Ai w_Bj d_ij(A, B),
//                       d_ij = sqrt(|h_Ai - h_Bj|^2 + eps^2), split by 4-token tiles of A:
//                       part[(A * N + B) * tiles + it] = the terms with i in tile it. Only A <= B is
//                       computed (S is symmetric, so S[B, A] is taken from the same partials and is
//                       bit-identical to S[A, B]).
//   structure_reduce:   S[A, B] = sum over it (increasing) of part[(min(A,B) * N + max(A,B)) * tiles + it]
//   structure_backward: with Gs = G + G^T and G = dL/dS [N, N]:
//                       dw[A, i] = sum_B Gs[A, B] sum_j w_Bj d_ij
//                       dh[A, i, :] = w_Ai sum_B Gs[A, B] sum_j w_Bj (h_Ai - h_Bj) / d_ij
//                       (0 for padded tokens), gathered: one invocation per (split, A, 4-token tile,
//                       chunk of MC output dims) loops the split's samples B and their tokens j in
//                       increasing order and writes split `split` of dh [splits, N, n, m] and
//                       dw [splits, N, n]. splits = 1 (CPU adapters) writes the gradients directly;
//                       more splits give a GPU enough invocations, and sum_splits adds them up.
//   (The same two sums in Gram form for GPU adapters, tiled like a matrix product: atom_gram.wgsl.)
//   sum_splits:         out[e] = sum over s (increasing) of part[s * total + e]
//   mask_tokens:        y[A, i, ...] = x[A, i, ...] where i < cnt[A], else exactly 0 (a select, so
//                       NaN/Inf in padding never leaks); its own gradient.
//   importance:         the importance head w[A, i] = sigmoid(h_Ai . u + c) for real tokens, exactly 0
//                       for padding (whose h is never read); importance_dh: dh[A, i, k] = gz_Ai u_k,
//                       importance_duc_part: part[c, k] = sum over the real tokens of chunk c (64
//                       tokens, in order) of gz h[., k] (k < m) or gz (k = m), with gz = g w (1 - w);
//                       importance_duc_sum: du[k] = sum over c (increasing) of part[c, k], dc = the
//                       same at k = m (gathered: one invocation per output, a fixed order).
//
// Precision: the register-blocked kernels use direct differences (h_Ai - h_Bj)^2. The Gram form
// |a|^2 + |b|^2 - 2 a.b cancels for near-identical tokens (relative error ~1e-7 |h|^2 / d^2), and with
// eps = 1e-3 exactly those pairs (the A == B diagonal, near-duplicate samples of a collapsing GAN)
// carry the largest gradients (h_Ai - h_Bj) / d_ij; the Gram kernels (atom_gram.wgsl) therefore
// centre the tokens and recompute such distances from differences. Differences cost one subtraction
// per multiply-add: 2x the instructions of the Gram form.
//
// Register blocking: every structure invocation holds a 4 (tokens i of A) x 4 (tokens j of B) tile
// of squared distances as array<vec4<f32>, 4>, so each step over the m dims loads 8 values for 16
// subtract + 16 multiply-add. Tiles past the token count clamp their loads to the last valid token
// and get weight 0 by select, so padded data is never read. The 8-token kernels (structure_partial8,
// structure_backward8; 8 x 8 tiles) read the tokens as vec4 rows (st_h4, p.mv vec4s per token,
// m zero-padded to a multiple of 4 by the host where needed): 16 loads per 4 dims of 64 pairs.
// structure_backward8 takes its 8 A rows from all samples' tokens as one list (a tile may span
// two samples, each row with its own Gs), so no tile is mostly past a sample's last token.
//
// Bindings (group 0): 0 = Params (uniform); then per entry point
//   pdist:              1 z (read), 2 dbar (write; PART: parts [splits, N, N])
//   pdist_finish:       1 parts (read), 2 dbar (write); 256 invocations, one per pair
//   pdist_coef:         1 dbar, 2 g (read), 3 coef (write)
//   pdist_backward:     1 z, 2 coef (read), 3 dz (write)
//   structure_partial:  1 h, 2 w, 3 cnt (u32) (read), 4 part (write)
//   structure_reduce:   1 part (read), 2 s (write)
//   structure_backward: 1 h, 2 w, 3 cnt (u32), 4 g (read), 5 dh, 6 dw (write)
//   sum_splits:         1 part (read), 2 out (write)
//   mask_tokens:        1 x, 2 cnt (u32) (read), 3 y (write)
//   importance:         1 h, 2 u, 3 c, 4 cnt (read), 5 w (write)
//   importance_dh:      1 w, 2 g, 3 u, 4 cnt (read), 5 dh (write)
//   importance_duc_part: 1 w, 2 g, 3 h, 4 cnt (read), 5 part [chunks, m + 1] (write)
//   importance_duc_sum: 1 part (read), 2 du [m], 3 dc [1] (write)
// Workgroup: 1-D, no shared memory and no barriers (CPU rasterisers such as lavapipe serialise
// barriers). pdist, pdist_backward: 64 invocations, one per 4 x 4 output block (block row fastest);
// pdist_coef, structure_reduce, sum_splits, mask_tokens, importance*: 256 invocations, one per
// output element (importance: per token; importance_duc_part: per (chunk, k); _sum: per k).
// structure_partial: 64 invocations, one per (upper-triangle pair A <= B, i-tile), the i-tile
// fastest, so the lanes of a SIMD group share the pair and run the same number of j-tiles;
// structure_backward: 64 invocations, one per (split, A, i-tile, dim chunk), the chunk fastest
// (structure_backward8: per (split, 8 rows of the flat token list, dim chunk)). The grid
// folds into y past 65535 groups (flat index gid.x + gid.y * nwg.x * workgroup size).

struct Params {
    ns: u32,     // N samples
    nt: u32,     // n padded tokens per sample (structure, mask_tokens)
    m: u32,      // token dim m (structure) or latent dim D (pdist)
    tiles: u32,  // ceil(n / 4)
    eps2: f32,   // eps^2
    chunks: u32, // structure_backward: ceil(m / MC)
    total: u32,  // invocations that do work (sum_splits: elements per split)
    inner: u32,  // mask_tokens: elements per token (product of the dims after n)
    splits: u32, // structure_backward, sum_splits: number of splits of the samples B
    bper: u32,   // structure_backward: samples B per split
    mv: u32,     // the 8-token kernels: vec4s per token row (m rounded up to 4, zero-padded)
    flatb: u32,  // structure_backward8: 1 = B's tokens as one flat list too (every sample full, n >= 8)
}

override NORM: u32 = 0u;
// pdist: write each part's raw sums (squares or absolute values) for pdist_finish.
override PART: bool = false;

// Output dims per structure_backward invocation (the size of its private accumulator).
const MC: u32 = 32u;

@group(0) @binding(0) var<uniform> p: Params;

// pdist / pdist_backward
@group(0) @binding(1) var<storage, read> pd_z: array<f32>;
@group(0) @binding(2) var<storage, read_write> pd_out: array<f32>;
@group(0) @binding(1) var<storage, read> pc_dbar: array<f32>;
@group(0) @binding(2) var<storage, read> pc_g: array<f32>;
@group(0) @binding(3) var<storage, read_write> pc_coef: array<f32>;
@group(0) @binding(2) var<storage, read> pb_coef: array<f32>;
@group(0) @binding(3) var<storage, read_write> pb_dz: array<f32>;
// structure_*
@group(0) @binding(1) var<storage, read> st_h: array<f32>;
@group(0) @binding(1) var<storage, read> st_h4: array<vec4<f32>>; // the 8-token kernels
@group(0) @binding(2) var<storage, read> st_w: array<f32>;
@group(0) @binding(3) var<storage, read> st_cnt: array<u32>;
@group(0) @binding(4) var<storage, read_write> st_part: array<f32>;
@group(0) @binding(1) var<storage, read> sr_part: array<f32>;
@group(0) @binding(2) var<storage, read_write> sr_s: array<f32>;
@group(0) @binding(4) var<storage, read> sb_g: array<f32>;
@group(0) @binding(5) var<storage, read_write> sb_dh: array<f32>;
@group(0) @binding(6) var<storage, read_write> sb_dw: array<f32>;
// sum_splits
@group(0) @binding(1) var<storage, read> ss_part: array<f32>;
@group(0) @binding(2) var<storage, read_write> ss_out: array<f32>;
// mask_tokens
@group(0) @binding(1) var<storage, read> mt_x: array<f32>;
@group(0) @binding(2) var<storage, read> mt_cnt: array<u32>;
@group(0) @binding(3) var<storage, read_write> mt_y: array<f32>;

fn flat(gid: vec3<u32>, nwg: vec3<u32>, wg: u32) -> u32 {
    return gid.x + gid.y * nwg.x * wg;
}

// Column d of rows r0 .. r0 + 3 of z [rows, D = p.m], rows past the end clamped to the last one.
fn z4(r0: u32, d: u32) -> vec4<f32> {
    let last = p.ns - 1u;
    return vec4<f32>(pd_z[min(r0, last) * p.m + d], pd_z[min(r0 + 1u, last) * p.m + d],
        pd_z[min(r0 + 2u, last) * p.m + d], pd_z[min(r0 + 3u, last) * p.m + d]);
}

// The distance from its accumulated sum (squares, or absolute values for NORM 1).
fn finish_dist(acc: vec4<f32>) -> vec4<f32> {
    if (NORM == 0u) { return sqrt(acc + vec4<f32>(p.eps2)); }
    if (NORM == 2u) { return sqrt(acc); }
    return acc;
}

@compute @workgroup_size(64)
fn pdist(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let flat_idx = flat(gid, nwg, 64u);
    let blocks = (p.ns + 3u) / 4u;
    if (flat_idx >= blocks * blocks * p.splits) { return; }
    // Part `part` of `p.splits` sums dims [part * p.chunks, ...) (PART: raw sums for pdist_finish).
    let part = flat_idx / (blocks * blocks);
    let idx = flat_idx % (blocks * blocks);
    let a0 = (idx % blocks) * 4u;
    let b0 = (idx / blocks) * 4u;
    // acc[i][j] for the pair (a0 + i, b0 + j). (z_A - z_B) is the exact negation of (z_B - z_A)
    // and every element takes the same operations in the same order, so dbar is bit-symmetric.
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var d = part * p.chunks; d < min(p.m, (part + 1u) * p.chunks); d++) {
        let za = z4(a0, d);
        let zb = z4(b0, d);
        let e0 = za.x - zb;
        let e1 = za.y - zb;
        let e2 = za.z - zb;
        let e3 = za.w - zb;
        if (NORM == 1u) {
            acc0 += abs(e0);
            acc1 += abs(e1);
            acc2 += abs(e2);
            acc3 += abs(e3);
        } else {
            acc0 = fma(e0, e0, acc0);
            acc1 = fma(e1, e1, acc1);
            acc2 = fma(e2, e2, acc2);
            acc3 = fma(e3, e3, acc3);
        }
    }
    var rows = mat4x4<f32>(acc0, acc1, acc2, acc3);
    if (!PART) { rows = mat4x4<f32>(finish_dist(acc0), finish_dist(acc1), finish_dist(acc2), finish_dist(acc3)); }
    let o = part * p.ns * p.ns;
    for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
            if (a0 + i < p.ns && b0 + j < p.ns) { pd_out[o + (a0 + i) * p.ns + b0 + j] = rows[i][j]; }
        }
    }
}

// dbar[e] = the distance from the parts' sums, added in order (part 0 first).
@compute @workgroup_size(256)
fn pdist_finish(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = flat(gid, nwg, 256u);
    if (e >= p.ns * p.ns) { return; }
    var acc = 0.0;
    for (var s = 0u; s < p.splits; s++) { acc += pd_z[s * p.ns * p.ns + e]; }
    pd_out[e] = finish_dist(vec4<f32>(acc)).x;
}

@compute @workgroup_size(256)
fn pdist_coef(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = flat(gid, nwg, 256u);
    if (idx >= p.total) { return; }
    let a = idx / p.ns;
    let b = idx % p.ns;
    let g = pc_g[a * p.ns + b] + pc_g[b * p.ns + a];
    var c = g;
    if (NORM != 1u) {
        // NORM 2 at distance 0 (and A == B): gradient defined as 0.
        let dist = pc_dbar[a * p.ns + b];
        c = select(0.0, g / dist, dist > 0.0);
    }
    pc_coef[b * p.ns + a] = c;
}

// Dims d0 .. d0 + 3 of row r of z (dims past D clamped to the last one).
fn z_dims4(r: u32, d0: u32) -> vec4<f32> {
    let row = r * p.m;
    let last = p.m - 1u;
    return vec4<f32>(pd_z[row + d0], pd_z[row + min(d0 + 1u, last)], pd_z[row + min(d0 + 2u, last)],
        pd_z[row + min(d0 + 3u, last)]);
}

@compute @workgroup_size(64)
fn pdist_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = flat(gid, nwg, 64u);
    let ablocks = (p.ns + 3u) / 4u;
    let dblocks = (p.m + 3u) / 4u;
    if (idx >= ablocks * dblocks) { return; }
    let a0 = (idx % ablocks) * 4u;
    let d0 = (idx / ablocks) * 4u;
    let lasta = p.ns - 1u;
    // z_A at the block's dims, rows a0 .. a0 + 3 (clamped past the ends; those sums are not stored).
    let za0 = z_dims4(a0, d0);
    let za1 = z_dims4(min(a0 + 1u, lasta), d0);
    let za2 = z_dims4(min(a0 + 2u, lasta), d0);
    let za3 = z_dims4(min(a0 + 3u, lasta), d0);
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var b = 0u; b < p.ns; b++) {
        let cb = b * p.ns;
        let c = vec4<f32>(pb_coef[cb + min(a0, lasta)], pb_coef[cb + min(a0 + 1u, lasta)],
            pb_coef[cb + min(a0 + 2u, lasta)], pb_coef[cb + min(a0 + 3u, lasta)]);
        let zb = z_dims4(b, d0);
        if (NORM == 1u) {
            acc0 = fma(vec4<f32>(c.x), sign(za0 - zb), acc0);
            acc1 = fma(vec4<f32>(c.y), sign(za1 - zb), acc1);
            acc2 = fma(vec4<f32>(c.z), sign(za2 - zb), acc2);
            acc3 = fma(vec4<f32>(c.w), sign(za3 - zb), acc3);
        } else {
            acc0 = fma(vec4<f32>(c.x), za0 - zb, acc0);
            acc1 = fma(vec4<f32>(c.y), za1 - zb, acc1);
            acc2 = fma(vec4<f32>(c.z), za2 - zb, acc2);
            acc3 = fma(vec4<f32>(c.w), za3 - zb, acc3);
        }
    }
    let rows = mat4x4<f32>(acc0, acc1, acc2, acc3);
    for (var r = 0u; r < 4u; r++) {
        for (var j = 0u; j < 4u; j++) {
            if (a0 + r < p.ns && d0 + j < p.m) { pb_dz[(a0 + r) * p.m + d0 + j] = rows[r][j]; }
        }
    }
}

// Flat offsets of the 4 token rows of tile (sample s, tokens t0..t0+3), clamped to valid tokens.
fn tile_rows(s: u32, t0: u32, cnt: u32) -> vec4<u32> {
    let last = cnt - 1u;
    let base = s * p.nt;
    return vec4<u32>(
        (base + min(t0, last)) * p.m,
        (base + min(t0 + 1u, last)) * p.m,
        (base + min(t0 + 2u, last)) * p.m,
        (base + min(t0 + 3u, last)) * p.m,
    );
}

// Importances of that tile, exactly 0 past the token count (padding never read).
fn tile_weights(s: u32, t0: u32, cnt: u32) -> vec4<f32> {
    let last = cnt - 1u;
    let base = s * p.nt;
    return vec4<f32>(
        select(0.0, st_w[base + min(t0, last)], t0 < cnt),
        select(0.0, st_w[base + min(t0 + 1u, last)], t0 + 1u < cnt),
        select(0.0, st_w[base + min(t0 + 2u, last)], t0 + 2u < cnt),
        select(0.0, st_w[base + min(t0 + 3u, last)], t0 + 3u < cnt),
    );
}

// Token distances d[t][u] = sqrt(|h[ra[t]] - h[rb[u]]|^2 + eps^2) of a 4 x 4 tile.
fn tile_dist(ra: vec4<u32>, rb: vec4<u32>) -> array<vec4<f32>, 4> {
    var acc: array<vec4<f32>, 4>;
    for (var k = 0u; k < p.m; k++) {
        let hb = vec4<f32>(st_h[rb.x + k], st_h[rb.y + k], st_h[rb.z + k], st_h[rb.w + k]);
        let d0 = st_h[ra.x + k] - hb;
        let d1 = st_h[ra.y + k] - hb;
        let d2 = st_h[ra.z + k] - hb;
        let d3 = st_h[ra.w + k] - hb;
        acc[0] += d0 * d0;
        acc[1] += d1 * d1;
        acc[2] += d2 * d2;
        acc[3] += d3 * d3;
    }
    let e = vec4<f32>(p.eps2);
    return array<vec4<f32>, 4>(sqrt(acc[0] + e), sqrt(acc[1] + e), sqrt(acc[2] + e), sqrt(acc[3] + e));
}

// (a, b) with a <= b of upper-triangle pair q = b (b + 1) / 2 + a.
fn upper_pair(q: u32) -> vec2<u32> {
    var b = u32((sqrt(8.0 * f32(q) + 1.0) - 1.0) * 0.5);
    // f32 rounding can land one off either way: correct it exactly.
    if (b * (b + 1u) / 2u > q) { b -= 1u; }
    if ((b + 1u) * (b + 2u) / 2u <= q) { b += 1u; }
    return vec2<u32>(q - b * (b + 1u) / 2u, b);
}

// What structure_partial invocation idx computes, for token tiles of `tile`: the terms of
// S[a, b] (upper triangle a <= b, pair q = b (b + 1) / 2 + a: S is symmetric) with A's tokens
// i0 .. i0 + tile - 1, into part[out].
struct FwdJob {
    a: u32,
    b: u32,
    ca: u32,
    cb: u32,
    i0: u32,
    out: u32,
}

fn forward_job(idx: u32, tile: u32) -> FwdJob {
    let it = idx % p.tiles;
    let ab = upper_pair(idx / p.tiles);
    return FwdJob(ab.x, ab.y, st_cnt[ab.x], st_cnt[ab.y], it * tile, (ab.x * p.ns + ab.y) * p.tiles + it);
}

@compute @workgroup_size(64)
fn structure_partial(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = flat(gid, nwg, 64u);
    if (idx >= p.total) { return; }
    let job = forward_job(idx, 4u);
    let a = job.a;
    let b = job.b;
    let ca = job.ca;
    let cb = job.cb;
    let i0 = job.i0;
    if (i0 >= ca) {
        st_part[job.out] = 0.0;
        return;
    }
    let ra = tile_rows(a, i0, ca);
    let wa = tile_weights(a, i0, ca);
    var total = 0.0;
    for (var j0 = 0u; j0 < cb; j0 += 4u) {
        let d = tile_dist(ra, tile_rows(b, j0, cb));
        let wb = tile_weights(b, j0, cb);
        total += dot(wa, vec4<f32>(dot(d[0], wb), dot(d[1], wb), dot(d[2], wb), dot(d[3], wb)));
    }
    st_part[job.out] = total;
}

// ---- 8 x 8 token tiles (CPU adapters: 16 loads per 64 token pairs and dim) ----

// Token rows t0 .. t0 + 7 of sample s (offsets in vec4s, clamped to valid tokens) as two vec4s.
struct Rows8 {
    lo: vec4<u32>,
    hi: vec4<u32>,
}
struct W8 {
    lo: vec4<f32>,
    hi: vec4<f32>,
}
fn rows4(s: u32, t0: u32, cnt: u32) -> vec4<u32> {
    let last = cnt - 1u;
    let base = s * p.nt;
    return vec4<u32>(base + min(t0, last), base + min(t0 + 1u, last), base + min(t0 + 2u, last),
        base + min(t0 + 3u, last)) * p.mv;
}
fn tile_rows8(s: u32, t0: u32, cnt: u32) -> Rows8 {
    return Rows8(rows4(s, t0, cnt), rows4(s, t0 + 4u, cnt));
}
fn tile_weights8(s: u32, t0: u32, cnt: u32) -> W8 {
    return W8(tile_weights(s, t0, cnt), tile_weights(s, t0 + 4u, cnt));
}

// Dims 4q .. 4q + 3 of 8 token rows: lo[t] (hi[t]) holds token t (4 + t) as a column. Its
// transpose gives the dims as columns: transpose(lo)[c] = dim c of tokens 0..3.
struct H8 {
    lo: mat4x4<f32>,
    hi: mat4x4<f32>,
}
fn load_h8(r: Rows8, q: u32) -> H8 {
    return H8(
        mat4x4<f32>(st_h4[r.lo.x + q], st_h4[r.lo.y + q], st_h4[r.lo.z + q], st_h4[r.lo.w + q]),
        mat4x4<f32>(st_h4[r.hi.x + q], st_h4[r.hi.y + q], st_h4[r.hi.z + q], st_h4[r.hi.w + q]),
    );
}
fn dims8(h: H8) -> H8 {
    return H8(transpose(h.lo), transpose(h.hi));
}

// Squared distances (then distances) of an 8 x 8 tile: row t of A's tokens against B's tokens
// 0..3 (dt.lo) and 4..7 (dt.hi).
struct D8 {
    d0: W8, d1: W8, d2: W8, d3: W8, d4: W8, d5: W8, d6: W8, d7: W8,
}

fn acc_row(acc: W8, ha: f32, hb: W8) -> W8 {
    let lo = ha - hb.lo;
    let hi = ha - hb.hi;
    return W8(fma(lo, lo, acc.lo), fma(hi, hi, acc.hi));
}

// d += the squares of dim c: A's tokens from ha (tokens as columns), B's from hb (dims as columns).
fn acc_dim(d: D8, ha: H8, hb: H8, c: u32) -> D8 {
    let b = W8(hb.lo[c], hb.hi[c]);
    return D8(acc_row(d.d0, ha.lo[0][c], b), acc_row(d.d1, ha.lo[1][c], b), acc_row(d.d2, ha.lo[2][c], b),
        acc_row(d.d3, ha.lo[3][c], b), acc_row(d.d4, ha.hi[0][c], b), acc_row(d.d5, ha.hi[1][c], b),
        acc_row(d.d6, ha.hi[2][c], b), acc_row(d.d7, ha.hi[3][c], b));
}

fn dist_row(acc: W8) -> W8 {
    let e = vec4<f32>(p.eps2);
    return W8(sqrt(acc.lo + e), sqrt(acc.hi + e));
}

// 16 vec4 loads per 4 dims of 64 token pairs (zero-padded dims add 0).
fn tile_dist8(ra: Rows8, rb: Rows8) -> D8 {
    var d: D8;
    for (var q = 0u; q < p.mv; q++) {
        let ha = load_h8(ra, q);
        let hb = dims8(load_h8(rb, q));
        d = acc_dim(d, ha, hb, 0u);
        d = acc_dim(d, ha, hb, 1u);
        d = acc_dim(d, ha, hb, 2u);
        d = acc_dim(d, ha, hb, 3u);
    }
    return D8(dist_row(d.d0), dist_row(d.d1), dist_row(d.d2), dist_row(d.d3), dist_row(d.d4),
        dist_row(d.d5), dist_row(d.d6), dist_row(d.d7));
}

fn wdot(d: W8, w: W8) -> f32 {
    return dot(d.lo, w.lo) + dot(d.hi, w.hi);
}

// structure_partial on 8-token tiles (p.tiles = ceil(n / 8)).
@compute @workgroup_size(64)
fn structure_partial8(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = flat(gid, nwg, 64u);
    if (idx >= p.total) { return; }
    let job = forward_job(idx, 8u);
    let a = job.a;
    let b = job.b;
    let ca = job.ca;
    let cb = job.cb;
    let i0 = job.i0;
    if (i0 >= ca) {
        st_part[job.out] = 0.0;
        return;
    }
    let ra = tile_rows8(a, i0, ca);
    let wa = tile_weights8(a, i0, ca);
    var total = 0.0;
    for (var j0 = 0u; j0 < cb; j0 += 8u) {
        let d = tile_dist8(ra, tile_rows8(b, j0, cb));
        let wb = tile_weights8(b, j0, cb);
        let lo = vec4<f32>(wdot(d.d0, wb), wdot(d.d1, wb), wdot(d.d2, wb), wdot(d.d3, wb));
        let hi = vec4<f32>(wdot(d.d4, wb), wdot(d.d5, wb), wdot(d.d6, wb), wdot(d.d7, wb));
        total += dot(wa.lo, lo) + dot(wa.hi, hi);
    }
    st_part[job.out] = total;
}

// Column u of a distance tile: B token u against A tokens 0..3 (lo) and 4..7 (hi).
fn col8(d: D8, u: u32) -> W8 {
    if (u < 4u) {
        return W8(vec4<f32>(d.d0.lo[u], d.d1.lo[u], d.d2.lo[u], d.d3.lo[u]),
            vec4<f32>(d.d4.lo[u], d.d5.lo[u], d.d6.lo[u], d.d7.lo[u]));
    }
    let v = u - 4u;
    return W8(vec4<f32>(d.d0.hi[v], d.d1.hi[v], d.d2.hi[v], d.d3.hi[v]),
        vec4<f32>(d.d4.hi[v], d.d5.hi[v], d.d6.hi[v], d.d7.hi[v]));
}

// c_u = g w_Bu / d[., u] over the 8 A tokens, each row with its own g (0 where w_Bu is 0: padding).
fn coef8(d: D8, u: u32, g: W8, wu: f32) -> W8 {
    let c = col8(d, u);
    return W8(g.lo * wu / c.lo, g.hi * wu / c.hi);
}

// v += c_u (h_A - h_Bu) for one dim.
fn prod8(v: W8, ha: W8, hb: f32, c: W8) -> W8 {
    return W8(fma(c.lo, ha.lo - hb, v.lo), fma(c.hi, ha.hi - hb, v.hi));
}

// The 8 B tokens' coefficients c_u of one tile.
struct C8 {
    c0: W8, c1: W8, c2: W8, c3: W8, c4: W8, c5: W8, c6: W8, c7: W8,
}

// acc for dim c of a group of 4: A's tokens from ha (dims as columns), B's from hb (tokens as columns).
fn grad_dim(v: W8, ha: H8, hb: H8, c: u32, k: C8) -> W8 {
    let a = W8(ha.lo[c], ha.hi[c]);
    var r = prod8(v, a, hb.lo[0][c], k.c0);
    r = prod8(r, a, hb.lo[1][c], k.c1);
    r = prod8(r, a, hb.lo[2][c], k.c2);
    r = prod8(r, a, hb.lo[3][c], k.c3);
    r = prod8(r, a, hb.hi[0][c], k.c4);
    r = prod8(r, a, hb.hi[1][c], k.c5);
    r = prod8(r, a, hb.hi[2][c], k.c6);
    return prod8(r, a, hb.hi[3][c], k.c7);
}

// What structure_backward8 invocation idx computes: split `split` of the samples B (b0 .. b1),
// dims k0 .. k0 + kc - 1, and 8 consecutive token rows r0 .. r0 + 7 of all samples' padded tokens
// [N * n] taken as one list, so a tile may hold the last tokens of one sample and the first of the
// next (with n = 49, 784 tiles for 128 samples where per-sample tiles of 8 need 896).
struct FlatJob {
    chunk: u32,
    split: u32,
    b0: u32,
    b1: u32,
    r0: u32,
    k0: u32,
    kc: u32,
}

fn flat_job(idx: u32) -> FlatJob {
    let chunk = idx % p.chunks;
    let rest = idx / p.chunks;
    let split = rest / p.tiles;
    let b0 = split * p.bper;
    let k0 = chunk * MC;
    return FlatJob(chunk, split, b0, min(p.ns, b0 + p.bper), (rest % p.tiles) * 8u, k0, min(MC, p.m - k0));
}

// Token row r of the flat list: its sample, its token, and whether it is a real token. Rows past
// the list or past the sample's count are clamped to a real token (never read as padding).
struct FlatRow {
    a: u32,
    i: u32,
    valid: bool,
    row: u32, // vec4 offset of the token row actually read
}

fn flat_row(r: u32) -> FlatRow {
    let rows = p.ns * p.nt;
    let rc = min(r, rows - 1u);
    let a = rc / p.nt;
    let i = rc % p.nt;
    let cnt = st_cnt[a];
    return FlatRow(a, i, r < rows && i < cnt, (a * p.nt + min(i, cnt - 1u)) * p.mv);
}

const NONE: u32 = 0xffffffffu;

// Gs[A, b] = G[A, b] + G[b, A] for the samples A of 8 rows (al: rows 0..3, ah: rows 4..7).
fn gs_rows(al: vec4<u32>, ah: vec4<u32>, b: u32) -> W8 {
    return W8(
        vec4<f32>(sb_g[al.x * p.ns + b] + sb_g[b * p.ns + al.x], sb_g[al.y * p.ns + b] + sb_g[b * p.ns + al.y],
            sb_g[al.z * p.ns + b] + sb_g[b * p.ns + al.z], sb_g[al.w * p.ns + b] + sb_g[b * p.ns + al.w]),
        vec4<f32>(sb_g[ah.x * p.ns + b] + sb_g[b * p.ns + ah.x], sb_g[ah.y * p.ns + b] + sb_g[b * p.ns + ah.y],
            sb_g[ah.z * p.ns + b] + sb_g[b * p.ns + ah.z], sb_g[ah.w * p.ns + b] + sb_g[b * p.ns + ah.w]));
}

fn pick_g(ga: W8, gb: W8, first: bool) -> W8 {
    return W8(select(gb.lo, ga.lo, first), select(gb.hi, ga.hi, first));
}

// Each row's weighted sum of its distances: sum_u d[t][u] w_u for rows t = 0..7.
fn wdots(d: D8, w: W8) -> W8 {
    return W8(vec4<f32>(wdot(d.d0, w), wdot(d.d1, w), wdot(d.d2, w), wdot(d.d3, w)),
        vec4<f32>(wdot(d.d4, w), wdot(d.d5, w), wdot(d.d6, w), wdot(d.d7, w)));
}

// structure_backward on 8-token tiles (p.tiles = ceil(N n / 8) flat tiles of A's tokens, B's
// tokens in 8-token tiles of each sample); MC is a multiple of 4, so a chunk's dims are whole
// vec4s (those past m are padding, computed and not stored).
@compute @workgroup_size(64)
fn structure_backward8(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = flat(gid, nwg, 64u);
    if (idx >= p.total) { return; }
    let job = flat_job(idx);
    let q0 = job.k0 / 4u;
    let qc = (job.kc + 3u) / 4u;
    var rows: array<FlatRow, 8>;
    for (var t = 0u; t < 8u; t++) { rows[t] = flat_row(job.r0 + t); }
    let ra = Rows8(vec4<u32>(rows[0].row, rows[1].row, rows[2].row, rows[3].row),
        vec4<u32>(rows[4].row, rows[5].row, rows[6].row, rows[7].row));
    // Importances, exactly 0 for rows that are not real tokens.
    var wa: W8;
    for (var t = 0u; t < 8u; t++) {
        let v = select(0.0, st_w[rows[t].a * p.nt + min(rows[t].i, st_cnt[rows[t].a] - 1u)], rows[t].valid);
        if (t < 4u) { wa.lo[t] = v; } else { wa.hi[t - 4u] = v; }
    }
    let al = vec4<u32>(rows[0].a, rows[1].a, rows[2].a, rows[3].a);
    let ah = vec4<u32>(rows[4].a, rows[5].a, rows[6].a, rows[7].a);
    // acc[kk]: output dim k0 + kk of the 8 rows, before the factor w_Ai
    var acc: array<W8, MC>;
    var accw = W8(vec4<f32>(0.0), vec4<f32>(0.0));
    // B's tokens in 8-token tiles: per sample (j0 .. j0 + 7 of sample b), or with p.flatb as one
    // flat list from sample b0's first token to b1's last (a tile spans at most two samples: the
    // columns from `second` on belong to sample bf + 1 and take its Gs).
    var b = job.b0;
    var j0 = 0u;
    var gs_at = NONE; // the sample ga holds
    var ga: W8;
    var gb: W8;
    let c_end = job.b1 * p.nt;
    var c0 = job.b0 * p.nt;
    loop {
        var rb: Rows8;
        var wb: W8;
        var bf: u32;
        var second = 8u;
        if (p.flatb == 1u) {
            if (c0 >= c_end) { break; }
            let cl = c_end - 1u;
            let cols = Rows8(vec4<u32>(c0, c0 + 1u, c0 + 2u, c0 + 3u), vec4<u32>(c0 + 4u, c0 + 5u, c0 + 6u, c0 + 7u));
            rb = Rows8(min(cols.lo, vec4<u32>(cl)) * p.mv, min(cols.hi, vec4<u32>(cl)) * p.mv);
            wb = W8(select(vec4<f32>(0.0), vec4<f32>(st_w[min(c0, cl)], st_w[min(c0 + 1u, cl)], st_w[min(c0 + 2u, cl)],
                    st_w[min(c0 + 3u, cl)]), cols.lo < vec4<u32>(c_end)),
                select(vec4<f32>(0.0), vec4<f32>(st_w[min(c0 + 4u, cl)], st_w[min(c0 + 5u, cl)], st_w[min(c0 + 6u, cl)],
                    st_w[min(c0 + 7u, cl)]), cols.hi < vec4<u32>(c_end)));
            bf = c0 / p.nt;
            second = (bf + 1u) * p.nt - c0;
            c0 += 8u;
        } else {
            if (b >= job.b1) { break; }
            let cb = st_cnt[b];
            rb = tile_rows8(b, j0, cb);
            wb = tile_weights8(b, j0, cb);
            bf = b;
            j0 += 8u;
            if (j0 >= cb) {
                b += 1u;
                j0 = 0u;
            }
        }
        // Gs[A, B] = G[A, B] + G[B, A] for each row's sample A: ga for sample bf, gb for bf + 1,
        // loaded when bf moves (gb becomes ga when it moves by one).
        if (bf != gs_at) {
            if (gs_at != NONE && bf == gs_at + 1u) { ga = gb; } else { ga = gs_rows(al, ah, bf); }
            gb = gs_rows(al, ah, min(bf + 1u, p.ns - 1u));
            gs_at = bf;
        }
        let in_b = W8(select(vec4<f32>(0.0), vec4<f32>(1.0), vec4<u32>(0u, 1u, 2u, 3u) >= vec4<u32>(second)),
            select(vec4<f32>(0.0), vec4<f32>(1.0), vec4<u32>(4u, 5u, 6u, 7u) >= vec4<u32>(second)));
        let wbb = W8(wb.lo * in_b.lo, wb.hi * in_b.hi);
        let wba = W8(wb.lo - wbb.lo, wb.hi - wbb.hi);
        let d = tile_dist8(ra, rb);
        let da = wdots(d, wba);
        let db = wdots(d, wbb);
        accw = W8(fma(ga.lo, da.lo, fma(gb.lo, db.lo, accw.lo)), fma(ga.hi, da.hi, fma(gb.hi, db.hi, accw.hi)));
        let k = C8(coef8(d, 0u, pick_g(ga, gb, 0u < second), wb.lo.x), coef8(d, 1u, pick_g(ga, gb, 1u < second), wb.lo.y),
            coef8(d, 2u, pick_g(ga, gb, 2u < second), wb.lo.z), coef8(d, 3u, pick_g(ga, gb, 3u < second), wb.lo.w),
            coef8(d, 4u, pick_g(ga, gb, 4u < second), wb.hi.x), coef8(d, 5u, pick_g(ga, gb, 5u < second), wb.hi.y),
            coef8(d, 6u, pick_g(ga, gb, 6u < second), wb.hi.z), coef8(d, 7u, pick_g(ga, gb, 7u < second), wb.hi.w));
        for (var qq = 0u; qq < qc; qq++) {
            let ha = dims8(load_h8(ra, q0 + qq));
            let hb = load_h8(rb, q0 + qq);
            let kk = 4u * qq;
            acc[kk] = grad_dim(acc[kk], ha, hb, 0u, k);
            acc[kk + 1u] = grad_dim(acc[kk + 1u], ha, hb, 1u, k);
            acc[kk + 2u] = grad_dim(acc[kk + 2u], ha, hb, 2u, k);
            acc[kk + 3u] = grad_dim(acc[kk + 3u], ha, hb, 3u, k);
        }
    }
    // Rows that are not real tokens (weight 0 by select) get exactly 0; rows past the list are
    // not ours to write.
    let rows_all = p.ns * p.nt;
    for (var t = 0u; t < 8u; t++) {
        let r = job.r0 + t;
        if (r < rows_all) {
            let q = t % 4u;
            let w_t = select(wa.hi[q], wa.lo[q], t < 4u);
            let at = (job.split * rows_all + r) * p.m + job.k0;
            for (var kk = 0u; kk < job.kc; kk++) {
                let v = select(acc[kk].hi[q], acc[kk].lo[q], t < 4u);
                sb_dh[at + kk] = select(0.0, w_t * v, rows[t].valid);
            }
            if (job.chunk == 0u) {
                sb_dw[job.split * rows_all + r] = select(0.0, select(accw.hi[q], accw.lo[q], t < 4u), rows[t].valid);
            }
        }
    }
}

@compute @workgroup_size(256)
fn structure_reduce(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = flat(gid, nwg, 256u);
    if (idx >= p.total) { return; }
    let a = idx / p.ns;
    let b = idx % p.ns;
    let base = (min(a, b) * p.ns + max(a, b)) * p.tiles;
    var s = 0.0;
    for (var it = 0u; it < p.tiles; it++) {
        s += sr_part[base + it];
    }
    sr_s[idx] = s;
}

// What structure_backward invocation idx computes, for token tiles of `tile`: split `split` of
// the samples B (b0 .. b1), sample A = a, tokens i0 .. i0 + tile - 1, dims k0 .. k0 + kc - 1.
struct Job {
    chunk: u32,
    a: u32,
    split: u32,
    b0: u32,
    b1: u32,
    i0: u32,
    k0: u32,
    kc: u32,
}

fn backward_job(idx: u32, tile: u32) -> Job {
    let chunk = idx % p.chunks;
    let rest = idx / p.chunks;
    let it = rest % p.tiles;
    let rest2 = rest / p.tiles;
    let split = rest2 / p.ns;
    let b0 = split * p.bper;
    let k0 = chunk * MC;
    return Job(chunk, rest2 % p.ns, split, b0, min(p.ns, b0 + p.bper), it * tile, k0, min(MC, p.m - k0));
}

@compute @workgroup_size(64)
fn structure_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = flat(gid, nwg, 64u);
    if (idx >= p.total) { return; }
    let job = backward_job(idx, 4u);
    let chunk = job.chunk;
    let a = job.a;
    let split = job.split;
    let b0 = job.b0;
    let b1 = job.b1;
    let i0 = job.i0;
    let k0 = job.k0;
    let kc = job.kc;
    let ca = st_cnt[a];
    // acc[kk][t]: output dim k0 + kk of token i0 + t, before the factor w_Ai
    var acc: array<vec4<f32>, MC>;
    var accw = vec4<f32>(0.0);
    var wa = vec4<f32>(0.0);
    if (i0 < ca) {
        let ra = tile_rows(a, i0, ca);
        wa = tile_weights(a, i0, ca);
        for (var b = b0; b < b1; b++) {
            let g = sb_g[a * p.ns + b] + sb_g[b * p.ns + a];
            let cb = st_cnt[b];
            for (var j0 = 0u; j0 < cb; j0 += 4u) {
                let rb = tile_rows(b, j0, cb);
                let wb = tile_weights(b, j0, cb);
                let d = tile_dist(ra, rb);
                accw += g * vec4<f32>(dot(d[0], wb), dot(d[1], wb), dot(d[2], wb), dot(d[3], wb));
                // c[t][u] = g w_Bu / d[t][u], stored transposed (ct[u] is a vec4 over the tokens t) so
                // that each dim takes 4 vec4 subtractions and 4 vec4 multiply-adds.
                let gw = g * wb;
                let c0 = gw / d[0];
                let c1 = gw / d[1];
                let c2 = gw / d[2];
                let c3 = gw / d[3];
                let ct0 = vec4<f32>(c0.x, c1.x, c2.x, c3.x);
                let ct1 = vec4<f32>(c0.y, c1.y, c2.y, c3.y);
                let ct2 = vec4<f32>(c0.z, c1.z, c2.z, c3.z);
                let ct3 = vec4<f32>(c0.w, c1.w, c2.w, c3.w);
                for (var kk = 0u; kk < kc; kk++) {
                    let k = k0 + kk;
                    let ha = vec4<f32>(st_h[ra.x + k], st_h[ra.y + k], st_h[ra.z + k], st_h[ra.w + k]);
                    var v = acc[kk];
                    v += ct0 * (ha - st_h[rb.x + k]);
                    v += ct1 * (ha - st_h[rb.y + k]);
                    v += ct2 * (ha - st_h[rb.z + k]);
                    v += ct3 * (ha - st_h[rb.w + k]);
                    acc[kk] = v;
                }
            }
        }
    }
    // Padded tokens (weight 0 by select) get exactly 0; tile rows past n are not ours to write.
    for (var t = 0u; t < 4u; t++) {
        let i = i0 + t;
        if (i < p.nt) {
            let valid = i < ca;
            let row = ((split * p.ns + a) * p.nt + i) * p.m + k0;
            for (var kk = 0u; kk < kc; kk++) {
                sb_dh[row + kk] = select(0.0, wa[t] * acc[kk][t], valid);
            }
            if (chunk == 0u) {
                sb_dw[(split * p.ns + a) * p.nt + i] = select(0.0, accw[t], valid);
            }
        }
    }
}

@compute @workgroup_size(256)
fn sum_splits(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = flat(gid, nwg, 256u);
    if (idx >= p.total) { return; }
    var s = 0.0;
    for (var k = 0u; k < p.splits; k++) {
        s += ss_part[k * p.total + idx];
    }
    ss_out[idx] = s;
}

@compute @workgroup_size(256)
fn mask_tokens(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = flat(gid, nwg, 256u);
    if (idx >= p.total) { return; }
    let tok = idx / p.inner;
    let a = tok / p.nt;
    let i = tok % p.nt;
    mt_y[idx] = select(0.0, mt_x[idx], i < mt_cnt[a]);
}

// importance, importance_dh, importance_duc
@group(0) @binding(1) var<storage, read> im_h: array<f32>;
@group(0) @binding(2) var<storage, read> im_u: array<f32>;
@group(0) @binding(3) var<storage, read> im_c: array<f32>;
@group(0) @binding(4) var<storage, read> im_cnt: array<u32>;
@group(0) @binding(5) var<storage, read_write> im_w: array<f32>;
@group(0) @binding(1) var<storage, read> ig_w: array<f32>;
@group(0) @binding(2) var<storage, read> ig_g: array<f32>;
@group(0) @binding(3) var<storage, read> ig_u: array<f32>;
@group(0) @binding(5) var<storage, read_write> ig_out: array<f32>;
@group(0) @binding(3) var<storage, read> iu_h: array<f32>;
@group(0) @binding(2) var<storage, read_write> ds_du: array<f32>;
@group(0) @binding(3) var<storage, read_write> ds_dc: array<f32>;

// Whether token `tok` of the flat [N * n] list is a real token.
fn real_token(tok: u32) -> bool {
    return tok % p.nt < im_cnt[tok / p.nt];
}

@compute @workgroup_size(256)
fn importance(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let tok = flat(gid, nwg, 256u);
    if (tok >= p.total) { return; }
    var w = 0.0;
    if (real_token(tok)) {
        var x = 0.0;
        for (var k = 0u; k < p.m; k++) { x = fma(im_h[tok * p.m + k], im_u[k], x); }
        w = 1.0 / (1.0 + exp(-(x + im_c[0])));
    }
    im_w[tok] = w;
}

// g w (1 - w) of a real token, 0 for padding.
fn gz(tok: u32, g: f32) -> f32 {
    let w = ig_w[tok];
    return select(0.0, g * (w * (1.0 - w)), real_token(tok));
}

@compute @workgroup_size(256)
fn importance_dh(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = flat(gid, nwg, 256u);
    if (idx >= p.total * p.m) { return; }
    let tok = idx / p.m;
    ig_out[idx] = gz(tok, ig_g[tok]) * ig_u[idx % p.m];
}

// Tokens per chunk of importance_duc_part: one invocation sums one chunk for one output.
const DUC_CHUNK: u32 = 64u;

@compute @workgroup_size(256)
fn importance_duc_part(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = flat(gid, nwg, 256u);
    let chunks = (p.total + DUC_CHUNK - 1u) / DUC_CHUNK;
    if (idx >= chunks * (p.m + 1u)) { return; }
    let k = idx % (p.m + 1u);
    let t0 = (idx / (p.m + 1u)) * DUC_CHUNK;
    var acc = 0.0;
    for (var tok = t0; tok < min(t0 + DUC_CHUNK, p.total); tok++) {
        if (real_token(tok)) {
            let z = gz(tok, ig_g[tok]);
            acc += select(z * iu_h[tok * p.m + min(k, p.m - 1u)], z, k == p.m);
        }
    }
    ig_out[idx] = acc;
}

@compute @workgroup_size(256)
fn importance_duc_sum(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let k = flat(gid, nwg, 256u);
    if (k > p.m) { return; }
    let chunks = (p.total + DUC_CHUNK - 1u) / DUC_CHUNK;
    var acc = 0.0;
    for (var c = 0u; c < chunks; c++) { acc += ig_w[c * (p.m + 1u) + k]; }
    if (k < p.m) { ds_du[k] = acc; } else { ds_dc[0] = acc; }
}
