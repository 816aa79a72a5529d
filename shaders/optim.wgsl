// Optimizer updates, in place on the parameter and its state, and gradient clipping by global
// norm without a readback. Every update reads the clip factor from a storage buffer
// (clip[p.scale_at]), so clipping is fused into the update: no extra pass over the gradients.
//   sgd:          g' = g * s + wd * p;            p -= lr * g'
//   sgd_momentum: g' = g * s + wd * p;            b = momentum * b + g';  p -= lr * b
//   adam:         g' = g * s + l2 * p;            m = b1 m + (1 - b1) g';  v = b2 v + (1 - b2) g'^2
//                 p = decay * p - step_size * m / (sqrt(v) / bc2_sqrt + eps)
//                 (Adam: l2 = wd, decay = 1; AdamW: l2 = 0, decay = 1 - lr wd;
//                  step_size = lr / (1 - b1^t), bc2_sqrt = sqrt(1 - b2^t), both from the host in f64)
//   put_slot:     sums[slot] = x[0]           (gathers per-parameter sums of squares)
//   clip_scale:   norm = sqrt(sum of sums[0..count]); out = [norm, min(1, max_norm / (norm + 1e-6))]
//
// Bindings (group 0): 0 = Params (uniform); then per entry point
//   sgd:          1 p (read_write), 2 g (read), 3 clip (read)
//   sgd_momentum: 1 p (read_write), 2 g (read), 3 b (read_write), 4 clip (read)
//   adam:         1 p (read_write), 2 g (read), 3 m (read_write), 4 v (read_write), 5 clip (read)
//   adam4:        adam on whole vec4s (a multiple of 4 elements; p.n counts vec4s), same bindings
//   adam4_multi:  adam4 on up to 4 parameters in one dispatch (adapters that bind 17 storage
//                 buffers): slot k has bindings 1 + 4k .. 4 + 4k (param, grad, m, v), its vec4s
//                 are the flat indices p.ends[k - 1] .. p.ends[k] (from 0; an unused slot's range
//                 is empty) and its bias corrections are p.ss[k], p.bc[k] (each parameter keeps
//                 its own step count); 17 clip (read). One dispatch where adam4 took four.
//   put_slot:     1 x (read), 2 sums (read_write)
//   clip_scale:   1 sums (read), 2 out (read_write, 2 elements)
// Workgroup: sgd/sgd_momentum/adam: 256 x 1 x 1, one invocation per parameter element (per vec4
// in adam4, per vec4 of all slots in adam4_multi), the grid
// folded into y past 65535 groups (flat index gid.x + gid.y * nwg.x * 256). put_slot and
// clip_scale: a single invocation (workgroup 1 x 1 x 1); clip_scale sums the slots in a fixed
// order, so the norm is deterministic (no atomics anywhere).

struct Params {
    n: u32,          // elements of the parameter
    scale_at: u32,   // index of the gradient factor in `clip`
    slot: u32,       // put_slot: destination slot
    count: u32,      // clip_scale: number of slots
    lr: f32,
    momentum: f32,
    wd: f32,         // sgd: L2 weight decay folded into the gradient
    max_norm: f32,   // clip_scale
    beta1: f32,
    beta2: f32,
    eps: f32,
    l2: f32,         // adam: weight decay added to the gradient (0 for AdamW)
    decay: f32,      // adam: decoupled decay factor 1 - lr wd (1 for Adam)
    step_size: f32,  // adam: lr / (1 - beta1^t)
    bc2_sqrt: f32,   // adam: sqrt(1 - beta2^t)
    _pad: f32,
    ends: vec4<u32>, // adam4_multi: end of each slot's vec4s in the flat index
    ss: vec4<f32>,   // adam4_multi: each slot's step_size
    bc: vec4<f32>,   // adam4_multi: each slot's bc2_sqrt
}

@group(0) @binding(0) var<uniform> p: Params;

// sgd, sgd_momentum, adam: the parameter and its gradient
@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
// sgd
@group(0) @binding(3) var<storage, read> sgd_clip: array<f32>;
// sgd_momentum
@group(0) @binding(3) var<storage, read_write> mom_buf: array<f32>;
@group(0) @binding(4) var<storage, read> mom_clip: array<f32>;
// adam
@group(0) @binding(3) var<storage, read_write> adam_m: array<f32>;
@group(0) @binding(4) var<storage, read_write> adam_v: array<f32>;
@group(0) @binding(5) var<storage, read> adam_clip: array<f32>;
// put_slot
@group(0) @binding(1) var<storage, read> slot_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> slot_sums: array<f32>;
// clip_scale
@group(0) @binding(1) var<storage, read> cs_sums: array<f32>;
@group(0) @binding(2) var<storage, read_write> cs_out: array<f32>;

// adam4: vec4 views of adam's buffers
@group(0) @binding(1) var<storage, read_write> param4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> grad4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> adam_m4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> adam_v4: array<vec4<f32>>;

