//! GAN training with atom modeling on the generator, and its two benchmarks.
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
//! The two benchmarks live in `gan/ring.rs` (2-D mixtures: [`train_gan2d`]) and `gan/dcgan.rs`
//! (Fashion-MNIST: [`train_dcgan`]); the sample-quality measures in `gan/metrics.rs`. Both run
//! through [`train_run`] for `train` and `compare`.

mod dcgan;
mod metrics;
mod ring;
pub use dcgan::*;
pub use metrics::*;
pub use ring::*;

use crate::atom::{atom_terms, hinge_lp, importance_budget, nt_xent, AtomConfig, Norm, TokenMask};
use crate::autodiff::{Tape, Var};
use crate::checkpoint;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::experiments::protocol::{Point, RunRecord};
use crate::experiments::task::{Data, RunContext, RunOptions, Task};
use crate::experiments::Method;
use crate::nn::gan::{Discriminator, GenOut, Generator};
use crate::nn::{sub_seed, Activation, Mlp};
use crate::ops::elementwise::accumulate;
use crate::optim::{Adam, AdamConfig, Optimizer};
use crate::plot;
use crate::rng::Rng;
use crate::tensor::Tensor;
use serde::Serialize;
use std::path::Path;

/// One run of a GAN task (`train`, and each run of `compare`): see [`train_gan2d`] and [`train_dcgan`].
pub fn train_run(
    dev: &Device,
    opts: &RunOptions,
    data: &Data,
    run: &mut crate::run::Run,
    resume: Option<&checkpoint::Checkpoint>,
    ctx: &RunContext,
) -> Result<Option<RunRecord>> {
    match (opts.task, data) {
        (Task::Gan2d, _) => {
            let (cfg, mixture) = opts.gan2d();
            train_gan2d(dev, &cfg, mixture, opts, run, resume, ctx)
        }
        (Task::Gan, Data::Fashion(d)) => train_dcgan(dev, d, &opts.dcgan(), opts, run, resume, ctx),
        (t, _) => Err(Error::Config(format!("task {} is not a GAN task on this data", t.name()))),
    }
}

/// A GAN run's history from its `metrics.jsonl` (every logged interval, resumed parts included):
/// the validation score `"val"` and the generator's adversarial loss of each interval.
pub fn history_from_metrics(dir: &Path) -> Result<Vec<Point>> {
    let lines = crate::fsio::read_json_lines(&dir.join("metrics.jsonl"))?;
    Ok(lines
        .iter()
        .enumerate()
        .map(|(i, l)| Point {
            epoch: i + 1,
            step: l.get("step").and_then(|v| v.as_u64()).unwrap_or(0) as usize,
            train_loss: l.get("loss").and_then(|v| v.get("g")).and_then(|v| v.as_f64()).unwrap_or(f64::NAN),
            val: l.get("val").and_then(|v| v.as_f64()).unwrap_or(f64::NAN),
            test: None,
        })
        .collect())
}

/// SimCLR's second view of a generated sample: the generator on its noise plus N(0, this^2).
pub const SIMCLR_NOISE_JITTER: f32 = 0.1;
/// SimCLR's NT-Xent temperature for the generator.
pub const SIMCLR_TAU: f32 = 0.5;

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

/// A fixed set of samples (`[n, ..shape]`, row-major) drawn in shuffled epochs: a queue of
/// batches refilled from the run's RNG when empty, saved in checkpoints.
pub struct DataSource {
    data: Vec<f32>,
    shape: Vec<usize>,
    n: usize,
    /// Batches still to draw this epoch, last first.
    queue: Vec<Vec<usize>>,
}

impl DataSource {
    pub fn new(data: Vec<f32>, shape: &[usize]) -> DataSource {
        let per: usize = shape.iter().product();
        DataSource { n: data.len() / per.max(1), data, shape: shape.to_vec(), queue: Vec::new() }
    }
}

