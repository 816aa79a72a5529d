// Batched matrix product C[b] = A[b] x B[b] with arbitrary strides, so either operand may be
// transposed (or broadcast over the batch with stride 0) without a copy.
//   C: [batch, M, N] contiguous; A[b, m, k] = a[b*sa_b + m*sa_m + k*sa_k]; B likewise.
//
// Bindings (group 0): 0 = Params (uniform), 1 a (read), 2 b (read), 3 c (read_write).
// Workgroup layouts, one entry point per adapter class:
//   mm_blocked (CPU rasterisers such as lavapipe): 8 x 8 invocations, each computes a 4 x 4 block of C
//     in registers, no shared memory and no barriers (barriers are very slow there); a workgroup
//     covers a 32 x 32 tile; grid = (ceil(N/32), ceil(M/32), batch).
//   mm_tiled (small GPU products): 16 x 16 invocations, 64 x 64 tile of C per workgroup, each
//     invocation a 4 x 4 register block; A and B tiles of depth 16 are staged in workgroup memory;
//     grid = (ceil(N/64), ceil(M/64), batch).
//   mm_tiled128 (large GPU products): 16 x 16 invocations, 128 x 128 tile of C per workgroup, each
//     invocation an 8 x 8 register block (rows 4ty..4ty+3 and 64+4ty..64+4ty+3, columns likewise,
//     so its shared-memory reads are four vec4 loads per k); A and B tiles of depth 8 are staged
//     in workgroup memory as vec4s (8 KiB); grid = (ceil(N/128), ceil(M/128), batch).
//   mm_pipe (large GPU products, being measured against mm_tiled128): the same 128 x 128 tile and
//     8 x 8 register blocks, panels of depth 16 double-buffered in workgroup memory (rows padded
//     by one vec4, 33 KiB) with the next panel's global reads in registers during the arithmetic,
//     so one barrier per panel instead of two per 8 deep; grid as mm_tiled128.
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
var<workgroup> sa: array<f32, 1024>; // [TK][TM]: A tile, k-major so a row of 4 m's is contiguous
var<workgroup> sb: array<f32, 1024>; // [TK][TM]: B tile

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
            let kk = idx / TM;
            let mm = idx % TM;
            let gk = k0 + kk;
            var va = 0.0;
            var vb = 0.0;
            if (gk < p.k) {
                if (row0 + mm < p.m) { va = a[bi * p.sa_b + (row0 + mm) * p.sa_m + gk * p.sa_k]; }
                if (col0 + mm < p.n) { vb = b[bi * p.sb_b + gk * p.sb_k + (col0 + mm) * p.sb_n]; }
            }
            sa[kk * TM + mm] = va;
            sb[kk * TM + mm] = vb;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            let av = vec4<f32>(sa[kk * TM + lid.y * 4u], sa[kk * TM + lid.y * 4u + 1u], sa[kk * TM + lid.y * 4u + 2u], sa[kk * TM + lid.y * 4u + 3u]);
            let bv = vec4<f32>(sb[kk * TM + lid.x * 4u], sb[kk * TM + lid.x * 4u + 1u], sb[kk * TM + lid.x * 4u + 2u], sb[kk * TM + lid.x * 4u + 3u]);
            acc[0] += av.x * bv;
            acc[1] += av.y * bv;
            acc[2] += av.z * bv;
            acc[3] += av.w * bv;
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
const BK: u32 = 8u; // mm_tiled128: depth of the staged A and B tiles
var<workgroup> ta4: array<vec4<f32>, 256>; // [BK][BT/4]: A tile, k-major, 4 rows per vec4
var<workgroup> tb4: array<vec4<f32>, 256>; // [BK][BT/4]: B tile, k-major, 4 columns per vec4

