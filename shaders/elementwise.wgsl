// Elementwise kernels: unary maps, binary maps with numpy broadcasting, their local gradients,
// and in-place gradient accumulation.
//
// Bindings (group 0): 0 = Params (uniform); then per entry point
//   unary:           1 x (read), 2 y (write)                        y = f(x)
//   unary_backward:  1 x, 2 gy (read), 3 gx (write)                 gx = gy * f'(x)
//   binary:          1 a, 2 b (read, strided), 3 y (write)          y = a (op) b
//   binary_backward: 1 gy, 2 a, 3 b (read), 4 g (write)             g = gy * d(a op b)/d(a or b)
//   accumulate:      1 x (read), 2 y (read_write)                   y += x
//   unary4, unary_backward4, accumulate4: the same with vec4 bindings, for contiguous operands of
//                    the output's shape and a multiple of 4 elements
//   binary4, binary_backward4: the same with vec4 bindings where the output's innermost dim is a
//                    multiple of 4 and each operand runs along it or is broadcast over it
// Workgroup: 256 x 1 x 1, one invocation per output element (per vec4 in the *4 forms: p.n counts
// vec4s there); the grid folds into y past 65535 groups, so the flat index is
// gid.x + gid.y * nwg.x * 256.
// Override constants: OP selects the function, WHICH (binary_backward) the operand: 0 = a, 1 = b;
// A4, B4 (binary4, binary_backward4) whether a, b run along the innermost dim (see there);
// NDIM (binary ops) the dims of the index walk (= p.ndim): the compiler unrolls it and reads
// each shape and stride at a constant index, where a loop bound read from the buffer cost
// lavapipe 30-40% on a same-shape or bias add.

struct Params {
    n: u32,        // number of output elements
    ndim: u32,     // dims of the output shape (binary ops), <= 8; the kernels read it as NDIM
    alpha: f32,    // leaky_relu slope, affine scale, powf exponent
    beta: f32,     // affine shift
    shape: array<vec4<u32>, 2>, // output shape
    sa: array<vec4<u32>, 2>,    // strides of a into the output index space (0 = broadcast)
    sb: array<vec4<u32>, 2>,    // strides of b
}

override OP: u32 = 0u;
override WHICH: u32 = 0u;
override NDIM: u32 = 1u;

@group(0) @binding(0) var<uniform> p: Params;

// unary
@group(0) @binding(1) var<storage, read> u_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> u_y: array<f32>;
// unary_backward
@group(0) @binding(2) var<storage, read> ub_gy: array<f32>;
@group(0) @binding(3) var<storage, read_write> ub_gx: array<f32>;
// binary
@group(0) @binding(1) var<storage, read> b_a: array<f32>;
@group(0) @binding(2) var<storage, read> b_b: array<f32>;
@group(0) @binding(3) var<storage, read_write> b_y: array<f32>;
// binary_backward
@group(0) @binding(1) var<storage, read> bb_gy: array<f32>;
@group(0) @binding(2) var<storage, read> bb_a: array<f32>;
@group(0) @binding(3) var<storage, read> bb_b: array<f32>;
@group(0) @binding(4) var<storage, read_write> bb_g: array<f32>;
// accumulate
@group(0) @binding(2) var<storage, read_write> acc_y: array<f32>;
// The *4 entry points: the same on whole vec4s (contiguous operands of the same shape)
@group(0) @binding(1) var<storage, read> v_1: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> v_2: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> v_3: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> v_out2: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> v_out3: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> v_out4: array<vec4<f32>>;

const SQRT_2_OVER_PI: f32 = 0.7978845608028654;

fn flat(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 256u;
}

fn dim(d: u32) -> u32 { return p.shape[d / 4u][d % 4u]; }

