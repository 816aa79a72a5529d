//! The sentiment classifier: a Transformer encoder (token embedding + learned positions, pre-norm
//! blocks of multi-head self-attention with the padding mask and a GELU feed-forward), a final
//! layer norm, pooling over real tokens and a linear head. Atom modeling attaches to the final
//! hidden states of the real tokens; gated, the pooling is the importance-weighted mean.

use crate::atom::TokenMask;
use crate::autodiff::{Param, Tape, Var};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::nn::{sub_seed, ImportanceHead, LayerNorm, Linear};
use crate::ops::embedding::Indices;
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TransformerConfig {
    pub vocab: usize,
    pub max_len: usize,
    pub d: usize,
    pub heads: usize,
    pub layers: usize,
    pub ff: usize,
    pub dropout: f32,
    pub classes: usize,
}

struct Block {
    ln1: LayerNorm,
    qkv: Linear,
    proj: Linear,
    ln2: LayerNorm,
    ff1: Linear,
    ff2: Linear,
}

pub struct Transformer {
    pub cfg: TransformerConfig,
    emb: Param,
    pos: Param,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    head: Linear,
    pub importance: ImportanceHead,
}

pub struct TransformerOut {
    /// Final hidden states `[N, L, d]` (padded positions are ignored downstream).
    pub h: Var,
    pub w: Option<Var>,
    /// Pooled latent `[N, d]`.
    pub z: Var,
    pub logits: Var,
}

impl Transformer {
    pub fn new(dev: &Device, cfg: TransformerConfig, seed: u64) -> Result<Transformer> {
        if cfg.heads == 0 || !cfg.d.is_multiple_of(cfg.heads) {
            return Err(Error::Config(format!(
                "transformer: d = {} must be a multiple of heads = {}",
                cfg.d, cfg.heads
            )));
        }
        let d = cfg.d;
        let blocks = (0..cfg.layers)
            .map(|l| {
                let s = |i| sub_seed(seed, 100 * (l as u64 + 1) + i);
                Ok(Block {
                    ln1: LayerNorm::new(dev, &format!("block{l}.ln1"), d)?,
                    qkv: Linear::new(dev, &format!("block{l}.qkv"), d, 3 * d, s(1))?,
                    proj: Linear::new(dev, &format!("block{l}.proj"), d, d, s(2))?,
                    ln2: LayerNorm::new(dev, &format!("block{l}.ln2"), d)?,
                    ff1: Linear::new(dev, &format!("block{l}.ff1"), d, cfg.ff, s(3))?,
                    ff2: Linear::new(dev, &format!("block{l}.ff2"), cfg.ff, d, s(4))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Transformer {
            emb: Param::new("emb", Tensor::rand_normal(dev, &[cfg.vocab, d], 0.0, 0.02, sub_seed(seed, 1))?),
            pos: Param::new("pos", Tensor::rand_normal(dev, &[cfg.max_len, d], 0.0, 0.02, sub_seed(seed, 2))?),
            blocks,
            ln_f: LayerNorm::new(dev, "ln_f", d)?,
            head: Linear::new(dev, "head", d, cfg.classes, sub_seed(seed, 3))?,
            importance: ImportanceHead::new(dev, "importance", d, sub_seed(seed, 4))?,
            cfg,
        })
    }

    pub fn params(&self, gated: bool) -> Vec<Param> {
        let mut p = vec![self.emb.clone(), self.pos.clone()];
        for b in &self.blocks {
            for l in [&b.qkv, &b.proj, &b.ff1, &b.ff2] {
                p.extend(l.params());
            }
            p.extend(b.ln1.params());
            p.extend(b.ln2.params());
        }
        p.extend(self.ln_f.params());
        p.extend(self.head.params());
        if gated {
            p.extend(self.importance.params());
        }
        p
    }

    /// Every tensor a checkpoint holds, by stable unique names (`emb`, `pos`, `block<l>.*`,
    /// `ln_f.*`, `head.*`, `importance.*`): all parameters, the importance head's too.
    pub fn tensors(&self) -> Vec<(String, Tensor)> {
        crate::nn::named(&self.params(true))
    }

    /// `ids` of shape `[N, L]`; `mask` gives each sample's real-token count (padding at the end).
    /// `seed` drives dropout (ignored when not training).
    pub fn forward(
        &self,
        tape: &Tape,
        ids: &Indices,
        mask: &TokenMask,
        training: bool,
        gated: bool,
        seed: u64,
    ) -> Result<TransformerOut> {
        let (n, l) = (ids.shape[0], ids.shape[1]);
        let (d, heads) = (self.cfg.d, self.cfg.heads);
        let dh = d / heads;
        let p = self.cfg.dropout;
        let mut x = tape.param(&self.emb).embedding(ids)?.add(&tape.param(&self.pos).slice(0, 0, l)?)?;
        let key_mask = &mask.mask; // [N, L]: 1 real, 0 padding
        for (bi, b) in self.blocks.iter().enumerate() {
            let s = |i: u64| sub_seed(seed, 10 * bi as u64 + i);
            let qkv = b.qkv.forward(tape, &b.ln1.forward(tape, &x)?)?; // [N, L, 3d]
            let (q, k, v) =
                (qkv.split_heads(0, 3, heads)?, qkv.split_heads(1, 3, heads)?, qkv.split_heads(2, 3, heads)?); // [N, H, L, dh]
            let scores = q.matmul_t(&k, false, true)?.scale(1.0 / (dh as f32).sqrt())?; // [N, H, L, L]
            let att = scores.softmax(Some(key_mask))?.dropout(p, s(1), training)?;
            let o = att.matmul(&v)?.permute(&[0, 2, 1, 3])?.reshape(&[n, l, d])?;
            x = x.add(&b.proj.forward(tape, &o)?.dropout(p, s(2), training)?)?;
            let f = b.ff2.forward(tape, &b.ff1.forward(tape, &b.ln2.forward(tape, &x)?)?.gelu()?)?;
            x = x.add(&f.dropout(p, s(3), training)?)?;
        }
        let h = self.ln_f.forward(tape, &x)?;
        let (w, z) = if gated {
            // importance-weighted mean over real tokens: sum_i w_i h_i / sum_i w_i
            let w = self.importance.forward(tape, &h, mask)?; // [N, L], padding = 0
            let num = h.mul(&w.reshape(&[n, l, 1])?)?.sum(1, false)?; // [N, d]
            let den = w.sum(1, true)?.affine(1.0, 1e-6)?; // [N, 1]
            (Some(w), num.div(&den)?)
        } else {
            let m = tape.constant(key_mask.reshape(&[n, l, 1])?);
            let inv = tape.constant(mask.inv_counts.reshape(&[n, 1])?);
            (None, h.mul(&m)?.sum(1, false)?.mul(&inv)?)
        };
        let logits = self.head.forward(tape, &z)?;
        Ok(TransformerOut { h, w, z, logits })
    }
}
