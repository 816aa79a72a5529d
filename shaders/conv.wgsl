// 2-D convolution (NCHW, zero padding, no bias) and its two gradients. The same three kernels
// also serve the transposed convolution: its forward is conv_backward_input, its input gradient
// is conv_forward and its weight gradient is conv_backward_weight with the operands swapped.
// All names below are in conv2d terms: x [N, C, H, W], w [O, C, KH, KW], y [N, O, Ho, Wo],
//   y[n, o, oh, ow] = sum_{c, kh, kw} x[n, c, oh*sh - ph + kh, ow*sw - pw + kw] * w[o, c, kh, kw]
// (reads outside x are 0). Every output element is written by one invocation that sums its
// contributions in a fixed order: no atomics, results are bit-identical from run to run.
//
// Bindings (group 0): 0 = Params (uniform); then per entry point
//   conv_forward:         1 x (read), 2 wt (read), 3 y (write)
//       wt: the weights transposed to [C, KH, KW, O4] as vec4s (O rounded up to 4, zero-padded;
//       the host transposes them), so the OB channels of a tap are one or two vec4 loads.
//       One invocation: OB output channels x PB neighbouring output pixels of one row; the
//       inputs under a block row are loaded once into a window for all KW taps.
//   conv_backward_input:  1 dy (read), 2 wt (read), 3 dx (write); wt: the weights transposed to
//       [O, KH, KW, C4] as vec4s (C rounded up to 4, zero-padded; the host transposes them)
//       dx[n, c, ih, iw] = sum over o, kh, kw with (ih + ph - kh) % sh == 0 (same for w) and the
//       output position in range of dy[n, o, oh, ow] * w[o, c, kh, kw]; one invocation: CB input
//       channels x PB pixels of one row, sw apart (gather form): pixels of one residue class
//       modulo sw reach their outputs through the same taps, at neighbouring ow, so each tap loads
//       PB neighbouring dy values and CB weights for PB * CB multiply-adds; a row's dy values are
//       loaded once into a window for all the class's taps.
//   conv_backward_weight: 1 dy (read), 2 x (read), 3 dw (write)
//       dw[s, o, c, kh, kw] = sum over rows (n, oh) of split s, then ow, of dy * x; with splits = 1
//       this is the weight gradient itself, otherwise the host sums the partials over s. One
//       invocation: OB output x CB input channels of one tap (kh, kw): each step loads OB dy and
//       CB x values for OB*CB multiply-adds.
//   conv_backward_weight_rows: 1 dy4 (read), 2 x4 (read), 3 dw (write); the same partial sums as
//       conv_backward_weight for CPU adapters, where loads cost more than multiply-adds: one
//       invocation: OB (1..8) output x CB (1..4) input channels of a whole kernel row kh, all KW
//       taps. dy4 is dy with its rows zero-padded to p.wov vec4s; x4 is x with each row shifted
//       right by pw zero columns and zero-padded to p.wxv vec4s, so the inputs under output
//       columns 4g .. 4g + 3 of every tap are the window of 3 SW + KW values (at most 16) from
//       vec4 g * SW on. Per 4 output columns: OB + CB * ceil((3 SW + KW) / 4) vec4 loads for
//       OB * CB * KW * 4 multiply-adds (the per-tap kernel: 4 scalar loads per 4 of them).
//   im2col:               1 x (read), 2 col (write)
//       col[n, (c, kh, kw), (oh, ow)] = x[n, c, oh*sh - ph + kh, ow*sw - pw + kw] (0 outside x):
//       conv2d as a batched matrix product on the matmul cores (GPU path, ops::conv::ConvKernel::Gemm).
//   col2im:               1 dcol (read), 2 dx (write)
//       dx[n, c, ih, iw] = sum over taps (kh, kw) that reach (ih, iw) from an in-range output of
//       dcol[n, (c, kh, kw), (oh, ow)]: the adjoint of im2col, gathered (one invocation per dx).
// Workgroup: 256 x 1 x 1, no barriers and no shared memory (lavapipe runs barrier-free
// register-blocked kernels fastest); the grid folds into y past 65535 groups, so the flat index
// is gid.x + gid.y * nwg.x * 256.
// Override constants, each 1..8: OB output channels (conv_forward, both weight gradients), PB
// pixels along W (conv_forward, conv_backward_input), CB input channels (conv_backward_input,
// conv_backward_weight; 1..4 in conv_backward_weight_rows) per invocation; KW, SW: the kernel
// width and stride along W (conv_forward, conv_backward_input, conv_backward_weight_rows). Each
// kernel keeps up to 8 x 8 sums in 16 named vec4s (blocks of 4 and under leave half of them
// unused; the compiler drops them); the rows kernel up to 8 x 4 x KW.

