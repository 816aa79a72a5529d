//! GAN models with the atom-modeling gate on the generator (the spec's "GAN generator" row):
//! the tokens are the cells of an intermediate feature map of the generated batch, the importance
//! head gates them, the generator continues from the gated map, and the latent z is the flattened
//! gated map.
//!
//! - [`MlpGenerator`] / [`MlpDiscriminator`]: the 2-D mixture benchmark. The generator's last
//!   hidden layer (width `hidden`) is viewed as `tokens` tokens of `hidden / tokens` features.
//! - [`DcGenerator`] / [`DcDiscriminator`]: DCGAN for 28x28 images. The generator's 7x7 map (after
//!   the first linear layer, batch norm and ReLU) has 49 cells of C features as tokens; it is gated
//!   and upsampled by two transposed convolutions (14x14 with batch norm and ReLU, 28x28 with tanh).
//!
//! Both pairs implement [`Generator`] / [`Discriminator`], which the training loop
//! (`experiments::gan`) is written against.
//! Discriminators take a `frozen` flag: frozen parameters enter the tape as constants, so the
//! generator's step neither computes nor stores gradients for them (and cannot change them).

use crate::atom::TokenMask;
use crate::autodiff::{Param, Tape, Var};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::nn::{named, sub_seed, BatchNorm2d, ImportanceHead, Linear};
use crate::tensor::Tensor;

/// A parameter on the tape: trainable, or a constant when `frozen`.
fn put(tape: &Tape, p: &Param, frozen: bool) -> Var {
    if frozen {
        tape.constant(p.value())
    } else {
        tape.param(p)
    }
}

/// `x W + b` with the layer's parameters frozen or not.
fn linear(tape: &Tape, l: &Linear, x: &Var, frozen: bool) -> Result<Var> {
    x.matmul(&put(tape, &l.w, frozen))?.add(&put(tape, &l.b, frozen))
}

/// A generator the GAN loop can train, with the atom gate on an intermediate feature map.
pub trait Generator {
    /// Noise width.
    fn noise(&self) -> usize;
    /// Tokens of the gated map per sample.
    fn tokens(&self) -> usize;
    /// Width of the latent z (the flattened gated map).
    fn latent_dim(&self) -> usize;
    /// The trainable parameters (the importance head only when gated).
    fn params(&self, gated: bool) -> Vec<Param>;
    /// Every tensor a checkpoint holds (all parameters, gated or not, and running statistics).
    fn tensors(&self) -> Vec<(String, Tensor)>;
    /// `noise [N, noise]` -> samples; `mask` holds [`Generator::tokens`] tokens for each of the N;
    /// `training` selects batch statistics (and updates running ones) in batch norm, if any.
    fn forward(&self, tape: &Tape, noise: &Var, gated: bool, mask: &TokenMask, training: bool) -> Result<GenOut>;
}

/// A discriminator: samples -> logits `[N, 1]`. With `frozen` its parameters enter the tape as
/// constants (the generator's step).
pub trait Discriminator {
    fn params(&self) -> Vec<Param>;
    /// Every tensor a checkpoint holds.
    fn tensors(&self) -> Vec<(String, Tensor)> {
        named(&self.params())
    }
    fn forward(&self, tape: &Tape, x: &Var, frozen: bool) -> Result<Var>;
}

impl Discriminator for Box<dyn Discriminator> {
    fn params(&self) -> Vec<Param> {
        (**self).params()
    }
    fn tensors(&self) -> Vec<(String, Tensor)> {
        (**self).tensors()
    }
    fn forward(&self, tape: &Tape, x: &Var, frozen: bool) -> Result<Var> {
        (**self).forward(tape, x, frozen)
    }
}

/// What the losses need from one generator pass.
pub struct GenOut {
    /// Tokens `[N, n, m]`: the intermediate feature map viewed as n cells of m features (ungated).
    pub h: Var,
    /// Importances `[N, n]` when gated.
    pub w: Option<Var>,
    /// Latent `[N, n * m]`: the flattened (gated) map the generator continues from.
    pub z: Var,
    /// Generated samples.
    pub x: Var,
}

/// `noise -> hidden (x depth) -> out` with ReLU (batch norm before it, optionally, as PacGAN's
/// generator); the last hidden layer is the token map.
pub struct MlpGenerator {
    pub layers: Vec<Linear>,
    /// One batch norm per hidden layer when asked.
    pub norms: Vec<BatchNorm2d>,
    pub out: Linear,
    pub importance: ImportanceHead,
    pub noise: usize,
    pub hidden: usize,
    pub tokens: usize,
}

