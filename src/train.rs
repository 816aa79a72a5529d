//! Training loops. Every step records forward, backward and the optimizer update into one command
//! encoder and submits once; the host reads back only what it prints (the epoch's summed loss,
//! accumulated on the GPU, and evaluation predictions).

use crate::autodiff::{Tape, Var};
use crate::checkpoint::{prefixed, Checkpoint};
use crate::data::{moons, Dataset};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::nn::{Activation, Mlp};
use crate::ops::elementwise::accumulate;
use crate::ops::reduce::argmax;
use crate::optim::{Adam, AdamConfig, Optimizer};
use crate::rng::Rng;
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The two-moons MLP classifier (the engine's end-to-end check).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MoonsConfig {
    pub train: usize,
    pub val: usize,
    pub test: usize,
    pub noise: f64,
    pub hidden: usize,
    pub epochs: usize,
    pub batch: usize,
    pub lr: f32,
    pub seed: u64,
}

impl Default for MoonsConfig {
    fn default() -> Self {
        MoonsConfig {
            train: 2048,
            val: 500,
            test: 1000,
            noise: 0.1,
            hidden: 64,
            epochs: 20,
            batch: 64,
            lr: 1e-2,
            seed: 0,
        }
    }
}

/// A trained two-moons model and its history.
pub struct MoonsRun {
    pub model: Mlp,
    pub history: Vec<EpochReport>,
}

impl MoonsConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str| Err(Error::Config(format!("moons: {what}")));
        if self.batch == 0 || self.batch > self.train {
            return bad(&format!("batch must be in 1..={} (the training set size), got {}", self.train, self.batch));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad(&format!("lr must be a positive number, got {}", self.lr));
        }
        if self.hidden == 0 || self.val == 0 || self.test == 0 || self.epochs == 0 {
            return bad("hidden, val, test and epochs must be at least 1");
        }
        Ok(())
    }
}

/// A model, its optimizer and its data, as [`fit`] drives them. Everything a trainer varies per
/// task lives here; the loop, checkpoints, resume, stopping and logging live in [`fit`].
pub trait Learner {
    /// The tensors that define the model (weights and buffers such as running statistics), by
    /// stable names: what a checkpoint stores and restores.
    fn tensors(&self) -> Vec<(String, Tensor)>;
    fn optimizer(&mut self) -> &mut dyn Optimizer;
    /// Training samples per epoch.
    fn train_len(&self) -> usize;
    /// Records the forward pass of one batch (sample indices `idx`, global step `step`) on
    /// `tape` and returns the scalar loss. `rng` is the run's host RNG (augmentation), saved in
    /// checkpoints so a resumed run draws the same numbers.
    fn loss(&mut self, tape: &Tape, idx: &[usize], step: usize, rng: &mut Rng) -> Result<Var>;
    /// Accuracy on the validation split (what selects epochs and hyperparameters) and on the test
    /// split (reported, never used to choose anything), after each epoch.
    fn evaluate(&mut self) -> Result<Eval>;
}

/// Held-out accuracies of one evaluation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Eval {
    pub val: f64,
    pub test: f64,
}

/// How [`fit`] runs.
#[derive(Clone, Debug)]
pub struct FitOptions {
    pub epochs: usize,
    pub batch: usize,
    /// Seed of the host RNG (shuffling, augmentation).
    pub seed: u64,
    /// Check every op's output and every gradient for NaN/Inf and name the op that made one
    /// (reads each value back: slow, for debugging).
    pub detect_anomaly: bool,
    /// The learning rate of each step (`None`: the optimizer's own, unchanged).
    pub schedule: Option<crate::optim::Schedule>,
}

/// What one epoch reports (progress display, metrics logs, checkpoints).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochReport {
    /// 0-based.
    pub epoch: usize,
    /// Optimizer steps taken so far.
    pub step: usize,
    pub train_loss: f64,
    /// Validation accuracy: the checkpoint metric and the selection criterion.
    pub val_accuracy: f64,
    pub test_accuracy: f64,
    /// Training samples per second over this epoch (excluding evaluation).
    pub samples_per_sec: f64,
}

/// Where a run stands: with the model and optimizer tensors, enough to continue bit-identically.
/// Stored in a checkpoint's sidecar (`"fit"`) and tensors (`train.order`, `train.loss_sum`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Position {
    epoch: usize,
    /// Batches of this epoch already taken.
    pos: usize,
    step: usize,
    rng: u64,
    history: Vec<EpochReport>,
}