struct Params {
    n: u32,
    c: u32,
    h: u32,
    w: u32,
    o: u32,
    ho: u32,
    wo: u32,
    kh: u32,
    kw: u32,
    sh: u32,
    sw: u32,
    ph: u32,
    pw: u32,
    total: u32,  // invocations that do work
    chunk: u32,  // conv_backward_weight: (n, oh) rows per split
    splits: u32, // conv_backward_weight: number of splits
    wov: u32,    // conv_backward_weight_rows: vec4s per row of dy4
    wxv: u32,    // conv_backward_weight_rows: vec4s per row of x4
    _pad0: u32,
    _pad1: u32,
}

override OB: u32 = 4u; // output channels per invocation
override PB: u32 = 4u; // pixels along W per invocation
override CB: u32 = 4u; // input channels per invocation
override KW: u32 = 3u; // kernel width (conv_forward, conv_backward_input: their taps unroll)
override SW: u32 = 1u; // stride along W (the same two)
// The window of one block row: (PB - 1) SW + KW inputs (conv_forward), PB + ceil(KW / SW) - 1
// outputs (conv_backward_input); the host keeps it within.
const WIN: u32 = 32u;

@group(0) @binding(0) var<uniform> p: Params;
// im2col / col2im
@group(0) @binding(1) var<storage, read> ic_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> ic_col: array<f32>;
@group(0) @binding(1) var<storage, read> ci_col: array<f32>;
@group(0) @binding(2) var<storage, read_write> ci_dx: array<f32>;
// conv_forward
@group(0) @binding(1) var<storage, read> f_x: array<f32>;
@group(0) @binding(3) var<storage, read_write> f_y: array<f32>;
// conv_forward, conv_backward_input: the transposed weights (see the header)
@group(0) @binding(2) var<storage, read> c_wt: array<vec4<f32>>;
// conv_backward_input
@group(0) @binding(1) var<storage, read> bi_dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> bi_dx: array<f32>;
// conv_backward_weight
@group(0) @binding(1) var<storage, read> bw_dy: array<f32>;
@group(0) @binding(2) var<storage, read> bw_x: array<f32>;
@group(0) @binding(3) var<storage, read_write> bw_dw: array<f32>;
// conv_backward_weight_rows (dw: bw_dw)
@group(0) @binding(1) var<storage, read> bv_dy: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> bv_x: array<vec4<f32>>;

fn flat(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 256u;
}

// The sums of an up-to-8 x 8 register block: a_t and b_t are row t's two groups of 4 (pixels
// 0..3 and 4..7, or output channels 0..3 and 4..7 in the weight gradient).
struct Block8 {
    a0: vec4<f32>, a1: vec4<f32>, a2: vec4<f32>, a3: vec4<f32>,
    a4: vec4<f32>, a5: vec4<f32>, a6: vec4<f32>, a7: vec4<f32>,
    b0: vec4<f32>, b1: vec4<f32>, b2: vec4<f32>, b3: vec4<f32>,
    b4: vec4<f32>, b5: vec4<f32>, b6: vec4<f32>, b7: vec4<f32>,
}

// acc += the outer product of pixels (xv: 0..3, xu: 4..7) and channel weights (ql: 0..3, qh:
// 4..7) over the block's first `cnt` channels and PB pixels (cnt, PB: pipeline constants).
fn fma8(acc: Block8, xv: vec4<f32>, xu: vec4<f32>, ql: vec4<f32>, qh: vec4<f32>, cnt: u32) -> Block8 {
    var r = acc;
    r.a0 = fma(xv, vec4<f32>(ql.x), r.a0);
    if (PB > 4u) { r.b0 = fma(xu, vec4<f32>(ql.x), r.b0); }
    if (cnt > 1u) { r.a1 = fma(xv, vec4<f32>(ql.y), r.a1); if (PB > 4u) { r.b1 = fma(xu, vec4<f32>(ql.y), r.b1); } }
    if (cnt > 2u) { r.a2 = fma(xv, vec4<f32>(ql.z), r.a2); if (PB > 4u) { r.b2 = fma(xu, vec4<f32>(ql.z), r.b2); } }
    if (cnt > 3u) { r.a3 = fma(xv, vec4<f32>(ql.w), r.a3); if (PB > 4u) { r.b3 = fma(xu, vec4<f32>(ql.w), r.b3); } }
    if (cnt > 4u) { r.a4 = fma(xv, vec4<f32>(qh.x), r.a4); if (PB > 4u) { r.b4 = fma(xu, vec4<f32>(qh.x), r.b4); } }
    if (cnt > 5u) { r.a5 = fma(xv, vec4<f32>(qh.y), r.a5); if (PB > 4u) { r.b5 = fma(xu, vec4<f32>(qh.y), r.b5); } }
    if (cnt > 6u) { r.a6 = fma(xv, vec4<f32>(qh.z), r.a6); if (PB > 4u) { r.b6 = fma(xu, vec4<f32>(qh.z), r.b6); } }
    if (cnt > 7u) { r.a7 = fma(xv, vec4<f32>(qh.w), r.a7); if (PB > 4u) { r.b7 = fma(xu, vec4<f32>(qh.w), r.b7); } }
    return r;
}

