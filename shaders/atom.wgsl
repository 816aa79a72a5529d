// Atom-modeling kernels (docs/spec: shared/spec/atom-modeling.md):
//   pdist:              dbar[A, B] = |z_A - z_B| for latents z [N, D]; NORM (override) picks the distance:
//                       0 = sqrt(|.|_2^2 + eps^2) (the loss's floored distance), 1 = |.|_1, 2 = |.|_2
//   pdist_backward:     dz[A, d] = sum_B (G[A, B] + G[B, A]) * dd(A, B)/dz_A[d], gathered per (A, d):
//                       NORM 0: (z_A - z_B)[d] / dbar; 1: sign((z_A - z_B)[d]) (0 at 0);
//                       2: (z_A - z_B)[d] / dbar, 0 where dbar = 0
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
//   structure_tiled, structure_backward_tiled: the same two sums in workgroup-tiled form for GPU
//                       adapters (opt-in, described at the end of this file).
//   sum_splits:         out[e] = sum over s (increasing) of part[s * total + e]
//   mask_tokens:        y[A, i, ...] = x[A, i, ...] where i < cnt[A], else exactly 0 (a select, so
//                       NaN/Inf in padding never leaks); its own gradient.
//
// Precision: token distances use direct differences (h_Ai - h_Bj)^2, not |a|^2 + |b|^2 - 2 a.b. The
// Gram form cancels catastrophically for near-identical tokens (relative error ~1e-7 |h|^2 / d^2), and
// with eps = 1e-3 exactly those pairs (the A == B diagonal, near-duplicate samples of a collapsing
// GAN) dominate the gradient (h_Ai - h_Bj) / d_ij, whose numerator needs the differences anyway. The
// price is one subtraction per multiply-add (at most 2x the flops of the Gram form).
//
// Register blocking: every structure invocation holds a 4 (tokens i of A) x 4 (tokens j of B) tile
// of squared distances as array<vec4<f32>, 4>, so each step over the m dims loads 8 values for 16
// subtract + 16 multiply-add. Tiles past the token count clamp their loads to the last valid token
// and get weight 0 by select, so padded data is never read.
//
// Bindings (group 0): 0 = Params (uniform); then per entry point
//   pdist:              1 z (read), 2 dbar (write)
//   pdist_backward:     1 z, 2 dbar, 3 g (read), 4 dz (write)
//   structure_partial:  1 h, 2 w, 3 cnt (u32) (read), 4 part (write)
//   structure_reduce:   1 part (read), 2 s (write)
//   structure_backward: 1 h, 2 w, 3 cnt (u32), 4 g (read), 5 dh, 6 dw (write)
//   structure_tiled, structure_backward_tiled: as structure_partial, structure_backward
//   sum_splits:         1 part (read), 2 out (write)
//   mask_tokens:        1 x, 2 cnt (u32) (read), 3 y (write)
// Workgroup: 1-D, no shared memory and no barriers (CPU rasterisers such as lavapipe serialise
// barriers). pdist, pdist_backward, structure_reduce, sum_splits, mask_tokens: 256 invocations, one
// per output element. structure_partial: 64 invocations, one per (B, A, i-tile), the i-tile fastest
// and B slowest, so the lanes of a SIMD group share B and run the same number of j-tiles;
// structure_backward: 64 invocations, one per (split, A, i-tile, dim chunk), the chunk fastest. The grid
// folds into y past 65535 groups (flat index gid.x + gid.y * nwg.x * workgroup size).
// structure_tiled, structure_backward_tiled: 64 invocations (8 x 8) per workgroup, one workgroup per
// tile, flat workgroup index wid.x + wid.y * nwg.x; these two use workgroup memory and barriers.

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
    _pad0: u32,
    _pad1: u32,
}

override NORM: u32 = 0u;

// Output dims per structure_backward invocation (the size of its private accumulator).
const MC: u32 = 32u;

@group(0) @binding(0) var<uniform> p: Params;

// pdist / pdist_backward
@group(0) @binding(1) var<storage, read> pd_z: array<f32>;
@group(0) @binding(2) var<storage, read_write> pd_out: array<f32>;
@group(0) @binding(2) var<storage, read> pb_dbar: array<f32>;
@group(0) @binding(3) var<storage, read> pb_g: array<f32>;
@group(0) @binding(4) var<storage, read_write> pb_dz: array<f32>;
// structure_*
@group(0) @binding(1) var<storage, read> st_h: array<f32>;
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

