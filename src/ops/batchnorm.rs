//! Batch normalisation over channel axis 1 (`shaders/batchnorm.wgsl`) of x [N, C] or
//! [N, C, d2, ...] (statistics over N and every dim after the channels), with a learned affine
//! `gamma`, `beta` `[C]` and running statistics that the training-mode forward updates in place on
//! the GPU, PyTorch's way: `running = (1 - momentum) * running + momentum * batch`, the unbiased
//! batch variance for `running_var`, the biased one for normalising.
//!
//! Per-channel sums (mean / variance forward, sum gy / sum gy * xhat backward) are two
//! deterministic passes: partial sums per (channel, chunk), then one invocation per channel
//! merging its chunks in order (Chan's formula for mean / M2). The partial pass has two
//! [`Variant`]s: on GPUs one workgroup per chunk of [`CHUNK`] elements with a shared-memory tree,
//! so there are enough workgroups when channels are few and N * H * W is large; on CPU
//! rasterisers (where barriers are slow) one invocation per chunk of [`LOOP_CHUNK`] elements
//! walking it serially. The f64 reference is [`cpu`].

use crate::autodiff::Var;
use crate::device::{groups_1d, AdapterClass, Device, WG};
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

crate::shader!(SHADER = "batchnorm");

/// Elements of one channel reduced by one workgroup of the [`Variant::Tree`] partial sums.
pub const CHUNK: usize = 4096;
/// Elements of one channel reduced by one invocation of the [`Variant::Loop`] partial sums.
pub const LOOP_CHUNK: usize = 1024;

/// How the per-channel partial sums are computed (both are deterministic; they differ only in
/// rounding, through the chunk size).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// One 256-lane workgroup per chunk with a shared-memory tree (real GPUs).
    Tree,
    /// One invocation per chunk, serial, barrier-free (CPU rasterisers such as lavapipe).
    Loop,
}