// x[row + iw], or 0 in the padding. The index is clamped so the load itself is always in bounds
// and the select is branch-free.
fn x_at(row: u32, iw: i32) -> f32 {
    let ok = iw >= 0 && iw < i32(p.w);
    return select(0.0, f_x[row + u32(clamp(iw, 0, i32(p.w) - 1))], ok);
}

// The first `cnt` of the 4 pixels ow0 .. ow0 + 3 of output row (n, o, oh) that lie inside y.
fn y_store(n: u32, o: u32, oh: u32, ow0: u32, a: vec4<f32>, cnt: u32) {
    let base = ((n * p.o + o) * p.ho + oh) * p.wo + ow0;
    if (cnt > 0u && ow0 < p.wo) { f_y[base] = a.x; }
    if (cnt > 1u && ow0 + 1u < p.wo) { f_y[base + 1u] = a.y; }
    if (cnt > 2u && ow0 + 2u < p.wo) { f_y[base + 2u] = a.z; }
    if (cnt > 3u && ow0 + 3u < p.wo) { f_y[base + 3u] = a.w; }
}

// Channel t's two pixel groups (a: pixels 0..3 of the block, b: 4..7) of a forward block.
fn y_store8(n: u32, o: u32, oh: u32, ow0: u32, a: vec4<f32>, b: vec4<f32>) {
    if (o >= p.o) { return; }
    y_store(n, o, oh, ow0, a, min(PB, 4u));
    if (PB > 4u) { y_store(n, o, oh, ow0 + 4u, b, PB - 4u); }
}

// The `cnt` channels ch of the transposed-weight row starting at vec4 r4 (conv_forward: a tap's
// output channels; conv_backward_input: an (o, kh, kw) row's input channels), channels 0..3 in
// column 0 and 4..7 in column 1: with cnt a multiple of 4 the whole vec4s vl, vh (channels are
// then block-aligned), otherwise one value at a time.
fn weights8(r4: u32, vl: u32, vh: u32, ch: array<u32, 8>, cnt: u32) -> mat2x4<f32> {
    var ql: vec4<f32>;
    var qh: vec4<f32>;
    if (cnt % 4u == 0u) {
        ql = c_wt[r4 + vl];
        if (cnt > 4u) { qh = c_wt[r4 + vh]; }
        return mat2x4<f32>(ql, qh);
    }
    ql.x = weight_at(r4, ch[0]);
    if (cnt > 1u) { ql.y = weight_at(r4, ch[1]); }
    if (cnt > 2u) { ql.z = weight_at(r4, ch[2]); }
    if (cnt > 3u) { ql.w = weight_at(r4, ch[3]); }
    if (cnt > 4u) { qh.x = weight_at(r4, ch[4]); }
    if (cnt > 5u) { qh.y = weight_at(r4, ch[5]); }
    if (cnt > 6u) { qh.z = weight_at(r4, ch[6]); }
    return mat2x4<f32>(ql, qh);
}

fn weight_at(r4: u32, c: u32) -> f32 {
    return c_wt[r4 + c / 4u][c % 4u];
}

