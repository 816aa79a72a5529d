// The structure term S and its gradients in Gram form on 128 x 128 tiles (`StructureKernel::Gram128`,
// GPU adapters). The same sums as structure_partial / structure_backward in atom.wgsl:
//   S[A, B]  = sum_i sum_j w_Ai w_Bj d_ij,  d_ij = sqrt(|h_Ai - h_Bj|^2 + eps^2)
//   dw[A, i] = sum_B Gs[A, B] sum_j w_Bj d_ij
//   dh[A, i] = w_Ai sum_B Gs[A, B] sum_j w_Bj (h_Ai - h_Bj) / d_ij     (Gs = G + G^T, G = dL/dS)
// with |h_Ai - h_Bj|^2 = q_Ai + q_Bj - 2 h_Ai . h_Bj on centred tokens, the dot products computed
// like mm_tiled128 (shaders/matmul.wgsl) computes a matrix product: 8 x 8 results per invocation,
// four vec4 workgroup-memory loads per 64 multiply-adds (an earlier form on 64 x 64 tiles with
// 4 x 4 per invocation took five per 16 and was 1.5x slower on an H100). One multiply-add per
// (i, j, dim) where differences take a subtraction and a multiply-add.
//
// Precision. The tokens are centred on a reference (token 0 of sample 0: distances do not change
// under a common translation, and centring removes the features' shared offset from the
// cancellation). Where the Gram value still loses too much (d^2 < (q_Ai + q_Bj) / 256: near-
// identical tokens, the i == j diagonal of A == B, a collapsing GAN's near-duplicate samples) that
// one distance is recomputed from raw differences, so d keeps about 5 significant digits
// everywhere. The backward's second product, sum_j c_ij (h_Ai - h_Bj), takes raw differences too:
// both the split form h_Ai sum_j c_ij - sum_j c_ij h_Bj and differences of centred tokens lose
// digits exactly where c_ij = Gs w_Bj / d_ij is large (d near eps): 1.5e-4 absolute error was
// measured on a gradient of 0.2.
//
// Layout. Each sample's padded tokens are cut into half-tiles of 64 (tokens 64 it .. 64 it + 63,
// it < tiles = ceil(n / 64)), numbered hf = A * tiles + it and padded to an even count h2; a tile
// of 128 rows is two consecutive half-tiles, so each invocation's rows 4ty.. and 64 + 4ty.. (and
// columns) fall in one half-tile each, and its 8 x 8 block in four (half-tile, half-tile) pairs.
// Row r = hf * 64 + i of the flat list; a row is real where it is one of its sample's tokens.
//
//   gram_prep:     ht [h2, mp, 64] = dim k of row i of half-tile hf centred on token 0 of sample 0
//                  (k-major per half-tile, so a tile's depth-8 panel is 2 x 8 runs of 64 floats),
//                  hr [h2 * 64, mp] = the same raw, token-major; rows [3, h2 * 64] = (q = |centred
//                  row|^2, w, 1 if real). Padding (rows that are not real, dims past m; mp = m
//                  rounded up to 8) is exactly 0 and never read from h or w.
//   gram_forward:  part[a * h2 + b] = the terms of S between half-tiles a <= b (and, for a tile
//                  on the diagonal, the unused pair a = b + 1): one workgroup per tile pair R <= C
//                  of the rt = h2 / 2 row tiles (upper triangle).
//   gram_reduce:   S[A, B] = sum over it, jt (increasing) of part[min * h2 + max] of half-tiles
//                  lo * tiles + it and hi * tiles + jt, (lo, hi) = (min(A, B), max(A, B)): the same
//                  terms in the same order for S[A, B] and S[B, A], so S is bit-symmetric.
//   gram_backward: split `split` of the column tiles C (bper each) of dh [splits, N, n, m] and
//                  dw [splits, N, n]: one workgroup per (split, row tile R, chunk of 64 output
//                  dims), looping C in increasing order; per column half-tile of C the 128 x 64
//                  Gram tile (8 x 4 per invocation: the backward's other state fills the
//                  registers), then the coefficients c_ij = Gs w_Bj / d_ij in two column phases
//                  of 32 through workgroup memory against B's raw rows at the chunk's dims.
//                  Padded rows get exactly 0.
//
// Bindings (group 0): 0 = Params (uniform); then per entry point
//   gram_prep:     1 h [N, n, m], 2 w [N, n], 3 cnt [N] (u32) (read), 4 ht, 5 hr, 6 rows (write)
//   gram_forward:  1 ht, 2 hr, 3 rows (read), 4 part [h2, h2] (write)
//   gram_reduce:   1 part (read), 2 s [N, N] (write)
//   gram_backward: 1 ht, 2 hr, 3 rows, 4 g [N, N] (read), 5 dh, 6 dw (write)
// Workgroup: gram_prep and gram_reduce 256 invocations, one per row / per entry of S;
// gram_forward and gram_backward 16 x 16 = 256 invocations (ty = t / 16, tx = t % 16), 24 KiB of
// workgroup memory, flat workgroup index wid.x + wid.y * nwg.x.

