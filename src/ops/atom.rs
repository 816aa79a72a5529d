//! Atom-modeling kernels (`shaders/atom.wgsl`): the pairwise sample distance d̄ (and the p-norm
//! distances of the hinge baselines), the importance-weighted all-pairs token distance
//! `S[A, B] = sum_i sum_j w_Ai w_Bj d_ij(A, B)` (the dominant term, tiled like a matrix product and
//! never storing the N x N x n x n distances), their gathered gradients, token masking, and the
//! importance head; and (`shaders/atom_pairs.wgsl`) L_A's pair algebra from d̄, S and the
//! importance sums ([`pair_loss`]), the importance budget ([`budget_var`]) and the latents'
//! normalisation ([`spread_scale_var`]), one small dispatch each way. The loss itself is assembled
//! from these in [`crate::atom`]. The f64 reference is [`cpu`].
//!
//! Padding: per-sample token counts live in a [`TokenMask`] (validated on the host); tokens
//! `i >= counts[A]` are never read by the kernels and get exactly zero gradient.

use crate::autodiff::Var;
use crate::device::{groups_1d, AdapterClass, Device, WG};
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

crate::shader!(SHADER = "atom");
crate::shader!(PAIRS = "atom_pairs");
crate::shader!(GRAM128 = "atom_gram");

/// Output dims per `structure_backward` invocation (`MC` in the shader).
const MC: usize = 32;
/// Invocations per workgroup of the structure kernels.
const WG_STRUCT: u32 = 64;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    ns: u32,
    nt: u32,
    m: u32,
    tiles: u32,
    eps2: f32,
    chunks: u32,
    total: u32,
    inner: u32,
    splits: u32,
    bper: u32,
    mv: u32,
    /// structure_backward8: B's tokens as one flat list (every sample full and n >= 8).
    flatb: u32,
}

impl Params {
    fn new() -> Params {
        Params {
            ns: 0,
            nt: 0,
            m: 0,
            tiles: 0,
            eps2: 0.0,
            chunks: 1,
            total: 0,
            inner: 1,
            splits: 1,
            bper: 0,
            mv: 0,
            flatb: 0,
        }
    }
}

/// Invocations the register-blocked backward pass aims for on a GPU (it splits the samples B to
/// get there).
const GPU_BACKWARD_INVOCATIONS: usize = 1 << 15;
/// Workgroups (of 256) the Gram backward pass aims for: several per multiprocessor of a large GPU.
const GPU_GRAM_WORKGROUPS: usize = 1 << 10;
/// Most bytes the split partial gradients may take.
const SPLIT_BYTES: usize = 256 << 20;

/// Which distance [`pdist`] computes between latents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Norm {
    /// `sqrt(|z_A - z_B|^2 + eps^2)`: the floored distance d̄ of the atom loss.
    Floored,
    /// `|z_A - z_B|_1` (gradient `sign`, 0 at 0).
    L1,
    /// `|z_A - z_B|_2` without a floor (gradient 0 where the distance is 0).
    L2,
}

impl Norm {
    fn code(self) -> f64 {
        match self {
            Norm::Floored => 0.0,
            Norm::L1 => 1.0,
            Norm::L2 => 2.0,
        }
    }
}

/// Per-sample token counts of a minibatch of tokens `[N, n, ..]`, checked on the host
/// (`1 <= counts[A] <= n`) and uploaded once: the kernels read `counts`, the tape ops use `mask`
/// (`[N, n]`, 1 for a real token, 0 for padding) and `inv_counts` (`[N]`, `1 / counts[A]`).
#[derive(Clone, Debug)]
pub struct TokenMask {
    counts: Vec<usize>,
    n: usize,
    /// U32 `[N]`.
    pub counts_gpu: Tensor,
    /// F32 `[N, n]`: 1 for a real token, 0 for padding.
    pub mask: Tensor,
    /// F32 `[N]`: `1 / counts[A]`.
    pub inv_counts: Tensor,
}

impl TokenMask {
    /// Checks `1 <= counts[A] <= n` for every sample and uploads the counts.
    pub fn new(dev: &Device, counts: &[usize], n: usize) -> Result<TokenMask> {
        if counts.is_empty() {
            return Err(Error::shape("atom token mask", format!("no samples: counts {counts:?} (n = {n})")));
        }
        if let Some(a) = counts.iter().position(|&c| c == 0 || c > n) {
            return Err(Error::shape(
                "atom token mask",
                format!(
                    "sample {a} has {} tokens; each count must lie in 1..={n} (n = {n}), counts {counts:?}",
                    counts[a]
                ),
            ));
        }
        if counts.len() > u32::MAX as usize / n.max(1) {
            return Err(Error::shape("atom token mask", format!("{} samples of {n} tokens is too many", counts.len())));
        }
        let c32: Vec<u32> = counts.iter().map(|&c| c as u32).collect();
        let mut mask = vec![0f32; counts.len() * n];
        for (a, &c) in counts.iter().enumerate() {
            mask[a * n..a * n + c].fill(1.0);
        }
        let inv: Vec<f32> = counts.iter().map(|&c| 1.0 / c as f32).collect();
        Ok(TokenMask {
            counts: counts.to_vec(),
            n,
            counts_gpu: Tensor::from_u32(dev, &c32, &[counts.len()])?,
            mask: Tensor::from_slice(dev, &mask, &[counts.len(), n])?,
            inv_counts: Tensor::from_slice(dev, &inv, &[counts.len()])?,
        })
    }
    /// Every sample with all `tokens` tokens real (no padding): images' feature-map cells,
    /// fixed-length token sets.
    pub fn full(dev: &Device, samples: usize, tokens: usize) -> Result<TokenMask> {
        TokenMask::new(dev, &vec![tokens; samples], tokens)
    }
    /// Tokens of each sample.
    pub fn counts(&self) -> &[usize] {
        &self.counts
    }
    /// Samples N.
    pub fn samples(&self) -> usize {
        self.counts.len()
    }
    /// Padded tokens per sample n.
    pub fn tokens(&self) -> usize {
        self.n
    }

    /// Checks that `x` is `[N, n, ..]` for this mask; returns the elements per token.
    fn check(&self, op: &'static str, what: &str, x: &Tensor, rank: Option<usize>) -> Result<usize> {
        x.expect(op, DType::F32)?;
        let s = x.shape();
        let rank_ok = match rank {
            Some(r) => s.len() == r,
            None => s.len() >= 2,
        };
        if !rank_ok || s[0] != self.samples() || s[1] != self.n {
            let want = match rank {
                Some(2) => format!("[{}, {}]", self.samples(), self.n),
                Some(3) => format!("[{}, {}, m]", self.samples(), self.n),
                _ => format!("[{}, {}, ..]", self.samples(), self.n),
            };
            return Err(Error::shape(
                op,
                format!("{what} {s:?} does not fit {} token counts of n = {}: needs {want}", self.samples(), self.n),
            ));
        }
        Ok(s[2..].iter().product())
    }
}

