//! The real-data classifiers of the seed's experiments: a CNN on Fashion-MNIST and a Transformer
//! on Rotten Tomatoes review snippets, each trained with every [`Method`] on identical budgets;
//! and the same two on your own data: a folder of images ([`ImageFolderData`]) and a CSV of texts
//! (`data::load_text_csv`).

use crate::atom::{AtomConfig, TokenMask};
use crate::autodiff::{Tape, Var};
use crate::data::fashion::{FashionData, ImageSet, ROWS};
use crate::data::images::{batch_of, ImageFolderData};
use crate::data::reviews::{ReviewSplit, ReviewsData};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::experiments::method::{objective, Method, Regularisers};
use crate::experiments::protocol::{Classifier, Report};
use crate::experiments::stats::nn_spacing;
use crate::nn::cnn::{Cnn, CnnOut};
use crate::nn::resnet::ResNet;
use crate::nn::transformer::{Transformer, TransformerConfig};
use crate::nn::{sub_seed, Activation, Mlp};
use crate::ops::embedding::Indices;
use crate::ops::reduce::argmax;
use crate::optim::{Adam, AdamConfig, Optimizer, Schedule};
use crate::rng::Rng;
use crate::tensor::Tensor;
use crate::train::{Eval, FitOptions, Learner};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Which network a classifier task trains (`--model`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// The small models sized for lavapipe: the two-block CNN, the d-64 2-layer Transformer.
    Small,
    /// The residual CNN (Fashion-MNIST).
    Resnet,
    /// The 4-layer d-128 Transformer (reviews); the standard-size DCGAN (gan).
    Base,
    /// PacGAN's 2-D models and budget (gan2d).
    Pacgan,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Small => "small",
            Arch::Resnet => "resnet",
            Arch::Base => "base",
            Arch::Pacgan => "pacgan",
        }
    }
    pub fn parse(s: &str) -> Result<Arch> {
        [Arch::Small, Arch::Resnet, Arch::Base, Arch::Pacgan]
            .into_iter()
            .find(|a| a.name() == s.trim())
            .ok_or_else(|| Error::Config(format!("--model: unknown model {s:?} (small, resnet, base, pacgan)")))
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClassifyConfig {
    pub arch: Arch,
    pub epochs: usize,
    pub batch: usize,
    pub lr: f32,
    /// Weight of every regulariser (L_A, hinge, NT-Xent).
    pub lambda: f32,
    /// The hinge baselines' margin on latent distances; 0: the median pairwise distance of the
    /// first batch's latents at initialisation (so about half the pairs are inside it and the
    /// hinge acts, whatever the latent's scale).
    pub margin: f32,
    pub simclr_tau: f32,
    /// Use at most this many training samples (all when None).
    pub train_limit: Option<usize>,
    /// Evaluate on at most this many validation and this many test samples (all when None).
    pub test_limit: Option<usize>,
    /// AdamW's decoupled weight decay (0: plain Adam).
    pub weight_decay: f32,
    /// Linear warm-up of the learning rate over this many epochs, then constant or, with
    /// `cosine`, a half-cosine decay to 0 at the last step.
    pub warmup_epochs: usize,
    pub cosine: bool,
    /// Train-time image augmentation: a random shift of up to 2 pixels (a random 28x28 crop of
    /// the image padded by 2) and a horizontal flip with probability 1/2, from the run's RNG.
    pub augment: bool,
    /// Small CNN: channels of the two blocks.
    pub channels: (usize, usize),
    /// Residual CNN: widths of its stages (two basic blocks each).
    pub stages: Vec<usize>,
    /// Transformer width, heads, layers, feed-forward width, dropout.
    pub d: usize,
    pub heads: usize,
    pub layers: usize,
    pub ff: usize,
    pub dropout: f32,
}

impl ClassifyConfig {
    pub fn fashion() -> ClassifyConfig {
        ClassifyConfig {
            arch: Arch::Small,
            epochs: 3,
            batch: 64,
            lr: 2e-3,
            lambda: AtomConfig::default().lambda,
            margin: 0.0,
            simclr_tau: 0.5,
            train_limit: None,
            test_limit: None,
            weight_decay: 0.0,
            warmup_epochs: 0,
            cosine: false,
            augment: false,
            channels: (16, 32),
            stages: vec![],
            d: 0,
            heads: 0,
            layers: 0,
            ff: 0,
            dropout: 0.0,
        }
    }
    /// The residual CNN's recipe: AdamW with weight decay, one warm-up epoch then cosine decay,
    /// crop-and-flip augmentation (`benches/reference/resnet.py` is the same recipe in PyTorch).
    pub fn fashion_resnet() -> ClassifyConfig {
        ClassifyConfig {
            arch: Arch::Resnet,
            epochs: 20,
            batch: 128,
            lr: 2e-3,
            weight_decay: 0.05,
            warmup_epochs: 1,
            cosine: true,
            augment: true,
            stages: vec![32, 64, 128],
            ..ClassifyConfig::fashion()
        }
    }
    pub fn sentiment() -> ClassifyConfig {
        ClassifyConfig {
            arch: Arch::Small,
            epochs: 6,
            batch: 64,
            lr: 1e-3,
            lambda: AtomConfig::default().lambda,
            margin: 0.0,
            simclr_tau: 0.5,
            train_limit: None,
            test_limit: None,
            weight_decay: 0.0,
            warmup_epochs: 0,
            cosine: false,
            augment: false,
            channels: (0, 0),
            stages: vec![],
            d: 64,
            heads: 4,
            layers: 2,
            ff: 128,
            dropout: 0.1,
        }
    }
    /// The 4-layer Transformer's recipe: d 128, 4 heads, feed-forward 512, dropout 0.1, AdamW
    /// with one warm-up epoch and cosine decay (`benches/reference/transformer_base.py`).
    pub fn sentiment_base() -> ClassifyConfig {
        ClassifyConfig {
            arch: Arch::Base,
            epochs: 10,
            lr: 5e-4,
            weight_decay: 0.01,
            warmup_epochs: 1,
            cosine: true,
            d: 128,
            heads: 4,
            layers: 4,
            ff: 512,
            ..ClassifyConfig::sentiment()
        }
    }
    /// The small CNN on a folder of your own images (`--task images`): more epochs and a smaller
    /// batch than Fashion-MNIST's recipe, for data sets of hundreds or thousands of images.
    pub fn images() -> ClassifyConfig {
        ClassifyConfig { epochs: 10, batch: 32, ..ClassifyConfig::fashion() }
    }
    /// The small Transformer on a CSV of your own texts (`--task text`).
    pub fn text() -> ClassifyConfig {
        ClassifyConfig { epochs: 10, batch: 32, ..ClassifyConfig::sentiment() }
    }
    /// The recipe of `arch` on the images (`fashion`) or the reviews.
    pub fn recipe(images: bool, arch: Arch) -> Result<ClassifyConfig> {
        match (images, arch) {
            (true, Arch::Small) => Ok(ClassifyConfig::fashion()),
            (true, Arch::Resnet) => Ok(ClassifyConfig::fashion_resnet()),
            (false, Arch::Small) => Ok(ClassifyConfig::sentiment()),
            (false, Arch::Base) => Ok(ClassifyConfig::sentiment_base()),
            (true, a) => Err(Error::Config(format!("--model: fashion trains small or resnet, not {}", a.name()))),
            (false, a) => Err(Error::Config(format!("--model: sentiment trains small or base, not {}", a.name()))),
        }
    }
    /// The optimizer's settings: Adam, or AdamW with `weight_decay`.
    pub fn adam(&self) -> AdamConfig {
        if self.weight_decay > 0.0 {
            AdamConfig::adamw(self.lr, self.weight_decay)
        } else {
            AdamConfig { lr: self.lr, ..AdamConfig::default() }
        }
    }
    pub fn validate(&self, train_len: usize) -> Result<()> {
        if self.test_limit == Some(0) {
            return Err(Error::Config("--test-limit must be at least 1 (an empty test set scores nothing)".into()));
        }
        let n = self.train_limit.unwrap_or(train_len).min(train_len);
        if n < 2 {
            return Err(Error::Config(format!("the training set has {n} sample(s): too few to train on")));
        }
        if self.batch < 2 || self.batch > n {
            return Err(Error::Config(format!(
                "--batch must be in 2..={n} (the training samples used), got {}",
                self.batch
            )));
        }
        // Written so that NaN fails every comparison and is refused.
        let valid = self.lr > 0.0 && self.lr.is_finite() && self.lambda >= 0.0 && self.epochs > 0;
        if !valid {
            return Err(Error::Config(format!(
                "need lr > 0, lambda >= 0 and epochs >= 1; got lr {} lambda {} epochs {}",
                self.lr, self.lambda, self.epochs
            )));
        }
        Ok(())
    }
    /// The shared loop's options for `train_len` training samples; the host RNG (shuffling,
    /// augmentation) is seeded from `seed`.
    pub fn fit_options(&self, seed: u64, train_len: usize) -> FitOptions {
        let per_epoch = limit(train_len, self.train_limit) / self.batch.max(1);
        let schedule = (self.warmup_epochs > 0 || self.cosine).then_some(Schedule {
            lr: self.lr,
            warmup_steps: self.warmup_epochs * per_epoch,
            total_steps: self.epochs * per_epoch,
            cosine: self.cosine,
        });
        FitOptions { epochs: self.epochs, batch: self.batch, seed: sub_seed(seed, 3), detect_anomaly: false, schedule }
    }
}

/// Samples shown in importance maps.
pub const EXPLAIN_SAMPLES: usize = 24;

/// Random shift by up to 2 pixels (black fill) and a horizontal flip with probability 1/2: the
/// image augmentation of SimCLR's two views and of `augment` recipes. `x` holds images of
/// `data.channels` x `data.side` x `data.side`; every channel of an image moves together.
fn augment_images(x: &[f32], data: &ImageSplits, rng: &mut Rng) -> Vec<f32> {
    let (ch, side) = (data.channels, data.side as isize);
    let plane = (side * side) as usize;
    let mut out = x.to_vec();
    for dst in out.chunks_mut(ch * plane) {
        let img = dst.to_vec();
        let (dy, dx) = (rng.below(5) as isize - 2, rng.below(5) as isize - 2);
        let flip = rng.below(2) == 1;
        for k in 0..ch {
            let background = -data.mean[k] / data.std[k]; // a black pixel, normalised
            let (src, dst) = (&img[k * plane..(k + 1) * plane], &mut dst[k * plane..(k + 1) * plane]);
            for r in 0..side {
                for c in 0..side {
                    let (sr, sc) = (r - dy, if flip { side - 1 - (c - dx) } else { c - dx });
                    let inside = (0..side).contains(&sr) && (0..side).contains(&sc);
                    dst[(r * side + c) as usize] = if inside { src[(sr * side + sc) as usize] } else { background };
                }
            }
        }
    }
    out
}

/// Images as the image classifier reads them: the three splits, their layout (`channels` x `side`
/// x `side` per image) and how to draw them (class names, the per-channel normalisation).
#[derive(Clone, Debug)]
pub struct ImageSplits<'a> {
    pub train: &'a ImageSet,
    pub val: &'a ImageSet,
    pub test: &'a ImageSet,
    pub channels: usize,
    pub side: usize,
    pub classes: Vec<String>,
    /// Per-channel mean and standard deviation the pixels (in [0, 1]) were normalised by.
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl ImageSplits<'_> {
    /// Values per image.
    pub fn image_len(&self) -> usize {
        self.channels * self.side * self.side
    }
}