struct Params {
    ns: u32,    // N samples
    nt: u32,    // n padded tokens per sample
    m: u32,     // token dim
    mp: u32,    // m rounded up to 8 (BK)
    tiles: u32, // half-tiles per sample, ceil(n / 64)
    h2: u32,    // half-tiles, N * tiles rounded up to even
    eps2: f32,  // eps^2
    chunks: u32, // gram_backward: ceil(m / 64) chunks of output dims
    total: u32, // invocations (gram_prep, gram_reduce) or workgroups that do work
    bper: u32,  // gram_backward: column tiles per split
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

@group(0) @binding(1) var<storage, read> pr_h: array<f32>;
@group(0) @binding(2) var<storage, read> pr_w: array<f32>;
@group(0) @binding(3) var<storage, read> pr_cnt: array<u32>;
@group(0) @binding(4) var<storage, read_write> pr_ht: array<f32>;
@group(0) @binding(5) var<storage, read_write> pr_hr: array<f32>;
@group(0) @binding(6) var<storage, read_write> pr_rows: array<f32>;

@group(0) @binding(1) var<storage, read> ht4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> hr4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> rows4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> gf_part: array<f32>;
@group(0) @binding(1) var<storage, read> rd_part: array<f32>;
@group(0) @binding(2) var<storage, read_write> rd_s: array<f32>;
@group(0) @binding(4) var<storage, read> gb_g: array<f32>;
@group(0) @binding(5) var<storage, read_write> gb_dh: array<f32>;
@group(0) @binding(6) var<storage, read_write> gb_dw: array<f32>;

const BK: u32 = 8u; // dims per staged panel
const NEAR: f32 = 0.00390625; // 1 / 256: below this fraction of q_Ai + q_Bj, recompute d^2 directly

// Workgroup memory, 24 KiB, used in turns: the Gram's panels (A: [BK][32] vec4s, 4 rows each, then
// B), the backward's coefficient phase (c [32 j][32] vec4s over 4 rows i, then B's raw rows
// [32 j][16] vec4s over 4 dims), the final sums.
var<workgroup> sm: array<vec4<f32>, 1536>;

fn flat(gid: vec3<u32>, nwg: vec3<u32>, wg: u32) -> u32 {
    return gid.x + gid.y * nwg.x * wg;
}

// (sample, token) of flat row r; sample >= N for the rows of a padding half-tile.
fn row_token(r: u32) -> vec2<u32> {
    let hf = r / 64u;
    return vec2<u32>(hf / p.tiles, (hf % p.tiles) * 64u + r % 64u);
}

@compute @workgroup_size(256)
fn gram_prep(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = flat(gid, nwg, 256u);
    if (r >= p.total) { return; }
    let at = row_token(r);
    let real = at.x < p.ns && at.y < pr_cnt[min(at.x, p.ns - 1u)];
    let src = (at.x * p.nt + at.y) * p.m;
    let hf = r / 64u;
    var q = 0.0;
    for (var k = 0u; k < p.mp; k++) {
        var v = 0.0;
        var c = 0.0;
        if (real && k < p.m) {
            v = pr_h[src + k];
            c = v - pr_h[k];
        }
        pr_hr[r * p.mp + k] = v;
        pr_ht[(hf * p.mp + k) * 64u + r % 64u] = c;
        q = fma(c, c, q);
    }
    let n = p.h2 * 64u;
    pr_rows[r] = q;
    var w = 0.0;
    if (real) { w = pr_w[at.x * p.nt + at.y]; }
    pr_rows[n + r] = w;
    pr_rows[2u * n + r] = select(0.0, 1.0, real);
}

// The Gram tile's 8 x 8 results per invocation in 16 named vec4s (an array indexed in a loop
// went to local memory on NVIDIA, see matmul.wgsl): c0, c2, c4, c6 are rows 4ty + 0..3 against
// columns 4tx + 0..3 (half-tiles 0, 0), the odd ones against columns 64 + 4tx.. (0, 1), c8..c15
// the same for rows 64 + 4ty.. (1, 0 and 1, 1).
struct Acc {
    c0: vec4<f32>, c1: vec4<f32>, c2: vec4<f32>, c3: vec4<f32>,
    c4: vec4<f32>, c5: vec4<f32>, c6: vec4<f32>, c7: vec4<f32>,
    c8: vec4<f32>, c9: vec4<f32>, c10: vec4<f32>, c11: vec4<f32>,
    c12: vec4<f32>, c13: vec4<f32>, c14: vec4<f32>, c15: vec4<f32>,
}

fn outer8(acc: Acc, a0: vec4<f32>, a1: vec4<f32>, b0: vec4<f32>, b1: vec4<f32>) -> Acc {
    var r = acc;
    r.c0 = fma(vec4<f32>(a0.x), b0, r.c0); r.c1 = fma(vec4<f32>(a0.x), b1, r.c1);
    r.c2 = fma(vec4<f32>(a0.y), b0, r.c2); r.c3 = fma(vec4<f32>(a0.y), b1, r.c3);
    r.c4 = fma(vec4<f32>(a0.z), b0, r.c4); r.c5 = fma(vec4<f32>(a0.z), b1, r.c5);
    r.c6 = fma(vec4<f32>(a0.w), b0, r.c6); r.c7 = fma(vec4<f32>(a0.w), b1, r.c7);
    r.c8 = fma(vec4<f32>(a1.x), b0, r.c8); r.c9 = fma(vec4<f32>(a1.x), b1, r.c9);
    r.c10 = fma(vec4<f32>(a1.y), b0, r.c10); r.c11 = fma(vec4<f32>(a1.y), b1, r.c11);
    r.c12 = fma(vec4<f32>(a1.z), b0, r.c12); r.c13 = fma(vec4<f32>(a1.z), b1, r.c13);
    r.c14 = fma(vec4<f32>(a1.w), b0, r.c14); r.c15 = fma(vec4<f32>(a1.w), b1, r.c15);
    return r;
}

// The centred dot products of row tile R against column tile C (invocation t's 8 x 8 block):
// per panel of BK dims, 256 invocations stage one vec4 of each operand (rows of half-tile
// 2R + v / 16 at dim k0 + kk), then 8 outer products; the next panel's vec4s are loaded before
// those, so their latency hides behind the arithmetic. Starts and ends with a barrier, so the
// workgroup memory is free before and after.
fn gram_tile(t: u32, rt: u32, ct: u32) -> Acc {
    let ty = t / 16u;
    let tx = t % 16u;
    let at = (2u * rt + (t % 32u) / 16u) * p.mp * 16u + (t / 32u) * 16u + t % 16u;
    let bt = (2u * ct + (t % 32u) / 16u) * p.mp * 16u + (t / 32u) * 16u + t % 16u;
    var na = ht4[at];
    var nb = ht4[bt];
    var acc: Acc;
    for (var k0 = 0u; k0 < p.mp; k0 += BK) {
        workgroupBarrier();
        sm[t] = na;
        sm[256u + t] = nb;
        workgroupBarrier();
        if (k0 + BK < p.mp) {
            na = ht4[at + (k0 + BK) * 16u];
            nb = ht4[bt + (k0 + BK) * 16u];
        }
        for (var j = 0u; j < BK; j++) {
            acc = outer8(acc, sm[j * 32u + ty], sm[j * 32u + 16u + ty], sm[256u + j * 32u + tx],
                sm[256u + j * 32u + 16u + tx]);
        }
    }
    workgroupBarrier();
    return acc;
}

// The 8 x 4 results of gram_half: h0..h3 rows 4ty + 0..3, h4..h7 rows 64 + 4ty + 0..3, against
// columns 4tx .. 4tx + 3 of one column half-tile.
struct Acc4 {
    h0: vec4<f32>, h1: vec4<f32>, h2: vec4<f32>, h3: vec4<f32>,
    h4: vec4<f32>, h5: vec4<f32>, h6: vec4<f32>, h7: vec4<f32>,
}

fn outer4(acc: Acc4, a0: vec4<f32>, a1: vec4<f32>, b: vec4<f32>) -> Acc4 {
    var r = acc;
    r.h0 = fma(vec4<f32>(a0.x), b, r.h0); r.h1 = fma(vec4<f32>(a0.y), b, r.h1);
    r.h2 = fma(vec4<f32>(a0.z), b, r.h2); r.h3 = fma(vec4<f32>(a0.w), b, r.h3);
    r.h4 = fma(vec4<f32>(a1.x), b, r.h4); r.h5 = fma(vec4<f32>(a1.y), b, r.h5);
    r.h6 = fma(vec4<f32>(a1.z), b, r.h6); r.h7 = fma(vec4<f32>(a1.w), b, r.h7);
    return r;
}

// gram_tile against one column half-tile hc only (128 x 64, 8 x 4 per invocation): half the
// registers of the full tile, for the backward, whose other state fills them. A panel as in
// gram_tile; the half-tile's panel is 128 vec4s, staged by invocations 0..127.
fn gram_half(t: u32, rt: u32, hc: u32) -> Acc4 {
    let ty = t / 16u;
    let tx = t % 16u;
    let at = (2u * rt + (t % 32u) / 16u) * p.mp * 16u + (t / 32u) * 16u + t % 16u;
    let bt = hc * p.mp * 16u + (t / 16u) * 16u + t % 16u; // t < 128: dim t / 16, vec4 t % 16
    var na = ht4[at];
    var nb = vec4<f32>(0.0);
    if (t < 128u) { nb = ht4[bt]; }
    var acc: Acc4;
    for (var k0 = 0u; k0 < p.mp; k0 += BK) {
        workgroupBarrier();
        sm[t] = na;
        if (t < 128u) { sm[256u + t] = nb; }
        workgroupBarrier();
        if (k0 + BK < p.mp) {
            na = ht4[at + (k0 + BK) * 16u];
            if (t < 128u) { nb = ht4[bt + (k0 + BK) * 16u]; }
        }
        for (var j = 0u; j < BK; j++) {
            acc = outer4(acc, sm[j * 32u + ty], sm[j * 32u + 16u + ty], sm[256u + j * 16u + tx]);
        }
    }
    workgroupBarrier();
    return acc;
}

// d^2 + eps^2 of row r (norm qr) to rows c .. c + 3 (norms qc) from their dot products g, with
// d^2 = q_r + q_c - 2 g clamped at 0, exactly 0 for a row against itself, and recomputed from
// the raw rows where the Gram form cancelled.
fn dist4(g: vec4<f32>, r: u32, qr: f32, c: u32, qc: vec4<f32>) -> vec4<f32> {
    let qs = qr + qc;
    let d2 = qs - 2.0 * g;
    var out = max(d2, vec4<f32>(0.0));
    for (var x = 0u; x < 4u; x++) {
        if (c + x == r) {
            out[x] = 0.0;
        } else if (d2[x] < NEAR * qs[x]) {
            var acc = vec4<f32>(0.0);
            for (var k = 0u; k < p.mp / 4u; k++) {
                let dv = hr4[r * p.mp / 4u + k] - hr4[(c + x) * p.mp / 4u + k];
                acc = fma(dv, dv, acc);
            }
            out[x] = (acc.x + acc.y) + (acc.z + acc.w);
        }
    }
    return out + vec4<f32>(p.eps2);
}

// A 4 x 4 block, rows r .. r + 3 against columns c .. c + 3 (d0: row r): dist4's values
// d^2 + eps^2 (dist_block, from the dot products g0..g3), or coef_block's coefficients.
struct Block {
    d0: vec4<f32>,
    d1: vec4<f32>,
    d2: vec4<f32>,
    d3: vec4<f32>,
}

fn dist_block(g0: vec4<f32>, g1: vec4<f32>, g2: vec4<f32>, g3: vec4<f32>, r: u32, c: u32) -> Block {
    let qr = rows4[r / 4u];
    let qc = rows4[c / 4u];
    return Block(dist4(g0, r, qr.x, c, qc), dist4(g1, r + 1u, qr.y, c, qc), dist4(g2, r + 2u, qr.z, c, qc),
        dist4(g3, r + 3u, qr.w, c, qc));
}

// Weighted sum of a block's distances: sum w_r w_c d (d = the root of dist4's value).
fn block_sum(b: Block, r: u32, c: u32) -> f32 {
    let n4 = p.h2 * 16u;
    let wr = rows4[n4 + r / 4u];
    let wc = rows4[n4 + c / 4u];
    return dot(wr, vec4<f32>(dot(sqrt(b.d0), wc), dot(sqrt(b.d1), wc), dot(sqrt(b.d2), wc), dot(sqrt(b.d3), wc)));
}

// (R, C) with R <= C of upper-triangle tile pair q = C (C + 1) / 2 + R.
fn upper_pair(q: u32) -> vec2<u32> {
    var c = u32(floor((sqrt(8.0 * f32(q) + 1.0) - 1.0) * 0.5));
    while (c * (c + 1u) / 2u > q) { c -= 1u; }
    while ((c + 1u) * (c + 2u) / 2u <= q) { c += 1u; }
    return vec2<u32>(q - c * (c + 1u) / 2u, c);
}

@compute @workgroup_size(256)
fn gram_forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let idx = wid.x + wid.y * nwg.x;
    if (idx >= p.total) { return; }
    let rc = upper_pair(idx);
    let acc = gram_tile(t, rc.x, rc.y);
    // Rows and columns of the invocation's four 4 x 4 blocks.
    let r0 = 2u * rc.x * 64u + 4u * (t / 16u);
    let r1 = r0 + 64u;
    let c0 = 2u * rc.y * 64u + 4u * (t % 16u);
    let c1 = c0 + 64u;
    let s = vec4<f32>(block_sum(dist_block(acc.c0, acc.c2, acc.c4, acc.c6, r0, c0), r0, c0),
        block_sum(dist_block(acc.c1, acc.c3, acc.c5, acc.c7, r0, c1), r0, c1),
        block_sum(dist_block(acc.c8, acc.c10, acc.c12, acc.c14, r1, c0), r1, c0),
        block_sum(dist_block(acc.c9, acc.c11, acc.c13, acc.c15, r1, c1), r1, c1));
    // Per half-tile pair, the 256 invocations' sums in a fixed order: 16 invocations add 16 each,
    // then 4 invocations add those 16 (gram_tile ended with a barrier: sm is free).
    sm[t] = s;
    workgroupBarrier();
    if (t < 64u) {
        let pair = t / 16u;
        let x = t % 16u;
        var a = 0.0;
        for (var y = 0u; y < 16u; y++) { a += sm[16u * x + y][pair]; }
        sm[256u + t] = vec4<f32>(a);
    }
    workgroupBarrier();
    if (t < 4u) {
        var a = 0.0;
        for (var x = 0u; x < 16u; x++) { a += sm[256u + 16u * t + x].x; }
        gf_part[(2u * rc.x + t / 2u) * p.h2 + 2u * rc.y + t % 2u] = a;
    }
}

