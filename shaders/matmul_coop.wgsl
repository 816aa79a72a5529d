// Mixed-precision batched matrix product on cooperative matrices (tensor cores): C[b] = A[b] x B[b]
// with A and B rounded to f16 on load and the products accumulated in f32. Opt-in only
// (`matmul::Variant::Coop16`, `Device::set_mixed_precision`): the f32 kernels in matmul.wgsl stay
// the default and the ones the f64-reference tests check on every adapter. This file has its own
// source because `enable wgpu_cooperative_matrix;` does not parse where the feature is absent.
// Same strides and Params as matmul.wgsl: A[b, m, k] = a[b*sa_b + m*sa_m + k*sa_k], B likewise,
// C: [batch, M, N] contiguous, any M, N, K (out-of-range elements load as 0, stores are masked).
//
// Bindings (group 0): 0 = Params (uniform), 1 a (read), 2 b (read), 3 c (read_write).
// Workgroup layout: 256 invocations = 8 subgroups of 32 (the host uses this kernel only where the
//   adapter's subgroup size is fixed at 32 and it reports 16x16x16 f16 x f16 -> f32 matrices);
//   a workgroup computes a 128 x 128 tile of C, subgroup s the 64 x 32 block at rows 64 (s / 4),
//   columns 32 (s % 4): 4 x 2 accumulators of 16 x 16. K advances 32 at a time through two
//   double-buffered f16 panels in workgroup memory (A 128 x 32, B 32 x 128, rows padded by 8
//   halves); the next panel is read from global memory into registers while the tensor cores work
//   on the current one, so each K step has one barrier. grid = (ceil(N/128), ceil(M/128), batch).
// Workgroup memory: 2 x 10 KiB (A) + 2 x 8.5 KiB (B) + 8 KiB (edge staging of C) = 45 KiB.
//
// mm_coop16p: the same product, tiles and panels on operands packed beforehand by pack_f16.wgsl
// (f16, zero-padded: A [batch, Mp, Kp], B [batch, Kp, Np] row-major, Mp and Np multiples of 128,
// Kp of 32), so a panel is 4 + 4 aligned 8-byte loads per invocation with no bounds checks or
// conversions, where mm_coop16 makes 32 checked scalar loads and 32 conversions. Bindings: 1 ap,
// 2 bp (vec4<f16>, read), 3 c; Params as above with k = Kp, sa_b / sa_m = A's batch / row
// stride and sb_b / sb_k = B's, in vec4<f16> units (sa_b, sb_b = 0: broadcast). Its
// epilogue repeats mm_coop16's (naga's SPIR-V writer is picky about coopStore operands, so the
// form measured on the H200 is kept verbatim). On the H200 mm_coop16p (packing included) ran at
// 151 TFLOP/s at 4096 against mm_coop16's 77; a variant with 64 x 64 per subgroup (4 subgroups,
// 4 x 4 accumulators) measured 137 and was removed.

enable f16;
enable wgpu_cooperative_matrix;

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
@group(0) @binding(1) var<storage, read> ap: array<vec4<f16>>; // mm_coop16p only
@group(0) @binding(2) var<storage, read> bp: array<vec4<f16>>; // mm_coop16p only

const TILE: u32 = 128u; // C tile edge per workgroup
const KS: u32 = 32u; // K per step
const LDA: u32 = 40u; // A panel row stride in halves (32 + 8 padding; 80 bytes keeps 16-byte rows)
const LDB: u32 = 136u; // B panel row stride in halves (128 + 8 padding)
const PA: u32 = 5120u; // TILE * LDA: one A panel
const PB: u32 = 4352u; // KS * LDB: one B panel

var<workgroup> sa: array<f16, 10240>; // 2 panels [m][k]
var<workgroup> sb: array<f16, 8704>; // 2 panels [k][n]
var<workgroup> sc: array<f32, 2048>; // 8 subgroups x 16 x 16, for tiles on the matrix edge

alias MA = coop_mat16x16<f16, A>;
alias MB = coop_mat16x16<f16, B>;
alias MC = coop_mat16x16<f32, C>;

