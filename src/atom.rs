//! The atom-modeling regulariser (shared/spec/atom-modeling.md) and its baselines, assembled from
//! tape ops on top of the kernels in [`crate::ops::atom`] (the pair algebra from d̄, S and W to
//! L_A, the budget C_w and the latents' normalisation are one fused op each).
//!
//! For latents `z [N, D]`, tokens `h [N, n, m]`, importances `w [N, n]` and token counts (a
//! [`TokenMask`]), with off-diagonal means `mean_{A != B}`:
//!
//! ```text
//! d̄_AB  = sqrt(|z_A - z_B|^2 + eps^2)          W_A = max(sum_i w_Ai, 1e-6)
//! k_AB  = S_AB / (W_A W_B),  S_AB = sum_i sum_j w_Ai w_Bj sqrt(|h_Ai - h_Bj|^2 + eps^2)
//! s     = mean_{A != B} d̄_AB                   kappa_AB = k_AB / mean_{A != B} k_AB
//! U_AB  = (s / d̄'_AB)^2 - 2 kappa_AB (s / d̄'_AB)       L_A = mean_{A != B} U_AB
//! d̄'    = d̄ without the soft floor, sqrt(d̄^2 + (s / r_max)^2) with it (s is the unfloored mean)
//! C_w   = mean_A [ relu(tau_lo - mean_i w_Ai)^2 + relu(mean_i w_Ai - tau_hi)^2 ]   (real tokens)
//! ```
//!
//! Both batch means (s and mean k) stay in the graph. The regulariser added to the task loss is
//! `lambda_at(step) * L_A + mu_w * C_w`. L_A takes no labels.
//!
//! Baselines on the same z: [`hinge_lp`] (`mean_{A != B} relu(margin - |z_A - z_B|_p)`, p = 1, 2)
//! and [`nt_xent`] (SimCLR's NT-Xent over two views). The f64 references are in [`cpu`].
//!
//! # Using it
//!
//! A model exposes its tokens `h`, their importances `w` (an [`crate::nn::ImportanceGate`] makes
//! both the importances and the gated tokens) and the latent `z` its head reads; a
//! [`TokenMask`] says which tokens are real ([`TokenMask::full`] without padding). The
//! regulariser is added to the task loss ([`AtomConfig`] holds its settings;
//! `examples/mlp_atom.rs` is a whole model):
//!
//! ```no_run
//! # use atomgrad::{atom::{atom_regularizer, AtomConfig, TokenMask}, nn::Builder, Device, Tape, Tensor};
//! # fn main() -> atomgrad::Result<()> {
//! # let dev = Device::new()?;
//! # let (tape, mut b, step) = (Tape::new(), Builder::new(&dev, 0), 0);
//! # let (gate, head) = (b.importance_gate(8)?, b.linear(32, 2)?);
//! # let labels = Tensor::from_u32(&dev, &[0, 1, 0, 1], &[4])?;
//! let h = tape.constant(Tensor::zeros(&dev, &[4, 4, 8])?); // tokens [N, n, m] from your encoder
//! let mask = TokenMask::full(&dev, 4, 4)?; // 4 samples of 4 real tokens
//! let gated = gate.forward(&tape, &h, &mask)?; // importances w [N, n], tokens h * w
//! let z = gated.tokens.reshape(&[4, 32])?; // the latent
//! let (reg, terms) = atom_regularizer(&z, &h, &gated.importance, &mask, &AtomConfig::default(), step)?;
//! let loss = head.forward(&tape, &z)?.cross_entropy(&labels)?.add(&reg)?;
//! # let _ = (loss, terms); Ok(()) }
//! ```

use crate::autodiff::Var;
use crate::error::{Error, Result};
use crate::ops::atom::{budget_var, pair_loss_var, spread_scale_var, structure_var};
use crate::tensor::Tensor;

pub use crate::ops::atom::{importance, Norm, TokenMask};

/// Floor on the importance mass `W_A` in every division.
pub const W_FLOOR: f32 = 1e-6;

