//! GAN training with atom modeling on the generator, and the 2-D mode-coverage benchmark.
//!
//! Training ([`Gan`]): a generator and a discriminator, each with its own Adam (betas
//! (0.5, 0.999); lr 1e-3 for the 2-D benchmark, see [`Gan2dConfig`], 2e-4 for the DCGAN), the
//! non-saturating loss (D: BCE with logits, real = 1 and fake = 0; G: BCE of its fakes against 1)
//! and alternating steps, D then G. One iteration — the
//! generator's forward pass, the D step on the detached fake batch, the G step through the
//! discriminator with D's parameters frozen (constants on the tape) — is recorded into one command
//! buffer and submitted once. Losses are summed on the GPU and read once per log interval.
//!
//! Methods (the generator's objective; the discriminator's never changes):
//! - [`Method::Ce`] "GAN": the adversarial loss alone.
//! - [`Method::Gate`]: the generator's last hidden layer, viewed as tokens, is gated by the
//!   importance head and the generator continues from the gated map; plus the budget `mu_w C_w`.
//! - [`Method::Atom`]: the gate, `C_w` and `lambda L_A` on z = the flattened gated map, tokens h =
//!   the ungated cells (the spec's GAN row).
//! - [`Method::HingeL2`] / [`Method::HingeL1`]: `lambda * hinge` on the same (ungated) z.
//!
//! The pairwise terms (L_A, C_w, hinge) are computed on the first `reg_batch` samples of each
//! generated batch (64 of 128 in the 2-D benchmark), as their cost grows with the batch squared.
//!
//! DCGAN on Fashion-MNIST ([`FashionGan`], [`compare_fashion_gan`]): the same loop with
//! [`DcGenerator`] / [`DcDiscriminator`]; atom modeling gates the generator's 7x7 map. Generated
//! images are scored in the features of the project's own Fashion-MNIST CNN ([`FeatureNet`],
//! trained once per run folder with the classifier trainer and cached there as a checkpoint):
//! the Fréchet distance between Gaussians fitted to real test and generated features
//! ([`frechet_distance`]; NOT Inception FID, and comparable only between runs that share the
//! feature network), the entropy of the CNN's predicted-class histogram ([`class_entropy`]; ln 10
//! when every class is equally frequent) and the feature diversity (mean pairwise feature
//! distance, generated over real). Each run saves its generator ([`save_generator`]); [`sample`]
//! rebuilds one from its checkpoint and draws a grid.
//!
//! The benchmark ([`compare_gan2d`]): a ring of 8 Gaussians (radius 2, std 0.02) and a 5x5 grid of
//! 25 (spacing 2, centred, std 0.05); from 10,000 generated points, [`mode_stats`] counts the modes
//! covered, the share of high-quality points and the KL divergence of the per-mode histogram from
//! uniform.

use crate::atom::{atom_terms, hinge_lp, importance_budget, AtomConfig, Norm, TokenMask};
use crate::autodiff::{Tape, Var};
use crate::checkpoint;
use crate::data::fashion::{FashionData, ImageSet, MEAN as FASHION_MEAN, PIXELS, STD as FASHION_STD};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::experiments::classify::{self, ClassifyConfig};
use crate::experiments::{fmt_ms, mean_std, Method, Progress};
use crate::nn::cnn::Cnn;
use crate::nn::gan::{DcDiscriminator, DcGenerator, Discriminator, GenOut, Generator, MlpDiscriminator, MlpGenerator};
use crate::nn::sub_seed;
use crate::ops::elementwise::accumulate;
use crate::optim::{Adam, AdamConfig, Optimizer};
use crate::plot::{self, write_atomic};
use crate::rng::Rng;
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The methods the GAN benchmark runs by default.
pub const GAN_METHODS: [Method; 4] = [Method::Ce, Method::Gate, Method::HingeL2, Method::Atom];

/// The method's name in GAN tables and plots ([`Method::Ce`] is the plain GAN).
pub fn gan_method_name(m: Method) -> &'static str {
    match m {
        Method::Ce => "GAN",
        Method::Gate => "GAN + gate only",
        Method::HingeL1 => "GAN + hinge-L1",
        Method::HingeL2 => "GAN + hinge-L2",
        Method::SimClr => "GAN + SimCLR",
        Method::Atom => "GAN + atom (L_A)",
    }
}

fn check_method(m: Method) -> Result<()> {
    if m == Method::SimClr {
        return Err(Error::Config(
            "gan: SimCLR is not implemented for the GAN benchmark (methods: ce, gate, hinge-l1, hinge-l2, atom)".into(),
        ));
    }
    Ok(())
}

/// A 2-D Gaussian mixture with equal weights and isotropic components.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mixture {
    /// 8 components evenly on a circle of radius 2, std 0.02.
    Ring8,
    /// 25 components on a 5x5 grid with spacing 2 centred on the origin, std 0.05.
    Grid25,
}

impl Mixture {
    pub const ALL: [Mixture; 2] = [Mixture::Ring8, Mixture::Grid25];
    pub fn slug(self) -> &'static str {
        match self {
            Mixture::Ring8 => "ring8",
            Mixture::Grid25 => "grid25",
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Mixture::Ring8 => "ring of 8",
            Mixture::Grid25 => "5x5 grid",
        }
    }
    /// The component means.
    pub fn centres(self) -> Vec<(f64, f64)> {
        match self {
            Mixture::Ring8 => (0..8)
                .map(|k| {
                    let a = 2.0 * std::f64::consts::PI * k as f64 / 8.0;
                    (2.0 * a.cos(), 2.0 * a.sin())
                })
                .collect(),
            Mixture::Grid25 => (0..25).map(|k| (2.0 * (k / 5) as f64 - 4.0, 2.0 * (k % 5) as f64 - 4.0)).collect(),
        }
    }
    /// The components' standard deviation.
    pub fn std(self) -> f64 {
        match self {
            Mixture::Ring8 => 0.02,
            Mixture::Grid25 => 0.05,
        }
    }
    /// `n` points `[n, 2]` row-major: a uniformly chosen component plus N(0, std^2 I).
    pub fn sample(self, rng: &mut Rng, n: usize) -> Vec<f32> {
        let c = self.centres();
        let s = self.std();
        let mut out = Vec::with_capacity(2 * n);
        for _ in 0..n {
            let (x, y) = c[rng.below(c.len())];
            out.push((x + s * rng.normal()) as f32);
            out.push((y + s * rng.normal()) as f32);
        }
        out
    }
    pub fn parse_list(names: &[String]) -> Result<Vec<Mixture>> {
        if names.is_empty() {
            return Ok(Mixture::ALL.to_vec());
        }
        names
            .iter()
            .map(|n| {
                Mixture::ALL
                    .into_iter()
                    .find(|m| m.slug() == n.trim())
                    .ok_or_else(|| Error::Config(format!("gan2d: unknown mixture {n:?} (available: ring8, grid25)")))
            })
            .collect()
    }
}

/// Mode coverage of generated points against a mixture's centres.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModeStats {
    /// Modes with at least 1% of all points within 3 std of their centre.
    pub modes_covered: usize,
    /// Number of modes of the mixture.
    pub modes: usize,
    /// Share of points within 3 std of some centre (in [0, 1]).
    pub high_quality: f64,
    /// KL(p || uniform) of the per-mode histogram p of the high-quality points, in nats
    /// (0 when every mode holds the same share; ln(modes) when all fall in one mode). Defined as
    /// ln(modes), the value of a single-mode histogram, when no point is of high quality.
    pub kl: f64,
    /// High-quality points per mode.
    pub counts: Vec<usize>,
}

/// Scores `points` (`[n, 2]` row-major): a point is of high quality when it lies within `3 std`
/// of a centre (its nearest one); non-finite points never are.
pub fn mode_stats(points: &[f32], centres: &[(f64, f64)], std: f64) -> ModeStats {
    let k = centres.len();
    let n = points.len() / 2;
    let mut counts = vec![0usize; k];
    let r2 = (3.0 * std).powi(2);
    for p in points.chunks_exact(2) {
        let (x, y) = (p[0] as f64, p[1] as f64);
        if !(x.is_finite() && y.is_finite()) {
            continue;
        }
        let (best, d2) = centres
            .iter()
            .enumerate()
            .map(|(i, &(cx, cy))| (i, (x - cx).powi(2) + (y - cy).powi(2)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .expect("at least one centre");
        if d2 <= r2 {
            counts[best] += 1;
        }
    }
    let hq: usize = counts.iter().sum();
    let modes_covered = counts.iter().filter(|&&c| n > 0 && c as f64 >= 0.01 * n as f64).count();
    let kl = if hq == 0 {
        (k as f64).ln()
    } else {
        counts
            .iter()
            .filter(|&&c| c > 0)
            .map(|&c| {
                let p = c as f64 / hq as f64;
                p * (p * k as f64).ln()
            })
            .sum::<f64>()
            .max(0.0)
    };
    ModeStats { modes_covered, modes: k, high_quality: if n == 0 { 0.0 } else { hq as f64 / n as f64 }, kl, counts }
}

/// Budget and model of the 2-D benchmark.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Gan2dConfig {
    /// Training iterations (one D step and one G step each).
    pub iters: usize,
    pub batch: usize,
    /// Noise dimension of the generator.
    pub noise: usize,
    /// Hidden width of both networks (two hidden layers each).
    pub hidden: usize,
    /// Tokens the generator's last hidden layer is split into (`hidden / tokens` features each).
    pub tokens: usize,
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    /// Leaky-ReLU slope of the discriminator.
    pub slope: f32,
    /// Weight of L_A (atom) and of the hinge baselines.
    pub lambda: f32,
    /// Hinge margin on latent distances.
    pub margin: f32,
    /// The pairwise regularisers (L_A, C_w, hinge) see the first `reg_batch` samples of each
    /// generated batch (all when >= batch): their cost grows with the square of the batch (L_A's
    /// token term with N^2 n^2 m), and a mean over the pairs of a sub-batch is an unbiased
    /// estimate of the mean over the batch's pairs.
    pub reg_batch: usize,
    /// Log (losses, fixed-noise coverage) every this many iterations.
    pub log_every: usize,
    /// Generated points scored at the end.
    pub eval_points: usize,
    /// Fixed-noise points scored (and drawn, with `snapshots`) at each log.
    pub snapshot_points: usize,
    /// Draw the fixed-noise samples as a PNG at each log (in the run's folder).
    pub snapshots: bool,
}

impl Default for Gan2dConfig {
    /// The benchmark's budget, measured on lavapipe (2 shared cores): 3000 iterations of batch 128
    /// at lr 1e-3. With DCGAN's lr 2e-4 the plain GAN covered nothing of the ring in 2,500
    /// iterations of batch 256 for one of two seeds; at 1e-3 it covers 4-8 of 8 ring modes by
    /// 1,500-3,000 iterations and starts covering grid modes near 3,000. Noise 2 covered more of the
    /// grid than noise 8 (7 vs 1 of 25 at 4,000 iterations, one seed). The hinge margin 10 is
    /// about the median distance between the generator's 128-d latents after 1,000 plain
    /// iterations (2 at initialisation); with a margin of 1 the hinge was inactive within 300.
    fn default() -> Self {
        Gan2dConfig {
            iters: 3000,
            batch: 128,
            noise: 2,
            hidden: 128,
            tokens: 16,
            lr: 1e-3,
            beta1: 0.5,
            beta2: 0.999,
            slope: 0.2,
            lambda: 0.1,
            margin: 10.0,
            reg_batch: 64,
            log_every: 250,
            eval_points: 10_000,
            snapshot_points: 2_000,
            snapshots: true,
        }
    }
}

impl Gan2dConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(format!("gan2d: {m}")));
        if self.iters == 0 || self.log_every == 0 {
            return bad(format!("iters and log_every must be >= 1, got {} and {}", self.iters, self.log_every));
        }
        if self.batch < 2 || self.reg_batch < 2 {
            return bad(format!(
                "batch and reg_batch must be >= 2 (pairs need 2 samples), got {} and {}",
                self.batch, self.reg_batch
            ));
        }
        if self.noise == 0 || self.hidden == 0 || self.tokens == 0 || !self.hidden.is_multiple_of(self.tokens) {
            return bad(format!(
                "noise >= 1 and hidden a positive multiple of tokens needed; got noise {}, hidden {}, tokens {}",
                self.noise, self.hidden, self.tokens
            ));
        }
        if self.eval_points == 0 || self.snapshot_points == 0 {
            return bad("eval_points and snapshot_points must be >= 1".into());
        }
        if !(self.lr > 0.0 && self.lr.is_finite() && self.lambda >= 0.0 && self.lambda.is_finite()) {
            return bad(format!("need lr > 0 and lambda >= 0, got lr {} lambda {}", self.lr, self.lambda));
        }
        Ok(())
    }
    /// Samples the regularisers see.
    pub fn reg_samples(&self) -> usize {
        self.reg_batch.min(self.batch)
    }
    pub fn settings(&self) -> GanSettings {
        GanSettings {
            batch: self.batch,
            reg_batch: self.reg_samples(),
            lr: self.lr,
            beta1: self.beta1,
            beta2: self.beta2,
            lambda: self.lambda,
            margin: self.margin,
        }
    }
}

