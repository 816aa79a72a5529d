//! The residual CNN for Fashion-MNIST (`--model resnet`): a 3x3 stem, then stages of two basic
//! blocks (3x3 conv, batch norm, ReLU, 3x3 conv, batch norm, plus the shortcut, ReLU), the first
//! block of each later stage halving the map with stride 2 and a 1x1 strided shortcut; global
//! average pooling and a linear head. With widths 32/64/128 the last map is 7x7x128.
//!
//! Atom modeling attaches as in the small CNN: the last map's 49 cells are the tokens, the
//! importance head gates them, the flattened gated map is the latent z, and the head reads the
//! gated map's average over its cells.

use crate::atom::TokenMask;
use crate::autodiff::{Param, Tape, Var};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::nn::cnn::CnnOut;
use crate::nn::{sub_seed, BatchNorm2d, Conv2d, ImportanceHead, Linear};
use crate::tensor::Tensor;

/// Conv then batch norm.
struct ConvBn {
    conv: Conv2d,
    bn: BatchNorm2d,
}

impl ConvBn {
    #[allow(clippy::too_many_arguments)]
    fn new(dev: &Device, name: &str, cin: usize, cout: usize, k: usize, stride: usize, seed: u64) -> Result<ConvBn> {
        Ok(ConvBn {
            conv: Conv2d::new(dev, &format!("{name}.conv"), cin, cout, k, stride, k / 2, seed)?,
            bn: BatchNorm2d::new(dev, &format!("{name}.bn"), cout)?,
        })
    }
    fn forward(&self, tape: &Tape, x: &Var, training: bool) -> Result<Var> {
        self.bn.forward(tape, &self.conv.forward(tape, x)?, training)
    }
    fn params(&self) -> Vec<Param> {
        [self.conv.params(), self.bn.params()].concat()
    }
    fn tensors(&self) -> Vec<(String, Tensor)> {
        [self.conv.tensors(), self.bn.tensors()].concat()
    }
}

/// `relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))`.
struct Block {
    a: ConvBn,
    b: ConvBn,
    /// 1x1 strided conv + batch norm where the block changes width or resolution.
    shortcut: Option<ConvBn>,
}

impl Block {
    fn forward(&self, tape: &Tape, x: &Var, training: bool) -> Result<Var> {
        let y = self.a.forward(tape, x, training)?.relu()?;
        let y = self.b.forward(tape, &y, training)?;
        let s = match &self.shortcut {
            Some(s) => s.forward(tape, x, training)?,
            None => x.clone(),
        };
        y.add(&s)?.relu()
    }
    fn parts(&self) -> Vec<&ConvBn> {
        let mut v = vec![&self.a, &self.b];
        v.extend(self.shortcut.as_ref());
        v
    }
}

pub struct ResNet {
    stem: ConvBn,
    blocks: Vec<Block>,
    pub head: Linear,
    pub importance: ImportanceHead,
    /// Channels of the last map (the token width m) and its side (7 for 28x28 inputs).
    pub channels: usize,
    pub side: usize,
}

impl ResNet {
    /// `[N, 1, 28, 28]` images; `widths` per stage (two blocks each; stages after the first
    /// halve the map), `classes` outputs.
    pub fn new(dev: &Device, widths: &[usize], classes: usize, seed: u64) -> Result<ResNet> {
        if widths.is_empty() || widths.contains(&0) {
            return Err(Error::Config(format!("resnet: stage widths must be >= 1, got {widths:?}")));
        }
        let mut blocks = Vec::new();
        let mut cin = widths[0];
        let mut side: usize = 28;
        for (s, &w) in widths.iter().enumerate() {
            for b in 0..2 {
                let stride = if s > 0 && b == 0 { 2 } else { 1 };
                let name = format!("stage{s}.block{b}");
                let k = |i: u64| sub_seed(seed, 100 * (s as u64 + 1) + 10 * b as u64 + i);
                let shortcut = (stride != 1 || cin != w)
                    .then(|| ConvBn::new(dev, &format!("{name}.shortcut"), cin, w, 1, stride, k(3)))
                    .transpose()?;
                blocks.push(Block {
                    a: ConvBn::new(dev, &format!("{name}.a"), cin, w, 3, stride, k(1))?,
                    b: ConvBn::new(dev, &format!("{name}.b"), w, w, 3, 1, k(2))?,
                    shortcut,
                });
                if stride == 2 {
                    side = side.div_ceil(2);
                }
                cin = w;
            }
        }
        Ok(ResNet {
            stem: ConvBn::new(dev, "stem", 1, widths[0], 3, 1, sub_seed(seed, 1))?,
            blocks,
            head: Linear::new(dev, "head", cin, classes, sub_seed(seed, 2))?,
            importance: ImportanceHead::new(dev, "importance", cin, sub_seed(seed, 3))?,
            channels: cin,
            side,
        })
    }

    /// Tokens per sample (the last map's cells).
    pub fn tokens(&self) -> usize {
        self.side * self.side
    }

    pub fn params(&self, gated: bool) -> Vec<Param> {
        let mut p = self.stem.params();
        for b in &self.blocks {
            for c in b.parts() {
                p.extend(c.params());
            }
        }
        p.extend(self.head.params());
        if gated {
            p.extend(self.importance.params());
        }
        p
    }

    /// Every tensor a checkpoint holds: parameters (the importance head's too) and every batch
    /// norm's running statistics.
    pub fn tensors(&self) -> Vec<(String, Tensor)> {
        let mut t = self.stem.tensors();
        for b in &self.blocks {
            for c in b.parts() {
                t.extend(c.tensors());
            }
        }
        t.extend(self.head.tensors());
        t.extend(self.importance.tensors());
        t
    }

    /// `x [N, 1, 28, 28]`; `mask` holds `tokens()` tokens per sample.
    pub fn forward(&self, tape: &Tape, x: &Var, training: bool, gated: bool, mask: &TokenMask) -> Result<CnnOut> {
        let n = x.shape()[0];
        let (c, t) = (self.channels, self.tokens());
        let mut y = self.stem.forward(tape, x, training)?.relu()?;
        for b in &self.blocks {
            y = b.forward(tape, &y, training)?;
        }
        // [N, C, s, s] -> tokens [N, s*s, C]
        let h = y.reshape(&[n, c, t])?.permute(&[0, 2, 1])?;
        let (w, g) = if gated {
            let w = self.importance.forward(tape, &h, mask)?;
            let g = y.mul(&w.reshape(&[n, 1, self.side, self.side])?)?;
            (Some(w), g)
        } else {
            (None, y)
        };
        let z = g.reshape(&[n, c * t])?;
        let pooled = g.reshape(&[n, c, t])?.mean(2, false)?;
        let logits = self.head.forward(tape, &pooled)?;
        Ok(CnnOut { h, w, z, logits })
    }
}