impl<'a> From<&'a FashionData> for ImageSplits<'a> {
    fn from(d: &'a FashionData) -> Self {
        ImageSplits {
            train: &d.train,
            val: &d.val,
            test: &d.test,
            channels: 1,
            side: ROWS,
            classes: d.class_names().iter().map(|c| c.to_string()).collect(),
            mean: vec![crate::data::fashion::MEAN],
            std: vec![crate::data::fashion::STD],
        }
    }
}

impl<'a> From<&'a ImageFolderData> for ImageSplits<'a> {
    fn from(d: &'a ImageFolderData) -> Self {
        ImageSplits {
            train: &d.train,
            val: &d.val,
            test: &d.test,
            channels: d.channels,
            side: d.size,
            classes: d.classes.clone(),
            mean: d.mean.clone(),
            std: d.std.clone(),
        }
    }
}

fn limit(n: usize, l: Option<usize>) -> usize {
    l.map_or(n, |l| l.min(n))
}

/// The median pairwise distance (L1 or L2 as the hinge `method` measures it) of latents
/// `z [n, dim]`: the hinge baselines' margin when the recipe leaves it to the latent scale.
fn median_pair_distance(z: &[f32], dim: usize, method: Method) -> f32 {
    let n = z.len() / dim.max(1);
    let mut d = Vec::with_capacity(n * n.saturating_sub(1) / 2);
    for a in 0..n {
        for b in a + 1..n {
            let (za, zb) = (&z[a * dim..(a + 1) * dim], &z[b * dim..(b + 1) * dim]);
            let v = if method == Method::HingeL1 {
                za.iter().zip(zb).map(|(x, y)| (x - y).abs() as f64).sum::<f64>()
            } else {
                za.iter().zip(zb).map(|(x, y)| ((x - y) as f64).powi(2)).sum::<f64>().sqrt()
            };
            d.push(v);
        }
    }
    d.sort_by(f64::total_cmp);
    d.get(d.len() / 2).copied().unwrap_or(1.0) as f32
}