/// Settings of the atom regulariser (defaults from the spec).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AtomConfig {
    /// Weight of L_A after warm-up (0.1).
    pub lambda: f32,
    /// Weight of the importance budget C_w (1.0).
    pub mu_w: f32,
    /// Floor in every distance (1e-3); must be > 0.
    pub eps: f32,
    /// Lower bound of a sample's mean importance (0.1).
    pub tau_lo: f32,
    /// Upper bound of a sample's mean importance (0.5).
    pub tau_hi: f32,
    /// Soft floor d̄' = sqrt(d̄^2 + (s / r_max)^2); `None` = off. Default `Some(20.0)`.
    pub r_max: Option<f32>,
    /// Steps over which lambda rises linearly from 0 (0 = no warm-up).
    pub warmup_steps: usize,
    /// Measure latent distances on `z / rms(z - mean z)` (default true). L_A is scale-invariant
    /// only up to eps: in a 2-D latent no spread of points can make all distances equal, so
    /// shrinking the whole batch below eps (where every d̄ is about eps, U = 1 - 2 kappa and
    /// L_A = -1) is the loss's global minimum; training found it (the synthetic task collapsed
    /// to a 1e-4 wide latent at 50% accuracy, docs/RESULTS.md). Fixing the batch's scale removes
    /// that path and leaves the loss unchanged otherwise.
    pub normalize: bool,
    /// Experimental (issue 21): the structure term k sees the importances (`detach_w`) or the
    /// tokens (`detach_h`) as constants, so L_A's gradient reaches them only through z.
    pub detach_w: bool,
    pub detach_h: bool,
}

impl Default for AtomConfig {
    fn default() -> Self {
        AtomConfig {
            lambda: 0.1,
            mu_w: 1.0,
            eps: 1e-3,
            tau_lo: 0.1,
            tau_hi: 0.5,
            r_max: Some(20.0),
            warmup_steps: 0,
            normalize: true,
            detach_w: false,
            detach_h: false,
        }
    }
}

impl AtomConfig {
    /// `lambda * min(1, step / warmup_steps)`: 0 at step 0, `lambda` from `warmup_steps` on.
    pub fn lambda_at(&self, step: usize) -> f32 {
        if self.warmup_steps == 0 || step >= self.warmup_steps {
            self.lambda
        } else {
            self.lambda * step as f32 / self.warmup_steps as f32
        }
    }

    /// Rejects non-finite weights, `eps <= 0`, `tau_lo > tau_hi` and `r_max <= 0`.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str| Err(Error::Config(format!("atom config: {what} ({self:?})")));
        if !(self.lambda.is_finite() && self.mu_w.is_finite() && self.tau_lo.is_finite() && self.tau_hi.is_finite()) {
            return bad("lambda, mu_w, tau_lo and tau_hi must be finite");
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return bad("eps must be finite and > 0");
        }
        if self.tau_lo > self.tau_hi {
            return bad("tau_lo must not exceed tau_hi");
        }
        if let Some(r) = self.r_max {
            if !(r.is_finite() && r > 0.0) {
                return bad("r_max must be finite and > 0 (None turns the soft floor off)");
            }
        }
        Ok(())
    }
}

/// The terms of one evaluation, as tape values (read back only when logged).
#[derive(Clone, Debug)]
pub struct AtomTerms {
    /// L_A (scalar).
    pub l_a: Var,
    /// Importance budget C_w (scalar).
    pub c_w: Var,
    /// `[s, mean_{A != B} k_AB]` `[2]`: the batch length scale s = mean_{A != B} d̄ and the mean
    /// structure distance (mean kappa is 1 by construction). Values only: gradients reach them
    /// through `l_a`.
    pub stats: Tensor,
    /// k_AB `[N, N]` (values only).
    pub k: Tensor,
    /// kappa_AB `[N, N]` (values only; its diagonal is not used).
    pub kappa: Tensor,
    /// d̄_AB `[N, N]` before the soft floor.
    pub dbar: Var,
    /// Mean importance of each sample over its real tokens `[N]`.
    pub mean_w: Var,
}

impl AtomTerms {
    /// `lambda_at(step) * L_A + mu_w * C_w`.
    pub fn regularizer(&self, cfg: &AtomConfig, step: usize) -> Result<Var> {
        self.l_a.scale(cfg.lambda_at(step))?.add(&self.c_w.scale(cfg.mu_w)?)
    }
}

/// `[N, N]` with 0 on the diagonal and 1 elsewhere.
fn off_diagonal(v: &Var, n: usize) -> Result<Tensor> {
    let mut m = vec![1f32; n * n];
    for a in 0..n {
        m[a * n + a] = 0.0;
    }
    Tensor::from_slice(v.value().device(), &m, &[n, n])
}

/// `mean_{A != B} x_AB` of `x [N, N]`, as a scalar of shape [].
fn off_mean(x: &Var, off: &Var, n: usize) -> Result<Var> {
    x.mul(off)?.sum_all()?.scale(1.0 / (n * (n - 1)) as f32)
}

