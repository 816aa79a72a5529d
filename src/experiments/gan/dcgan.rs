//! DCGAN on Fashion-MNIST ([`FashionGan`], [`train_dcgan`]): the same loop with
//! [`DcGenerator`] / [`DcDiscriminator`]; atom modeling gates the generator's 7x7 map. Generated
//! images are scored in the features of the project's own Fashion-MNIST CNN ([`FeatureNet`],
//! trained once per run or comparison folder and cached there as a checkpoint): the Fréchet
//! distance between Gaussians fitted to real and generated features ([`frechet_distance`];
//! validation images select the epoch, test images score the selected generator; NOT Inception
//! FID, and comparable only between runs that share the feature network), the entropy of the
//! CNN's predicted-class histogram ([`class_entropy`]; ln 10 when every class is equally
//! frequent) and the feature diversity (mean pairwise feature distance, generated over real).
//! Each run saves its selected generator ([`save_generator`]); [`sample`] rebuilds one from its
//! checkpoint and draws a grid.

use crate::atom::TokenMask;
use crate::autodiff::Tape;
use crate::checkpoint;
use crate::data::fashion::{FashionData, ImageSet, MEAN as FASHION_MEAN, PIXELS, STD as FASHION_STD};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::experiments::classify::{ClassifyConfig, FashionLearner, ImageNet, ImageSplits};
use crate::experiments::protocol::{Report, RunRecord};
use crate::experiments::task::{RunContext, RunOptions};
use crate::experiments::Method;
use crate::nn::gan::{DcDiscriminator, DcGenerator, Generator};
use crate::nn::sub_seed;
use crate::plot;
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use super::*;

/// `train --task gan` (and each run of `compare --task gan`): one DCGAN in a run folder, scored
/// after every epoch by the Fréchet feature distance of `eval_samples` images from fixed noise to
/// the validation images (best checkpoint: the lowest); the generator of the best epoch is then
/// scored against the test images on fresh noise, drawn (`samples.png`, and `importance.png` for
/// gated methods) and saved as `generator.safetensors` for `atomgrad sample`. The feature CNN is
/// trained once into `ctx.shared` (else the run folder). `None` when stopped early.
pub fn train_dcgan(
    dev: &Device,
    data: &FashionData,
    cfg: &FashionGanConfig,
    opts: &RunOptions,
    run: &mut crate::run::Run,
    resume: Option<&checkpoint::Checkpoint>,
    ctx: &RunContext,
) -> Result<Option<RunRecord>> {
    let (method, seed) = (opts.method, opts.seed);
    let mut gan = FashionGan::fashion(dev, cfg, &data.train, method, seed)?;
    gan.detect_anomaly = ctx.detect_anomaly;
    let shared = ctx.shared.clone().unwrap_or_else(|| run.dir().to_path_buf());
    let features = FeatureNet::prepare(dev, data, &cfg.feature_cnn, &shared.join("feature-cnn.safetensors"))?;
    run.say(&format!(
        "feature CNN: {:.2}% test accuracy ({})",
        100.0 * features.test_accuracy,
        features.checkpoint.display()
    ));
    let per_epoch = cfg.train_limit.map_or(data.train.len(), |l| l.min(data.train.len())) / cfg.batch;
    let val_seed = sub_seed(seed, 6);
    let mut score = |gan: &FashionGan| -> Result<(serde_json::Value, f64)> {
        let q = features.quality(&gan.generate_many(cfg.eval_samples, val_seed)?, Split::Val)?;
        let m = serde_json::json!({
            "epoch": gan.iteration() / per_epoch, "frechet": q.frechet, "class_entropy": q.class_entropy,
            "diversity": q.diversity,
        });
        Ok((m, q.frechet))
    };
    if fit_gan(&mut gan, cfg.epochs * per_epoch, per_epoch, resume, run, &mut score, false)? {
        return Ok(None);
    }
    let history = history_from_metrics(run.dir())?;
    gan.restore(&checkpoint::load(&run.best_path())?)?;
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
    let q = features.quality(&gan.generate_many(cfg.test_samples, sub_seed(seed, 7))?, Split::Test)?;
    // The real-vs-real floor: as many training images, scored the same way.
    let n_real = cfg.test_samples.min(data.train.len());
    let floor = features.quality_normalised(&data.train.x[..n_real * PIXELS], Split::Test)?;
    let mut report = Report::default();
    report.metrics.insert("class_entropy".into(), q.class_entropy);
    report.metrics.insert("diversity".into(), q.diversity);
    report.metrics.insert("classes_covered".into(), q.classes_covered as f64);
    report.metrics.insert("confident".into(), q.confident);
    report.metrics.insert("frechet_floor".into(), floor.frechet);
    report.metrics.insert("feature_net_accuracy".into(), features.test_accuracy);
    for (c, &k) in q.class_counts.iter().enumerate() {
        report.metrics.insert(format!("class_share_{c}"), k as f64 / q.images.max(1) as f64);
    }
    let mut record = RunRecord::from_history(opts, history, report, false);
    record.test = q.frechet;
    Ok(Some(record))
}