/// The hinge margin of a run: the recipe's, or (0) the median pairwise distance of the latents
/// of the first `batch` training samples under the initial weights.
fn hinge_margin(
    cfg: &ClassifyConfig,
    method: Method,
    first_latents: impl FnOnce() -> Result<(Vec<f32>, usize)>,
) -> Result<f32> {
    if cfg.margin > 0.0 || !matches!(method, Method::HingeL1 | Method::HingeL2) {
        return Ok(cfg.margin);
    }
    let (z, dim) = first_latents()?;
    Ok(median_pair_distance(&z, dim, method))
}

/// The image classifier of a recipe: the small CNN or the residual one.
pub enum ImageNet {
    Small(Cnn),
    Resnet(ResNet),
}

impl ImageNet {
    /// The recipe's network for images of `data`'s layout and classes (the residual CNN takes
    /// 1 x 28 x 28 images only).
    pub fn new(dev: &Device, cfg: &ClassifyConfig, data: &ImageSplits, seed: u64) -> Result<ImageNet> {
        let classes = data.classes.len();
        Ok(match cfg.arch {
            Arch::Resnet if (data.channels, data.side) != (1, ROWS) => {
                return Err(Error::Config(format!(
                    "--model resnet takes 1 x 28 x 28 images; these are {} x {} x {}",
                    data.channels, data.side, data.side
                )))
            }
            Arch::Resnet => ImageNet::Resnet(ResNet::new(dev, &cfg.stages, classes, seed)?),
            _ => ImageNet::Small(Cnn::for_images(
                dev,
                data.channels,
                data.side,
                cfg.channels.0,
                cfg.channels.1,
                classes,
                seed,
            )?),
        })
    }
    pub fn forward(&self, tape: &Tape, x: &Var, training: bool, gated: bool, mask: &TokenMask) -> Result<CnnOut> {
        match self {
            ImageNet::Small(m) => m.forward(tape, x, training, gated, mask),
            ImageNet::Resnet(m) => m.forward(tape, x, training, gated, mask),
        }
    }
    pub fn params(&self, gated: bool) -> Vec<crate::autodiff::Param> {
        match self {
            ImageNet::Small(m) => m.params(gated),
            ImageNet::Resnet(m) => m.params(gated),
        }
    }
    pub fn tensors(&self) -> Vec<(String, Tensor)> {
        match self {
            ImageNet::Small(m) => m.tensors(),
            ImageNet::Resnet(m) => m.tensors(),
        }
    }
    /// Tokens per image (cells of the last map) and the latent width.
    pub fn tokens(&self) -> usize {
        match self {
            ImageNet::Small(m) => m.tokens(),
            ImageNet::Resnet(m) => m.tokens(),
        }
    }
    pub fn latent_dim(&self) -> usize {
        match self {
            ImageNet::Small(m) => m.channels * m.tokens(),
            ImageNet::Resnet(m) => m.channels * m.tokens(),
        }
    }
}