/// Running GPU sums of the logged losses.
struct Sums {
    d: Tensor,
    g: Tensor,
    reg: Tensor,
    l_a: Tensor,
    c_w: Tensor,
    d_steps: usize,
    g_steps: usize,
}

impl Sums {
    fn new(dev: &Device) -> Result<Sums> {
        let z = || Tensor::zeros(dev, &[]);
        Ok(Sums { d: z()?, g: z()?, reg: z()?, l_a: z()?, c_w: z()?, d_steps: 0, g_steps: 0 })
    }
}

/// Mean losses over the iterations since the last read.
#[derive(Clone, Debug, Serialize)]
pub struct LossMeans {
    /// Discriminator loss BCE(real, 1) + BCE(fake, 0).
    pub d: f64,
    /// Generator's adversarial loss BCE(D(G(z)), 1).
    pub g: f64,
    /// The generator's regulariser as added to its loss (0 for the plain GAN).
    pub reg: f64,
    /// L_A (atom only).
    pub l_a: Option<f64>,
    /// Importance budget C_w (gated methods only).
    pub c_w: Option<f64>,
}

/// The hyper-parameters every GAN run shares (from [`Gan2dConfig`] or [`FashionGanConfig`]).
#[derive(Clone, Copy, Debug)]
pub struct GanSettings {
    pub batch: usize,
    /// Samples the regularisers see (<= batch).
    pub reg_batch: usize,
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    /// Weight of L_A and of the hinge baselines.
    pub lambda: f32,
    pub margin: f32,
}

/// Where the real batches come from. A source draws from the run's host RNG and may hold a
/// queue (the rest of an epoch's batch order), which checkpoints store.
pub trait RealSource {
    /// The next real batch `[B, ..]` on the GPU.
    fn next(&mut self, dev: &Device, rng: &mut Rng, b: usize) -> Result<Tensor>;
    /// The pending sample indices, in the order they will be drawn.
    fn queue(&self) -> Vec<u32> {
        Vec::new()
    }
    /// Replaces the pending indices (from [`RealSource::queue`], batches of `b`).
    fn set_queue(&mut self, _queue: &[u32], _b: usize) {}
}

/// Fresh points of a 2-D mixture every batch.
struct MixtureSource(Mixture);

impl RealSource for MixtureSource {
    fn next(&mut self, dev: &Device, rng: &mut Rng, b: usize) -> Result<Tensor> {
        Tensor::from_slice(dev, &self.0.sample(rng, b), &[b, 2])
    }
}

/// Images (tanh range) in shuffled epochs: a queue of batches refilled from the RNG when empty.
struct ImageSource {
    data: Vec<f32>,
    n: usize,
    /// Batches still to draw this epoch, last first.
    queue: Vec<Vec<usize>>,
}

impl RealSource for ImageSource {
    fn next(&mut self, dev: &Device, rng: &mut Rng, b: usize) -> Result<Tensor> {
        if self.queue.is_empty() {
            self.queue = crate::data::epoch_batches(self.n, b, rng);
            self.queue.reverse();
        }
        let idx = self.queue.pop().expect("an epoch has at least one batch");
        let mut x = Vec::with_capacity(b * PIXELS);
        for i in idx {
            x.extend_from_slice(&self.data[i * PIXELS..(i + 1) * PIXELS]);
        }
        Tensor::from_slice(dev, &x, &[b, 1, 28, 28])
    }
    fn queue(&self) -> Vec<u32> {
        self.queue.iter().rev().flatten().map(|&i| i as u32).collect()
    }
    fn set_queue(&mut self, queue: &[u32], b: usize) {
        self.queue = queue.chunks(b.max(1)).rev().map(|c| c.iter().map(|&i| i as usize).collect()).collect();
    }
}

/// A GAN in training: one [`Gan::step`] is one D step and one G step in one submit.
pub struct Gan<G: Generator, D: Discriminator> {
    dev: Device,
    pub method: Method,
    pub g: G,
    pub d: D,
    pub settings: GanSettings,
    opt_g: Adam,
    opt_d: Adam,
    pub atom: AtomConfig,
    /// Token counts of a generated batch and of the regularisers' sub-batch.
    mask: TokenMask,
    reg_mask: TokenMask,
    /// Targets of the D step `[2B, 1]`: B ones (real) then B zeros (fake).
    d_targets: Tensor,
    /// Targets of the G step `[B, 1]`: ones.
    ones: Tensor,
    real: Box<dyn RealSource>,
    rng: Rng,
    noise_seed: u64,
    iter: usize,
    sums: Sums,
    /// Check every op of each step for NaN/Inf ([`Tape::detect_anomaly`]).
    pub detect_anomaly: bool,
}

/// The 2-D benchmark's GAN.
pub type Gan2d = Gan<MlpGenerator, MlpDiscriminator>;

impl Gan<MlpGenerator, MlpDiscriminator> {
    /// MLPs `noise -> hidden -> hidden -> 2` and `2 -> hidden -> hidden -> 1` on `mixture`.
    pub fn new(dev: &Device, cfg: &Gan2dConfig, mixture: Mixture, method: Method, seed: u64) -> Result<Gan2d> {
        cfg.validate()?;
        check_method(method)?;
        let g = MlpGenerator::new(dev, cfg.noise, cfg.hidden, 2, cfg.tokens, sub_seed(seed, 1))?;
        let d = MlpDiscriminator::new(dev, &[2, cfg.hidden, cfg.hidden, 1], cfg.slope, sub_seed(seed, 2))?;
        Gan::with_models(dev, g, d, cfg.settings(), Box::new(MixtureSource(mixture)), method, seed)
    }
}

impl<G: Generator, D: Discriminator> Gan<G, D> {
    /// A GAN around given models; `real` draws the real batches. Seeds: the host RNG (real data)
    /// from `sub_seed(seed, 3)`, the noise of iteration i from `sub_seed(sub_seed(seed, 4), i)`.
    pub fn with_models(
        dev: &Device,
        g: G,
        d: D,
        s: GanSettings,
        real: Box<dyn RealSource>,
        method: Method,
        seed: u64,
    ) -> Result<Gan<G, D>> {
        check_method(method)?;
        if s.batch < 2 || s.reg_batch < 2 || s.reg_batch > s.batch {
            return Err(Error::Config(format!(
                "gan: need 2 <= reg_batch <= batch, got batch {} and reg_batch {}",
                s.batch, s.reg_batch
            )));
        }
        let adam = AdamConfig { lr: s.lr, beta1: s.beta1, beta2: s.beta2, ..AdamConfig::default() };
        let opt_g = Adam::new(g.params(method.gated()), adam)?;
        let opt_d = Adam::new(d.params(), adam)?;
        let (b, t) = (s.batch, g.tokens());
        let mut targets = vec![1f32; 2 * b];
        targets[b..].fill(0.0);
        Ok(Gan {
            dev: dev.clone(),
            method,
            settings: s,
            opt_g,
            opt_d,
            atom: AtomConfig { lambda: s.lambda, ..AtomConfig::default() },
            mask: TokenMask::new(dev, &vec![t; b], t)?,
            reg_mask: TokenMask::new(dev, &vec![t; s.reg_batch], t)?,
            d_targets: Tensor::from_slice(dev, &targets, &[2 * b, 1])?,
            ones: Tensor::full(dev, &[b, 1], 1.0)?,
            real,
            rng: Rng::new(sub_seed(seed, 3)),
            noise_seed: sub_seed(seed, 4),
            iter: 0,
            sums: Sums::new(dev)?,
            detect_anomaly: false,
            g,
            d,
        })
    }

    /// Iterations done (each [`Gan::step`], [`Gan::step_d`] or [`Gan::step_g`] counts one).
    pub fn iteration(&self) -> usize {
        self.iter
    }

    /// The generator's pass on this iteration's noise (GPU Philox, seeded by the iteration).
    fn generate_batch(&self, tape: &Tape) -> Result<GenOut> {
        let noise = Tensor::rand_normal(
            &self.dev,
            &[self.settings.batch, self.g.noise()],
            0.0,
            1.0,
            sub_seed(self.noise_seed, self.iter as u64),
        )?;
        self.g.forward(tape, &tape.constant(noise), self.method.gated(), &self.mask, true)
    }

    /// Records the D step on a fake batch that must not lead back into G's graph.
    fn record_d(&mut self, tape: &Tape, fake: &Var) -> Result<()> {
        let real = self.real.next(&self.dev, &mut self.rng, self.settings.batch)?;
        let x = Var::concat(&[&tape.constant(real), fake], 0)?;
        let logits = self.d.forward(tape, &x, false)?;
        // mean over 2B of the BCE, times 2: BCE(real, 1) + BCE(fake, 0) with per-batch means.
        let loss = logits.bce_with_logits(&tape.constant(self.d_targets.clone()))?.scale(2.0)?;
        self.opt_d.zero_grad();
        loss.backward()?;
        self.opt_d.step()?;
        self.opt_d.zero_grad();
        accumulate(&self.sums.d, loss.value())?;
        self.sums.d_steps += 1;
        Ok(())
    }

    /// Records the G step: the adversarial loss through the frozen D plus the method's regulariser.
    fn record_g(&mut self, tape: &Tape, out: &GenOut) -> Result<()> {
        let logits = self.d.forward(tape, &out.x, true)?;
        let adv = logits.bce_with_logits(&tape.constant(self.ones.clone()))?;
        // The regularisers' sub-batch: the first reg_batch generated samples.
        let (r, s) = (self.settings.reg_batch, self.settings);
        let sub = |v: &Var| if r == s.batch { Ok(v.clone()) } else { v.slice(0, 0, r) };
        let (z, mask) = (sub(&out.z)?, &self.reg_mask);
        let gate = || match &out.w {
            Some(w) => sub(w),
            None => Err(Error::Config(format!("{:?} needs the gate", self.method))),
        };
        let (reg, l_a, c_w) = match self.method {
            Method::Ce => (None, None, None),
            Method::Gate => {
                let c_w = importance_budget(&gate()?, mask, self.atom.tau_lo, self.atom.tau_hi)?;
                (Some(c_w.scale(self.atom.mu_w)?), None, Some(c_w))
            }
            Method::Atom => {
                let t = atom_terms(&z, &sub(&out.h)?, &gate()?, mask, &self.atom)?;
                (Some(t.regularizer(&self.atom, self.iter)?), Some(t.l_a), Some(t.c_w))
            }
            Method::HingeL1 => (Some(hinge_lp(&z, Norm::L1, s.margin)?.scale(s.lambda)?), None, None),
            Method::HingeL2 => (Some(hinge_lp(&z, Norm::L2, s.margin)?.scale(s.lambda)?), None, None),
            Method::SimClr => return check_method(self.method),
        };
        let loss = match &reg {
            Some(r) => adv.add(r)?,
            None => adv.clone(),
        };
        self.opt_g.zero_grad();
        loss.backward()?;
        self.opt_g.step()?;
        self.opt_g.zero_grad();
        accumulate(&self.sums.g, adv.value())?;
        for (sum, v) in [(&self.sums.reg, &reg), (&self.sums.l_a, &l_a), (&self.sums.c_w, &c_w)] {
            if let Some(v) = v {
                accumulate(sum, v.value())?;
            }
        }
        self.sums.g_steps += 1;
        Ok(())
    }

