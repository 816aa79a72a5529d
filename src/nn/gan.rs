//! GAN models with the atom-modeling gate on the generator (the spec's "GAN generator" row):
//! the tokens are the cells of an intermediate feature map of the generated batch, the importance
//! head gates them, the generator continues from the gated map, and the latent z is the flattened
//! gated map.
//!
//! - [`MlpGenerator`] / [`MlpDiscriminator`]: the 2-D mixture benchmark. The generator's last
//!   hidden layer (width `hidden`) is viewed as `tokens` tokens of `hidden / tokens` features.
//!
//! Discriminators take a `frozen` flag: frozen parameters enter the tape as constants, so the
//! generator's step neither computes nor stores gradients for them (and cannot change them).

use crate::atom::TokenMask;
use crate::autodiff::{Param, Tape, Var};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::nn::{sub_seed, ImportanceHead, Linear};

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

/// `noise -> hidden -> hidden -> out` with ReLU; the second hidden layer is the token map.
pub struct MlpGenerator {
    pub l1: Linear,
    pub l2: Linear,
    pub l3: Linear,
    pub importance: ImportanceHead,
    pub noise: usize,
    pub hidden: usize,
    pub tokens: usize,
}

impl MlpGenerator {
    /// `hidden` must be a multiple of `tokens`.
    pub fn new(
        dev: &Device,
        noise: usize,
        hidden: usize,
        out: usize,
        tokens: usize,
        seed: u64,
    ) -> Result<MlpGenerator> {
        if noise == 0 || out == 0 || tokens == 0 || hidden == 0 || !hidden.is_multiple_of(tokens) {
            return Err(Error::Config(format!(
                "MLP generator: need noise, out >= 1 and a hidden width that is a positive multiple of the \
                 token count; got noise {noise}, hidden {hidden}, out {out}, tokens {tokens}"
            )));
        }
        Ok(MlpGenerator {
            l1: Linear::new(dev, "g.l1", noise, hidden, sub_seed(seed, 1))?,
            l2: Linear::new(dev, "g.l2", hidden, hidden, sub_seed(seed, 2))?,
            l3: Linear::new(dev, "g.l3", hidden, out, sub_seed(seed, 3))?,
            importance: ImportanceHead::new(dev, "g.importance", hidden / tokens, sub_seed(seed, 4))?,
            noise,
            hidden,
            tokens,
        })
    }

    /// Features per token m.
    pub fn token_dim(&self) -> usize {
        self.hidden / self.tokens
    }

    /// The trainable parameters (the importance head only when gated).
    pub fn params(&self, gated: bool) -> Vec<Param> {
        let mut p = [self.l1.params(), self.l2.params(), self.l3.params()].concat();
        if gated {
            p.extend(self.importance.params());
        }
        p
    }

    /// `noise [N, noise]` -> samples `[N, out]`; `mask` holds `tokens` tokens for each of the N.
    pub fn forward(&self, tape: &Tape, noise: &Var, gated: bool, mask: &TokenMask) -> Result<GenOut> {
        let n = noise.shape()[0];
        let (t, m) = (self.tokens, self.token_dim());
        let a = linear(tape, &self.l1, noise, false)?.relu()?;
        let b = linear(tape, &self.l2, &a, false)?.relu()?;
        let h = b.reshape(&[n, t, m])?;
        let (w, z) = if gated {
            let w = self.importance.forward(tape, &h, mask)?;
            let g = h.mul(&w.reshape(&[n, t, 1])?)?.reshape(&[n, t * m])?;
            (Some(w), g)
        } else {
            (None, b)
        };
        let x = linear(tape, &self.l3, &z, false)?;
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

    pub fn params(&self) -> Vec<Param> {
        self.layers.iter().flat_map(|l| l.params()).collect()
    }

    /// Logits `[N, 1]`; with `frozen` the parameters are constants on the tape.
    pub fn forward(&self, tape: &Tape, x: &Var, frozen: bool) -> Result<Var> {
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
