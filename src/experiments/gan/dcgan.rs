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

use crate::atom::TokenMask;
use crate::autodiff::Tape;
use crate::checkpoint;
use crate::data::fashion::{FashionData, ImageSet, MEAN as FASHION_MEAN, PIXELS, STD as FASHION_STD};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::experiments::classify::{self, ClassifyConfig};
use crate::experiments::{fmt_ms, mean_std, Method, Progress};
use crate::nn::cnn::Cnn;
use crate::nn::gan::{DcDiscriminator, DcGenerator, Generator};
use crate::nn::sub_seed;
use crate::plot::{self, write_atomic};
use crate::rng::Rng;
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use super::*;

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