fn check_eps(op: &'static str, eps: f32, positive: bool) -> Result<()> {
    if !eps.is_finite() || eps < 0.0 || (positive && eps == 0.0) {
        let need = if positive { "> 0" } else { ">= 0" };
        return Err(Error::Config(format!("{op}: eps must be finite and {need}, got {eps}")));
    }
    Ok(())
}

fn check_latents(op: &'static str, z: &Tensor) -> Result<(usize, usize)> {
    z.expect(op, DType::F32)?;
    match z.shape() {
        &[n, d] if n >= 1 && d >= 1 => Ok((n, d)),
        s => Err(Error::shape(op, format!("latents z must be [N, D] with N, D >= 1, got {s:?}"))),
    }
}

/// Pairwise distances `[N, N]` between the rows of `z [N, D]` (bit-symmetric; diagonal `eps`
/// for [`Norm::Floored`], 0 otherwise). `eps` is used by `Floored` only.
pub fn pdist(z: &Tensor, norm: Norm, eps: f32) -> Result<Tensor> {
    let (n, d) = check_latents("atom_pdist", z)?;
    pdist_with(z, norm, eps, pdist_splits(z.device().class(), n, d))
}

/// Parts the latent dims of [`pdist`] are split into: 1 on CPU adapters; on GPUs enough for
/// about 2^14 invocations (one per 4 x 4 block of pairs and part), each part at least 64 dims
/// (the CNN's 128 latents of 3136 dims: 16 parts, where one block per invocation kept 1024
/// invocations busy).
pub fn pdist_splits(class: AdapterClass, n: usize, d: usize) -> usize {
    match class {
        AdapterClass::Cpu => 1,
        AdapterClass::Gpu => (1usize << 14).div_ceil(n.div_ceil(4).pow(2)).min(d / 64).max(1),
    }
}

/// [`pdist`] with the latent dims split into `splits` parts (summed in order by `pdist_finish`;
/// the same distances up to summation order).
pub fn pdist_with(z: &Tensor, norm: Norm, eps: f32, splits: usize) -> Result<Tensor> {
    let (n, d) = check_latents("atom_pdist", z)?;
    check_eps("atom_pdist", eps, false)?;
    let dev = z.device();
    let out = Tensor::empty(dev, "atom_pdist", &[n, n], DType::F32)?;
    let dc = d.div_ceil(splits.clamp(1, d.max(1)));
    let splits = d.div_ceil(dc.max(1)).max(1);
    let p = Params {
        ns: n as u32,
        m: d as u32,
        eps2: eps * eps,
        chunks: dc as u32,
        splits: splits as u32,
        ..Params::new()
    };
    let blocks = n.div_ceil(4) * n.div_ceil(4);
    if splits == 1 {
        // One invocation per 4 x 4 block of pairs.
        dev.dispatch(
            &SHADER,
            "pdist",
            &[("NORM", norm.code()), ("PART", 0.0)],
            bytemuck::bytes_of(&p),
            &[z.bind(), out.bind()],
            groups_1d(blocks, WG_STRUCT),
        );
        return Ok(out);
    }
    // One invocation per block and part, then one per pair adds the parts in order.
    let parts = Tensor::empty(dev, "atom_pdist", &[splits, n, n], DType::F32)?;
    dev.dispatch(
        &SHADER,
        "pdist",
        &[("NORM", norm.code()), ("PART", 1.0)],
        bytemuck::bytes_of(&p),
        &[z.bind(), parts.bind()],
        groups_1d(blocks * splits, WG_STRUCT),
    );
    dev.dispatch(
        &SHADER,
        "pdist_finish",
        &[("NORM", norm.code())],
        bytemuck::bytes_of(&p),
        &[parts.bind(), out.bind()],
        groups_1d(n * n, WG),
    );
    Ok(out)
}

/// `dz [N, D]` from the forward's `dbar [N, N]` and `g = dL/d(dbar) [N, N]`, gathered per (A, d).
pub fn pdist_backward(z: &Tensor, dbar: &Tensor, g: &Tensor, norm: Norm) -> Result<Tensor> {
    let (n, d) = check_latents("atom_pdist_backward", z)?;
    if dbar.shape() != [n, n] || g.shape() != [n, n] {
        return Err(Error::shape(
            "atom_pdist_backward",
            format!("z {:?} needs dbar and gradient [{n}, {n}], got {:?} and {:?}", z.shape(), dbar.shape(), g.shape()),
        ));
    }
    let dev = z.device();
    // The pairs' weights once (coef [N, N], transposed), then the register-blocked gather.
    let coef = Tensor::empty(dev, "atom_pdist_backward", &[n, n], DType::F32)?;
    let p = Params { ns: n as u32, m: d as u32, total: (n * n) as u32, ..Params::new() };
    let norm_code = [("NORM", norm.code())];
    dev.dispatch(
        &SHADER,
        "pdist_coef",
        &norm_code,
        bytemuck::bytes_of(&p),
        &[dbar.bind(), g.bind(), coef.bind()],
        groups_1d(n * n, WG),
    );
    let dz = Tensor::empty(dev, "atom_pdist_backward", &[n, d], DType::F32)?;
    let blocks = n.div_ceil(4) * d.div_ceil(4);
    dev.dispatch(
        &SHADER,
        "pdist_backward",
        &norm_code,
        bytemuck::bytes_of(&p),
        &[z.bind(), coef.bind(), dz.bind()],
        groups_1d(blocks, WG_STRUCT),
    );
    Ok(dz)
}

/// Checks `h [N, n, m]` and `w [N, n]` against the mask; returns (N, n, m).
fn check_structure(op: &'static str, h: &Tensor, w: &Tensor, mask: &TokenMask) -> Result<(usize, usize, usize)> {
    mask.check(op, "tokens h", h, Some(3))?;
    mask.check(op, "importances w", w, Some(2))?;
    let m = h.shape()[2];
    if m == 0 {
        return Err(Error::shape(op, format!("tokens h {:?} have no features (m = 0)", h.shape())));
    }
    let (n, t) = (mask.samples(), mask.tokens());
    if (n * n).checked_mul(t.div_ceil(4)).is_none_or(|v| v > u32::MAX as usize) || n * t * m > u32::MAX as usize {
        return Err(Error::shape(op, format!("tokens h {:?} too large for one dispatch", h.shape())));
    }
    Ok((n, t, m))
}

/// The token dim m of tokens `h [N, n, m]` (0 for other shapes, which the ops then reject).
fn token_dim(h: &Tensor) -> usize {
    match h.shape() {
        &[_, _, m] => m,
        _ => 0,
    }
}

