// Batched matrix product C[b] = A[b] x B[b] with arbitrary strides, so either operand may be
// transposed (or broadcast over the batch with stride 0) without a copy.
//   C: [batch, M, N] contiguous; A[b, m, k] = a[b*sa_b + m*sa_m + k*sa_k]; B likewise.
//
// Bindings (group 0): 0 = Params (uniform), 1 a (read), 2 b (read), 3 c (read_write).
// Workgroup layouts, one entry point per adapter class:
//   mm_blocked, mm_blocked8, mm_blocked8v (CPU rasterisers such as lavapipe): 64 invocations, each
//     computes a 4 x 4 (mm_blocked) or 8 x 8 (mm_blocked8, its vec4 form mm_blocked8v) block of C
//     in registers, no shared memory and no barriers (barriers are very slow there); a workgroup
//     covers a 32 x 32 tile (mm_blocked, 8 x 8 invocations; grid (ceil(N/32), ceil(M/32), batch)),
//     or WX x WY blocks of WZ = 64 / (WX WY) batch items (the 8 x 8 cores; grid (ceil(N/8WX),
//     ceil(M/8WY), ceil(batch/WZ))).
//   mm_tiled (small GPU products): 16 x 16 invocations, 64 x 64 tile of C per workgroup, each
//     invocation a 4 x 4 register block; A and B tiles of depth 16 are staged in workgroup memory
//     (read along the operand's contiguous dimension, rows padded against bank conflicts);
//     grid = (ceil(N/64), ceil(M/64), batch).
//   mm_tiled128 (large GPU products): 16 x 16 invocations, 128 x 128 tile of C per workgroup, each
//     invocation an 8 x 8 register block (rows 4ty..4ty+3 and 64+4ty..64+4ty+3, columns likewise,
//     so its shared-memory reads are four vec4 loads per k); A and B tiles of depth 8 are staged
//     in workgroup memory as vec4s (8.25 KiB with the row padding); grid = (ceil(N/128), ceil(M/128), batch).
// Out-of-range rows/columns are clamped on load and skipped on store, so any M, N, K works.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    batch: u32,
    sa_b: u32,
    sa_m: u32,
    sa_k: u32,
    sb_b: u32,
    sb_k: u32,
    sb_n: u32,
    _p0: u32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

@compute @workgroup_size(8, 8)
fn mm_blocked(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row0 = wid.y * 32u + lid.y * 4u;
    let col0 = wid.x * 32u + lid.x * 4u;
    if (row0 >= p.m || col0 >= p.n) { return; }
    let bi = wid.z;
    // Clamped indices: edge blocks re-read valid data instead of branching in the inner loop.
    var ra: array<u32, 4>;
    var cb: array<u32, 4>;
    for (var i = 0u; i < 4u; i++) {
        ra[i] = bi * p.sa_b + min(row0 + i, p.m - 1u) * p.sa_m;
        cb[i] = bi * p.sb_b + min(col0 + i, p.n - 1u) * p.sb_n;
    }
    var acc: array<vec4<f32>, 4>;
    for (var kk = 0u; kk < p.k; kk++) {
        let ka = kk * p.sa_k;
        let kb = kk * p.sb_k;
        let bv = vec4<f32>(b[cb[0] + kb], b[cb[1] + kb], b[cb[2] + kb], b[cb[3] + kb]);
        acc[0] += a[ra[0] + ka] * bv;
        acc[1] += a[ra[1] + ka] * bv;
        acc[2] += a[ra[2] + ka] * bv;
        acc[3] += a[ra[3] + ka] * bv;
    }
    let base = bi * p.m * p.n;
    for (var i = 0u; i < 4u; i++) {
        let r = row0 + i;
        if (r < p.m) {
            for (var j = 0u; j < 4u; j++) {
                if (col0 + j < p.n) { c[base + r * p.n + col0 + j] = acc[i][j]; }
            }
        }
    }
}