impl MlpGenerator {
    /// Two hidden layers without batch norm. `hidden` must be a multiple of `tokens`.
    pub fn new(
        dev: &Device,
        noise: usize,
        hidden: usize,
        out: usize,
        tokens: usize,
        seed: u64,
    ) -> Result<MlpGenerator> {
        MlpGenerator::deep(dev, noise, hidden, 2, out, tokens, false, seed)
    }

    /// `depth` hidden layers, with batch norm before each ReLU when `batch_norm`.
    #[allow(clippy::too_many_arguments)]
    pub fn deep(
        dev: &Device,
        noise: usize,
        hidden: usize,
        depth: usize,
        out: usize,
        tokens: usize,
        batch_norm: bool,
        seed: u64,
    ) -> Result<MlpGenerator> {
        if noise == 0 || out == 0 || tokens == 0 || hidden == 0 || depth == 0 || !hidden.is_multiple_of(tokens) {
            return Err(Error::Config(format!(
                "MLP generator: need noise, out, depth >= 1 and a hidden width that is a positive multiple of the \
                 token count; got noise {noise}, hidden {hidden}, depth {depth}, out {out}, tokens {tokens}"
            )));
        }
        let layers = (0..depth)
            .map(|i| {
                let fan_in = if i == 0 { noise } else { hidden };
                Linear::new(dev, &format!("g.l{}", i + 1), fan_in, hidden, sub_seed(seed, i as u64 + 1))
            })
            .collect::<Result<Vec<_>>>()?;
        let norms = if batch_norm {
            (0..depth).map(|i| BatchNorm2d::new(dev, &format!("g.bn{}", i + 1), hidden)).collect::<Result<Vec<_>>>()?
        } else {
            Vec::new()
        };
        Ok(MlpGenerator {
            layers,
            norms,
            out: Linear::new(dev, &format!("g.l{}", depth + 1), hidden, out, sub_seed(seed, 90))?,
            importance: ImportanceHead::new(dev, "g.importance", hidden / tokens, sub_seed(seed, 91))?,
            noise,
            hidden,
            tokens,
        })
    }

    /// Features per token m.
    pub fn token_dim(&self) -> usize {
        self.hidden / self.tokens
    }
}

impl Generator for MlpGenerator {
    fn noise(&self) -> usize {
        self.noise
    }
    fn tokens(&self) -> usize {
        self.tokens
    }
    fn latent_dim(&self) -> usize {
        self.hidden
    }
    fn params(&self, gated: bool) -> Vec<Param> {
        let mut p: Vec<Param> = self.layers.iter().flat_map(|l| l.params()).collect();
        for bn in &self.norms {
            p.extend(bn.params());
        }
        p.extend(self.out.params());
        if gated {
            p.extend(self.importance.params());
        }
        p
    }
    fn tensors(&self) -> Vec<(String, Tensor)> {
        let mut t = named(&self.params(true));
        for bn in &self.norms {
            let all = bn.tensors();
            t.extend(all.into_iter().filter(|(k, _)| k.ends_with("running_mean") || k.ends_with("running_var")));
        }
        t
    }

    /// Samples `[N, out]`; `training` selects batch statistics in the batch norms, if any.
    fn forward(&self, tape: &Tape, noise: &Var, gated: bool, mask: &TokenMask, training: bool) -> Result<GenOut> {
        let n = noise.shape()[0];
        let (t, m) = (self.tokens, self.token_dim());
        let mut b = noise.clone();
        for (i, l) in self.layers.iter().enumerate() {
            b = linear(tape, l, &b, false)?;
            if let Some(bn) = self.norms.get(i) {
                b = bn.forward(tape, &b.reshape(&[n, self.hidden, 1, 1])?, training)?.reshape(&[n, self.hidden])?;
            }
            b = b.relu()?;
        }
        let h = b.reshape(&[n, t, m])?;
        let (w, z) = if gated {
            let w = self.importance.forward(tape, &h, mask)?;
            let g = h.mul(&w.reshape(&[n, t, 1])?)?.reshape(&[n, t * m])?;
            (Some(w), g)
        } else {
            (None, b)
        };
        let x = linear(tape, &self.out, &z, false)?;
        Ok(GenOut { h, w, z, x })
    }
}