/// Called by [`fit`] as training goes. Every method has a default that does nothing, so `&mut ()`
/// trains silently.
pub trait Hooks {
    /// After each step (`batch` of `batches` in `epoch`, 0-based epoch).
    fn after_step(&mut self, _step: usize, _epoch: usize, _batch: usize, _batches: usize) {}
    /// Asked after each step: true stops training there (Ctrl-C); [`fit`] saves a checkpoint
    /// first.
    fn should_stop(&self) -> bool {
        false
    }
    /// After each epoch's evaluation.
    fn after_epoch(&mut self, _report: &EpochReport) -> Result<()> {
        Ok(())
    }
    /// Whether checkpoints are wanted at all (else [`Hooks::checkpoint`] is never called and
    /// nothing is read back for it).
    fn wants_checkpoints(&self) -> bool {
        false
    }
    /// Stores a checkpoint: `tensors` (model, optimizer, loop state), `meta` (the sidecar) and
    /// the validation metric (`None` for a mid-epoch save).
    fn checkpoint(
        &mut self,
        _step: u64,
        _tensors: &[(String, Tensor)],
        _meta: &Value,
        _metric: Option<f64>,
    ) -> Result<()> {
        Ok(())
    }
}

impl Hooks for () {}

/// Hooks that only call a closure after every step (progress display in `compare`).
pub struct OnStep<F: FnMut()>(pub F);

impl<F: FnMut()> Hooks for OnStep<F> {
    fn after_step(&mut self, _: usize, _: usize, _: usize, _: usize) {
        (self.0)()
    }
}

/// How [`fit`] ended.
pub struct Fitted {
    pub history: Vec<EpochReport>,
    /// Stopped early by [`Hooks::after_step`] (a checkpoint was saved).
    pub stopped: bool,
}