    /// One training iteration — G's forward pass, the D step on the detached fakes, the G step —
    /// recorded into one command buffer: exactly one submit.
    pub fn step(&mut self) -> Result<()> {
        let tape = Tape::new();
        if self.detect_anomaly {
            tape.detect_anomaly();
        }
        let out = self.generate_batch(&tape)?;
        self.record_d(&tape, &out.x.detach())?;
        self.record_g(&tape, &out)?;
        tape.anomaly(self.iter + 1)?;
        drop(tape);
        self.dev.flush()?;
        self.iter += 1;
        Ok(())
    }

    /// A D step alone (one submit); G's parameters are not touched.
    pub fn step_d(&mut self) -> Result<()> {
        let tape = Tape::new();
        let out = self.generate_batch(&tape)?;
        self.record_d(&tape, &out.x.detach())?;
        drop(tape);
        self.dev.flush()?;
        self.iter += 1;
        Ok(())
    }

    /// A G step alone (one submit); D's parameters are not touched.
    pub fn step_g(&mut self) -> Result<()> {
        let tape = Tape::new();
        let out = self.generate_batch(&tape)?;
        self.record_g(&tape, &out)?;
        drop(tape);
        self.dev.flush()?;
        self.iter += 1;
        Ok(())
    }

    /// Reads the mean losses since the last call (a few readbacks) and resets the sums.
    pub fn take_losses(&mut self) -> Result<LossMeans> {
        let mean =
            |t: &Tensor, n: usize| -> Result<f64> { Ok(if n == 0 { f64::NAN } else { t.item()? as f64 / n as f64 }) };
        let (gated, atom) = (self.method.gated(), self.method == Method::Atom);
        let m = LossMeans {
            d: mean(&self.sums.d, self.sums.d_steps)?,
            g: mean(&self.sums.g, self.sums.g_steps)?,
            reg: if self.method == Method::Ce { 0.0 } else { mean(&self.sums.reg, self.sums.g_steps)? },
            l_a: if atom { Some(mean(&self.sums.l_a, self.sums.g_steps)?) } else { None },
            c_w: if gated { Some(mean(&self.sums.c_w, self.sums.g_steps)?) } else { None },
        };
        self.sums = Sums::new(&self.dev)?;
        Ok(m)
    }

    /// The whole training state as named tensors: both models (`model.g.*`, `model.d.*`), both
    /// Adam states (`opt_g.*`, `opt_d.*`), the GPU loss sums (`sums.*`) and the real-data queue
    /// (`real.queue`). With [`Gan::position`] it continues a run bit-identically.
    pub fn state(&self) -> Result<Vec<(String, Tensor)>> {
        let mut t = checkpoint::prefixed("model.", [self.g.tensors(), self.d.tensors()].concat());
        t.extend(checkpoint::prefixed("opt_g.", self.opt_g.state()?));
        t.extend(checkpoint::prefixed("opt_d.", self.opt_d.state()?));
        t.extend(self.sum_tensors());
        let q = self.real.queue();
        t.push(("real.queue".into(), Tensor::from_u32(&self.dev, &q, &[q.len()])?));
        Ok(t)
    }

    fn sum_tensors(&self) -> Vec<(String, Tensor)> {
        let s = &self.sums;
        [("d", &s.d), ("g", &s.g), ("reg", &s.reg), ("l_a", &s.l_a), ("c_w", &s.c_w)]
            .into_iter()
            .map(|(k, t)| (format!("sums.{k}"), t.clone()))
            .collect()
    }

    /// The host side of the state (iteration, RNG, summed-step counts) for a sidecar.
    pub fn position(&self) -> serde_json::Value {
        serde_json::json!({
            "iter": self.iter, "rng": self.rng.state(), "d_steps": self.sums.d_steps, "g_steps": self.sums.g_steps,
        })
    }

    /// Restores a state saved by [`Gan::state`] with its [`Gan::position`] under the sidecar key
    /// `"gan"`. Shapes are checked strictly before anything is written.
    pub fn restore(&mut self, ck: &checkpoint::Checkpoint) -> Result<()> {
        let pos = ck.sidecar.get("gan").cloned().unwrap_or_default();
        let num = |k: &str| {
            pos.get(k).and_then(|v| v.as_u64()).ok_or_else(|| {
                Error::data(&ck.path, format!("not a GAN training checkpoint: sidecar lacks \"gan\".{k}"))
            })
        };
        let (iter, rng, d_steps, g_steps) = (num("iter")?, num("rng")?, num("d_steps")?, num("g_steps")?);
        ck.select("model.").restore_into(&[self.g.tensors(), self.d.tensors()].concat())?;
        ck.select("sums.")
            .restore_into(&self.sum_tensors().into_iter().map(|(k, t)| (k[5..].to_string(), t)).collect::<Vec<_>>())?;
        let queue = ck
            .get("real.queue")
            .and_then(|t| t.as_u32())
            .ok_or_else(|| Error::data(&ck.path, "no real.queue tensor"))?;
        self.opt_g.load_state(&ck.select("opt_g.").upload(&self.dev)?)?;
        self.opt_d.load_state(&ck.select("opt_d.").upload(&self.dev)?)?;
        self.real.set_queue(queue, self.settings.batch);
        self.iter = iter as usize;
        self.rng = Rng::from_state(rng);
        (self.sums.d_steps, self.sums.g_steps) = (d_steps as usize, g_steps as usize);
        Ok(())
    }

    /// `n` generated samples, flattened row-major, from N(0, I) noise drawn with `seed`
    /// (no grad; batch norm uses its running statistics).
    pub fn generate(&self, n: usize, seed: u64) -> Result<Vec<f32>> {
        Ok(generate_with(&self.dev, &self.g, self.method.gated(), n, seed)?.0)
    }

    /// [`Gan::generate`] and, for the gated methods, the importances `[n, tokens]` of the gate.
    pub fn generate_with_importance(&self, n: usize, seed: u64) -> Result<(Vec<f32>, Option<Vec<f32>>)> {
        generate_with(&self.dev, &self.g, self.method.gated(), n, seed)
    }
}

/// Scores a GAN during training: metrics for the log line and the checkpoint metric (higher is
/// better).
pub type Score<'a, G, D> = dyn FnMut(&Gan<G, D>) -> Result<(serde_json::Value, Option<f64>)> + 'a;

/// Trains `gan` up to `iters` iterations inside a run folder (`atomgrad train --task gan2d|gan`):
/// every `log_every` iterations the mean losses and `score`'s metrics go to `metrics.jsonl` and a
/// checkpoint is saved (the last 2 kept, and the best by `score`'s metric, higher is better); a
/// stop request (Ctrl-C, `--max-steps`) saves a checkpoint after the current iteration; `resume`
/// continues bit-identically. Non-finite losses stop with an error naming the iteration. Returns
/// whether it stopped early.
pub fn fit_gan<G: Generator, D: Discriminator>(
    gan: &mut Gan<G, D>,
    iters: usize,
    log_every: usize,
    resume: Option<&checkpoint::Checkpoint>,
    run: &mut crate::run::Run,
    score: &mut Score<G, D>,
) -> Result<bool> {
    use crate::train::Hooks;
    if let Some(ck) = resume {
        gan.restore(ck)?;
    }
    let log_every = log_every.max(1);
    let save = |gan: &Gan<G, D>, run: &mut crate::run::Run, metric: Option<f64>| -> Result<()> {
        let meta = serde_json::json!({ "step": gan.iter, "adapter": gan.dev.describe(), "gan": gan.position() });
        run.checkpoint(gan.iter as u64, &gan.state()?, &meta, metric)
    };
    while gan.iter < iters {
        gan.step()?;
        let it = gan.iter;
        let interval = (it - 1) / log_every;
        let len = log_every.min(iters - interval * log_every);
        run.after_step(it, interval, it - interval * log_every, len);
        if it.is_multiple_of(log_every) || it == iters {
            let loss = gan.take_losses()?;
            if ![loss.d, loss.g, loss.reg].iter().all(|v| v.is_finite()) {
                return Err(Error::NonFinite {
                    step: it as u64,
                    what: format!(
                        "GAN mean losses up to iteration {it}: D {}, G {}, regulariser {} (training diverged; \
                         try a lower --lr, or --detect-anomaly to find the op)",
                        loss.d, loss.g, loss.reg
                    ),
                });
            }
            let (metrics, metric) = score(gan)?;
            let mut line = serde_json::json!({ "iter": it, "loss": loss });
            if let (Some(l), serde_json::Value::Object(m)) = (line.as_object_mut(), metrics) {
                l.extend(m);
            }
            run.log(&line)?;
            run.say(&format!("iter {it:>6}  D {:.4}  G {:.4}  reg {:.4}  {}", loss.d, loss.g, loss.reg, brief(&line)));
            save(gan, run, metric)?;
        } else if run.should_stop() {
            save(gan, run, None)?;
            return Ok(true);
        }
        if run.should_stop() && gan.iter < iters {
            return Ok(true);
        }
    }
    loss_curves(run.dir())?;
    Ok(false)
}

/// `loss.png` of a GAN run folder from its `metrics.jsonl` (all of it, resumed parts included).
fn loss_curves(dir: &Path) -> Result<()> {
    let path = dir.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let lines: Vec<serde_json::Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let series = |name: &str, key: &str| {
        let pts =
            lines.iter().filter_map(|l| Some((l.get("iter")?.as_f64()?, l.get("loss")?.get(key)?.as_f64()?))).collect();
        plot::Series::new(name, pts)
    };
    let all = [series("D loss", "d"), series("G adversarial loss", "g"), series("G regulariser", "reg")];
    plot::line_plot(dir.join("loss.png"), "GAN: mean losses per log interval", "iteration", "loss", &all)
}

/// `atomgrad train --task gan2d`: one GAN on one mixture in a run folder, scored every log
/// interval on the fixed-noise snapshot points (best checkpoint by modes covered + high-quality
/// share). Returns the summary line, or `None` when stopped early.
#[allow(clippy::too_many_arguments)]
pub fn train_gan2d(
    dev: &Device,
    cfg: &Gan2dConfig,
    mixture: Mixture,
    method: Method,
    seed: u64,
    run: &mut crate::run::Run,
    resume: Option<&checkpoint::Checkpoint>,
) -> Result<Option<String>> {
    let mut gan = Gan2d::new(dev, cfg, mixture, method, seed)?;
    gan.detect_anomaly = run.detect_anomaly();
    let (centres, std) = (mixture.centres(), mixture.std());
    let snap_seed = sub_seed(seed, 5);
    let mut score = |gan: &Gan2d| -> Result<(serde_json::Value, Option<f64>)> {
        let s = mode_stats(&gan.generate(cfg.snapshot_points, snap_seed)?, &centres, std);
        let m = serde_json::json!({"modes_covered": s.modes_covered, "high_quality": s.high_quality, "kl": s.kl});
        Ok((m, Some(s.modes_covered as f64 + s.high_quality)))
    };
    if fit_gan(&mut gan, cfg.iters, cfg.log_every, resume, run, &mut score)? {
        return Ok(None);
    }
    let points = gan.generate(cfg.eval_points, sub_seed(seed, 6))?;
    let s = mode_stats(&points, &centres, std);
    let summary = format!(
        "{} on {} (seed {seed}): {}/{} modes, {:.1}% high quality, KL {:.3} from {} points",
        gan_method_name(method),
        mixture.name(),
        s.modes_covered,
        s.modes,
        100.0 * s.high_quality,
        s.kl,
        cfg.eval_points
    );
    scatter(&run.dir().join("samples.png"), &summary, &points, &centres)?;
    Ok(Some(summary))
}