/// The image classifier with one method's objective, as a [`Learner`]: on Fashion-MNIST or a
/// folder of your own images.
pub struct ImageLearner<'a> {
    dev: Device,
    data: ImageSplits<'a>,
    cfg: ClassifyConfig,
    method: Method,
    pub model: ImageNet,
    proj: Mlp,
    opt: Adam,
    atom: AtomConfig,
    mask: TokenMask,
    /// The hinge baselines' margin (see [`ClassifyConfig::margin`]).
    pub margin: f32,
}

/// The learner's name where it trains Fashion-MNIST.
pub type FashionLearner<'a> = ImageLearner<'a>;

impl<'a> ImageLearner<'a> {
    /// `data`: a `&FashionData`, a `&ImageFolderData` or their [`ImageSplits`].
    pub fn new(
        dev: &Device,
        data: impl Into<ImageSplits<'a>>,
        cfg: &ClassifyConfig,
        method: Method,
        seed: u64,
    ) -> Result<Self> {
        let data: ImageSplits<'a> = data.into();
        cfg.validate(data.train.len())?;
        let model = ImageNet::new(dev, cfg, &data, sub_seed(seed, 1))?;
        let proj = Mlp::new(dev, "proj", &[model.latent_dim(), 128, 64], Activation::Relu, sub_seed(seed, 2))?;
        let mut params = model.params(method.gated());
        if method == Method::SimClr {
            params.extend(proj.params());
        }
        let margin = hinge_margin(cfg, method, || {
            let idx: Vec<usize> = (0..cfg.batch.min(data.train.len())).collect();
            let (x, y) = batch_of(data.train, &idx, data.image_len());
            let cut = ImageSet { x, y };
            let cfg1 = ClassifyConfig { test_limit: None, ..cfg.clone() };
            let (_, z, _) = eval_images(dev, &model, &cut, &data, &cfg1, method, Some(0))?;
            Ok((z, model.latent_dim()))
        })?;
        Ok(ImageLearner {
            margin,
            dev: dev.clone(),
            data,
            cfg: cfg.clone(),
            method,
            opt: Adam::new(params, cfg.adam())?,
            atom: AtomConfig { lambda: cfg.lambda, ..AtomConfig::default() },
            mask: TokenMask::full(dev, cfg.batch, model.tokens())?,
            model,
            proj,
        })
    }
}

