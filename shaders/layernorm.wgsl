// Layer normalisation over the last axis D of a tensor viewed as [rows, D]:
//   ln_forward:     mean = sum x / D, var = sum (x - mean)^2 / D (biased, two-pass for accuracy),
//                   rstd = 1 / sqrt(var + eps), y = (x - mean) * rstd * gamma + beta;
//                   mean[r] and rstd[r] are saved for the backward pass
//   ln_backward_x:  xhat = (x - mean) * rstd, g = gy * gamma,
//                   dx = rstd * (g - mean_d(g) - xhat * mean_d(g * xhat))
//   ln_backward_params: partial dgamma[c, d] = sum over rows r of chunk c of gy[r, d] * xhat[r, d],
//                   partial dbeta[c, d] = sum of gy[r, d]; rows are summed in increasing order and
//                   the chunk partials are combined by the deterministic reduce kernel (no atomics)
//
// Bindings (group 0): 0 = Params (uniform); then per entry point
//   ln_forward:         1 x, 2 gamma, 3 beta (read), 4 y, 5 mean, 6 rstd (write)
//   ln_backward_x:      1 x, 2 gamma, 3 mean, 4 rstd, 5 gy (read), 6 dx (write)
//   ln_backward_params: 1 x, 2 mean, 3 rstd, 4 gy (read), 5 dgamma [chunks, D], 6 dbeta [chunks, D] (write)
//   ln_forward4, ln_backward_x4: ln_forward, ln_backward_x on whole vec4s (D a multiple of 4;
//                       the sums still run element by element in order, as the f32 forms)
// Workgroup: 256 x 1 x 1, no barriers. ln_forward / ln_backward_x: one invocation per row looping
// over D; ln_backward_params: one invocation per (chunk, column d) looping over the chunk's rows.
// The grid folds into y past 65535 groups (flat index gid.x + gid.y * nwg.x * 256).

struct Params {
    rows: u32,
    d: u32,
    chunk: u32,   // ln_backward_params: rows per chunk
    chunks: u32,  // ln_backward_params: number of chunks
    eps: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

// ln_forward
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read_write> mean_out: array<f32>;
@group(0) @binding(6) var<storage, read_write> rstd_out: array<f32>;
// ln_backward_x
@group(0) @binding(3) var<storage, read> bx_mean: array<f32>;
@group(0) @binding(4) var<storage, read> bx_rstd: array<f32>;
@group(0) @binding(5) var<storage, read> bx_gy: array<f32>;
@group(0) @binding(6) var<storage, read_write> dx: array<f32>;
// ln_backward_params
@group(0) @binding(2) var<storage, read> bp_mean: array<f32>;
@group(0) @binding(3) var<storage, read> bp_rstd: array<f32>;
@group(0) @binding(4) var<storage, read> bp_gy: array<f32>;
@group(0) @binding(5) var<storage, read_write> dgamma: array<f32>;
@group(0) @binding(6) var<storage, read_write> dbeta: array<f32>;

// ln_forward4, ln_backward_x4: the same on whole vec4s (D a multiple of 4)
@group(0) @binding(1) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> gamma4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> beta4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> y4: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> gy4: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> dx4: array<vec4<f32>>;

fn flat(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 256u;
}

@compute @workgroup_size(256)
fn ln_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = flat(gid, nwg);
    if (r >= p.rows) { return; }
    let base = r * p.d;
    let inv_d = 1.0 / f32(p.d);
    var s = 0.0;
    for (var i = 0u; i < p.d; i++) {
        s += x[base + i];
    }
    let mean = s * inv_d;
    // Second pass over the centred values: no cancellation when |mean| >> std.
    var ss = 0.0;
    for (var i = 0u; i < p.d; i++) {
        let c = x[base + i] - mean;
        ss += c * c;
    }
    let rstd = inverseSqrt(ss * inv_d + p.eps);
    for (var i = 0u; i < p.d; i++) {
        y[base + i] = (x[base + i] - mean) * rstd * gamma[i] + beta[i];
    }
    mean_out[r] = mean;
    rstd_out[r] = rstd;
}

@compute @workgroup_size(256)
fn ln_backward_x(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = flat(gid, nwg);
    if (r >= p.rows) { return; }
    let base = r * p.d;
    let mean = bx_mean[r];
    let rstd = bx_rstd[r];
    var sg = 0.0;
    var sgx = 0.0;
    for (var i = 0u; i < p.d; i++) {
        let g = bx_gy[base + i] * gamma[i];
        sg += g;
        sgx += g * (x[base + i] - mean) * rstd;
    }
    let inv_d = 1.0 / f32(p.d);
    let mg = sg * inv_d;
    let mgx = sgx * inv_d;
    for (var i = 0u; i < p.d; i++) {
        let xhat = (x[base + i] - mean) * rstd;
        dx[base + i] = rstd * (bx_gy[base + i] * gamma[i] - mg - xhat * mgx);
    }
}

@compute @workgroup_size(256)
fn ln_backward_params(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = flat(gid, nwg);
    if (t >= p.chunks * p.d) { return; }
    let c = t / p.d;
    let col = t % p.d;
    let start = c * p.chunk;
    let stop = min(start + p.chunk, p.rows);
    var sg = 0.0;
    var sgx = 0.0;
    for (var r = start; r < stop; r++) {
        let g = bp_gy[r * p.d + col];
        sg += g;
        sgx += g * (x[r * p.d + col] - bp_mean[r]) * bp_rstd[r];
    }
    dgamma[t] = sgx;
    dbeta[t] = sg;
}

// v's elements added to s in order (the f32 kernels' summation order).
fn add4(s: f32, v: vec4<f32>) -> f32 {
    return s + v.x + v.y + v.z + v.w;
}

@compute @workgroup_size(256)
fn ln_forward4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = flat(gid, nwg);
    if (r >= p.rows) { return; }
    let d4 = p.d / 4u;
    let base = r * d4;
    let inv_d = 1.0 / f32(p.d);
    var s = 0.0;
    for (var i = 0u; i < d4; i++) {
        s = add4(s, x4[base + i]);
    }
    let mean = s * inv_d;
    var ss = 0.0;
    for (var i = 0u; i < d4; i++) {
        let c = x4[base + i] - mean;
        ss = add4(ss, c * c);
    }
    let rstd = inverseSqrt(ss * inv_d + p.eps);
    for (var i = 0u; i < d4; i++) {
        y4[base + i] = (x4[base + i] - mean) * rstd * gamma4[i] + beta4[i];
    }
    mean_out[r] = mean;
    rstd_out[r] = rstd;
}

@compute @workgroup_size(256)
fn ln_backward_x4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = flat(gid, nwg);
    if (r >= p.rows) { return; }
    let d4 = p.d / 4u;
    let base = r * d4;
    let mean = bx_mean[r];
    let rstd = bx_rstd[r];
    var sg = 0.0;
    var sgx = 0.0;
    for (var i = 0u; i < d4; i++) {
        let g = gy4[base + i] * gamma4[i];
        sg = add4(sg, g);
        sgx = add4(sgx, g * (x4[base + i] - mean) * rstd);
    }
    let inv_d = 1.0 / f32(p.d);
    let mg = sg * inv_d;
    let mgx = sgx * inv_d;
    for (var i = 0u; i < d4; i++) {
        let xhat = (x4[base + i] - mean) * rstd;
        dx4[base + i] = rstd * (gy4[base + i] * gamma4[i] - mg - xhat * mgx);
    }
}