/// The dominant term of the atom loss: `S [N, N]` with
/// `S[A, B] = sum_{i < n_A} sum_{j < n_B} w_Ai w_Bj sqrt(|h_Ai - h_Bj|^2 + eps^2)` for tokens
/// `h [N, n, m]` and importances `w [N, n]`, all pairs including A == B; S is bit-symmetric.
/// Two or three dispatches (partials per token tile, then a fixed-order sum); the benchmark can
/// call this directly.
pub fn structure(h: &Tensor, w: &Tensor, mask: &TokenMask, eps: f32) -> Result<Tensor> {
    structure_with(StructureKernel::for_device(h.device(), mask.tokens(), token_dim(h)), h, w, mask, eps)
}

/// Which structure kernels compute S and its gradients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StructureKernel {
    /// Barrier-free, register-blocked, 4 x 4 tokens per invocation (slower than `Registers8`
    /// everywhere measured; kept as the simplest form and for comparison).
    Registers,
    /// The same with 8 x 8 tokens per invocation (16 loads per 64 token pairs and dim): the CPU
    /// default (fewer loads per pair, which lavapipe pays for) and the GPU default where the Gram
    /// tiles would be mostly padding.
    Registers8,
    /// Gram form for GPUs (`shaders/atom_gram.wgsl`): `|a - b|^2 = |a|^2 + |b|^2 - 2 a.b` on
    /// centred tokens, the dot products on 128 x 128 tiles with 8 x 8 results per invocation like
    /// the 128-tile matmul, near pairs recomputed from differences. Samples are padded to 64-token
    /// half-tiles. Up to 2x `Registers8` on GPUs where the tiles are full (the timings:
    /// docs/PERFORMANCE.md, "Why the code chooses what it chooses").
    Gram128,
}

impl StructureKernel {
    /// The kernels for `n` padded tokens of `m` dims per sample on this device: the one asked for
    /// with `Device::set_policy` (`Gram128` only where the adapter offers its workgroup
    /// memory and n > 32), else the adapter class's default: `Registers8` on CPU adapters; on
    /// GPUs `Gram128` where its 64-token half-tiles are at least 7/8 full, or 3/4 full with
    /// m >= 64 (the padded pairs' cost, which does not grow with m, then pays off; measured on an
    /// H100, docs/PERFORMANCE.md), else `Registers8`.
    pub fn for_device(dev: &Device, n: usize, m: usize) -> StructureKernel {
        let storage = dev.limits().max_compute_workgroup_storage_size;
        let fits = |k: StructureKernel| match k {
            StructureKernel::Gram128 => n > 32 && storage >= GRAM128_WORKGROUP_BYTES,
            _ => true,
        };
        let padded = n.next_multiple_of(GRAM_TILE);
        let full = 8 * n >= 7 * padded || (m >= 64 && 4 * n >= 3 * padded);
        match dev.policy::<StructureKernel>() {
            Some(k) if fits(k) => k,
            _ if dev.class() == AdapterClass::Gpu && full && fits(StructureKernel::Gram128) => StructureKernel::Gram128,
            _ => StructureKernel::Registers8,
        }
    }
}

/// Tokens per half-tile of the Gram128 kernels (a tile side is two).
const GRAM_TILE: usize = 64;
/// Workgroup memory of the Gram128 kernels (`sm` in `shaders/atom_gram.wgsl`).
const GRAM128_WORKGROUP_BYTES: u32 = 24 << 10;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct GramParams {
    ns: u32,
    nt: u32,
    m: u32,
    mp: u32,
    tiles: u32,
    h2: u32,
    eps2: f32,
    chunks: u32,
    total: u32,
    bper: u32,
    _pad: [u32; 2],
}

/// The Gram128 kernels' inputs, laid out once per call by `gram_prep`: the tokens centred and
/// k-major per half-tile of 64 (`ht`), raw and token-major (`hr`), and per row its squared norm,
/// weight and realness (`rows`); padding is exactly 0.
struct Gram128Input {
    ht: Tensor,
    hr: Tensor,
    rows: Tensor,
    p: GramParams,
}

impl Gram128Input {
    fn new(op: &'static str, h: &Tensor, w: &Tensor, mask: &TokenMask, eps: f32) -> Result<Gram128Input> {
        let (n, t, m) = (mask.samples(), mask.tokens(), h.shape()[2]);
        let tiles = t.div_ceil(GRAM_TILE);
        let h2 = (n * tiles).next_multiple_of(2);
        let mp = m.next_multiple_of(8);
        let rows_all = h2 * GRAM_TILE;
        if (rows_all * mp).max(h2 * h2) > u32::MAX as usize {
            return Err(Error::shape(op, format!("tokens {:?} too large for the Gram128 kernels", h.shape())));
        }
        let dev = h.device();
        let ht = Tensor::empty(dev, op, &[h2, mp, GRAM_TILE], DType::F32)?;
        let hr = Tensor::empty(dev, op, &[rows_all, mp], DType::F32)?;
        let rows = Tensor::empty(dev, op, &[3, rows_all], DType::F32)?;
        let p = GramParams {
            ns: n as u32,
            nt: t as u32,
            m: m as u32,
            mp: mp as u32,
            tiles: tiles as u32,
            h2: h2 as u32,
            eps2: eps * eps,
            chunks: m.div_ceil(GRAM_TILE) as u32,
            total: rows_all as u32,
            bper: 0,
            _pad: [0; 2],
        };
        // One invocation per row of the padded list: centres, pads and transposes it.
        dev.dispatch(
            &GRAM128,
            "gram_prep",
            &[],
            bytemuck::bytes_of(&p),
            &[h.bind(), w.bind(), mask.counts_gpu.bind(), ht.bind(), hr.bind(), rows.bind()],
            groups_1d(rows_all, WG),
        );
        Ok(Gram128Input { ht, hr, rows, p })
    }

    /// Row tiles of 128 (two half-tiles).
    fn row_tiles(&self) -> usize {
        self.p.h2 as usize / 2
    }
}

/// [`structure_with`] on the Gram128 kernels: one workgroup per upper-triangle pair of row tiles,
/// then the fixed-order sum per entry of S.
fn structure_gram128(h: &Tensor, w: &Tensor, mask: &TokenMask, eps: f32) -> Result<Tensor> {
    const OP: &str = "atom_structure";
    let x = Gram128Input::new(OP, h, w, mask, eps)?;
    let dev = h.device();
    let (n, h2, rt) = (mask.samples(), x.p.h2 as usize, x.row_tiles());
    let part = Tensor::empty(dev, OP, &[h2, h2], DType::F32)?;
    let pairs = rt * (rt + 1) / 2;
    let p = GramParams { total: pairs as u32, ..x.p };
    // One workgroup of 256 per tile pair, folded as a 1-wide grid.
    dev.dispatch(
        &GRAM128,
        "gram_forward",
        &[],
        bytemuck::bytes_of(&p),
        &[x.ht.bind(), x.hr.bind(), x.rows.bind(), part.bind()],
        groups_1d(pairs, 1),
    );
    let s = Tensor::empty(dev, OP, &[n, n], DType::F32)?;
    let p = GramParams { total: (n * n) as u32, ..x.p };
    dev.dispatch(&GRAM128, "gram_reduce", &[], bytemuck::bytes_of(&p), &[part.bind(), s.bind()], groups_1d(n * n, WG));
    Ok(s)
}

