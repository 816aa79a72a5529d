// The atom-modeling loss's small fused ops (shared/spec/atom-modeling.md), one dispatch each way:
// L_A's pair algebra, the importance budget and the latents' normalisation.
// pair_loss / pair_loss_backward: from the sample distances dbar [N, N], the structure sums
// S [N, N] and the importance sums W [N] (floored inside: W := max(W, w_floor), no gradient
// below the floor):
//   s      = mean_{A != B} dbar_AB                      batch length scale
//   dfl_AB = sqrt(dbar_AB^2 + s^2 inv_r2)               soft floor (inv_r2 = 1 / r_max^2; 0: dfl = dbar)
//   k_AB   = S_AB / (W_A W_B),  mk = mean_{A != B} k_AB,  kappa_AB = k_AB / mk
//   r_AB   = s / dfl_AB,  U_AB = r^2 - 2 kappa r,  L_A = mean_{A != B} U_AB
// pair_loss writes L_A, (s, mk), k and kappa; pair_loss_backward takes dL = dL/dL_A and writes
// dL/d dbar, dL/dS (0 on the diagonal, which no mean reads) and dL/dW:
//   gU = dL / P (P = N (N - 1) pairs), gr = gU (2 r - 2 kappa), gkappa = -2 r gU
//   gmk = -sum_P gkappa k / mk^2,  gk = gkappa / mk + gmk / P
//   gdfl = -gr s / dfl^2,  gs = sum_P (gr / dfl + gdfl s inv_r2 / dfl)
//   d dbar = gdfl dbar / dfl + gs / P,  dS = gk / (W_A W_B),
//   dW_C = -(sum_{B != C} (gk k)_CB + (gk k)_BC) / W_C   (0 below the floor)
// budget / budget_backward: the importance budget C_w = mean_A [relu(tau_lo - mw_A)^2 +
// relu(mw_A - tau_hi)^2] of the per-sample mean importances mw [N], and
// dC/dmw_A = dC (2 relu(mw_A - tau_hi) - 2 relu(tau_lo - mw_A)) / N.
// spread_scale / spread_scale_backward: the latents at unit RMS spread, y = z / r with
// r = sqrt(mean_{A,d} (z_Ad - zbar_d)^2 + 1e-12) (zbar: the column means), and
// dz = gy / r - (sum gy z) / r^2 (z - zbar) / (N D r).
// The sums are one workgroup: every sum is a strided partial per invocation in a fixed order,
// then a fixed tree through workgroup memory, so results are deterministic (no atomics). The
// work is O(N^2) scalar arithmetic (microseconds), where the same algebra as separate tensor
// ops took ~55 dispatches per L_A forward and backward.
//
// Bindings (group 0): 0 = Params (uniform); then per entry point
//   pair_loss:          1 dbar, 2 s_mat, 3 wsum (read), 4 loss [1], 5 stats [2] = (s, mk),
//                       6 k [N, N], 7 kappa [N, N] (write)
//   pair_loss_backward: 1 dbar, 2 s_mat, 3 wsum, 4 stats, 5 gl [1] (read), 6 gdbar [N, N],
//                       7 gs_mat [N, N], 8 gwsum [N] (write)
//   budget:             1 mw [N] (read), 2 c_w [1] (write)
//   budget_backward:    1 mw [N], 2 gc [1] (read), 3 gmw [N] (write)
//   spread_scale:       1 z [N, D] (read), 2 y [N, D], 3 zbar [D], 4 r [1] (write)
//   spread_scale_backward: 1 z, 2 gy [N, D], 3 zbar, 4 r (read), 5 gz [N, D] (write)
//   spread_cols:        1 z (read), 2 zbar [D], 3 colsum [D] (write)
//   spread_r:           1 colsum (read), 2 r [1] (write)
//   spread_apply:       1 z (read), 2 y (write), 3 r (read)
//   spread_dots:        1 z, 2 gy (read), 3 colsum [D] (write)
//   spread_k:           1 colsum (read), 2 k [1] (write), 3 r (read)
//   spread_apply_backward: 1 z, 2 gy, 3 zbar, 4 r, 5 k (read), 6 gz (write)
// Workgroup: 256 x 1 x 1, a single workgroup (grid 1 x 1 x 1); invocation t takes pairs
// t, t + 256, .. of the flat [N, N] index and samples t, t + 256, ... pair_loss and
// pair_loss_backward: PT x 1 x 1 (override, 1024 where the adapter allows: N = 256 gives each
// invocation 64 pairs per pass instead of 256), strides of PT. budget_backward (no sums): one
// invocation per sample, grid ceil(N / 256).
// The many-workgroup spread kernels (end of file): spread_r and spread_k one workgroup;
// spread_cols and spread_dots one invocation per column, the apply kernels one per element
// (grids folded into y past 65535 workgroups).