const TM: u32 = 64u;
const TK: u32 = 16u;
// [TK][TM + 1]: A tile, k-major so a row of 4 m's is contiguous; the row padding keeps the
// transposing stores of a k-contiguous operand (16 invocations writing one column) on 16 banks.
const LDS: u32 = 65u;
var<workgroup> sa: array<f32, 1040>;
var<workgroup> sb: array<f32, 1040>; // [TK][TM + 1]: B tile

// Position (k, m or n) of element idx of a TK x 64 tile: consecutive invocations walk the
// operand's contiguous dimension, so global reads coalesce in both layouts.
fn tile_pos(idx: u32, k_contiguous: bool) -> vec2<u32> {
    if (k_contiguous) { return vec2<u32>(idx % TK, idx / TK); }
    return vec2<u32>(idx / TM, idx % TM);
}

@compute @workgroup_size(16, 16)
fn mm_tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let bi = wid.z;
    let row0 = wid.y * TM;
    let col0 = wid.x * TM;
    let t = lid.y * 16u + lid.x;
    var acc: array<vec4<f32>, 4>;
    for (var k0 = 0u; k0 < p.k; k0 += TK) {
        // 256 invocations load 1024 elements of each tile: 4 each; out-of-range reads give 0.
        for (var e = 0u; e < 4u; e++) {
            let idx = t + e * 256u;
            let qa = tile_pos(idx, p.sa_k == 1u);
            let qb = tile_pos(idx, p.sb_k == 1u);
            var va = 0.0;
            var vb = 0.0;
            if (k0 + qa.x < p.k && row0 + qa.y < p.m) { va = a[bi * p.sa_b + (row0 + qa.y) * p.sa_m + (k0 + qa.x) * p.sa_k]; }
            if (k0 + qb.x < p.k && col0 + qb.y < p.n) { vb = b[bi * p.sb_b + (k0 + qb.x) * p.sb_k + (col0 + qb.y) * p.sb_n]; }
            sa[qa.x * LDS + qa.y] = va;
            sb[qb.x * LDS + qb.y] = vb;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            let ra = kk * LDS + lid.y * 4u;
            let rb = kk * LDS + lid.x * 4u;
            let av = vec4<f32>(sa[ra], sa[ra + 1u], sa[ra + 2u], sa[ra + 3u]);
            let bv = vec4<f32>(sb[rb], sb[rb + 1u], sb[rb + 2u], sb[rb + 3u]);
            acc[0] = fma(vec4<f32>(av.x), bv, acc[0]);
            acc[1] = fma(vec4<f32>(av.y), bv, acc[1]);
            acc[2] = fma(vec4<f32>(av.z), bv, acc[2]);
            acc[3] = fma(vec4<f32>(av.w), bv, acc[3]);
        }
        workgroupBarrier();
    }
    let base = bi * p.m * p.n;
    for (var i = 0u; i < 4u; i++) {
        let r = row0 + lid.y * 4u + i;
        if (r < p.m) {
            for (var j = 0u; j < 4u; j++) {
                let cc = col0 + lid.x * 4u + j;
                if (cc < p.n) { c[base + r * p.n + cc] = acc[i][j]; }
            }
        }
    }
}

const BT: u32 = 128u; // mm_tiled128: C tile edge

// The 128-tile kernel keeps its 8 x 8 results in 16 named vec4s and every loop that touches
// them is written out: an accumulator array indexed in a loop was put in local memory by
// NVIDIA's compiler (2 TFLOP/s on an H200, against 22 once written out).
struct Acc {
    c0: vec4<f32>, c1: vec4<f32>, c2: vec4<f32>, c3: vec4<f32>,
    c4: vec4<f32>, c5: vec4<f32>, c6: vec4<f32>, c7: vec4<f32>,
    c8: vec4<f32>, c9: vec4<f32>, c10: vec4<f32>, c11: vec4<f32>,
    c12: vec4<f32>, c13: vec4<f32>, c14: vec4<f32>, c15: vec4<f32>,
}