// Offsets of output element i into a and b (strided, broadcast). The outermost index is what
// remains after the inner dims, so a same-shape op (one dim after the host collapses them)
// divides nothing.
fn offsets(i: u32) -> vec2<u32> {
    var rem = i;
    var oa = 0u;
    var ob = 0u;
    for (var d = NDIM - 1u; d > 0u; d--) {
        let n = dim(d);
        let idx = rem % n;
        rem = rem / n;
        oa += idx * p.sa[d / 4u][d % 4u];
        ob += idx * p.sb[d / 4u][d % 4u];
    }
    return vec2<u32>(oa + rem * p.sa[0].x, ob + rem * p.sb[0].x);
}

// tanh that stays finite for large |x| on every driver.
fn tanh_safe(x: f32) -> f32 {
    return tanh(clamp(x, -15.0, 15.0));
}

fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

// x^e for any x when e is an integer, x >= 0 otherwise (NaN for negative x, as in IEEE pow).
fn pow_any(x: f32, e: f32) -> f32 {
    if (x >= 0.0) {
        if (x == 0.0) {
            if (e == 0.0) { return 1.0; }
            if (e > 0.0) { return 0.0; }
        }
        return pow(x, e);
    }
    if (e == round(e)) {
        let m = pow(-x, e);
        if (e % 2.0 == 0.0) { return m; }
        return -m;
    }
    return bitcast<f32>(0x7fc00000u);
}

fn unary_f(x: f32) -> f32 {
    switch OP {
        case 0u: { return -x; }
        case 1u: { return exp(x); }
        case 2u: { return log(x); }
        case 3u: { return sqrt(x); }
        case 4u: { return max(x, 0.0); }
        case 5u: { return select(p.alpha * x, x, x > 0.0); }
        case 6u: { return sigmoid(x); }
        case 7u: { return tanh_safe(x); }
        case 8u: { return 0.5 * x * (1.0 + tanh_safe(SQRT_2_OVER_PI * (x + 0.044715 * x * x * x))); }
        case 9u: { return p.alpha * x + p.beta; }
        case 10u: { return pow_any(x, p.alpha); }
        default: { return x; }
    }
}

// d f(x) / dx
fn unary_df(x: f32) -> f32 {
    switch OP {
        case 0u: { return -1.0; }
        case 1u: { return exp(x); }
        case 2u: { return 1.0 / x; }
        case 3u: { return 0.5 / sqrt(x); }
        case 4u: { return select(0.0, 1.0, x > 0.0); }
        case 5u: { return select(p.alpha, 1.0, x > 0.0); }
        case 6u: { let s = sigmoid(x); return s * (1.0 - s); }
        case 7u: { let t = tanh_safe(x); return 1.0 - t * t; }
        case 8u: {
            let u = SQRT_2_OVER_PI * (x + 0.044715 * x * x * x);
            let t = tanh_safe(u);
            let du = SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * x * x);
            return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du;
        }
        case 9u: { return p.alpha; }
        case 10u: { return p.alpha * pow_any(x, p.alpha - 1.0); }
        default: { return 1.0; }
    }
}

fn binary_f(a: f32, b: f32) -> f32 {
    switch OP {
        case 0u: { return a + b; }
        case 1u: { return a - b; }
        case 2u: { return a * b; }
        case 3u: { return a / b; }
        case 4u: { return pow_any(a, b); }
        // binary cross-entropy from logits a with targets b, in the overflow-free form
        case 5u: { return max(a, 0.0) - a * b + log(1.0 + exp(-abs(a))); }
        default: { return a; }
    }
}

// d(a op b)/da (WHICH = 0) or d(a op b)/db (WHICH = 1)
fn binary_df(a: f32, b: f32) -> f32 {
    if (WHICH == 0u) {
        switch OP {
            case 0u: { return 1.0; }
            case 1u: { return 1.0; }
            case 2u: { return b; }
            case 3u: { return 1.0 / b; }
            case 4u: { return b * pow_any(a, b - 1.0); }
            case 5u: { return sigmoid(a) - b; }
            default: { return 0.0; }
        }
    }
    switch OP {
        case 0u: { return 1.0; }
        case 1u: { return -1.0; }
        case 2u: { return a; }
        case 3u: { return -a / (b * b); }
        case 4u: { return select(0.0, pow_any(a, b) * log(a), a > 0.0); }
        case 5u: { return -a; }
        default: { return 0.0; }
    }
}