impl Variant {
    /// The variant that suits the device's adapter class.
    pub fn for_device(dev: &Device) -> Variant {
        match dev.class() {
            AdapterClass::Cpu => Variant::Loop,
            AdapterClass::Gpu => Variant::Tree,
        }
    }
    fn chunk(self) -> usize {
        match self {
            Variant::Tree => CHUNK,
            Variant::Loop => LOOP_CHUNK,
        }
    }
    /// (entry point, workgroups) of the partial pass over `items` (channel, chunk) pairs.
    fn partial(self, forward: bool, items: usize) -> (&'static str, [u32; 3]) {
        match (self, forward) {
            (Variant::Tree, true) => ("stats_partial", groups_1d(items, 1)),
            (Variant::Tree, false) => ("grad_partial", groups_1d(items, 1)),
            (Variant::Loop, true) => ("stats_loop", groups_1d(items, 64)),
            (Variant::Loop, false) => ("grad_loop", groups_1d(items, 64)),
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    c: u32,
    s: u32,
    m: u32,
    n: u32,
    chunk: u32,
    chunks: u32,
    eps: f32,
    momentum: f32,
    ds: u32,
    dc: u32,
    _pad: [u32; 2],
}

/// Elements per workgroup of the elementwise kernels (normalize, dx): 256 lanes x 8.
const TILE: usize = 2048;

/// The non-learned state of a batch-norm layer: running statistics (updated in place by every
/// training-mode forward), `eps` added to the variance, and the running-average `momentum`.
pub struct BatchNorm {
    /// `[C]`, starts at 0.
    pub running_mean: Tensor,
    /// `[C]`, starts at 1.
    pub running_var: Tensor,
    /// Default 1e-5.
    pub eps: f32,
    /// Default 0.1 (PyTorch convention: weight of the new batch).
    pub momentum: f32,
}

impl BatchNorm {
    pub fn new(dev: &Device, channels: usize) -> Result<BatchNorm> {
        Ok(BatchNorm {
            running_mean: Tensor::zeros(dev, &[channels])?,
            running_var: Tensor::full(dev, &[channels], 1.0)?,
            eps: 1e-5,
            momentum: 0.1,
        })
    }
    pub fn channels(&self) -> usize {
        self.running_mean.numel()
    }
}

/// The geometry of one call: channels, spatial size, elements per channel, chunks per channel.
#[derive(Clone, Copy)]
struct Geom {
    c: usize,
    s: usize,
    m: usize,
    chunk: usize,
    chunks: usize,
}

impl Geom {
    fn params(&self, n: usize, eps: f32, momentum: f32) -> Params {
        Params {
            c: self.c as u32,
            s: self.s as u32,
            m: self.m as u32,
            n: n as u32,
            chunk: self.chunk as u32,
            chunks: self.chunks as u32,
            eps,
            momentum,
            // The elementwise kernels step each lane by 256 elements: 256 = (256 / s) * s + 256 % s.
            ds: (256 % self.s.max(1)) as u32,
            dc: ((256 / self.s.max(1)) % self.c.max(1)) as u32,
            _pad: [0; 2],
        }
    }
}

impl Geom {
    /// An elementwise kernel over all `numel` elements, `entries` = (its f32 form, its vec4 form):
    /// the vec4 one where S is a multiple of 4 (a vec4 then never straddles two channels), with
    /// its params and workgroups.
    fn elementwise(
        &self,
        entries: (&'static str, &'static str),
        numel: usize,
        eps: f32,
        momentum: f32,
    ) -> (&'static str, Params, [u32; 3]) {
        if self.s.is_multiple_of(4) {
            let mut p = Geom { s: self.s / 4, ..*self }.params(numel / 4, eps, momentum);
            p.m = self.m as u32; // the statistics still count elements
            (entries.1, p, groups_1d(numel / 4, TILE as u32))
        } else {
            (entries.0, self.params(numel, eps, momentum), groups_1d(numel, TILE as u32))
        }
    }
}

fn geometry(op: &'static str, x: &Tensor, variant: Variant) -> Result<Geom> {
    x.expect(op, DType::F32)?;
    if x.dims() < 2 {
        return Err(Error::shape(op, format!("x must be [N, C] or [N, C, H, W], got {:?}", x.shape())));
    }
    let c = x.shape()[1];
    let s: usize = x.shape()[2..].iter().product();
    let m = x.shape()[0] * s;
    let chunk = variant.chunk();
    Ok(Geom { c, s, m, chunk, chunks: m.div_ceil(chunk).max(1) })
}

fn check_channel_vec(op: &'static str, what: &str, t: &Tensor, x: &Tensor) -> Result<()> {
    t.expect(op, DType::F32)?;
    if t.shape() != [x.shape()[1]] {
        return Err(Error::shape(
            op,
            format!("{what} has shape {:?}, expected [{}] for x of shape {:?}", t.shape(), x.shape()[1], x.shape()),
        ));
    }
    Ok(())
}

/// Forward pass: returns `y` (shape of `x`) and the statistics used, `stats` [2, C] (row 0 mean,
/// row 1 biased variance; the running statistics in evaluation mode). In training mode the
/// running statistics of `bn` are updated in place.
pub fn batch_norm(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    bn: &BatchNorm,
    training: bool,
) -> Result<(Tensor, Tensor)> {
    batch_norm_with(Variant::for_device(x.device()), x, gamma, beta, bn, training)
}

/// [`batch_norm`] with the partial-sum variant forced.
pub fn batch_norm_with(
    variant: Variant,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    bn: &BatchNorm,
    training: bool,
) -> Result<(Tensor, Tensor)> {
    const OP: &str = "batch_norm";
    let g = geometry(OP, x, variant)?;
    check_channel_vec(OP, "gamma", gamma, x)?;
    check_channel_vec(OP, "beta", beta, x)?;
    check_channel_vec(OP, "running_mean", &bn.running_mean, x)?;
    check_channel_vec(OP, "running_var", &bn.running_var, x)?;
    let dev = x.device();
    let stats = Tensor::empty(dev, OP, &[2, g.c], DType::F32)?;
    if training {
        if g.m < 2 {
            return Err(Error::shape(
                OP,
                format!("training needs more than one value per channel, x has shape {:?}", x.shape()),
            ));
        }
        let items = g.c * g.chunks;
        let part = Tensor::empty(dev, OP, &[g.c, g.chunks, 2], DType::F32)?;
        let p = g.params(items, bn.eps, bn.momentum);
        let (entry, groups) = variant.partial(true, items);
        dev.dispatch(&SHADER, entry, &[], bytemuck::bytes_of(&p), &[x.bind(), part.bind()], groups);
        dev.dispatch(
            &SHADER,
            "stats_finalize",
            &[],
            bytemuck::bytes_of(&p),
            &[part.bind(), stats.bind(), bn.running_mean.bind(), bn.running_var.bind()],
            groups_1d(g.c, WG),
        );
    } else {
        // A snapshot, so that a later in-place update cannot change what backward sees.
        let p = g.params(g.c, bn.eps, bn.momentum);
        dev.dispatch(
            &SHADER,
            "eval_stats",
            &[],
            bytemuck::bytes_of(&p),
            &[bn.running_mean.bind(), bn.running_var.bind(), stats.bind()],
            groups_1d(g.c, WG),
        );
    }
    let y = Tensor::empty(dev, OP, x.shape(), DType::F32)?;
    let (entry, p, groups) = g.elementwise(("normalize", "normalize4"), x.numel(), bn.eps, bn.momentum);
    dev.dispatch(
        &SHADER,
        entry,
        &[],
        bytemuck::bytes_of(&p),
        &[x.bind(), stats.bind(), gamma.bind(), beta.bind(), y.bind()],
        groups,
    );
    Ok((y, stats))
}

/// Backward pass given the `stats` the forward returned: `(dx, dgamma, dbeta)`. In training mode
/// the batch statistics depend on x, which adds the two per-channel sums to dx; in evaluation mode
/// the normalisation is a fixed per-channel affine map.
pub fn batch_norm_backward(
    x: &Tensor,
    gy: &Tensor,
    stats: &Tensor,
    gamma: &Tensor,
    eps: f32,
    training: bool,
) -> Result<(Tensor, Tensor, Tensor)> {
    batch_norm_backward_with(Variant::for_device(x.device()), x, gy, stats, gamma, eps, training)
}

/// [`batch_norm_backward`] with the partial-sum variant forced.
pub fn batch_norm_backward_with(
    variant: Variant,
    x: &Tensor,
    gy: &Tensor,
    stats: &Tensor,
    gamma: &Tensor,
    eps: f32,
    training: bool,
) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "batch_norm_backward";
    let g = geometry(OP, x, variant)?;
    check_channel_vec(OP, "gamma", gamma, x)?;
    if gy.shape() != x.shape() || stats.shape() != [2, g.c] {
        return Err(Error::shape(
            OP,
            format!("gy {:?} and stats {:?} must be {:?} and [2, {}]", gy.shape(), stats.shape(), x.shape(), g.c),
        ));
    }
    let dev = x.device();
    let items = g.c * g.chunks;
    let part = Tensor::empty(dev, OP, &[g.c, g.chunks, 2], DType::F32)?;
    let dbeta = Tensor::empty(dev, OP, &[g.c], DType::F32)?;
    let dgamma = Tensor::empty(dev, OP, &[g.c], DType::F32)?;
    let p = g.params(items, eps, 0.0);
    let (entry, groups) = variant.partial(false, items);
    dev.dispatch(
        &SHADER,
        entry,
        &[],
        bytemuck::bytes_of(&p),
        &[x.bind(), gy.bind(), stats.bind(), part.bind()],
        groups,
    );
    dev.dispatch(
        &SHADER,
        "grad_finalize",
        &[],
        bytemuck::bytes_of(&p),
        &[part.bind(), dbeta.bind(), dgamma.bind()],
        groups_1d(g.c, WG),
    );
    let dx = Tensor::empty(dev, OP, x.shape(), DType::F32)?;
    if training {
        let (entry, p, groups) = g.elementwise(("dx_train", "dx_train4"), x.numel(), eps, 0.0);
        dev.dispatch(
            &SHADER,
            entry,
            &[],
            bytemuck::bytes_of(&p),
            &[x.bind(), gy.bind(), stats.bind(), gamma.bind(), dbeta.bind(), dgamma.bind(), dx.bind()],
            groups,
        );
    } else {
        let (entry, p, groups) = g.elementwise(("dx_eval", "dx_eval4"), x.numel(), eps, 0.0);
        dev.dispatch(
            &SHADER,
            entry,
            &[],
            bytemuck::bytes_of(&p),
            &[gy.bind(), stats.bind(), gamma.bind(), dx.bind()],
            groups,
        );
    }
    Ok((dx, dgamma, dbeta))
}

impl Var {
    /// Batch norm over axis 1 with affine `gamma`, `beta` `[C]`. Training mode normalises with the
    /// batch statistics and updates `bn`'s running statistics in place; evaluation mode uses the
    /// running statistics. Gradients flow to x, gamma and beta in both modes.
    pub fn batch_norm(&self, gamma: &Var, beta: &Var, bn: &BatchNorm, training: bool) -> Result<Var> {
        let (y, stats) = batch_norm(self.value(), gamma.value(), beta.value(), bn, training)?;
        let (x, g, eps) = (self.value().clone(), gamma.value().clone(), bn.eps);
        Ok(self.tape().op(y, &[self, gamma, beta], move |gy| {
            let (dx, dgamma, dbeta) = batch_norm_backward(&x, gy, &stats, &g, eps, training)?;
            Ok(vec![Some(dx), Some(dgamma), Some(dbeta)])
        }))
    }
}

/// f64 references on flat row-major data; `shape` is x's shape ([N, C, ...]).
pub mod cpu {
    fn split(shape: &[usize]) -> (usize, usize, usize) {
        (shape[0], shape[1], shape[2..].iter().product())
    }