impl Classifier for ImageLearner<'_> {
    /// On the test split: the latents' nearest-neighbour spacing (first 256 images); draws
    /// `importance.png` (the first test images with each cell's importance) for gated methods.
    fn report(&mut self, dir: &Path, _title: &str) -> Result<Report> {
        let d = &self.data;
        let (_, z, maps) =
            eval_images(&self.dev, &self.model, d.test, d, &self.cfg, self.method, Some(EXPLAIN_SAMPLES))?;
        let mut report = Report::default();
        report.metrics.insert("nn_spacing".into(), nn_spacing(&z, self.model.latent_dim()));
        if let Some(maps) = maps {
            importance_grid(&dir.join("importance.png"), d, &maps, true)?;
        }
        Ok(report)
    }
}

impl Learner for ImageLearner<'_> {
    fn tensors(&self) -> Vec<(String, Tensor)> {
        // The projection head too: SimCLR trains it, and a resumed run needs it back.
        [self.model.tensors(), self.proj.tensors()].concat()
    }
    fn optimizer(&mut self) -> &mut dyn Optimizer {
        &mut self.opt
    }
    fn train_len(&self) -> usize {
        limit(self.data.train.len(), self.cfg.train_limit)
    }
    fn loss(&mut self, tape: &Tape, idx: &[usize], step: usize, rng: &mut Rng) -> Result<Var> {
        let (dev, cfg, model, mask, d) = (&self.dev, &self.cfg, &self.model, &self.mask, &self.data);
        let (bx, by) = batch_of(d.train, idx, d.image_len());
        let b = idx.len();
        let shape = [b, d.channels, d.side, d.side];
        let bx = if cfg.augment { augment_images(&bx, d, rng) } else { bx };
        let x = tape.constant(Tensor::from_slice(dev, &bx, &shape)?);
        let y = Tensor::from_u32(dev, &by, &[b])?;
        let out = model.forward(tape, &x, true, self.method.gated(), mask)?;
        let ce = out.logits.cross_entropy(&y)?;
        let reg = Regularisers { atom: &self.atom, lambda: cfg.lambda, margin: self.margin, tau: cfg.simclr_tau };
        objective(self.method, ce, &out.z, &out.h, out.w.as_ref(), mask, reg, step, || {
            let mut views = Vec::new();
            for _ in 0..2 {
                let v = tape.constant(Tensor::from_slice(dev, &augment_images(&bx, d, rng), &shape)?);
                views.push(self.proj.forward(tape, &model.forward(tape, &v, true, false, mask)?.z)?);
            }
            Ok((views.remove(0), views.remove(0)))
        })
    }
    fn evaluate(&mut self) -> Result<Eval> {
        let (dev, model, cfg, m, d) = (&self.dev, &self.model, &self.cfg, self.method, &self.data);
        Ok(Eval {
            val: eval_images(dev, model, d.val, d, cfg, m, None)?.0,
            test: eval_images(dev, model, d.test, d, cfg, m, None)?.0,
        })
    }
}

