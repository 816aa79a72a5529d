//! Training loops. Every step records forward, backward and the optimizer update into one command
//! encoder and submits once; the host reads back only what it prints (the epoch's summed loss,
//! accumulated on the GPU, and evaluation predictions).

use crate::autodiff::{Tape, Var};
use crate::data::{epoch_batches, moons, Dataset};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::nn::{Activation, Mlp};
use crate::ops::elementwise::accumulate;
use crate::ops::reduce::argmax;
use crate::optim::{Adam, AdamConfig, Optimizer};
use crate::rng::Rng;
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// The two-moons MLP classifier (the engine's end-to-end check).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MoonsConfig {
    pub train: usize,
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
        MoonsConfig { train: 2048, test: 1000, noise: 0.1, hidden: 64, epochs: 20, batch: 64, lr: 1e-2, seed: 0 }
    }
}

/// What one epoch reports to the caller (for progress display and metrics logs).
#[derive(Clone, Debug, Serialize)]
pub struct EpochReport {
    pub epoch: usize,
    pub steps: usize,
    pub train_loss: f32,
    pub test_accuracy: f32,
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
        if self.hidden == 0 || self.test == 0 || self.epochs == 0 {
            return bad("hidden, test and epochs must be at least 1");
        }
        Ok(())
    }
}

/// One epoch of minibatch steps, the loop every trainer shares. For each batch, `loss_of(tape, idx,
/// step)` records the forward pass on a fresh tape and returns the scalar loss; this records the
/// backward pass and the optimizer update, adds the loss to a GPU-side sum and submits once. The
/// epoch's mean loss is read back once at the end; a non-finite mean stops training, naming the
/// step and `what`.
pub fn epoch(
    dev: &Device,
    opt: &mut dyn Optimizer,
    batches: &[Vec<usize>],
    step: &mut usize,
    what: &str,
    mut loss_of: impl FnMut(&Tape, &[usize], usize) -> Result<Var>,
    on_step: &mut dyn FnMut(usize),
) -> Result<f64> {
    let loss_sum = Tensor::zeros(dev, &[])?;
    for idx in batches {
        let tape = Tape::new();
        let loss = loss_of(&tape, idx, *step)?;
        loss.backward()?;
        opt.step()?;
        opt.zero_grad();
        accumulate(&loss_sum, loss.value())?; // summed on the GPU, read once per epoch
        drop((loss, tape));
        dev.flush()?; // the step's one submit
        *step += 1;
        on_step(*step);
    }
    let mean = loss_sum.item()? as f64 / batches.len().max(1) as f64;
    if !mean.is_finite() {
        return Err(Error::NonFinite { step: *step as u64, what: format!("mean training loss of {what}") });
    }
    Ok(mean)
}

/// Fraction of rows whose argmax logit is the label.
pub fn accuracy(dev: &Device, model: &Mlp, data: &Dataset) -> Result<f32> {
    let tape = Tape::no_grad();
    let x = tape.constant(Tensor::from_slice(dev, &data.x, &[data.len(), data.dim])?);
    let pred = argmax(model.forward(&tape, &x)?.value(), 1, false)?.to_vec_u32()?;
    Ok(pred.iter().zip(&data.y).filter(|(p, y)| p == y).count() as f32 / data.len() as f32)
}

/// Trains a 2-hidden-layer MLP on two moons with Adam; calls `on_epoch` after every epoch and
/// `on_step` after every step (for progress bars).
pub fn train_moons(
    dev: &Device,
    cfg: &MoonsConfig,
    mut on_step: impl FnMut(usize),
    mut on_epoch: impl FnMut(&EpochReport),
) -> Result<MoonsRun> {
    cfg.validate()?;
    let train = moons(cfg.train, cfg.noise, cfg.seed);
    let test = moons(cfg.test, cfg.noise, cfg.seed ^ 0x7e57);
    let model = Mlp::new(dev, "mlp", &[2, cfg.hidden, cfg.hidden, 2], Activation::Relu, cfg.seed)?;
    let mut opt = Adam::new(model.params(), AdamConfig { lr: cfg.lr, ..AdamConfig::default() })?;
    let mut rng = Rng::new(cfg.seed ^ 0xba7c);
    let mut history = Vec::new();
    let mut step = 0;
    for e in 0..cfg.epochs {
        let batches = epoch_batches(train.len(), cfg.batch, &mut rng);
        let train_loss = epoch(
            dev,
            &mut opt,
            &batches,
            &mut step,
            &format!("epoch {e}"),
            |tape, idx, _| {
                let (bx, by) = train.batch(idx);
                let x = tape.constant(Tensor::from_slice(dev, &bx, &[idx.len(), 2])?);
                let y = Tensor::from_u32(dev, &by, &[idx.len()])?;
                model.forward(tape, &x)?.cross_entropy(&y)
            },
            &mut on_step,
        )? as f32;
        let r = EpochReport { epoch: e, steps: step, train_loss, test_accuracy: accuracy(dev, &model, &test)? };
        on_epoch(&r);
        history.push(r);
    }
    Ok(MoonsRun { model, history })
}