/// Trains `learner` for `opts.epochs` epochs of shuffled minibatches (the loop every trainer
/// shares), continuing from `resume` (a checkpoint written by this function) when given.
///
/// Each step records forward, backward and the optimizer update into one command encoder and
/// submits once; the loss is summed on the GPU and read back once per epoch. A non-finite epoch
/// loss stops training with an error naming the step (the last checkpoint, written at the end of
/// the previous epoch, stays as it was). At each epoch end, and when a hook asks to stop, the
/// whole state is handed to [`Hooks::checkpoint`] (at epoch ends with the validation accuracy
/// as its metric).
pub fn fit(
    dev: &Device,
    learner: &mut dyn Learner,
    opts: &FitOptions,
    resume: Option<&Checkpoint>,
    hooks: &mut dyn Hooks,
) -> Result<Fitted> {
    let n = learner.train_len();
    if opts.batch == 0 || opts.batch > n || opts.epochs == 0 {
        return Err(Error::Config(format!(
            "fit: need 1 <= batch <= {n} (training samples) and epochs >= 1; got batch {} epochs {}",
            opts.batch, opts.epochs
        )));
    }
    let per_epoch = n / opts.batch;
    let mut at = Position { rng: Rng::new(opts.seed).state(), ..Position::default() };
    let mut order: Option<Vec<u32>> = None;
    let loss_sum = Tensor::zeros(dev, &[])?;
    if let Some(ck) = resume {
        at = serde_json::from_value(ck.sidecar.get("fit").cloned().unwrap_or(Value::Null)).map_err(|e| {
            Error::data(&ck.path, format!("not a training checkpoint (its sidecar has no valid \"fit\" entry: {e})"))
        })?;
        ck.select("model.").restore_into(&learner.tensors())?;
        learner.optimizer().load_state(&ck.select("optim.").upload(dev)?)?;
        let sum = ck.get("train.loss_sum").and_then(|t| t.as_f32()).filter(|v| v.len() == 1);
        loss_sum
            .write(sum.ok_or_else(|| Error::data(&ck.path, "training checkpoint without a scalar train.loss_sum"))?)?;
        if at.pos > 0 {
            let o = ck.get("train.order").and_then(|t| t.as_u32()).filter(|o| o.len() == per_epoch * opts.batch);
            order = Some(
                o.ok_or_else(|| Error::data(&ck.path, "mid-epoch checkpoint without a fitting train.order"))?.to_vec(),
            );
        }
    }
    if resume.is_some() {
        let fits = at.epoch <= opts.epochs
            && at.pos < per_epoch.max(1)
            && (at.epoch < opts.epochs || at.pos == 0)
            && at.history.len() == at.epoch
            && at.step == at.epoch * per_epoch + at.pos;
        if !fits {
            let path = resume.map(|c| c.path.display().to_string()).unwrap_or_default();
            return Err(Error::Data {
                path,
                msg: format!(
                    "the checkpoint's position (epoch {}, batch {}, step {}, {} epochs of history) does not fit this \
                     run ({} epochs of {per_epoch} batches)",
                    at.epoch,
                    at.pos,
                    at.step,
                    at.history.len(),
                    opts.epochs
                ),
            });
        }
    }
    let mut rng = Rng::from_state(at.rng);
    while at.epoch < opts.epochs {
        let e = at.epoch;
        // A stop asked before the epoch's order is drawn saves the state as it is (--max-steps 0,
        // or a resumed run already at its limit), so the order is drawn again identically.
        if at.pos == 0 && hooks.should_stop() {
            save(dev, learner, &at, &rng, &[], &loss_sum, hooks, None)?;
            return Ok(Fitted { history: at.history, stopped: true });
        }
        let order = match order.take() {
            Some(o) => o,
            None => {
                loss_sum.write(&[0.0])?;
                crate::data::epoch_batches(n, opts.batch, &mut rng).concat().iter().map(|&i| i as u32).collect()
            }
        };
        let t0 = std::time::Instant::now();
        let start = at.pos;
        while at.pos < per_epoch {
            // Asked before each step (pos 0 was asked before the order was drawn), so
            // `--max-steps N` takes exactly N steps in all.
            if at.pos > 0 && hooks.should_stop() {
                save(dev, learner, &at, &rng, &order, &loss_sum, hooks, None)?;
                return Ok(Fitted { history: at.history, stopped: true });
            }
            let idx: Vec<usize> =
                order[at.pos * opts.batch..(at.pos + 1) * opts.batch].iter().map(|&i| i as usize).collect();
            if let Some(s) = &opts.schedule {
                learner.optimizer().set_lr(s.lr_at(at.step))?;
            }
            let tape = Tape::new();
            if opts.detect_anomaly {
                tape.detect_anomaly();
            }
            let loss = learner.loss(&tape, &idx, at.step, &mut rng)?;
            loss.backward()?;
            tape.anomaly(at.step + 1)?; // steps are counted from 1 in messages
            learner.optimizer().step()?;
            learner.optimizer().zero_grad();
            accumulate(&loss_sum, loss.value())?; // summed on the GPU, read once per epoch
            drop((loss, tape));
            dev.flush()?; // the step's one submit
            at.step += 1;
            at.pos += 1;
            hooks.after_step(at.step, e, at.pos, per_epoch);
        }
        let seconds = t0.elapsed().as_secs_f64();
        let train_loss = loss_sum.item()? as f64 / per_epoch as f64;
        if !train_loss.is_finite() {
            return Err(Error::NonFinite {
                step: at.step as u64,
                what: format!(
                    "mean training loss of epoch {} is {train_loss} (rerun with --detect-anomaly to find the op)",
                    e + 1
                ),
            });
        }
        let eval = learner.evaluate()?;
        let r = EpochReport {
            epoch: e,
            step: at.step,
            train_loss,
            val_accuracy: eval.val,
            test_accuracy: eval.test,
            samples_per_sec: ((per_epoch - start) * opts.batch) as f64 / seconds,
        };
        hooks.after_epoch(&r)?;
        at.history.push(r);
        at.epoch += 1;
        at.pos = 0;
        let metric = at.history.last().map(|r| r.val_accuracy);
        save(dev, learner, &at, &rng, &order, &loss_sum, hooks, metric)?;
        if hooks.should_stop() && at.epoch < opts.epochs {
            return Ok(Fitted { history: at.history, stopped: true });
        }
    }
    Ok(Fitted { history: at.history, stopped: false })
}