/// `atomgrad train --task gan`: one DCGAN in a run folder, scored after every epoch in the
/// feature CNN (trained once into the folder; best checkpoint by the lowest Fréchet feature
/// distance); writes the final sample grid and `generator.safetensors` for `atomgrad sample`.
/// Returns the summary line, or `None` when stopped early.
pub fn train_dcgan(
    dev: &Device,
    data: &FashionData,
    cfg: &FashionGanConfig,
    method: Method,
    seed: u64,
    run: &mut crate::run::Run,
    resume: Option<&checkpoint::Checkpoint>,
) -> Result<Option<String>> {
    let mut gan = FashionGan::fashion(dev, cfg, &data.train, method, seed)?;
    gan.detect_anomaly = run.detect_anomaly();
    let features = FeatureNet::prepare(dev, data, &cfg.feature_cnn, &run.dir().join("feature-cnn.safetensors"))?;
    run.say(&format!(
        "feature CNN: {:.2}% test accuracy ({})",
        100.0 * features.test_accuracy,
        features.checkpoint.display()
    ));
    let per_epoch = cfg.train_limit.map_or(data.train.len(), |l| l.min(data.train.len())) / cfg.batch;
    let eval_seed = sub_seed(seed, 6);
    let mut score = |gan: &FashionGan| -> Result<(serde_json::Value, Option<f64>)> {
        let q = features.quality(&gan.generate(cfg.eval_samples, eval_seed)?)?;
        let m = serde_json::json!({
            "epoch": gan.iteration() / per_epoch, "frechet": q.frechet, "class_entropy": q.class_entropy,
            "diversity": q.diversity,
        });
        Ok((m, Some(-q.frechet)))
    };
    if fit_gan(&mut gan, cfg.epochs * per_epoch, per_epoch, resume, run, &mut score)? {
        return Ok(None);
    }
    let (samples, w) = gan.generate_with_importance(cfg.grid, sub_seed(seed, 5))?;
    let dir = run.dir().to_path_buf();
    plot::image_grid(dir.join("samples.png"), &tiles(&samples), 28, 28, 8, None, None)?;
    if let Some(w) = w {
        importance_grid(
            &dir.join("importance.png"),
            &tiles(&samples),
            &w.chunks(49).map(|c| c.to_vec()).collect::<Vec<_>>(),
        )?;
    }
    save_generator(&dir.join("generator.safetensors"), &gan, cfg, seed, &data.description())?;
    let q = features.quality(&gan.generate(cfg.eval_samples, eval_seed)?)?;
    Ok(Some(format!(
        "DCGAN {} (seed {seed}): Fréchet feature distance {:.3} (own CNN features, not Inception FID), class \
         entropy {:.3}, diversity {:.3}",
        gan_method_name(method),
        q.frechet,
        q.class_entropy,
        q.diversity
    )))
}

/// The numeric fields of a metrics line other than the iteration and losses, `k v` pairs.
fn brief(line: &serde_json::Value) -> String {
    let Some(o) = line.as_object() else { return String::new() };
    o.iter()
        .filter(|(k, v)| *k != "iter" && *k != "loss" && v.is_number())
        .map(|(k, v)| match v.as_u64() {
            Some(i) => format!("{k} {i}"),
            None => format!("{k} {:.4}", v.as_f64().unwrap_or(f64::NAN)),
        })
        .collect::<Vec<_>>()
        .join("  ")
}

/// `n` samples of generator `g` (flattened row-major) from N(0, I) noise `[n, noise]` drawn on the
/// GPU with `seed`, and the gate's importances `[n, tokens]` when `gated`. No grad; batch norm
/// uses its running statistics.
pub fn generate_with<G: Generator>(
    dev: &Device,
    g: &G,
    gated: bool,
    n: usize,
    seed: u64,
) -> Result<(Vec<f32>, Option<Vec<f32>>)> {
    if n == 0 {
        return Err(Error::Config("gan: asked to generate 0 samples".into()));
    }
    let tape = Tape::no_grad();
    let noise = tape.constant(Tensor::rand_normal(dev, &[n, g.noise()], 0.0, 1.0, seed)?);
    let t = g.tokens();
    let mask = TokenMask::new(dev, &vec![t; n], t)?;
    let out = g.forward(&tape, &noise, gated, &mask, false)?;
    let x = out.x.value().to_vec()?;
    let w = match &out.w {
        Some(w) => Some(w.value().to_vec()?),
        None => None,
    };
    Ok((x, w))
}

/// One logged interval of a run (one JSON line of `metrics.jsonl`).
#[derive(Clone, Debug, Serialize)]
pub struct LogLine {
    pub iter: usize,
    pub seconds: f64,
    pub loss: LossMeans,
    /// Coverage of the fixed-noise sample at this iteration.
    pub modes_covered: usize,
    pub high_quality: f64,
    pub kl: f64,
}

/// The outcome of one run.
#[derive(Clone, Debug, Serialize)]
pub struct Gan2dResult {
    pub method: Method,
    pub mixture: Mixture,
    pub seed: u64,
    /// Scores of `eval_points` generated points after training.
    pub stats: ModeStats,
    pub log: Vec<LogLine>,
    /// Iteration at which a loss became non-finite (training stopped there), if it did.
    pub diverged_at: Option<usize>,
    pub seconds: f64,
    pub iters_per_sec: f64,
    /// The scored points `[eval_points, 2]`.
    #[serde(skip)]
    pub points: Vec<f32>,
}

/// Trains one method on one mixture with one seed. With `dir`, writes `metrics.jsonl` (one object
/// per log interval), `loss.png` and, with `cfg.snapshots`, `samples-<iter>.png` at each log (the
/// fixed-noise points over the true centres). `on_iter` is called after every iteration.
pub fn run(
    dev: &Device,
    cfg: &Gan2dConfig,
    mixture: Mixture,
    method: Method,
    seed: u64,
    dir: Option<&Path>,
    on_iter: &mut dyn FnMut(usize),
) -> Result<Gan2dResult> {
    let mut gan = Gan2d::new(dev, cfg, mixture, method, seed)?;
    if let Some(d) = dir {
        std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
    }
    let (centres, std) = (mixture.centres(), mixture.std());
    let snap_seed = sub_seed(seed, 5);
    let t0 = std::time::Instant::now();
    let (mut log, mut jsonl) = (Vec::new(), String::new());
    let mut diverged_at = None;
    for i in 0..cfg.iters {
        gan.step()?;
        on_iter(i + 1);
        if (i + 1) % cfg.log_every != 0 && i + 1 != cfg.iters {
            continue;
        }
        let loss = gan.take_losses()?;
        let pts = gan.generate(cfg.snapshot_points, snap_seed)?;
        let s = mode_stats(&pts, &centres, std);
        let line = LogLine {
            iter: i + 1,
            seconds: t0.elapsed().as_secs_f64(),
            modes_covered: s.modes_covered,
            high_quality: s.high_quality,
            kl: s.kl,
            loss,
        };
        let finite = [line.loss.d, line.loss.g, line.loss.reg].iter().all(|v| v.is_finite());
        if let Some(d) = dir {
            jsonl.push_str(&serde_json::to_string(&line).expect("serialisable"));
            jsonl.push('\n');
            write_atomic(d.join("metrics.jsonl"), jsonl.as_bytes())?;
            if cfg.snapshots {
                scatter(
                    &d.join(format!("samples-{:06}.png", i + 1)),
                    &format!(
                        "{} on {}, iteration {} (seed {seed}): {}/{} modes, {:.0}% high quality",
                        gan_method_name(method),
                        mixture.name(),
                        i + 1,
                        s.modes_covered,
                        s.modes,
                        100.0 * s.high_quality
                    ),
                    &pts,
                    &centres,
                )?;
            }
        }
        log.push(line);
        if !finite {
            diverged_at = Some(i + 1);
            break;
        }
    }
    let seconds = t0.elapsed().as_secs_f64();
    let points = gan.generate(cfg.eval_points, sub_seed(seed, 6))?;
    let stats = mode_stats(&points, &centres, std);
    if let Some(d) = dir {
        let curve = |name: &str, f: &dyn Fn(&LogLine) -> Option<f64>| {
            plot::Series::new(name, log.iter().filter_map(|l| f(l).map(|v| (l.iter as f64, v))).collect())
        };
        let mut series = vec![curve("D loss", &|l| Some(l.loss.d)), curve("G adversarial loss", &|l| Some(l.loss.g))];
        if method != Method::Ce {
            series.push(curve("G regulariser", &|l| Some(l.loss.reg)));
        }
        if method == Method::Atom {
            series.push(curve("L_A", &|l| l.loss.l_a));
        }
        plot::line_plot(
            d.join("loss.png"),
            &format!("{} on {} (seed {seed}): mean losses per log interval", gan_method_name(method), mixture.name()),
            "iteration",
            "loss",
            &series,
        )?;
    }
    Ok(Gan2dResult {
        method,
        mixture,
        seed,
        stats,
        iters_per_sec: gan.iteration() as f64 / seconds,
        log,
        diverged_at,
        seconds,
        points,
    })
}

/// Generated points (grey) over the true centres (crosses), at most 5,000 drawn.
fn scatter(path: &Path, title: &str, pts: &[f32], centres: &[(f64, f64)]) -> Result<()> {
    let step = (pts.len() / 2).div_ceil(5000).max(1);
    let p: Vec<(f64, f64, usize)> = pts.chunks_exact(2).step_by(step).map(|q| (q[0] as f64, q[1] as f64, 0)).collect();
    plot::scatter_plot(path, title, &p, &["generated".to_string()], centres)
}

/// One row of the GAN table: a method on a mixture over seeds.
#[derive(Clone, Debug, Serialize)]
pub struct GanRow {
    pub mixture: Mixture,
    pub method: Method,
    pub name: &'static str,
    pub modes: usize,
    pub seeds: Vec<u64>,
    pub modes_covered: Vec<f64>,
    pub high_quality: Vec<f64>,
    pub kl: Vec<f64>,
    /// Runs whose loss became non-finite (scored as they stood).
    pub diverged: usize,
}

/// Markdown table: mean ± sample std over seeds.
pub fn gan_table(rows: &[GanRow]) -> String {
    let mut s = String::from(
        "| mixture | method | modes covered | high-quality points (%) | KL(modes ‖ uniform) |\n| --- | --- | --- | --- | --- |\n",
    );
    for r in rows {
        let div = if r.diverged > 0 { format!(" ({} diverged)", r.diverged) } else { String::new() };
        s.push_str(&format!(
            "| {} | {}{} | {} / {} | {} | {} |\n",
            r.mixture.name(),
            r.name,
            div,
            fmt_ms(&r.modes_covered, 1.0, 1),
            r.modes,
            fmt_ms(&r.high_quality, 100.0, 1),
            fmt_ms(&r.kl, 1.0, 3)
        ));
    }
    s
}