/// Accuracy on (at most `cfg.test_limit` images of) a held-out split; with `keep`, also the
/// latents of its first 256 images and the importance maps of the first `keep`.
#[allow(clippy::type_complexity)]
fn eval_images(
    dev: &Device,
    model: &ImageNet,
    test: &ImageSet,
    layout: &ImageSplits,
    cfg: &ClassifyConfig,
    method: Method,
    keep: Option<usize>,
) -> Result<(f64, Vec<f32>, Option<Vec<Vec<f32>>>)> {
    let n = limit(test.len(), cfg.test_limit);
    if n == 0 {
        return Err(Error::Config("no held-out images to evaluate".into()));
    }
    let chunk = 500;
    let mut correct = 0;
    let (mut z_keep, mut w_keep) = (Vec::new(), None);
    for start in (0..n).step_by(chunk) {
        let idx: Vec<usize> = (start..(start + chunk).min(n)).collect();
        let (bx, by) = batch_of(test, &idx, layout.image_len());
        let tape = Tape::no_grad();
        let t = model.tokens();
        let mask = TokenMask::full(dev, idx.len(), t)?;
        let x = tape.constant(Tensor::from_slice(dev, &bx, &[idx.len(), layout.channels, layout.side, layout.side])?);
        let out = model.forward(&tape, &x, false, method.gated(), &mask)?;
        let pred = argmax(out.logits.value(), 1, false)?.to_vec_u32()?;
        correct += pred.iter().zip(&by).filter(|(p, y)| p == y).count();
        if start == 0 {
            if let Some(k) = keep {
                let z = out.z.value().to_vec()?;
                let dz = out.z.shape()[1];
                z_keep = z[..dz * idx.len().min(256)].to_vec();
                if let Some(w) = &out.w {
                    let w = w.value().to_vec()?;
                    w_keep = Some(w.chunks(t).take(k).map(|c| c.to_vec()).collect());
                }
            }
        }
    }
    Ok((correct as f64 / n as f64, z_keep, w_keep))
}

/// Replaces 10% of the real tokens by `<unk>`: the text augmentation of SimCLR's two views.
fn token_dropout(ids: &[u32], lengths: &[u32], max_len: usize, rng: &mut Rng) -> Vec<u32> {
    let mut out = ids.to_vec();
    for (a, &len) in lengths.iter().enumerate() {
        for t in &mut out[a * max_len..a * max_len + len as usize] {
            if rng.uniform() < 0.1 {
                *t = crate::data::reviews::UNK;
            }
        }
    }
    out
}

fn transformer_cfg(data: &ReviewsData, cfg: &ClassifyConfig) -> TransformerConfig {
    TransformerConfig {
        vocab: data.vocab.len(),
        max_len: data.train.max_len,
        d: cfg.d,
        heads: cfg.heads,
        layers: cfg.layers,
        ff: cfg.ff,
        dropout: cfg.dropout,
        classes: data.classes.len(),
    }
}

/// The Transformer with one method's objective, as a [`Learner`].
pub struct SentimentLearner<'a> {
    dev: Device,
    data: &'a ReviewsData,
    cfg: ClassifyConfig,
    method: Method,
    seed: u64,
    pub model: Transformer,
    proj: Mlp,
    opt: Adam,
    atom: AtomConfig,
    /// The hinge baselines' margin (see [`ClassifyConfig::margin`]).
    pub margin: f32,
}

impl<'a> SentimentLearner<'a> {
    pub fn new(dev: &Device, data: &'a ReviewsData, cfg: &ClassifyConfig, method: Method, seed: u64) -> Result<Self> {
        cfg.validate(data.train.labels.len())?;
        let model = Transformer::new(dev, transformer_cfg(data, cfg), sub_seed(seed, 1))?;
        let proj = Mlp::new(dev, "proj", &[cfg.d, 64, 32], Activation::Relu, sub_seed(seed, 2))?;
        let mut params = model.params(method.gated());
        if method == Method::SimClr {
            params.extend(proj.params());
        }
        let margin = hinge_margin(cfg, method, || {
            let n = cfg.batch.min(data.train.len());
            let first = ReviewSplit { labels: data.train.labels[..n].to_vec(), ..data.train.clone() };
            let cfg1 = ClassifyConfig { test_limit: None, ..cfg.clone() };
            let (_, z, _) = eval_sentiment(dev, &model, &first, data.vocab.len(), &cfg1, method, Some(0))?;
            Ok((z, cfg.d))
        })?;
        Ok(SentimentLearner {
            margin,
            dev: dev.clone(),
            data,
            cfg: cfg.clone(),
            method,
            seed,
            opt: Adam::new(params, cfg.adam())?,
            atom: AtomConfig { lambda: cfg.lambda, ..AtomConfig::default() },
            model,
            proj,
        })
    }
}