/// The tokens as the 8-token kernels read them: rows of whole vec4s, `m` zero-padded to a
/// multiple of 4 where needed (zero dims add nothing to a distance), and the vec4s per row.
fn vec4_rows(kernel: StructureKernel, h: &Tensor, m: usize) -> Result<(Tensor, u32)> {
    let mv = m.div_ceil(4) as u32;
    if kernel != StructureKernel::Registers8 {
        return Ok((h.clone(), mv));
    }
    Ok((crate::ops::layout::pad_last_to(h, 4)?, mv))
}

/// As [`structure`] on the given kernels.
pub fn structure_with(kernel: StructureKernel, h: &Tensor, w: &Tensor, mask: &TokenMask, eps: f32) -> Result<Tensor> {
    let (n, t, m) = check_structure("atom_structure", h, w, mask)?;
    check_eps("atom_structure", eps, true)?;
    let dev = h.device();
    // One invocation per (upper-triangle pair, 4- or 8-token tile of A).
    let (entry, tiles) = match kernel {
        StructureKernel::Registers => ("structure_partial", t.div_ceil(4)),
        StructureKernel::Registers8 => ("structure_partial8", t.div_ceil(8)),
        StructureKernel::Gram128 => return structure_gram128(h, w, mask, eps),
    };
    let workers = n * (n + 1) / 2 * tiles;
    if workers > u32::MAX as usize {
        return Err(Error::shape("atom_structure", format!("tokens {:?} are too many for one dispatch", h.shape())));
    }
    let part = Tensor::empty(dev, "atom_structure", &[n, n, tiles], DType::F32)?;
    let mut p = Params {
        ns: n as u32,
        nt: t as u32,
        m: m as u32,
        tiles: tiles as u32,
        eps2: eps * eps,
        total: workers as u32,
        ..Params::new()
    };
    let (h, mv) = vec4_rows(kernel, h, m)?;
    p.mv = mv;
    let binds = [h.bind(), w.bind(), mask.counts_gpu.bind(), part.bind()];
    dev.dispatch(&SHADER, entry, &[], bytemuck::bytes_of(&p), &binds, groups_1d(workers, WG_STRUCT));
    let s = Tensor::empty(dev, "atom_structure", &[n, n], DType::F32)?;
    p.total = (n * n) as u32;
    dev.dispatch(
        &SHADER,
        "structure_reduce",
        &[],
        bytemuck::bytes_of(&p),
        &[part.bind(), s.bind()],
        groups_1d(n * n, WG),
    );
    Ok(s)
}

/// How many parts [`structure_backward`] splits the samples B into on this adapter: 1 on CPU
/// adapters (lavapipe has few cores and no use for more invocations), enough on a GPU for about
/// 2^15 invocations (2^10 workgroups of the Gram128 kernel), bounded by the memory of the partial
/// gradients.
pub fn default_splits(dev: &Device, kernel: StructureKernel, samples: usize, tokens: usize, m: usize) -> usize {
    if dev.class() == AdapterClass::Cpu {
        return 1;
    }
    let (base, aim) = match kernel {
        StructureKernel::Registers => (samples * tokens.div_ceil(4) * m.div_ceil(MC), GPU_BACKWARD_INVOCATIONS),
        StructureKernel::Registers8 => (samples * tokens.div_ceil(8) * m.div_ceil(MC), GPU_BACKWARD_INVOCATIONS),
        // Row tiles of 128 x chunks of 64 dims; splits cut the column tiles.
        StructureKernel::Gram128 => {
            let rt = (samples * tokens.div_ceil(GRAM_TILE)).div_ceil(2);
            (rt * m.div_ceil(GRAM_TILE), GPU_GRAM_WORKGROUPS)
        }
    };
    let by_mem = SPLIT_BYTES / (4 * samples * tokens * m).max(1);
    aim.div_ceil(base.max(1)).min(by_mem).clamp(1, samples.max(1))
}

/// Gradients `(dh [N, n, m], dw [N, n])` of `sum_AB G[A, B] S[A, B]` for `g = G [N, N]`
/// (gathered per (sample, 4-token tile, chunk of 32 dims); padded tokens get exactly 0), with the
/// adapter's [`default_splits`].
pub fn structure_backward(h: &Tensor, w: &Tensor, mask: &TokenMask, g: &Tensor, eps: f32) -> Result<(Tensor, Tensor)> {
    let kernel = StructureKernel::for_device(h.device(), mask.tokens(), token_dim(h));
    let splits = match h.shape() {
        &[n, t, m] => default_splits(h.device(), kernel, n, t, m),
        _ => 1,
    };
    structure_backward_with(kernel, splits, h, w, mask, g, eps)
}

/// As [`structure_backward`] with the samples B split into `splits` parts (at most N; for
/// `Gram128` B's 128-token tiles, at most their count) whose partial gradients are summed in a
/// fixed order; every split count gives the same result up to rounding, and each one is
/// deterministic.
pub fn structure_backward_with(
    kernel: StructureKernel,
    splits: usize,
    h: &Tensor,
    w: &Tensor,
    mask: &TokenMask,
    g: &Tensor,
    eps: f32,
) -> Result<(Tensor, Tensor)> {
    const OP: &str = "atom_structure_backward";
    let (n, t, m) = check_structure(OP, h, w, mask)?;
    check_eps(OP, eps, true)?;
    if g.shape() != [n, n] {
        return Err(Error::shape(
            OP,
            format!("gradient {:?} does not fit tokens {:?}: needs [{n}, {n}]", g.shape(), h.shape()),
        ));
    }
    let dev = h.device();
    let (dh, dw, splits) = structure_backward_parts(kernel, splits, h, w, mask, g, eps)?;
    if splits == 1 {
        return Ok((dh.reshape(&[n, t, m])?, dw.reshape(&[n, t])?));
    }
    let sum = |part: &Tensor, shape: &[usize]| -> Result<Tensor> {
        let out = Tensor::empty(dev, OP, shape, DType::F32)?;
        let e = out.numel();
        let p = Params { total: e as u32, splits: splits as u32, ..Params::new() };
        dev.dispatch(&SHADER, "sum_splits", &[], bytemuck::bytes_of(&p), &[part.bind(), out.bind()], groups_1d(e, WG));
        Ok(out)
    };
    Ok((sum(&dh, &[n, t, m])?, sum(&dw, &[n, t])?))
}

/// The backward's workgroups or invocations (`total`) and partial gradients must fit u32 indices.
fn check_split_sizes(h: &Tensor, splits: usize, total: usize) -> Result<()> {
    if total > u32::MAX as usize || splits * h.numel() > u32::MAX as usize {
        return Err(Error::shape(
            "atom_structure_backward",
            format!("tokens {:?} in {splits} splits are too large for one dispatch", h.shape()),
        ));
    }
    Ok(())
}