@compute @workgroup_size(16, 16)
fn mm_tiled128(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let bi = wid.z;
    let row0 = wid.y * BT;
    let col0 = wid.x * BT;
    let t = lid.y * 16u + lid.x;
    let abase = bi * p.sa_b;
    let bbase = bi * p.sb_b;
    // acc[2 * i + h]: row block i (rows 4ty + i, then 64 + 4ty + i - 4), column half h.
    var acc: array<vec4<f32>, 16>;
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        // 256 invocations stage 1024 elements of each tile, 4 each. Consecutive invocations walk
        // the operand's contiguous dimension (k when its k-stride is 1, else m or n), so global
        // reads coalesce for both layouts; out-of-range elements are 0.
        for (var e = 0u; e < 4u; e++) {
            let idx = t + e * 256u;
            var kk: u32;
            var mm: u32;
            if (p.sa_k == 1u) { kk = idx % BK; mm = idx / BK; } else { kk = idx / BT; mm = idx % BT; }
            let gk = k0 + kk;
            var va = 0.0;
            if (gk < p.k && row0 + mm < p.m) { va = a[abase + (row0 + mm) * p.sa_m + gk * p.sa_k]; }
            ta4[kk * 32u + mm / 4u][mm % 4u] = va;
            if (p.sb_k == 1u) { kk = idx % BK; mm = idx / BK; } else { kk = idx / BT; mm = idx % BT; }
            let gkb = k0 + kk;
            var vb = 0.0;
            if (gkb < p.k && col0 + mm < p.n) { vb = b[bbase + gkb * p.sb_k + (col0 + mm) * p.sb_n]; }
            tb4[kk * 32u + mm / 4u][mm % 4u] = vb;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            let a0 = ta4[kk * 32u + lid.y];
            let a1 = ta4[kk * 32u + lid.y + 16u];
            let b0 = tb4[kk * 32u + lid.x];
            let b1 = tb4[kk * 32u + lid.x + 16u];
            for (var i = 0u; i < 4u; i++) {
                acc[2u * i] += a0[i] * b0;
                acc[2u * i + 1u] += a0[i] * b1;
                acc[8u + 2u * i] += a1[i] * b0;
                acc[8u + 2u * i + 1u] += a1[i] * b1;
            }
        }
        workgroupBarrier();
    }
    let base = bi * p.m * p.n;
    for (var rb = 0u; rb < 8u; rb++) {
        let r = row0 + (rb / 4u) * 64u + lid.y * 4u + rb % 4u;
        if (r >= p.m) { continue; }
        for (var h = 0u; h < 2u; h++) {
            let v = acc[2u * rb + h];
            let c0 = col0 + h * 64u + lid.x * 4u;
            for (var j = 0u; j < 4u; j++) {
                if (c0 + j < p.n) { c[base + r * p.n + c0 + j] = v[j]; }
            }
        }
    }
}

const PK: u32 = 16u; // mm_pipe: depth of a staged panel
const PR: u32 = 33u; // mm_pipe: panel row stride in vec4s (32 + 1 padding against bank conflicts)
const PP: u32 = 528u; // mm_pipe: PK * PR, one panel
var<workgroup> pa4: array<vec4<f32>, 1056>; // 2 panels [PK][PR]: A, k-major, 4 rows per vec4
var<workgroup> pb4: array<vec4<f32>, 1056>; // 2 panels [PK][PR]: B, k-major, 4 columns per vec4

// Element e (0..7) of invocation t in a 16 x 128 panel, as (k, m or n): consecutive invocations
// walk the operand's contiguous dimension (k when its k-stride is 1), so global reads coalesce.
fn pipe_pos(t: u32, e: u32, k_contiguous: bool) -> vec2<u32> {
    let idx = t + e * 256u;
    if (k_contiguous) { return vec2<u32>(idx % PK, idx / PK); }
    return vec2<u32>(idx / BT, idx % BT);
}