/// Budget and model of the DCGAN run on Fashion-MNIST.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FashionGanConfig {
    /// Passes over the training images.
    pub epochs: usize,
    pub batch: usize,
    /// Noise dimension.
    pub noise: usize,
    /// Channels C of the generator's 7x7 map (C/2 at 14x14, C/4 at 28x28 when `deep`).
    pub channels: usize,
    /// Channels of the discriminator's second map (half at its first; double at its third when `deep`).
    pub d_channels: usize,
    /// The standard-size models (`--model base`): the generator's extra 28x28 stage and output
    /// convolution, the discriminator's third convolution.
    pub deep: bool,
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
    /// Generated images scored after every epoch against the validation images (Fréchet feature
    /// distance, class entropy, diversity; the same count for every run, as the Fréchet distance
    /// is biased by it).
    pub eval_samples: usize,
    /// Generated images the selected generator is scored on against the test images (coverage of
    /// the ten classes needs many: the bar counts classes with at least 4% of them).
    pub test_samples: usize,
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
            d_channels: 32,
            deep: false,
            lr: 2e-4,
            beta1: 0.5,
            beta2: 0.999,
            slope: 0.2,
            lambda: crate::atom::AtomConfig::default().lambda,
            margin: 10.0,
            reg_batch: 32,
            train_limit: None,
            grid: 64,
            eval_samples: 1000,
            test_samples: 1000,
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
    /// The standard-size DCGAN (`--model base`, a GPU job): noise 100 to 7x7x256, 14x14x128,
    /// 28x28x64 and a 3x3 output convolution; a discriminator of strided convolutions 64, 128,
    /// 256; Adam 2e-4, betas (0.5, 0.999), batch 128; scored in the features of the residual CNN
    /// (its recipe, seed 0), with 10,000 test samples.
    pub fn base() -> FashionGanConfig {
        FashionGanConfig {
            epochs: 20,
            batch: 128,
            noise: 100,
            channels: 256,
            d_channels: 128,
            deep: true,
            reg_batch: 64,
            eval_samples: 2000,
            test_samples: 10_000,
            feature_cnn: ClassifyConfig::fashion_resnet(),
            ..FashionGanConfig::default()
        }
    }
}

impl FashionGanConfig {
    pub fn validate(&self, train_len: usize) -> Result<()> {
        let n = self.train_limit.map_or(train_len, |l| l.min(train_len));
        let bad = |m: String| Err(Error::Config(format!("gan (fashion): {m}")));
        if n < 2 {
            return bad(format!("the training set has {n} image(s): too few to train on"));
        }
        if self.batch < 2 || self.batch > n {
            return bad(format!("batch must be in 2..={n} (the training images used), got {}", self.batch));
        }
        if self.reg_batch < 2 || self.epochs == 0 || self.grid == 0 || self.noise == 0 {
            return bad(format!(
                "need reg_batch >= 2 and epochs, grid, noise >= 1; got {}, {}, {}, {}",
                self.reg_batch, self.epochs, self.grid, self.noise
            ));
        }
        if self.eval_samples < 2 || self.test_samples < 2 {
            return bad(format!(
                "eval_samples and test_samples must be >= 2, got {} and {}",
                self.eval_samples, self.test_samples
            ));
        }
        let unit = if self.deep { 4 } else { 2 };
        if self.channels < unit
            || !self.channels.is_multiple_of(unit)
            || self.d_channels < 2
            || !self.d_channels.is_multiple_of(2)
        {
            return bad(format!(
                "channels must be a multiple of {unit} and d_channels even, got {} and {}",
                self.channels, self.d_channels
            ));
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
        let real = DataSource::new(to_tanh_range(&images.x[..n * PIXELS]), &[1, 28, 28]);
        let g = DcGenerator::with_depth(dev, cfg.noise, cfg.channels, cfg.deep, sub_seed(seed, 1))?;
        let d = DcDiscriminator::with_depth(dev, cfg.d_channels, cfg.slope, cfg.deep, sub_seed(seed, 2))?;
        Gan::with_models(dev, g, d, cfg.settings(), Box::new(real), method, seed)
    }
}

// ---- Sample-quality metrics ----

/// Sample-quality scores of a set of generated images in the feature CNN.
#[derive(Clone, Debug, Serialize)]
pub struct SampleQuality {
    /// Images scored.
    pub images: usize,
    /// Fréchet feature distance to the real images of the split scored against (NaN if a
    /// feature is not finite).
    pub frechet: f64,
    /// Entropy (nats) of the CNN's predicted classes; ln 10 = 2.303 when all ten are equally frequent.
    pub class_entropy: f64,
    /// Mean pairwise feature distance of the images over that of the split's real images.
    pub diversity: f64,
    /// Predicted class counts.
    pub class_counts: Vec<usize>,
    /// Classes that receive at least [`COVERAGE_SHARE`] of the images.
    pub classes_covered: usize,
    /// The share of images the CNN classifies with a softmax probability of at least
    /// [`CONFIDENT`] (generated images that look like one garment).
    pub confident: f64,
}

/// A class counts as covered when it receives at least this share of the generated images.
pub const COVERAGE_SHARE: f64 = 0.04;
/// A prediction counts as confident at this softmax probability.
pub const CONFIDENT: f64 = 0.9;
/// Images the diversity (mean pairwise feature distance) is measured on: it is quadratic.
const DIVERSITY_IMAGES: usize = 2000;

/// Seed of the feature CNN's training run.
pub const FEATURE_CNN_SEED: u64 = 0;

/// Which real images generated ones are scored against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// The validation images (selection during training).
    Val,
    /// The test images (the selected generator's reported score).
    Test,
}

