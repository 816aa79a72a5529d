// Device ceiling probes for the benchmarks.
// fma_peak: arithmetic throughput with no memory traffic. Each invocation runs 8 independent multiply-add chains x <- fma(x, a, b) for `iters` rounds
// (independent chains keep the pipelines full; an explicit fma because drivers need not fuse
// x * a + b: llvmpipe's probe read 1.5x lower without it), then writes the sum of the chains once.
//   y[i] = sum_c chain_c(x0 = i * 1e-6 + c * 1e-3) after `iters` rounds
// copy_vec4: memory bandwidth as kernels see it, dst[i] = src[i] over vec4s (a driver's buffer
//   copy may take another path: on an H200 it moved half what the reductions read).
//
// Bindings (group 0): 0 = Params (uniform); fma_peak: 1 y (read_write); copy_vec4: 1 src (read),
//   2 dst (read_write).
// Workgroup: 256 x 1 x 1, one invocation per output element (a vec4 for copy_vec4), grid folded
// into y past 65535 groups.

struct Params {
    n: u32,
    iters: u32,
    a: f32,
    b: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<f32>>;

@compute @workgroup_size(256)
fn fma_peak(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= p.n) { return; }
    let x0 = f32(i) * 1e-6;
    var c0 = vec4<f32>(x0, x0 + 1e-3, x0 + 2e-3, x0 + 3e-3);
    var c1 = c0 + vec4<f32>(4e-3);
    let a = vec4<f32>(p.a);
    let b = vec4<f32>(p.b);
    for (var k = 0u; k < p.iters; k++) {
        c0 = fma(c0, a, b);
        c1 = fma(c1, a, b);
    }
    y[i] = dot(c0 + c1, vec4<f32>(1.0));
}

@compute @workgroup_size(256)
fn copy_vec4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= p.n) { return; }
    dst[i] = src[i];
}