struct Params {
    ns: u32,     // N samples
    inv_r2: f32, // 1 / r_max^2 of the soft floor, 0 without it
    tau_lo: f32, // budget bounds
    tau_hi: f32,
    dim: u32,    // spread_scale: D
    w_floor: f32, // pair_loss: the floor of the importance sums W
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dbar: array<f32>;
@group(0) @binding(2) var<storage, read> s_mat: array<f32>;
@group(0) @binding(3) var<storage, read> wsum: array<f32>;
// pair_loss
@group(0) @binding(4) var<storage, read_write> loss: array<f32>;
@group(0) @binding(5) var<storage, read_write> stats_out: array<f32>;
@group(0) @binding(6) var<storage, read_write> k_out: array<f32>;
@group(0) @binding(7) var<storage, read_write> kappa_out: array<f32>;
// pair_loss_backward
@group(0) @binding(4) var<storage, read> stats_in: array<f32>;
@group(0) @binding(5) var<storage, read> gl: array<f32>;
@group(0) @binding(6) var<storage, read_write> gdbar: array<f32>;
@group(0) @binding(7) var<storage, read_write> gs_mat: array<f32>;
@group(0) @binding(8) var<storage, read_write> gwsum: array<f32>;

// budget, budget_backward
@group(0) @binding(1) var<storage, read> mw: array<f32>;
@group(0) @binding(2) var<storage, read_write> c_w: array<f32>;
@group(0) @binding(2) var<storage, read> gc: array<f32>;
@group(0) @binding(3) var<storage, read_write> gmw: array<f32>;

// spread_scale, spread_scale_backward
@group(0) @binding(1) var<storage, read> sz: array<f32>;
@group(0) @binding(2) var<storage, read_write> sy: array<f32>;
@group(0) @binding(3) var<storage, read_write> szbar: array<f32>;
@group(0) @binding(4) var<storage, read_write> sr: array<f32>;
@group(0) @binding(2) var<storage, read> sgy: array<f32>;
@group(0) @binding(3) var<storage, read> szbar_in: array<f32>;
@group(0) @binding(4) var<storage, read> sr_in: array<f32>;
@group(0) @binding(5) var<storage, read_write> sgz: array<f32>;
// spread_cols, spread_r, spread_apply, spread_dots, spread_k, spread_apply_backward (many
// workgroups, for large latents on GPUs)
@group(0) @binding(2) var<storage, read_write> mzbar: array<f32>; // spread_cols: zbar
@group(0) @binding(3) var<storage, read_write> mcol: array<f32>; // spread_cols, spread_dots: column sums
@group(0) @binding(1) var<storage, read> mcol_in: array<f32>; // spread_r, spread_k: column sums
@group(0) @binding(2) var<storage, read_write> mout: array<f32>; // spread_r: r; spread_k: k
@group(0) @binding(3) var<storage, read> mr: array<f32>; // spread_apply, spread_k: r [1]
@group(0) @binding(5) var<storage, read> mk: array<f32>; // spread_apply_backward: k [1]
@group(0) @binding(6) var<storage, read_write> mgz: array<f32>; // spread_apply_backward: gz

// Invocations of the pair_loss workgroups (a power of two, 256 or 1024); the other one-workgroup
// kernels are 256 wide and keep the default.
override PT: u32 = 256u;

var<workgroup> red_a: array<f32, 1024>;
var<workgroup> red_b: array<f32, 1024>;

// The workgroup's sums of (a, b) over its PT invocations, in a fixed tree order.
fn sum2(t: u32, a: f32, b: f32) -> vec2<f32> {
    red_a[t] = a;
    red_b[t] = b;
    workgroupBarrier();
    for (var h = PT / 2u; h > 0u; h >>= 1u) {
        if (t < h) {
            red_a[t] += red_a[t + h];
            red_b[t] += red_b[t + h];
        }
        workgroupBarrier();
    }
    let r = vec2<f32>(red_a[0], red_b[0]);
    workgroupBarrier(); // every invocation has read the result before the arrays are reused
    return r;
}

// Sample a's importance sum with the floor, max(W, floor) written as W + relu(floor - W).
fn wfl(a: u32) -> f32 {
    return wsum[a] + max(p.w_floor - wsum[a], 0.0);
}

// One pair's quantities, given s and mk: (dfl, r, k, kappa).
fn pair(idx: u32, a: u32, b: u32, s: f32, mk: f32) -> vec4<f32> {
    let d = dbar[idx];
    var dfl = d;
    if (p.inv_r2 > 0.0) { dfl = sqrt(d * d + s * s * p.inv_r2); }
    let k = s_mat[idx] / (wfl(a) * wfl(b));
    return vec4<f32>(dfl, s / dfl, k, k / mk);
}

fn pairs() -> f32 {
    return f32(p.ns) * f32(p.ns - 1u);
}

@compute @workgroup_size(PT)
fn pair_loss(@builtin(local_invocation_index) t: u32) {
    let n = p.ns;
    var sd = 0.0;
    var sk = 0.0;
    for (var idx = t; idx < n * n; idx += PT) {
        let a = idx / n;
        let b = idx % n;
        if (a != b) {
            sd += dbar[idx];
            sk += s_mat[idx] / (wfl(a) * wfl(b));
        }
    }
    let sums = sum2(t, sd, sk);
    let s = sums.x / pairs();
    let mk = sums.y / pairs();
    var su = 0.0;
    for (var idx = t; idx < n * n; idx += PT) {
        let a = idx / n;
        let b = idx % n;
        let q = pair(idx, a, b, s, mk);
        k_out[idx] = q.z;
        kappa_out[idx] = q.w;
        if (a != b) {
            let r = q.y;
            su += r * r - q.w * r * 2.0;
        }
    }
    let total = sum2(t, su, 0.0);
    if (t == 0u) {
        loss[0] = total.x / pairs();
        stats_out[0] = s;
        stats_out[1] = mk;
    }
}

// gr, gkappa of a pair from gU.
fn pair_grads(q: vec4<f32>, gu: f32) -> vec2<f32> {
    return vec2<f32>(gu * (2.0 * q.y - 2.0 * q.w), -2.0 * q.y * gu);
}

@compute @workgroup_size(PT)
fn pair_loss_backward(@builtin(local_invocation_index) t: u32) {
    let n = p.ns;
    let s = stats_in[0];
    let mk = stats_in[1];
    let np = pairs();
    let gu = gl[0] / np;
    // Pass 1: the two sums every pair's gradient needs.
    var amk = 0.0;
    var as_ = 0.0;
    for (var idx = t; idx < n * n; idx += PT) {
        let a = idx / n;
        let b = idx % n;
        if (a != b) {
            let q = pair(idx, a, b, s, mk);
            let g = pair_grads(q, gu);
            amk += g.y * q.z;
            let gdfl = -g.x * s / (q.x * q.x);
            as_ += g.x / q.x;
            if (p.inv_r2 > 0.0) { as_ += gdfl * s * p.inv_r2 / q.x; }
        }
    }
    let sums = sum2(t, amk, as_);
    let gmk = -sums.x / (mk * mk);
    let gs = sums.y;
    // Pass 2: each pair's gradients.
    for (var idx = t; idx < n * n; idx += PT) {
        let a = idx / n;
        let b = idx % n;
        var gd = 0.0;
        var gsm = 0.0;
        if (a != b) {
            let q = pair(idx, a, b, s, mk);
            let g = pair_grads(q, gu);
            let gdfl = -g.x * s / (q.x * q.x);
            var dd = gdfl;
            if (p.inv_r2 > 0.0) { dd = gdfl * dbar[idx] / q.x; }
            gd = dd + gs / np;
            gsm = (g.y / mk + gmk / np) / (wfl(a) * wfl(b));
        }
        gdbar[idx] = gd;
        gs_mat[idx] = gsm;
    }
    // Pass 3: each sample's W, through its row and column of gk k = dS S (dS = gk / (W_A W_B) as
    // pass 2 wrote it, 0 on the diagonal; read back after the barriers instead of recomputing two
    // pairs per term).
    storageBarrier();
    workgroupBarrier();
    for (var c = t; c < n; c += PT) {
        var acc = 0.0;
        for (var b = 0u; b < n; b++) {
            acc += gs_mat[c * n + b] * s_mat[c * n + b] + gs_mat[b * n + c] * s_mat[b * n + c];
        }
        // max(W, floor) passes the gradient only above the floor (as W + relu(floor - W) does)
        gwsum[c] = select(-acc / wfl(c), 0.0, p.w_floor - wsum[c] > 0.0);
    }
}

@compute @workgroup_size(256)
fn budget(@builtin(local_invocation_index) t: u32) {
    var acc = 0.0;
    for (var a = t; a < p.ns; a += 256u) {
        let lo = max(p.tau_lo - mw[a], 0.0);
        let hi = max(mw[a] - p.tau_hi, 0.0);
        acc += lo * lo + hi * hi;
    }
    let total = sum2(t, acc, 0.0);
    if (t == 0u) { c_w[0] = total.x / f32(p.ns); }
}

@compute @workgroup_size(256)
fn budget_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let a = gid.x;
    if (a >= p.ns) { return; }
    let lo = max(p.tau_lo - mw[a], 0.0);
    let hi = max(mw[a] - p.tau_hi, 0.0);
    gmw[a] = gc[0] * (2.0 * hi - 2.0 * lo) / f32(p.ns);
}

