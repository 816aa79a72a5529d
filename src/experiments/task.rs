//! The task registry: every task's name, data, model, defaults and budget, reached through
//! [`Task`]. `train`, `compare` and `explain` dispatch through it and nothing else names a task.
//!
//! Adding a task: a variant of [`Task`] with its row in [`Task::info`], its defaults in
//! [`Task::defaults`] (read from its config struct, the one source of its defaults), its data in
//! [`load_data`] and its learner in [`classifier`] (or its GAN loop in [`train_run`]).

use crate::atom::AtomConfig;
use crate::checkpoint::{self, Checkpoint};
use crate::data::fashion::{load_fashion, FashionData, FashionSource};
use crate::data::images::{load_image_folder, ImageFolderConfig, ImageFolderData};
use crate::data::reviews::{load_reviews, load_text_csv, ReviewsConfig, ReviewsData};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::experiments::classify::{Arch, ClassifyConfig, ImageLearner, SentimentLearner};
use crate::experiments::gan::{FashionGanConfig, Gan2dConfig, Mixture};
use crate::experiments::method::Method;
use crate::experiments::protocol::{Classifier, Point, RunRecord};
use crate::experiments::synthetic::{SyntheticConfig, SyntheticData, SyntheticLearner};
use crate::fsio;
use crate::run::Run;
use crate::train::{fit, FitOptions, MoonsConfig};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A task: data, model, objective family and budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    Moons,
    Synthetic,
    Planted,
    Fashion,
    Sentiment,
    Gan2d,
    Gan,
    /// Your own images: `--data DIR`, one subfolder of PNG/JPEG files per class.
    Images,
    /// Your own texts: `--data FILE.csv` with a text and a label column.
    Text,
}

/// What kind of training a task runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `train::fit` over a [`Classifier`]; scored by accuracy.
    Classifier,
    /// The GAN loop (`gan::fit_gan`); scored by its own sample measures.
    Gan,
}

/// A task's fixed description.
pub struct TaskInfo {
    pub name: &'static str,
    pub about: &'static str,
    pub kind: Kind,
    /// The methods it can train.
    pub methods: &'static [Method],
    /// What `compare` trains when `--methods` is not given.
    pub compare_methods: &'static [Method],
}

const CLASSIFIER_METHODS: &[Method] = &Method::ALL;
const GAN_METHODS: &[Method] = &Method::ALL;

impl Task {
    pub const ALL: [Task; 9] = [
        Task::Moons,
        Task::Synthetic,
        Task::Planted,
        Task::Fashion,
        Task::Sentiment,
        Task::Gan2d,
        Task::Gan,
        Task::Images,
        Task::Text,
    ];