@compute @workgroup_size(256)
fn gram_reduce(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = flat(gid, nwg, 256u);
    if (idx >= p.total) { return; }
    let lo = min(idx / p.ns, idx % p.ns);
    let hi = max(idx / p.ns, idx % p.ns);
    var s = 0.0;
    for (var it = 0u; it < p.tiles; it++) {
        for (var jt = 0u; jt < p.tiles; jt++) {
            let a = lo * p.tiles + it;
            let b = hi * p.tiles + jt;
            s += rd_part[min(a, b) * p.h2 + max(a, b)];
        }
    }
    rd_s[idx] = s;
}

// Gs[A, B] = G[A, B] + G[B, A] of the samples of half-tiles ha, hb (clamped into range for
// padding half-tiles, whose weights are 0).
fn gs(ha: u32, hb: u32) -> f32 {
    let a = min(ha / p.tiles, p.ns - 1u);
    let b = min(hb / p.tiles, p.ns - 1u);
    return gb_g[a * p.ns + b] + gb_g[b * p.ns + a];
}

// A block's coefficients c = gs w_c / d (in place of dist4's values) and sum_c gs w_c d per row:
// one inverse square root per pair gives both d = x / sqrt(x) and 1 / d.
struct Coef {
    b: Block,
    dw: vec4<f32>,
}