impl RealSource for DataSource {
    fn next(&mut self, dev: &Device, rng: &mut Rng, b: usize) -> Result<Tensor> {
        if self.queue.is_empty() {
            self.queue = crate::data::epoch_batches(self.n, b, rng);
            self.queue.reverse();
        }
        let idx = self.queue.pop().expect("an epoch has at least one batch");
        let per: usize = self.shape.iter().product();
        let mut x = Vec::with_capacity(b * per);
        for i in idx {
            x.extend_from_slice(&self.data[i * per..(i + 1) * per]);
        }
        let mut shape = vec![b];
        shape.extend(&self.shape);
        Tensor::from_slice(dev, &x, &shape)
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
    /// SimCLR's projection head on z (trained with the generator), for [`Method::SimClr`].
    proj: Option<Mlp>,
    rng: Rng,
    noise_seed: u64,
    iter: usize,
    sums: Sums,
    /// Check every op of each step for NaN/Inf ([`Tape::detect_anomaly`]).
    pub detect_anomaly: bool,
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
        if s.batch < 2 || s.reg_batch < 2 || s.reg_batch > s.batch {
            return Err(Error::Config(format!(
                "gan: need 2 <= reg_batch <= batch, got batch {} and reg_batch {}",
                s.batch, s.reg_batch
            )));
        }
        let adam = AdamConfig { lr: s.lr, beta1: s.beta1, beta2: s.beta2, ..AdamConfig::default() };
        let proj = (method == Method::SimClr)
            .then(|| Mlp::new(dev, "proj", &[g.latent_dim(), 64, 32], Activation::Relu, sub_seed(seed, 8)))
            .transpose()?;
        let mut g_params = g.params(method.gated());
        g_params.extend(proj.iter().flat_map(|p| p.params()));
        let opt_g = Adam::new(g_params, adam)?;
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
            proj,
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
            Method::SimClr => {
                // Two views of each sample: its latent, and the latent of its noise jittered.
                let proj =
                    self.proj.as_ref().ok_or_else(|| Error::Config("SimCLR needs its projection head".into()))?;
                let (b, k) = (s.batch, self.g.noise());
                let seed = sub_seed(self.noise_seed, self.iter as u64);
                let noise = Tensor::rand_normal(&self.dev, &[b, k], 0.0, 1.0, seed)?;
                let jitter = Tensor::rand_normal(&self.dev, &[b, k], 0.0, SIMCLR_NOISE_JITTER, sub_seed(seed, 1))?;
                let noise2 = tape.constant(noise).add(&tape.constant(jitter))?;
                let z2 = sub(&self.g.forward(tape, &noise2, false, &self.mask, true)?.z)?;
                let (a, c) = (proj.forward(tape, &z)?, proj.forward(tape, &z2)?);
                (Some(nt_xent(&a, &c, SIMCLR_TAU)?.scale(s.lambda)?), None, None)
            }
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
        let mut t = checkpoint::prefixed("model.", self.model_tensors());
        t.extend(checkpoint::prefixed("opt_g.", self.opt_g.state()?));
        t.extend(checkpoint::prefixed("opt_d.", self.opt_d.state()?));
        t.extend(self.sum_tensors());
        let q = self.real.queue();
        t.push(("real.queue".into(), Tensor::from_u32(&self.dev, &q, &[q.len()])?));
        Ok(t)
    }

    /// Both models' tensors and, for SimCLR, the projection head's.
    fn model_tensors(&self) -> Vec<(String, Tensor)> {
        let mut t = [self.g.tensors(), self.d.tensors()].concat();
        if let Some(p) = &self.proj {
            t.extend(p.tensors());
        }
        t
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
        ck.select("model.").restore_into(&self.model_tensors())?;
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

    /// [`Gan::generate`] of any `n`, in chunks of at most 500 (chunk k from `sub_seed(seed, k)`),
    /// so large evaluations stay within a storage binding.
    pub fn generate_many(&self, n: usize, seed: u64) -> Result<Vec<f32>> {
        let mut out = Vec::new();
        for (k, start) in (0..n).step_by(500).enumerate() {
            out.extend(self.generate((n - start).min(500), sub_seed(seed, k as u64))?);
        }
        Ok(out)
    }

    /// [`Gan::generate`] and, for the gated methods, the importances `[n, tokens]` of the gate.
    pub fn generate_with_importance(&self, n: usize, seed: u64) -> Result<(Vec<f32>, Option<Vec<f32>>)> {
        generate_with(&self.dev, &self.g, self.method.gated(), n, seed)
    }
}

/// Scores a GAN during training: measures for the log line and the validation score.
pub type Score<'a, G, D> = dyn FnMut(&Gan<G, D>) -> Result<(serde_json::Value, f64)> + 'a;

/// Trains `gan` up to `iters` iterations inside a run folder: every `log_every` iterations the
/// mean losses, `score`'s measures and its validation score (`"val"`) go to `metrics.jsonl` and a
/// checkpoint is saved (the last 2 kept, and the best by the validation score, which
/// `higher_is_better` orients); a stop request (Ctrl-C, `--max-steps`) saves a checkpoint after
/// the current iteration; `resume` continues bit-identically. Non-finite losses stop with an
/// error naming the iteration. Returns whether it stopped early.
pub fn fit_gan<G: Generator, D: Discriminator>(
    gan: &mut Gan<G, D>,
    iters: usize,
    log_every: usize,
    resume: Option<&checkpoint::Checkpoint>,
    run: &mut crate::run::Run,
    score: &mut Score<G, D>,
    higher_is_better: bool,
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
    if run.should_stop() && gan.iter < iters {
        // --max-steps 0, or resumed already at the limit: the state stands as it is.
        save(gan, run, None)?;
        return Ok(true);
    }
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
            let (metrics, val) = score(gan)?;
            let mut line = serde_json::json!({ "step": it, "loss": loss, "val": val });
            if let (Some(l), serde_json::Value::Object(m)) = (line.as_object_mut(), metrics) {
                l.extend(m);
            }
            run.log(&line)?;
            run.say(&format!("iter {it:>6}  D {:.4}  G {:.4}  reg {:.4}  {}", loss.d, loss.g, loss.reg, brief(&line)));
            save(gan, run, Some(if higher_is_better { val } else { -val }))?;
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
    let lines = crate::fsio::read_json_lines(&dir.join("metrics.jsonl"))?;
    let series = |name: &str, key: &str| {
        let pts =
            lines.iter().filter_map(|l| Some((l.get("step")?.as_f64()?, l.get("loss")?.get(key)?.as_f64()?))).collect();
        plot::Series::new(name, pts)
    };
    let all = [series("D loss", "d"), series("G adversarial loss", "g"), series("G regulariser", "reg")];
    plot::line_plot(dir.join("loss.png"), "GAN: mean losses per log interval", "iteration", "loss", &all)
}

/// The numeric fields of a metrics line other than the iteration and losses, `k v` pairs.
fn brief(line: &serde_json::Value) -> String {
    let Some(o) = line.as_object() else { return String::new() };
    o.iter()
        .filter(|(k, v)| *k != "step" && *k != "loss" && v.is_number())
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