    pub fn info(self) -> TaskInfo {
        let (name, about, kind, methods, compare_methods): (_, _, _, &'static [Method], &'static [Method]) = match self
        {
            Task::Moons => (
                "moons",
                "MLP on two interleaved moons (the engine's end-to-end check; cross-entropy only)",
                Kind::Classifier,
                &[Method::Ce],
                &[Method::Ce],
            ),
            Task::Synthetic => (
                "synthetic",
                "8-token two-class data with known informative tokens (the seed's Figures 2 and 3)",
                Kind::Classifier,
                CLASSIFIER_METHODS,
                CLASSIFIER_METHODS,
            ),
            Task::Planted => (
                "planted",
                "the synthetic task with planted structure: class-informative, varying and constant tokens",
                Kind::Classifier,
                CLASSIFIER_METHODS,
                &[Method::Ce, Method::Gate, Method::Atom],
            ),
            Task::Fashion => {
                ("fashion", "CNN on Fashion-MNIST", Kind::Classifier, CLASSIFIER_METHODS, CLASSIFIER_METHODS)
            }
            Task::Sentiment => (
                "sentiment",
                "Transformer on Rotten Tomatoes review snippets",
                Kind::Classifier,
                CLASSIFIER_METHODS,
                CLASSIFIER_METHODS,
            ),
            Task::Gan2d => (
                "gan2d",
                "GAN on a 2-D Gaussian mixture (ring of 8 or 5x5 grid): mode coverage",
                Kind::Gan,
                GAN_METHODS,
                &[Method::Ce, Method::Gate, Method::HingeL2, Method::Atom],
            ),
            Task::Gan => (
                "gan",
                "DCGAN on Fashion-MNIST: Fréchet feature distance, class entropy, diversity",
                Kind::Gan,
                GAN_METHODS,
                &[Method::Ce, Method::Gate, Method::HingeL2, Method::Atom],
            ),
            Task::Images => (
                "images",
                "CNN on your own images (--data DIR: one subfolder of PNG/JPEG files per class)",
                Kind::Classifier,
                CLASSIFIER_METHODS,
                CLASSIFIER_METHODS,
            ),
            Task::Text => (
                "text",
                "Transformer on your own texts (--data FILE.csv: a text and a label column)",
                Kind::Classifier,
                CLASSIFIER_METHODS,
                CLASSIFIER_METHODS,
            ),
        };
        TaskInfo { name, about, kind, methods, compare_methods }
    }
    pub fn name(self) -> &'static str {
        self.info().name
    }
    pub fn kind(self) -> Kind {
        self.info().kind
    }
    pub fn parse(name: &str) -> Result<Task> {
        Task::ALL.into_iter().find(|t| t.name() == name.trim()).ok_or_else(|| {
            let all: Vec<&str> = Task::ALL.iter().map(|t| t.name()).collect();
            Error::Config(format!("--task: unknown task {name:?} (available: {})", all.join(", ")))
        })
    }

    /// Every option the task takes, at its default (`data` and the limits default to none, the
    /// task's own data in full): read from the task's config struct, the one source of its defaults.
    pub fn defaults(self) -> Overrides {
        self.defaults_for(None).expect("every task has its default model")
    }

    /// [`Task::defaults`] for `--model` (the recipes of the real-data tasks' larger models).
    pub fn defaults_for(self, model: Option<Arch>) -> Result<Overrides> {
        let arch = model.unwrap_or(Arch::Small);
        let takes_model = matches!(self, Task::Fashion | Task::Sentiment | Task::Gan | Task::Gan2d);
        if model.is_some() && !takes_model {
            return Err(Error::Config(format!("--model does not apply to task {}", self.name())));
        }
        let wrong = |ok: &str| Error::Config(format!("--model: task {} trains {ok}, not {}", self.name(), arch.name()));
        let (epochs, iters, batch, lr, lambda) = match self {
            Task::Moons => {
                let d = MoonsConfig::default();
                (Some(d.epochs), None, d.batch, d.lr, None)
            }
            Task::Synthetic | Task::Planted => {
                let d = SyntheticConfig::default();
                (Some(d.epochs), None, d.batch, d.lr, Some(d.lambda))
            }
            Task::Fashion | Task::Sentiment => {
                let d = ClassifyConfig::recipe(self == Task::Fashion, arch)?;
                (Some(d.epochs), None, d.batch, d.lr, Some(d.lambda))
            }
            Task::Gan2d => {
                let d = match arch {
                    Arch::Small => Gan2dConfig::default(),
                    Arch::Pacgan => Gan2dConfig::pacgan(),
                    _ => return Err(wrong("small or pacgan")),
                };
                (None, Some(d.iters), d.batch, d.lr, Some(d.lambda))
            }
            Task::Gan => {
                let d = match arch {
                    Arch::Small => FashionGanConfig::default(),
                    Arch::Base => FashionGanConfig::base(),
                    _ => return Err(wrong("small or base")),
                };
                (Some(d.epochs), None, d.batch, d.lr, Some(d.lambda))
            }
            Task::Images | Task::Text => {
                let d = if self == Task::Images { ClassifyConfig::images() } else { ClassifyConfig::text() };
                (Some(d.epochs), None, d.batch, d.lr, Some(d.lambda))
            }
        };
        Ok(Overrides {
            epochs,
            iters,
            batch: Some(batch),
            lr: Some(short(lr)),
            lambda: lambda.map(short),
            hidden: (self == Task::Moons).then(|| MoonsConfig::default().hidden),
            channels: (self == Task::Gan).then(|| {
                if arch == Arch::Base { FashionGanConfig::base() } else { FashionGanConfig::default() }.channels
            }),
            mixture: (self == Task::Gan2d).then_some(if arch == Arch::Pacgan {
                Mixture::Ring8Unit
            } else {
                Mixture::Ring8
            }),
            latent_dim: matches!(self, Task::Synthetic | Task::Planted).then(|| SyntheticConfig::default().latent_dim),
            model: takes_model.then_some(arch),
            image_size: (self == Task::Images).then(|| ImageFolderConfig::default().size),
            ..Overrides::default()
        })
    }

    /// The long names of the options the task takes (`--mixed-precision` applies to every task).
    pub fn takes(self) -> &'static [&'static str] {
        match self {
            Task::Moons => &["epochs", "batch", "lr", "hidden"],
            Task::Synthetic | Task::Planted => &["epochs", "batch", "lr", "lambda", "latent-dim"],
            Task::Fashion | Task::Sentiment => {
                &["epochs", "batch", "lr", "lambda", "data", "train-limit", "test-limit", "model"]
            }
            Task::Gan2d => &["iters", "batch", "lr", "lambda", "mixture", "model"],
            Task::Gan => &["epochs", "batch", "lr", "lambda", "data", "train-limit", "channels", "model"],
            Task::Images => {
                &["epochs", "batch", "lr", "lambda", "data", "train-limit", "test-limit", "image-size", "grayscale"]
            }
            Task::Text => &["epochs", "batch", "lr", "lambda", "data", "train-limit", "test-limit"],
        }
    }

    /// One line per task with its defaults, for `--help`.
    pub fn defaults_help() -> String {
        let mut s = String::from("Task defaults (every option not given takes its task's value):\n");
        for t in Task::ALL {
            let d = t.defaults();
            let mut parts = Vec::new();
            if let Some(e) = d.epochs {
                parts.push(format!("--epochs {e}"));
            }
            if let Some(i) = d.iters {
                parts.push(format!("--iters {i}"));
            }
            parts.push(format!("--batch {}", d.batch.unwrap_or(0)));
            parts.push(format!("--lr {}", d.lr.unwrap_or(0.0)));
            if let Some(l) = d.lambda {
                parts.push(format!("--lambda {l}"));
            }
            if let Some(h) = d.hidden {
                parts.push(format!("--hidden {h}"));
            }
            if let Some(c) = d.channels {
                parts.push(format!("--channels {c}"));
            }
            if let Some(m) = d.mixture {
                parts.push(format!("--mixture {}", m.slug()));
            }
            if let Some(l) = d.latent_dim {
                parts.push(format!("--latent-dim {l}"));
            }
            if let Some(m) = d.model {
                parts.push(format!("--model {}", m.name()));
            }
            if let Some(z) = d.image_size {
                parts.push(format!("--image-size {z}"));
            }
            s.push_str(&format!("  {:<10} {}\n", t.name(), parts.join(" ")));
        }
        for (t, arch) in [
            (Task::Fashion, Arch::Resnet),
            (Task::Sentiment, Arch::Base),
            (Task::Gan, Arch::Base),
            (Task::Gan2d, Arch::Pacgan),
        ] {
            if let Ok(d) = t.defaults_for(Some(arch)) {
                let budget =
                    d.epochs.map_or_else(|| format!("--iters {}", d.iters.unwrap_or(0)), |e| format!("--epochs {e}"));
                s.push_str(&format!(
                    "  {:<10} --model {}: {budget} --batch {} --lr {}\n",
                    t.name(),
                    arch.name(),
                    d.batch.unwrap_or(0),
                    d.lr.unwrap_or(0.0)
                ));
            }
        }
        s
    }

    /// The effective options of one run of `method` with `seed`: `o` over the task's defaults.
    /// An option the task (or the method) does not take is an error, as is a bad value.
    pub fn resolve(self, method: Method, seed: u64, o: &Overrides) -> Result<RunOptions> {
        let info = self.info();
        if !info.methods.contains(&method) {
            let ok: Vec<&str> = info.methods.iter().map(|m| m.slug()).collect();
            return Err(Error::Config(format!(
                "--method: task {} does not train {:?} (methods: {})",
                self.name(),
                method.slug(),
                ok.join(", ")
            )));
        }
        let d = self.defaults_for(o.model)?;
        let takes = self.takes();
        for name in o.given() {
            if !takes.contains(&name) {
                return Err(Error::Config(format!(
                    "--{name} does not apply to task {} (it takes: {})",
                    self.name(),
                    takes.iter().map(|t| format!("--{t}")).collect::<Vec<_>>().join(", ")
                )));
            }
        }
        if o.lambda.is_some() && !method.uses_lambda() {
            return Err(Error::Config(format!(
                "--lambda does not apply to method {:?} (no regulariser weighed by lambda)",
                method.slug()
            )));
        }
        let opts = RunOptions {
            task: self,
            method,
            seed,
            epochs: o.epochs.or(d.epochs),
            iters: o.iters.or(d.iters),
            batch: o.batch.or(d.batch).unwrap_or(1),
            lr: o.lr.or(d.lr).unwrap_or(0.0),
            lambda: if method.uses_lambda() { o.lambda.or(d.lambda) } else { None },
            data: o.data.clone(),
            train_limit: o.train_limit,
            test_limit: o.test_limit,
            hidden: o.hidden.or(d.hidden),
            channels: o.channels.or(d.channels),
            mixture: o.mixture.or(d.mixture),
            latent_dim: o.latent_dim.or(d.latent_dim),
            model: o.model.or(d.model),
            image_size: o.image_size.or(d.image_size),
            grayscale: o.grayscale,
            mixed_precision: o.mixed_precision,
        };
        opts.check()?;
        Ok(opts)
    }

    /// How a run is scored: what selection maximises (or minimises) on validation and what the
    /// tables report on test.
    pub fn score(self) -> Score {
        match self {
            Task::Gan2d => Score { name: "modes covered", higher_is_better: true, scale: 1.0, unit: "", digits: 2 },
            Task::Gan => {
                Score { name: "Fréchet feature distance", higher_is_better: false, scale: 1.0, unit: "", digits: 3 }
            }
            _ => Score { name: "accuracy", higher_is_better: true, scale: 100.0, unit: " (%)", digits: 2 },
        }
    }
    /// The report's measures shown as table columns: (key, column title, scale, digits).
    pub fn columns(self) -> &'static [(&'static str, &'static str, f64, usize)] {
        match self {
            Task::Synthetic => &[
                ("auc", "importance AUC", 1.0, 3),
                ("nn_spacing", "NN spacing", 1.0, 4),
                ("class_gap", "class gap", 1.0, 2),
            ],
            Task::Planted => &[
                ("auc", "AUC informative vs rest", 1.0, 3),
                ("auc_varying", "AUC varying vs constant", 1.0, 3),
                ("nn_spacing", "NN spacing", 1.0, 4),
                ("class_gap", "class gap", 1.0, 2),
            ],
            Task::Fashion | Task::Sentiment | Task::Moons | Task::Images | Task::Text => {
                &[("nn_spacing", "NN spacing", 1.0, 4)]
            }
            Task::Gan2d => {
                &[("high_quality", "high-quality points (%)", 100.0, 1), ("kl", "KL(modes ‖ uniform)", 1.0, 3)]
            }
            Task::Gan => &[
                ("class_entropy", "class entropy (ln 10 = 2.303)", 1.0, 3),
                ("diversity", "feature diversity", 1.0, 3),
            ],
        }
    }
}