fn coef_block(b: Block, c: u32, g: f32) -> Coef {
    let gw = g * rows4[p.h2 * 16u + c / 4u];
    let i0 = inverseSqrt(b.d0);
    let i1 = inverseSqrt(b.d1);
    let i2 = inverseSqrt(b.d2);
    let i3 = inverseSqrt(b.d3);
    return Coef(Block(gw * i0, gw * i1, gw * i2, gw * i3),
        vec4<f32>(dot(gw, b.d0 * i0), dot(gw, b.d1 * i1), dot(gw, b.d2 * i2), dot(gw, b.d3 * i3)));
}

// Writes the coefficients of column x (0..3) of blocks top (rows 4ty..) and bottom (64 + 4ty..) as
// sm[j * 32 + ty] and sm[j * 32 + 16 + ty] (j = the column within the phase's 32).
fn put_coef(top: Block, bottom: Block, j: u32, ty: u32, x: u32) {
    sm[j * 32u + ty] = vec4<f32>(top.d0[x], top.d1[x], top.d2[x], top.d3[x]);
    sm[j * 32u + 16u + ty] = vec4<f32>(bottom.d0[x], bottom.d1[x], bottom.d2[x], bottom.d3[x]);
}

// rows[e] through its vec4 view (one entry point may not bind a buffer twice).
fn row_value(e: u32) -> f32 {
    return rows4[e / 4u][e % 4u];
}