@compute @workgroup_size(256)
fn spread_scale(@builtin(local_invocation_index) t: u32) {
    let n = p.ns;
    let d = p.dim;
    for (var c = t; c < d; c += 256u) {
        var m = 0.0;
        for (var a = 0u; a < n; a++) { m += sz[a * d + c]; }
        szbar[c] = m / f32(n);
    }
    storageBarrier(); // the column means are visible to the whole workgroup
    var acc = 0.0;
    for (var i = t; i < n * d; i += 256u) {
        let v = sz[i] - szbar[i % d];
        acc += v * v;
    }
    let total = sum2(t, acc, 0.0);
    let r = sqrt(total.x / f32(n * d) + 1e-12);
    for (var i = t; i < n * d; i += 256u) { sy[i] = sz[i] / r; }
    if (t == 0u) { sr[0] = r; }
}

@compute @workgroup_size(256)
fn spread_scale_backward(@builtin(local_invocation_index) t: u32) {
    let n = p.ns;
    let d = p.dim;
    var acc = 0.0;
    for (var i = t; i < n * d; i += 256u) { acc += sgy[i] * sz[i]; }
    let total = sum2(t, acc, 0.0);
    let r = sr_in[0];
    let k = total.x / (r * r) / (f32(n * d) * r);
    for (var i = t; i < n * d; i += 256u) {
        sgz[i] = sgy[i] / r - k * (sz[i] - szbar_in[i % d]);
    }
}