// Element e (0..15) of invocation t in a 128 x 32 (A) or 32 x 128 (B) panel: consecutive
// invocations walk the operand's contiguous dimension so global reads coalesce in both layouts.
fn a_pos(t: u32, e: u32) -> vec2<u32> { // (m, k)
    let idx = t + e * 256u;
    if (p.sa_k == 1u) { return vec2<u32>(idx / KS, idx % KS); }
    return vec2<u32>(idx % TILE, idx / TILE);
}
fn b_pos(t: u32, e: u32) -> vec2<u32> { // (k, n)
    let idx = t + e * 256u;
    if (p.sb_n == 1u) { return vec2<u32>(idx / TILE, idx % TILE); }
    return vec2<u32>(idx % KS, idx / KS);
}

// One element of the A (B) panel at k0 from global memory, 0 outside the matrix.
fn load_a(bi: u32, row0: u32, k0: u32, q: vec2<u32>) -> f32 {
    let k = k0 + q.y;
    if (row0 + q.x < p.m && k < p.k) { return a[bi * p.sa_b + (row0 + q.x) * p.sa_m + k * p.sa_k]; }
    return 0.0;
}
fn load_b(bi: u32, col0: u32, k0: u32, q: vec2<u32>) -> f32 {
    let k = k0 + q.x;
    if (k < p.k && col0 + q.y < p.n) { return b[bi * p.sb_b + k * p.sb_k + (col0 + q.y) * p.sb_n]; }
    return 0.0;
}
// Elements e..e+3 of invocation t's share, as a vec4 (register staging is written out with
// constant indices: a private array indexed in a loop would live in local memory).
fn fetch_a(t: u32, e: u32, bi: u32, row0: u32, k0: u32) -> vec4<f32> {
    return vec4<f32>(load_a(bi, row0, k0, a_pos(t, e)), load_a(bi, row0, k0, a_pos(t, e + 1u)),
        load_a(bi, row0, k0, a_pos(t, e + 2u)), load_a(bi, row0, k0, a_pos(t, e + 3u)));
}
fn fetch_b(t: u32, e: u32, bi: u32, col0: u32, k0: u32) -> vec4<f32> {
    return vec4<f32>(load_b(bi, col0, k0, b_pos(t, e)), load_b(bi, col0, k0, b_pos(t, e + 1u)),
        load_b(bi, col0, k0, b_pos(t, e + 2u)), load_b(bi, col0, k0, b_pos(t, e + 3u)));
}
// ... rounded to f16 into panel `buf`.
fn put_a(buf: u32, t: u32, e: u32, v: vec4<f32>) {
    let o = buf * PA;
    var q = a_pos(t, e);
    sa[o + q.x * LDA + q.y] = f16(v.x);
    q = a_pos(t, e + 1u);
    sa[o + q.x * LDA + q.y] = f16(v.y);
    q = a_pos(t, e + 2u);
    sa[o + q.x * LDA + q.y] = f16(v.z);
    q = a_pos(t, e + 3u);
    sa[o + q.x * LDA + q.y] = f16(v.w);
}
fn put_b(buf: u32, t: u32, e: u32, v: vec4<f32>) {
    let o = buf * PB;
    var q = b_pos(t, e);
    sb[o + q.x * LDB + q.y] = f16(v.x);
    q = b_pos(t, e + 1u);
    sb[o + q.x * LDB + q.y] = f16(v.y);
    q = b_pos(t, e + 2u);
    sb[o + q.x * LDB + q.y] = f16(v.z);
    q = b_pos(t, e + 3u);
    sb[o + q.x * LDB + q.y] = f16(v.w);
}