// Dims k .. k + 3 of raw row r (0 past mp; mp is a multiple of 8, so k < mp means all four).
fn raw4(r: u32, k: u32) -> vec4<f32> {
    if (k >= p.mp) { return vec4<f32>(0.0); }
    return hr4[(r * p.mp + k) / 4u];
}

@compute @workgroup_size(256)
fn gram_backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let idx = wid.x + wid.y * nwg.x;
    if (idx >= p.total) { return; }
    let rt_count = p.h2 / 2u;
    let kc = idx % p.chunks;
    let rt = (idx / p.chunks) % rt_count;
    let split = idx / (p.chunks * rt_count);
    let ty = t / 16u;
    let tx = t % 16u;
    let r0 = 2u * rt * 64u + 4u * ty; // rows r0 .. r0 + 3 (half-tile 2 rt), r1 .. (2 rt + 1)
    let r1 = r0 + 64u;
    let kd = kc * 64u + 4u * tx; // this invocation's output dims kd .. kd + 3
    // The invocation's 8 rows at its 4 output dims, raw.
    let ha0 = raw4(r0, kd);
    let ha1 = raw4(r0 + 1u, kd);
    let ha2 = raw4(r0 + 2u, kd);
    let ha3 = raw4(r0 + 3u, kd);
    let ha4 = raw4(r1, kd);
    let ha5 = raw4(r1 + 1u, kd);
    let ha6 = raw4(r1 + 2u, kd);
    let ha7 = raw4(r1 + 3u, kd);
    // dh accumulators (before the factor w_Ai) of those rows and dims; dw partials per row.
    var v0 = vec4<f32>(0.0);
    var v1 = vec4<f32>(0.0);
    var v2 = vec4<f32>(0.0);
    var v3 = vec4<f32>(0.0);
    var v4 = vec4<f32>(0.0);
    var v5 = vec4<f32>(0.0);
    var v6 = vec4<f32>(0.0);
    var v7 = vec4<f32>(0.0);
    var dw0 = vec4<f32>(0.0);
    var dw1 = vec4<f32>(0.0);
    let c_end = min(rt_count, (split + 1u) * p.bper);
    for (var ct = split * p.bper; ct < c_end; ct++) {
        // Column half-tiles 2 ct and 2 ct + 1 one after the other, each in two phases of 32
        // columns written by the invocations whose columns they are (tx / 8 == ph).
        for (var hc = 2u * ct; hc < 2u * ct + 2u; hc++) {
            let acc = gram_half(t, rt, hc);
            let c0 = hc * 64u + 4u * tx;
            let k0 = coef_block(dist_block(acc.h0, acc.h1, acc.h2, acc.h3, r0, c0), c0, gs(2u * rt, hc));
            let k1 = coef_block(dist_block(acc.h4, acc.h5, acc.h6, acc.h7, r1, c0), c0, gs(2u * rt + 1u, hc));
            dw0 += k0.dw;
            dw1 += k1.dw;
            for (var ph = 0u; ph < 2u; ph++) {
                if (tx / 8u == ph) {
                    for (var x = 0u; x < 4u; x++) {
                        put_coef(k0.b, k1.b, 4u * (tx % 8u) + x, ty, x);
                    }
                }
                // B's raw rows of this phase at the chunk's 64 dims: 32 rows x 16 vec4s, 2 per invocation.
                let cr = hc * 64u + 32u * ph;
                for (var e = t; e < 512u; e += 256u) {
                    sm[1024u + e] = raw4(cr + e / 16u, kc * 64u + 4u * (e % 16u));
                }
                workgroupBarrier();
                for (var j = 0u; j < 32u; j++) {
                    let ca = sm[j * 32u + ty];
                    let cb = sm[j * 32u + 16u + ty];
                    let hb = sm[1024u + j * 16u + tx];
                    v0 = fma(vec4<f32>(ca.x), ha0 - hb, v0);
                    v1 = fma(vec4<f32>(ca.y), ha1 - hb, v1);
                    v2 = fma(vec4<f32>(ca.z), ha2 - hb, v2);
                    v3 = fma(vec4<f32>(ca.w), ha3 - hb, v3);
                    v4 = fma(vec4<f32>(cb.x), ha4 - hb, v4);
                    v5 = fma(vec4<f32>(cb.y), ha5 - hb, v5);
                    v6 = fma(vec4<f32>(cb.z), ha6 - hb, v6);
                    v7 = fma(vec4<f32>(cb.w), ha7 - hb, v7);
                }
                workgroupBarrier();
            }
        }
    }
    // dw: each row's 16 partial sums (tx = 0..15) in order.
    sm[2u * t] = dw0;
    sm[2u * t + 1u] = dw1;
    workgroupBarrier();
    var sw0 = vec4<f32>(0.0);
    var sw1 = vec4<f32>(0.0);
    for (var x = 0u; x < 16u; x++) {
        sw0 += sm[2u * (16u * ty + x)];
        sw1 += sm[2u * (16u * ty + x) + 1u];
    }
    let vs = array<vec4<f32>, 8>(v0, v1, v2, v3, v4, v5, v6, v7);
    let n = p.h2 * 64u;
    for (var q = 0u; q < 8u; q++) {
        let r = select(r0 + q, r1 + q - 4u, q >= 4u);
        let at = row_token(r);
        if (at.x >= p.ns || at.y >= p.nt) { continue; }
        let real = row_value(2u * n + r) != 0.0;
        let out = (split * p.ns + at.x) * p.nt + at.y;
        let wr = row_value(n + r);
        for (var d = 0u; d < 4u; d++) {
            if (kd + d < p.m) {
                gb_dh[out * p.m + kd + d] = select(0.0, wr * vs[q][d], real);
            }
        }
        if (kc == 0u && tx == 0u) {
            let dw = select(sw1[q % 4u], sw0[q % 4u], q < 4u);
            gb_dw[out] = select(0.0, dw, real);
        }
    }
}