// adam4_multi: slots 1..3 (slot 0 is adam4's bindings 1..4) and the clip factor
@group(0) @binding(5) var<storage, read_write> param4_1: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> grad4_1: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> adam_m4_1: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read_write> adam_v4_1: array<vec4<f32>>;
@group(0) @binding(9) var<storage, read_write> param4_2: array<vec4<f32>>;
@group(0) @binding(10) var<storage, read> grad4_2: array<vec4<f32>>;
@group(0) @binding(11) var<storage, read_write> adam_m4_2: array<vec4<f32>>;
@group(0) @binding(12) var<storage, read_write> adam_v4_2: array<vec4<f32>>;
@group(0) @binding(13) var<storage, read_write> param4_3: array<vec4<f32>>;
@group(0) @binding(14) var<storage, read> grad4_3: array<vec4<f32>>;
@group(0) @binding(15) var<storage, read_write> adam_m4_3: array<vec4<f32>>;
@group(0) @binding(16) var<storage, read_write> adam_v4_3: array<vec4<f32>>;
@group(0) @binding(17) var<storage, read> multi_clip: array<f32>;

fn flat(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 256u;
}

@compute @workgroup_size(256)
fn sgd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.n) { return; }
    let w = param[i];
    let g = grad[i] * sgd_clip[p.scale_at] + p.wd * w;
    param[i] = w - p.lr * g;
}

@compute @workgroup_size(256)
fn sgd_momentum(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.n) { return; }
    let w = param[i];
    let g = grad[i] * mom_clip[p.scale_at] + p.wd * w;
    // A zero buffer on the first step gives b = g, as PyTorch's clone of the first gradient.
    let b = p.momentum * mom_buf[i] + g;
    mom_buf[i] = b;
    param[i] = w - p.lr * b;
}

@compute @workgroup_size(256)
fn adam(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.n) { return; }
    let w = param[i];
    let g = grad[i] * adam_clip[p.scale_at] + p.l2 * w;
    let m = p.beta1 * adam_m[i] + (1.0 - p.beta1) * g;
    let v = p.beta2 * adam_v[i] + (1.0 - p.beta2) * g * g;
    adam_m[i] = m;
    adam_v[i] = v;
    // PyTorch's order: the decoupled decay first, then the Adam step from the decayed weight.
    param[i] = p.decay * w - p.step_size * m / (sqrt(v) / p.bc2_sqrt + p.eps);
}

// One Adam update of 4 elements: weight w, raw gradient gr (times the clip factor `scale`),
// moments m0, v0; the bias corrections of the parameter's step count.
struct AdamOut {
    w: vec4<f32>,
    m: vec4<f32>,
    v: vec4<f32>,
}
fn adam_update(w: vec4<f32>, gr: vec4<f32>, m0: vec4<f32>, v0: vec4<f32>, scale: f32, step_size: f32, bc2_sqrt: f32) -> AdamOut {
    let g = gr * scale + p.l2 * w;
    let m = p.beta1 * m0 + (1.0 - p.beta1) * g;
    let v = p.beta2 * v0 + (1.0 - p.beta2) * g * g;
    return AdamOut(p.decay * w - step_size * m / (sqrt(v) / bc2_sqrt + p.eps), m, v);
}

@compute @workgroup_size(256)
fn adam4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.n) { return; }
    let r = adam_update(param4[i], grad4[i], adam_m4[i], adam_v4[i], adam_clip[p.scale_at], p.step_size, p.bc2_sqrt);
    adam_m4[i] = r.m;
    adam_v4[i] = r.v;
    param4[i] = r.w;
}

@compute @workgroup_size(256)
fn adam4_multi(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    let s = multi_clip[p.scale_at];
    if (i < p.ends.x) {
        let r = adam_update(param4[i], grad4[i], adam_m4[i], adam_v4[i], s, p.ss.x, p.bc.x);
        adam_m4[i] = r.m;
        adam_v4[i] = r.v;
        param4[i] = r.w;
    } else if (i < p.ends.y) {
        let j = i - p.ends.x;
        let r = adam_update(param4_1[j], grad4_1[j], adam_m4_1[j], adam_v4_1[j], s, p.ss.y, p.bc.y);
        adam_m4_1[j] = r.m;
        adam_v4_1[j] = r.v;
        param4_1[j] = r.w;
    } else if (i < p.ends.z) {
        let j = i - p.ends.y;
        let r = adam_update(param4_2[j], grad4_2[j], adam_m4_2[j], adam_v4_2[j], s, p.ss.z, p.bc.z);
        adam_m4_2[j] = r.m;
        adam_v4_2[j] = r.v;
        param4_2[j] = r.w;
    } else if (i < p.ends.w) {
        let j = i - p.ends.z;
        let r = adam_update(param4_3[j], grad4_3[j], adam_m4_3[j], adam_v4_3[j], s, p.ss.w, p.bc.w);
        adam_m4_3[j] = r.m;
        adam_v4_3[j] = r.v;
        param4_3[j] = r.w;
    }
}

@compute @workgroup_size(1)
fn put_slot() {
    slot_sums[p.slot] = slot_x[0];
}

@compute @workgroup_size(1)
fn clip_scale() {
    var sum = 0.0;
    for (var k = 0u; k < p.count; k++) {
        sum += cs_sums[k];
    }
    let norm = sqrt(sum);
    var scale = min(1.0, p.max_norm / (norm + 1e-6));
    // min() may drop a NaN; keep it so a non-finite norm poisons the update visibly.
    if (norm != norm) { scale = norm; }
    cs_out[0] = norm;
    cs_out[1] = scale;
}