/// The split partial gradients `(dh [splits, N, n, m], dw [splits, N, n], splits)`: samples B
/// split into at most N parts (Gram128: [`gram128_backward`]).
fn structure_backward_parts(
    kernel: StructureKernel,
    splits: usize,
    h: &Tensor,
    w: &Tensor,
    mask: &TokenMask,
    g: &Tensor,
    eps: f32,
) -> Result<(Tensor, Tensor, usize)> {
    const OP: &str = "atom_structure_backward";
    let (n, t, m) = (mask.samples(), mask.tokens(), h.shape()[2]);
    let dev = h.device();
    // Registers: one invocation per (split, A, 4 tokens, 32 dims); Registers8: one invocation
    // per (split, 8 rows of the flat [N * n] token list, 32 dims).
    let (entry, tiles, per_split) = match kernel {
        StructureKernel::Registers => ("structure_backward", t.div_ceil(4), n * t.div_ceil(4)),
        StructureKernel::Registers8 => ("structure_backward8", (n * t).div_ceil(8), (n * t).div_ceil(8)),
        StructureKernel::Gram128 => return gram128_backward(splits, h, w, mask, g, eps),
    };
    let chunks = m.div_ceil(MC);
    let bper = n.div_ceil(splits.clamp(1, n));
    let splits = n.div_ceil(bper);
    let total = splits * per_split * chunks;
    check_split_sizes(h, splits, total)?;
    let dh = Tensor::empty(dev, OP, &[splits, n, t, m], DType::F32)?;
    let dw = Tensor::empty(dev, OP, &[splits, n, t], DType::F32)?;
    let p = Params {
        ns: n as u32,
        nt: t as u32,
        m: m as u32,
        tiles: tiles as u32,
        eps2: eps * eps,
        chunks: chunks as u32,
        total: total as u32,
        splits: splits as u32,
        bper: bper as u32,
        // With every sample full, B's tiles need not stop at a sample's end either (n = 49: 7
        // tiles of 8 per sample hold 56 tokens); variable counts keep per-sample tiles, which
        // skip the padding.
        flatb: (t >= 8 && mask.counts.iter().all(|&c| c == t)) as u32,
        ..Params::new()
    };
    let (h, mv) = vec4_rows(kernel, h, m)?;
    let p = Params { mv, ..p };
    let binds = [h.bind(), w.bind(), mask.counts_gpu.bind(), g.bind(), dh.bind(), dw.bind()];
    dev.dispatch(&SHADER, entry, &[], bytemuck::bytes_of(&p), &binds, groups_1d(total, WG_STRUCT));
    Ok((dh, dw, splits))
}

/// The Gram128 backward's split partial gradients: one workgroup per (split, row tile of 128,
/// chunk of 64 output dims), the column tiles cut into at most `row_tiles` splits.
fn gram128_backward(
    splits: usize,
    h: &Tensor,
    w: &Tensor,
    mask: &TokenMask,
    g: &Tensor,
    eps: f32,
) -> Result<(Tensor, Tensor, usize)> {
    const OP: &str = "atom_structure_backward";
    let x = Gram128Input::new(OP, h, w, mask, eps)?;
    let (n, t, m, rt) = (mask.samples(), mask.tokens(), h.shape()[2], x.row_tiles());
    let bper = rt.div_ceil(splits.clamp(1, rt));
    let splits = rt.div_ceil(bper);
    let total = splits * rt * x.p.chunks as usize;
    check_split_sizes(h, splits, total)?;
    let dev = h.device();
    let dh = Tensor::empty(dev, OP, &[splits, n, t, m], DType::F32)?;
    let dw = Tensor::empty(dev, OP, &[splits, n, t], DType::F32)?;
    let p = GramParams { total: total as u32, bper: bper as u32, ..x.p };
    // One workgroup of 256 per (split, row tile, dim chunk), folded as a 1-wide grid.
    dev.dispatch(
        &GRAM128,
        "gram_backward",
        &[],
        bytemuck::bytes_of(&p),
        &[x.ht.bind(), x.hr.bind(), x.rows.bind(), g.bind(), dh.bind(), dw.bind()],
        groups_1d(total, 1),
    );
    Ok((dh, dw, splits))
}

/// `x [N, n, ..]` with every padded token (`i >= counts[A]`) set to exactly 0.
pub fn mask_tokens(x: &Tensor, mask: &TokenMask) -> Result<Tensor> {
    let inner = mask.check("atom_mask_tokens", "input", x, None)?;
    let dev = x.device();
    let y = Tensor::empty(dev, "atom_mask_tokens", x.shape(), DType::F32)?;
    let p = Params {
        ns: mask.samples() as u32,
        nt: mask.tokens() as u32,
        total: x.numel() as u32,
        inner: inner.max(1) as u32,
        ..Params::new()
    };
    dev.dispatch(
        &SHADER,
        "mask_tokens",
        &[],
        bytemuck::bytes_of(&p),
        &[x.bind(), mask.counts_gpu.bind(), y.bind()],
        groups_1d(x.numel(), WG),
    );
    Ok(y)
}

impl Var {
    /// Pairwise distances `[N, N]` of the rows of this `[N, D]` (see [`pdist`]); gathered gradient.
    pub fn pdist(&self, norm: Norm, eps: f32) -> Result<Var> {
        let y = pdist(self.value(), norm, eps)?;
        let (z, dbar) = (self.value().clone(), y.clone());
        Ok(self.tape().op(y, &[self], move |g| Ok(vec![Some(pdist_backward(&z, &dbar, g, norm)?)])))
    }

    /// This `[N, n, ..]` with padded tokens set to exactly 0; the gradient is masked the same way.
    pub fn mask_tokens(&self, mask: &TokenMask) -> Result<Var> {
        let y = mask_tokens(self.value(), mask)?;
        let mask = mask.clone();
        Ok(self.tape().op(y, &[self], move |g| Ok(vec![Some(mask_tokens(g, &mask)?)])))
    }
}

/// `S [N, N]` on the tape (see [`structure`]); gradients flow to `h` and `w`.
pub fn structure_var(h: &Var, w: &Var, mask: &TokenMask, eps: f32) -> Result<Var> {
    let s = structure(h.value(), w.value(), mask, eps)?;
    let (hv, wv, mask) = (h.value().clone(), w.value().clone(), mask.clone());
    Ok(h.tape().op(s, &[h, w], move |g| {
        let (dh, dw) = structure_backward(&hv, &wv, &mask, g, eps)?;
        Ok(vec![Some(dh), Some(dw)])
    }))
}