@compute @workgroup_size(256)
fn conv_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.total) { return; }
    // Pixel blocks vary fastest, so neighbouring lanes share (n, o, oh): the weight loads are
    // uniform across them and the x loads are contiguous.
    let wblocks = (p.wo + PB - 1u) / PB;
    let oblocks = (p.o + OB - 1u) / OB;
    let wb = i % wblocks;
    var r = i / wblocks;
    let oh = r % p.ho;
    r = r / p.ho;
    let o0 = (r % oblocks) * OB;
    let n = r / oblocks;
    let ow0 = wb * PB;
    let o4 = (p.o + 3u) / 4u; // vec4s per tap of the transposed weights
    // Channels of a partial block are clamped into range (their sums are not stored); with OB a
    // multiple of 4 they are whole vec4s, the second one clamped to start inside the row.
    let last = p.o - 1u;
    let oc = array<u32, 8>(o0, min(o0 + 1u, last), min(o0 + 2u, last), min(o0 + 3u, last), min(o0 + 4u, last),
        min(o0 + 5u, last), min(o0 + 6u, last), min(o0 + 7u, last));
    let vl = o0 / 4u;
    let vh = min(o0 / 4u + 1u, o4 - 1u);
    let iw0 = i32(ow0 * SW) - i32(p.pw);
    let ih0 = i32(oh * p.sh) - i32(p.ph);
    // a_t: output channel o0 + t at pixels 0..3 of the block, b_t at pixels 4..7 (PB > 4).
    var acc: Block8; // zero-initialised
    for (var c = 0u; c < p.c; c++) {
        for (var kh = 0u; kh < p.kh; kh++) {
            let ih = ih0 + i32(kh);
            if (ih < 0 || ih >= i32(p.h)) { continue; }
            let row = ((n * p.c + c) * p.h + u32(ih)) * p.w;
            // The row's inputs under the block, each loaded once for all KW taps: with KW and SW
            // pipeline constants the taps below index it with constants (registers, no loads).
            var win: array<f32, WIN>;
            for (var j = 0u; j < (PB - 1u) * SW + KW; j++) { win[j] = x_at(row, iw0 + i32(j)); }
            let tap0 = (c * p.kh + kh) * KW;
            for (var kw = 0u; kw < KW; kw++) {
                var xv = vec4<f32>(win[kw], 0.0, 0.0, 0.0);
                if (PB > 1u) { xv.y = win[kw + SW]; }
                if (PB > 2u) { xv.z = win[kw + 2u * SW]; }
                if (PB > 3u) { xv.w = win[kw + 3u * SW]; }
                var xu = vec4<f32>(0.0);
                if (PB > 4u) { xu = vec4<f32>(win[kw + 4u * SW], win[kw + 5u * SW], win[kw + 6u * SW], win[kw + 7u * SW]); }
                let k4 = (tap0 + kw) * o4;
                let q = weights8(k4, vl, vh, oc, OB);
                let ql = q[0];
                let qh = q[1];
                acc = fma8(acc, xv, xu, ql, qh, OB);
            }
        }
    }
    y_store8(n, o0, oh, ow0, acc.a0, acc.b0);
    if (OB > 1u) { y_store8(n, o0 + 1u, oh, ow0, acc.a1, acc.b1); }
    if (OB > 2u) { y_store8(n, o0 + 2u, oh, ow0, acc.a2, acc.b2); }
    if (OB > 3u) { y_store8(n, o0 + 3u, oh, ow0, acc.a3, acc.b3); }
    if (OB > 4u) { y_store8(n, o0 + 4u, oh, ow0, acc.a4, acc.b4); }
    if (OB > 5u) { y_store8(n, o0 + 5u, oh, ow0, acc.a5, acc.b5); }
    if (OB > 6u) { y_store8(n, o0 + 6u, oh, ow0, acc.a6, acc.b6); }
    if (OB > 7u) { y_store8(n, o0 + 7u, oh, ow0, acc.a7, acc.b7); }
}

// dy[row + ow], or 0 outside [0, Wo) (clamped load, branch-free select).
fn dy_at(row: u32, ow: i32) -> f32 {
    let ok = ow >= 0 && ow < i32(p.wo);
    return select(0.0, bi_dy[row + u32(clamp(ow, 0, i32(p.wo) - 1))], ok);
}

// The first `cnt` of the 4 pixels iw0, iw0 + sw, .. of row (n, c, ih) that lie inside dx.
fn dx_store(n: u32, c: u32, ih: u32, iw0: u32, a: vec4<f32>, cnt: u32) {
    let base = ((n * p.c + c) * p.h + ih) * p.w + iw0;
    let s = p.sw;
    if (cnt > 0u && iw0 < p.w) { bi_dx[base] = a.x; }
    if (cnt > 1u && iw0 + s < p.w) { bi_dx[base + s] = a.y; }
    if (cnt > 2u && iw0 + 2u * s < p.w) { bi_dx[base + 2u * s] = a.z; }
    if (cnt > 3u && iw0 + 3u * s < p.w) { bi_dx[base + 3u * s] = a.w; }
}

// Input channel c's two pixel groups (a: pixels 0..3 of the block, b: 4..7) of an input-gradient block.
fn dx_store8(n: u32, c: u32, ih: u32, iw0: u32, a: vec4<f32>, b: vec4<f32>) {
    if (c >= p.c) { return; }
    dx_store(n, c, ih, iw0, a, min(PB, 4u));
    if (PB > 4u) { dx_store(n, c, ih, iw0 + 4u * p.sw, b, PB - 4u); }
}