/// The project's Fashion-MNIST classifier (the small CNN, or the residual one for the
/// standard-size DCGAN; trained with cross-entropy) as a feature extractor for generated images:
/// the feature of an image is its last convolutional feature map averaged over its cells, one
/// value per channel (32 or 128), which keeps the covariance well conditioned and its square root
/// cheap. This is not Inception FID: distances are comparable only between runs scored by the
/// same feature network.
pub struct FeatureNet {
    dev: Device,
    cnn: ImageNet,
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
    /// Real images per split the reference statistics are fitted to (validation, test).
    pub real_images: (usize, usize),
    real: [Gaussian; 2],
    real_spread: [f64; 2],
}

impl FeatureNet {
    /// Loads the CNN from `path` if a checkpoint there was trained with `cfg` on `data` (seed
    /// [`FEATURE_CNN_SEED`], cross-entropy), else trains it (its last epoch) and saves it there;
    /// then scores it on the test images and fits the real-feature Gaussians to the validation
    /// and the test images.
    pub fn prepare(dev: &Device, data: &FashionData, cfg: &ClassifyConfig, path: &Path) -> Result<FeatureNet> {
        let t0 = std::time::Instant::now();
        let meta = serde_json::json!({
            "task": "fashion", "method": Method::Ce.slug(), "seed": FEATURE_CNN_SEED,
            "data": data.description(), "config": cfg,
        });
        let want = |ck: &checkpoint::Checkpoint| {
            ["task", "method", "seed", "data", "config"].iter().all(|k| ck.sidecar.get(*k) == meta.get(*k))
        };
        let found =
            checkpoint::sidecar_path(path)?.exists() && checkpoint::load(path).map(|ck| want(&ck)).unwrap_or(false);
        if !found {
            let mut l = FashionLearner::new(dev, data, cfg, Method::Ce, FEATURE_CNN_SEED)?;
            crate::train::fit(dev, &mut l, &cfg.fit_options(FEATURE_CNN_SEED, data.train.len()), None, &mut ())?;
            checkpoint::save(path, &l.model.tensors(), &meta)?;
        }
        let ck = checkpoint::load(path)?;
        let cnn = ImageNet::new(dev, cfg, &ImageSplits::from(data), 0)?;
        ck.restore_into(&cnn.tensors())?;
        let c2 = cnn.latent_dim() / cnn.tokens();
        let empty = || Gaussian { dim: c2, mean: vec![], cov: vec![] };
        let mut net = FeatureNet {
            dev: dev.clone(),
            cnn,
            dim: c2,
            test_accuracy: f64::NAN,
            checkpoint: path.to_path_buf(),
            reused: found,
            seconds: 0.0,
            real_images: (data.val.len(), data.test.len()),
            real: [empty(), empty()],
            real_spread: [f64::NAN; 2],
        };
        let (fv, _) = net.features(&data.val.x)?;
        let (ft, pred) = net.features(&data.test.x)?;
        net.test_accuracy =
            pred.iter().zip(&data.test.y).filter(|(p, y)| p == y).count() as f64 / data.test.len() as f64;
        net.real = [Gaussian::fit(&fv, c2)?, Gaussian::fit(&ft, c2)?];
        let head = |f: &[f32]| f[..f.len().min(DIVERSITY_IMAGES * c2)].to_vec();
        net.real_spread = [mean_pair_distance(&head(&fv), c2), mean_pair_distance(&head(&ft), c2)];
        net.seconds = t0.elapsed().as_secs_f64();
        Ok(net)
    }

