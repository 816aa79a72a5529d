//! Batched matmul (`shaders/matmul.wgsl`): `[.., M, K] x [.., K, N] -> [.., M, N]`, either operand
//! transposed by strides (no copy), a missing or size-1 batch broadcast. Two cores: a barrier-free
//! register-blocked one for CPU adapters and a shared-memory tiled one for GPUs.

use crate::autodiff::Var;
use crate::device::{groups_1d, AdapterClass, WG};
use crate::error::{Error, Result};
use crate::ops::reduce::{reduce, sum_to, Reduce};
use crate::tensor::{DType, Tensor};

crate::shader!(SHADER = "matmul");
crate::shader!(COOP = "matmul_coop");
crate::shader!(PACK = "pack_f16");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    batch: u32,
    sa_b: u32,
    sa_m: u32,
    sa_k: u32,
    sb_b: u32,
    sb_k: u32,
    sb_n: u32,
    _p: [u32; 2],
}

/// Which kernel computes the product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// Register-blocked, no shared memory, no barriers (CPU rasterisers).
    Blocked,
    /// The same with 8 x 8 blocks per invocation, 64 x 64 per workgroup.
    Blocked8,
    /// The 8 x 8 core on vec4 operands (`mm_blocked8v`, where [`vec4_form`] holds; the scalar
    /// core otherwise), in workgroups shaped to the product: narrow ones keep every lane busy.
    Blocked8V,
    /// Shared-memory tiles of 64 x 64, 4 x 4 per invocation (GPUs, small products).
    Tiled,
    /// Shared-memory tiles of 128 x 128, 8 x 8 per invocation (GPUs, large products).
    Tiled128,
    /// Mixed precision on tensor cores: operands rounded to f16, f32 accumulation, 128 x 128
    /// tiles (shaders/matmul_coop.wgsl). Opt-in only, where `Device::has_coop16`.
    Coop16,
    /// As `Coop16`, on operands first packed to zero-padded f16 (shaders/pack_f16.wgsl, two
    /// extra dispatches): the product's inner loop then loads aligned halves without bounds
    /// checks or conversions. What mixed precision uses for products of at least 2^31
    /// multiply-adds, where the packing pays for itself (docs/PERFORMANCE.md).
    Coop16Packed,
}

impl Variant {
    /// The kernel for a `batch x m x n` result over `k` on this adapter class; `vec4` says whether
    /// the 8 x 8 core can take its vec4 form ([`vec4_form`]). On GPUs the 128-tile core
    /// once both result dims fill a tile and there are at least 64 such tiles (where it beat the
    /// 64-tile core at every size measured: docs/PERFORMANCE.md); otherwise the 64-tile core,
    /// whose 4x more workgroups keep a large GPU busy on thin products.
    pub fn for_size(c: AdapterClass, m: usize, n: usize, k: usize, batch: usize, vec4: bool) -> Variant {
        match c {
            // On lavapipe the barrier-free 8 x 8 core in its vec4 form beats the 128-tile core at
            // every size measured (512 cubed: 8.7 vs 6.3 GFLOP/s, 4096x64x128: 7.2 vs 5.8); without
            // it the 128-tile core wins once both result dims fill its tiles and K is not tiny
            // (255 cubed: 5.7 vs 7.7 ms; 256x4x255: 0.41 vs 0.50; 128x1x1568: 1.4 vs 0.8), the
            // scalar 8 x 8 core below that, its workgroup narrowed to the columns there are (N = 1:
            // 128x1568x1 0.42 ms where the 4 x 4 core takes 2.7, 4096x256x4 4.4 vs 17.6), and the
            // 4 x 4 core where fewer than 8 rows leave most of an 8 x 8 block empty (1x1568x128:
            // 0.75 vs 1.6 ms).
            AdapterClass::Cpu if m >= 8 && n >= 8 && vec4 => Variant::Blocked8V,
            AdapterClass::Cpu if m >= 128 && n >= 128 && k >= 4 => Variant::Tiled128,
            AdapterClass::Cpu if m >= 8 => Variant::Blocked8,
            AdapterClass::Cpu => Variant::Blocked,
            AdapterClass::Gpu if m >= 128 && n >= 128 && m.div_ceil(128) * n.div_ceil(128) * batch >= 64 => {
                Variant::Tiled128
            }
            AdapterClass::Gpu => Variant::Tiled,
        }
    }
}

