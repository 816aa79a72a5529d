//! The `atomgrad` command line: `info` describes the adapter, `train` runs a training loop,
//! `compare` trains every method on a task. With no subcommand it runs the synthetic comparison.

use atomgrad::train::{train_moons, MoonsConfig};
use atomgrad::Device;
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;

#[derive(Parser)]
#[command(name = "atomgrad", version, about = "GPU compute-shader training engine with atom modeling")]
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
    /// Train a model.
    Train(TrainArgs),
    /// Train every method (cross-entropy, gate only, hinge-L1/L2, SimCLR, atom modeling) with
    /// identical budgets and seeds; print the table and write plots and JSON to a run folder.
    Compare(CompareArgs),
    /// Draw the learned importance maps of a classifier saved by `compare` (a PNG grid of test
    /// images with each feature-map cell's importance, or an HTML page shading review words).
    Explain(ExplainArgs),
}

#[derive(clap::Args)]
struct ExplainArgs {
    /// A `model-<method>.safetensors` written by `compare --task fashion|sentiment`.
    #[arg(long)]
    checkpoint: std::path::PathBuf,
    /// Data location, as for `compare --data`.
    #[arg(long)]
    data: Option<std::path::PathBuf>,
    /// Output folder (default: the checkpoint's folder).
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

#[derive(clap::Args)]
struct CompareArgs {
    /// Task: synthetic (8-token two-class data with known informative tokens), fashion (CNN on
    /// Fashion-MNIST), sentiment (Transformer on Rotten Tomatoes snippets), gan2d (GAN on a ring
    /// of 8 and a 5x5 grid of Gaussians: mode coverage), gan (DCGAN on Fashion-MNIST: sample grids).
    #[arg(long, default_value = "synthetic")]
    task: String,
    /// Fashion-MNIST directory with the four official files (default: the full set from
    /// /usr/share/datasets/fashion-mnist when installed, else the bundled 10k test files), or the
    /// reviews .csv.bz2 (default: the bundled one).
    #[arg(long)]
    data: Option<std::path::PathBuf>,
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
    out: Option<std::path::PathBuf>,
    /// Write into an existing, non-empty run folder (its files may be replaced).
    #[arg(long)]
    force: bool,
    /// Training iterations per run (gan2d; default: the task's own).
    #[arg(long)]
    iters: Option<usize>,
}

#[derive(clap::Args)]
struct TrainArgs {
    /// Task to train: moons (MLP on two interleaved moons).
    #[arg(long, default_value = "moons")]
    task: String,
    /// Passes over the training set.
    #[arg(long, default_value_t = 20)]
    epochs: usize,
    /// Samples per step.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = 1e-2)]
    lr: f32,
    /// Hidden width of the MLP.
    #[arg(long, default_value_t = 64)]
    hidden: usize,
    /// Seed for data, initialisation and shuffling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print only the final result.
    #[arg(long)]
    quiet: bool,
}

fn info(dev: &Device) {
    let i = dev.info();
    println!("adapter:   {}", i.name);
    println!("backend:   {:?}", i.backend);
    println!("type:      {:?}", i.device_type);
    println!("driver:    {} {}", i.driver, i.driver_info);
    println!("class:     {:?} (selects the matmul core)", dev.class());
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
    println!("  subgroups          {}", has(wgpu::Features::SUBGROUP));
}

fn train(dev: &Device, a: &TrainArgs) -> atomgrad::Result<()> {
    if a.task != "moons" {
        return Err(atomgrad::Error::Config(format!("--task: unknown task {:?} (available: moons)", a.task)));
    }
    let cfg = MoonsConfig {
        epochs: a.epochs,
        batch: a.batch,
        lr: a.lr,
        hidden: a.hidden,
        seed: a.seed,
        ..Default::default()
    };
    cfg.validate()?;
    if !a.quiet {
        println!("adapter: {}", dev.describe());
        println!(
            "task: moons MLP 2-{h}-{h}-2, {} train / {} test samples, Adam lr {}",
            cfg.train,
            cfg.test,
            cfg.lr,
            h = cfg.hidden
        );
    }
    let total = (cfg.train / cfg.batch * cfg.epochs) as u64;
    let tty = std::io::stderr().is_terminal() && !a.quiet;
    let bar = if tty { ProgressBar::new(total) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {per_sec}  ETA {eta}  {msg}")
            .expect("valid template"),
    );
    let t0 = std::time::Instant::now();
    let run = train_moons(
        dev,
        &cfg,
        |s| bar.set_position(s as u64),
        |r| {
            let line =
                format!("epoch {:>3}  loss {:.4}  test acc {:.2}%", r.epoch + 1, r.train_loss, 100.0 * r.test_accuracy);
            if tty {
                bar.set_message(line);
            } else if !a.quiet {
                println!("{line}");
            }
        },
    )?;
    bar.finish_and_clear();
    let last = run.history.last().expect("at least one epoch");
    let stats = dev.stats();
    println!(
        "moons: test accuracy {:.2}% after {} epochs ({} steps) in {:.1} s; {} submits, {} buffers allocated",
        100.0 * last.test_accuracy,
        cfg.epochs,
        last.steps,
        t0.elapsed().as_secs_f64(),
        stats.submits,
        stats.buffers_created
    );
    Ok(())
}

/// Refuses to write into a run folder that already holds results, unless `--force`.
fn check_out(out: &std::path::Path, force: bool) -> atomgrad::Result<()> {
    if !force && std::fs::read_dir(out).is_ok_and(|mut d| d.next().is_some()) {
        return Err(atomgrad::Error::Config(format!(
            "--out: run folder {} already holds results; choose another folder or pass --force",
            out.display()
        )));
    }
    Ok(())
}

fn compare(dev: &Device, a: &CompareArgs) -> atomgrad::Result<()> {
    use atomgrad::experiments::{
        classify::ClassifyConfig, compare_classify, compare_synthetic, default_out, synthetic::SyntheticConfig,
        ClassifyTask, Method,
    };
    if a.task == "gan2d" || a.task == "gan" {
        return compare_gan2d_task(dev, a);
    }
    let task = match a.task.as_str() {
        "synthetic" => None,
        "fashion" => Some(ClassifyTask::Fashion),
        "sentiment" => Some(ClassifyTask::Sentiment),
        t => {
            return Err(atomgrad::Error::Config(format!(
                "--task: unknown task {t:?} (available: synthetic, fashion, sentiment, gan2d, gan)"
            )))
        }
    };
    if a.seeds == 0 {
        return Err(atomgrad::Error::Config("--seeds must be at least 1".into()));
    }
    let methods = Method::parse_list(&a.methods)?;
    let out = a.out.clone().unwrap_or_else(|| default_out(&a.task));
    check_out(&out, a.force)?;
    let seeds: Vec<u64> = (0..a.seeds).collect();
    println!("adapter: {}", dev.describe());
    println!("compare: task {}, {} methods x {} seeds -> {}", a.task, methods.len(), a.seeds, out.display());
    let tty = std::io::stderr().is_terminal();
    let total = (methods.len() as u64) * a.seeds;
    let bar = if tty { ProgressBar::new(total) } else { ProgressBar::hidden() };
    bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} runs  ETA {eta}  {msg}").expect("valid template"));
    let mut progress = |done: usize, _: usize, what: &str| {
        bar.set_position(done as u64);
        bar.set_message(what.to_string());
        if !tty {
            println!("[{done}/{total}] {what}");
        }
    };
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

// ---- gan2d (src/experiments/gan.rs) ----

/// `compare --task gan2d`: every GAN method on both 2-D mixtures (`--epochs` does not apply: the
/// data is a stream, use `--iters`); `compare --task gan`: DCGAN on Fashion-MNIST (bundled data
/// unless `--data`). Methods default to GAN, gate only, hinge-L2 and atom.
fn compare_gan2d_task(dev: &Device, a: &CompareArgs) -> atomgrad::Result<()> {
    use atomgrad::data::fashion::{load_fashion, FashionSource};
    use atomgrad::experiments::gan::{
        compare_fashion_gan, compare_gan2d, FashionGanConfig, Gan2dConfig, Mixture, GAN_METHODS,
    };
    use atomgrad::experiments::{default_out, Method};
    if a.task == "gan" {
        if a.iters.is_some() {
            return Err(atomgrad::Error::Config("--iters: the DCGAN task counts epochs, use --epochs".into()));
        }
        if a.seeds == 0 {
            return Err(atomgrad::Error::Config("--seeds must be at least 1".into()));
        }
        let methods = if a.methods.is_empty() { GAN_METHODS.to_vec() } else { Method::parse_list(&a.methods)? };
        let src = a.data.as_deref().map_or(FashionSource::Bundled, |d| FashionSource::Dir(d.to_path_buf()));
        let data = load_fashion(src)?;
        let d = FashionGanConfig::default();
        let cfg = FashionGanConfig {
            epochs: a.epochs.unwrap_or(d.epochs),
            batch: a.batch.unwrap_or(d.batch),
            lr: a.lr.unwrap_or(d.lr),
            lambda: a.lambda,
            train_limit: a.train_limit,
            ..d
        };
        let out = a.out.clone().unwrap_or_else(|| default_out(&a.task));
        let seeds: Vec<u64> = (0..a.seeds).collect();
        println!("adapter: {}", dev.describe());
        println!(
            "compare: task gan ({}), {} methods x {} seeds -> {}",
            data.description(),
            methods.len(),
            a.seeds,
            out.display()
        );
        let t0 = std::time::Instant::now();
        let total = methods.len() as u64 * a.seeds;
        let mut progress = |done: usize, _: usize, what: &str| println!("[{done}/{total}] {what}");
        let md = compare_fashion_gan(dev, &data, &cfg, &methods, &seeds, &out, &mut progress)?;
        println!("\n{md}");
        println!("wrote {} in {:.0} s", out.display(), t0.elapsed().as_secs_f64());
        return Ok(());
    }
    if a.epochs.is_some() {
        return Err(atomgrad::Error::Config("--epochs: gan2d counts iterations, use --iters".into()));
    }
    if a.seeds == 0 {
        return Err(atomgrad::Error::Config("--seeds must be at least 1".into()));
    }
    let methods = if a.methods.is_empty() { GAN_METHODS.to_vec() } else { Method::parse_list(&a.methods)? };
    let d = Gan2dConfig::default();
    let cfg = Gan2dConfig {
        iters: a.iters.unwrap_or(d.iters),
        batch: a.batch.unwrap_or(d.batch),
        lr: a.lr.unwrap_or(d.lr),
        lambda: a.lambda,
        log_every: a.iters.map_or(d.log_every, |i| d.log_every.min(i.div_ceil(10)).max(1)),
        ..d
    };
    let out = a.out.clone().unwrap_or_else(|| default_out(&a.task));
    check_out(&out, a.force)?;
    let seeds: Vec<u64> = (0..a.seeds).collect();
    let mixtures = Mixture::ALL;
    let total = (mixtures.len() * methods.len()) as u64 * a.seeds;
    println!("adapter: {}", dev.describe());
    println!(
        "compare: task gan2d, {} mixtures x {} methods x {} seeds, {} iterations each -> {}",
        mixtures.len(),
        methods.len(),
        a.seeds,
        cfg.iters,
        out.display()
    );
    let tty = std::io::stderr().is_terminal();
    let bar = if tty { ProgressBar::new(total) } else { ProgressBar::hidden() };
    bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} runs  ETA {eta}  {msg}").expect("valid template"));
    let mut progress = |done: usize, _: usize, what: &str| {
        bar.set_position(done as u64);
        bar.set_message(what.to_string());
        if !tty {
            println!("[{done}/{total}] {what}");
        }
    };
    let t0 = std::time::Instant::now();
    let md = compare_gan2d(dev, &cfg, &mixtures, &methods, &seeds, &out, &mut progress)?;
    bar.finish_and_clear();
    println!("\n{md}");
    println!("wrote {} in {:.0} s", out.display(), t0.elapsed().as_secs_f64());
    Ok(())
}

fn main() {
    // No subcommand: the synthetic comparison (the seed's Figures 2 and 3) with its defaults.
    let cmd = Cli::parse().cmd.unwrap_or_else(|| Cmd::Compare(Defaults::parse_from(["atomgrad"]).compare));
    let result = Device::new().and_then(|dev| match cmd {
        Cmd::Info => {
            info(&dev);
            Ok(())
        }
        Cmd::Train(a) => train(&dev, &a),
        Cmd::Compare(a) => compare(&dev, &a),
        Cmd::Explain(a) => {
            let out =
                a.out.clone().unwrap_or_else(|| a.checkpoint.parent().map(|p| p.to_path_buf()).unwrap_or_default());
            let (acc, file) = atomgrad::experiments::classify::explain(&dev, &a.checkpoint, a.data.as_deref(), &out)?;
            println!("test accuracy {:.2}%; importance maps: {}", 100.0 * acc, file.display());
            Ok(())
        }
    });
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