/// Hands the whole training state to the hooks as one checkpoint (`model.*`, `optim.*`, `train.*`).
#[allow(clippy::too_many_arguments)]
fn save(
    dev: &Device,
    learner: &mut dyn Learner,
    at: &Position,
    rng: &Rng,
    order: &[u32],
    loss_sum: &Tensor,
    hooks: &mut dyn Hooks,
    metric: Option<f64>,
) -> Result<()> {
    if !hooks.wants_checkpoints() {
        return Ok(());
    }
    let mut tensors = prefixed("model.", learner.tensors());
    tensors.extend(prefixed("optim.", learner.optimizer().state()?));
    tensors.push(("train.loss_sum".into(), loss_sum.clone()));
    if !order.is_empty() {
        // Only a mid-epoch position reads the order back; at an epoch start it is drawn again.
        tensors.push(("train.order".into(), Tensor::from_u32(dev, order, &[order.len()])?));
    }
    let at = Position { rng: rng.state(), ..at.clone() };
    let meta = serde_json::json!({
        "step": at.step,
        "epoch": at.epoch,
        "rng_state": at.rng,
        "adapter": dev.describe(),
        "fit": at,
    });
    hooks.checkpoint(at.step as u64, &tensors, &meta, metric)
}

/// Fraction of rows whose argmax logit is the label.
pub fn accuracy(dev: &Device, model: &Mlp, data: &Dataset) -> Result<f32> {
    let tape = Tape::no_grad();
    let x = tape.constant(Tensor::from_slice(dev, &data.x, &[data.len(), data.dim])?);
    let pred = argmax(model.forward(&tape, &x)?.value(), 1, false)?.to_vec_u32()?;
    Ok(pred.iter().zip(&data.y).filter(|(p, y)| p == y).count() as f32 / data.len() as f32)
}

/// The two-moons MLP as a [`Learner`].
pub struct Moons {
    dev: Device,
    pub model: Mlp,
    opt: Adam,
    train: Dataset,
    val: Dataset,
    test: Dataset,
}

impl Moons {
    pub fn new(dev: &Device, cfg: &MoonsConfig) -> Result<Moons> {
        cfg.validate()?;
        let model = Mlp::new(dev, "mlp", &[2, cfg.hidden, cfg.hidden, 2], Activation::Relu, cfg.seed)?;
        let opt = Adam::new(model.params(), AdamConfig { lr: cfg.lr, ..AdamConfig::default() })?;
        Ok(Moons {
            dev: dev.clone(),
            model,
            opt,
            train: moons(cfg.train, cfg.noise, cfg.seed),
            val: moons(cfg.val, cfg.noise, cfg.seed ^ 0x7a1),
            test: moons(cfg.test, cfg.noise, cfg.seed ^ 0x7e57),
        })
    }
}

impl Learner for Moons {
    fn tensors(&self) -> Vec<(String, Tensor)> {
        self.model.tensors()
    }
    fn optimizer(&mut self) -> &mut dyn Optimizer {
        &mut self.opt
    }
    fn train_len(&self) -> usize {
        self.train.len()
    }
    fn loss(&mut self, tape: &Tape, idx: &[usize], _step: usize, _rng: &mut Rng) -> Result<Var> {
        let dev = &self.dev;
        let (bx, by) = self.train.batch(idx);
        let x = tape.constant(Tensor::from_slice(dev, &bx, &[idx.len(), 2])?);
        let y = Tensor::from_u32(dev, &by, &[idx.len()])?;
        self.model.forward(tape, &x)?.cross_entropy(&y)
    }
    fn evaluate(&mut self) -> Result<Eval> {
        Ok(Eval {
            val: accuracy(&self.dev, &self.model, &self.val)? as f64,
            test: accuracy(&self.dev, &self.model, &self.test)? as f64,
        })
    }
}

impl MoonsConfig {
    pub fn fit_options(&self) -> FitOptions {
        FitOptions {
            epochs: self.epochs,
            batch: self.batch,
            seed: self.seed ^ 0xba7c,
            detect_anomaly: false,
            schedule: None,
        }
    }
}

/// Trains a 2-hidden-layer MLP on two moons with Adam, silently.
pub fn train_moons(dev: &Device, cfg: &MoonsConfig) -> Result<MoonsRun> {
    let mut m = Moons::new(dev, cfg)?;
    let fitted = fit(dev, &mut m, &cfg.fit_options(), None, &mut ())?;
    Ok(MoonsRun { model: m.model, history: fitted.history })
}
