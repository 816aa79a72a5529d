// Operand packing for the tensor-core matmul (matmul_coop.wgsl, mm_coop16p): a batch of strided
// f32 matrices rounded to f16 in a zero-padded row-major layout,
//   dst[b, r, c] = f16(src[b * s_b + r * s_r + c * s_c])  for r < rows, c < cols,
//   dst[b, r, c] = 0                                       for rows <= r < rows_pad or cols <= c < cols_pad,
// two halves per u32 (pack2x16float: column c in the low 16 bits of word c / 2), so the matmul
// reads whole 16-byte rows of 8 halves without bounds checks or conversions. Values outside f16's
// range are undefined (as in mm_coop16's conversion); cols_pad is a multiple of 8.
//
// Bindings (group 0): 0 = Params (uniform), 1 src (f32, read), 2 dst (vec4<u32>, write).
// Workgroup: 256 x 1 x 1, one invocation per 8 halves of dst (one vec4<u32>); the grid folds into
// y past 65535 groups, so the flat index is gid.x + gid.y * nwg.x * 256.

struct Params {
    rows: u32,
    cols: u32,
    rows_pad: u32,
    cols_pad: u32,
    batch: u32,
    s_b: u32,
    s_r: u32,
    s_c: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<u32>>;

// Element (b, r, c) of the source, 0 in the padding (never read there).
fn at(b: u32, r: u32, c: u32) -> f32 {
    if (r < p.rows && c < p.cols) { return src[b * p.s_b + r * p.s_r + c * p.s_c]; }
    return 0.0;
}

fn pair(b: u32, r: u32, c: u32) -> u32 {
    return pack2x16float(vec2<f32>(at(b, r, c), at(b, r, c + 1u)));
}

@compute @workgroup_size(256)
fn pack_f16(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let q = gid.x + gid.y * nwg.x * 256u;
    let per_row = p.cols_pad / 8u;
    let per_mat = p.rows_pad * per_row;
    if (q >= p.batch * per_mat) { return; }
    let b = q / per_mat;
    let r = (q % per_mat) / per_row;
    let c = (q % per_row) * 8u;
    dst[q] = vec4<u32>(pair(b, r, c), pair(b, r, c + 2u), pair(b, r, c + 4u), pair(b, r, c + 6u));
}