/// Whether [`Variant::Blocked8V`] takes its vec4 core (`mm_blocked8v`) for `op(A) [m, k] x op(B)
/// [k, n]`: every row it reads or writes starts on a multiple of 4 — C's (N), a k-contiguous
/// operand's (K: A as stored, B transposed), a transposed A's (M).
pub fn vec4_form(m: usize, k: usize, n: usize, trans_a: bool, trans_b: bool) -> bool {
    n.is_multiple_of(4)
        && (if trans_a { m.is_multiple_of(4) } else { k.is_multiple_of(4) })
        && (!trans_b || k.is_multiple_of(4))
}

/// Splits a shape into (batch, rows, cols) of the matrix as stored.
fn as_batched(op: &'static str, s: &[usize]) -> Result<(usize, usize, usize)> {
    match s.len() {
        0 | 1 => Err(Error::shape(op, format!("needs matrices of at least 2 dims, got {s:?}"))),
        _ => Ok((s[..s.len() - 2].iter().product(), s[s.len() - 2], s[s.len() - 1])),
    }
}

/// `op(A) x op(B)` where op transposes the last two dims when asked, on the adapter's default core.
pub fn matmul(a: &Tensor, b: &Tensor, trans_a: bool, trans_b: bool) -> Result<Tensor> {
    matmul_impl(Choice::Default, a, b, trans_a, trans_b)
}

/// As [`matmul`] with an explicit kernel (tests check every one on every adapter).
pub fn matmul_with(v: Variant, a: &Tensor, b: &Tensor, trans_a: bool, trans_b: bool) -> Result<Tensor> {
    matmul_impl(Choice::Fixed(v), a, b, trans_a, trans_b)
}

/// As [`matmul`] on f16 tensor cores with f32 accumulation (mixed precision): `Coop16Packed`
/// for products of at least 2^31 multiply-adds, `Coop16` below.
pub fn matmul_mixed(a: &Tensor, b: &Tensor, trans_a: bool, trans_b: bool) -> Result<Tensor> {
    matmul_impl(Choice::Mixed, a, b, trans_a, trans_b)
}

/// How [`matmul_impl`] picks its kernel.
#[derive(Clone, Copy)]
enum Choice {
    Default,
    Mixed,
    Fixed(Variant),
}

