//! The `atomgrad` command line: `info` describes the adapter, `train` runs one training run with
//! checkpoints and resume, `compare` trains every method on a task, `explain` and `sample` draw
//! from saved models. With no subcommand it runs the synthetic comparison.
//!
//! Every option can also come from a JSON file (`--config FILE`, keys are the long option names;
//! options given on the command line win), and `train` saves its effective options as the run
//! folder's `config.json`, which `--config` accepts back.

use atomgrad::experiments::classify::{checkpoint_meta, ClassifyConfig, FashionLearner, SentimentLearner};
use atomgrad::experiments::gan::{FashionGanConfig, Gan2dConfig, Mixture};
use atomgrad::experiments::synthetic::{SyntheticConfig, SyntheticLearner};
use atomgrad::experiments::{default_out, Method};
use atomgrad::run::{check_empty, Display, Run};
use atomgrad::train::{fit, FitOptions, Learner, Moons, MoonsConfig};
use atomgrad::{Device, Error, Result};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(name = "atomgrad", version, about = "GPU compute-shader training engine with atom modeling")]
#[command(args_override_self = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

/// `compare`'s options at their defaults (what a bare `atomgrad` runs).
#[derive(Parser)]
struct Defaults {
    #[command(flatten)]
    compare: CompareArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print the adapter, backend, driver, limits and optional features in use.
    Info,
    /// Train one model (one task, method and seed) into a run folder: config.json,
    /// metrics.jsonl, checkpoints (the last 2 and the best), curves; resumable.
    Train(TrainArgs),
    /// Train every method (cross-entropy, gate only, hinge-L1/L2, SimCLR, atom modeling) with
    /// identical budgets and seeds; print the table and write plots and JSON to a run folder.
    Compare(CompareArgs),
    /// Draw the learned importance maps of a classifier saved by `compare` or `train` (a PNG
    /// grid of test images with each feature-map cell's importance, or an HTML page shading
    /// review words).
    Explain(ExplainArgs),
    /// Write a PNG grid of images from a generator saved by `compare --task gan`.
    Sample(SampleArgs),
}

