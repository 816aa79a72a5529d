// Counter-based random numbers: value i of the stream with 64-bit seed (seed_lo, seed_hi) is
//   Philox4x32-10(counter = (i / 4, 0, 0, 0), key = (seed_lo, seed_hi))[i % 4]   (i < 2^32)
// (Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2, 3"; passes TestU01 BigCrush;
// the generator of cuRAND / PyTorch on CUDA). A pure function of (seed, i): results do not depend
// on the dispatch layout and `ops::random::cpu` recomputes them bit for bit. WGSL has no
// 32 x 32 -> 64-bit multiply, so the high half is assembled from 16-bit partial products.
// From the raw u32 r:
//   uniform [0, 1):  (r >> 8) * 2^-24          uniform (0, 1]: ((r >> 8) + 1) * 2^-24
//   uniform(lo, hi): a + b * u[0,1) with a = lo, b = hi - lo
//   normal:          block (r0, r1, r2, r3) gives two Box-Muller pairs (r0, r1) and (r2, r3):
//                    rad = sqrt(-2 ln u1), u1 in (0, 1]; theta = pi * (2 u2 - 1) in [-pi, pi)
//                    (the range where GPU sin / cos are accurate); element 4b + 2j is
//                    a + b * rad * cos(theta), element 4b + 2j + 1 is a + b * rad * sin(theta)
//   dropout:         keep element i iff r >= threshold (= round(p * 2^32), computed on the host);
//                    y = keep ? x * scale : 0. The gradient is the same map of gy, recomputed.
//
// Bindings (group 0): 0 = Params (uniform); then per entry point
//   raw_u32:     1 out (u32 write)
//   uniform_f32: 1 out (f32 write)
//   normal_f32:  1 out (f32 write)
//   dropout:     1 x (read), 2 y (write); dropout4 the same as vec4s (a multiple of 4 elements)
// Workgroup: 256 x 1 x 1; one invocation per Philox block of 4 consecutive elements (so one
// Philox call feeds 4 outputs and a Box-Muller pair never straddles invocations). Blocks fold
// into y past 65535 groups: block index gid.x + gid.y * nwg.x * 256.

struct Params {
    n: u32,          // elements
    seed_lo: u32,
    seed_hi: u32,
    threshold: u32,  // dropout: keep iff r >= threshold
    a: f32,          // uniform: lo; normal: mean
    b: f32,          // uniform: hi - lo; normal: std; dropout: 1 / (1 - p)
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out_u32: array<u32>;
@group(0) @binding(1) var<storage, read_write> out_f32: array<f32>;
// dropout
@group(0) @binding(1) var<storage, read> d_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> d_y: array<f32>;
// dropout4 (a multiple of 4 elements: block b is vec4 b)
@group(0) @binding(1) var<storage, read> d_x4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> d_y4: array<vec4<f32>>;

const PHILOX_M0: u32 = 0xD2511F53u;
const PHILOX_M1: u32 = 0xCD9E8D57u;
const PHILOX_W0: u32 = 0x9E3779B9u;
const PHILOX_W1: u32 = 0xBB67AE85u;
const PI: f32 = 3.14159265358979;

// High 32 bits of the 64-bit product a * b.
fn mulhi(a: u32, b: u32) -> u32 {
    let a0 = a & 0xffffu;
    let a1 = a >> 16u;
    let b0 = b & 0xffffu;
    let b1 = b >> 16u;
    let p00 = a0 * b0;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let p11 = a1 * b1;
    // carry out of the low word: (p00 >> 16) + low halves of the cross terms, < 2^18
    let mid = (p00 >> 16u) + (p01 & 0xffffu) + (p10 & 0xffffu);
    return p11 + (p01 >> 16u) + (p10 >> 16u) + (mid >> 16u);
}

fn philox(block: u32) -> vec4<u32> {
    var c = vec4<u32>(block, 0u, 0u, 0u);
    var k = vec2<u32>(p.seed_lo, p.seed_hi);
    for (var r = 0u; r < 10u; r++) {
        if (r > 0u) {
            k = k + vec2<u32>(PHILOX_W0, PHILOX_W1);
        }
        let hi0 = mulhi(PHILOX_M0, c.x);
        let lo0 = PHILOX_M0 * c.x;
        let hi1 = mulhi(PHILOX_M1, c.z);
        let lo1 = PHILOX_M1 * c.z;
        c = vec4<u32>(hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0);
    }
    return c;
}

fn block_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 256u;
}

// [0, 1)
fn unit_co(r: u32) -> f32 {
    return f32(r >> 8u) * 5.9604644775390625e-8;
}

// (0, 1]
fn unit_oc(r: u32) -> f32 {
    return f32((r >> 8u) + 1u) * 5.9604644775390625e-8;
}

@compute @workgroup_size(256)
fn raw_u32(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let b = block_index(gid, nwg);
    let base = b * 4u;
    if (base >= p.n) { return; }
    let r = philox(b);
    for (var j = 0u; j < 4u; j++) {
        if (base + j < p.n) { out_u32[base + j] = r[j]; }
    }
}

@compute @workgroup_size(256)
fn uniform_f32(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let b = block_index(gid, nwg);
    let base = b * 4u;
    if (base >= p.n) { return; }
    let r = philox(b);
    for (var j = 0u; j < 4u; j++) {
        if (base + j < p.n) { out_f32[base + j] = p.a + p.b * unit_co(r[j]); }
    }
}

@compute @workgroup_size(256)
fn normal_f32(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let b = block_index(gid, nwg);
    let base = b * 4u;
    if (base >= p.n) { return; }
    let r = philox(b);
    for (var j = 0u; j < 2u; j++) {
        let rad = sqrt(-2.0 * log(unit_oc(r[2u * j])));
        let theta = PI * (2.0 * unit_co(r[2u * j + 1u]) - 1.0);
        let i = base + 2u * j;
        if (i < p.n) { out_f32[i] = p.a + p.b * rad * cos(theta); }
        if (i + 1u < p.n) { out_f32[i + 1u] = p.a + p.b * rad * sin(theta); }
    }
}

@compute @workgroup_size(256)
fn dropout(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let b = block_index(gid, nwg);
    let base = b * 4u;
    if (base >= p.n) { return; }
    let r = philox(b);
    for (var j = 0u; j < 4u; j++) {
        let i = base + j;
        if (i < p.n) { d_y[i] = select(0.0, d_x[i] * p.b, r[j] >= p.threshold); }
    }
}

// dropout for a multiple of 4 elements: the block's 4 values as one vec4 load and store (on
// llvmpipe a vec4 access costs about what an f32 one does). Same mask and values as dropout.
@compute @workgroup_size(256)
fn dropout4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let b = block_index(gid, nwg);
    if (b * 4u >= p.n) { return; }
    let keep = philox(b) >= vec4<u32>(p.threshold);
    d_y4[b] = select(vec4<f32>(0.0), d_x4[b] * p.b, keep);
}