@compute @workgroup_size(16, 16)
fn mm_pipe(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let bi = wid.z;
    let row0 = wid.y * BT;
    let col0 = wid.x * BT;
    let t = lid.y * 16u + lid.x;
    let abase = bi * p.sa_b;
    let bbase = bi * p.sb_b;
    let ak = p.sa_k == 1u;
    let bk = p.sb_k == 1u;
    var acc: array<vec4<f32>, 16>; // as in mm_tiled128
    var ra: array<f32, 8>;
    var rb: array<f32, 8>;
    // Prologue: panel 0 into buffer 0.
    for (var e = 0u; e < 8u; e++) {
        let qa = pipe_pos(t, e, ak);
        var va = 0.0;
        if (qa.x < p.k && row0 + qa.y < p.m) { va = a[abase + (row0 + qa.y) * p.sa_m + qa.x * p.sa_k]; }
        pa4[qa.x * PR + qa.y / 4u][qa.y % 4u] = va;
        let qb = pipe_pos(t, e, bk);
        var vb = 0.0;
        if (qb.x < p.k && col0 + qb.y < p.n) { vb = b[bbase + qb.x * p.sb_k + (col0 + qb.y) * p.sb_n]; }
        pb4[qb.x * PR + qb.y / 4u][qb.y % 4u] = vb;
    }
    workgroupBarrier();
    var buf = 0u;
    for (var k0 = 0u; k0 < p.k; k0 += PK) {
        let more = k0 + PK < p.k;
        // The next panel's global reads are issued before this panel's arithmetic.
        if (more) {
            for (var e = 0u; e < 8u; e++) {
                let qa = pipe_pos(t, e, ak);
                let gk = k0 + PK + qa.x;
                var va = 0.0;
                if (gk < p.k && row0 + qa.y < p.m) { va = a[abase + (row0 + qa.y) * p.sa_m + gk * p.sa_k]; }
                ra[e] = va;
                let qb = pipe_pos(t, e, bk);
                let gkb = k0 + PK + qb.x;
                var vb = 0.0;
                if (gkb < p.k && col0 + qb.y < p.n) { vb = b[bbase + gkb * p.sb_k + (col0 + qb.y) * p.sb_n]; }
                rb[e] = vb;
            }
        }
        let o = buf * PP;
        for (var kk = 0u; kk < PK; kk++) {
            let a0 = pa4[o + kk * PR + lid.y];
            let a1 = pa4[o + kk * PR + lid.y + 16u];
            let b0 = pb4[o + kk * PR + lid.x];
            let b1 = pb4[o + kk * PR + lid.x + 16u];
            for (var i = 0u; i < 4u; i++) {
                acc[2u * i] += a0[i] * b0;
                acc[2u * i + 1u] += a0[i] * b1;
                acc[8u + 2u * i] += a1[i] * b0;
                acc[8u + 2u * i + 1u] += a1[i] * b1;
            }
        }
        if (more) {
            let nb = (1u - buf) * PP;
            for (var e = 0u; e < 8u; e++) {
                let qa = pipe_pos(t, e, ak);
                pa4[nb + qa.x * PR + qa.y / 4u][qa.y % 4u] = ra[e];
                let qb = pipe_pos(t, e, bk);
                pb4[nb + qb.x * PR + qb.y / 4u][qb.y % 4u] = rb[e];
            }
        }
        // One barrier per panel: the next one is complete and nobody reads this one any more.
        workgroupBarrier();
        buf = 1u - buf;
    }
    let base = bi * p.m * p.n;
    for (var rb2 = 0u; rb2 < 8u; rb2++) {
        let r = row0 + (rb2 / 4u) * 64u + lid.y * 4u + rb2 % 4u;
        if (r >= p.m) { continue; }
        for (var h = 0u; h < 2u; h++) {
            let v = acc[2u * rb2 + h];
            let c0 = col0 + h * 64u + lid.x * 4u;
            for (var j = 0u; j < 4u; j++) {
                if (c0 + j < p.n) { c[base + r * p.n + c0 + j] = v[j]; }
            }
        }
    }
}