// acc += the outer product of A rows (a0: 4ty.., a1: 64+4ty..) and B columns (b0: 4tx.., b1: 64+4tx..).
fn outer8(acc: Acc, a0: vec4<f32>, a1: vec4<f32>, b0: vec4<f32>, b1: vec4<f32>) -> Acc {
    // Explicit fma: drivers need not contract a * b + c written as two operations (llvmpipe
    // does not: its FMA probe read 1.5x higher with fma()).
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

// Row r of C from column c0: the 4 values of v that fall inside the matrix.
fn put4(base: u32, r: u32, c0: u32, v: vec4<f32>) {
    if (r >= p.m) { return; }
    let o = base + r * p.n + c0;
    if (c0 < p.n) { c[o] = v.x; }
    if (c0 + 1u < p.n) { c[o + 1u] = v.y; }
    if (c0 + 2u < p.n) { c[o + 2u] = v.z; }
    if (c0 + 3u < p.n) { c[o + 3u] = v.w; }
}

// Writes the 8 x 8 block of invocation (ty, tx) of the tile at (row0, col0).
fn store8(acc: Acc, base: u32, row0: u32, col0: u32, ty: u32, tx: u32) {
    let r0 = row0 + 4u * ty;
    let r1 = row0 + 64u + 4u * ty;
    let q0 = col0 + 4u * tx;
    let q1 = col0 + 64u + 4u * tx;
    put4(base, r0, q0, acc.c0); put4(base, r0, q1, acc.c1);
    put4(base, r0 + 1u, q0, acc.c2); put4(base, r0 + 1u, q1, acc.c3);
    put4(base, r0 + 2u, q0, acc.c4); put4(base, r0 + 2u, q1, acc.c5);
    put4(base, r0 + 3u, q0, acc.c6); put4(base, r0 + 3u, q1, acc.c7);
    put4(base, r1, q0, acc.c8); put4(base, r1, q1, acc.c9);
    put4(base, r1 + 1u, q0, acc.c10); put4(base, r1 + 1u, q1, acc.c11);
    put4(base, r1 + 2u, q0, acc.c12); put4(base, r1 + 2u, q1, acc.c13);
    put4(base, r1 + 3u, q0, acc.c14); put4(base, r1 + 3u, q1, acc.c15);
}

// The 8 x 8 cores' 64 invocations cover WX x WY blocks of 8 x 8 (WX * 8 columns, WY * 8 rows) of
// 64 / (WX * WY) batch items: narrow products (the attention blocks' 16 columns) then keep every
// SIMD lane busy (llvmpipe packs consecutive invocations into one vector). Overrides, powers of two.
override WX: u32 = 8u;
override WY: u32 = 8u;

// (first row, first column, batch item) of invocation li of workgroup wid's 8 x 8 block.
fn block8(wid: vec3<u32>, li: u32) -> vec3<u32> {
    let tx = li % WX;
    let ty = (li / WX) % WY;
    let tz = li / (WX * WY);
    return vec3<u32>((wid.y * WY + ty) * 8u, (wid.x * WX + tx) * 8u, wid.z * (64u / (WX * WY)) + tz);
}

// mm_blocked8: the barrier-free core with 8 x 8 blocks (rows row0 .. row0 + 7, columns col0 ..
// col0 + 7, clamped into the matrix on load like mm_blocked's): 16 loads per 64 multiply-adds.
@compute @workgroup_size(64)
fn mm_blocked8(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let blk = block8(wid, li);
    let row0 = blk.x;
    let col0 = blk.y;
    let bi = blk.z;
    if (row0 >= p.m || col0 >= p.n || bi >= p.batch) { return; }
    let ab = bi * p.sa_b;
    let bb = bi * p.sb_b;
    let ml = p.m - 1u;
    let nl = p.n - 1u;
    let ra0 = ab + vec4<u32>(row0, min(row0 + 1u, ml), min(row0 + 2u, ml), min(row0 + 3u, ml)) * p.sa_m;
    let ra1 = ab + vec4<u32>(min(row0 + 4u, ml), min(row0 + 5u, ml), min(row0 + 6u, ml), min(row0 + 7u, ml)) * p.sa_m;
    let cb0 = bb + vec4<u32>(col0, min(col0 + 1u, nl), min(col0 + 2u, nl), min(col0 + 3u, nl)) * p.sb_n;
    let cb1 = bb + vec4<u32>(min(col0 + 4u, nl), min(col0 + 5u, nl), min(col0 + 6u, nl), min(col0 + 7u, nl)) * p.sb_n;
    var acc: Acc;
    for (var kk = 0u; kk < p.k; kk++) {
        let ka = kk * p.sa_k;
        let kb = kk * p.sb_k;
        let a0 = vec4<f32>(a[ra0.x + ka], a[ra0.y + ka], a[ra0.z + ka], a[ra0.w + ka]);
        let a1 = vec4<f32>(a[ra1.x + ka], a[ra1.y + ka], a[ra1.z + ka], a[ra1.w + ka]);
        let b0 = vec4<f32>(b[cb0.x + kb], b[cb0.y + kb], b[cb0.z + kb], b[cb0.w + kb]);
        let b1 = vec4<f32>(b[cb1.x + kb], b[cb1.y + kb], b[cb1.z + kb], b[cb1.w + kb]);
        acc = outer8(acc, a0, a1, b0, b1);
    }
    // outer8's rows a1 are rows 4..7 here (64.. in mm_tiled128): store8 with a row gap of 4.
    let base = bi * p.m * p.n;
    put4(base, row0, col0, acc.c0); put4(base, row0, col0 + 4u, acc.c1);
    put4(base, row0 + 1u, col0, acc.c2); put4(base, row0 + 1u, col0 + 4u, acc.c3);
    put4(base, row0 + 2u, col0, acc.c4); put4(base, row0 + 2u, col0 + 4u, acc.c5);
    put4(base, row0 + 3u, col0, acc.c6); put4(base, row0 + 3u, col0 + 4u, acc.c7);
    put4(base, row0 + 4u, col0, acc.c8); put4(base, row0 + 4u, col0 + 4u, acc.c9);
    put4(base, row0 + 5u, col0, acc.c10); put4(base, row0 + 5u, col0 + 4u, acc.c11);
    put4(base, row0 + 6u, col0, acc.c12); put4(base, row0 + 6u, col0 + 4u, acc.c13);
    put4(base, row0 + 7u, col0, acc.c14); put4(base, row0 + 7u, col0 + 4u, acc.c15);
}

// mm_blocked8v: mm_blocked8 on operands and C bound as vec4s (chosen by shape, src/ops/matmul.rs),
// so every load brings 4 values: 16 loads per 4 k's (256 multiply-adds) where mm_blocked8 takes 64
// (llvmpipe pays per load, not per byte). A_KC / B_KC: the operand is stored k-contiguous (A
// row-major, B transposed) and each of its 8 rows (columns) is read 4 k's at a time, the 4 x 4
// pieces turned into k-columns by transpose(); otherwise it is read along m (n), two vec4s per k,
// the second clamped to start inside the matrix (what it reads past M or N is never stored).
// Needs N % 4 == 0 (C stored as vec4s), K % 4 == 0 for a k-contiguous operand, M % 4 == 0 for a
// transposed A: then every row start and batch stride is a multiple of 4. The k-loop runs in
// steps of 4, then single k's (those exist only when neither operand is k-contiguous).
override A_KC: bool = true;
override B_KC: bool = false;
@group(0) @binding(1) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> c4: array<vec4<f32>>;

// k-columns k .. k + 3 (k a multiple of 4) of an operand's 8 rows or columns: column q is
// (lo[q], hi[q]), lo holding rows (columns) 0..3 and hi 4..7.
struct Panel {
    lo: mat4x4<f32>,
    hi: mat4x4<f32>,
}

// The operand in `src` (0 = a4, 1 = b4) at offsets `o` (vec4 units, from `offsets`): with `kc`
// its 8 row starts, else the starts of its two vec4s at k = 0 (o0.x, o0.y) and k's stride (o1.x).
fn panel(src: u32, kc: bool, o: Offs, k: u32) -> Panel {
    let o0 = o.o0;
    let o1 = o.o1;
    if (kc) {
        let q = k / 4u;
        return Panel(
            transpose(mat4x4<f32>(load4(src, o0.x + q), load4(src, o0.y + q), load4(src, o0.z + q), load4(src, o0.w + q))),
            transpose(mat4x4<f32>(load4(src, o1.x + q), load4(src, o1.y + q), load4(src, o1.z + q), load4(src, o1.w + q))),
        );
    }
    let s = o1.x;
    let r = o0.x + k * s;
    let h = o0.y + k * s;
    return Panel(
        mat4x4<f32>(load4(src, r), load4(src, r + s), load4(src, r + 2u * s), load4(src, r + 3u * s)),
        mat4x4<f32>(load4(src, h), load4(src, h + s), load4(src, h + 2u * s), load4(src, h + 3u * s)),
    );
}

fn load4(src: u32, i: u32) -> vec4<f32> {
    if (src == 0u) { return a4[i]; }
    return b4[i];
}

// One k-column (any k) of an operand read along m (n): its two vec4s.
fn column(src: u32, o: Offs, k: u32) -> mat2x4<f32> {
    return mat2x4<f32>(load4(src, o.o0.x + k * o.o1.x), load4(src, o.o0.y + k * o.o1.x));
}

struct Offs {
    o0: vec4<u32>,
    o1: vec4<u32>,
}

// The offsets `panel` takes for an operand whose 8 rows (columns) start at r0 (clamped into
// 0 .. count - 1), with batch offset `base`, stride `s_rc` between rows (columns) and `s_k` along k.
fn offsets(kc: bool, base: u32, r0: u32, count: u32, s_rc: u32, s_k: u32) -> Offs {
    if (kc) {
        let l = count - 1u;
        return Offs(
            (base + vec4<u32>(r0, min(r0 + 1u, l), min(r0 + 2u, l), min(r0 + 3u, l)) * s_rc) / 4u,
            (base + vec4<u32>(min(r0 + 4u, l), min(r0 + 5u, l), min(r0 + 6u, l), min(r0 + 7u, l)) * s_rc) / 4u,
        );
    }
    return Offs(vec4<u32>((base + r0) / 4u, (base + min(r0 + 4u, count - 4u)) / 4u, 0u, 0u), vec4<u32>(s_k / 4u, 0u, 0u, 0u));
}

// Row r of C from column c0 (a multiple of 4), when inside the matrix.
fn put4v(base: u32, r: u32, c0: u32, v: vec4<f32>) {
    if (r < p.m && c0 < p.n) { c4[(base + r * p.n + c0) / 4u] = v; }
}

@compute @workgroup_size(64)
fn mm_blocked8v(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let blk = block8(wid, li);
    let row0 = blk.x;
    let col0 = blk.y;
    let bi = blk.z;
    if (row0 >= p.m || col0 >= p.n || bi >= p.batch) { return; }
    let oa = offsets(A_KC, bi * p.sa_b, row0, p.m, p.sa_m, p.sa_k);
    let ob = offsets(B_KC, bi * p.sb_b, col0, p.n, p.sb_n, p.sb_k);
    var acc: Acc;
    let k4 = p.k & ~3u;
    for (var k = 0u; k < k4; k += 4u) {
        let pa = panel(0u, A_KC, oa, k);
        let pb = panel(1u, B_KC, ob, k);
        acc = outer8(acc, pa.lo[0], pa.hi[0], pb.lo[0], pb.hi[0]);
        acc = outer8(acc, pa.lo[1], pa.hi[1], pb.lo[1], pb.hi[1]);
        acc = outer8(acc, pa.lo[2], pa.hi[2], pb.lo[2], pb.hi[2]);
        acc = outer8(acc, pa.lo[3], pa.hi[3], pb.lo[3], pb.hi[3]);
    }
    for (var k = k4; k < p.k; k++) {
        let ca = column(0u, oa, k);
        let cb = column(1u, ob, k);
        acc = outer8(acc, ca[0], ca[1], cb[0], cb[1]);
    }
    let base = bi * p.m * p.n;
    put4v(base, row0, col0, acc.c0); put4v(base, row0, col0 + 4u, acc.c1);
    put4v(base, row0 + 1u, col0, acc.c2); put4v(base, row0 + 1u, col0 + 4u, acc.c3);
    put4v(base, row0 + 2u, col0, acc.c4); put4v(base, row0 + 2u, col0 + 4u, acc.c5);
    put4v(base, row0 + 3u, col0, acc.c6); put4v(base, row0 + 3u, col0 + 4u, acc.c7);
    put4v(base, row0 + 4u, col0, acc.c8); put4v(base, row0 + 4u, col0 + 4u, acc.c9);
    put4v(base, row0 + 5u, col0, acc.c10); put4v(base, row0 + 5u, col0 + 4u, acc.c11);
    put4v(base, row0 + 6u, col0, acc.c12); put4v(base, row0 + 6u, col0 + 4u, acc.c13);
    put4v(base, row0 + 7u, col0, acc.c14); put4v(base, row0 + 7u, col0 + 4u, acc.c15);
}

const BK: u32 = 8u; // mm_tiled128: depth of the staged A and B tiles

// Element e of invocation t in a BK x 128 panel, as (k, m or n): consecutive invocations walk
// the operand's contiguous dimension (k when its k-stride is 1), so global reads coalesce.
fn panel_pos(t: u32, e: u32, k_contiguous: bool) -> vec2<u32> {
    let idx = t + e * 256u;
    if (k_contiguous) { return vec2<u32>(idx % BK, idx / BK); }
    return vec2<u32>(idx / BT, idx % BT);
}

// A[row0 + m, k] and B[k, col0 + n] of batch item bi, 0 outside the matrices.
fn load_a(bi: u32, row0: u32, q: vec2<u32>, k0: u32) -> f32 {
    let k = k0 + q.x;
    if (k < p.k && row0 + q.y < p.m) { return a[bi * p.sa_b + (row0 + q.y) * p.sa_m + k * p.sa_k]; }
    return 0.0;
}
fn load_b(bi: u32, col0: u32, q: vec2<u32>, k0: u32) -> f32 {
    let k = k0 + q.x;
    if (k < p.k && col0 + q.y < p.n) { return b[bi * p.sb_b + k * p.sb_k + (col0 + q.y) * p.sb_n]; }
    return 0.0;
}

// [BK][BT/4 + 1]: A tile, k-major, 4 rows per vec4. The padding vec4 per k row puts the 8 k's of
// one row of a k-contiguous operand, stored together while staging, on 8 different banks.
const LD4: u32 = 33u;
var<workgroup> ta4: array<vec4<f32>, 264>;
var<workgroup> tb4: array<vec4<f32>, 264>; // [BK][BT/4 + 1]: B tile, k-major, 4 columns per vec4

fn stage128(t: u32, e: u32, bi: u32, row0: u32, col0: u32, k0: u32) {
    let qa = panel_pos(t, e, p.sa_k == 1u);
    ta4[qa.x * LD4 + qa.y / 4u][qa.y % 4u] = load_a(bi, row0, qa, k0);
    let qb = panel_pos(t, e, p.sb_k == 1u);
    tb4[qb.x * LD4 + qb.y / 4u][qb.y % 4u] = load_b(bi, col0, qb, k0);
}

@compute @workgroup_size(16, 16)
fn mm_tiled128(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let bi = wid.z;
    let row0 = wid.y * BT;
    let col0 = wid.x * BT;
    let t = lid.y * 16u + lid.x;
    var acc: Acc;
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        // 256 invocations stage 1024 elements of each tile, 4 each.
        stage128(t, 0u, bi, row0, col0, k0);
        stage128(t, 1u, bi, row0, col0, k0);
        stage128(t, 2u, bi, row0, col0, k0);
        stage128(t, 3u, bi, row0, col0, k0);
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            acc = outer8(acc, ta4[kk * LD4 + lid.y], ta4[kk * LD4 + lid.y + 16u], tb4[kk * LD4 + lid.x],
                tb4[kk * LD4 + lid.x + 16u]);
        }
        workgroupBarrier();
    }
    store8(acc, bi * p.m * p.n, row0, col0, lid.y, lid.x);
}