/// The pair energy `U = (s / d)^2 - 2 kappa (s / d)` (broadcasting), the op L_A averages.
/// With s and kappa fixed it is minimal at `d = s / kappa` with value `-kappa^2`.
pub fn pair_energy(dbar: &Var, s: &Var, kappa: &Var) -> Result<Var> {
    let r = s.div(dbar)?;
    r.mul(&r)?.sub(&kappa.mul(&r)?.scale(2.0)?)
}

fn check_batch(op: &'static str, z: &Var, h: &Var, w: &Var, mask: &TokenMask) -> Result<usize> {
    let (zs, hs, ws) = (z.shape(), h.shape(), w.shape());
    let n = mask.samples();
    let t = mask.tokens();
    let ok = zs.len() == 2
        && zs[0] == n
        && zs[1] >= 1
        && hs.len() == 3
        && hs[0] == n
        && hs[1] == t
        && hs[2] >= 1
        && ws == [n, t];
    if !ok {
        return Err(Error::shape(
            op,
            format!(
                "needs z [N, D], h [N, n, m], w [N, n] and N token counts of n tokens; got z {zs:?}, h {hs:?}, \
                 w {ws:?} and {n} counts with n = {t}"
            ),
        ));
    }
    if n < 2 {
        return Err(Error::shape(op, format!("needs at least 2 samples to form pairs, got z {zs:?}")));
    }
    Ok(n)
}

/// Every term of the atom regulariser for one minibatch (see the module docs).
pub fn atom_terms(z: &Var, h: &Var, w: &Var, mask: &TokenMask, cfg: &AtomConfig) -> Result<AtomTerms> {
    cfg.validate()?;
    check_batch("atom_loss", z, h, w, mask)?;
    let z = if cfg.normalize { spread_scale_var(z)? } else { z.clone() };
    let dbar = z.pdist(Norm::Floored, cfg.eps)?;
    let wm = w.mask_tokens(mask)?;
    let wk = if cfg.detach_w { wm.detach() } else { wm.clone() };
    let hk = if cfg.detach_h { h.detach() } else { h.clone() };
    let wsum = wk.sum(1, false)?;
    let sm = structure_var(&hk, &wk, mask, cfg.eps)?;
    // max(W, W_FLOOR), s, the soft floor, k, kappa, U and their means: one kernel each way.
    let (l_a, pairs) = pair_loss_var(&dbar, &sm, &wsum, cfg.r_max, W_FLOOR)?;
    let (c_w, mean_w) = budget(&wm, mask, cfg.tau_lo, cfg.tau_hi)?;
    Ok(AtomTerms { l_a, c_w, stats: pairs.stats, k: pairs.k, kappa: pairs.kappa, dbar, mean_w })
}

/// L_A alone.
pub fn atom_loss(z: &Var, h: &Var, w: &Var, mask: &TokenMask, cfg: &AtomConfig) -> Result<Var> {
    Ok(atom_terms(z, h, w, mask, cfg)?.l_a)
}

/// `lambda_at(step) * L_A + mu_w * C_w` and the terms it was made of.
pub fn atom_regularizer(
    z: &Var,
    h: &Var,
    w: &Var,
    mask: &TokenMask,
    cfg: &AtomConfig,
    step: usize,
) -> Result<(Var, AtomTerms)> {
    let terms = atom_terms(z, h, w, mask, cfg)?;
    Ok((terms.regularizer(cfg, step)?, terms))
}

/// (C_w, mean importance per sample) for masked importances.
fn budget(wm: &Var, mask: &TokenMask, tau_lo: f32, tau_hi: f32) -> Result<(Var, Var)> {
    let inv = wm.tape().constant(mask.inv_counts.clone());
    let mw = wm.sum(1, false)?.mul(&inv)?;
    Ok((budget_var(&mw, tau_lo, tau_hi)?, mw))
}

/// The importance budget `C_w = mean_A [relu(tau_lo - mean_i w_Ai)^2 + relu(mean_i w_Ai - tau_hi)^2]`,
/// the mean over each sample's real tokens.
pub fn importance_budget(w: &Var, mask: &TokenMask, tau_lo: f32, tau_hi: f32) -> Result<Var> {
    Ok(budget(&w.mask_tokens(mask)?, mask, tau_lo, tau_hi)?.0)
}

fn check_pairs(op: &'static str, z: &Var) -> Result<usize> {
    match z.shape() {
        &[n, d] if n >= 2 && d >= 1 => Ok(n),
        s => Err(Error::shape(op, format!("latents z must be [N, D] with N >= 2 and D >= 1, got {s:?}"))),
    }
}