@compute @workgroup_size(256)
fn mm_coop16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let bi = wid.z;
    let row0 = wid.y * TILE;
    let col0 = wid.x * TILE;
    let sg = t / 32u;
    let wr = (sg / 4u) * 64u; // this subgroup's rows within the tile
    let wc = (sg % 4u) * 32u; // and columns

    var c00 = MC();
    var c01 = MC();
    var c10 = MC();
    var c11 = MC();
    var c20 = MC();
    var c21 = MC();
    var c30 = MC();
    var c31 = MC();

    // Prologue: the panel at k = 0 into buffer 0 (zeros outside the matrices).
    put_a(0u, t, 0u, fetch_a(t, 0u, bi, row0, 0u));
    put_a(0u, t, 4u, fetch_a(t, 4u, bi, row0, 0u));
    put_a(0u, t, 8u, fetch_a(t, 8u, bi, row0, 0u));
    put_a(0u, t, 12u, fetch_a(t, 12u, bi, row0, 0u));
    put_b(0u, t, 0u, fetch_b(t, 0u, bi, col0, 0u));
    put_b(0u, t, 4u, fetch_b(t, 4u, bi, col0, 0u));
    put_b(0u, t, 8u, fetch_b(t, 8u, bi, col0, 0u));
    put_b(0u, t, 12u, fetch_b(t, 12u, bi, col0, 0u));
    workgroupBarrier();

    var ra0 = vec4<f32>();
    var ra1 = vec4<f32>();
    var ra2 = vec4<f32>();
    var ra3 = vec4<f32>();
    var rb0 = vec4<f32>();
    var rb1 = vec4<f32>();
    var rb2 = vec4<f32>();
    var rb3 = vec4<f32>();
    var buf = 0u;
    for (var k0 = 0u; k0 < p.k; k0 += KS) {
        let more = k0 + KS < p.k;
        if (more) {
            let k1 = k0 + KS;
            ra0 = fetch_a(t, 0u, bi, row0, k1);
            ra1 = fetch_a(t, 4u, bi, row0, k1);
            ra2 = fetch_a(t, 8u, bi, row0, k1);
            ra3 = fetch_a(t, 12u, bi, row0, k1);
            rb0 = fetch_b(t, 0u, bi, col0, k1);
            rb1 = fetch_b(t, 4u, bi, col0, k1);
            rb2 = fetch_b(t, 8u, bi, col0, k1);
            rb3 = fetch_b(t, 12u, bi, col0, k1);
        }
        let oa = buf * PA + wr * LDA;
        let ob = buf * PB + wc;
        for (var kk = 0u; kk < KS; kk += 16u) {
            let b0 = coopLoadT<MB>(&sb[ob + kk * LDB], LDB);
            let b1 = coopLoadT<MB>(&sb[ob + kk * LDB + 16u], LDB);
            let a0 = coopLoadT<MA>(&sa[oa + kk], LDA);
            c00 = coopMultiplyAdd(a0, b0, c00);
            c01 = coopMultiplyAdd(a0, b1, c01);
            let a1 = coopLoadT<MA>(&sa[oa + 16u * LDA + kk], LDA);
            c10 = coopMultiplyAdd(a1, b0, c10);
            c11 = coopMultiplyAdd(a1, b1, c11);
            let a2 = coopLoadT<MA>(&sa[oa + 32u * LDA + kk], LDA);
            c20 = coopMultiplyAdd(a2, b0, c20);
            c21 = coopMultiplyAdd(a2, b1, c21);
            let a3 = coopLoadT<MA>(&sa[oa + 48u * LDA + kk], LDA);
            c30 = coopMultiplyAdd(a3, b0, c30);
            c31 = coopMultiplyAdd(a3, b1, c31);
        }
        if (more) {
            let nb = 1u - buf;
            put_a(nb, t, 0u, ra0);
            put_a(nb, t, 4u, ra1);
            put_a(nb, t, 8u, ra2);
            put_a(nb, t, 12u, ra3);
            put_b(nb, t, 0u, rb0);
            put_b(nb, t, 4u, rb1);
            put_b(nb, t, 8u, rb2);
            put_b(nb, t, 12u, rb3);
        }
        // The next panel is complete and nobody reads the current one any more.
        workgroupBarrier();
        buf = 1u - buf;
    }

    let base = bi * p.m * p.n;
    let r0 = row0 + wr;
    let q0 = col0 + wc;
    if (row0 + TILE <= p.m && col0 + TILE <= p.n) {
        // Interior tile: straight from the accumulators to C. (Each operand is bound with `let`
        // first: naga 30's SPIR-V writer needs coopStore's operands emitted as expressions.)
        let ldc = p.n;
        let v00 = c00;
        let o00 = base + r0 * p.n + q0;
        coopStoreT(v00, &c[o00], ldc);
        let v01 = c01;
        let o01 = base + r0 * p.n + q0 + 16u;
        coopStoreT(v01, &c[o01], ldc);
        let v10 = c10;
        let o10 = base + (r0 + 16u) * p.n + q0;
        coopStoreT(v10, &c[o10], ldc);
        let v11 = c11;
        let o11 = base + (r0 + 16u) * p.n + q0 + 16u;
        coopStoreT(v11, &c[o11], ldc);
        let v20 = c20;
        let o20 = base + (r0 + 32u) * p.n + q0;
        coopStoreT(v20, &c[o20], ldc);
        let v21 = c21;
        let o21 = base + (r0 + 32u) * p.n + q0 + 16u;
        coopStoreT(v21, &c[o21], ldc);
        let v30 = c30;
        let o30 = base + (r0 + 48u) * p.n + q0;
        coopStoreT(v30, &c[o30], ldc);
        let v31 = c31;
        let o31 = base + (r0 + 48u) * p.n + q0 + 16u;
        coopStoreT(v31, &c[o31], ldc);
        return;
    }
    // Edge tile: through workgroup memory, one 16 x 16 accumulator at a time, masked.
    for (var q = 0u; q < 8u; q++) {
        switch q {
            case 0u: { let o = sg * 256u; let v = c00; coopStoreT(v, &sc[o], 16u); }
            case 1u: { let o = sg * 256u; let v = c01; coopStoreT(v, &sc[o], 16u); }
            case 2u: { let o = sg * 256u; let v = c10; coopStoreT(v, &sc[o], 16u); }
            case 3u: { let o = sg * 256u; let v = c11; coopStoreT(v, &sc[o], 16u); }
            case 4u: { let o = sg * 256u; let v = c20; coopStoreT(v, &sc[o], 16u); }
            case 5u: { let o = sg * 256u; let v = c21; coopStoreT(v, &sc[o], 16u); }
            case 6u: { let o = sg * 256u; let v = c30; coopStoreT(v, &sc[o], 16u); }
            default: { let o = sg * 256u; let v = c31; coopStoreT(v, &sc[o], 16u); }
        }
        workgroupBarrier();
        let lane = t % 32u;
        for (var e = 0u; e < 8u; e++) {
            let i = lane * 8u + e;
            let r = r0 + (q / 2u) * 16u + i / 16u;
            let col = q0 + (q % 2u) * 16u + i % 16u;
            if (r < p.m && col < p.n) { c[base + r * p.n + col] = sc[sg * 256u + i]; }
        }
        workgroupBarrier();
    }
}