/// The importance head `w [N, n] = sigmoid(h . u + c)` for tokens `h [N, n, m]`, `u [m]`, `c [1]`,
/// with padded entries exactly 0: the kernels never read a padded token, so whatever it holds
/// never reaches w or the gradients (one dispatch forward, three backward: dh per element, du and
/// dc gathered over 64-token chunks, then over the chunks, in order).
pub fn importance(h: &Var, u: &Var, c: &Var, mask: &TokenMask) -> Result<Var> {
    const OP: &str = "atom_importance";
    mask.check(OP, "tokens h", h.value(), Some(3))?;
    let (n, t, m) = (h.shape()[0], h.shape()[1], h.shape()[2]);
    if u.shape() != [m] || c.value().numel() != 1 || c.shape().len() > 1 {
        return Err(Error::shape(
            OP,
            format!("tokens h {:?} need u [{m}] and c [1], got u {:?} and c {:?}", h.shape(), u.shape(), c.shape()),
        ));
    }
    for v in [h, u, c] {
        v.value().expect(OP, DType::F32)?;
    }
    let dev = h.value().device();
    let w = Tensor::empty(dev, OP, &[n, t], DType::F32)?;
    let p = Params { ns: n as u32, nt: t as u32, m: m as u32, total: (n * t) as u32, ..Params::new() };
    // One invocation per token.
    dev.dispatch(
        &SHADER,
        "importance",
        &[],
        bytemuck::bytes_of(&p),
        &[h.value().bind(), u.value().bind(), c.value().bind(), mask.counts_gpu.bind(), w.bind()],
        groups_1d(n * t, WG),
    );
    let (hv, uv, wv, cnt) = (h.value().clone(), u.value().clone(), w.clone(), mask.counts_gpu.clone());
    let cshape = c.shape().to_vec();
    Ok(h.tape().op(w, &[h, u, c], move |g| {
        let dev = hv.device();
        let dh = Tensor::empty(dev, "atom_importance_backward", &[n, t, m], DType::F32)?;
        // dh per element; du and dc gathered per output over every token, in order.
        dev.dispatch(
            &SHADER,
            "importance_dh",
            &[],
            bytemuck::bytes_of(&p),
            &[wv.bind(), g.bind(), uv.bind(), cnt.bind(), dh.bind()],
            groups_1d(n * t * m, WG),
        );
        // du and dc: partial sums over 64-token chunks (one invocation per chunk and output, so
        // a GPU has work for every lane), then each output sums its chunks in order.
        let chunks = (n * t).div_ceil(64);
        let part = Tensor::empty(dev, "atom_importance_backward", &[chunks, m + 1], DType::F32)?;
        dev.dispatch(
            &SHADER,
            "importance_duc_part",
            &[],
            bytemuck::bytes_of(&p),
            &[wv.bind(), g.bind(), hv.bind(), cnt.bind(), part.bind()],
            groups_1d(chunks * (m + 1), WG),
        );
        let du = Tensor::empty(dev, "atom_importance_backward", &[m], DType::F32)?;
        let dc = Tensor::empty(dev, "atom_importance_backward", &cshape, DType::F32)?;
        dev.dispatch(
            &SHADER,
            "importance_duc_sum",
            &[],
            bytemuck::bytes_of(&p),
            &[part.bind(), du.bind(), dc.bind()],
            groups_1d(m + 1, WG),
        );
        Ok(vec![Some(dh), Some(du), Some(dc)])
    }))
}

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct PairParams {
    ns: u32,
    inv_r2: f32,
    tau: [f32; 2],
    dim: u32,
    w_floor: f32,
    _p: [u32; 2],
}

/// What [`pair_loss`] computes from `dbar`, `S` and the importance sums `W`.
pub struct PairLoss {
    /// L_A, shape [].
    pub loss: Tensor,
    /// `[s, mean_{A != B} k]`, shape `[2]`.
    pub stats: Tensor,
    /// k_AB = S_AB / (W_A W_B), `[N, N]`.
    pub k: Tensor,
    /// kappa_AB = k_AB / mean k, `[N, N]`.
    pub kappa: Tensor,
}

fn check_pairs(op: &'static str, dbar: &Tensor, s: &Tensor, wsum: &Tensor) -> Result<usize> {
    let n = wsum.shape().first().copied().unwrap_or(0);
    if wsum.shape() != [n] || n < 2 || dbar.shape() != [n, n] || s.shape() != [n, n] {
        return Err(Error::shape(
            op,
            format!(
                "needs dbar [N, N], S [N, N] and W [N] with N >= 2, got {:?}, {:?} and {:?}",
                dbar.shape(),
                s.shape(),
                wsum.shape()
            ),
        ));
    }
    for t in [dbar, s, wsum] {
        t.expect(op, DType::F32)?;
    }
    Ok(n)
}

/// Invocations of the one-workgroup pair-loss kernels (`PT` in the shader): 1024 where the
/// adapter allows it (a quarter of the pairs per invocation and pass), else 256.
fn pair_threads(dev: &Device) -> f64 {
    let l = dev.limits();
    if l.max_compute_invocations_per_workgroup >= 1024 && l.max_compute_workgroup_size_x >= 1024 {
        1024.0
    } else {
        256.0
    }
}

fn pair_params(n: usize, r_max: Option<f32>, w_floor: f32) -> PairParams {
    PairParams { ns: n as u32, inv_r2: r_max.map_or(0.0, |r| 1.0 / (r * r)), w_floor, ..Default::default() }
}

/// L_A from the sample distances `dbar [N, N]`, the structure sums `s [N, N]` and the importance
/// sums `wsum [N]` (taken as `max(W, w_floor)`), with the soft floor `r_max`
/// (shaders/atom_pairs.wgsl): one dispatch for the whole pair algebra.
pub fn pair_loss(dbar: &Tensor, s: &Tensor, wsum: &Tensor, r_max: Option<f32>, w_floor: f32) -> Result<PairLoss> {
    const OP: &str = "atom_pair_loss";
    let n = check_pairs(OP, dbar, s, wsum)?;
    let dev = dbar.device();
    let out = PairLoss {
        loss: Tensor::empty(dev, OP, &[], DType::F32)?,
        stats: Tensor::empty(dev, OP, &[2], DType::F32)?,
        k: Tensor::empty(dev, OP, &[n, n], DType::F32)?,
        kappa: Tensor::empty(dev, OP, &[n, n], DType::F32)?,
    };
    let p = pair_params(n, r_max, w_floor);
    // One workgroup: O(N^2) scalar work, reduced in a fixed order.
    dev.dispatch(
        &PAIRS,
        "pair_loss",
        &[("PT", pair_threads(dev))],
        bytemuck::bytes_of(&p),
        &[dbar.bind(), s.bind(), wsum.bind(), out.loss.bind(), out.stats.bind(), out.k.bind(), out.kappa.bind()],
        [1, 1, 1],
    );
    Ok(out)
}