impl std::fmt::Display for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Task {
    type Err = Error;
    fn from_str(s: &str) -> Result<Task> {
        Task::parse(s)
    }
}

/// How runs of a task are scored.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Score {
    pub name: &'static str,
    pub higher_is_better: bool,
    /// Shown times this (100: a fraction as a percentage).
    pub scale: f64,
    pub unit: &'static str,
    pub digits: usize,
}

/// `x` as the f64 with the shortest decimal form (0.01, not 0.009999999776).
fn short(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(x as f64)
}

/// Options given on the command line (or a config file) over a task's defaults.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Overrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iters: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lambda: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_limit: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_limit: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mixture: Option<Mixture>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latent_dim: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<Arch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_size: Option<usize>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub grayscale: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mixed_precision: bool,
}

impl Overrides {
    /// The long option names of the options set.
    pub fn given(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        let mut add = |on: bool, name| {
            if on {
                v.push(name)
            }
        };
        add(self.epochs.is_some(), "epochs");
        add(self.iters.is_some(), "iters");
        add(self.batch.is_some(), "batch");
        add(self.lr.is_some(), "lr");
        add(self.lambda.is_some(), "lambda");
        add(self.data.is_some(), "data");
        add(self.train_limit.is_some(), "train-limit");
        add(self.test_limit.is_some(), "test-limit");
        add(self.hidden.is_some(), "hidden");
        add(self.channels.is_some(), "channels");
        add(self.mixture.is_some(), "mixture");
        add(self.latent_dim.is_some(), "latent-dim");
        add(self.model.is_some(), "model");
        add(self.image_size.is_some(), "image-size");
        add(self.grayscale, "grayscale");
        v
    }
}