/// Mean ± std band over runs of a per-log value, x = iteration.
fn log_band(name: &str, runs: &[&Gan2dResult], f: impl Fn(&LogLine) -> f64) -> plot::Series {
    let len = runs.iter().map(|r| r.log.len()).min().unwrap_or(0);
    let xs: Vec<f64> = (0..len).map(|i| runs[0].log[i].iter as f64).collect();
    let stats: Vec<(f64, f64)> =
        (0..len).map(|i| mean_std(&runs.iter().map(|r| f(&r.log[i])).collect::<Vec<_>>())).collect();
    plot::Series::new(name, xs.iter().zip(&stats).map(|(&x, &(m, _))| (x, m)).collect())
        .with_band(xs.iter().zip(&stats).map(|(&x, &(m, s))| (x, m - s, m + s)).collect())
}

/// Trains every method on every mixture for every seed with the same budget and writes the run
/// folder: `results.md` / `results.json`, `<mixture>-<method>.png` (seed 0's generated points over
/// the centres), `<mixture>-loss-d.png`, `<mixture>-loss-g.png`, `<mixture>-modes.png` (curves,
/// mean ± std over seeds) and per run `<mixture>/<method>/seed<k>/` (metrics.jsonl, loss.png,
/// sample snapshots for seed 0).
pub fn compare_gan2d(
    dev: &Device,
    cfg: &Gan2dConfig,
    mixtures: &[Mixture],
    methods: &[Method],
    seeds: &[u64],
    out: &Path,
    progress: Progress,
) -> Result<String> {
    cfg.validate()?;
    for &m in methods {
        check_method(m)?;
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let t0 = std::time::Instant::now();
    let total = mixtures.len() * methods.len() * seeds.len();
    let (mut rows, mut runs) = (Vec::new(), Vec::new());
    let mut done = 0;
    for &mixture in mixtures {
        let mut mix_runs: Vec<Gan2dResult> = Vec::new();
        for &method in methods {
            let mut row = GanRow {
                mixture,
                method,
                name: gan_method_name(method),
                modes: mixture.centres().len(),
                seeds: seeds.to_vec(),
                modes_covered: vec![],
                high_quality: vec![],
                kl: vec![],
                diverged: 0,
            };
            for &seed in seeds {
                progress(done, total, &format!("{}: {} seed {seed}", mixture.name(), gan_method_name(method)));
                let dir = out.join(mixture.slug()).join(method.slug()).join(format!("seed{seed}"));
                let run_cfg = Gan2dConfig { snapshots: cfg.snapshots && seed == seeds[0], ..cfg.clone() };
                let r = run(dev, &run_cfg, mixture, method, seed, Some(&dir), &mut |_| {})?;
                row.modes_covered.push(r.stats.modes_covered as f64);
                row.high_quality.push(r.stats.high_quality);
                row.kl.push(r.stats.kl);
                row.diverged += r.diverged_at.is_some() as usize;
                if seed == seeds[0] {
                    scatter(
                        &out.join(format!("{}-{}.png", mixture.slug(), method.slug())),
                        &format!(
                            "{} on {} (seed {seed}): {}/{} modes, {:.0}% high quality, KL {:.3}",
                            gan_method_name(method),
                            mixture.name(),
                            r.stats.modes_covered,
                            r.stats.modes,
                            100.0 * r.stats.high_quality,
                            r.stats.kl
                        ),
                        &r.points,
                        &mixture.centres(),
                    )?;
                }
                mix_runs.push(r);
                done += 1;
            }
            rows.push(row);
        }
        progress(done, total, &format!("{}: plots", mixture.name()));
        let by = |m: Method| mix_runs.iter().filter(|r| r.method == m).collect::<Vec<_>>();
        type Pick = fn(&LogLine) -> f64;
        let plots: [(&str, &str, Pick); 3] = [
            ("loss-d", "discriminator loss", |l| l.loss.d),
            ("loss-g", "generator adversarial loss", |l| l.loss.g),
            ("modes", "modes covered by 2,000 fixed-noise points", |l| l.modes_covered as f64),
        ];
        for (file, what, f) in plots {
            let series: Vec<plot::Series> = methods.iter().map(|&m| log_band(gan_method_name(m), &by(m), f)).collect();
            plot::line_plot(
                out.join(format!("{}-{file}.png", mixture.slug())),
                &format!("{}: {what} (mean ± std over seeds)", mixture.name()),
                "iteration",
                what,
                &series,
            )?;
        }
        runs.extend(mix_runs);
    }
    let md = gan_table(&rows);
    let seconds = t0.elapsed().as_secs_f64();
    let a = AtomConfig { lambda: cfg.lambda, ..AtomConfig::default() };
    let json = serde_json::json!({
        "task": "gan2d",
        "config": cfg,
        "atom": {
            "lambda": a.lambda, "mu_w": a.mu_w, "eps": a.eps, "tau_lo": a.tau_lo, "tau_hi": a.tau_hi,
            "r_max": a.r_max, "warmup_steps": a.warmup_steps, "normalize": a.normalize,
            "attach": format!("generator's last hidden layer ({} units) as {} tokens of {}", cfg.hidden, cfg.tokens, cfg.hidden / cfg.tokens),
        },
        "mixtures": mixtures,
        "seeds": seeds,
        "rows": rows,
        "runs": runs,
        "adapter": dev.describe(),
        "seconds": seconds,
    });
    write_atomic(out.join("results.json"), serde_json::to_string_pretty(&json).expect("serialisable").as_bytes())?;
    let header = format!(
        "gan2d: {} iterations, batch {} (regularisers on the first {}), noise {}, MLP width {} ({} tokens), Adam lr {} \
         betas ({}, {}), lambda {}, margin {}; metrics from {} generated points; {} seeds; {:.0} s on {}\n\n",
        cfg.iters,
        cfg.batch,
        cfg.reg_samples(),
        cfg.noise,
        cfg.hidden,
        cfg.tokens,
        cfg.lr,
        cfg.beta1,
        cfg.beta2,
        cfg.lambda,
        cfg.margin,
        cfg.eval_points,
        seeds.len(),
        seconds,
        dev.describe()
    );
    write_atomic(out.join("results.md"), format!("{header}{md}").as_bytes())?;
    Ok(format!("{header}{md}"))
}

// ---- DCGAN on Fashion-MNIST ----

/// Budget and model of the DCGAN run on Fashion-MNIST.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FashionGanConfig {
    /// Passes over the training images.
    pub epochs: usize,
    pub batch: usize,
    /// Noise dimension.
    pub noise: usize,
    /// Channels C of the generator's 7x7 map (C/2 at 14x14) and of the discriminator's last map.
    pub channels: usize,
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    /// Leaky-ReLU slope of the discriminator.
    pub slope: f32,
    /// Weight of L_A and of the hinge baselines.
    pub lambda: f32,
    /// Hinge margin on distances between flattened 7x7xC maps (not tuned).
    pub margin: f32,
    /// Samples the pairwise regularisers see (see [`Gan2dConfig::reg_batch`]).
    pub reg_batch: usize,
    /// Use at most this many training images (all when None).
    pub train_limit: Option<usize>,
    /// Images in the fixed-noise sample grid drawn after every epoch.
    pub grid: usize,
    /// Generated images scored after every epoch (Fréchet feature distance, class entropy,
    /// diversity; the same count for every run, as the Fréchet distance is biased by it).
    pub eval_samples: usize,
    /// The feature CNN's training run ([`FeatureNet`]; cross-entropy, seed [`FEATURE_CNN_SEED`]).
    pub feature_cnn: ClassifyConfig,
}

impl Default for FashionGanConfig {
    /// DCGAN's optimiser settings (lr 2e-4, betas (0.5, 0.999)) with a small model: on lavapipe
    /// (2 shared cores) one iteration of batch 64 took 1.5 s with 32 channels (0.75 s with 16, 8.8 s
    /// with 64), so 5 epochs of the bundled 8,000 images take about 15 minutes per plain run there.
    /// The feature CNN is the classifier of `compare --task fashion` trained for 1 epoch on 4,000
    /// images (its per-epoch check on 500 test images; [`FeatureNet`] then scores all of them).
    fn default() -> Self {
        FashionGanConfig {
            epochs: 5,
            batch: 64,
            noise: 64,
            channels: 32,
            lr: 2e-4,
            beta1: 0.5,
            beta2: 0.999,
            slope: 0.2,
            lambda: 0.1,
            margin: 10.0,
            reg_batch: 32,
            train_limit: None,
            grid: 64,
            eval_samples: 1000,
            feature_cnn: ClassifyConfig {
                epochs: 1,
                train_limit: Some(4000),
                test_limit: Some(500),
                ..ClassifyConfig::fashion()
            },
        }
    }
}

impl FashionGanConfig {
    pub fn validate(&self, train_len: usize) -> Result<()> {
        let n = self.train_limit.map_or(train_len, |l| l.min(train_len));
        let bad = |m: String| Err(Error::Config(format!("gan (fashion): {m}")));
        if self.batch < 2 || self.batch > n {
            return bad(format!("batch must be in 2..={n} (the training images used), got {}", self.batch));
        }
        if self.reg_batch < 2 || self.epochs == 0 || self.grid == 0 || self.noise == 0 {
            return bad(format!(
                "need reg_batch >= 2 and epochs, grid, noise >= 1; got {}, {}, {}, {}",
                self.reg_batch, self.epochs, self.grid, self.noise
            ));
        }
        if self.eval_samples < 2 || self.eval_samples > MAX_SAMPLE {
            return bad(format!("eval_samples must be in 2..={MAX_SAMPLE}, got {}", self.eval_samples));
        }
        if self.channels < 2 || !self.channels.is_multiple_of(2) {
            return bad(format!("channels must be even and >= 2, got {}", self.channels));
        }
        if !(self.lr > 0.0 && self.lr.is_finite() && self.lambda >= 0.0 && self.lambda.is_finite()) {
            return bad(format!("need lr > 0 and lambda >= 0, got lr {} lambda {}", self.lr, self.lambda));
        }
        Ok(())
    }
    pub fn settings(&self) -> GanSettings {
        GanSettings {
            batch: self.batch,
            reg_batch: self.reg_batch.min(self.batch),
            lr: self.lr,
            beta1: self.beta1,
            beta2: self.beta2,
            lambda: self.lambda,
            margin: self.margin,
        }
    }
}

/// The most images one [`sample`] call or one evaluation generates in a batch.
pub const MAX_SAMPLE: usize = 4096;

/// The DCGAN on 28x28 images.
pub type FashionGan = Gan<DcGenerator, DcDiscriminator>;

/// Images `[n, 784]` mapped from the data set's normalisation to the generator's [-1, 1].
pub fn to_tanh_range(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| 2.0 * (v * FASHION_STD + FASHION_MEAN) - 1.0).collect()
}

/// The inverse of [`to_tanh_range`]: generated images to the data set's normalisation.
pub fn from_tanh_range(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| ((v + 1.0) / 2.0 - FASHION_MEAN) / FASHION_STD).collect()
}

impl Gan<DcGenerator, DcDiscriminator> {
    /// DCGAN on the first `cfg.train_limit` training images of `images` (`[n, 1, 28, 28]` as the
    /// data module normalises them), drawn in shuffled epochs.
    pub fn fashion(
        dev: &Device,
        cfg: &FashionGanConfig,
        images: &ImageSet,
        method: Method,
        seed: u64,
    ) -> Result<FashionGan> {
        cfg.validate(images.len())?;
        let n = cfg.train_limit.map_or(images.len(), |l| l.min(images.len()));
        let real = ImageSource { data: to_tanh_range(&images.x[..n * PIXELS]), n, queue: Vec::new() };
        let g = DcGenerator::new(dev, cfg.noise, cfg.channels, sub_seed(seed, 1))?;
        let d = DcDiscriminator::new(dev, cfg.channels, cfg.slope, sub_seed(seed, 2))?;
        Gan::with_models(dev, g, d, cfg.settings(), Box::new(real), method, seed)
    }
}