fn matmul_impl(choice: Choice, a: &Tensor, b: &Tensor, trans_a: bool, trans_b: bool) -> Result<Tensor> {
    a.expect("matmul", DType::F32)?;
    b.expect("matmul", DType::F32)?;
    let (ba, ra, ca) = as_batched("matmul", a.shape())?;
    let (bb, rb, cb) = as_batched("matmul", b.shape())?;
    let (m, ka) = if trans_a { (ca, ra) } else { (ra, ca) };
    let (kb, n) = if trans_b { (cb, rb) } else { (rb, cb) };
    let lead_a = &a.shape()[..a.dims() - 2];
    let lead_b = &b.shape()[..b.dims() - 2];
    let lead = if ba >= bb { lead_a } else { lead_b };
    if ka != kb
        || (ba != bb && ba != 1 && bb != 1)
        || (ba == bb && lead_a != lead_b && !lead_a.is_empty() && !lead_b.is_empty())
    {
        return Err(Error::shape(
            "matmul",
            format!(
                "cannot multiply {:?}{} by {:?}{}",
                a.shape(),
                if trans_a { "ᵀ" } else { "" },
                b.shape(),
                if trans_b { "ᵀ" } else { "" }
            ),
        ));
    }
    let mut shape = lead.to_vec();
    shape.extend([m, n]);
    // A batch of row-major A's times one shared B is one product with the batch folded into M
    // (the same memory on both sides): one tall matrix fills the large cores' tiles where a
    // batch of short ones does not (a linear layer on [batch, tokens, features]).
    let (ba, ra, m) = if bb == 1 && ba > 1 && !trans_a { (1, ba * ra, ba * m) } else { (ba, ra, m) };
    let batch = ba.max(bb);
    if batch > 65535 {
        return Err(Error::shape("matmul", format!("batch of {batch} exceeds 65535")));
    }
    let dev = a.device();
    let c = Tensor::empty(dev, "matmul", &shape, DType::F32)?;
    // Strides of op(A)[b, m, k] and op(B)[b, k, n] into the stored row-major matrices.
    let (sa_m, sa_k) = if trans_a { (1, ca) } else { (ca, 1) };
    let (sb_k, sb_n) = if trans_b { (1, cb) } else { (cb, 1) };
    let mut p = Params {
        m: m as u32,
        n: n as u32,
        k: ka as u32,
        batch: batch as u32,
        sa_b: if ba == 1 { 0 } else { (ra * ca) as u32 },
        sa_m: sa_m as u32,
        sa_k: sa_k as u32,
        sb_b: if bb == 1 { 0 } else { (rb * cb) as u32 },
        sb_k: sb_k as u32,
        sb_n: sb_n as u32,
        _p: [0; 2],
    };
    if m == 0 || n == 0 {
        return Ok(c);
    }
    if ka == 0 {
        dev.clear(c.buffer(), c.bytes());
        return Ok(c);
    }
    let vec4 = vec4_form(m, ka, n, trans_a, trans_b);
    let v = match choice {
        Choice::Default => Variant::for_size(dev.class(), m, n, ka, batch, vec4),
        Choice::Mixed if (m * n) as u64 * ka as u64 >= 1 << 31 => Variant::Coop16Packed,
        Choice::Mixed => Variant::Coop16,
        Choice::Fixed(v) => v,
    };
    if v == Variant::Coop16Packed && dev.has_coop16() {
        return coop16_packed(a, b, &p, ba, bb, c);
    }
    let (shader, mut entry, tile) = match v {
        Variant::Blocked => (&SHADER, "mm_blocked", 32),
        Variant::Blocked8 | Variant::Blocked8V => (&SHADER, "mm_blocked8", 64),
        Variant::Tiled => (&SHADER, "mm_tiled", 64),
        Variant::Tiled128 => (&SHADER, "mm_tiled128", 128),
        Variant::Coop16 if dev.has_coop16() => (&COOP, "mm_coop16", 128),
        Variant::Coop16 | Variant::Coop16Packed => {
            return Err(Error::Gpu(format!(
                "matmul: {} has no 16x16 f16 cooperative matrices with 32-wide subgroups",
                dev.info().name
            )))
        }
    };
    // The grid for `batch` products: tiles of the core, or for the 8 x 8 cores a workgroup shape
    // with as many column blocks as N needs (up to 8), then row blocks, then batch items, 64
    // blocks in all (see block8 in the shader): no invocation idles on a column past N.
    let (wx, wy) = if matches!(v, Variant::Blocked8 | Variant::Blocked8V) {
        let wx = n.div_ceil(8).next_power_of_two().min(8);
        (wx, m.div_ceil(8).next_power_of_two().min(64 / wx))
    } else {
        (tile / 8, tile / 8)
    };
    let grid = |batch: usize| {
        let wz = if matches!(v, Variant::Blocked8 | Variant::Blocked8V) { 64 / (wx * wy) } else { 1 };
        [n.div_ceil(8 * wx) as u32, m.div_ceil(8 * wy) as u32, batch.div_ceil(wz) as u32]
    };
    let mut constants = Vec::new();
    if matches!(v, Variant::Blocked8 | Variant::Blocked8V) {
        constants.extend([("WX", wx as f64), ("WY", wy as f64)]);
        if v == Variant::Blocked8V && vec4 {
            // Its vec4 form where the rows allow (`vec4_form`), told each operand's layout.
            entry = "mm_blocked8v";
            constants.extend([("A_KC", if trans_a { 0.0 } else { 1.0 }), ("B_KC", if trans_b { 1.0 } else { 0.0 })]);
        }
    }
    let tiles = grid(1);
    if tiles[0] > 65535 || tiles[1] > 65535 {
        return Err(Error::shape("matmul", format!("result {m} x {n} exceeds the dispatch grid")));
    }
    let splits = if batch == 1 && v != Variant::Coop16 { split_k(dev.class(), tiles[0] * tiles[1], ka) } else { 1 };
    if splits == 1 {
        dev.dispatch(shader, entry, &constants, bytemuck::bytes_of(&p), &[a.bind(), b.bind(), c.bind()], grid(batch));
        return Ok(c);
    }
    // Split K: part s multiplies the s-th run of K / splits k's (a batch whose items start
    // that many k's apart), then the parts are summed in order (deterministic).
    let kc = ka / splits;
    (p.k, p.batch, p.sa_b, p.sb_b) = (kc as u32, splits as u32, kc as u32 * p.sa_k, kc as u32 * p.sb_k);
    let part = Tensor::empty(dev, "matmul", &[splits, m, n], DType::F32)?;
    dev.dispatch(shader, entry, &constants, bytemuck::bytes_of(&p), &[a.bind(), b.bind(), part.bind()], grid(splits));
    reduce(&part, 0, Reduce::Sum, false)?.reshape(c.shape())
}