@compute @workgroup_size(256)
fn conv_backward_input(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.total) { return; }
    // Pixel blocks vary fastest, so neighbouring lanes share (n, c block, ih): uniform weight
    // loads, contiguous dy loads (as in conv_forward). Block b holds pixels of residue b % sw
    // modulo sw: iw0 + j sw for j < PB, iw0 = b % sw + sw PB (b / sw).
    let per_class = (p.w + SW - 1u) / SW; // pixels of residue 0, the most of any class
    let wblocks = SW * ((per_class + PB - 1u) / PB);
    let cblocks = (p.c + CB - 1u) / CB;
    let wb = i % wblocks;
    let iw0 = wb % SW + SW * PB * (wb / SW);
    var r = i / wblocks;
    let ih = r % p.h;
    r = r / p.h;
    let c0 = (r % cblocks) * CB;
    let n = r / cblocks;
    let c4 = (p.c + 3u) / 4u; // vec4s per (o, kh, kw) row of the transposed weights
    // Channels of a partial block are clamped into range (see conv_forward).
    let last = p.c - 1u;
    let cc = array<u32, 8>(c0, min(c0 + 1u, last), min(c0 + 2u, last), min(c0 + 3u, last), min(c0 + 4u, last),
        min(c0 + 5u, last), min(c0 + 6u, last), min(c0 + 7u, last));
    let vl = c0 / 4u;
    let vh = min(c0 / 4u + 1u, c4 - 1u);
    // Position in the padded input; tap kh reaches it from output row oh = (hp - kh) / sh when
    // the division is exact, so kh walks the residue class of hp modulo sh; the same for kw, and
    // every pixel of the block is in the same class along W: its taps kw0 + t SW (t < NK, those
    // past KW weighted 0) read outputs ow0 - t + j for pixel j, ow0 = (wp - kw0) / SW, so one
    // window of PB + NK - 1 outputs per row serves them all.
    let hp = ih + p.ph;
    let wp = iw0 + p.pw;
    let kh0 = hp % p.sh;
    let kw0 = wp % SW;
    let nk = (KW + SW - 1u) / SW;
    let owb = i32((wp - kw0) / SW) - i32(nk - 1u); // window start (may be negative)
    // a_t: input channel c0 + t at pixels 0..3 of the block, b_t at pixels 4..7 (PB > 4).
    var acc: Block8; // zero-initialised
    // Tap kh0 reaches output row hp / sh, each later one (kh += sh) the row above: counted down
    // rather than divided per tap (CPU adapters divide integers one lane at a time).
    let oh0 = hp / p.sh;
    for (var o = 0u; o < p.o; o++) {
        let plane = (n * p.o + o) * p.ho;
        var oh = oh0 + 1u;
        for (var kh = kh0; kh < p.kh && kh <= hp; kh += p.sh) {
            oh -= 1u;
            if (oh >= p.ho) { continue; }
            let row = (plane + oh) * p.wo;
            var win: array<f32, WIN>;
            for (var j = 0u; j < PB + nk - 1u; j++) { win[j] = dy_at(row, owb + i32(j)); }
            let wrow = (o * p.kh + kh) * KW;
            for (var t = 0u; t < nk; t++) {
                let kw = kw0 + t * SW;
                // Window offset of pixel 0's output for this tap: (nk - 1 - t).
                let s = nk - 1u - t;
                var g = vec4<f32>(win[s], 0.0, 0.0, 0.0);
                if (PB > 1u) { g.y = win[s + 1u]; }
                if (PB > 2u) { g.z = win[s + 2u]; }
                if (PB > 3u) { g.w = win[s + 3u]; }
                var gu = vec4<f32>(0.0);
                if (PB > 4u) { gu = vec4<f32>(win[s + 4u], win[s + 5u], win[s + 6u], win[s + 7u]); }
                // Taps past the kernel (possible for kw0 > 0) read a valid row and count 0.
                let keep = select(0.0, 1.0, kw < KW);
                let r4 = (wrow + min(kw, KW - 1u)) * c4;
                let q = weights8(r4, vl, vh, cc, CB);
                let ql = q[0] * keep;
                let qh = q[1] * keep;
                acc = fma8(acc, g, gu, ql, qh, CB);
            }
        }
    }
    dx_store8(n, c0, ih, iw0, acc.a0, acc.b0);
    if (CB > 1u) { dx_store8(n, c0 + 1u, ih, iw0, acc.a1, acc.b1); }
    if (CB > 2u) { dx_store8(n, c0 + 2u, ih, iw0, acc.a2, acc.b2); }
    if (CB > 3u) { dx_store8(n, c0 + 3u, ih, iw0, acc.a3, acc.b3); }
    if (CB > 4u) { dx_store8(n, c0 + 4u, ih, iw0, acc.a4, acc.b4); }
    if (CB > 5u) { dx_store8(n, c0 + 5u, ih, iw0, acc.a5, acc.b5); }
    if (CB > 6u) { dx_store8(n, c0 + 6u, ih, iw0, acc.a6, acc.b6); }
    if (CB > 7u) { dx_store8(n, c0 + 7u, ih, iw0, acc.a7, acc.b7); }
}