// ---- Sample-quality metrics ----

/// Eigenvalues and eigenvectors of the symmetric `n x n` matrix `a` (row-major; its symmetric
/// part `(a + a^T) / 2` is used) by cyclic Jacobi rotations in f64: `(values, v)` with the
/// eigenvectors as the columns of `v` (row-major), so `a = v diag(values) v^T`. Values are not
/// sorted. Non-finite input or a wrong length is an error.
pub fn symmetric_eigen(a: &[f64], n: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    if a.len() != n * n {
        return Err(Error::shape("symmetric_eigen", format!("{} values for a {n} x {n} matrix", a.len())));
    }
    if a.iter().any(|v| !v.is_finite()) {
        return Err(Error::Config("symmetric_eigen: the matrix has non-finite entries".into()));
    }
    let mut m: Vec<f64> = (0..n * n).map(|k| 0.5 * (a[k] + a[(k % n) * n + k / n])).collect();
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    let total: f64 = m.iter().map(|x| x * x).sum();
    let off = |m: &[f64]| -> f64 { (0..n * n).filter(|k| k / n != k % n).map(|k| m[k] * m[k]).sum() };
    for _sweep in 0..100 {
        if off(&m) <= f64::EPSILON * f64::EPSILON * total {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = m[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                // The rotation in the (p, q) plane that zeroes m[p][q] (the smaller angle).
                let theta = (m[q * n + q] - m[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (kp, kq) = (m[k * n + p], m[k * n + q]);
                    m[k * n + p] = c * kp - s * kq;
                    m[k * n + q] = s * kp + c * kq;
                }
                for k in 0..n {
                    let (pk, qk) = (m[p * n + k], m[q * n + k]);
                    m[p * n + k] = c * pk - s * qk;
                    m[q * n + k] = s * pk + c * qk;
                }
                for k in 0..n {
                    let (kp, kq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * kp - s * kq;
                    v[k * n + q] = s * kp + c * kq;
                }
            }
        }
    }
    if off(&m) > 1e-20 * total {
        return Err(Error::Config(format!(
            "symmetric_eigen: Jacobi did not converge in 100 sweeps ({n} x {n}, off-diagonal {:.3e} of {total:.3e})",
            off(&m)
        )));
    }
    Ok(((0..n).map(|i| m[i * n + i]).collect(), v))
}

/// The symmetric square root of a symmetric positive semi-definite matrix (negative eigenvalues,
/// rounding noise, are taken as 0).
pub fn sqrt_psd(a: &[f64], n: usize) -> Result<Vec<f64>> {
    let (vals, v) = symmetric_eigen(a, n)?;
    let r: Vec<f64> = vals.iter().map(|&l| l.max(0.0).sqrt()).collect();
    let mut out = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            out[i * n + j] = (0..n).map(|k| v[i * n + k] * r[k] * v[j * n + k]).sum();
        }
    }
    Ok(out)
}

/// A Gaussian fitted to feature vectors: mean and (unbiased) covariance, f64.
#[derive(Clone, Debug, PartialEq)]
pub struct Gaussian {
    pub dim: usize,
    pub mean: Vec<f64>,
    /// `dim x dim`, row-major.
    pub cov: Vec<f64>,
}