// ---- The same normalisation over many workgroups (large latents on GPUs) ----
// Forward: spread_cols (one invocation per column c: zbar[c] and the column's sum of squared
// deviations, each over the samples in order), spread_r (one workgroup: r from the column sums,
// a fixed tree), spread_apply (one invocation per element: y = z / r). Backward: spread_dots
// (per column: sum_A gy z), spread_k (one workgroup: k = (sum gy z) / r^2 / (N D r)),
// spread_apply_backward (per element). Deterministic; the sums differ from the one-workgroup
// kernels only in their order.

@compute @workgroup_size(256)
fn spread_cols(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let c = gid.x + gid.y * nwg.x * 256u;
    if (c >= p.dim) { return; }
    var m = 0.0;
    for (var a = 0u; a < p.ns; a++) { m += sz[a * p.dim + c]; }
    m = m / f32(p.ns);
    mzbar[c] = m;
    var acc = 0.0;
    for (var a = 0u; a < p.ns; a++) {
        let v = sz[a * p.dim + c] - m;
        acc += v * v;
    }
    mcol[c] = acc;
}

@compute @workgroup_size(256)
fn spread_dots(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let c = gid.x + gid.y * nwg.x * 256u;
    if (c >= p.dim) { return; }
    var acc = 0.0;
    for (var a = 0u; a < p.ns; a++) { acc += sgy[a * p.dim + c] * sz[a * p.dim + c]; }
    mcol[c] = acc;
}

// The sum of the columns' partial sums: strided per invocation, then the fixed tree.
fn col_total(t: u32) -> f32 {
    var acc = 0.0;
    for (var c = t; c < p.dim; c += 256u) { acc += mcol_in[c]; }
    return sum2(t, acc, 0.0).x;
}

@compute @workgroup_size(256)
fn spread_r(@builtin(local_invocation_index) t: u32) {
    let total = col_total(t);
    if (t == 0u) { mout[0] = sqrt(total / f32(p.ns * p.dim) + 1e-12); }
}

@compute @workgroup_size(256)
fn spread_k(@builtin(local_invocation_index) t: u32) {
    let total = col_total(t);
    let r = mr[0];
    if (t == 0u) { mout[0] = total / (r * r) / (f32(p.ns * p.dim) * r); }
}

@compute @workgroup_size(256)
fn spread_apply(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= p.ns * p.dim) { return; }
    sy[i] = sz[i] / mr[0];
}

@compute @workgroup_size(256)
fn spread_apply_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= p.ns * p.dim) { return; }
    let r = sr_in[0];
    mgz[i] = sgy[i] / r - mk[0] * (sz[i] - szbar_in[i % p.dim]);
}