    /// Per-channel mean and biased variance over N and the spatial dims (two-pass).
    pub fn channel_stats(x: &[f64], shape: &[usize]) -> (Vec<f64>, Vec<f64>) {
        let (n, c, s) = split(shape);
        let m = (n * s) as f64;
        let mut mean = vec![0.0; c];
        let mut var = vec![0.0; c];
        for ch in 0..c {
            let vals = || (0..n).flat_map(move |b| (0..s).map(move |i| x[(b * c + ch) * s + i]));
            mean[ch] = vals().sum::<f64>() / m;
            var[ch] = vals().map(|v| (v - mean[ch]).powi(2)).sum::<f64>() / m;
        }
        (mean, var)
    }

    /// y = (x - mean) / sqrt(var + eps) * gamma + beta with the given per-channel statistics.
    pub fn normalize(
        x: &[f64],
        shape: &[usize],
        gamma: &[f64],
        beta: &[f64],
        mean: &[f64],
        var: &[f64],
        eps: f64,
    ) -> Vec<f64> {
        let (_, c, s) = split(shape);
        x.iter()
            .enumerate()
            .map(|(i, &v)| {
                let ch = (i / s) % c;
                (v - mean[ch]) / (var[ch] + eps).sqrt() * gamma[ch] + beta[ch]
            })
            .collect()
    }