/// Parts to split K into for a single product of `tiles` workgroups: enough for about 16
/// workgroups on CPU adapters (lavapipe runs one per core at a time) and 128 on GPUs, each part
/// at least 128 k's long and a multiple of 4 (the vec4 core's k-contiguous rows); 1 when the
/// product already fills the device or K is short.
pub fn split_k(class: AdapterClass, tiles: u32, k: usize) -> usize {
    let target = match class {
        AdapterClass::Cpu => 16,
        AdapterClass::Gpu => 128,
    };
    let mut s = (target as usize).div_ceil(tiles.max(1) as usize).next_power_of_two();
    while s > 1 && (!k.is_multiple_of(4 * s) || k / s < 128) {
        s /= 2;
    }
    s
}

/// `mm_coop16p` for the product `p` describes (A's batch `ba`, B's `bb`) into `c`: both
/// operands packed to zero-padded f16 (M and N to 128, K to 32), then the tensor-core kernel.
fn coop16_packed(a: &Tensor, b: &Tensor, p: &Params, ba: usize, bb: usize, c: Tensor) -> Result<Tensor> {
    let (m, n, k) = (p.m as usize, p.n as usize, p.k as usize);
    let (mp, np, kp) = (m.next_multiple_of(128), n.next_multiple_of(128), k.next_multiple_of(32));
    let ap = pack_strided(a, [ba, m, k], [p.sa_b, p.sa_m, p.sa_k], [mp, kp])?;
    let bp = pack_strided(b, [bb, k, n], [p.sb_b, p.sb_k, p.sb_n], [kp, np])?;
    // Strides in vec4<f16> units (4 halves) of the packed, row-major operands.
    let q = Params {
        k: kp as u32,
        sa_b: if ba == 1 { 0 } else { (mp * kp / 4) as u32 },
        sa_m: (kp / 4) as u32,
        sa_k: 0,
        sb_b: if bb == 1 { 0 } else { (kp * np / 4) as u32 },
        sb_k: (np / 4) as u32,
        sb_n: 0,
        ..*p
    };
    let groups = [(np / 128) as u32, (mp / 128) as u32, p.batch];
    if groups[0] > 65535 || groups[1] > 65535 {
        return Err(Error::shape("matmul", format!("result {m} x {n} exceeds the dispatch grid")));
    }
    let dev = a.device();
    dev.dispatch(&COOP, "mm_coop16p", &[], bytemuck::bytes_of(&q), &[ap.bind(), bp.bind(), c.bind()], groups);
    Ok(c)
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct PackParams {
    rows: u32,
    cols: u32,
    rows_pad: u32,
    cols_pad: u32,
    batch: u32,
    s_b: u32,
    s_r: u32,
    s_c: u32,
}

/// Packs `op(x)` — the last two dims of `x: [.., R, C]`, transposed when `trans` — to f16 pairs
/// (shaders/pack_f16.wgsl) as a u32 tensor `[batch, rows_pad, cols_pad / 2]` with rows and
/// columns zero-padded to multiples of `pad = (row multiple, column multiple)` (the column
/// multiple a multiple of 8): the operand format of `Variant::Coop16Packed`.
pub fn pack_f16(x: &Tensor, trans: bool, pad: (usize, usize)) -> Result<Tensor> {
    x.expect("pack_f16", DType::F32)?;
    let (batch, r, c) = as_batched("pack_f16", x.shape())?;
    if pad.0 == 0 || pad.1 == 0 || !pad.1.is_multiple_of(8) {
        return Err(Error::shape(
            "pack_f16",
            format!("padding {pad:?}: the column multiple must be a positive multiple of 8"),
        ));
    }
    let (rows, cols, s_r, s_c) = if trans { (c, r, 1, c) } else { (r, c, c, 1) };
    let strides = [if batch == 1 { 0 } else { (r * c) as u32 }, s_r as u32, s_c as u32];
    pack_strided(x, [batch, rows, cols], strides, [rows.next_multiple_of(pad.0), cols.next_multiple_of(pad.1)])
}

/// The pack of `x[b * s_b + r * s_r + c * s_c]` for `[batch, rows, cols]` into `[batch, pad]`.
fn pack_strided(x: &Tensor, dims: [usize; 3], strides: [u32; 3], pad: [usize; 2]) -> Result<Tensor> {
    let [batch, rows, cols] = dims;
    let out = Tensor::empty(x.device(), "pack_f16", &[batch, pad[0], pad[1] / 2], DType::U32)?;
    let p = PackParams {
        rows: rows as u32,
        cols: cols as u32,
        rows_pad: pad[0] as u32,
        cols_pad: pad[1] as u32,
        batch: batch as u32,
        s_b: strides[0],
        s_r: strides[1],
        s_c: strides[2],
    };
    let groups = groups_1d(batch * pad[0] * pad[1] / 8, WG);
    x.device().dispatch(&PACK, "pack_f16", &[], bytemuck::bytes_of(&p), &[x.bind(), out.bind()], groups);
    Ok(out)
}

impl Var {
    /// `self x other` (batched, broadcasting a missing batch).
    /// Local gradients: dA = dC x Bᵀ, dB = Aᵀ x dC, summed over a broadcast batch.
    pub fn matmul(&self, other: &Var) -> Result<Var> {
        self.matmul_t(other, false, false)
    }

    /// `op(self) x op(other)` with optional transposes of the last two dims.
    pub fn matmul_t(&self, other: &Var, trans_a: bool, trans_b: bool) -> Result<Var> {
        let (a, b) = (self.value().clone(), other.value().clone());
        // Forward on f16 tensor cores when the device opted in to mixed precision; the backward
        // products stay f32.
        let c = if a.device().mixed_precision() {
            matmul_mixed(&a, &b, trans_a, trans_b)?
        } else {
            matmul(&a, &b, trans_a, trans_b)?
        };
        Ok(self.tape().op(c, &[self, other], move |gc| {
            // d op(A) = dC x op(B)ᵀ; if A was stored transposed, dA = (d op(A))ᵀ = op(B) x dCᵀ.
            let ga = if trans_a { matmul(&b, gc, trans_b, true)? } else { matmul(gc, &b, false, !trans_b)? };
            // A B shared by a batch of row-major A's (a linear layer on [batch, tokens, features]):
            // its gradient, the sum over the batch, is one product over the stacked rows.
            let (ra, rb) = (a.dims(), b.dims());
            let shared = !trans_a && ra > 2 && b.shape()[..rb - 2].iter().product::<usize>() == 1;
            let (a2, g2) = if shared {
                let rows = a.numel() / a.shape()[ra - 1];
                (a.reshape(&[rows, a.shape()[ra - 1]])?, gc.reshape(&[rows, gc.shape()[gc.dims() - 1]])?)
            } else {
                (a.clone(), gc.clone())
            };
            let gb = if trans_b { matmul(&g2, &a2, true, trans_a)? } else { matmul(&a2, &g2, !trans_a, false)? };
            let gb = if shared { gb.reshape(b.shape())? } else { reduce_batch(gb, b.shape())? };
            Ok(vec![Some(reduce_batch(ga, a.shape())?), Some(gb)])
        }))
    }
}

/// Sums a batched gradient over the batch that broadcasting added.
fn reduce_batch(g: Tensor, shape: &[usize]) -> Result<Tensor> {
    if g.shape() == shape {
        return Ok(g);
    }
    let n = g.dims();
    let batch: usize = g.shape()[..n - 2].iter().product();
    let g3 = g.reshape(&[batch, g.shape()[n - 2], g.shape()[n - 1]])?;
    let s = sum_to(&g3, &[1, g.shape()[n - 2], g.shape()[n - 1]])?;
    s.reshape(shape)
}

/// f64 references.
pub mod cpu {
    /// `x` rounded to the nearest f16 (ties to even; subnormals kept), as f64.
    pub fn round_f16(x: f64) -> f64 {
        if x == 0.0 || !x.is_finite() {
            return x;
        }
        // Spacing of f16 values around |x|: 2^(e - 10) for normal numbers, 2^-24 below 2^-14.
        let e = x.abs().log2().floor().max(-14.0);
        let q = (e - 10.0).exp2();
        (x / q).round_ties_even() * q
    }

    /// `op(x)` of a `[batch, r, c]` matrix batch, transposed when `trans`, rounded to f16 and
    /// zero-padded to `[batch, rows_pad, cols_pad]` (what `pack_f16` stores, as values).
    pub fn pack_f16(
        x: &[f64],
        batch: usize,
        r: usize,
        c: usize,
        trans: bool,
        rows_pad: usize,
        cols_pad: usize,
    ) -> Vec<f64> {
        let (rows, cols) = if trans { (c, r) } else { (r, c) };
        let mut out = vec![0.0; batch * rows_pad * cols_pad];
        for b in 0..batch {
            for i in 0..rows {
                for j in 0..cols {
                    let v = if trans { x[(b * r + j) * c + i] } else { x[(b * r + i) * c + j] };
                    out[(b * rows_pad + i) * cols_pad + j] = round_f16(v);
                }
            }
        }
        out
    }

    /// `op(A) x op(B)` for `a: [batch_a, ra, ca]`, `b: [batch_b, rb, cb]` (batch 1 broadcasts).
    #[allow(clippy::too_many_arguments)]
    pub fn matmul(
        a: &[f64],
        ba: usize,
        ra: usize,
        ca: usize,
        ta: bool,
        b: &[f64],
        bb: usize,
        rb: usize,
        cb: usize,
        tb: bool,
    ) -> Vec<f64> {
        let (m, k) = if ta { (ca, ra) } else { (ra, ca) };
        let n = if tb { rb } else { cb };
        let batch = ba.max(bb);
        let mut c = vec![0.0; batch * m * n];
        for z in 0..batch {
            let ao = if ba == 1 { 0 } else { z * ra * ca };
            let bo = if bb == 1 { 0 } else { z * rb * cb };
            for i in 0..m {
                for j in 0..n {
                    let mut s = 0.0;
                    for l in 0..k {
                        let av = if ta { a[ao + l * ca + i] } else { a[ao + i * ca + l] };
                        let bv = if tb { b[bo + j * cb + l] } else { b[bo + l * cb + j] };
                        s += av * bv;
                    }
                    c[(z * m + i) * n + j] = s;
                }
            }
        }
        c
    }
}