/// The effective options of one training run: a run folder's `config.json`, and the `"options"`
/// of every checkpoint's sidecar. Options a task does not take are absent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunOptions {
    pub task: Task,
    pub method: Method,
    pub seed: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iters: Option<usize>,
    pub batch: usize,
    pub lr: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lambda: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_limit: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_limit: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mixture: Option<Mixture>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latent_dim: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<Arch>,
    /// Side of the images (images): resized and centre-cropped to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_size: Option<usize>,
    /// Read the images in grayscale (images; otherwise grayscale only when every image is).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub grayscale: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mixed_precision: bool,
}

impl RunOptions {
    fn lambda32(&self) -> f32 {
        self.lambda.unwrap_or(AtomConfig::default().lambda as f64) as f32
    }
    pub fn moons(&self) -> MoonsConfig {
        let d = MoonsConfig::default();
        MoonsConfig {
            epochs: self.epochs.unwrap_or(d.epochs),
            batch: self.batch,
            lr: self.lr as f32,
            hidden: self.hidden.unwrap_or(d.hidden),
            seed: self.seed,
            ..d
        }
    }
    pub fn synthetic(&self) -> SyntheticConfig {
        let d = if self.task == Task::Planted { SyntheticConfig::planted() } else { SyntheticConfig::default() };
        SyntheticConfig {
            epochs: self.epochs.unwrap_or(d.epochs),
            batch: self.batch,
            lr: self.lr as f32,
            lambda: self.lambda32(),
            latent_dim: self.latent_dim.unwrap_or(d.latent_dim),
            ..d
        }
    }
    pub fn classify(&self) -> ClassifyConfig {
        let arch = self.model.unwrap_or(Arch::Small);
        let d = match self.task {
            Task::Images => ClassifyConfig::images(),
            Task::Text => ClassifyConfig::text(),
            t => ClassifyConfig::recipe(t != Task::Sentiment, arch).unwrap_or_else(|_| ClassifyConfig::fashion()),
        };
        ClassifyConfig {
            epochs: self.epochs.unwrap_or(d.epochs),
            batch: self.batch,
            lr: self.lr as f32,
            lambda: self.lambda32(),
            train_limit: self.train_limit,
            test_limit: self.test_limit,
            ..d
        }
    }
    pub fn gan2d(&self) -> (Gan2dConfig, Mixture) {
        let d = if self.model == Some(Arch::Pacgan) { Gan2dConfig::pacgan() } else { Gan2dConfig::default() };
        let iters = self.iters.unwrap_or(d.iters);
        let log_every = d.log_every.min(iters.div_ceil(10)).max(1);
        let cfg = Gan2dConfig { iters, batch: self.batch, lr: self.lr as f32, lambda: self.lambda32(), log_every, ..d };
        (cfg, self.mixture.unwrap_or(Mixture::Ring8))
    }
    pub fn dcgan(&self) -> FashionGanConfig {
        let d = if self.model == Some(Arch::Base) { FashionGanConfig::base() } else { FashionGanConfig::default() };
        FashionGanConfig {
            epochs: self.epochs.unwrap_or(d.epochs),
            batch: self.batch,
            lr: self.lr as f32,
            lambda: self.lambda32(),
            train_limit: self.train_limit,
            channels: self.channels.unwrap_or(d.channels),
            ..d
        }
    }