@compute @workgroup_size(256)
fn pdist(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = flat(gid, nwg, 256u);
    if (idx >= p.total) { return; }
    let a = idx / p.ns;
    let b = idx % p.ns;
    // (z_A - z_B) is the exact negation of (z_B - z_A), so dbar comes out bit-symmetric.
    var acc = 0.0;
    for (var d = 0u; d < p.m; d++) {
        let diff = pd_z[a * p.m + d] - pd_z[b * p.m + d];
        if (NORM == 1u) {
            acc += abs(diff);
        } else {
            acc += diff * diff;
        }
    }
    var out = acc;
    if (NORM == 0u) {
        out = sqrt(acc + p.eps2);
    } else if (NORM == 2u) {
        out = sqrt(acc);
    }
    pd_out[idx] = out;
}

@compute @workgroup_size(256)
fn pdist_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = flat(gid, nwg, 256u);
    if (idx >= p.total) { return; }
    let a = idx / p.m;
    let d = idx % p.m;
    let za = pd_z[idx];
    var acc = 0.0;
    for (var b = 0u; b < p.ns; b++) {
        let g = pb_g[a * p.ns + b] + pb_g[b * p.ns + a];
        let diff = za - pd_z[b * p.m + d];
        var coef: f32;
        if (NORM == 1u) {
            coef = sign(diff);
        } else {
            let dist = pb_dbar[a * p.ns + b];
            // NORM 2 at distance 0 (and A == B): gradient defined as 0.
            coef = select(0.0, diff / dist, dist > 0.0);
        }
        acc += g * coef;
    }
    pb_dz[idx] = acc;
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

