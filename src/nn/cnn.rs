//! The image classifier: two conv + batch-norm + ReLU + max-pool blocks and a linear head, for
//! square images of any side divisible by 4 and any channel count (Fashion-MNIST: 1 x 28 x 28).
//! Atom modeling attaches to the last feature map: its (side/4)² cells (7 x 7 for Fashion-MNIST)
//! are the tokens, the importance head gates them, and the flattened gated map is the latent z the
//! head reads.

use crate::atom::TokenMask;
use crate::autodiff::{Param, Tape, Var};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::nn::{sub_seed, BatchNorm2d, Conv2d, ImportanceHead, Linear};
use crate::tensor::Tensor;

pub struct Cnn {
    pub c1: Conv2d,
    pub bn1: BatchNorm2d,
    pub c2: Conv2d,
    pub bn2: BatchNorm2d,
    pub head: Linear,
    pub importance: ImportanceHead,
    /// Channels of the last feature map (the token width m).
    pub channels: usize,
    /// Input channels and side of the images.
    pub in_channels: usize,
    pub side: usize,
}

/// What the losses and the importance maps need from one forward pass.
pub struct CnnOut {
    /// Tokens `[N, T, C]`: the T = (side/4)² cells of the last feature map (49 on Fashion-MNIST).
    pub h: Var,
    /// Importances `[N, T]` when gated.
    pub w: Option<Var>,
    /// Latent `[N, C * T]`.
    pub z: Var,
    pub logits: Var,
}

impl Cnn {
    /// `[N, 1, 28, 28]` images, `classes` outputs; `c1`, `c2` channels in the two blocks.
    pub fn new(dev: &Device, c1: usize, c2: usize, classes: usize, seed: u64) -> Result<Cnn> {
        Cnn::for_images(dev, 1, 28, c1, c2, classes, seed)
    }

    /// `[N, in_channels, side, side]` images (`side` divisible by 4), `classes` outputs.
    pub fn for_images(
        dev: &Device,
        in_channels: usize,
        side: usize,
        c1: usize,
        c2: usize,
        classes: usize,
        seed: u64,
    ) -> Result<Cnn> {
        if side < 4 || !side.is_multiple_of(4) || in_channels == 0 {
            return Err(Error::Config(format!(
                "cnn: images must have a side divisible by 4 (two 2x2 poolings) and at least one channel; got \
                 {in_channels} x {side} x {side}"
            )));
        }
        let tokens = (side / 4) * (side / 4);
        Ok(Cnn {
            c1: Conv2d::new(dev, "conv1", in_channels, c1, 3, 1, 1, sub_seed(seed, 1))?,
            bn1: BatchNorm2d::new(dev, "bn1", c1)?,
            c2: Conv2d::new(dev, "conv2", c1, c2, 3, 1, 1, sub_seed(seed, 2))?,
            bn2: BatchNorm2d::new(dev, "bn2", c2)?,
            head: Linear::new(dev, "head", c2 * tokens, classes, sub_seed(seed, 3))?,
            importance: ImportanceHead::new(dev, "importance", c2, sub_seed(seed, 4))?,
            channels: c2,
            in_channels,
            side,
        })
    }

    /// Tokens per image: the cells of the last feature map, `(side / 4)²`.
    pub fn tokens(&self) -> usize {
        (self.side / 4) * (self.side / 4)
    }

    pub fn params(&self, gated: bool) -> Vec<Param> {
        let mut p =
            [self.c1.params(), self.bn1.params(), self.c2.params(), self.bn2.params(), self.head.params()].concat();
        if gated {
            p.extend(self.importance.params());
        }
        p
    }

    /// Every tensor a checkpoint holds, by stable unique names: all parameters (the importance
    /// head's too, gated or not) and both batch norms' running statistics.
    pub fn tensors(&self) -> Vec<(String, Tensor)> {
        [
            self.c1.tensors(),
            self.bn1.tensors(),
            self.c2.tensors(),
            self.bn2.tensors(),
            self.head.tensors(),
            self.importance.tensors(),
        ]
        .concat()
    }

    /// `x [N, in_channels, side, side]`; `mask` holds [`Cnn::tokens`] tokens per sample.
    pub fn forward(&self, tape: &Tape, x: &Var, training: bool, gated: bool, mask: &TokenMask) -> Result<CnnOut> {
        let n = x.shape()[0];
        let c = self.channels;
        let (t, g) = (self.tokens(), self.side / 4);
        let a =
            self.bn1.forward(tape, &self.c1.forward(tape, x)?, training)?.relu()?.max_pool2d((2, 2), (2, 2), (0, 0))?;
        let b = self.bn2.forward(tape, &self.c2.forward(tape, &a)?, training)?.relu()?.max_pool2d(
            (2, 2),
            (2, 2),
            (0, 0),
        )?;
        // [N, C, g, g] -> tokens [N, g * g, C]
        let h = b.reshape(&[n, c, t])?.permute(&[0, 2, 1])?;
        let (w, gated_map) = if gated {
            let w = self.importance.forward(tape, &h, mask)?;
            let gm = b.mul(&w.reshape(&[n, 1, g, g])?)?;
            (Some(w), gm)
        } else {
            (None, b)
        };
        let z = gated_map.reshape(&[n, c * t])?;
        let logits = self.head.forward(tape, &z)?;
        Ok(CnnOut { h, w, z, logits })
    }
}