    /// Checks every value that does not depend on the data (those that do: [`RunOptions::validate`]).
    fn check(&self) -> Result<()> {
        let finite_pos = self.lr > 0.0 && self.lr.is_finite();
        if !finite_pos {
            return Err(Error::Config(format!("--lr must be a positive number, got {}", self.lr)));
        }
        if let Some(l) = self.lambda {
            if !(l >= 0.0 && l.is_finite()) {
                return Err(Error::Config(format!("--lambda must be a number >= 0, got {l}")));
            }
        }
        if self.epochs == Some(0) || self.iters == Some(0) {
            return Err(Error::Config("--epochs and --iters must be at least 1".into()));
        }
        if self.test_limit == Some(0) || self.train_limit == Some(0) {
            return Err(Error::Config("--train-limit and --test-limit must be at least 1".into()));
        }
        match self.task {
            Task::Moons => self.moons().validate(),
            Task::Synthetic | Task::Planted => self.synthetic().validate(),
            Task::Gan2d => self.gan2d().0.validate(),
            Task::Images => match self.image_size {
                Some(z) if !(4..=1024).contains(&z) || z % 4 != 0 => Err(Error::Config(format!(
                    "--image-size must be a multiple of 4 in 4..=1024 (the CNN pools twice by 2), got {z}"
                ))),
                _ => Ok(()),
            },
            Task::Fashion | Task::Sentiment | Task::Gan | Task::Text => Ok(()),
        }
    }