/// The gradients of L_A (upstream `g`, one value) with respect to `dbar`, `s` and `wsum`, from
/// the forward's `stats`.
pub fn pair_loss_backward(
    dbar: &Tensor,
    s: &Tensor,
    wsum: &Tensor,
    stats: &Tensor,
    g: &Tensor,
    r_max: Option<f32>,
    w_floor: f32,
) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "atom_pair_loss_backward";
    let n = check_pairs(OP, dbar, s, wsum)?;
    if stats.shape() != [2] || g.numel() != 1 {
        return Err(Error::shape(
            OP,
            format!("needs stats [2] and a scalar gradient, got {:?} and {:?}", stats.shape(), g.shape()),
        ));
    }
    let dev = dbar.device();
    let gd = Tensor::empty(dev, OP, &[n, n], DType::F32)?;
    let gs = Tensor::empty(dev, OP, &[n, n], DType::F32)?;
    let gw = Tensor::empty(dev, OP, &[n], DType::F32)?;
    let p = pair_params(n, r_max, w_floor);
    dev.dispatch(
        &PAIRS,
        "pair_loss_backward",
        &[("PT", pair_threads(dev))],
        bytemuck::bytes_of(&p),
        &[dbar.bind(), s.bind(), wsum.bind(), stats.bind(), g.bind(), gd.bind(), gs.bind(), gw.bind()],
        [1, 1, 1],
    );
    Ok((gd, gs, gw))
}

/// [`pair_loss`] on the tape: L_A as a scalar Var (gradients flow to `dbar`, `s` and `wsum`),
/// and the forward's other outputs as plain tensors.
pub fn pair_loss_var(dbar: &Var, s: &Var, wsum: &Var, r_max: Option<f32>, w_floor: f32) -> Result<(Var, PairLoss)> {
    let out = pair_loss(dbar.value(), s.value(), wsum.value(), r_max, w_floor)?;
    let (d, sv, w, stats) = (dbar.value().clone(), s.value().clone(), wsum.value().clone(), out.stats.clone());
    let l = dbar.tape().op(out.loss.clone(), &[dbar, s, wsum], move |g| {
        let (gd, gs, gw) = pair_loss_backward(&d, &sv, &w, &stats, g, r_max, w_floor)?;
        Ok(vec![Some(gd), Some(gs), Some(gw)])
    });
    Ok((l, out))
}

/// The importance budget `C_w = mean_A [relu(tau_lo - mw_A)^2 + relu(mw_A - tau_hi)^2]` of the
/// per-sample mean importances `mw [N]`, on the tape (shaders/atom_pairs.wgsl: one dispatch each
/// way).
pub fn budget_var(mw: &Var, tau_lo: f32, tau_hi: f32) -> Result<Var> {
    const OP: &str = "atom_budget";
    mw.value().expect(OP, DType::F32)?;
    let n = match mw.shape() {
        &[n] if n >= 1 => n,
        s => return Err(Error::shape(OP, format!("needs mean importances [N], got {s:?}"))),
    };
    let dev = mw.value().device();
    let c = Tensor::empty(dev, OP, &[], DType::F32)?;
    let p = PairParams { ns: n as u32, tau: [tau_lo, tau_hi], ..Default::default() };
    // One workgroup: a fixed-order sum over the N samples.
    dev.dispatch(&PAIRS, "budget", &[], bytemuck::bytes_of(&p), &[mw.value().bind(), c.bind()], [1, 1, 1]);
    let m = mw.value().clone();
    Ok(mw.tape().op(c, &[mw], move |g| {
        let gm = Tensor::empty(m.device(), "atom_budget_backward", &[n], DType::F32)?;
        m.device().dispatch(
            &PAIRS,
            "budget_backward",
            &[],
            bytemuck::bytes_of(&p),
            &[m.bind(), g.bind(), gm.bind()],
            groups_1d(n, WG),
        );
        Ok(vec![Some(gm)])
    }))
}

/// The latents `z [N, D]` at unit RMS spread, `z / sqrt(mean((z - mean_A z)^2) + 1e-12)`, on the
/// tape (shaders/atom_pairs.wgsl: one dispatch each way; on GPUs from 2^16 elements three, over
/// many workgroups).
pub fn spread_scale_var(z: &Var) -> Result<Var> {
    let (n, d) = check_latents("atom_spread_scale", z.value())?;
    let many = z.value().device().class() == AdapterClass::Gpu && n * d >= 1 << 16;
    spread_scale_var_with(z, many)
}

/// [`spread_scale_var`] as one workgroup each way (`many` false: one dispatch forward, one
/// backward) or over many workgroups (three each way: per-column sums, one workgroup for the
/// total, per-element results), which a GPU needs for large latents (one workgroup leaves a GPU
/// idle: docs/PERFORMANCE.md).
pub fn spread_scale_var_with(z: &Var, many: bool) -> Result<Var> {
    const OP: &str = "atom_spread_scale";
    let (n, d) = check_latents(OP, z.value())?;
    let dev = z.value().device();
    let y = Tensor::empty(dev, OP, &[n, d], DType::F32)?;
    let zbar = Tensor::empty(dev, OP, &[d], DType::F32)?;
    let r = Tensor::empty(dev, OP, &[1], DType::F32)?;
    let p = PairParams { ns: n as u32, dim: d as u32, ..Default::default() };
    let params = bytemuck::bytes_of(&p);
    let zv = z.value().clone();
    if many {
        // Column means and squared deviations, then r, then y = z / r.
        let cols = Tensor::empty(dev, OP, &[d], DType::F32)?;
        dev.dispatch(&PAIRS, "spread_cols", &[], params, &[zv.bind(), zbar.bind(), cols.bind()], groups_1d(d, WG));
        dev.dispatch(&PAIRS, "spread_r", &[], params, &[cols.bind(), r.bind()], [1, 1, 1]);
        dev.dispatch(&PAIRS, "spread_apply", &[], params, &[zv.bind(), y.bind(), r.bind()], groups_1d(n * d, WG));
    } else {
        // One workgroup: column means, then a fixed-order sum of squares, then the division.
        dev.dispatch(&PAIRS, "spread_scale", &[], params, &[zv.bind(), y.bind(), zbar.bind(), r.bind()], [1, 1, 1]);
    }
    Ok(z.tape().op(y, &[z], move |g| {
        let dev = zv.device();
        let params = bytemuck::bytes_of(&p);
        let gz = Tensor::empty(dev, "atom_spread_scale_backward", &[n, d], DType::F32)?;
        if many {
            // sum gy z by columns, then k, then gz per element.
            let cols = Tensor::empty(dev, "atom_spread_scale_backward", &[d], DType::F32)?;
            let k = Tensor::empty(dev, "atom_spread_scale_backward", &[1], DType::F32)?;
            dev.dispatch(&PAIRS, "spread_dots", &[], params, &[zv.bind(), g.bind(), cols.bind()], groups_1d(d, WG));
            dev.dispatch(&PAIRS, "spread_k", &[], params, &[cols.bind(), k.bind(), r.bind()], [1, 1, 1]);
            dev.dispatch(
                &PAIRS,
                "spread_apply_backward",
                &[],
                params,
                &[zv.bind(), g.bind(), zbar.bind(), r.bind(), k.bind(), gz.bind()],
                groups_1d(n * d, WG),
            );
        } else {
            dev.dispatch(
                &PAIRS,
                "spread_scale_backward",
                &[],
                params,
                &[zv.bind(), g.bind(), zbar.bind(), r.bind(), gz.bind()],
                [1, 1, 1],
            );
        }
        Ok(vec![Some(gz)])
    }))
}