/// Hinge baseline `mean_{A != B} relu(margin - |z_A - z_B|_p)` for `p` = [`Norm::L1`] or [`Norm::L2`].
pub fn hinge_lp(z: &Var, p: Norm, margin: f32) -> Result<Var> {
    let n = check_pairs("hinge_lp", z)?;
    if p == Norm::Floored {
        return Err(Error::Config("hinge_lp: p must be Norm::L1 or Norm::L2".into()));
    }
    let off = z.tape().constant(off_diagonal(z, n)?);
    let d = z.pdist(p, 0.0)?;
    off_mean(&d.affine(-1.0, margin)?.relu()?, &off, n)
}

/// The NT-Xent temperature of the spec (0.5).
pub const NT_XENT_TAU: f32 = 0.5;

/// SimCLR's NT-Xent (Chen et al. 2020) over two views `z1, z2 [N, D']` (already projected by the
/// caller): rows are L2-normalised (`z / sqrt(|z|^2 + 1e-12)`), logits are cosine similarities / tau
/// over all 2N x 2N pairs with self-similarity masked out, and the loss is the mean over the 2N rows
/// of `-log softmax` at the other view of the same sample.
pub fn nt_xent(z1: &Var, z2: &Var, tau: f32) -> Result<Var> {
    if z1.shape() != z2.shape() || z1.shape().len() != 2 || z1.shape()[0] < 1 || z1.shape()[1] < 1 {
        return Err(Error::shape(
            "nt_xent",
            format!("needs two views of equal shape [N, D] (N, D >= 1), got {:?} and {:?}", z1.shape(), z2.shape()),
        ));
    }
    if !(tau.is_finite() && tau > 0.0) {
        return Err(Error::Config(format!("nt_xent: temperature must be finite and > 0, got {tau}")));
    }
    let n = z1.shape()[0];
    let dev = z1.value().device().clone();
    let z = Var::concat(&[z1, z2], 0)?;
    let norm = z.mul(&z)?.sum(1, true)?.affine(1.0, 1e-12)?.sqrt()?;
    let zn = z.div(&norm)?;
    let logits = zn.matmul_t(&zn, false, true)?.scale(1.0 / tau)?;
    let (mut keep, mut pos) = (vec![1f32; 4 * n * n], vec![0f32; 4 * n * n]);
    for r in 0..2 * n {
        keep[r * 2 * n + r] = 0.0;
        pos[r * 2 * n + (r + n) % (2 * n)] = 1.0;
    }
    let keep = Tensor::from_slice(&dev, &keep, &[2 * n, 2 * n])?;
    let pos = z1.tape().constant(Tensor::from_slice(&dev, &pos, &[2 * n, 2 * n])?);
    logits.log_softmax(Some(&keep))?.mul(&pos)?.sum_all()?.scale(-1.0 / (2 * n) as f32)
}

/// f64 references of the loss and its baselines.
pub mod cpu {
    use super::{AtomConfig, W_FLOOR};
    use crate::ops::atom::cpu as k;
    use crate::ops::atom::Norm;

    /// `U = (s / d)^2 - 2 kappa (s / d)`.
    pub fn pair_energy(d: f64, s: f64, kappa: f64) -> f64 {
        let r = s / d;
        r * r - 2.0 * kappa * r
    }

    /// Every term of [`super::atom_terms`] in f64.
    #[derive(Clone, Debug)]
    pub struct Terms {
        pub l_a: f64,
        pub c_w: f64,
        pub s: f64,
        pub mean_k: f64,
        pub k: Vec<f64>,
        pub kappa: Vec<f64>,
        pub dbar: Vec<f64>,
        pub u: Vec<f64>,
        pub mean_w: Vec<f64>,
    }

    fn off_mean(x: &[f64], n: usize) -> f64 {
        let mut s = 0.0;
        for a in 0..n {
            for b in 0..n {
                if a != b {
                    s += x[a * n + b];
                }
            }
        }
        s / (n * (n - 1)) as f64
    }