    /// Checks the options against the loaded data (batch within the training set, ...): with
    /// [`Task::resolve`], everything is checked before a run folder is created.
    pub fn validate(&self, data: &Data) -> Result<()> {
        self.check()?;
        match (self.task, data) {
            (Task::Fashion, Data::Fashion(d)) => {
                if d.val.is_empty() || d.test.is_empty() {
                    return Err(Error::Config(format!(
                        "{}: the validation or test split is empty (validation is a tenth of each class of the \
                         training images)",
                        d.description()
                    )));
                }
                self.classify().validate(d.train.len())
            }
            (Task::Sentiment | Task::Text, Data::Reviews(d)) => self.classify().validate(d.train.len()),
            (Task::Images, Data::Images(d)) => {
                if d.val.is_empty() || d.test.is_empty() {
                    return Err(Error::Config(format!(
                        "{}: the validation or test split is empty (each class keeps a fifth of its images for \
                         test and a tenth of the rest for validation); add images",
                        d.description()
                    )));
                }
                self.classify().validate(d.train.len())
            }
            (Task::Gan, Data::Fashion(d)) => self.dcgan().validate(d.train.len()),
            (Task::Moons, _) | (Task::Synthetic | Task::Planted, Data::Synthetic(_)) | (Task::Gan2d, _) => Ok(()),
            (t, _) => Err(Error::Config(format!("task {}: the loaded data is not its data", t.name()))),
        }
    }

    /// Optimizer steps (GAN iterations) the run takes in all, for progress and ETA.
    pub fn total_steps(&self, data: &Data) -> usize {
        let per_epoch = |n: usize| self.train_limit.map_or(n, |l| l.min(n)) / self.batch.max(1);
        match (self.task, data) {
            (Task::Gan2d, _) => self.gan2d().0.iters,
            (Task::Moons, _) => self.moons().epochs * (self.moons().train / self.batch.max(1)),
            (Task::Synthetic | Task::Planted, Data::Synthetic(d)) => self.synthetic().epochs * per_epoch(d.train.len()),
            (_, Data::Fashion(d)) => self.epochs.unwrap_or(1) * per_epoch(d.train.len()),
            (_, Data::Reviews(d)) => self.epochs.unwrap_or(1) * per_epoch(d.train.len()),
            (_, Data::Images(d)) => self.epochs.unwrap_or(1) * per_epoch(d.train.len()),
            _ => 0,
        }
    }

    /// A short label: `synthetic atom λ=0.1 seed 2`, `fashion (resnet) ce seed 0`.
    pub fn label(&self) -> String {
        let lambda = self.lambda.filter(|_| self.method.uses_lambda()).map_or(String::new(), |l| format!(" λ={l}"));
        let model = self.model.filter(|&m| m != Arch::Small).map_or(String::new(), |m| format!(" ({})", m.name()));
        format!("{}{model} {}{lambda} seed {}", self.task.name(), self.method.slug(), self.seed)
    }
}

/// A task's data, loaded once and shared by every run of a comparison.
#[allow(clippy::large_enum_variant)]
pub enum Data {
    /// Generated inside each run from its seed (moons, the 2-D mixtures).
    Generated,
    Synthetic(SyntheticData),
    Fashion(FashionData),
    Reviews(ReviewsData),
    /// A folder of your own images.
    Images(ImageFolderData),
}

impl Data {
    pub fn description(&self) -> String {
        match self {
            Data::Generated => "generated from each run's seed".into(),
            Data::Synthetic(d) => d.description(&d.config),
            Data::Fashion(d) => d.description(),
            Data::Reviews(d) => d.description(),
            Data::Images(d) => d.description(),
        }
    }
}

/// Loads (or generates) the data of `opts`'s task.
pub fn load_data(opts: &RunOptions) -> Result<Data> {
    Ok(match opts.task {
        Task::Moons | Task::Gan2d => Data::Generated,
        Task::Synthetic | Task::Planted => Data::Synthetic(SyntheticData::generate(&opts.synthetic())),
        // The classifier reads the full set when Debian's package is installed; the DCGAN keeps
        // to the bundled 10k (its lavapipe budget) unless given a directory.
        Task::Fashion => {
            Data::Fashion(load_fashion(opts.data.clone().map_or(FashionSource::Auto, FashionSource::Dir))?)
        }
        Task::Gan => {
            // The small DCGAN keeps to the bundled 10k (its lavapipe budget); the standard one
            // takes the full set when Debian's package is installed.
            let default = if opts.model == Some(Arch::Base) { FashionSource::Auto } else { FashionSource::Bundled };
            Data::Fashion(load_fashion(opts.data.clone().map_or(default, FashionSource::Dir))?)
        }
        Task::Sentiment => Data::Reviews(load_reviews(opts.data.as_deref(), 0, 64)?),
        Task::Images | Task::Text => {
            let Some(path) = opts.data.as_deref() else {
                return Err(Error::Config(format!(
                    "--task {} needs --data {}",
                    opts.task.name(),
                    if opts.task == Task::Images {
                        "DIR (a folder with one subfolder of PNG/JPEG images per class)"
                    } else {
                        "FILE.csv (a CSV with a header naming a 'text' and a 'label' column)"
                    }
                )));
            };
            if opts.task == Task::Images {
                let d = ImageFolderConfig::default();
                let cfg = ImageFolderConfig {
                    size: opts.image_size.unwrap_or(d.size),
                    grayscale: opts.grayscale.then_some(true),
                    ..d
                };
                Data::Images(load_image_folder(path, &cfg)?)
            } else {
                Data::Reviews(load_text_csv(path, &ReviewsConfig::default())?)
            }
        }
    })
}