#[derive(clap::Args)]
struct ExplainArgs {
    /// A `model-<method>.safetensors` written by `compare --task fashion|sentiment`, or a
    /// checkpoint of `train` (e.g. RUN/checkpoints/best.safetensors).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Data location, as for `compare --data`.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Output folder (default: the checkpoint's folder).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(clap::Args)]
struct SampleArgs {
    /// A `generator.safetensors` written by `compare --task gan` (RUN/<method>/seed<k>/).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Number of images.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    n: u64,
    /// Seed of the noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output folder (default: the checkpoint's folder).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(clap::Args, Serialize)]
struct CompareArgs {
    /// Task: synthetic (8-token two-class data with known informative tokens), fashion (CNN on
    /// Fashion-MNIST), sentiment (Transformer on Rotten Tomatoes snippets), gan2d (GAN on a ring
    /// of 8 and a 5x5 grid of Gaussians: mode coverage), gan (DCGAN on Fashion-MNIST: Fréchet
    /// feature distance, class entropy, diversity).
    #[arg(long, default_value = "synthetic")]
    task: String,
    /// Fashion-MNIST directory with the four official files (default: the full set from
    /// /usr/share/datasets/fashion-mnist when installed, else the bundled 10k test files), or the
    /// reviews .csv.bz2 (default: the bundled one).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Samples per step (default: the task's own).
    #[arg(long)]
    batch: Option<usize>,
    /// Use at most this many training samples (real-data tasks).
    #[arg(long)]
    train_limit: Option<usize>,
    /// Evaluate on at most this many test samples (real-data tasks).
    #[arg(long)]
    test_limit: Option<usize>,
    /// Seeds per method (0, 1, ..).
    #[arg(long, default_value_t = 3)]
    seeds: u64,
    /// Passes over the training set per run.
    #[arg(long)]
    epochs: Option<usize>,
    /// Weight lambda of every regulariser.
    #[arg(long, default_value_t = 0.1)]
    lambda: f32,
    /// Adam learning rate (default: the task's own).
    #[arg(long)]
    lr: Option<f32>,
    /// Methods to run, comma-separated (ce, gate, hinge-l1, hinge-l2, simclr, atom); all by default.
    #[arg(long, value_delimiter = ',')]
    methods: Vec<String>,
    /// Run folder (default runs/<task>-<unix time>).
    #[arg(long)]
    #[serde(skip)]
    out: Option<PathBuf>,
    /// Write into an existing, non-empty run folder (its files may be replaced).
    #[arg(long)]
    #[serde(skip)]
    force: bool,
    /// Training iterations per run (gan2d; default: the task's own).
    #[arg(long)]
    iters: Option<usize>,
    /// DCGAN width (gan): channels of the generator's 7x7 map (half at 14x14) and of the
    /// discriminator's last map (default 32, sized for lavapipe; e.g. 128 on a GPU).
    #[arg(long)]
    channels: Option<usize>,
    /// Print only the final table.
    #[arg(long)]
    #[serde(skip)]
    quiet: bool,
    /// Read options from a JSON file (keys: the long option names); command-line options win.
    #[arg(long)]
    #[serde(skip)]
    config: Option<PathBuf>,
}

/// `train`'s options. Those that define the run are saved to `config.json`; `--resume` reads
/// them back, so they cannot be given with it.
#[derive(clap::Args, Serialize, Deserialize, Default)]
struct TrainArgs {
    /// Task: moons (MLP on two interleaved moons), synthetic, fashion (CNN on Fashion-MNIST),
    /// sentiment (Transformer on Rotten Tomatoes snippets), gan2d (GAN on a 2-D mixture) or gan
    /// (DCGAN on Fashion-MNIST).
    #[arg(long, default_value = "moons", conflicts_with = "resume")]
    task: String,
    /// Objective: ce, gate, hinge-l1, hinge-l2, simclr or atom [default: atom; moons: ce only;
    /// GANs: no simclr, ce = the plain GAN].
    #[arg(long, conflicts_with = "resume")]
    method: Option<String>,
    /// Passes over the training set [default: the task's own].
    #[arg(long, conflicts_with = "resume")]
    epochs: Option<usize>,
    /// Samples per step [default: the task's own].
    #[arg(long, conflicts_with = "resume")]
    batch: Option<usize>,
    /// Adam learning rate [default: the task's own].
    #[arg(long, conflicts_with = "resume")]
    lr: Option<f64>,
    /// Weight lambda of the regulariser [default: 0.1].
    #[arg(long, conflicts_with = "resume")]
    lambda: Option<f64>,
    /// Training iterations (gan2d) [default: 3000].
    #[arg(long, conflicts_with = "resume")]
    iters: Option<usize>,
    /// The 2-D mixture (gan2d): ring8 or grid25 [default: ring8].
    #[arg(long, conflicts_with = "resume")]
    mixture: Option<String>,
    /// Hidden width of the moons MLP [default: 64].
    #[arg(long, conflicts_with = "resume")]
    hidden: Option<usize>,
    /// DCGAN width (gan): channels of the generator's 7x7 map (half at 14x14) and of the
    /// discriminator's last map [default: 32, sized for lavapipe; e.g. 128 on a GPU].
    #[arg(long, conflicts_with = "resume")]
    #[serde(default)]
    channels: Option<usize>,
    /// Seed for initialisation, shuffling and augmentation.
    #[arg(long, default_value_t = 0, conflicts_with = "resume")]
    seed: u64,
    /// Use at most this many training samples (fashion, sentiment).
    #[arg(long, conflicts_with = "resume")]
    train_limit: Option<usize>,
    /// Evaluate on at most this many test samples (fashion, sentiment).
    #[arg(long, conflicts_with = "resume")]
    test_limit: Option<usize>,
    /// Data location, as for `compare --data`.
    #[arg(long, conflicts_with = "resume")]
    data: Option<PathBuf>,
    /// Run folder [default: runs/<task>-<unix time>].
    #[arg(long, conflicts_with = "resume")]
    #[serde(skip)]
    out: Option<PathBuf>,
    /// Write into an existing, non-empty run folder.
    #[arg(long, conflicts_with = "resume")]
    #[serde(skip)]
    force: bool,
    /// Continue the run in this folder from its latest checkpoint (bit-identical to an
    /// uninterrupted run on the same adapter).
    #[arg(long)]
    #[serde(skip)]
    resume: Option<PathBuf>,
    /// Stop after this many optimizer steps in all (saving a checkpoint); `--resume` goes on.
    #[arg(long)]
    #[serde(skip)]
    max_steps: Option<usize>,
    /// Check every op's output and gradient for NaN/Inf and name the op that made one (slow).
    #[arg(long)]
    #[serde(skip)]
    detect_anomaly: bool,
    /// Forward matmuls on f16 tensor cores with f32 accumulation (weights, gradients and Adam
    /// stay f32); needs an adapter with cooperative matrices (`atomgrad info`).
    #[arg(long, conflicts_with = "resume")]
    #[serde(default)]
    mixed_precision: bool,
    /// Compile the kernels with wgpu's runtime checks (index clamps, loop counters): the default
    /// on CPU adapters; GPUs run without them, the kernels guarding their own accesses. Same
    /// results, slower; for chasing a suspected out-of-bounds kernel.
    #[arg(long)]
    #[serde(skip)]
    shader_checks: bool,
    /// Print only the final summary.
    #[arg(long)]
    #[serde(skip)]
    quiet: bool,
    /// Read options from a JSON file (keys: the long option names, e.g. a run's config.json);
    /// command-line options win.
    #[arg(long, conflicts_with = "resume")]
    #[serde(skip)]
    config: Option<PathBuf>,
}

/// "1 epoch", "3 epochs".
fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn info(dev: &Device) {
    let i = dev.info();
    println!("adapter:   {}", i.name);
    println!("backend:   {:?}", i.backend);
    println!("type:      {:?}", i.device_type);
    println!("driver:    {} {}", i.driver, i.driver_info);
    println!("class:     {:?} (selects the kernels: barrier-free ones on CPU adapters)", dev.class());
    println!("checks:    wgpu's shader runtime checks {}", if dev.shader_checks() { "on" } else { "off" });
    let l = dev.limits();
    println!("limits:");
    println!("  max_buffer_size                    {}", l.max_buffer_size);
    println!("  max_storage_buffer_binding_size    {}", l.max_storage_buffer_binding_size);
    println!("  max_storage_buffers_per_shader     {}", l.max_storage_buffers_per_shader_stage);
    println!("  max_compute_workgroup_storage_size {}", l.max_compute_workgroup_storage_size);
    println!("  max_compute_invocations_per_wg     {}", l.max_compute_invocations_per_workgroup);
    println!("  max_compute_workgroups_per_dim     {}", l.max_compute_workgroups_per_dimension);
    let f = dev.features();
    let has = |x: wgpu::Features| if f.contains(x) { "yes" } else { "no" };
    println!("optional features:");
    println!("  timestamp queries  {}", has(wgpu::Features::TIMESTAMP_QUERY));
    println!("  shader-f16         {}", has(wgpu::Features::SHADER_F16));
    println!(
        "  subgroups          {} (size {}..{})",
        has(wgpu::Features::SUBGROUP),
        i.subgroup_min_size,
        i.subgroup_max_size
    );
    println!("  coop matrix f16    {} (opt-in mixed precision)", if dev.has_coop16() { "yes" } else { "no" });
    for p in dev.coop_matrix_properties() {
        println!("    {}x{}x{} {:?} x {:?} -> {:?}", p.m_size, p.n_size, p.k_size, p.ab_type, p.ab_type, p.cr_type);
    }
}

/// The data a `train` task needs, loaded once (one value per run: its size does not matter).
#[allow(clippy::large_enum_variant)]
enum TaskData {
    None,
    Fashion(atomgrad::data::fashion::FashionData),
    Reviews(atomgrad::data::reviews::ReviewsData),
}

/// Fills every unset option of `a` with its task's default, so `config.json` holds the
/// effective configuration.
fn resolve(a: &mut TrainArgs) -> Result<()> {
    let method = a.method.get_or_insert_with(|| if a.task == "moons" { "ce".into() } else { "atom".into() });
    if a.task == "moons" && method != "ce" {
        return Err(Error::Config(format!("--method: moons trains with cross-entropy only, got {method:?}")));
    }
    Method::parse_list(std::slice::from_ref(method))?;
    let (epochs, batch, lr) = match a.task.as_str() {
        "moons" => {
            let d = MoonsConfig::default();
            (d.epochs, d.batch, d.lr)
        }
        "synthetic" => {
            let d = SyntheticConfig::default();
            (d.epochs, d.batch, d.lr)
        }
        "fashion" => {
            let d = ClassifyConfig::fashion();
            (d.epochs, d.batch, d.lr)
        }
        "sentiment" => {
            let d = ClassifyConfig::sentiment();
            (d.epochs, d.batch, d.lr)
        }
        "gan2d" => {
            let d = Gan2dConfig::default();
            a.iters.get_or_insert(d.iters);
            let mix = a.mixture.get_or_insert_with(|| "ring8".into());
            Mixture::parse_list(std::slice::from_ref(mix))?;
            (0, d.batch, d.lr)
        }
        "gan" => {
            let d = FashionGanConfig::default();
            (d.epochs, d.batch, d.lr)
        }
        t => {
            return Err(Error::Config(format!(
                "--task: unknown task {t:?} for train (available: moons, synthetic, fashion, sentiment, gan2d, gan)"
            )))
        }
    };
    if a.task == "gan2d" {
        if a.epochs.is_some() {
            return Err(Error::Config("--epochs: gan2d counts iterations, use --iters".into()));
        }
    } else {
        if a.iters.is_some() || a.mixture.is_some() {
            return Err(Error::Config("--iters and --mixture apply to gan2d only".into()));
        }
        a.epochs.get_or_insert(epochs);
    }
    a.batch.get_or_insert(batch);
    a.lr.get_or_insert(lr.to_string().parse().unwrap_or(lr as f64)); // 0.01, not 0.009999999776
    a.lambda.get_or_insert(0.1);
    if a.task == "moons" {
        a.hidden.get_or_insert(MoonsConfig::default().hidden);
    } else if a.hidden.is_some() {
        return Err(Error::Config("--hidden applies to the moons task only".into()));
    }
    if a.task == "gan" {
        a.channels.get_or_insert(FashionGanConfig::default().channels);
    } else if a.channels.is_some() {
        return Err(Error::Config("--channels applies to the gan task (DCGAN) only".into()));
    }
    Ok(())
}

fn train(dev: &Device, mut a: TrainArgs) -> Result<()> {
    let display = Display::detect(a.quiet);
    // A new run's folder is created only once its data and model are built, so bad input
    // leaves nothing behind.
    let (mut run, resume) = match a.resume.clone() {
        Some(dir) => {
            let (run, config, ck) = Run::resume(&dir, display)?;
            let saved: TrainArgs = serde_json::from_value(config)
                .map_err(|e| Error::data(dir.join("config.json"), format!("not a `train` configuration: {e}")))?;
            a = TrainArgs {
                max_steps: a.max_steps,
                detect_anomaly: a.detect_anomaly,
                quiet: a.quiet,
                shader_checks: a.shader_checks,
                ..saved
            };
            (Some(run), ck)
        }
        None => {
            resolve(&mut a)?;
            check_empty(a.out.get_or_insert_with(|| default_out(&a.task)), a.force)?;
            (None, None)
        }
    };
    dev.set_mixed_precision(a.mixed_precision)?;
    if a.shader_checks {
        dev.set_shader_checks(true);
    }
    let (epochs, batch, lr) = (a.epochs.unwrap_or(1), a.batch.unwrap_or(1), a.lr.unwrap_or(0.0) as f32);
    let lambda = a.lambda.unwrap_or(0.1) as f32;
    let method = Method::parse_list(&[a.method.clone().unwrap_or_default()])?[0];
    if a.task == "gan2d" || a.task == "gan" {
        return train_gan(dev, &a, run, resume, display, method);
    }
    let data = match a.task.as_str() {
        "fashion" => {
            use atomgrad::data::fashion::{load_fashion, FashionSource};
            TaskData::Fashion(load_fashion(a.data.clone().map_or(FashionSource::Auto, FashionSource::Dir))?)
        }
        "sentiment" => TaskData::Reviews(atomgrad::data::reviews::load_reviews(a.data.as_deref(), 0, 64)?),
        _ => TaskData::None,
    };
    let classify = |d: ClassifyConfig| ClassifyConfig {
        epochs,
        batch,
        lr,
        lambda,
        train_limit: a.train_limit,
        test_limit: a.test_limit,
        ..d
    };
    let mut meta = serde_json::Value::Null;
    let (mut learner, opts, what): (Box<dyn Learner>, FitOptions, String) = match (&data, a.task.as_str()) {
        (TaskData::Fashion(d), _) => {
            let cfg = classify(ClassifyConfig::fashion());
            let l = FashionLearner::new(dev, d, &cfg, method, a.seed)?;
            meta = checkpoint_meta("fashion", method, a.seed, &cfg, &d.description());
            (Box::new(l), cfg.fit_options(a.seed), format!("CNN on {}", d.description()))
        }
        (TaskData::Reviews(d), _) => {
            let cfg = classify(ClassifyConfig::sentiment());
            let l = SentimentLearner::new(dev, d, &cfg, method, a.seed)?;
            meta = checkpoint_meta("sentiment", method, a.seed, &cfg, &d.description());
            (Box::new(l), cfg.fit_options(a.seed), format!("Transformer on {}", d.description()))
        }
        (TaskData::None, "synthetic") => {
            let cfg = SyntheticConfig { epochs, batch, lr, lambda, ..SyntheticConfig::default() };
            let mut l = SyntheticLearner::new(dev, &cfg, method, a.seed)?;
            if method == Method::Atom {
                // terms.jsonl / terms.png: per-term diagnostics (issue 21), trajectory unchanged.
                let dir = run.as_ref().map(|r| r.dir().to_path_buf()).or_else(|| a.out.clone());
                l.log_terms(dir.as_deref());
            }
            let opts = l.fit_options();
            (Box::new(l), opts, format!("synthetic tokens, {} train / {} test", cfg.train, cfg.test))
        }
        _ => {
            let cfg = MoonsConfig {
                epochs,
                batch,
                lr,
                hidden: a.hidden.unwrap_or(64),
                seed: a.seed,
                ..MoonsConfig::default()
            };
            let l = Moons::new(dev, &cfg)?;
            (Box::new(l), cfg.fit_options(), format!("two moons, {} train / {} test", cfg.train, cfg.test))
        }
    };
    let opts = FitOptions { detect_anomaly: a.detect_anomaly, ..opts };
    let mut run = match run.take() {
        Some(r) => r,
        None => {
            let out = a.out.clone().unwrap_or_default();
            Run::create(&out, a.force, &serde_json::to_value(&a).expect("options serialise"), display)?
        }
    };
    run.add_meta(meta);
    run.say(&format!("adapter: {}", dev.describe()));
    run.say(&format!(
        "train: {} ({what}), {} with lambda {lambda}, {} of batch {batch}, Adam lr {lr}, seed {} -> {}",
        a.task,
        method.name(),
        count(epochs, "epoch"),
        a.seed,
        run.dir().display()
    ));
    if let Some(ck) = &resume {
        run.say(&format!("resuming from {} (step {})", ck.path.display(), ck.sidecar["step"]));
        let saved_on = ck.sidecar["adapter"].as_str().unwrap_or_default();
        if saved_on != dev.describe() {
            run.say(&format!(
                "note: saved on {saved_on:?}; on another adapter the run continues, but not bit-identically"
            ));
        }
    } else if a.resume.is_some() {
        run.say("no checkpoint in the folder yet: starting from the beginning");
    }
    run.set_max_steps(a.max_steps);
    let t0 = std::time::Instant::now();
    let fitted = fit(dev, learner.as_mut(), &opts, resume.as_ref(), &mut run)?;
    run.finish();
    let out = run.dir().to_path_buf();
    if !fitted.history.is_empty() {
        run.curves(&a.task, &fitted.history)?;
    }
    if fitted.stopped {
        println!("stopped after step {}; continue with: atomgrad train --resume {}", run.steps(), out.display());
        if atomgrad::run::stop_requested() {
            std::process::exit(130);
        }
        return Ok(());
    }
    let last = fitted.history.last().expect("at least one epoch");
    let best = fitted.history.iter().map(|r| r.test_accuracy).fold(f64::NAN, f64::max);
    println!(
        "{}: test accuracy {:.2}% after {} ({} steps; best {:.2}%) in {:.1} s, {:.0} samples/s; {}",
        a.task,
        100.0 * last.test_accuracy,
        count(fitted.history.len(), "epoch"),
        last.steps,
        100.0 * best,
        t0.elapsed().as_secs_f64(),
        last.samples_per_sec,
        out.display()
    );
    Ok(())
}

/// `train --task gan2d|gan`: one GAN run in a run folder (see `experiments::gan::fit_gan`).
fn train_gan(
    dev: &Device,
    a: &TrainArgs,
    run: Option<Run>,
    resume: Option<atomgrad::checkpoint::Checkpoint>,
    display: Display,
    method: Method,
) -> Result<()> {
    use atomgrad::experiments::gan::{train_dcgan, train_gan2d};
    let (batch, lr, lambda) = (a.batch.unwrap_or(2), a.lr.unwrap_or(0.0) as f32, a.lambda.unwrap_or(0.1) as f32);
    let create = |run: Option<Run>| match run {
        Some(r) => Ok(r),
        None => Run::create(
            a.out.as_deref().unwrap_or(Path::new(".")),
            a.force,
            &serde_json::to_value(a).expect("options serialise"),
            display,
        ),
    };
    let t0 = std::time::Instant::now();
    let (summary, run) = if a.task == "gan2d" {
        let d = Gan2dConfig::default();
        let iters = a.iters.unwrap_or(d.iters);
        let cfg = Gan2dConfig { iters, batch, lr, lambda, log_every: d.log_every.min(iters.div_ceil(10)).max(1), ..d };
        cfg.validate()?;
        let mixture = Mixture::parse_list(&[a.mixture.clone().unwrap_or_default()])?[0];
        let mut run = create(run)?;
        run.say(&format!("adapter: {}", dev.describe()));
        run.say(&format!(
            "train: gan2d on {}, {}, {iters} iterations of batch {batch}, lr {lr} -> {}",
            mixture.name(),
            method.name(),
            run.dir().display()
        ));
        run.set_max_steps(a.max_steps);
        run.set_detect_anomaly(a.detect_anomaly);
        (train_gan2d(dev, &cfg, mixture, method, a.seed, &mut run, resume.as_ref())?, run)
    } else {
        use atomgrad::data::fashion::{load_fashion, FashionSource};
        let data = load_fashion(a.data.clone().map_or(FashionSource::Bundled, FashionSource::Dir))?;
        let d = FashionGanConfig::default();
        let cfg = FashionGanConfig {
            epochs: a.epochs.unwrap_or(1),
            batch,
            lr,
            lambda,
            train_limit: a.train_limit,
            channels: a.channels.unwrap_or(d.channels),
            ..d
        };
        cfg.validate(data.train.len())?;
        let mut run = create(run)?;
        run.say(&format!("adapter: {}", dev.describe()));
        run.say(&format!(
            "train: DCGAN on {}, {}, {} of batch {batch}, lr {lr} -> {}",
            data.description(),
            method.name(),
            count(cfg.epochs, "epoch"),
            run.dir().display()
        ));
        run.set_max_steps(a.max_steps);
        run.set_detect_anomaly(a.detect_anomaly);
        (train_dcgan(dev, &data, &cfg, method, a.seed, &mut run, resume.as_ref())?, run)
    };
    run.finish();
    match summary {
        Some(s) => println!("{s}; {:.0} s; {}", t0.elapsed().as_secs_f64(), run.dir().display()),
        None => {
            println!(
                "stopped after iteration {}; continue with: atomgrad train --resume {}",
                run.steps(),
                run.dir().display()
            );
            if atomgrad::run::stop_requested() {
                std::process::exit(130);
            }
        }
    }
    Ok(())
}

/// A progress display over `total` runs: a bar with ETA on a terminal, plain lines otherwise,
/// nothing with `--quiet`. Returns the bar (to clear) and the callback the comparisons call.
fn run_progress(total: u64, quiet: bool) -> (ProgressBar, impl FnMut(usize, usize, &str)) {
    let display = Display::detect(quiet);
    let bar = if display == Display::Bar { ProgressBar::new(total) } else { ProgressBar::hidden() };
    bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} runs  ETA {eta}  {msg}").expect("valid template"));
    let b = bar.clone();
    let cb = move |done: usize, _: usize, what: &str| {
        b.set_position(done as u64);
        b.set_message(what.to_string());
        if display == Display::Lines {
            println!("[{done}/{total}] {what}");
        }
    };
    (bar, cb)
}

/// Creates a comparison's run folder (refusing one with results unless `--force`) and saves
/// the effective options as `config.json`.
fn compare_folder(a: &CompareArgs) -> Result<PathBuf> {
    let out = a.out.clone().unwrap_or_else(|| default_out(&a.task));
    check_empty(&out, a.force)?;
    std::fs::create_dir_all(&out).map_err(|e| Error::io(&out, e))?;
    let text = serde_json::to_string_pretty(a).expect("options serialise");
    atomgrad::plot::write_atomic(out.join("config.json"), text.as_bytes())?;
    Ok(out)
}

fn compare(dev: &Device, a: &CompareArgs) -> Result<()> {
    use atomgrad::experiments::{compare_classify, compare_synthetic, ClassifyTask};
    if a.seeds == 0 {
        return Err(Error::Config("--seeds must be at least 1".into()));
    }
    if a.channels.is_some() && a.task != "gan" {
        return Err(Error::Config("--channels applies to the gan task (DCGAN) only".into()));
    }
    if a.task == "gan2d" || a.task == "gan" {
        return compare_gans(dev, a);
    }
    let task = match a.task.as_str() {
        "synthetic" => None,
        "fashion" => Some(ClassifyTask::Fashion),
        "sentiment" => Some(ClassifyTask::Sentiment),
        t => {
            return Err(Error::Config(format!(
                "--task: unknown task {t:?} (available: synthetic, fashion, sentiment, gan2d, gan)"
            )))
        }
    };
    if a.iters.is_some() {
        return Err(Error::Config(format!("--iters applies to gan2d only; {} counts --epochs", a.task)));
    }
    let methods = Method::parse_list(&a.methods)?;
    let out = compare_folder(a)?;
    let seeds: Vec<u64> = (0..a.seeds).collect();
    if !a.quiet {
        println!("adapter: {}", dev.describe());
        println!("compare: task {}, {} methods x {} seeds -> {}", a.task, methods.len(), a.seeds, out.display());
    }
    let (bar, mut progress) = run_progress(methods.len() as u64 * a.seeds, a.quiet);
    let t0 = std::time::Instant::now();
    let md = match task {
        None => {
            let d = SyntheticConfig::default();
            let cfg = SyntheticConfig {
                epochs: a.epochs.unwrap_or(d.epochs),
                lambda: a.lambda,
                lr: a.lr.unwrap_or(d.lr),
                batch: a.batch.unwrap_or(d.batch),
                ..d
            };
            compare_synthetic(dev, &cfg, &methods, &seeds, &out, &mut progress)?
        }
        Some(t) => {
            let d = if t == ClassifyTask::Fashion { ClassifyConfig::fashion() } else { ClassifyConfig::sentiment() };
            let cfg = ClassifyConfig {
                epochs: a.epochs.unwrap_or(d.epochs),
                lambda: a.lambda,
                lr: a.lr.unwrap_or(d.lr),
                batch: a.batch.unwrap_or(d.batch),
                train_limit: a.train_limit,
                test_limit: a.test_limit,
                ..d
            };
            compare_classify(dev, t, &cfg, &methods, &seeds, a.data.as_deref(), &out, &mut progress)?
        }
    };
    bar.finish_and_clear();
    println!("\n{md}");
    println!("wrote {} in {:.0} s", out.display(), t0.elapsed().as_secs_f64());
    Ok(())
}

/// `compare --task gan2d`: every GAN method on both 2-D mixtures (`--epochs` does not apply: the
/// data is a stream, use `--iters`); `compare --task gan`: DCGAN on Fashion-MNIST (bundled data
/// unless `--data`). Methods default to GAN, gate only, hinge-L2 and atom.
fn compare_gans(dev: &Device, a: &CompareArgs) -> Result<()> {
    use atomgrad::data::fashion::{load_fashion, FashionSource};
    use atomgrad::experiments::gan::{
        compare_fashion_gan, compare_gan2d, FashionGanConfig, Gan2dConfig, Mixture, GAN_METHODS,
    };
    let methods = if a.methods.is_empty() { GAN_METHODS.to_vec() } else { Method::parse_list(&a.methods)? };
    let seeds: Vec<u64> = (0..a.seeds).collect();
    let t0 = std::time::Instant::now();
    let (md, out) = if a.task == "gan" {
        if a.iters.is_some() {
            return Err(Error::Config("--iters: the DCGAN task counts epochs, use --epochs".into()));
        }
        let src = a.data.clone().map_or(FashionSource::Bundled, FashionSource::Dir);
        let data = load_fashion(src)?;
        let d = FashionGanConfig::default();
        let cfg = FashionGanConfig {
            epochs: a.epochs.unwrap_or(d.epochs),
            batch: a.batch.unwrap_or(d.batch),
            lr: a.lr.unwrap_or(d.lr),
            lambda: a.lambda,
            train_limit: a.train_limit,
            channels: a.channels.unwrap_or(d.channels),
            ..d
        };
        let out = compare_folder(a)?;
        if !a.quiet {
            println!("adapter: {}", dev.describe());
            let what = format!("{} methods x {} seeds", methods.len(), a.seeds);
            println!("compare: task gan ({}), {what} -> {}", data.description(), out.display());
        }
        let (bar, mut progress) = run_progress(methods.len() as u64 * a.seeds, a.quiet);
        let md = compare_fashion_gan(dev, &data, &cfg, &methods, &seeds, &out, &mut progress)?;
        bar.finish_and_clear();
        (md, out)
    } else {
        if a.epochs.is_some() {
            return Err(Error::Config("--epochs: gan2d counts iterations, use --iters".into()));
        }
        let d = Gan2dConfig::default();
        let cfg = Gan2dConfig {
            iters: a.iters.unwrap_or(d.iters),
            batch: a.batch.unwrap_or(d.batch),
            lr: a.lr.unwrap_or(d.lr),
            lambda: a.lambda,
            log_every: a.iters.map_or(d.log_every, |i| d.log_every.min(i.div_ceil(10)).max(1)),
            ..d
        };
        let out = compare_folder(a)?;
        let mixtures = Mixture::ALL;
        if !a.quiet {
            println!("adapter: {}", dev.describe());
            println!(
                "compare: task gan2d, {} mixtures x {} methods x {} seeds, {} iterations each -> {}",
                mixtures.len(),
                methods.len(),
                a.seeds,
                cfg.iters,
                out.display()
            );
        }
        let (bar, mut progress) = run_progress((mixtures.len() * methods.len()) as u64 * a.seeds, a.quiet);
        let md = compare_gan2d(dev, &cfg, &mixtures, &methods, &seeds, &out, &mut progress)?;
        bar.finish_and_clear();
        (md, out)
    };
    println!("\n{md}");
    println!("wrote {} in {:.0} s", out.display(), t0.elapsed().as_secs_f64());
    Ok(())
}

/// The command line with the options of a `--config FILE` (a JSON object whose keys are long
/// option names) inserted right after the subcommand, so options typed after them win.
fn with_config_file(args: Vec<String>) -> Result<Vec<String>> {
    let Some(k) = args.iter().position(|x| x == "--config" || x.starts_with("--config=")) else {
        return Ok(args);
    };
    let file = match args[k].strip_prefix("--config=") {
        Some(f) => f.to_string(),
        None => args.get(k + 1).cloned().ok_or_else(|| Error::Config("--config needs a file".into()))?,
    };
    let text = std::fs::read_to_string(&file).map_err(|e| Error::io(&file, e))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::data(&file, format!("not valid JSON: {e}")))?;
    let obj = json.as_object().ok_or_else(|| Error::data(&file, "must be a JSON object of option names and values"))?;
    let mut opts = Vec::new();
    for (key, v) in obj {
        let flag = format!("--{}", key.replace('_', "-"));
        if flag == "--config" || flag == "--resume" {
            return Err(Error::data(&file, format!("option {key:?} cannot come from a config file")));
        }
        let value = match v {
            serde_json::Value::Null | serde_json::Value::Bool(false) => continue,
            serde_json::Value::Bool(true) => None,
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            serde_json::Value::Array(items) if items.iter().all(|i| i.is_string()) => {
                Some(items.iter().filter_map(|i| i.as_str()).collect::<Vec<_>>().join(","))
            }
            other => return Err(Error::data(&file, format!("option {key:?}: unsupported value {other}"))),
        };
        opts.push(flag);
        opts.extend(value);
    }
    // The subcommand is the first argument that is not an option.
    let sub = args.iter().skip(1).position(|x| !x.starts_with('-')).map_or(1, |i| i + 2);
    let mut out = args[..sub.min(args.len())].to_vec();
    out.extend(opts);
    out.extend(args[sub.min(args.len())..].iter().cloned());
    Ok(out)
}