    /// Features `[n, dim]` and predicted classes of images `[n, 784]` normalised as the data
    /// module normalises them (no grad; batch norm uses its running statistics).
    pub fn features(&self, x: &[f32]) -> Result<(Vec<f32>, Vec<u32>)> {
        let (f, p, _) = self.features_probs(x)?;
        Ok((f, p))
    }

    /// [`FeatureNet::features`] and each image's top softmax probability.
    pub fn features_probs(&self, x: &[f32]) -> Result<(Vec<f32>, Vec<u32>, Vec<f64>)> {
        if !x.len().is_multiple_of(PIXELS) {
            return Err(Error::shape("FeatureNet::features", format!("{} values are not rows of {PIXELS}", x.len())));
        }
        let (c, n, t) = (self.dim, x.len() / PIXELS, self.cnn.tokens());
        let (mut feats, mut preds, mut top) = (Vec::with_capacity(n * c), Vec::with_capacity(n), Vec::with_capacity(n));
        for chunk in x.chunks(500 * PIXELS) {
            let b = chunk.len() / PIXELS;
            let tape = Tape::no_grad();
            let mask = TokenMask::new(&self.dev, &vec![t; b], t)?;
            let input = tape.constant(Tensor::from_slice(&self.dev, chunk, &[b, 1, 28, 28])?);
            let out = self.cnn.forward(&tape, &input, false, false, &mask)?;
            let (z, logits) = (out.z.value().to_vec()?, out.logits.value().to_vec()?);
            // z is [b, C, cells] (channel-major): average each channel over its cells.
            feats.extend(z.chunks_exact(t).map(|cells| cells.iter().map(|&v| v as f64).sum::<f64>() as f32 / t as f32));
            for row in logits.chunks_exact(10) {
                let best = (0..10).fold(0, |b, k| if row[k] > row[b] { k } else { b });
                let sum: f64 = row.iter().map(|&v| ((v - row[best]) as f64).exp()).sum();
                preds.push(best as u32);
                top.push(1.0 / sum);
            }
        }
        Ok((feats, preds, top))
    }

    /// Scores images `[n, 784]` in the data set's normalisation against the real images of `split`.
    pub fn quality_normalised(&self, x: &[f32], split: Split) -> Result<SampleQuality> {
        let k = split as usize;
        let (f, pred, top) = self.features_probs(x)?;
        let frechet = if f.iter().all(|v| v.is_finite()) {
            frechet_distance(&self.real[k], &Gaussian::fit(&f, self.dim)?)?
        } else {
            f64::NAN
        };
        let mut class_counts = vec![0usize; 10];
        for &p in &pred {
            class_counts[p as usize] += 1;
        }
        let n = pred.len().max(1) as f64;
        let head = &f[..f.len().min(DIVERSITY_IMAGES * self.dim)];
        Ok(SampleQuality {
            images: pred.len(),
            frechet,
            class_entropy: class_entropy(&pred, 10),
            diversity: mean_pair_distance(head, self.dim) / self.real_spread[k],
            classes_covered: class_counts.iter().filter(|&&c| c as f64 >= COVERAGE_SHARE * n).count(),
            confident: top.iter().filter(|&&p| p >= CONFIDENT).count() as f64 / n,
            class_counts,
        })
    }

    /// Scores generated images `[n, 784]` in [-1, 1] against the real images of `split`.
    pub fn quality(&self, generated: &[f32], split: Split) -> Result<SampleQuality> {
        self.quality_normalised(&from_tanh_range(generated), split)
    }
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
        "deep": gan.g.deep.is_some(),
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
    let method = Method::parse(&slug)?;
    let deep = ck.sidecar.get("deep").and_then(|v| v.as_bool()).unwrap_or(false);
    let g = DcGenerator::with_depth(dev, noise, channels, deep, 0)?;
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