impl Classifier for SentimentLearner<'_> {
    /// On the test split: the latents' nearest-neighbour spacing (first 256 reviews); draws
    /// `importance.html` (the first test reviews, words shaded by importance) for gated methods.
    fn report(&mut self, dir: &Path, title: &str) -> Result<Report> {
        let vocab = self.data.vocab.len();
        let (_, z, maps) = eval_sentiment(
            &self.dev,
            &self.model,
            &self.data.test,
            vocab,
            &self.cfg,
            self.method,
            Some(EXPLAIN_SAMPLES),
        )?;
        let mut report = Report::default();
        report.metrics.insert("nn_spacing".into(), nn_spacing(&z, self.cfg.d));
        if let Some(maps) = maps {
            let title = format!("{title}: learned token importance");
            sentiment_importance_html(&dir.join("importance.html"), self.data, &maps, &title)?;
        }
        Ok(report)
    }
}

impl Learner for SentimentLearner<'_> {
    fn tensors(&self) -> Vec<(String, Tensor)> {
        // The projection head too: SimCLR trains it, and a resumed run needs it back.
        [self.model.tensors(), self.proj.tensors()].concat()
    }
    fn optimizer(&mut self) -> &mut dyn Optimizer {
        &mut self.opt
    }
    fn train_len(&self) -> usize {
        limit(self.data.train.labels.len(), self.cfg.train_limit)
    }
    fn loss(&mut self, tape: &Tape, idx: &[usize], step: usize, rng: &mut Rng) -> Result<Var> {
        let (dev, cfg, model) = (&self.dev, &self.cfg, &self.model);
        let (l, vocab) = (self.data.train.max_len, self.data.vocab.len());
        let bt = self.data.train.batch(idx);
        let b = idx.len();
        let counts: Vec<usize> = bt.lengths.iter().map(|&c| c as usize).collect();
        let mask = TokenMask::new(dev, &counts, l)?;
        let ids = Indices::new(dev, &bt.ids, &[b, l], vocab)?;
        let y = Tensor::from_u32(dev, &bt.labels, &[b])?;
        let dseed = sub_seed(self.seed, 1000 + step as u64);
        let out = model.forward(tape, &ids, &mask, true, self.method.gated(), dseed)?;
        let ce = out.logits.cross_entropy(&y)?;
        let reg = Regularisers { atom: &self.atom, lambda: cfg.lambda, margin: self.margin, tau: cfg.simclr_tau };
        objective(self.method, ce, &out.z, &out.h, out.w.as_ref(), &mask, reg, step, || {
            let mut views = Vec::new();
            for v in 0..2u64 {
                let ids_v = Indices::new(dev, &token_dropout(&bt.ids, &bt.lengths, l, rng), &[b, l], vocab)?;
                let z = model.forward(tape, &ids_v, &mask, true, false, sub_seed(dseed, 7 + v))?.z;
                views.push(self.proj.forward(tape, &z)?);
            }
            Ok((views.remove(0), views.remove(0)))
        })
    }
    fn evaluate(&mut self) -> Result<Eval> {
        let (dev, model, cfg, m, vocab) = (&self.dev, &self.model, &self.cfg, self.method, self.data.vocab.len());
        Ok(Eval {
            val: eval_sentiment(dev, model, &self.data.val, vocab, cfg, m, None)?.0,
            test: eval_sentiment(dev, model, &self.data.test, vocab, cfg, m, None)?.0,
        })
    }
}