// ---- mm_coop16p: operands packed to f16 by pack_f16.wgsl ----

// vec4 e (0..3) of invocation t's share of a panel, in vec4<f16> units of the packed operands:
// the A panel is 128 rows x 8 vec4s, the B panel 32 rows x 32 vec4s; consecutive invocations
// read consecutive 8-byte words of a row.
fn pa_src(t: u32, e: u32, bi: u32, row0: u32, k0: u32) -> u32 {
    let idx = t + e * 256u;
    return bi * p.sa_b + (row0 + idx / 8u) * p.sa_m + k0 / 4u + idx % 8u;
}
fn pb_src(t: u32, e: u32, bi: u32, col0: u32, k0: u32) -> u32 {
    let idx = t + e * 256u;
    return bi * p.sb_b + (k0 + idx / 32u) * p.sb_k + col0 / 4u + idx % 32u;
}
// ... and where its 4 halves go in panel `buf` of sa (sb).
fn put_a4(buf: u32, t: u32, e: u32, v: vec4<f16>) {
    let idx = t + e * 256u;
    let o = buf * PA + (idx / 8u) * LDA + (idx % 8u) * 4u;
    sa[o] = v.x;
    sa[o + 1u] = v.y;
    sa[o + 2u] = v.z;
    sa[o + 3u] = v.w;
}
fn put_b4(buf: u32, t: u32, e: u32, v: vec4<f16>) {
    let idx = t + e * 256u;
    let o = buf * PB + (idx / 32u) * LDB + (idx % 32u) * 4u;
    sb[o] = v.x;
    sb[o + 1u] = v.y;
    sb[o + 2u] = v.z;
    sb[o + 3u] = v.w;
}

