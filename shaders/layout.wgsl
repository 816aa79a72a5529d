// Layout: one strided copy that serves permute/transpose, slice, concat, broadcast and the
// scatter-into-a-region that slice's gradient needs. Bits are copied as u32, so it moves f32 and
// u32 tensors alike.
//   for every index (i_0 .. i_{ndim-1}) of `shape`:
//     dst[dst_off + sum_d i_d * dst_stride_d] = src[src_off + sum_d i_d * src_stride_d]
//
// Bindings (group 0): 0 = Params (uniform), 1 src (read), 2 dst (read_write).
// Workgroup: 256 x 1 x 1, one invocation per RUN copied elements (override RUN: 1, or 4 where the
// innermost dim is contiguous on both sides and a multiple of 4, so the index arithmetic is paid
// once per 4 elements); the grid folds into y past 65535 groups (flat index gid.x + gid.y * nwg.x
// * 256). p.n counts elements. copy_strided4: the same copy in vec4 units (every offset, outer
// stride and the innermost extent a multiple of 4, innermost contiguous; p.n counts vec4s): one
// access per 4 elements.
// pad_rows: rows of len = p.shape[0].x values shifted right by left = p.shape[0].z zero columns
// into rows of p.shape[0].y whole vec4s, zero elsewhere (the padded operands of the vec4
// kernels): one invocation per destination vec4 (p.n counts them), one division, no clear pass.

struct Params {
    n: u32,
    ndim: u32,
    src_off: u32,
    dst_off: u32,
    shape: array<vec4<u32>, 2>,
    ss: array<vec4<u32>, 2>,
    ds: array<vec4<u32>, 2>,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;

override RUN: u32 = 1u;
// The walk's dims (= p.ndim) as a pipeline constant: the compiler unrolls it and reads each shape
// and stride at a constant index, where a loop bound read from the buffer cost lavapipe 30-40%.
override NDIM: u32 = 1u;

// copy_strided4: vec4 views of the same buffers
@group(0) @binding(1) var<storage, read> src4: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> dst4: array<vec4<u32>>;

// The source and destination offsets of element i of `shape`. The outermost index is what
// remains after the inner dims.
fn offsets(i: u32) -> vec2<u32> {
    var rem = i;
    var s = p.src_off;
    var d = p.dst_off;
    for (var k = NDIM - 1u; k > 0u; k--) {
        let n = p.shape[k / 4u][k % 4u];
        let idx = rem % n;
        rem = rem / n;
        s += idx * p.ss[k / 4u][k % 4u];
        d += idx * p.ds[k / 4u][k % 4u];
    }
    return vec2<u32>(s + rem * p.ss[0].x, d + rem * p.ds[0].x);
}

@compute @workgroup_size(256)
fn copy_strided(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = (gid.x + gid.y * nwg.x * 256u) * RUN;
    if (i >= p.n) { return; }
    let o = offsets(i);
    for (var e = 0u; e < RUN; e++) {
        dst[o.y + e] = src[o.x + e];
    }
}

@compute @workgroup_size(256)
fn copy_strided4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= p.n) { return; }
    let o = offsets(i);
    dst4[o.y] = src4[o.x];
}

@compute @workgroup_size(256)
fn pad_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= p.n) { return; }
    let len = p.shape[0].x;
    let vecs = p.shape[0].y;
    let left = p.shape[0].z;
    let row = (i / vecs) * len;
    let j0 = (i % vecs) * 4u;
    var v: vec4<u32>;
    for (var t = 0u; t < 4u; t++) {
        // Column j of the destination holds column j - left of the source where that exists;
        // the load is clamped into the row so it never leaves the buffer.
        let j = j0 + t;
        let inside = j >= left && j - left < len;
        v[t] = select(0u, src[row + min(j - left, len - 1u)], inside);
    }
    dst4[i] = v;
}