fn main() {
    let argv = match with_config_file(std::env::args().collect()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    // No subcommand: the synthetic comparison (the seed's Figures 2 and 3) with its defaults.
    let cmd = Cli::parse_from(argv).cmd.unwrap_or_else(|| Cmd::Compare(Defaults::parse_from(["atomgrad"]).compare));
    let result = Device::new().and_then(|dev| match cmd {
        Cmd::Info => {
            info(&dev);
            Ok(())
        }
        Cmd::Train(a) => {
            // Only `train` stops gracefully (after the step, with a checkpoint); elsewhere Ctrl-C
            // keeps its default meaning and ends the process at once.
            atomgrad::run::install_interrupt_handler();
            train(&dev, a)
        }
        Cmd::Compare(a) => compare(&dev, &a),
        Cmd::Explain(a) => {
            let out = a.out.clone().unwrap_or_else(|| a.checkpoint.parent().map(Path::to_path_buf).unwrap_or_default());
            let (acc, file) = atomgrad::experiments::classify::explain(&dev, &a.checkpoint, a.data.as_deref(), &out)?;
            println!("test accuracy {:.2}%; importance maps: {}", 100.0 * acc, file.display());
            Ok(())
        }
        Cmd::Sample(a) => {
            let out = a.out.clone().unwrap_or_else(|| a.checkpoint.parent().map(Path::to_path_buf).unwrap_or_default());
            let file = atomgrad::experiments::gan::sample(&dev, &a.checkpoint, a.n as usize, a.seed, &out)?;
            println!("wrote {}", file.display());
            Ok(())
        }
    });
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
