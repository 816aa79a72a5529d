//! Layers built from tape ops. Each layer owns its [`Param`]s and lists them for optimizers and
//! checkpoints; initialisation runs on the GPU from a seed (`ops::random`), as PyTorch's defaults.

use crate::autodiff::{Param, Tape, Var};
use crate::device::Device;
use crate::error::Result;
use crate::tensor::Tensor;

/// Mixes a base seed with a layer's index so that every tensor gets its own stream.
pub fn sub_seed(seed: u64, index: u64) -> u64 {
    let mut z = seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z ^ (z >> 27)
}

/// `y = x W + b` for `x: [.., in]`, `W: [in, out]`, `b: [out]`; W and b ~ U(-1/sqrt(in), 1/sqrt(in)).
pub struct Linear {
    pub w: Param,
    pub b: Param,
}

impl Linear {
    pub fn new(dev: &Device, name: &str, fan_in: usize, fan_out: usize, seed: u64) -> Result<Linear> {
        let bound = 1.0 / (fan_in as f32).sqrt();
        Ok(Linear {
            w: Param::new(
                format!("{name}.w"),
                Tensor::rand_uniform(dev, &[fan_in, fan_out], -bound, bound, sub_seed(seed, 0))?,
            ),
            b: Param::new(
                format!("{name}.b"),
                Tensor::rand_uniform(dev, &[fan_out], -bound, bound, sub_seed(seed, 1))?,
            ),
        })
    }
    pub fn forward(&self, tape: &Tape, x: &Var) -> Result<Var> {
        x.matmul(&tape.param(&self.w))?.add(&tape.param(&self.b))
    }
    pub fn params(&self) -> Vec<Param> {
        vec![self.w.clone(), self.b.clone()]
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Relu,
    Tanh,
    Gelu,
}

impl Activation {
    pub fn apply(self, x: &Var) -> Result<Var> {
        match self {
            Activation::Relu => x.relu(),
            Activation::Tanh => x.tanh(),
            Activation::Gelu => x.gelu(),
        }
    }
}

/// Linear layers with an activation between them (none after the last).
pub struct Mlp {
    pub layers: Vec<Linear>,
    pub act: Activation,
}

impl Mlp {
    /// `sizes = [in, hidden.., out]`.
    pub fn new(dev: &Device, name: &str, sizes: &[usize], act: Activation, seed: u64) -> Result<Mlp> {
        let layers = sizes
            .windows(2)
            .enumerate()
            .map(|(i, w)| Linear::new(dev, &format!("{name}.{i}"), w[0], w[1], sub_seed(seed, i as u64 + 100)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Mlp { layers, act })
    }
    pub fn forward(&self, tape: &Tape, x: &Var) -> Result<Var> {
        let mut h = x.clone();
        for (i, l) in self.layers.iter().enumerate() {
            h = l.forward(tape, &h)?;
            if i + 1 < self.layers.len() {
                h = self.act.apply(&h)?;
            }
        }
        Ok(h)
    }
    pub fn params(&self) -> Vec<Param> {
        self.layers.iter().flat_map(|l| l.params()).collect()
    }
}