/// `in -> hidden.. -> 1` logits with leaky ReLU between layers.
pub struct MlpDiscriminator {
    pub layers: Vec<Linear>,
    pub slope: f32,
}

impl MlpDiscriminator {
    /// `sizes = [in, hidden.., 1]`.
    pub fn new(dev: &Device, sizes: &[usize], slope: f32, seed: u64) -> Result<MlpDiscriminator> {
        if sizes.len() < 2 || sizes.contains(&0) || sizes[sizes.len() - 1] != 1 {
            return Err(Error::Config(format!(
                "MLP discriminator: sizes must be [in, hidden.., 1] with every width >= 1, got {sizes:?}"
            )));
        }
        let layers = sizes
            .windows(2)
            .enumerate()
            .map(|(i, w)| Linear::new(dev, &format!("d.{i}"), w[0], w[1], sub_seed(seed, i as u64 + 1)))
            .collect::<Result<Vec<_>>>()?;
        Ok(MlpDiscriminator { layers, slope })
    }
}

impl Discriminator for MlpDiscriminator {
    fn params(&self) -> Vec<Param> {
        self.layers.iter().flat_map(|l| l.params()).collect()
    }

    fn forward(&self, tape: &Tape, x: &Var, frozen: bool) -> Result<Var> {
        let mut h = x.clone();
        for (i, l) in self.layers.iter().enumerate() {
            h = linear(tape, l, &h, frozen)?;
            if i + 1 < self.layers.len() {
                h = h.leaky_relu(self.slope)?;
            }
        }
        Ok(h)
    }
}

/// PacGAN's 2-D discriminator: maxout layers of `hidden` units of `pieces` linear pieces each
/// (a linear layer to `hidden * pieces`, then the max over each unit's pieces), then a linear
/// layer to one logit.
pub struct MaxoutDiscriminator {
    pub layers: Vec<Linear>,
    pub out: Linear,
    pub hidden: usize,
    pub pieces: usize,
}