// The OB partial sums of one input channel c (a: output channels o0 .. o0 + 3, b: o0 + 4 ..),
// for tap `tap` of split `base`; channels past the tensor are not stored.
fn dw_store(base: u32, o0: u32, c: u32, tap: u32, a: vec4<f32>, b: vec4<f32>) {
    if (c >= p.c) { return; }
    let kk = p.kh * p.kw;
    for (var q = 0u; q < OB; q++) {
        if (o0 + q >= p.o) { break; }
        bw_dw[base + ((o0 + q) * p.c + c) * kk + tap] = select(b[q % 4u], a[q % 4u], q < 4u);
    }
}

// Sample n and output row oh of the weight gradient's row r = n * Ho + oh; row_next steps to r + 1
// without a division (CPU adapters divide integers one lane at a time).
struct RowAt {
    n: u32,
    oh: u32,
}
fn row_at(r: u32) -> RowAt {
    return RowAt(r / p.ho, r % p.ho);
}
fn row_next(a: RowAt) -> RowAt {
    if (a.oh + 1u == p.ho) { return RowAt(a.n + 1u, 0u); }
    return RowAt(a.n, a.oh + 1u);
}

// (split, first output channel, first input channel) of weight-gradient block b = (s * oblocks
// + ob) * cblocks + cb: OB x CB channels, the blocks of a split in order.
fn weight_block(b: u32) -> vec3<u32> {
    let oblocks = (p.o + OB - 1u) / OB;
    let cblocks = (p.c + CB - 1u) / CB;
    return vec3<u32>(b / cblocks / oblocks, ((b / cblocks) % oblocks) * OB, (b % cblocks) * CB);
}

@compute @workgroup_size(256)
fn conv_backward_weight(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.total) { return; }
    // i = ((s * oblocks + ob) * cblocks + cb) * kk + tap: taps vary fastest, so neighbouring
    // lanes read the same dy rows and neighbouring x values.
    let kw = i % p.kw;
    let kh = (i / p.kw) % p.kh;
    let blk = weight_block(i / (p.kw * p.kh));
    let s = blk.x;
    let o0 = blk.y;
    let c0 = blk.z;
    // Channels of a partial block are clamped into range (their sums are not stored).
    let ol = p.o - 1u;
    let cl = p.c - 1u;
    let oc = vec4<u32>(o0, min(o0 + 1u, ol), min(o0 + 2u, ol), min(o0 + 3u, ol));
    let od = vec4<u32>(min(o0 + 4u, ol), min(o0 + 5u, ol), min(o0 + 6u, ol), min(o0 + 7u, ol));
    let cc = vec4<u32>(c0, min(c0 + 1u, cl), min(c0 + 2u, cl), min(c0 + 3u, cl));
    let cd = vec4<u32>(min(c0 + 4u, cl), min(c0 + 5u, cl), min(c0 + 6u, cl), min(c0 + 7u, cl));
    // Output columns whose tap kw lands inside x: ow*sw + kw - pw in [0, W). Computed once so the
    // inner loop needs no bounds checks.
    let lo_num = i32(p.pw) - i32(kw);
    let ow_lo = u32(max(0, (lo_num + i32(p.sw) - 1) / i32(p.sw)));
    let hi_num = i32(p.w) - 1 + i32(p.pw) - i32(kw);
    var ow_hi = 0u;
    if (hi_num >= 0) { ow_hi = min(p.wo, u32(hi_num) / p.sw + 1u); }
    let rows = p.n * p.ho;
    let r0 = s * p.chunk;
    let r1 = min(r0 + p.chunk, rows);
    let plane_y = p.ho * p.wo;
    let plane_x = p.h * p.w;
    // a_t: input channel c0 + t for output channels o0 .. o0 + 3, b_t for o0 + 4 .. o0 + 7.
    var acc: Block8; // zero-initialised
    var at = row_at(r0);
    for (var row = r0; row < r1; row++) {
        let n = at.n;
        let oh = at.oh;
        at = row_next(at);
        let ih = i32(oh * p.sh + kh) - i32(p.ph);
        if (ih < 0 || ih >= i32(p.h)) { continue; }
        let dyrow = (n * p.o * p.ho + oh) * p.wo;
        let dy_off = dyrow + oc * plane_y;
        let dy_off2 = dyrow + od * plane_y;
        // x index of column ow is x_off + ow * sw (the tap offset kw - pw is folded in).
        let xrow = i32((n * p.c * p.h + u32(ih)) * p.w) + i32(kw) - i32(p.pw);
        let x_off = vec4<i32>(xrow) + vec4<i32>(cc * plane_x);
        let x_off2 = vec4<i32>(xrow) + vec4<i32>(cd * plane_x);
        for (var ow = ow_lo; ow < ow_hi; ow++) {
            var d = vec4<f32>(bw_dy[dy_off.x + ow], 0.0, 0.0, 0.0);
            if (OB > 1u) { d.y = bw_dy[dy_off.y + ow]; }
            if (OB > 2u) { d.z = bw_dy[dy_off.z + ow]; }
            if (OB > 3u) { d.w = bw_dy[dy_off.w + ow]; }
            var e = vec4<f32>(0.0);
            if (OB > 4u) {
                e = vec4<f32>(bw_dy[dy_off2.x + ow], bw_dy[dy_off2.y + ow], bw_dy[dy_off2.z + ow], bw_dy[dy_off2.w + ow]);
            }
            let xo = i32(ow * p.sw);
            let x0 = bw_x[u32(x_off.x + xo)];
            acc.a0 += d * x0;
            if (OB > 4u) { acc.b0 += e * x0; }
            if (CB > 1u) { let x = bw_x[u32(x_off.y + xo)]; acc.a1 += d * x; if (OB > 4u) { acc.b1 += e * x; } }
            if (CB > 2u) { let x = bw_x[u32(x_off.z + xo)]; acc.a2 += d * x; if (OB > 4u) { acc.b2 += e * x; } }
            if (CB > 3u) { let x = bw_x[u32(x_off.w + xo)]; acc.a3 += d * x; if (OB > 4u) { acc.b3 += e * x; } }
            if (CB > 4u) { let x = bw_x[u32(x_off2.x + xo)]; acc.a4 += d * x; if (OB > 4u) { acc.b4 += e * x; } }
            if (CB > 5u) { let x = bw_x[u32(x_off2.y + xo)]; acc.a5 += d * x; if (OB > 4u) { acc.b5 += e * x; } }
            if (CB > 6u) { let x = bw_x[u32(x_off2.z + xo)]; acc.a6 += d * x; if (OB > 4u) { acc.b6 += e * x; } }
            if (CB > 7u) { let x = bw_x[u32(x_off2.w + xo)]; acc.a7 += d * x; if (OB > 4u) { acc.b7 += e * x; } }
        }
    }
    // Partial sums of split s, laid out [s, O, C, KH, KW].
    let tap = kh * p.kw + kw;
    let base = s * p.o * p.c * p.kh * p.kw;
    dw_store(base, o0, c0, tap, acc.a0, acc.b0);
    if (CB > 1u) { dw_store(base, o0, c0 + 1u, tap, acc.a1, acc.b1); }
    if (CB > 2u) { dw_store(base, o0, c0 + 2u, tap, acc.a2, acc.b2); }
    if (CB > 3u) { dw_store(base, o0, c0 + 3u, tap, acc.a3, acc.b3); }
    if (CB > 4u) { dw_store(base, o0, c0 + 4u, tap, acc.a4, acc.b4); }
    if (CB > 5u) { dw_store(base, o0, c0 + 5u, tap, acc.a5, acc.b5); }
    if (CB > 6u) { dw_store(base, o0, c0 + 6u, tap, acc.a6, acc.b6); }
    if (CB > 7u) { dw_store(base, o0, c0 + 7u, tap, acc.a7, acc.b7); }
}