impl Gaussian {
    /// Fits `x` (`[n, dim]` row-major, n >= 2).
    pub fn fit(x: &[f32], dim: usize) -> Result<Gaussian> {
        if dim == 0 || !x.len().is_multiple_of(dim) || x.len() / dim < 2 {
            return Err(Error::shape(
                "Gaussian::fit",
                format!("{} values are not n >= 2 rows of {dim} features", x.len()),
            ));
        }
        let n = x.len() / dim;
        let mut mean = vec![0.0f64; dim];
        for row in x.chunks_exact(dim) {
            for (m, &v) in mean.iter_mut().zip(row) {
                *m += v as f64;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let mut cov = vec![0.0f64; dim * dim];
        let mut c = vec![0.0f64; dim];
        for row in x.chunks_exact(dim) {
            for (ci, (&v, m)) in c.iter_mut().zip(row.iter().zip(&mean)) {
                *ci = v as f64 - m;
            }
            for i in 0..dim {
                for j in i..dim {
                    cov[i * dim + j] += c[i] * c[j];
                }
            }
        }
        for i in 0..dim {
            for j in i..dim {
                cov[i * dim + j] /= (n - 1) as f64;
                cov[j * dim + i] = cov[i * dim + j];
            }
        }
        Ok(Gaussian { dim, mean, cov })
    }
}

/// The Fréchet distance between two Gaussians, `|mu1 - mu2|^2 + tr(S1) + tr(S2) -
/// 2 tr((S1^{1/2} S2 S1^{1/2})^{1/2})`, in f64 via symmetric eigendecompositions (the squared
/// 2-Wasserstein distance). Applied to features of real and generated images this is the
/// Fréchet feature distance; with Inception-v3 pool features it would be FID.
pub fn frechet_distance(a: &Gaussian, b: &Gaussian) -> Result<f64> {
    let d = a.dim;
    if b.dim != d || a.mean.len() != d || b.mean.len() != d || a.cov.len() != d * d || b.cov.len() != d * d {
        return Err(Error::shape("frechet_distance", format!("Gaussians of dims {} and {}", a.dim, b.dim)));
    }
    let mean2: f64 = a.mean.iter().zip(&b.mean).map(|(x, y)| (x - y) * (x - y)).sum();
    let tr = |c: &[f64]| (0..d).map(|i| c[i * d + i]).sum::<f64>();
    let r = sqrt_psd(&a.cov, d)?;
    let mul = |x: &[f64], y: &[f64]| -> Vec<f64> {
        let mut o = vec![0.0; d * d];
        for i in 0..d {
            for k in 0..d {
                let xik = x[i * d + k];
                for j in 0..d {
                    o[i * d + j] += xik * y[k * d + j];
                }
            }
        }
        o
    };
    let m = mul(&mul(&r, &b.cov), &r);
    let (vals, _) = symmetric_eigen(&m, d)?;
    let tr_sqrt: f64 = vals.iter().map(|&l| l.max(0.0).sqrt()).sum();
    Ok(mean2 + tr(&a.cov) + tr(&b.cov) - 2.0 * tr_sqrt)
}

/// The entropy (nats) of the histogram of `preds` over `classes` classes: ln(classes) when every
/// class is equally frequent, 0 when all are one class; NaN for no predictions.
pub fn class_entropy(preds: &[u32], classes: usize) -> f64 {
    if preds.is_empty() {
        return f64::NAN;
    }
    let mut counts = vec![0usize; classes.max(1)];
    for &p in preds {
        if let Some(c) = counts.get_mut(p as usize) {
            *c += 1;
        }
    }
    let n = preds.len() as f64;
    // 0 - sum, not -sum: a single class gives 0.0, not -0.0.
    0.0 - counts.iter().filter(|&&c| c > 0).map(|&c| c as f64 / n).map(|p| p * p.ln()).sum::<f64>()
}

/// Mean pairwise L2 distance between the rows of `x` (`[n, dim]`); NaN for fewer than 2 rows.
pub fn mean_pair_distance(x: &[f32], dim: usize) -> f64 {
    let n = x.len().checked_div(dim).unwrap_or(0);
    let (mut sum, mut pairs) = (0.0, 0usize);
    for a in 0..n {
        for b in a + 1..n {
            let d: f64 = (0..dim).map(|k| (x[a * dim + k] - x[b * dim + k]) as f64).map(|v| v * v).sum();
            sum += d.sqrt();
            pairs += 1;
        }
    }
    if pairs == 0 {
        f64::NAN
    } else {
        sum / pairs as f64
    }
}

/// Sample-quality scores of a set of generated images in the feature CNN.
#[derive(Clone, Debug, Serialize)]
pub struct SampleQuality {
    /// Images scored.
    pub images: usize,
    /// Fréchet feature distance to the real test images (NaN if a feature is not finite).
    pub frechet: f64,
    /// Entropy (nats) of the CNN's predicted classes; ln 10 = 2.303 when all ten are equally frequent.
    pub class_entropy: f64,
    /// Mean pairwise feature distance of the images over that of the real test images.
    pub diversity: f64,
    /// Predicted class counts.
    pub class_counts: Vec<usize>,
}

/// Seed of the feature CNN's training run.
pub const FEATURE_CNN_SEED: u64 = 0;

/// The project's Fashion-MNIST CNN ([`Cnn`], trained by [`classify::run_fashion`] with
/// cross-entropy) as a feature extractor for generated images: the feature of an image is its
/// last convolutional feature map (after batch norm, ReLU and max pooling) averaged over the 7x7
/// cells, one value per channel (32 by default), which keeps the covariance well conditioned from
/// a thousand images and its square root cheap. This is not Inception FID: distances are
/// comparable only between runs scored by the same feature network.
pub struct FeatureNet {
    dev: Device,
    cnn: Cnn,
    /// Feature dimension (the CNN's last channel count).
    pub dim: usize,
    /// Accuracy on all test images.
    pub test_accuracy: f64,
    /// The checkpoint the weights came from.
    pub checkpoint: PathBuf,
    /// Whether that checkpoint was found from an earlier run (same config and data) rather than
    /// trained now.
    pub reused: bool,
    /// Seconds spent training (0 when reused) and scoring the test images.
    pub seconds: f64,
    /// Real test images the reference statistics are fitted to.
    pub real_images: usize,
    real: Gaussian,
    real_spread: f64,
}

impl FeatureNet {
    /// Loads the CNN from `path` if a checkpoint there was trained with `cfg` on `data` (seed
    /// [`FEATURE_CNN_SEED`], cross-entropy), else trains it with [`classify::run_fashion`] and
    /// saves it there; then scores it on the test images and fits the real-feature Gaussian to
    /// them.
    pub fn prepare(dev: &Device, data: &FashionData, cfg: &ClassifyConfig, path: &Path) -> Result<FeatureNet> {
        let t0 = std::time::Instant::now();
        let want = |ck: &checkpoint::Checkpoint| {
            let s = &ck.sidecar;
            s.get("task").and_then(|v| v.as_str()) == Some("fashion")
                && s.get("method").and_then(|v| v.as_str()) == Some(Method::Ce.slug())
                && s.get("seed").and_then(|v| v.as_u64()) == Some(FEATURE_CNN_SEED)
                && s.get("data").and_then(|v| v.as_str()) == Some(data.description().as_str())
                && s.get("config") == serde_json::to_value(cfg).ok().as_ref()
        };
        let found =
            checkpoint::sidecar_path(path)?.exists() && checkpoint::load(path).map(|ck| want(&ck)).unwrap_or(false);
        if !found {
            classify::run_fashion(dev, data, cfg, Method::Ce, FEATURE_CNN_SEED, Some(path), &mut || {})?;
        }
        let ck = checkpoint::load(path)?;
        let (c1, c2) = cfg.channels;
        let cnn = Cnn::new(dev, c1, c2, 10, 0)?;
        ck.restore_into(&cnn.tensors())?;
        let mut net = FeatureNet {
            dev: dev.clone(),
            cnn,
            dim: c2,
            test_accuracy: f64::NAN,
            checkpoint: path.to_path_buf(),
            reused: found,
            seconds: 0.0,
            real_images: data.test.len(),
            real: Gaussian { dim: c2, mean: vec![], cov: vec![] },
            real_spread: f64::NAN,
        };
        let (f, pred) = net.features(&data.test.x)?;
        net.test_accuracy =
            pred.iter().zip(&data.test.y).filter(|(p, y)| p == y).count() as f64 / data.test.len() as f64;
        net.real = Gaussian::fit(&f, c2)?;
        net.real_spread = mean_pair_distance(&f, c2);
        net.seconds = t0.elapsed().as_secs_f64();
        Ok(net)
    }

    /// Features `[n, dim]` and predicted classes of images `[n, 784]` normalised as the data
    /// module normalises them (no grad; batch norm uses its running statistics).
    pub fn features(&self, x: &[f32]) -> Result<(Vec<f32>, Vec<u32>)> {
        if !x.len().is_multiple_of(PIXELS) {
            return Err(Error::shape("FeatureNet::features", format!("{} values are not rows of {PIXELS}", x.len())));
        }
        let (c, n) = (self.dim, x.len() / PIXELS);
        let (mut feats, mut preds) = (Vec::with_capacity(n * c), Vec::with_capacity(n));
        for chunk in x.chunks(500 * PIXELS) {
            let b = chunk.len() / PIXELS;
            let tape = Tape::no_grad();
            let mask = TokenMask::new(&self.dev, &vec![49; b], 49)?;
            let input = tape.constant(Tensor::from_slice(&self.dev, chunk, &[b, 1, 28, 28])?);
            let out = self.cnn.forward(&tape, &input, false, false, &mask)?;
            let (z, logits) = (out.z.value().to_vec()?, out.logits.value().to_vec()?);
            // z is [b, C, 49] (channel-major): average each channel over its 49 cells.
            feats.extend(z.chunks_exact(49).map(|cells| cells.iter().map(|&v| v as f64).sum::<f64>() as f32 / 49.0));
            for row in logits.chunks_exact(10) {
                let best = (0..10).fold(0, |b, k| if row[k] > row[b] { k } else { b });
                preds.push(best as u32);
            }
        }
        Ok((feats, preds))
    }

    /// Scores images `[n, 784]` in the data set's normalisation against the real test images.
    pub fn quality_normalised(&self, x: &[f32]) -> Result<SampleQuality> {
        let (f, pred) = self.features(x)?;
        let frechet = if f.iter().all(|v| v.is_finite()) {
            frechet_distance(&self.real, &Gaussian::fit(&f, self.dim)?)?
        } else {
            f64::NAN
        };
        let mut class_counts = vec![0usize; 10];
        for &p in &pred {
            class_counts[p as usize] += 1;
        }
        Ok(SampleQuality {
            images: pred.len(),
            frechet,
            class_entropy: class_entropy(&pred, 10),
            diversity: mean_pair_distance(&f, self.dim) / self.real_spread,
            class_counts,
        })
    }

    /// Scores generated images `[n, 784]` in [-1, 1].
    pub fn quality(&self, generated: &[f32]) -> Result<SampleQuality> {
        self.quality_normalised(&from_tanh_range(generated))
    }
}

// ---- DCGAN runs ----

/// One epoch of a DCGAN run (one JSON line of `metrics.jsonl`).
#[derive(Clone, Debug, Serialize)]
pub struct FashionLogLine {
    pub epoch: usize,
    pub iter: usize,
    /// Training seconds so far (scoring excluded).
    pub seconds: f64,
    pub loss: LossMeans,
    /// Mean pairwise pixel distance of 256 generated images over that of 256 real test images: a
    /// crude collapse indicator (near 0 = collapsed), not a quality measure.
    pub pixel_diversity: f64,
    /// Scores of `eval_samples` generated images in the feature CNN (when one was given).
    pub quality: Option<SampleQuality>,
}

/// The outcome of one DCGAN run.
#[derive(Clone, Debug, Serialize)]
pub struct FashionGanResult {
    pub method: Method,
    pub seed: u64,
    pub log: Vec<FashionLogLine>,
    pub diverged_at: Option<usize>,
    /// Training seconds (per-epoch scoring excluded).
    pub seconds: f64,
    pub iters_per_sec: f64,
    /// The saved generator (with a run folder).
    pub checkpoint: Option<PathBuf>,
    /// Mean importance over the cells of the scored images (gated methods).
    pub importance_mean: Option<f64>,
    /// The fixed-noise sample grid after training, `[grid, 784]` in [0, 1].
    #[serde(skip)]
    pub samples: Vec<f32>,
    /// The gate over the 7x7 map of each grid image (gated methods), row-major 49 values each.
    #[serde(skip)]
    pub importance: Option<Vec<Vec<f32>>>,
    /// Every importance of the last scored images (`eval_samples x 49`, gated methods).
    #[serde(skip)]
    pub importance_scores: Vec<f64>,
}

/// Images `[n, 784]` in [-1, 1] as grid tiles in [0, 1].
fn tiles(x: &[f32]) -> Vec<Vec<f32>> {
    x.chunks_exact(PIXELS).map(|im| im.iter().map(|&v| ((v + 1.0) / 2.0).clamp(0.0, 1.0)).collect()).collect()
}

/// Seed's Figure 5 for the generator: the images with the gate over their 7x7 map overlaid as a
/// heat map (each map scaled to its own range by [`plot::image_grid`]).
fn importance_grid(path: &Path, images: &[Vec<f32>], maps: &[Vec<f32>]) -> Result<()> {
    plot::image_grid(path, images, 28, 28, 8, Some(maps), None)
}

fn importance_histogram(path: &Path, title: &str, scores: &[f64]) -> Result<()> {
    plot::histogram(path, title, scores, 50)
}

/// Trains the DCGAN with one method and seed. After every epoch it scores `cfg.eval_samples`
/// images generated from fixed noise with `features` (when given) and draws the fixed-noise grid.
/// With `dir`, writes `metrics.jsonl` (one object per epoch), `loss.png`, `samples-epoch<k>.png`,
/// `generator.safetensors` (+ `.json`, see [`save_generator`]) and, for the gated methods,
/// `importance.png` (the final grid with the gate overlaid) and `importance-hist.png`.
#[allow(clippy::too_many_arguments)]
pub fn run_fashion(
    dev: &Device,
    data: &FashionData,
    cfg: &FashionGanConfig,
    method: Method,
    seed: u64,
    dir: Option<&Path>,
    features: Option<&FeatureNet>,
    on_iter: &mut dyn FnMut(usize),
) -> Result<FashionGanResult> {
    let mut gan = FashionGan::fashion(dev, cfg, &data.train, method, seed)?;
    if let Some(d) = dir {
        std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
    }
    let n = cfg.train_limit.map_or(data.train.len(), |l| l.min(data.train.len()));
    let per_epoch = n / cfg.batch;
    let m = data.test.len().min(256);
    let real_div = mean_pair_distance(&to_tanh_range(&data.test.x[..m * PIXELS]), PIXELS);
    let (grid_seed, eval_seed) = (sub_seed(seed, 5), sub_seed(seed, 6));
    let (mut train_s, mut log, mut jsonl, mut diverged_at) = (0.0, Vec::new(), String::new(), None);
    let (mut samples, mut grid_w, mut eval_w) = (Vec::new(), None, None);
    for epoch in 0..cfg.epochs {
        let t0 = std::time::Instant::now();
        for _ in 0..per_epoch {
            gan.step()?;
            on_iter(gan.iteration());
        }
        let loss = gan.take_losses()?;
        train_s += t0.elapsed().as_secs_f64();
        let (eval, w) = gan.generate_with_importance(cfg.eval_samples, eval_seed)?;
        eval_w = w;
        let pixel_diversity = mean_pair_distance(&eval[..eval.len().min(256 * PIXELS)], PIXELS) / real_div;
        let quality = features.map(|f| f.quality(&eval)).transpose()?;
        (samples, grid_w) = gan.generate_with_importance(cfg.grid, grid_seed)?;
        let line = FashionLogLine {
            epoch: epoch + 1,
            iter: gan.iteration(),
            seconds: train_s,
            loss,
            pixel_diversity,
            quality,
        };
        let finite = [line.loss.d, line.loss.g, line.loss.reg].iter().all(|v| v.is_finite());
        if let Some(d) = dir {
            jsonl.push_str(&serde_json::to_string(&line).expect("serialisable"));
            jsonl.push('\n');
            write_atomic(d.join("metrics.jsonl"), jsonl.as_bytes())?;
            plot::image_grid(
                d.join(format!("samples-epoch{}.png", epoch + 1)),
                &tiles(&samples),
                28,
                28,
                8,
                None,
                None,
            )?;
        }
        log.push(line);
        if !finite {
            diverged_at = Some(gan.iteration());
            break;
        }
    }
    let importance: Option<Vec<Vec<f32>>> = grid_w.map(|w| w.chunks_exact(49).map(|c| c.to_vec()).collect());
    let importance_scores: Vec<f64> = eval_w.iter().flatten().map(|&v| v as f64).collect();
    let importance_mean =
        (!importance_scores.is_empty()).then(|| importance_scores.iter().sum::<f64>() / importance_scores.len() as f64);
    let mut checkpoint = None;
    if let Some(d) = dir {
        let series = vec![
            plot::Series::new("D loss", log.iter().map(|l| (l.epoch as f64, l.loss.d)).collect()),
            plot::Series::new("G adversarial loss", log.iter().map(|l| (l.epoch as f64, l.loss.g)).collect()),
        ];
        plot::line_plot(
            d.join("loss.png"),
            &format!("DCGAN Fashion-MNIST, {} (seed {seed}): mean losses per epoch", gan_method_name(method)),
            "epoch",
            "loss",
            &series,
        )?;
        if let Some(maps) = &importance {
            importance_grid(&d.join("importance.png"), &tiles(&samples), maps)?;
            importance_histogram(
                &d.join("importance-hist.png"),
                &format!("{} seed {seed}: gate on 7x7 cells, {} images", gan_method_name(method), cfg.eval_samples),
                &importance_scores,
            )?;
        }
        let path = d.join("generator.safetensors");
        save_generator(&path, &gan, cfg, seed, &data.description())?;
        checkpoint = Some(path);
    }
    Ok(FashionGanResult {
        method,
        seed,
        iters_per_sec: gan.iteration() as f64 / train_s,
        log,
        diverged_at,
        seconds: train_s,
        checkpoint,
        importance_mean,
        samples: tiles(&samples).concat(),
        importance,
        importance_scores,
    })
}

// ---- Generator checkpoints ----

/// The `task` a generator checkpoint's sidecar names.
pub const GENERATOR_TASK: &str = "gan-generator";

/// Saves the DCGAN's generator (parameters, the importance head's included, and batch-norm running
/// statistics) with [`checkpoint::save`]; the sidecar names the model (`"model": "DcGenerator"`,
/// `channels`, `noise`, `method`) so [`sample`] can rebuild it, plus the seed, iteration,
/// training config and data.
pub fn save_generator(path: &Path, gan: &FashionGan, cfg: &FashionGanConfig, seed: u64, data: &str) -> Result<()> {
    let meta = serde_json::json!({
        "task": GENERATOR_TASK,
        "model": "DcGenerator",
        "channels": gan.g.channels,
        "noise": gan.g.noise,
        "method": gan.method.slug(),
        "seed": seed,
        "iteration": gan.iteration(),
        "config": cfg,
        "data": data,
    });
    checkpoint::save(path, &gan.g.tensors(), &meta)
}

/// Rebuilds a generator saved by [`save_generator`] and its method. Strict: a checkpoint that is
/// not a generator's, or whose tensors do not match the model its sidecar names (names, shapes),
/// is an error naming the problem.
pub fn load_generator(dev: &Device, path: &Path) -> Result<(DcGenerator, Method)> {
    let ck = checkpoint::load(path)?;
    let task = ck.sidecar.get("task").and_then(|v| v.as_str());
    if task != Some(GENERATOR_TASK) {
        return Err(Error::data(
            path,
            format!(
                "not a DCGAN generator checkpoint: its sidecar says task {}, expected {GENERATOR_TASK:?}",
                task.map_or("(none)".to_string(), |t| format!("{t:?}"))
            ),
        ));
    }
    let field = |k: &str| {
        ck.sidecar
            .get(k)
            .and_then(|v| v.as_u64())
            .map(|v| v as usize)
            .ok_or_else(|| Error::data(path, format!("generator sidecar has no integer {k:?}")))
    };
    let (channels, noise) = (field("channels")?, field("noise")?);
    let slug = ck.sidecar.get("method").and_then(|v| v.as_str()).unwrap_or_default().to_string();
    let method = Method::parse_list(&[slug])?[0];
    check_method(method)?;
    let g = DcGenerator::new(dev, noise, channels, 0)?;
    ck.restore_into(&g.tensors())?;
    Ok((g, method))
}

/// Draws `n` images (1..=[`MAX_SAMPLE`]) from a generator checkpoint written by a DCGAN run, with
/// noise seeded by `seed` (the same images [`Gan::generate`] gives for that seed), as a PNG grid
/// with ceil(sqrt(n)) columns. `out` is the PNG file when it ends in `.png`, else a folder
/// (created) that gets `samples-<method>-n<n>-seed<seed>.png`. Returns the file written.
pub fn sample(dev: &Device, checkpoint: &Path, n: usize, seed: u64, out: &Path) -> Result<PathBuf> {
    if n == 0 || n > MAX_SAMPLE {
        return Err(Error::Config(format!("sample: n must be in 1..={MAX_SAMPLE}, got {n}")));
    }
    let (g, method) = load_generator(dev, checkpoint)?;
    let (x, _) = generate_with(dev, &g, method.gated(), n, seed)?;
    let file = if out.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")) {
        out.to_path_buf()
    } else {
        out.join(format!("samples-{}-n{n}-seed{seed}.png", method.slug()))
    };
    if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let cols = (1..=n).find(|c| c * c >= n).unwrap_or(1);
    plot::image_grid(&file, &tiles(&x), 28, 28, cols, None, None)?;
    Ok(file)
}

// ---- The comparison ----

/// One row of the DCGAN table: a method over seeds (final-epoch values).
#[derive(Clone, Debug, Serialize)]
pub struct FashionGanRow {
    pub method: Method,
    pub name: &'static str,
    pub seeds: Vec<u64>,
    pub frechet: Vec<f64>,
    pub class_entropy: Vec<f64>,
    pub diversity: Vec<f64>,
    pub pixel_diversity: Vec<f64>,
    pub d_loss: Vec<f64>,
    pub g_loss: Vec<f64>,
    pub iters_per_sec: Vec<f64>,
    pub diverged: usize,
    /// The first seed's generator.
    pub checkpoint: Option<PathBuf>,
}

/// Mean ± std band over runs of a per-epoch value, x = epoch.
fn epoch_band(name: &str, runs: &[&FashionGanResult], f: impl Fn(&FashionLogLine) -> f64) -> plot::Series {
    let len = runs.iter().map(|r| r.log.len()).min().unwrap_or(0);
    let stats: Vec<(f64, f64)> =
        (0..len).map(|i| mean_std(&runs.iter().map(|r| f(&r.log[i])).collect::<Vec<_>>())).collect();
    plot::Series::new(name, stats.iter().enumerate().map(|(i, &(m, _))| ((i + 1) as f64, m)).collect())
        .with_band(stats.iter().enumerate().map(|(i, &(m, s))| ((i + 1) as f64, m - s, m + s)).collect())
}

/// Trains every method for every seed on Fashion-MNIST and writes the run folder: the feature CNN
/// (`feature-cnn.safetensors`, trained once and reused by later runs into the same folder with the
/// same settings), `results.md` / `results.json` (Fréchet feature distance, class entropy, feature
/// and pixel diversity, losses; mean ± std over seeds, with real training images scored the same
/// way as a reference row), `frechet.png` (per epoch), `real.png`, for seed 0 of each method
/// `samples-<method>.png` and, gated methods, `importance-<method>.png` / `importance-hist-<method>.png`,
/// and per run `<method>/seed<k>/` (see [`run_fashion`], including `generator.safetensors`).
pub fn compare_fashion_gan(
    dev: &Device,
    data: &FashionData,
    cfg: &FashionGanConfig,
    methods: &[Method],
    seeds: &[u64],
    out: &Path,
    progress: Progress,
) -> Result<String> {
    cfg.validate(data.train.len())?;
    for &m in methods {
        check_method(m)?;
    }
    if seeds.is_empty() {
        return Err(Error::Config("gan (fashion): need at least one seed".into()));
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let t0 = std::time::Instant::now();
    let total = methods.len() * seeds.len();
    progress(0, total, "feature CNN (trained once per run folder, then reused)");
    let fnet = FeatureNet::prepare(dev, data, &cfg.feature_cnn, &out.join("feature-cnn.safetensors"))?;
    let n_ref = cfg.eval_samples.min(data.train.len());
    let reference = fnet.quality_normalised(&data.train.x[..n_ref * PIXELS])?;
    let real: Vec<f32> = to_tanh_range(&data.test.x[..cfg.grid.min(data.test.len()) * PIXELS]);
    plot::image_grid(out.join("real.png"), &tiles(&real), 28, 28, 8, None, None)?;
    let (mut runs, mut rows) = (Vec::<FashionGanResult>::new(), Vec::new());
    let mut done = 0;
    for &method in methods {
        let mut row = FashionGanRow {
            method,
            name: gan_method_name(method),
            seeds: seeds.to_vec(),
            frechet: vec![],
            class_entropy: vec![],
            diversity: vec![],
            pixel_diversity: vec![],
            d_loss: vec![],
            g_loss: vec![],
            iters_per_sec: vec![],
            diverged: 0,
            checkpoint: None,
        };
        for &seed in seeds {
            progress(done, total, &format!("DCGAN {} seed {seed}", gan_method_name(method)));
            let dir = out.join(method.slug()).join(format!("seed{seed}"));
            let r = run_fashion(dev, data, cfg, method, seed, Some(&dir), Some(&fnet), &mut |_| {})?;
            let last = r.log.last().expect("at least one epoch");
            let q = last.quality.as_ref().expect("scored with the feature CNN");
            row.frechet.push(q.frechet);
            row.class_entropy.push(q.class_entropy);
            row.diversity.push(q.diversity);
            row.pixel_diversity.push(last.pixel_diversity);
            row.d_loss.push(last.loss.d);
            row.g_loss.push(last.loss.g);
            row.iters_per_sec.push(r.iters_per_sec);
            row.diverged += r.diverged_at.is_some() as usize;
            if seed == seeds[0] {
                row.checkpoint = r.checkpoint.clone();
                let imgs: Vec<Vec<f32>> = r.samples.chunks_exact(PIXELS).map(|c| c.to_vec()).collect();
                plot::image_grid(out.join(format!("samples-{}.png", method.slug())), &imgs, 28, 28, 8, None, None)?;
                if let Some(maps) = &r.importance {
                    importance_grid(&out.join(format!("importance-{}.png", method.slug())), &imgs, maps)?;
                    importance_histogram(
                        &out.join(format!("importance-hist-{}.png", method.slug())),
                        &format!(
                            "{} seed {seed}: gate on 7x7 cells, {} images",
                            gan_method_name(method),
                            cfg.eval_samples
                        ),
                        &r.importance_scores,
                    )?;
                }
            }
            runs.push(r);
            done += 1;
        }
        rows.push(row);
    }
    progress(done, total, "plots");
    let by = |m: Method| runs.iter().filter(|r| r.method == m).collect::<Vec<_>>();
    let series: Vec<plot::Series> = methods
        .iter()
        .map(|&m| epoch_band(gan_method_name(m), &by(m), |l| l.quality.as_ref().map_or(f64::NAN, |q| q.frechet)))
        .collect();
    plot::line_plot(
        out.join("frechet.png"),
        "DCGAN Fashion-MNIST: Fréchet distance in the project's CNN features (not FID; mean ± std over seeds)",
        "epoch",
        "Fréchet feature distance",
        &series,
    )?;
    let mut md = String::from(
        "| method | Fréchet feature distance (↓) | class entropy (nats; ln 10 = 2.303) | feature diversity (generated / real) \
         | pixel diversity (generated / real) | D loss | G adversarial loss | it/s |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    md.push_str(&format!(
        "| real training images (reference) | {:.3} | {:.3} | {:.3} | – | – | – | – |\n",
        reference.frechet, reference.class_entropy, reference.diversity
    ));
    for r in &rows {
        let div = if r.diverged > 0 { format!(" ({} diverged)", r.diverged) } else { String::new() };
        md.push_str(&format!(
            "| {}{} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.name,
            div,
            fmt_ms(&r.frechet, 1.0, 3),
            fmt_ms(&r.class_entropy, 1.0, 3),
            fmt_ms(&r.diversity, 1.0, 3),
            fmt_ms(&r.pixel_diversity, 1.0, 3),
            fmt_ms(&r.d_loss, 1.0, 3),
            fmt_ms(&r.g_loss, 1.0, 3),
            fmt_ms(&r.iters_per_sec, 1.0, 2)
        ));
    }
    let seconds = t0.elapsed().as_secs_f64();
    let fc = &cfg.feature_cnn;
    let feature_note = format!(
        "Sample quality is scored in the features of the project's own Fashion-MNIST CNN (channels {}/{}, \
         cross-entropy, {} epoch(s) on {} training images, seed {FEATURE_CNN_SEED}; test accuracy {:.2}% on {} \
         test images; {}): the feature of an image is its last conv map averaged over the 7x7 cells ({}-d). The \
         Fréchet feature distance is between Gaussians fitted to {} generated images and the {} real test images; \
         it is NOT Inception FID and is comparable only within runs scored by this network. Class entropy: of \
         the CNN's predicted classes of the generated images. Diversity: mean pairwise feature distance, generated \
         over real test. The reference row scores {} real training images the same way.",
        fc.channels.0,
        fc.channels.1,
        fc.epochs,
        fc.train_limit.map_or(data.train.len(), |l| l.min(data.train.len())),
        100.0 * fnet.test_accuracy,
        data.test.len(),
        if fnet.reused { "reused from feature-cnn.safetensors" } else { "trained for this run" },
        fnet.dim,
        cfg.eval_samples,
        fnet.real_images,
        n_ref
    );
    let header = format!(
        "gan (DCGAN, Fashion-MNIST): {}; {} epochs, batch {}, noise {}, channels {}, Adam lr {} betas ({}, {}), \
         lambda {}, regularisers on {} samples; {} seeds; {:.0} s on {}.\n\n{feature_note}\n\n",
        data.description(),
        cfg.epochs,
        cfg.batch,
        cfg.noise,
        cfg.channels,
        cfg.lr,
        cfg.beta1,
        cfg.beta2,
        cfg.lambda,
        cfg.settings().reg_batch,
        seeds.len(),
        seconds,
        dev.describe()
    );
    let json = serde_json::json!({
        "task": "gan", "data": data.description(), "config": cfg, "seeds": seeds,
        "feature_cnn": {
            "note": "the project's own Fashion-MNIST CNN, not Inception: the Fréchet distance is not FID",
            "checkpoint": fnet.checkpoint, "reused": fnet.reused, "seed": FEATURE_CNN_SEED,
            "test_accuracy": fnet.test_accuracy, "test_images": data.test.len(), "feature_dim": fnet.dim,
            "features": "last conv map (after batch norm, ReLU, max pool) averaged over its 7x7 cells",
            "seconds": fnet.seconds,
        },
        "reference_real_train": reference, "rows": rows, "runs": runs,
        "adapter": dev.describe(), "seconds": seconds,
    });
    write_atomic(out.join("results.json"), serde_json::to_string_pretty(&json).expect("serialisable").as_bytes())?;
    write_atomic(out.join("results.md"), format!("{header}{md}").as_bytes())?;
    Ok(format!("{header}{md}"))
}