#[allow(clippy::type_complexity)]
fn eval_sentiment(
    dev: &Device,
    model: &Transformer,
    test: &ReviewSplit,
    vocab: usize,
    cfg: &ClassifyConfig,
    method: Method,
    keep: Option<usize>,
) -> Result<(f64, Vec<f32>, Option<Vec<Vec<f32>>>)> {
    let n = limit(test.labels.len(), cfg.test_limit);
    if n == 0 {
        return Err(Error::Config("no held-out reviews to evaluate".into()));
    }
    let l = test.max_len;
    let chunk = 256;
    let mut correct = 0;
    let (mut z_keep, mut w_keep) = (Vec::new(), None);
    for start in (0..n).step_by(chunk) {
        let idx: Vec<usize> = (start..(start + chunk).min(n)).collect();
        let bt = test.batch(&idx);
        let tape = Tape::no_grad();
        let counts: Vec<usize> = bt.lengths.iter().map(|&c| c as usize).collect();
        let mask = TokenMask::new(dev, &counts, l)?;
        let ids = Indices::new(dev, &bt.ids, &[idx.len(), l], vocab)?;
        let out = model.forward(&tape, &ids, &mask, false, method.gated(), 0)?;
        let pred = argmax(out.logits.value(), 1, false)?.to_vec_u32()?;
        correct += pred.iter().zip(&bt.labels).filter(|(p, y)| p == y).count();
        if start == 0 {
            if let Some(k) = keep {
                z_keep = out.z.value().to_vec()?;
                if let Some(w) = &out.w {
                    let w = w.value().to_vec()?;
                    w_keep = Some(w.chunks(l).take(k).zip(&counts).map(|(c, &len)| c[..len].to_vec()).collect());
                }
            }
        }
    }
    Ok((correct as f64 / n as f64, z_keep, w_keep))
}

/// A PNG grid of the first test images with the learned importance of each feature-map cell
/// overlaid (RGB images drawn by their luminance).
pub fn importance_grid(
    path: &std::path::Path,
    data: &ImageSplits,
    maps: &[Vec<f32>],
    title_labels: bool,
) -> Result<()> {
    let (per, plane) = (data.image_len(), data.side * data.side);
    let images: Vec<Vec<f32>> = (0..maps.len())
        .map(|i| {
            let img = &data.test.x[i * per..(i + 1) * per];
            let pixel = |k: usize, j: usize| (img[k * plane + j] * data.std[k] + data.mean[k]).clamp(0.0, 1.0);
            (0..plane)
                .map(|j| match data.channels {
                    3 => 0.299 * pixel(0, j) + 0.587 * pixel(1, j) + 0.114 * pixel(2, j),
                    _ => pixel(0, j),
                })
                .collect()
        })
        .collect();
    let labels: Vec<String> = (0..maps.len()).map(|i| data.classes[data.test.y[i] as usize].clone()).collect();
    let labels = if title_labels { Some(&labels[..]) } else { None };
    crate::plot::image_grid(path, &images, data.side, data.side, 8, Some(maps), labels)
}

/// An HTML page shading each word of the first test reviews by its learned importance.
pub fn sentiment_importance_html(
    path: &std::path::Path,
    data: &ReviewsData,
    maps: &[Vec<f32>],
    title: &str,
) -> Result<()> {
    let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let mut html = format!(
        "<!doctype html><meta charset=utf-8><title>{t}</title><style>body{{font:16px/1.8 sans-serif;max-width:60em;margin:2em auto}}\
         span{{padding:1px 2px;border-radius:3px}} .r{{margin:0 0 1em}} .l{{color:#555;font-size:13px}}</style><h2>{t}</h2>\
         <p class=l>Each word is shaded by the importance the model learned for it, from the review's least (lightest) to its most important word (darkest); hover for the value in (0, 1).</p>",
        t = esc(title)
    );
    for (i, w) in maps.iter().enumerate() {
        let ids = &data.test.ids[i * data.test.max_len..i * data.test.max_len + w.len()];
        let label = data.classes.get(data.test.labels[i] as usize).map_or("?", |c| c.as_str());
        html.push_str(&format!("<p class=r><span class=l>[{label}]</span> "));
        let (lo, hi) = w.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
        for (&id, &v) in ids.iter().zip(w) {
            let word = data.vocab.word(id).unwrap_or("?");
            let shade = if hi > lo { 0.05 + 0.8 * (v - lo) / (hi - lo) } else { 0.4 };
            html.push_str(&format!(
                "<span style=\"background:rgba(230,97,1,{shade:.3})\" title=\"{v:.3}\">{}</span> ",
                esc(word)
            ));
        }
        html.push_str("</p>\n");
    }
    crate::plot::write_atomic(path, html.as_bytes())
}
