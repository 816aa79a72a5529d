//! Layers built from tape ops. Each layer owns its [`Param`]s and lists them for optimizers and
//! checkpoints; initialisation runs on the GPU from a seed (`ops::random`), as PyTorch's defaults.
//!
//! Every layer with one input and one output implements [`Module`] (parameters, forward pass,
//! training or evaluation mode), so layers compose into a [`Sequential`] or a model of your own.
//! Layers take a name (their tensors' names in checkpoints) and a seed; a [`Builder`] hands out
//! both in creation order. The atom-modeling importance gate is [`ImportanceGate`]: it returns
//! the gated tokens and the importances the regulariser ([`crate::atom`]) needs.
//!
//! ```no_run
//! use atomgrad::nn::{Activation, Builder, Module, Sequential};
//! # fn main() -> atomgrad::Result<()> {
//! let dev = atomgrad::Device::new()?;
//! let mut b = Builder::new(&dev, 0);
//! let model = Sequential::new()
//!     .push(b.linear(2, 64)?)
//!     .push(Activation::Relu)
//!     .push(b.linear(64, 2)?);
//! let optimizer_params = model.params(); // linear0.w, linear0.b, linear1.w, linear1.b
//! # let _ = optimizer_params; Ok(()) }
//! ```

use crate::atom::TokenMask;
use crate::autodiff::{Param, Tape, Var};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// A layer or model with one input and one output: its trainable parameters, the tensors a
/// checkpoint holds, its forward pass on a [`Tape`], and its mode.
///
/// Layers whose forward pass needs more than one input (the importance gate's token mask, the
/// CNN's gating switch) keep inherent `forward` methods with those arguments. Where a layer also
/// has an inherent `forward` with other arguments ([`BatchNorm2d`]), call the trait's as
/// `Module::forward(&layer, tape, x)`.
pub trait Module {
    /// Records the forward pass of `x` on `tape`.
    fn forward(&self, tape: &Tape, x: &Var) -> Result<Var>;
    /// The trainable parameters, what an optimizer updates.
    fn params(&self) -> Vec<Param>;
    /// Every tensor a checkpoint holds, by a stable unique name: the parameters and any buffers
    /// (batch norm's running statistics).
    fn tensors(&self) -> Vec<(String, Tensor)> {
        named(&self.params())
    }
    /// Training mode (batch statistics, dropout active) or evaluation mode; layers without a mode
    /// ignore it. Models pass it on to their layers.
    fn set_training(&mut self, _training: bool) {}
}

impl<M: Module + ?Sized> Module for Box<M> {
    fn forward(&self, tape: &Tape, x: &Var) -> Result<Var> {
        (**self).forward(tape, x)
    }
    fn params(&self) -> Vec<Param> {
        (**self).params()
    }
    fn tensors(&self) -> Vec<(String, Tensor)> {
        (**self).tensors()
    }
    fn set_training(&mut self, training: bool) {
        (**self).set_training(training)
    }
}

/// Modules applied one after the other.
#[derive(Default)]
pub struct Sequential {
    pub layers: Vec<Box<dyn Module>>,
}

impl Sequential {
    pub fn new() -> Sequential {
        Sequential::default()
    }
    /// Appends a layer.
    pub fn push(mut self, layer: impl Module + 'static) -> Sequential {
        self.layers.push(Box::new(layer));
        self
    }
}

impl Module for Sequential {
    fn forward(&self, tape: &Tape, x: &Var) -> Result<Var> {
        let mut h = x.clone();
        for l in &self.layers {
            h = l.forward(tape, &h)?;
        }
        Ok(h)
    }
    fn params(&self) -> Vec<Param> {
        self.layers.iter().flat_map(|l| l.params()).collect()
    }
    fn tensors(&self) -> Vec<(String, Tensor)> {
        self.layers.iter().flat_map(|l| l.tensors()).collect()
    }
    fn set_training(&mut self, training: bool) {
        for l in &mut self.layers {
            l.set_training(training);
        }
    }
}

/// Creates layers with unique names (`linear0`, `conv1`, ..., numbered in creation order) and
/// their own seeds (drawn from one base seed with [`sub_seed`]): a model built twice with the
/// same seed in the same order has the same names and the same initial weights.
pub struct Builder {
    dev: Device,
    seed: u64,
    made: u64,
}

impl Builder {
    pub fn new(dev: &Device, seed: u64) -> Builder {
        Builder { dev: dev.clone(), seed, made: 0 }
    }
    /// The next layer's name (`<kind><k>`) and seed.
    pub fn next(&mut self, kind: &str) -> (String, u64) {
        let k = self.made;
        self.made += 1;
        (format!("{kind}{k}"), sub_seed(self.seed, k))
    }
    pub fn linear(&mut self, fan_in: usize, fan_out: usize) -> Result<Linear> {
        let (name, seed) = self.next("linear");
        Linear::new(&self.dev, &name, fan_in, fan_out, seed)
    }
    /// `sizes = [in, hidden.., out]`.
    pub fn mlp(&mut self, sizes: &[usize], act: Activation) -> Result<Mlp> {
        let (name, seed) = self.next("mlp");
        Mlp::new(&self.dev, &name, sizes, act, seed)
    }
    pub fn conv2d(&mut self, cin: usize, cout: usize, k: usize, stride: usize, padding: usize) -> Result<Conv2d> {
        let (name, seed) = self.next("conv");
        Conv2d::new(&self.dev, &name, cin, cout, k, stride, padding, seed)
    }
    pub fn batch_norm2d(&mut self, channels: usize) -> Result<BatchNorm2d> {
        let (name, _) = self.next("bn");
        BatchNorm2d::new(&self.dev, &name, channels)
    }
    pub fn layer_norm(&mut self, d: usize) -> Result<LayerNorm> {
        let (name, _) = self.next("ln");
        LayerNorm::new(&self.dev, &name, d)
    }
    /// The importance gate for tokens of `m` dims.
    pub fn importance_gate(&mut self, m: usize) -> Result<ImportanceGate> {
        let (name, seed) = self.next("gate");
        ImportanceGate::new(&self.dev, &name, m, seed)
    }
}

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