// The most taps a row invocation holds (its window of 3 SW + KW <= 16 values bounds KW by 13).
const ROW_TAPS: u32 = 13u;
// acc[kw][h][q]: the sums of one input channel, tap kw, output channel o0 + 4h + q.
alias TapSums = array<mat2x4<f32>, ROW_TAPS>;

// acc += the products of one input channel's window (3 SW + KW inputs from vec4 xb on) with the
// dy of 4 output columns (column q of dm[h]: output channel o0 + 4h + q), for every tap.
fn row_taps(acc: TapSums, xb: u32, dm: array<mat4x4<f32>, 2>) -> TapSums {
    var win: array<f32, 16>;
    for (var v = 0u; v < (3u * SW + KW + 3u) / 4u; v++) {
        let q = bv_x[xb + v];
        win[4u * v] = q.x;
        win[4u * v + 1u] = q.y;
        win[4u * v + 2u] = q.z;
        win[4u * v + 3u] = q.w;
    }
    var r = acc;
    for (var kw = 0u; kw < KW; kw++) {
        // The inputs tap kw reads under the 4 output columns.
        let xs = vec4<f32>(win[kw], win[kw + SW], win[kw + 2u * SW], win[kw + 3u * SW]);
        r[kw][0] += xs * dm[0];
        if (OB > 4u) { r[kw][1] += xs * dm[1]; }
    }
    return r;
}

// Stores one input channel's sums (channels past the tensor are not stored).
fn row_store(base: u32, o0: u32, c: u32, kh: u32, acc: TapSums) {
    if (c >= p.c) { return; }
    for (var o = 0u; o < OB; o++) {
        if (o0 + o < p.o) {
            let at = base + (((o0 + o) * p.c + c) * p.kh + kh) * p.kw;
            for (var kw = 0u; kw < KW; kw++) {
                bw_dw[at + kw] = acc[kw][o / 4u][o % 4u];
            }
        }
    }
}