    /// The atom terms for `z [N, D]`, `h [N, n, m]`, `w [N, n]` (padded entries ignored).
    pub fn atom_terms(z: &[f64], d: usize, h: &[f64], w: &[f64], counts: &[usize], cfg: &AtomConfig) -> Terms {
        let ns = counts.len();
        let n = w.len() / ns;
        let m = h.len() / (ns * n);
        let eps = cfg.eps as f64;
        let zn: Vec<f64> = if cfg.normalize {
            let rows = z.len() / d;
            let mean: Vec<f64> = (0..d).map(|j| (0..rows).map(|a| z[a * d + j]).sum::<f64>() / rows as f64).collect();
            let var = z.iter().enumerate().map(|(i, v)| (v - mean[i % d]).powi(2)).sum::<f64>() / z.len() as f64;
            let rms = (var + 1e-12).sqrt();
            z.iter().map(|v| v / rms).collect()
        } else {
            z.to_vec()
        };
        let dbar = k::pdist(&zn, d, Norm::Floored, eps);
        let s = off_mean(&dbar, ns);
        let dfl: Vec<f64> = match cfg.r_max {
            None => dbar.clone(),
            Some(r) => dbar.iter().map(|&v| (v * v + (s / r as f64).powi(2)).sqrt()).collect(),
        };
        let wm = k::mask_tokens(w, counts, n);
        let wa: Vec<f64> = (0..ns).map(|a| wm[a * n..(a + 1) * n].iter().sum::<f64>().max(W_FLOOR as f64)).collect();
        let sm = k::structure(h, &wm, counts, n, m, eps);
        let kk: Vec<f64> = (0..ns * ns).map(|i| sm[i] / (wa[i / ns] * wa[i % ns])).collect();
        let mean_k = off_mean(&kk, ns);
        let kappa: Vec<f64> = kk.iter().map(|v| v / mean_k).collect();
        let u: Vec<f64> = (0..ns * ns).map(|i| pair_energy(dfl[i], s, kappa[i])).collect();
        let l_a = off_mean(&u, ns);
        let mean_w: Vec<f64> = (0..ns).map(|a| wm[a * n..(a + 1) * n].iter().sum::<f64>() / counts[a] as f64).collect();
        let c_w = importance_budget_of_means(&mean_w, cfg.tau_lo as f64, cfg.tau_hi as f64);
        Terms { l_a, c_w, s, mean_k, k: kk, kappa, dbar, u, mean_w }
    }

    fn importance_budget_of_means(mean_w: &[f64], lo: f64, hi: f64) -> f64 {
        mean_w.iter().map(|&m| (lo - m).max(0.0).powi(2) + (m - hi).max(0.0).powi(2)).sum::<f64>() / mean_w.len() as f64
    }

    /// C_w of importances `w [N, n]` with token counts.
    pub fn importance_budget(w: &[f64], counts: &[usize], lo: f64, hi: f64) -> f64 {
        let n = w.len() / counts.len();
        let means: Vec<f64> =
            counts.iter().enumerate().map(|(a, &c)| w[a * n..a * n + c].iter().sum::<f64>() / c as f64).collect();
        importance_budget_of_means(&means, lo, hi)
    }

    /// `mean_{A != B} relu(margin - |z_A - z_B|_p)`.
    pub fn hinge_lp(z: &[f64], d: usize, p: Norm, margin: f64) -> f64 {
        let n = z.len() / d;
        let dist = k::pdist(z, d, p, 0.0);
        let h: Vec<f64> = dist.iter().map(|&v| (margin - v).max(0.0)).collect();
        off_mean(&h, n)
    }

    /// NT-Xent over two views `[N, D]`, temperature tau (normalisation `z / sqrt(|z|^2 + 1e-12)`).
    pub fn nt_xent(z1: &[f64], z2: &[f64], d: usize, tau: f64) -> f64 {
        let n = z1.len() / d;
        let z: Vec<f64> = z1.iter().chain(z2).copied().collect();
        let zn: Vec<Vec<f64>> = (0..2 * n)
            .map(|r| {
                let row = &z[r * d..(r + 1) * d];
                let nr = (row.iter().map(|v| v * v).sum::<f64>() + 1e-12).sqrt();
                row.iter().map(|v| v / nr).collect()
            })
            .collect();
        let mut loss = 0.0;
        for r in 0..2 * n {
            let logits: Vec<f64> =
                (0..2 * n).map(|c| zn[r].iter().zip(&zn[c]).map(|(a, b)| a * b).sum::<f64>() / tau).collect();
            let mx = (0..2 * n).filter(|&c| c != r).map(|c| logits[c]).fold(f64::NEG_INFINITY, f64::max);
            let lse = mx + (0..2 * n).filter(|&c| c != r).map(|c| (logits[c] - mx).exp()).sum::<f64>().ln();
            loss += lse - logits[(r + n) % (2 * n)];
        }
        loss / (2 * n) as f64
    }
}