/// f64 references on flat row-major data.
pub mod cpu {
    use super::Norm;

    /// L_A's pair algebra (see [`super::pair_loss`]): (L_A, s, mean k, k, kappa) from `dbar
    /// [N, N]`, `s [N, N]`, `wsum [N]` (floored at `w_floor`); `inv_r2` = 1 / r_max^2 (0: no soft
    /// floor).
    pub fn pair_loss(
        dbar: &[f64],
        s: &[f64],
        wsum: &[f64],
        inv_r2: f64,
        w_floor: f64,
    ) -> (f64, f64, f64, Vec<f64>, Vec<f64>) {
        let wsum: Vec<f64> = wsum.iter().map(|&w| w.max(w_floor)).collect();
        let n = wsum.len();
        let np = (n * (n - 1)) as f64;
        let k: Vec<f64> = (0..n * n).map(|i| s[i] / (wsum[i / n] * wsum[i % n])).collect();
        let off = |i: usize| i / n != i % n;
        let sl = (0..n * n).filter(|&i| off(i)).map(|i| dbar[i]).sum::<f64>() / np;
        let mk = (0..n * n).filter(|&i| off(i)).map(|i| k[i]).sum::<f64>() / np;
        let kappa: Vec<f64> = k.iter().map(|v| v / mk).collect();
        let mut l = 0.0;
        for i in (0..n * n).filter(|&i| off(i)) {
            let dfl = (dbar[i] * dbar[i] + sl * sl * inv_r2).sqrt();
            let r = sl / dfl;
            l += r * r - 2.0 * kappa[i] * r;
        }
        (l / np, sl, mk, k, kappa)
    }

    fn dist(a: &[f64], b: &[f64], norm: Norm, eps: f64) -> f64 {
        let it = a.iter().zip(b).map(|(x, y)| x - y);
        match norm {
            Norm::Floored => (it.map(|v| v * v).sum::<f64>() + eps * eps).sqrt(),
            Norm::L1 => it.map(f64::abs).sum(),
            Norm::L2 => it.map(|v| v * v).sum::<f64>().sqrt(),
        }
    }

    /// `[N, N]` distances between the rows of `z [N, D]`.
    pub fn pdist(z: &[f64], d: usize, norm: Norm, eps: f64) -> Vec<f64> {
        let n = z.len() / d;
        let mut out = vec![0.0; n * n];
        for a in 0..n {
            for b in 0..n {
                out[a * n + b] = dist(&z[a * d..(a + 1) * d], &z[b * d..(b + 1) * d], norm, eps);
            }
        }
        out
    }

    /// `dz` of `sum G * pdist(z)`.
    pub fn pdist_backward(z: &[f64], d: usize, g: &[f64], norm: Norm, eps: f64) -> Vec<f64> {
        let n = z.len() / d;
        let dbar = pdist(z, d, norm, eps);
        let mut dz = vec![0.0; n * d];
        for a in 0..n {
            for b in 0..n {
                let gs = g[a * n + b] + g[b * n + a];
                for k in 0..d {
                    let diff = z[a * d + k] - z[b * d + k];
                    let coef = match norm {
                        Norm::L1 => {
                            if diff > 0.0 {
                                1.0
                            } else if diff < 0.0 {
                                -1.0
                            } else {
                                0.0
                            }
                        }
                        _ => {
                            let dd = dbar[a * n + b];
                            if dd > 0.0 {
                                diff / dd
                            } else {
                                0.0
                            }
                        }
                    };
                    dz[a * d + k] += gs * coef;
                }
            }
        }
        dz
    }

    /// `S [N, N]` for tokens `h [N, n, m]`, importances `w [N, n]` and token counts.
    pub fn structure(h: &[f64], w: &[f64], counts: &[usize], n: usize, m: usize, eps: f64) -> Vec<f64> {
        let ns = counts.len();
        let mut s = vec![0.0; ns * ns];
        for a in 0..ns {
            for b in 0..ns {
                let mut acc = 0.0;
                for i in 0..counts[a] {
                    for j in 0..counts[b] {
                        let ha = &h[(a * n + i) * m..(a * n + i + 1) * m];
                        let hb = &h[(b * n + j) * m..(b * n + j + 1) * m];
                        acc += w[a * n + i] * w[b * n + j] * dist(ha, hb, Norm::Floored, eps);
                    }
                }
                s[a * ns + b] = acc;
            }
        }
        s
    }

    /// `(dh, dw)` of `sum G * S`, straight from the definition (every term of every S[A, B]).
    pub fn structure_backward(
        h: &[f64],
        w: &[f64],
        counts: &[usize],
        n: usize,
        m: usize,
        g: &[f64],
        eps: f64,
    ) -> (Vec<f64>, Vec<f64>) {
        let ns = counts.len();
        let mut dh = vec![0.0; h.len()];
        let mut dw = vec![0.0; w.len()];
        for a in 0..ns {
            for b in 0..ns {
                let gab = g[a * ns + b];
                for i in 0..counts[a] {
                    for j in 0..counts[b] {
                        let (ia, jb) = (a * n + i, b * n + j);
                        let d = dist(&h[ia * m..(ia + 1) * m], &h[jb * m..(jb + 1) * m], Norm::Floored, eps);
                        // term w_ia w_jb d(h_ia, h_jb)
                        dw[ia] += gab * w[jb] * d;
                        dw[jb] += gab * w[ia] * d;
                        let c = gab * w[ia] * w[jb] / d;
                        for k in 0..m {
                            let diff = h[ia * m + k] - h[jb * m + k];
                            dh[ia * m + k] += c * diff;
                            dh[jb * m + k] -= c * diff;
                        }
                    }
                }
            }
        }
        (dh, dw)
    }

    /// `x [N, n, inner]` with padded tokens zeroed.
    pub fn mask_tokens(x: &[f64], counts: &[usize], n: usize) -> Vec<f64> {
        let inner = x.len() / (counts.len() * n);
        let mut y = x.to_vec();
        for (a, &c) in counts.iter().enumerate() {
            y[(a * n + c) * inner..(a + 1) * n * inner].fill(0.0);
        }
        y
    }

    /// `w [N, n] = sigmoid(h . u + c)`, 0 for padded tokens.
    pub fn importance(h: &[f64], u: &[f64], c: f64, counts: &[usize], n: usize) -> Vec<f64> {
        let m = u.len();
        let mut w = vec![0.0; counts.len() * n];
        for (a, &cnt) in counts.iter().enumerate() {
            for i in 0..cnt {
                let t = a * n + i;
                let x: f64 = (0..m).map(|k| h[t * m + k] * u[k]).sum::<f64>() + c;
                w[t] = 1.0 / (1.0 + (-x).exp());
            }
        }
        w
    }
}