    /// Training-mode forward: `(y, batch mean, biased batch variance)`.
    pub fn batch_norm_train(
        x: &[f64],
        shape: &[usize],
        gamma: &[f64],
        beta: &[f64],
        eps: f64,
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let (mean, var) = channel_stats(x, shape);
        (normalize(x, shape, gamma, beta, &mean, &var, eps), mean, var)
    }

    /// The running statistics after one training step over a batch with `m` values per channel.
    pub fn update_running(
        running_mean: &[f64],
        running_var: &[f64],
        mean: &[f64],
        var_biased: &[f64],
        m: usize,
        momentum: f64,
    ) -> (Vec<f64>, Vec<f64>) {
        let unbiased = m as f64 / (m as f64 - 1.0);
        let rm = running_mean.iter().zip(mean).map(|(r, b)| (1.0 - momentum) * r + momentum * b).collect();
        let rv =
            running_var.iter().zip(var_biased).map(|(r, b)| (1.0 - momentum) * r + momentum * b * unbiased).collect();
        (rm, rv)
    }

    /// Analytic gradients `(dx, dgamma, dbeta)` for the statistics `mean`, `var` (biased) the
    /// forward used; `training` adds the dependence of the batch statistics on x.
    #[allow(clippy::too_many_arguments)]
    pub fn batch_norm_backward(
        x: &[f64],
        shape: &[usize],
        gy: &[f64],
        gamma: &[f64],
        mean: &[f64],
        var: &[f64],
        eps: f64,
        training: bool,
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let (n, c, s) = split(shape);
        let m = (n * s) as f64;
        let rstd: Vec<f64> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
        let xhat = |i: usize| (x[i] - mean[(i / s) % c]) * rstd[(i / s) % c];
        let mut dgamma = vec![0.0; c];
        let mut dbeta = vec![0.0; c];
        for (i, g) in gy.iter().enumerate() {
            let ch = (i / s) % c;
            dbeta[ch] += g;
            dgamma[ch] += g * xhat(i);
        }
        let dx = (0..x.len())
            .map(|i| {
                let ch = (i / s) % c;
                if training {
                    gamma[ch] * rstd[ch] * (gy[i] - dbeta[ch] / m - xhat(i) * dgamma[ch] / m)
                } else {
                    gamma[ch] * rstd[ch] * gy[i]
                }
            })
            .collect();
        (dx, dgamma, dbeta)
    }
}