@compute @workgroup_size(256)
fn conv_backward_weight_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.total) { return; }
    // i = ((s * oblocks + ob) * cblocks + cb) * kh + kh.
    let kh = i % p.kh;
    let blk = weight_block(i / p.kh);
    let s = blk.x;
    let o0 = blk.y;
    let c0 = blk.z;
    let rows = p.n * p.ho;
    let r0 = s * p.chunk;
    let r1 = min(r0 + p.chunk, rows);
    let dplane = p.ho * p.wov; // vec4s per channel of dy4
    let xplane = p.h * p.wxv; // vec4s per channel of x4
    // Input channels c0 .. c0 + 3; channels past the tensor are clamped into it.
    let cl = p.c - 1u;
    let xc = vec4<u32>(c0, min(c0 + 1u, cl), min(c0 + 2u, cl), min(c0 + 3u, cl)) * xplane;
    var a0: TapSums;
    var a1: TapSums;
    var a2: TapSums;
    var a3: TapSums;
    var at = row_at(r0);
    for (var row = r0; row < r1; row++) {
        let n = at.n;
        let oh = at.oh;
        at = row_next(at);
        let ih = i32(oh * p.sh + kh) - i32(p.ph);
        if (ih < 0 || ih >= i32(p.h)) { continue; }
        let dyrow = n * p.o * dplane + oh * p.wov;
        let xrow = n * p.c * xplane + u32(ih) * p.wxv;
        for (var g = 0u; g < p.wov; g++) {
            // Column q of dm[h]: dy of output channel o0 + 4h + q at output columns 4g .. 4g + 3.
            var dm: array<mat4x4<f32>, 2>;
            for (var o = 0u; o < OB; o++) {
                dm[o / 4u][o % 4u] = bv_dy[dyrow + min(o0 + o, p.o - 1u) * dplane + g];
            }
            let xg = xrow + g * SW;
            a0 = row_taps(a0, xg + xc.x, dm);
            if (CB > 1u) { a1 = row_taps(a1, xg + xc.y, dm); }
            if (CB > 2u) { a2 = row_taps(a2, xg + xc.z, dm); }
            if (CB > 3u) { a3 = row_taps(a3, xg + xc.w, dm); }
        }
    }
    // Partial sums of split s, laid out [s, O, C, KH, KW].
    let base = s * p.o * p.c * p.kh * p.kw;
    row_store(base, o0, c0, kh, a0);
    if (CB > 1u) { row_store(base, o0, c0 + 1u, kh, a1); }
    if (CB > 2u) { row_store(base, o0, c0 + 2u, kh, a2); }
    if (CB > 3u) { row_store(base, o0, c0 + 3u, kh, a3); }
}

@compute @workgroup_size(256)
fn im2col(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = flat(gid, nwg);
    if (idx >= p.total) { return; }
    let hw = p.ho * p.wo;
    let kk = p.kh * p.kw;
    let pix = idx % hw;
    let row = (idx / hw) % (p.c * kk);
    let n = idx / (hw * p.c * kk);
    let c = row / kk;
    let kh = (row % kk) / p.kw;
    let kw = row % p.kw;
    let ih = i32((pix / p.wo) * p.sh + kh) - i32(p.ph);
    let iw = i32((pix % p.wo) * p.sw + kw) - i32(p.pw);
    var v = 0.0;
    if (ih >= 0 && ih < i32(p.h) && iw >= 0 && iw < i32(p.w)) {
        v = ic_x[((n * p.c + c) * p.h + u32(ih)) * p.w + u32(iw)];
    }
    ic_col[idx] = v;
}

@compute @workgroup_size(256)
fn col2im(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = flat(gid, nwg);
    if (idx >= p.total) { return; }
    let iw = idx % p.w;
    let ih = (idx / p.w) % p.h;
    let c = (idx / (p.w * p.h)) % p.c;
    let n = idx / (p.w * p.h * p.c);
    let hw = p.ho * p.wo;
    let kk = p.kh * p.kw;
    var s = 0.0;
    for (var kh = 0u; kh < p.kh; kh++) {
        let t = ih + p.ph;
        if (t < kh || (t - kh) % p.sh != 0u) { continue; }
        let oh = (t - kh) / p.sh;
        if (oh >= p.ho) { continue; }
        for (var kw = 0u; kw < p.kw; kw++) {
            let u = iw + p.pw;
            if (u < kw || (u - kw) % p.sw != 0u) { continue; }
            let ow = (u - kw) / p.sw;
            if (ow >= p.wo) { continue; }
            s += ci_col[(n * p.c * kk + c * kk + kh * p.kw + kw) * hw + oh * p.wo + ow];
        }
    }
    ci_dx[idx] = s;
}