@compute @workgroup_size(64)
fn structure_partial(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = flat(gid, nwg, 64u);
    if (idx >= p.total) { return; }
    let it = idx % p.tiles;
    let pair = idx / p.tiles;
    let b = pair / p.ns;
    let a = pair % p.ns;
    if (a > b) { return; } // the lower triangle reuses the upper one's partials
    let ca = st_cnt[a];
    let cb = st_cnt[b];
    let i0 = it * 4u;
    if (i0 >= ca) {
        st_part[(a * p.ns + b) * p.tiles + it] = 0.0;
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
    st_part[(a * p.ns + b) * p.tiles + it] = total;
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

@compute @workgroup_size(64)
fn structure_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = flat(gid, nwg, 64u);
    if (idx >= p.total) { return; }
    let chunk = idx % p.chunks;
    let rest = idx / p.chunks;
    let it = rest % p.tiles;
    let rest2 = rest / p.tiles;
    let a = rest2 % p.ns;
    let split = rest2 / p.ns;
    let b0 = split * p.bper;
    let b1 = min(p.ns, b0 + p.bper);
    let ca = st_cnt[a];
    let i0 = it * 4u;
    let k0 = chunk * MC;
    let kc = min(MC, p.m - k0);
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

// ---- Workgroup-tiled structure kernels for GPU adapters (opt-in: `ops::atom::StructureKernel`) ----
// The same sums as structure_partial / structure_backward, laid out like a matrix product: a
// workgroup of 64 invocations (8 x 8) covers 32 tokens i of A x 32 tokens j of B, each invocation a
// 4 x 4 block of pairs; token dims are staged through workgroup memory 16 at a time as vec4s over
// tokens. Differences stay direct (see Precision above).

const TT: u32 = 32u; // tokens per tile side
const DC: u32 = 16u; // dims per staged panel
var<workgroup> tp_a: array<vec4<f32>, 128>; // [DC][TT / 4]: tokens of A, 4 per vec4
var<workgroup> tp_b: array<vec4<f32>, 128>; // [DC][TT / 4]: tokens of B
var<workgroup> t_red: array<f32, 64>; // structure_tiled: per-invocation partial sums
var<workgroup> t_c: array<vec4<f32>, 256>; // structure_backward_tiled: c[i][j] as [TT][TT / 4]
var<workgroup> t_hb: array<vec4<f32>, 256>; // structure_backward_tiled: h_B chunk [TT j][TT / 4 dims]
var<workgroup> t_ha: array<vec4<f32>, 256>; // structure_backward_tiled: h_A chunk [TT i][TT / 4 dims]
var<workgroup> t_dw: array<vec4<f32>, 64>; // structure_backward_tiled: dw partials per invocation

// Offset of token `tok` (clamped to the last valid one) of sample s.
fn tok_row(s: u32, tok: u32, cnt: u32) -> u32 {
    return (s * p.nt + min(tok, cnt - 1u)) * p.m;
}

// Stages dims k0..k0+15 of tokens a0.. of sample a and b0.. of sample b into tp_a / tp_b (64
// invocations, 8 values each; consecutive invocations walk the contiguous dims; dims past m are 0).
fn stage_pair(t: u32, a: u32, a0: u32, ca: u32, b: u32, b0: u32, cb: u32, k0: u32) {
    for (var e = 0u; e < 8u; e++) {
        let q = t + 64u * e;
        let tok = q / DC;
        let kk = q % DC;
        let k = k0 + kk;
        var va = 0.0;
        var vb = 0.0;
        if (k < p.m) {
            va = st_h[tok_row(a, a0 + tok, ca) + k];
            vb = st_h[tok_row(b, b0 + tok, cb) + k];
        }
        tp_a[kk * 8u + tok / 4u][tok % 4u] = va;
        tp_b[kk * 8u + tok / 4u][tok % 4u] = vb;
    }
}

// Squared distances of invocation (ti, tj)'s 4 x 4 pairs over all dims: row r of the result is
// token a0 + 4ti + r against tokens b0 + 4tj .. +3. Every invocation of the workgroup calls it.
fn tile_d2(t: u32, a: u32, a0: u32, ca: u32, b: u32, b0: u32, cb: u32) -> mat4x4<f32> {
    let ti = t / 8u;
    let tj = t % 8u;
    var d0 = vec4<f32>(0.0);
    var d1 = vec4<f32>(0.0);
    var d2 = vec4<f32>(0.0);
    var d3 = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < p.m; k0 += DC) {
        stage_pair(t, a, a0, ca, b, b0, cb, k0);
        workgroupBarrier();
        for (var kk = 0u; kk < DC; kk++) {
            let av = tp_a[kk * 8u + ti];
            let bv = tp_b[kk * 8u + tj];
            let e0 = av.x - bv;
            let e1 = av.y - bv;
            let e2 = av.z - bv;
            let e3 = av.w - bv;
            d0 = fma(e0, e0, d0);
            d1 = fma(e1, e1, d1);
            d2 = fma(e2, e2, d2);
            d3 = fma(e3, e3, d3);
        }
        workgroupBarrier();
    }
    return mat4x4<f32>(d0, d1, d2, d3);
}

//   structure_tiled: part[((A * N + B) * tiles + it) * tiles + jt] = the terms of S[A, B] with i in
//   token tile it and j in tile jt (tiles = ceil(n / 32)); only A <= B. One workgroup per
//   (B, A, it, jt), flat workgroup index wid.x + wid.y * nwg.x.
@compute @workgroup_size(64)
fn structure_tiled(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let idx = wid.x + wid.y * nwg.x;
    if (idx >= p.total) { return; }
    let jt = idx % p.tiles;
    let it = (idx / p.tiles) % p.tiles;
    let pair = idx / (p.tiles * p.tiles);
    let b = pair / p.ns;
    let a = pair % p.ns;
    if (a > b) { return; }
    let ca = st_cnt[a];
    let cb = st_cnt[b];
    let i0 = it * TT;
    let j0 = jt * TT;
    let out = ((a * p.ns + b) * p.tiles + it) * p.tiles + jt;
    if (i0 >= ca || j0 >= cb) {
        if (t == 0u) { st_part[out] = 0.0; }
        return;
    }
    let d2 = tile_d2(t, a, i0, ca, b, j0, cb);
    let e = vec4<f32>(p.eps2);
    let wa = tile_weights(a, i0 + 4u * (t / 8u), ca);
    let wb = tile_weights(b, j0 + 4u * (t % 8u), cb);
    t_red[t] = dot(wa, vec4<f32>(dot(sqrt(d2[0] + e), wb), dot(sqrt(d2[1] + e), wb),
        dot(sqrt(d2[2] + e), wb), dot(sqrt(d2[3] + e), wb)));
    workgroupBarrier();
    // Tree sum in a fixed order: deterministic.
    for (var s = 32u; s > 0u; s >>= 1u) {
        if (t < s) { t_red[t] += t_red[t + s]; }
        workgroupBarrier();
    }
    if (t == 0u) { st_part[out] = t_red[0]; }
}

// Dims k0..k0+31 of tokens s0..s0+31 of sample s (clamped to the last valid token; dims past m
// are 0) into t_ha (to_a) or t_hb as [token][8 vec4 over dims]: 64 invocations, 16 values each.
// (A flag, not a pointer: naga takes no workgroup pointers as arguments.)
fn stage_chunk(to_a: bool, t: u32, s: u32, s0: u32, cnt: u32, k0: u32) {
    for (var e = 0u; e < 16u; e++) {
        let q = t + 64u * e;
        let tok = q / TT;
        let kk = q % TT;
        var v = 0.0;
        if (k0 + kk < p.m) { v = st_h[tok_row(s, s0 + tok, cnt) + k0 + kk]; }
        if (to_a) { t_ha[tok * 8u + kk / 4u][kk % 4u] = v; } else { t_hb[tok * 8u + kk / 4u][kk % 4u] = v; }
    }
}

//   structure_backward_tiled: as structure_backward for split `split`, one workgroup per
//   (split, A, token tile it of 32, chunk kc of 32 output dims); invocation (ti, tx) owns tokens
//   i0 + 4ti .. +3 and dims 32 kc + 4tx .. +3 of dh. For each B of the split and tile of 32 tokens j:
//   the 32 x 32 distances (tile_d2 over all dims), c[i][j] = Gs w_Bj / d_ij into workgroup
//   memory, then acc[i][k] += sum_j c[i][j] (h_Ai[k] - h_Bj[k]) from the staged h chunks.
@compute @workgroup_size(64)
fn structure_backward_tiled(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let idx = wid.x + wid.y * nwg.x;
    if (idx >= p.total) { return; }
    let kc = idx % p.chunks;
    let it = (idx / p.chunks) % p.tiles;
    let rest = idx / (p.chunks * p.tiles);
    let a = rest % p.ns;
    let split = rest / p.ns;
    let b_lo = split * p.bper;
    let b_hi = min(p.ns, b_lo + p.bper);
    let ca = st_cnt[a];
    let i0 = it * TT;
    let ti = t / 8u;
    let tx = t % 8u;
    let k0 = kc * TT;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    var dwp = vec4<f32>(0.0);
    if (i0 < ca) {
        // h_A chunk [32 i][32 dims], constant over the loop below.
        stage_chunk(true, t, a, i0, ca, k0);
        let wa = tile_weights(a, i0 + 4u * ti, ca);
        for (var b = b_lo; b < b_hi; b++) {
            let g = sb_g[a * p.ns + b] + sb_g[b * p.ns + a];
            let cb = st_cnt[b];
            for (var j0 = 0u; j0 < cb; j0 += TT) {
                let d2 = tile_d2(t, a, i0, ca, b, j0, cb);
                let e4 = vec4<f32>(p.eps2);
                let gw = g * tile_weights(b, j0 + 4u * tx, cb);
                let d0 = sqrt(d2[0] + e4);
                let d1 = sqrt(d2[1] + e4);
                let d2r = sqrt(d2[2] + e4);
                let d3 = sqrt(d2[3] + e4);
                dwp += vec4<f32>(dot(gw, d0), dot(gw, d1), dot(gw, d2r), dot(gw, d3));
                t_c[(4u * ti) * 8u + tx] = gw / d0;
                t_c[(4u * ti + 1u) * 8u + tx] = gw / d1;
                t_c[(4u * ti + 2u) * 8u + tx] = gw / d2r;
                t_c[(4u * ti + 3u) * 8u + tx] = gw / d3;
                // h_B chunk [32 j][32 dims] (tokens clamped: padded ones have c = 0).
                stage_chunk(false, t, b, j0, cb, k0);
                workgroupBarrier();
                let ha0 = t_ha[(4u * ti) * 8u + tx];
                let ha1 = t_ha[(4u * ti + 1u) * 8u + tx];
                let ha2 = t_ha[(4u * ti + 2u) * 8u + tx];
                let ha3 = t_ha[(4u * ti + 3u) * 8u + tx];
                for (var jj = 0u; jj < TT; jj++) {
                    let hb = t_hb[jj * 8u + tx];
                    let q = jj / 4u;
                    let r = jj % 4u;
                    acc0 = fma(vec4<f32>(t_c[(4u * ti) * 8u + q][r]), ha0 - hb, acc0);
                    acc1 = fma(vec4<f32>(t_c[(4u * ti + 1u) * 8u + q][r]), ha1 - hb, acc1);
                    acc2 = fma(vec4<f32>(t_c[(4u * ti + 2u) * 8u + q][r]), ha2 - hb, acc2);
                    acc3 = fma(vec4<f32>(t_c[(4u * ti + 3u) * 8u + q][r]), ha3 - hb, acc3);
                }
                workgroupBarrier();
            }
        }
        acc0 *= wa.x;
        acc1 *= wa.y;
        acc2 *= wa.z;
        acc3 *= wa.w;
    }
    // dw: the 8 invocations of a row of tokens hold partial sums over their tokens j; summed in
    // a fixed order (tx = 0..7).
    t_dw[t] = dwp;
    workgroupBarrier();
    let row = ((split * p.ns + a) * p.nt) + i0 + 4u * ti;
    let accs = mat4x4<f32>(acc0, acc1, acc2, acc3);
    for (var r = 0u; r < 4u; r++) {
        let i = i0 + 4u * ti + r;
        if (i >= p.nt) { continue; }
        let valid = i < ca;
        for (var c = 0u; c < 4u; c++) {
            let k = k0 + 4u * tx + c;
            if (k < p.m) { sb_dh[(row + r) * p.m + k] = select(0.0, accs[r][c], valid); }
        }
        if (kc == 0u && tx == 0u) {
            var s = 0.0;
            for (var x = 0u; x < 8u; x++) { s += t_dw[ti * 8u + x][r]; }
            sb_dw[row + r] = select(0.0, s, valid);
        }
    }
}