impl Module for Linear {
    fn forward(&self, tape: &Tape, x: &Var) -> Result<Var> {
        Linear::forward(self, tape, x)
    }
    fn params(&self) -> Vec<Param> {
        Linear::params(self)
    }
}

/// An elementwise nonlinearity (a [`Module`] without parameters).
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

impl Module for Activation {
    fn forward(&self, _tape: &Tape, x: &Var) -> Result<Var> {
        self.apply(x)
    }
    fn params(&self) -> Vec<Param> {
        Vec::new()
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

impl Module for Mlp {
    fn forward(&self, tape: &Tape, x: &Var) -> Result<Var> {
        Mlp::forward(self, tape, x)
    }
    fn params(&self) -> Vec<Param> {
        Mlp::params(self)
    }
}

pub mod cnn;
pub mod gan;
pub mod resnet;
pub mod transformer;

/// A learned per-channel scale and shift with running statistics (batch norm). As a
/// [`Module`] it normalises by batch statistics (updating the running ones) in training mode and
/// by the running statistics in evaluation mode; the inherent `forward` takes the mode as an
/// argument.
pub struct BatchNorm2d {
    pub gamma: Param,
    pub beta: Param,
    pub state: crate::ops::batchnorm::BatchNorm,
    /// The mode [`Module::forward`] uses (initially training).
    pub training: bool,
}

impl BatchNorm2d {
    pub fn new(dev: &Device, name: &str, channels: usize) -> Result<BatchNorm2d> {
        Ok(BatchNorm2d {
            gamma: Param::new(format!("{name}.gamma"), Tensor::full(dev, &[channels], 1.0)?),
            beta: Param::new(format!("{name}.beta"), Tensor::zeros(dev, &[channels])?),
            state: crate::ops::batchnorm::BatchNorm::new(dev, channels)?,
            training: true,
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

impl Module for BatchNorm2d {
    fn forward(&self, tape: &Tape, x: &Var) -> Result<Var> {
        BatchNorm2d::forward(self, tape, x, self.training)
    }
    fn params(&self) -> Vec<Param> {
        BatchNorm2d::params(self)
    }
    fn tensors(&self) -> Vec<(String, Tensor)> {
        BatchNorm2d::tensors(self)
    }
    fn set_training(&mut self, training: bool) {
        self.training = training;
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

impl Module for Conv2d {
    fn forward(&self, tape: &Tape, x: &Var) -> Result<Var> {
        Conv2d::forward(self, tape, x)
    }
    fn params(&self) -> Vec<Param> {
        Conv2d::params(self)
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

impl Module for LayerNorm {
    fn forward(&self, tape: &Tape, x: &Var) -> Result<Var> {
        LayerNorm::forward(self, tape, x)
    }
    fn params(&self) -> Vec<Param> {
        LayerNorm::params(self)
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

/// The atom-modeling importance gate: each token `h_Ai` of `h [N, n, m]` gets an importance
/// `w_Ai = sigmoid(h_Ai . u + c)` in (0, 1) (exactly 0 for padding, see [`TokenMask`]) and is
/// scaled by it. The gated tokens feed the model; the importances, with the tokens and the
/// latent, feed the regulariser ([`crate::atom::atom_regularizer`]).
pub struct ImportanceGate {
    pub head: ImportanceHead,
}

/// What [`ImportanceGate::forward`] returns.
pub struct Gated {
    /// `h * w`, `[N, n, m]`.
    pub tokens: Var,
    /// `w`, `[N, n]`.
    pub importance: Var,
}

impl ImportanceGate {
    /// A gate for tokens of `m` dims: `u ~ U(-1/sqrt(m), 1/sqrt(m))`, `c = 0` (every importance
    /// starts near 1/2).
    pub fn new(dev: &Device, name: &str, m: usize, seed: u64) -> Result<ImportanceGate> {
        Ok(ImportanceGate { head: ImportanceHead::new(dev, name, m, seed)? })
    }
    /// Gates tokens `h [N, n, m]`; `mask` gives each sample's real tokens
    /// ([`TokenMask::full`] when there is no padding).
    pub fn forward(&self, tape: &Tape, h: &Var, mask: &TokenMask) -> Result<Gated> {
        let s = h.shape();
        if s.len() != 3 {
            return Err(Error::shape("importance_gate", format!("tokens must be [N, n, m], got {s:?}")));
        }
        let w = self.head.forward(tape, h, mask)?;
        let tokens = h.mul(&w.reshape(&[s[0], s[1], 1])?)?;
        Ok(Gated { tokens, importance: w })
    }
    pub fn params(&self) -> Vec<Param> {
        self.head.params()
    }
    /// Every tensor a checkpoint holds, by its stable unique name (`<name>.u`, `<name>.c`).
    pub fn tensors(&self) -> Vec<(String, Tensor)> {
        self.head.tensors()
    }
}