@compute @workgroup_size(256)
fn mm_coop16p(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let bi = wid.z;
    let row0 = wid.y * TILE;
    let col0 = wid.x * TILE;
    let sg = t / 32u;
    let wr = (sg / 4u) * 64u; // this subgroup's rows within the tile
    let wc = (sg % 4u) * 32u; // and columns

    var c00 = MC();
    var c01 = MC();
    var c10 = MC();
    var c11 = MC();
    var c20 = MC();
    var c21 = MC();
    var c30 = MC();
    var c31 = MC();

    // Prologue: the panels at k = 0 into buffer 0.
    put_a4(0u, t, 0u, ap[pa_src(t, 0u, bi, row0, 0u)]);
    put_a4(0u, t, 1u, ap[pa_src(t, 1u, bi, row0, 0u)]);
    put_a4(0u, t, 2u, ap[pa_src(t, 2u, bi, row0, 0u)]);
    put_a4(0u, t, 3u, ap[pa_src(t, 3u, bi, row0, 0u)]);
    put_b4(0u, t, 0u, bp[pb_src(t, 0u, bi, col0, 0u)]);
    put_b4(0u, t, 1u, bp[pb_src(t, 1u, bi, col0, 0u)]);
    put_b4(0u, t, 2u, bp[pb_src(t, 2u, bi, col0, 0u)]);
    put_b4(0u, t, 3u, bp[pb_src(t, 3u, bi, col0, 0u)]);
    workgroupBarrier();

    var ra0 = vec4<f16>();
    var ra1 = vec4<f16>();
    var ra2 = vec4<f16>();
    var ra3 = vec4<f16>();
    var rb0 = vec4<f16>();
    var rb1 = vec4<f16>();
    var rb2 = vec4<f16>();
    var rb3 = vec4<f16>();
    var buf = 0u;
    for (var k0 = 0u; k0 < p.k; k0 += KS) {
        let more = k0 + KS < p.k;
        if (more) {
            let k1 = k0 + KS;
            ra0 = ap[pa_src(t, 0u, bi, row0, k1)];
            ra1 = ap[pa_src(t, 1u, bi, row0, k1)];
            ra2 = ap[pa_src(t, 2u, bi, row0, k1)];
            ra3 = ap[pa_src(t, 3u, bi, row0, k1)];
            rb0 = bp[pb_src(t, 0u, bi, col0, k1)];
            rb1 = bp[pb_src(t, 1u, bi, col0, k1)];
            rb2 = bp[pb_src(t, 2u, bi, col0, k1)];
            rb3 = bp[pb_src(t, 3u, bi, col0, k1)];
        }
        let oa = buf * PA + wr * LDA;
        let ob = buf * PB + wc;
        for (var kk = 0u; kk < KS; kk += 16u) {
            let b0 = coopLoadT<MB>(&sb[ob + kk * LDB], LDB);
            let b1 = coopLoadT<MB>(&sb[ob + kk * LDB + 16u], LDB);
            let a0 = coopLoadT<MA>(&sa[oa + kk], LDA);
            c00 = coopMultiplyAdd(a0, b0, c00);
            c01 = coopMultiplyAdd(a0, b1, c01);
            let a1 = coopLoadT<MA>(&sa[oa + 16u * LDA + kk], LDA);
            c10 = coopMultiplyAdd(a1, b0, c10);
            c11 = coopMultiplyAdd(a1, b1, c11);
            let a2 = coopLoadT<MA>(&sa[oa + 32u * LDA + kk], LDA);
            c20 = coopMultiplyAdd(a2, b0, c20);
            c21 = coopMultiplyAdd(a2, b1, c21);
            let a3 = coopLoadT<MA>(&sa[oa + 48u * LDA + kk], LDA);
            c30 = coopMultiplyAdd(a3, b0, c30);
            c31 = coopMultiplyAdd(a3, b1, c31);
        }
        if (more) {
            let nb = 1u - buf;
            put_a4(nb, t, 0u, ra0);
            put_a4(nb, t, 1u, ra1);
            put_a4(nb, t, 2u, ra2);
            put_a4(nb, t, 3u, ra3);
            put_b4(nb, t, 0u, rb0);
            put_b4(nb, t, 1u, rb1);
            put_b4(nb, t, 2u, rb2);
            put_b4(nb, t, 3u, rb3);
        }
        // The next panel is complete and nobody reads the current one any more.
        workgroupBarrier();
        buf = 1u - buf;
    }

    let base = bi * p.m * p.n;
    let r0 = row0 + wr;
    let q0 = col0 + wc;
    if (row0 + TILE <= p.m && col0 + TILE <= p.n) {
        let ldc = p.n;
        let v00 = c00;
        let o00 = base + r0 * p.n + q0;
        coopStoreT(v00, &c[o00], ldc);
        let v01 = c01;
        let o01 = base + r0 * p.n + q0 + 16u;
        coopStoreT(v01, &c[o01], ldc);
        let v10 = c10;
        let o10 = base + (r0 + 16u) * p.n + q0;
        coopStoreT(v10, &c[o10], ldc);
        let v11 = c11;
        let o11 = base + (r0 + 16u) * p.n + q0 + 16u;
        coopStoreT(v11, &c[o11], ldc);
        let v20 = c20;
        let o20 = base + (r0 + 32u) * p.n + q0;
        coopStoreT(v20, &c[o20], ldc);
        let v21 = c21;
        let o21 = base + (r0 + 32u) * p.n + q0 + 16u;
        coopStoreT(v21, &c[o21], ldc);
        let v30 = c30;
        let o30 = base + (r0 + 48u) * p.n + q0;
        coopStoreT(v30, &c[o30], ldc);
        let v31 = c31;
        let o31 = base + (r0 + 48u) * p.n + q0 + 16u;
        coopStoreT(v31, &c[o31], ldc);
        return;
    }
    for (var q = 0u; q < 8u; q++) {
        switch q {
            case 0u: { let o = sg * 256u; let v = c00; coopStoreT(v, &sc[o], 16u); }
            case 1u: { let o = sg * 256u; let v = c01; coopStoreT(v, &sc[o], 16u); }
            case 2u: { let o = sg * 256u; let v = c10; coopStoreT(v, &sc[o], 16u); }
            case 3u: { let o = sg * 256u; let v = c11; coopStoreT(v, &sc[o], 16u); }
            case 4u: { let o = sg * 256u; let v = c20; coopStoreT(v, &sc[o], 16u); }
            case 5u: { let o = sg * 256u; let v = c21; coopStoreT(v, &sc[o], 16u); }
            case 6u: { let o = sg * 256u; let v = c30; coopStoreT(v, &sc[o], 16u); }
            default: { let o = sg * 256u; let v = c31; coopStoreT(v, &sc[o], 16u); }
        }
        workgroupBarrier();
        let lane = t % 32u;
        for (var e = 0u; e < 8u; e++) {
            let i = lane * 8u + e;
            let r = r0 + (q / 2u) * 16u + i / 16u;
            let col = q0 + (q % 2u) * 16u + i % 16u;
            if (r < p.m && col < p.n) { c[base + r * p.n + col] = sc[sg * 256u + i]; }
        }
        workgroupBarrier();
    }
}

