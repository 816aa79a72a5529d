// 2-D max and average pooling (NCHW, floor mode) and their gradients. The input is viewed as
// N*C planes of H x W; output pixel (oh, ow) covers rows oh*sh - ph .. + kh and columns
// ow*sw - pw .. + kw of its plane.
//   max: padded positions never win; the first largest element (row-major in the window) is kept
//        and its flat index ih * W + iw in the plane is saved for the backward pass.
//   avg: count_include_pad = true, i.e. the window sum divided by kh * kw (p.scale).
// Gradients are gathered: one invocation per input element walks the (few) windows that contain
// it in a fixed order, so no atomics are needed and results are deterministic.
//
// Bindings (group 0): 0 = Params (uniform); then per entry point
//   max_pool_forward:  1 x (read), 2 y (write), 3 idx (u32 write)
//   max_pool_backward: 1 gy (read), 2 idx (u32 read), 3 gx (write)
//       gx[i] = sum of gy over the windows containing i whose saved argmax is i
//   max_pool_forward_inside: max_pool_forward's bindings and result where no window leaves the
//       input (no padding): kernel PKH x PKW as constants, no bounds checks.
//   max_pool_backward_tiled: the same bindings and result where the windows tile the input
//       exactly (kernel = stride = (PKH, PKW), no padding, H = Ho PKH, W = Wo PKW): each element
//       lies in one window, so one invocation per run of RB windows along an output row writes
//       all their elements: gy where the element is the window's argmax, else 0 (2 loads per
//       window instead of 2 per element and no window search).
//   avg_pool_forward:  1 x (read), 2 y (write)
//   avg_pool_backward: 1 gy (read), 2 gx (write)
//       gx[i] = scale * sum of gy over the windows containing i
// Workgroup: 256 x 1 x 1, one invocation per run of RB neighbouring output (forward) or input
// (backward) elements along W (override RB: 1 on GPUs, 8 on CPU rasterisers, where the index
// divisions, done once per run, cost more than the loads), no barriers; the grid folds into y
// past 65535 groups (flat index gid.x + gid.y * nwg.x * 256).

struct Params {
    planes: u32, // N * C
    h: u32,
    w: u32,
    ho: u32,
    wo: u32,
    kh: u32,
    kw: u32,
    sh: u32,
    sw: u32,
    ph: u32,
    pw: u32,
    total: u32, // invocations that do work
    scale: f32, // avg: 1 / (kh * kw)
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

override RB: u32 = 1u; // elements per invocation, along W
override PKH: u32 = 2u; // max_pool_forward_inside, max_pool_backward_tiled: the window
override PKW: u32 = 2u;

@group(0) @binding(0) var<uniform> p: Params;
// forward (max and avg)
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> idx_out: array<u32>;
// max_pool_backward
@group(0) @binding(1) var<storage, read> mb_gy: array<f32>;
@group(0) @binding(2) var<storage, read> mb_idx: array<u32>;
@group(0) @binding(3) var<storage, read_write> mb_gx: array<f32>;
// avg_pool_backward
@group(0) @binding(1) var<storage, read> ab_gy: array<f32>;
@group(0) @binding(2) var<storage, read_write> ab_gx: array<f32>;

fn flat(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 256u;
}

// The output windows that contain padded position hp (= ih + ph) along one axis:
// oh*s <= hp < oh*s + k, clipped to [0, len). Returned as [lo, hi).
fn window_range(hp: u32, k: u32, s: u32, len: u32) -> vec2<u32> {
    let lo = select(0u, (hp - k) / s + 1u, hp >= k);
    let hi = min(hp / s + 1u, len);
    return vec2<u32>(lo, max(lo, hi));
}

// The run of up to RB neighbouring elements along W that invocation i covers in a tensor of
// `rows` rows of `len` elements: (row, first element, count). Divisions happen once per run.
fn run_of(i: u32, len: u32) -> vec3<u32> {
    let runs = (len + RB - 1u) / RB;
    let row = i / runs;
    let e0 = (i % runs) * RB;
    return vec3<u32>(row, e0, min(RB, len - e0));
}

@compute @workgroup_size(256)
fn max_pool_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.total) { return; }
    let run = run_of(i, p.wo);
    let oh = run.x % p.ho;
    let plane = (run.x / p.ho) * p.h * p.w;
    let ih0 = i32(oh * p.sh) - i32(p.ph);
    for (var e = 0u; e < run.z; e++) {
        let ow = run.y + e;
        let iw0 = i32(ow * p.sw) - i32(p.pw);
        // Only real positions compete (padding <= kernel / 2 guarantees every window has one).
        var best = 0.0;
        var arg = 0u;
        var found = false;
        for (var kh = 0u; kh < p.kh; kh++) {
            let ih = ih0 + i32(kh);
            if (ih < 0 || ih >= i32(p.h)) { continue; }
            for (var kw = 0u; kw < p.kw; kw++) {
                let iw = iw0 + i32(kw);
                if (iw < 0 || iw >= i32(p.w)) { continue; }
                let at = u32(ih) * p.w + u32(iw);
                let v = x[plane + at];
                if (!found || v > best) {
                    best = v;
                    arg = at;
                    found = true;
                }
            }
        }
        let o = run.x * p.wo + ow;
        y[o] = best;
        idx_out[o] = arg;
    }
}