@compute @workgroup_size(256)
fn unary(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.n) { return; }
    u_y[i] = unary_f(u_x[i]);
}

@compute @workgroup_size(256)
fn unary_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.n) { return; }
    ub_gx[i] = ub_gy[i] * unary_df(u_x[i]);
}

@compute @workgroup_size(256)
fn binary(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.n) { return; }
    let o = offsets(i);
    b_y[i] = binary_f(b_a[o.x], b_b[o.y]);
}

@compute @workgroup_size(256)
fn binary_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.n) { return; }
    let o = offsets(i);
    bb_g[i] = bb_gy[i] * binary_df(bb_a[o.x], bb_b[o.y]);
}

@compute @workgroup_size(256)
fn accumulate(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.n) { return; }
    acc_y[i] = acc_y[i] + u_x[i];
}

// ---- vec4 forms: 4 consecutive elements per invocation, one load per operand (p.n counts vec4s).
// llvmpipe pays per access, not per byte: a vec4 costs about what one f32 does.

fn unary4_f(x: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(unary_f(x.x), unary_f(x.y), unary_f(x.z), unary_f(x.w));
}

fn unary4_df(x: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(unary_df(x.x), unary_df(x.y), unary_df(x.z), unary_df(x.w));
}

@compute @workgroup_size(256)
fn unary4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.n) { return; }
    v_out2[i] = unary4_f(v_1[i]);
}

@compute @workgroup_size(256)
fn unary_backward4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.n) { return; }
    v_out3[i] = v_2[i] * unary4_df(v_1[i]);
}

// binary4, binary_backward4: 4 consecutive elements along the output's innermost (collapsed) dim,
// whose length is a multiple of 4; each operand either runs along it (A4 / B4 true: stride 1, one
// vec4 load) or is broadcast over it (stride 0: one value, splatted), so a bias or a per-row
// scale takes the vec4 form too. Its offsets come from the same walk as the f32 form's.
override A4: bool = true;
override B4: bool = true;

fn operand4_1(o: u32, along: bool) -> vec4<f32> {
    if (along) { return v_1[o / 4u]; }
    return vec4<f32>(v_1[o / 4u][o % 4u]);
}
fn operand4_2(o: u32, along: bool) -> vec4<f32> {
    if (along) { return v_2[o / 4u]; }
    return vec4<f32>(v_2[o / 4u][o % 4u]);
}
fn operand4_3(o: u32, along: bool) -> vec4<f32> {
    if (along) { return v_3[o / 4u]; }
    return vec4<f32>(v_3[o / 4u][o % 4u]);
}

@compute @workgroup_size(256)
fn binary4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.n) { return; }
    let o = offsets(4u * i);
    let a = operand4_1(o.x, A4);
    let b = operand4_2(o.y, B4);
    v_out3[i] = vec4<f32>(binary_f(a.x, b.x), binary_f(a.y, b.y), binary_f(a.z, b.z), binary_f(a.w, b.w));
}

@compute @workgroup_size(256)
fn binary_backward4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.n) { return; }
    let o = offsets(4u * i);
    let a = operand4_2(o.x, A4);
    let b = operand4_3(o.y, B4);
    v_out4[i] = v_1[i] * vec4<f32>(binary_df(a.x, b.x), binary_df(a.y, b.y), binary_df(a.z, b.z), binary_df(a.w, b.w));
}

@compute @workgroup_size(256)
fn accumulate4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.n) { return; }
    v_out2[i] = v_out2[i] + v_1[i];
}