impl MaxoutDiscriminator {
    pub fn new(dev: &Device, input: usize, hidden: usize, pieces: usize, layers: usize, seed: u64) -> Result<Self> {
        if input == 0 || hidden == 0 || pieces == 0 || layers == 0 {
            return Err(Error::Config(format!(
                "maxout discriminator: need input, hidden, pieces and layers >= 1, got {input}, {hidden}, {pieces}, {layers}"
            )));
        }
        let layers = (0..layers)
            .map(|i| {
                let fan_in = if i == 0 { input } else { hidden };
                Linear::new(dev, &format!("d.maxout{i}"), fan_in, hidden * pieces, sub_seed(seed, i as u64 + 1))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(MaxoutDiscriminator {
            layers,
            out: Linear::new(dev, "d.out", hidden, 1, sub_seed(seed, 99))?,
            hidden,
            pieces,
        })
    }
}

impl Discriminator for MaxoutDiscriminator {
    fn params(&self) -> Vec<Param> {
        let mut p: Vec<Param> = self.layers.iter().flat_map(|l| l.params()).collect();
        p.extend(self.out.params());
        p
    }

    fn forward(&self, tape: &Tape, x: &Var, frozen: bool) -> Result<Var> {
        let n = x.shape()[0];
        let mut h = x.clone();
        for l in &self.layers {
            h = linear(tape, l, &h, frozen)?.reshape(&[n, self.hidden, self.pieces])?.max(2, false)?;
        }
        linear(tape, &self.out, &h, frozen)
    }
}

/// A weight ~ N(0, 0.02^2) (the DCGAN initialisation) and a zero bias `[C, 1, 1]`.
fn dc_params(dev: &Device, name: &str, shape: &[usize], bias: usize, seed: u64) -> Result<(Param, Param)> {
    Ok((
        Param::new(format!("{name}.w"), Tensor::rand_normal(dev, shape, 0.0, 0.02, seed)?),
        Param::new(format!("{name}.b"), Tensor::zeros(dev, &[bias, 1, 1])?),
    ))
}

/// DCGAN generator for `[N, 1, 28, 28]` images in [-1, 1]: linear to `[C, 7, 7]`, batch norm,
/// ReLU (the token map: 49 cells of C features, gated when asked); transposed convolution (k 4,
/// stride 2, padding 1) to `[C/2, 14, 14]`, batch norm, ReLU; then either (small) a transposed
/// convolution to `[1, 28, 28]` with bias, or (`deep`, the standard size) a transposed
/// convolution to `[C/4, 28, 28]`, batch norm, ReLU and a 3x3 convolution to `[1, 28, 28]` with
/// bias; tanh. Weights ~ N(0, 0.02^2) except the linear layer (PyTorch's default).
pub struct DcGenerator {
    pub fc: Linear,
    pub bn0: BatchNorm2d,
    pub up1: Param,
    pub bn1: BatchNorm2d,
    pub up2: Param,
    pub up2_b: Param,
    /// The deep form's last stage: batch norm after `up2` and the 3x3 output convolution.
    pub deep: Option<(BatchNorm2d, Param, Param)>,
    pub importance: ImportanceHead,
    pub noise: usize,
    pub channels: usize,
}

impl DcGenerator {
    /// `channels` C must be even and >= 2 (a multiple of 4 when `deep`).
    pub fn new(dev: &Device, noise: usize, channels: usize, seed: u64) -> Result<DcGenerator> {
        DcGenerator::with_depth(dev, noise, channels, false, seed)
    }

    /// The small (`deep: false`) or the standard-size (`deep: true`) generator.
    pub fn with_depth(dev: &Device, noise: usize, channels: usize, deep: bool, seed: u64) -> Result<DcGenerator> {
        let unit = if deep { 4 } else { 2 };
        if noise == 0 || channels < unit || !channels.is_multiple_of(unit) {
            return Err(Error::Config(format!(
                "DCGAN generator: need noise >= 1 and a channel count that is a multiple of {unit}, got noise {noise}, \
                 channels {channels}"
            )));
        }
        let c = channels;
        let (up1, _) = dc_params(dev, "g.up1", &[c, c / 2, 4, 4], c / 2, sub_seed(seed, 2))?;
        let out = if deep { c / 4 } else { 1 };
        let (up2, up2_b) = dc_params(dev, "g.up2", &[c / 2, out, 4, 4], out, sub_seed(seed, 3))?;
        let deep = if deep {
            let (w, b) = dc_params(dev, "g.out", &[1, c / 4, 3, 3], 1, sub_seed(seed, 5))?;
            Some((BatchNorm2d::new(dev, "g.bn2", c / 4)?, w, b))
        } else {
            None
        };
        Ok(DcGenerator {
            fc: Linear::new(dev, "g.fc", noise, c * 49, sub_seed(seed, 1))?,
            bn0: BatchNorm2d::new(dev, "g.bn0", c)?,
            up1,
            bn1: BatchNorm2d::new(dev, "g.bn1", c / 2)?,
            up2,
            up2_b,
            deep,
            importance: ImportanceHead::new(dev, "g.importance", c, sub_seed(seed, 4))?,
            noise,
            channels,
        })
    }
}

impl Generator for DcGenerator {
    /// Every tensor a checkpoint holds, by stable unique names: all parameters (the importance
    /// head's too, gated or not) and both batch norms' running statistics.
    fn tensors(&self) -> Vec<(String, Tensor)> {
        let mut t = [
            self.fc.tensors(),
            self.bn0.tensors(),
            named(std::slice::from_ref(&self.up1)),
            self.bn1.tensors(),
            named(&[self.up2.clone(), self.up2_b.clone()]),
            self.importance.tensors(),
        ]
        .concat();
        if let Some((bn, w, b)) = &self.deep {
            t.extend(bn.tensors());
            t.extend(named(&[w.clone(), b.clone()]));
        }
        t
    }
    fn noise(&self) -> usize {
        self.noise
    }
    fn tokens(&self) -> usize {
        49
    }
    fn latent_dim(&self) -> usize {
        self.channels * 49
    }
    fn params(&self, gated: bool) -> Vec<Param> {
        let mut p = [self.fc.params(), self.bn0.params(), vec![self.up1.clone()], self.bn1.params()].concat();
        p.extend([self.up2.clone(), self.up2_b.clone()]);
        if let Some((bn, w, b)) = &self.deep {
            p.extend(bn.params());
            p.extend([w.clone(), b.clone()]);
        }
        if gated {
            p.extend(self.importance.params());
        }
        p
    }

    fn forward(&self, tape: &Tape, noise: &Var, gated: bool, mask: &TokenMask, training: bool) -> Result<GenOut> {
        let (n, c) = (noise.shape()[0], self.channels);
        let a = self.fc.forward(tape, noise)?.reshape(&[n, c, 7, 7])?;
        let b = self.bn0.forward(tape, &a, training)?.relu()?;
        let h = b.reshape(&[n, c, 49])?.permute(&[0, 2, 1])?;
        let (w, g) = if gated {
            let w = self.importance.forward(tape, &h, mask)?;
            (Some(w.clone()), b.mul(&w.reshape(&[n, 1, 7, 7])?)?)
        } else {
            (None, b)
        };
        let z = g.reshape(&[n, c * 49])?;
        let u = g.conv_transpose2d(&tape.param(&self.up1), (2, 2), (1, 1), (0, 0))?;
        let u = self.bn1.forward(tape, &u, training)?.relu()?;
        let v = u.conv_transpose2d(&tape.param(&self.up2), (2, 2), (1, 1), (0, 0))?.add(&tape.param(&self.up2_b))?;
        let x = match &self.deep {
            None => v.tanh()?,
            Some((bn, ow, ob)) => {
                let v = bn.forward(tape, &v, training)?.relu()?;
                v.conv2d(&tape.param(ow), (1, 1), (1, 1))?.add(&tape.param(ob))?.tanh()?
            }
        };
        Ok(GenOut { h, w, z, x })
    }
}

/// DCGAN discriminator for `[N, 1, 28, 28]`: convolution (k 4, stride 2, padding 1) to
/// `[C/2, 14, 14]`, leaky ReLU; convolution to `[C, 7, 7]`, leaky ReLU; linear to one logit.
/// No batch norm, so real and fake batches can share one pass.
pub struct DcDiscriminator {
    pub c1: (Param, Param),
    pub c2: (Param, Param),
    /// The deep form's third convolution (k 3, stride 2, padding 1) to `[2C, 4, 4]`.
    pub c3: Option<(Param, Param)>,
    pub fc: Linear,
    pub slope: f32,
    pub channels: usize,
}

impl DcDiscriminator {
    pub fn new(dev: &Device, channels: usize, slope: f32, seed: u64) -> Result<DcDiscriminator> {
        DcDiscriminator::with_depth(dev, channels, slope, false, seed)
    }

    /// Small: `C/2 -> C` maps; deep (the standard size): `C/2 -> C -> 2C`, the last at 4x4.
    pub fn with_depth(dev: &Device, channels: usize, slope: f32, deep: bool, seed: u64) -> Result<DcDiscriminator> {
        if channels < 2 || !channels.is_multiple_of(2) {
            return Err(Error::Config(format!("DCGAN discriminator: need an even channel count >= 2, got {channels}")));
        }
        let c = channels;
        let c3 = deep.then(|| dc_params(dev, "d.c3", &[2 * c, c, 3, 3], 2 * c, sub_seed(seed, 4))).transpose()?;
        let flat = if deep { 2 * c * 16 } else { c * 49 };
        Ok(DcDiscriminator {
            c1: dc_params(dev, "d.c1", &[c / 2, 1, 4, 4], c / 2, sub_seed(seed, 1))?,
            c2: dc_params(dev, "d.c2", &[c, c / 2, 4, 4], c, sub_seed(seed, 2))?,
            c3,
            fc: Linear::new(dev, "d.fc", flat, 1, sub_seed(seed, 3))?,
            slope,
            channels,
        })
    }
}

impl Discriminator for DcDiscriminator {
    fn params(&self) -> Vec<Param> {
        let mut p = vec![self.c1.0.clone(), self.c1.1.clone(), self.c2.0.clone(), self.c2.1.clone()];
        if let Some((w, b)) = &self.c3 {
            p.extend([w.clone(), b.clone()]);
        }
        p.extend(self.fc.params());
        p
    }

    fn forward(&self, tape: &Tape, x: &Var, frozen: bool) -> Result<Var> {
        let n = x.shape()[0];
        let conv = |x: &Var, (w, b): &(Param, Param)| -> Result<Var> {
            x.conv2d(&put(tape, w, frozen), (2, 2), (1, 1))?.add(&put(tape, b, frozen))?.leaky_relu(self.slope)
        };
        let a = conv(x, &self.c1)?;
        let b = conv(&a, &self.c2)?;
        let flat = match &self.c3 {
            None => b.reshape(&[n, self.channels * 49])?,
            Some(c3) => conv(&b, c3)?.reshape(&[n, 2 * self.channels * 16])?,
        };
        linear(tape, &self.fc, &flat, frozen)
    }
}