impl Classifier for crate::train::Moons {
    /// The moons MLP reports its accuracy only.
    fn report(&mut self, _dir: &Path, _title: &str) -> Result<crate::experiments::protocol::Report> {
        Ok(Default::default())
    }
}

/// The learner of a classifier task, on `data`.
pub fn classifier<'a>(
    dev: &Device,
    opts: &RunOptions,
    data: &'a Data,
) -> Result<(Box<dyn Classifier + 'a>, FitOptions)> {
    let (m, seed) = (opts.method, opts.seed);
    Ok(match (opts.task, data) {
        (Task::Moons, _) => {
            let cfg = opts.moons();
            (Box::new(crate::train::Moons::new(dev, &cfg)?), cfg.fit_options())
        }
        (Task::Synthetic | Task::Planted, Data::Synthetic(d)) => {
            let l = SyntheticLearner::new(dev, &opts.synthetic(), d, m, seed)?;
            let f = l.fit_options();
            (Box::new(l), f)
        }
        (Task::Fashion, Data::Fashion(d)) => {
            let cfg = opts.classify();
            let f = cfg.fit_options(seed, d.train.len());
            (Box::new(ImageLearner::new(dev, d, &cfg, m, seed)?), f)
        }
        (Task::Images, Data::Images(d)) => {
            let cfg = opts.classify();
            let f = cfg.fit_options(seed, d.train.len());
            (Box::new(ImageLearner::new(dev, d, &cfg, m, seed)?), f)
        }
        (Task::Sentiment | Task::Text, Data::Reviews(d)) => {
            let cfg = opts.classify();
            let f = cfg.fit_options(seed, d.train.len());
            (Box::new(SentimentLearner::new(dev, d, &cfg, m, seed)?), f)
        }
        (t, _) => return Err(Error::Config(format!("task {} is not a classifier on this data", t.name()))),
    })
}

/// How a run is carried out, beyond its options.
#[derive(Clone, Debug, Default)]
pub struct RunContext {
    /// Check every op for NaN/Inf and name the first that made one (`--detect-anomaly`; slow).
    pub detect_anomaly: bool,
    /// A folder for what a comparison's runs share (the DCGAN's feature CNN); `None`: the run's own.
    pub shared: Option<PathBuf>,
    /// Per-term diagnostics records per epoch where a task has them (`terms.png`); 0: none.
    pub terms_per_epoch: usize,
}

/// Trains one run in `run`'s folder (from `resume` when given) and, when it finishes, reports
/// the selected model and writes `result.json`. `None`: stopped early (Ctrl-C, `--max-steps`)
/// after saving a checkpoint.
pub fn train_run(
    dev: &Device,
    opts: &RunOptions,
    data: &Data,
    run: &mut Run,
    resume: Option<&Checkpoint>,
    ctx: &RunContext,
) -> Result<Option<RunRecord>> {
    let record = match opts.task.kind() {
        Kind::Gan => crate::experiments::gan::train_run(dev, opts, data, run, resume, ctx)?,
        Kind::Classifier => train_classifier(dev, opts, data, run, resume, ctx)?,
    };
    if let Some(r) = &record {
        fsio::write_json(run.dir().join("result.json"), r)?;
    }
    Ok(record)
}

/// [`train_run`] for a classifier: `train::fit`, then the best validation epoch's model reports.
fn train_classifier(
    dev: &Device,
    opts: &RunOptions,
    data: &Data,
    run: &mut Run,
    resume: Option<&Checkpoint>,
    ctx: &RunContext,
) -> Result<Option<RunRecord>> {
    let (mut learner, fit_opts) = classifier(dev, opts, data)?;
    let fit_opts = FitOptions { detect_anomaly: ctx.detect_anomaly, ..fit_opts };
    if ctx.terms_per_epoch > 0 && opts.method == Method::Atom {
        learner.log_terms(run.dir(), ctx.terms_per_epoch);
    }
    let fitted = fit(dev, learner.as_mut(), &fit_opts, resume, run)?;
    if fitted.stopped {
        return Ok(None);
    }
    run.curves(&opts.label(), &fitted.history)?;
    // The reported model is the one of the best validation epoch (the run's best checkpoint).
    let best = checkpoint::load(&run.best_path())?;
    best.select("model.").restore_into(&learner.tensors())?;
    let report = learner.report(run.dir(), &opts.label())?;
    let history = fitted.history.iter().map(Point::from_epoch).collect();
    Ok(Some(RunRecord::from_history(opts, history, report, true)))
}