@compute @workgroup_size(256)
fn max_pool_forward_inside(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.total) { return; }
    let run = run_of(i, p.wo);
    let ih0 = (run.x % p.ho) * p.sh;
    let plane = (run.x / p.ho) * p.h * p.w;
    for (var e = 0u; e < run.z; e++) {
        let ow = run.y + e;
        let first = ih0 * p.w + ow * p.sw;
        // The first largest element, row-major in the window (as max_pool_forward).
        var best = x[plane + first];
        var arg = first;
        for (var kh = 0u; kh < PKH; kh++) {
            for (var kw = 0u; kw < PKW; kw++) {
                let at = first + kh * p.w + kw;
                let v = x[plane + at];
                if (v > best) {
                    best = v;
                    arg = at;
                }
            }
        }
        let o = run.x * p.wo + ow;
        y[o] = best;
        idx_out[o] = arg;
    }
}

// The windows along W that contain padded column t = iw + pw, [lo, hi), kept for a run of
// columns without dividing per column: q, r = t / sw, t % sw and qu, ru = floor((t - kw) / sw),
// its remainder (t - kw may be negative: no window starts that far left).
struct Cols {
    q: u32,
    r: u32,
    qu: i32,
    ru: u32,
}

fn cols_at(t: u32) -> Cols {
    let u = i32(t) - i32(p.kw);
    let s = i32(p.sw);
    let qu = select(-((-u + s - 1) / s), u / s, u >= 0);
    return Cols(t / p.sw, t % p.sw, qu, u32(u - qu * s));
}

fn cols_next(c: Cols) -> Cols {
    var n = c;
    n.r += 1u;
    if (n.r == p.sw) {
        n.r = 0u;
        n.q += 1u;
    }
    n.ru += 1u;
    if (n.ru == p.sw) {
        n.ru = 0u;
        n.qu += 1;
    }
    return n;
}

fn cols_range(c: Cols) -> vec2<u32> {
    let lo = u32(max(c.qu + 1, 0));
    let hi = min(c.q + 1u, p.wo);
    return vec2<u32>(lo, max(lo, hi));
}

@compute @workgroup_size(256)
fn max_pool_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.total) { return; }
    let run = run_of(i, p.w);
    let ih = run.x % p.h;
    let pl = run.x / p.h;
    let rh = window_range(ih + p.ph, p.kh, p.sh, p.ho);
    var cols = cols_at(run.y + p.pw);
    for (var e = 0u; e < run.z; e++) {
        let iw = run.y + e;
        let me = ih * p.w + iw;
        let rw = cols_range(cols);
        var acc = 0.0;
        for (var oh = rh.x; oh < rh.y; oh++) {
            let row = (pl * p.ho + oh) * p.wo;
            for (var ow = rw.x; ow < rw.y; ow++) {
                if (mb_idx[row + ow] == me) { acc += mb_gy[row + ow]; }
            }
        }
        mb_gx[run.x * p.w + iw] = acc;
        cols = cols_next(cols);
    }
}

@compute @workgroup_size(256)
fn max_pool_backward_tiled(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.total) { return; }
    let run = run_of(i, p.wo);
    let ih0 = (run.x % p.ho) * PKH;
    let plane = (run.x / p.ho) * p.h * p.w;
    for (var e = 0u; e < run.z; e++) {
        let o = run.x * p.wo + run.y + e;
        let g = mb_gy[o];
        let win = mb_idx[o];
        let iw0 = (run.y + e) * PKW;
        for (var dh = 0u; dh < PKH; dh++) {
            let at = (ih0 + dh) * p.w + iw0;
            for (var dw = 0u; dw < PKW; dw++) {
                mb_gx[plane + at + dw] = select(0.0, g, win == at + dw);
            }
        }
    }
}

@compute @workgroup_size(256)
fn avg_pool_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.total) { return; }
    let run = run_of(i, p.wo);
    let oh = run.x % p.ho;
    let plane = (run.x / p.ho) * p.h * p.w;
    let ih0 = i32(oh * p.sh) - i32(p.ph);
    for (var e = 0u; e < run.z; e++) {
        let ow = run.y + e;
        let iw0 = i32(ow * p.sw) - i32(p.pw);
        var acc = 0.0;
        for (var kh = 0u; kh < p.kh; kh++) {
            let ih = ih0 + i32(kh);
            if (ih < 0 || ih >= i32(p.h)) { continue; }
            for (var kw = 0u; kw < p.kw; kw++) {
                let iw = iw0 + i32(kw);
                if (iw < 0 || iw >= i32(p.w)) { continue; }
                acc += x[plane + u32(ih) * p.w + u32(iw)];
            }
        }
        y[run.x * p.wo + ow] = acc * p.scale;
    }
}

@compute @workgroup_size(256)
fn avg_pool_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.total) { return; }
    let run = run_of(i, p.w);
    let ih = run.x % p.h;
    let pl = run.x / p.h;
    let rh = window_range(ih + p.ph, p.kh, p.sh, p.ho);
    var cols = cols_at(run.y + p.pw);
    for (var e = 0u; e < run.z; e++) {
        let rw = cols_range(cols);
        var acc = 0.0;
        for (var oh = rh.x; oh < rh.y; oh++) {
            let row = (pl * p.ho + oh) * p.wo;
            for (var ow = rw.x; ow < rw.y; ow++) {
                acc += ab_gy[row + ow];
            }
        }
        ab_gx[run.x * p.w + run.y + e] = acc * p.scale;
        cols = cols_next(cols);
    }
}
