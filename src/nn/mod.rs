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

/// `(name, value)` of each parameter: the listing checkpoints save and restore.
pub fn named(params: &[Param]) -> Vec<(String, Tensor)> {
    params.iter().map(|p| (p.name(), p.value())).collect()
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
    /// Every tensor a checkpoint holds, by its stable unique name (the parameters).
    pub fn tensors(&self) -> Vec<(String, Tensor)> {
        named(&self.params())
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
    /// Every tensor a checkpoint holds, by its stable unique name (`<name>.<layer>.w`, `.b`).
    pub fn tensors(&self) -> Vec<(String, Tensor)> {
        named(&self.params())
    }
}

pub mod cnn;
pub mod gan;
pub mod resnet;
pub mod transformer;

/// A learned per-channel scale and shift with running statistics (batch norm).
pub struct BatchNorm2d {
    pub gamma: Param,
    pub beta: Param,
    pub state: crate::ops::batchnorm::BatchNorm,
}

impl BatchNorm2d {
    pub fn new(dev: &Device, name: &str, channels: usize) -> Result<BatchNorm2d> {
        Ok(BatchNorm2d {
            gamma: Param::new(format!("{name}.gamma"), Tensor::full(dev, &[channels], 1.0)?),
            beta: Param::new(format!("{name}.beta"), Tensor::zeros(dev, &[channels])?),
            state: crate::ops::batchnorm::BatchNorm::new(dev, channels)?,
        })
    }
    pub fn forward(&self, tape: &Tape, x: &Var, training: bool) -> Result<Var> {
        x.batch_norm(&tape.param(&self.gamma), &tape.param(&self.beta), &self.state, training)
    }
    pub fn params(&self) -> Vec<Param> {
        vec![self.gamma.clone(), self.beta.clone()]
    }
    /// Every tensor a checkpoint holds: `<name>.gamma`, `<name>.beta` and the running statistics
    /// `<name>.running_mean`, `<name>.running_var` (buffers, not parameters).
    pub fn tensors(&self) -> Vec<(String, Tensor)> {
        let gamma = self.gamma.name();
        let base = gamma.strip_suffix(".gamma").unwrap_or(&gamma);
        let mut t = named(&self.params());
        t.push((format!("{base}.running_mean"), self.state.running_mean.clone()));
        t.push((format!("{base}.running_var"), self.state.running_var.clone()));
        t
    }
}

/// A 2-D convolution `[O, C, k, k]` with bias, W ~ U(-1/sqrt(C k k), 1/sqrt(C k k)) as PyTorch.
pub struct Conv2d {
    pub w: Param,
    pub b: Param,
    pub stride: usize,
    pub padding: usize,
}

impl Conv2d {
    #[allow(clippy::too_many_arguments)] // the usual conv hyper-parameters, as in PyTorch
    pub fn new(
        dev: &Device,
        name: &str,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        padding: usize,
        seed: u64,
    ) -> Result<Conv2d> {
        let bound = 1.0 / ((cin * k * k) as f32).sqrt();
        Ok(Conv2d {
            w: Param::new(
                format!("{name}.w"),
                Tensor::rand_uniform(dev, &[cout, cin, k, k], -bound, bound, sub_seed(seed, 0))?,
            ),
            b: Param::new(
                format!("{name}.b"),
                Tensor::rand_uniform(dev, &[cout, 1, 1], -bound, bound, sub_seed(seed, 1))?,
            ),
            stride,
            padding,
        })
    }
    pub fn forward(&self, tape: &Tape, x: &Var) -> Result<Var> {
        let (s, p) = ((self.stride, self.stride), (self.padding, self.padding));
        x.conv2d(&tape.param(&self.w), s, p)?.add(&tape.param(&self.b))
    }
    pub fn params(&self) -> Vec<Param> {
        vec![self.w.clone(), self.b.clone()]
    }
    /// Every tensor a checkpoint holds, by its stable unique name (the parameters).
    pub fn tensors(&self) -> Vec<(String, Tensor)> {
        named(&self.params())
    }
}

/// Layer norm over the last axis with learned gain and bias.
pub struct LayerNorm {
    pub gamma: Param,
    pub beta: Param,
}

impl LayerNorm {
    pub fn new(dev: &Device, name: &str, d: usize) -> Result<LayerNorm> {
        Ok(LayerNorm {
            gamma: Param::new(format!("{name}.gamma"), Tensor::full(dev, &[d], 1.0)?),
            beta: Param::new(format!("{name}.beta"), Tensor::zeros(dev, &[d])?),
        })
    }
    pub fn forward(&self, tape: &Tape, x: &Var) -> Result<Var> {
        x.layer_norm(&tape.param(&self.gamma), &tape.param(&self.beta), crate::ops::layernorm::DEFAULT_EPS)
    }
    pub fn params(&self) -> Vec<Param> {
        vec![self.gamma.clone(), self.beta.clone()]
    }
    /// Every tensor a checkpoint holds, by its stable unique name (the parameters).
    pub fn tensors(&self) -> Vec<(String, Tensor)> {
        named(&self.params())
    }
}

/// The atom-modeling importance head `w = sigmoid(h . u + c)` shared over tokens (the spec's S1);
/// padded tokens get exactly 0.
pub struct ImportanceHead {
    pub u: Param,
    pub c: Param,
}

impl ImportanceHead {
    pub fn new(dev: &Device, name: &str, m: usize, seed: u64) -> Result<ImportanceHead> {
        let bound = 1.0 / (m as f32).sqrt();
        Ok(ImportanceHead {
            u: Param::new(format!("{name}.u"), Tensor::rand_uniform(dev, &[m], -bound, bound, sub_seed(seed, 0))?),
            c: Param::new(format!("{name}.c"), Tensor::zeros(dev, &[1])?),
        })
    }
    /// `h [N, n, m]` -> `w [N, n]`.
    pub fn forward(&self, tape: &Tape, h: &Var, mask: &crate::atom::TokenMask) -> Result<Var> {
        crate::atom::importance(h, &tape.param(&self.u), &tape.param(&self.c), mask)
    }
    pub fn params(&self) -> Vec<Param> {
        vec![self.u.clone(), self.c.clone()]
    }
    /// Every tensor a checkpoint holds, by its stable unique name (the parameters).
    pub fn tensors(&self) -> Vec<(String, Tensor)> {
        named(&self.params())
    }
}