/// Rebuilds a classifier from a checkpoint of `train` or `compare` (its sidecar's `"options"`),
/// scores it on the test split and draws its figures into `out`. `data_dir` replaces the data
/// location the run used. Returns the test accuracy and the report.
pub fn explain(
    dev: &Device,
    path: &Path,
    data_dir: Option<&Path>,
    out: &Path,
) -> Result<(f64, crate::experiments::protocol::Report)> {
    let ck = checkpoint::load(path)?;
    let mut opts: RunOptions = ck
        .sidecar
        .get("options")
        .cloned()
        .ok_or_else(|| Error::data(path, "sidecar has no \"options\": not a checkpoint of `train` or `compare`"))
        .and_then(|v| serde_json::from_value(v).map_err(|e| Error::data(path, format!("sidecar \"options\": {e}"))))?;
    if opts.task.kind() != Kind::Classifier {
        return Err(Error::Config(format!(
            "{}: a {} checkpoint; explain draws classifiers",
            path.display(),
            opts.task.name()
        )));
    }
    if let Some(d) = data_dir {
        opts.data = Some(d.to_path_buf());
    }
    let data = load_data(&opts)?;
    let (mut learner, _) = classifier(dev, &opts, &data)?;
    ck.select("model.").restore_into(&learner.tensors())?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let acc = learner.evaluate()?.test;
    let report = learner.report(out, &format!("{} ({})", opts.label(), path.display()))?;
    Ok((acc, report))
}

/// Writes a real-data task's splits as the engine sees them into `dir`, so another framework
/// (the PyTorch references in `benches/reference/`) trains and scores on the very same samples:
/// Fashion-MNIST as `fashion-split.json` (the source files, normalisation and each split's
/// indices into them), the reviews as `reviews.json` (each split's token ids per review, with
/// their labels; id 0 pads, 1 is unknown). Returns the file written.
pub fn export_data(data: &Data, dir: &Path) -> Result<PathBuf> {
    use crate::data::fashion::{FashionOrigin, MEAN, STD};
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let (file, value) = match data {
        Data::Fashion(d) => {
            let (train_file, test_file) = match &d.origin {
                FashionOrigin::Full(p) => (
                    p.join(crate::data::fashion::TRAIN_IMAGES).display().to_string(),
                    p.join(crate::data::fashion::TEST_IMAGES).display().to_string(),
                ),
                FashionOrigin::Bundled => {
                    let t = format!("assets/fashion-mnist/{}", crate::data::fashion::TEST_IMAGES);
                    (t.clone(), t)
                }
            };
            let v = serde_json::json!({
                "description": d.description(),
                "images": {"train": train_file, "val": train_file, "test": test_file},
                "labels_file": "the images file's name with `images-idx3` replaced by `labels-idx1`",
                "normalise": {"mean": MEAN, "std": STD, "formula": "(pixel / 255 - mean) / std"},
                "train": d.indices[0], "val": d.indices[1], "test": d.indices[2],
            });
            ("fashion-split.json", v)
        }
        Data::Reviews(d) => {
            let split = |s: &crate::data::reviews::ReviewSplit| {
                let ids: Vec<&[u32]> =
                    (0..s.len()).map(|i| &s.ids[i * s.max_len..i * s.max_len + s.lengths[i] as usize]).collect();
                serde_json::json!({"ids": ids, "labels": s.labels})
            };
            let v = serde_json::json!({
                "description": d.description(), "vocab": d.vocab.len(), "max_len": d.train.max_len, "pad": 0, "unk": 1,
                "train": split(&d.train), "val": split(&d.val), "test": split(&d.test),
            });
            ("reviews.json", v)
        }
        _ => {
            return Err(Error::Config(
                "data: fashion, sentiment and text are exported; the others generate their data or read it as it is \
                 (images)"
                    .into(),
            ))
        }
    };
    let path = dir.join(file);
    fsio::write_atomic(&path, serde_json::to_string(&value).expect("serialisable").as_bytes())?;
    Ok(path)
}
