//! The `atomgrad` command line: `info` describes the adapter, `train` runs one training run with
//! checkpoints and resume, `compare` trains every method on a task under the experiment protocol,
//! `explain` and `sample` draw from saved models. With no subcommand it runs the synthetic
//! comparison. Tasks, methods and their defaults come from the registry
//! (`atomgrad::experiments::task`); this file only parses and prints.
//!
//! Every option can also come from a JSON file (`--config FILE`, keys are the long option names;
//! options given on the command line win), and `train` and `compare` save their effective
//! options as the folder's `config.json`, which `--config` accepts back.

use atomgrad::experiments::classify::Arch;
use atomgrad::experiments::compare::{record_provenance, run_comparison, CompareOptions};
use atomgrad::experiments::gan::Mixture;
use atomgrad::experiments::task::{load_data, train_run, Overrides, RunContext, RunOptions};
use atomgrad::experiments::{default_out, Method, Task};
use atomgrad::fsio;
use atomgrad::run::{check_empty, lock_folder, prepare_folder, stop_requested, Display, Run};
use atomgrad::{Device, Error, Result};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::path::{Path, PathBuf};

/// `println!` that never panics on a closed pipe or a full disk (see `run::print_line`).
macro_rules! say {
    ($($t:tt)*) => { atomgrad::run::print_line(&format!($($t)*)) };
}
/// `eprintln!` likewise.
macro_rules! warn {
    ($($t:tt)*) => { atomgrad::run::eprint_line(&format!($($t)*)) };
}

#[derive(Parser)]
#[command(name = "atomgrad", version, about = "GPU compute-shader training engine with atom modeling")]
#[command(args_override_self = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

/// Seeds of the bare `atomgrad` run (it must finish in about a minute on lavapipe; `compare`
/// itself defaults to 5).
const BARE_RUN_SEEDS: u64 = 3;

#[derive(Subcommand)]
enum Cmd {
    /// Print the adapter, backend, driver, limits and optional features in use.
    Info,
    /// Train one model (one task, method and seed) into a run folder: config.json,
    /// metrics.jsonl (validation and test accuracy per epoch), checkpoints (the last 2 and the
    /// best by validation), curves, result.json (the best validation epoch); resumable.
    Train(TrainArgs),
    /// Train every method (cross-entropy, gate only, hinge-L1/L2, SimCLR, atom modeling) with the
    /// same budget and seeds, each run in its own folder; pick each run's epoch and each method's
    /// lambda on validation; report test scores with the paired 95% interval against
    /// cross-entropy; resumable (--resume).
    Compare(CompareArgs),
    /// Draw the learned importance maps of a classifier checkpoint (a run's
    /// checkpoints/best.json): a PNG grid of test images with each feature-map cell's
    /// importance, or an HTML page shading review words.
    Explain(ExplainArgs),
    /// Write a PNG grid of images from a DCGAN generator (a `gan` run's generator.safetensors).
    Sample(SampleArgs),
    /// Write a real-data task's splits as atomgrad sees them (Fashion-MNIST: indices into the
    /// official files; reviews: token ids), for training the same samples in another framework.
    Data(DataArgs),
}

#[derive(clap::Args)]
struct DataArgs {
    /// fashion or sentiment.
    #[arg(long, value_parser = parse_task)]
    task: Task,
    /// Data location, as for `train --data`.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args)]
struct ExplainArgs {
    /// A checkpoint of `train` or `compare` (e.g. RUN/checkpoints/best.json).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Data location, replacing the one the run used (as for `train --data`).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Output folder (default: the checkpoint's folder).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(clap::Args)]
struct SampleArgs {
    /// A `generator.safetensors` written by a `gan` run (RUN/ or COMPARISON/<method>/seed<k>/).
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

fn parse_task(s: &str) -> std::result::Result<Task, String> {
    Task::parse(s).map_err(|e| e.to_string())
}
fn parse_method(s: &str) -> std::result::Result<Method, String> {
    Method::parse(s).map_err(|e| e.to_string())
}
fn parse_mixture(s: &str) -> std::result::Result<Mixture, String> {
    Mixture::parse(s).map_err(|e| e.to_string())
}
fn parse_arch(s: &str) -> std::result::Result<Arch, String> {
    Arch::parse(s).map_err(|e| e.to_string())
}

/// The options over a task's defaults that `train` and `compare` share (see the defaults table
/// at the end of `--help`). `--resume` reads them from the folder, so none goes with it.
#[derive(clap::Args, Clone, Default)]
struct TaskArgs {
    /// Passes over the training set.
    #[arg(long, conflicts_with = "resume")]
    epochs: Option<usize>,
    /// Training iterations (gan2d).
    #[arg(long, conflicts_with = "resume")]
    iters: Option<usize>,
    /// Samples per step.
    #[arg(long, conflicts_with = "resume")]
    batch: Option<usize>,
    /// Adam learning rate.
    #[arg(long, conflicts_with = "resume")]
    lr: Option<f64>,
    /// Fashion-MNIST directory with the four official files (default: the full set from
    /// /usr/share/datasets/fashion-mnist when installed, else the bundled 10k test files), the
    /// reviews .csv.bz2 (default: the bundled one); your images (images: a folder with one
    /// subfolder of PNG/JPEG files per class) or texts (text: a CSV with `text` and `label`
    /// columns, optionally `split`).
    #[arg(long, conflicts_with = "resume")]
    data: Option<PathBuf>,
    /// Use at most this many training samples (fashion, sentiment, gan).
    #[arg(long, conflicts_with = "resume")]
    train_limit: Option<usize>,
    /// Evaluate on at most this many validation and this many test samples (fashion, sentiment).
    #[arg(long, conflicts_with = "resume")]
    test_limit: Option<usize>,
    /// Hidden width of the moons MLP.
    #[arg(long, conflicts_with = "resume")]
    hidden: Option<usize>,
    /// DCGAN width (gan): channels of the generator's 7x7 map (half at 14x14) and of the
    /// discriminator's last map (e.g. 128 on a GPU).
    #[arg(long, conflicts_with = "resume")]
    channels: Option<usize>,
    /// Width of the synthetic model's latent (synthetic, planted; 2 is plotted as it is, wider
    /// latents by their first two principal components).
    #[arg(long, conflicts_with = "resume")]
    latent_dim: Option<usize>,
    /// The network (fashion: small or resnet; sentiment: small or base), each with its own recipe.
    #[arg(long, value_parser = parse_arch, conflicts_with = "resume")]
    model: Option<Arch>,
    /// Side the images are resized and centre-cropped to (images; a multiple of 4).
    #[arg(long, conflicts_with = "resume")]
    image_size: Option<usize>,
    /// Read the images in grayscale (images; by default grayscale only when every image is).
    #[arg(long, conflicts_with = "resume")]
    grayscale: bool,
    /// The 2-D mixture (gan2d): ring8 or grid25.
    #[arg(long, value_parser = parse_mixture, conflicts_with = "resume")]
    mixture: Option<Mixture>,
    /// Forward matmuls on f16 tensor cores with f32 accumulation (weights, gradients and Adam
    /// stay f32); needs an adapter with cooperative matrices (`atomgrad info`).
    #[arg(long, conflicts_with = "resume")]
    mixed_precision: bool,
}

impl TaskArgs {
    fn overrides(&self, lambda: Option<f64>) -> Overrides {
        Overrides {
            epochs: self.epochs,
            iters: self.iters,
            batch: self.batch,
            lr: self.lr,
            lambda,
            data: self.data.clone(),
            train_limit: self.train_limit,
            test_limit: self.test_limit,
            hidden: self.hidden,
            channels: self.channels,
            mixture: self.mixture,
            latent_dim: self.latent_dim,
            model: self.model,
            image_size: self.image_size,
            grayscale: self.grayscale,
            mixed_precision: self.mixed_precision,
        }
    }
}

#[derive(clap::Args)]
struct CompareArgs {
    /// Task (see the table below): synthetic, planted, fashion, sentiment, gan2d, gan, images or
    /// text.
    #[arg(long, default_value_t = Task::Synthetic, value_parser = parse_task, conflicts_with = "resume")]
    task: Task,
    /// Methods, comma-separated (ce, gate, hinge-l1, hinge-l2, simclr, atom) [default: the task's].
    #[arg(long, value_delimiter = ',', value_parser = parse_method, conflicts_with = "resume")]
    methods: Vec<Method>,
    /// Seeds per method and lambda (0, 1, ..).
    #[arg(long, default_value_t = 5, conflicts_with = "resume")]
    seeds: u64,
    /// Lambda grid, comma-separated (e.g. 0.01,0.03,0.1,0.3): each method lambda weighs runs
    /// every value and keeps the one with the best mean validation score [default: the task's
    /// lambda].
    #[arg(long, alias = "lambda", value_delimiter = ',', conflicts_with = "resume")]
    lambdas: Vec<f64>,
    #[command(flatten)]
    task_args: TaskArgs,
    /// Comparison folder [default: runs/<task>-<unix time>-<pid>].
    #[arg(long, conflicts_with = "resume")]
    out: Option<PathBuf>,
    /// Write into an existing, non-empty folder.
    #[arg(long, conflicts_with = "resume")]
    force: bool,
    /// Continue the comparison in this folder: finished runs are read back, an interrupted one
    /// resumes from its checkpoint, the rest are trained.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Print only the final table.
    #[arg(long)]
    quiet: bool,
    /// Read options from a JSON file (keys: the long option names, e.g. a comparison's
    /// config.json); command-line options win.
    #[arg(long, conflicts_with = "resume")]
    config: Option<PathBuf>,
}

/// `train`'s options. Those that define the run are saved to `config.json`; `--resume` reads
/// them back, so they cannot be given with it.
#[derive(clap::Args)]
struct TrainArgs {
    /// Task (see the table below): moons, synthetic, planted, fashion, sentiment, gan2d, gan,
    /// images or text.
    #[arg(long, default_value_t = Task::Moons, value_parser = parse_task, conflicts_with = "resume")]
    task: Task,
    /// Objective: ce, gate, hinge-l1, hinge-l2, simclr or atom [default: atom; moons: ce].
    #[arg(long, value_parser = parse_method, conflicts_with = "resume")]
    method: Option<Method>,
    /// Weight lambda of the regulariser (hinge, SimCLR, atom).
    #[arg(long, conflicts_with = "resume")]
    lambda: Option<f64>,
    /// Seed for initialisation, shuffling and augmentation.
    #[arg(long, default_value_t = 0, conflicts_with = "resume")]
    seed: u64,
    #[command(flatten)]
    task_args: TaskArgs,
    /// Run folder [default: runs/<task>-<unix time>-<pid>].
    #[arg(long, conflicts_with = "resume")]
    out: Option<PathBuf>,
    /// Write into an existing, non-empty run folder.
    #[arg(long, conflicts_with = "resume")]
    force: bool,
    /// Continue the run in this folder from its latest checkpoint (bit-identical to an
    /// uninterrupted run on the same adapter).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Stop after this many optimizer steps in all (saving a checkpoint); `--resume` goes on.
    #[arg(long)]
    max_steps: Option<usize>,
    /// Check every op's output and gradient for NaN/Inf and name the op that made one (slow).
    #[arg(long)]
    detect_anomaly: bool,
    /// Compile the kernels with wgpu's runtime checks (index clamps, loop counters): the default
    /// on CPU adapters; GPUs run without them, the kernels guarding their own accesses. Same
    /// results, slower; for chasing a suspected out-of-bounds kernel.
    #[arg(long)]
    shader_checks: bool,
    /// Print only the final summary.
    #[arg(long)]
    quiet: bool,
    /// Read options from a JSON file (keys: the long option names, e.g. a run's config.json);
    /// command-line options win.
    #[arg(long, conflicts_with = "resume")]
    config: Option<PathBuf>,
}

fn info(dev: &Device) {
    let i = dev.info();
    say!("adapter:   {}", i.name);
    say!("backend:   {:?}", i.backend);
    say!("type:      {:?}", i.device_type);
    say!("driver:    {} {}", i.driver, i.driver_info);
    say!("class:     {:?} (selects the kernels: barrier-free ones on CPU adapters)", dev.class());
    say!("checks:    wgpu's shader runtime checks {}", if dev.shader_checks() { "on" } else { "off" });
    let l = dev.limits();
    say!("limits:");
    say!("  max_buffer_size                    {}", l.max_buffer_size);
    say!("  max_storage_buffer_binding_size    {}", l.max_storage_buffer_binding_size);
    say!("  max_storage_buffers_per_shader     {}", l.max_storage_buffers_per_shader_stage);
    say!("  max_compute_workgroup_storage_size {}", l.max_compute_workgroup_storage_size);
    say!("  max_compute_invocations_per_wg     {}", l.max_compute_invocations_per_workgroup);
    say!("  max_compute_workgroups_per_dim     {}", l.max_compute_workgroups_per_dimension);
    let f = dev.features();
    let has = |x: wgpu::Features| if f.contains(x) { "yes" } else { "no" };
    say!("optional features:");
    say!("  timestamp queries  {}", has(wgpu::Features::TIMESTAMP_QUERY));
    say!("  shader-f16         {}", has(wgpu::Features::SHADER_F16));
    say!(
        "  subgroups          {} (size {}..{})",
        has(wgpu::Features::SUBGROUP),
        i.subgroup_min_size,
        i.subgroup_max_size
    );
    say!("  coop matrix f16    {} (opt-in mixed precision)", if dev.has_coop16() { "yes" } else { "no" });
    for p in dev.coop_matrix_properties() {
        say!("    {}x{}x{} {:?} x {:?} -> {:?}", p.m_size, p.n_size, p.k_size, p.ab_type, p.ab_type, p.cr_type);
    }
}

fn train(dev: &Device, a: TrainArgs) -> Result<()> {
    let display = Display::detect(a.quiet);
    let (opts, run, resume) = match &a.resume {
        Some(dir) => {
            // The folder's configuration is read before anything is written into it.
            let path = dir.join("config.json");
            let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
            let opts: RunOptions = serde_json::from_str(&text).map_err(|e| {
                Error::data(
                    &path,
                    format!("not a `train` run's configuration ({e}); a comparison resumes with `compare --resume`"),
                )
            })?;
            let (run, _, ck) = Run::resume(dir, display)?;
            (opts, Some(run), ck)
        }
        None => {
            let method = a.method.unwrap_or(if a.task == Task::Moons { Method::Ce } else { Method::Atom });
            let opts = a.task.resolve(method, a.seed, &a.task_args.overrides(a.lambda))?;
            (opts, None, None)
        }
    };
    let out = a.out.clone().unwrap_or_else(|| default_out(opts.task.name()));
    if run.is_none() {
        check_empty(&out, a.force)?;
    }
    dev.set_mixed_precision(opts.mixed_precision)?;
    if a.shader_checks {
        dev.set_shader_checks(true);
    }
    // Data and options are checked before the folder is created, so bad input leaves nothing.
    let data = load_data(&opts)?;
    opts.validate(&data)?;
    let mut run = match run {
        Some(r) => r,
        None => Run::create(&out, a.force, &serde_json::to_value(&opts).expect("options serialise"), display)?,
    };
    run.say(&format!("adapter: {}", dev.describe()));
    run.say(&format!("train: {} on {} -> {}", opts.label(), data.description(), run.dir().display()));
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
    let ctx = RunContext { detect_anomaly: a.detect_anomaly, shared: None, terms_per_epoch: 10 };
    let t0 = std::time::Instant::now();
    let record = train_run(dev, &opts, &data, &mut run, resume.as_ref(), &ctx)?;
    run.finish();
    let dir = run.dir().display();
    let Some(r) = record else {
        say!("stopped after step {}; continue with: atomgrad train --resume {dir}", run.steps());
        if stop_requested() {
            std::process::exit(130);
        }
        return Ok(());
    };
    let s = opts.task.score();
    let what = if opts.task.kind() == atomgrad::experiments::task::Kind::Gan { "log interval" } else { "epoch" };
    say!(
        "{}: test {} {:.*}{} at the best validation {what} {} of {} (validation {:.*}); {} steps in {:.1} s; {dir}",
        opts.label(),
        s.name,
        s.digits,
        r.test * s.scale,
        if s.scale == 100.0 { "%" } else { "" },
        r.selected_epoch(),
        r.history.len(),
        s.digits,
        r.val * s.scale,
        r.history.last().map_or(0, |p| p.step),
        t0.elapsed().as_secs_f64(),
    );
    Ok(())
}

fn compare(dev: &Device, a: CompareArgs) -> Result<()> {
    let display = Display::detect(a.quiet);
    let (c, out) = match &a.resume {
        Some(dir) => (fsio::read_json::<CompareOptions>(dir.join("config.json"))?, dir.clone()),
        None => {
            let c = CompareOptions::new(a.task, a.methods, a.seeds, a.lambdas, a.task_args.overrides(None))?;
            let out = a.out.clone().unwrap_or_else(|| default_out(c.task.name()));
            check_empty(&out, a.force)?;
            (c, out)
        }
    };
    // Every run's options and the data are checked before the folder is created.
    let plan = c.plan()?;
    let data = load_data(&plan[0].0)?;
    for (o, _) in &plan {
        o.validate(&data)?;
    }
    dev.set_mixed_precision(c.options.mixed_precision)?;
    let _lock = if a.resume.is_none() {
        let lock = prepare_folder(&out, a.force)?;
        fsio::write_json(out.join("config.json"), &c)?;
        record_provenance(&out, "created", dev)?;
        lock
    } else {
        let lock = lock_folder(&out)?;
        record_provenance(&out, "resumed", dev)?;
        lock
    };
    if !a.quiet {
        say!("adapter: {}", dev.describe());
        say!("data: {}", data.description());
        say!(
            "compare: task {}, {} methods, {} runs ({} seeds{}) -> {}",
            c.task.name(),
            c.methods.len(),
            plan.len(),
            c.seeds,
            if c.lambdas.len() > 1 { format!(", lambdas {:?}", c.lambdas) } else { String::new() },
            out.display()
        );
    }
    atomgrad::run::install_interrupt_handler();
    let t0 = std::time::Instant::now();
    match run_comparison(dev, &c, &data, &out, display)? {
        Some(md) => {
            say!("\n{md}");
            say!("wrote {} in {:.0} s", out.display(), t0.elapsed().as_secs_f64());
        }
        None => {
            say!("stopped; continue with: atomgrad compare --resume {}", out.display());
            std::process::exit(130);
        }
    }
    Ok(())
}

/// The command line with the options of a `--config FILE` (a JSON object whose keys are long
/// option names of the subcommand) inserted right after the subcommand, so options typed after
/// them win. Keys that are not options of the subcommand are named with the file.
fn with_config_file(args: Vec<String>, command: &clap::Command) -> Result<Vec<String>> {
    let Some(k) = args.iter().position(|x| x == "--config" || x.starts_with("--config=")) else {
        return Ok(args);
    };
    let file = match args[k].strip_prefix("--config=") {
        Some(f) => f.to_string(),
        None => args.get(k + 1).cloned().ok_or_else(|| Error::Config("--config needs a file".into()))?,
    };
    // The subcommand is the first argument that is not an option.
    let sub = args.iter().skip(1).position(|x| !x.starts_with('-')).map_or(1, |i| i + 2);
    let name = args.get(sub - 1).cloned().unwrap_or_default();
    let longs: Vec<String> = command
        .find_subcommand(&name)
        .map(|c| {
            c.get_arguments()
                .flat_map(|a| a.get_long().into_iter().chain(a.get_all_aliases().unwrap_or_default()))
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    let text = std::fs::read_to_string(&file).map_err(|e| Error::io(&file, e))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::data(&file, format!("not valid JSON: {e}")))?;
    let obj = json.as_object().ok_or_else(|| Error::data(&file, "must be a JSON object of option names and values"))?;
    let mut opts = Vec::new();
    for (key, v) in obj {
        let long = key.replace('_', "-");
        if ["config", "resume", "help", "version"].contains(&long.as_str()) {
            return Err(Error::data(&file, format!("option {key:?} cannot come from a config file")));
        }
        if !longs.contains(&long) {
            return Err(Error::data(&file, format!("{key:?} is not an option of `atomgrad {name}`")));
        }
        let scalar = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
        let value = match v {
            serde_json::Value::Null | serde_json::Value::Bool(false) => continue,
            serde_json::Value::Bool(true) => None,
            serde_json::Value::Array(items) if items.iter().all(|i| scalar(i).is_some()) => {
                Some(items.iter().filter_map(scalar).collect::<Vec<_>>().join(","))
            }
            other => Some(
                scalar(other)
                    .ok_or_else(|| Error::data(&file, format!("option {key:?}: unsupported value {other}")))?,
            ),
        };
        // `--lr=-0.01`, not `--lr -0.01`: a value may start with a minus sign.
        opts.push(match value {
            Some(v) => format!("--{long}={v}"),
            None => format!("--{long}"),
        });
    }
    let mut out = args[..sub.min(args.len())].to_vec();
    out.extend(opts);
    out.extend(args[sub.min(args.len())..].iter().cloned());
    Ok(out)
}

fn main() {
    let mut argv = Vec::new();
    for (i, a) in std::env::args_os().enumerate() {
        match a.into_string() {
            Ok(s) => argv.push(s),
            Err(a) => {
                warn!("error: argument {i} is not valid UTF-8: {}", a.to_string_lossy());
                std::process::exit(2);
            }
        }
    }
    let table = Task::defaults_help();
    let command = Cli::command()
        .mut_subcommand("train", |c| c.after_help(table.clone()))
        .mut_subcommand("compare", |c| c.after_help(table.clone()));
    let argv = match with_config_file(argv, &command) {
        Ok(a) => a,
        Err(e) => {
            warn!("error: {e}");
            std::process::exit(2);
        }
    };
    let cli = match command.try_get_matches_from(argv).and_then(|m| Cli::from_arg_matches(&m)) {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                e.exit();
            }
            // One line: clap's first line names the argument and what is wrong with it.
            let text = e.to_string();
            warn!("{} (see --help)", text.lines().next().unwrap_or("error: bad arguments").trim_end());
            std::process::exit(2);
        }
    };
    // No subcommand: the synthetic comparison (the seed's Figures 2 and 3) with its defaults.
    let cmd = cli.cmd.unwrap_or_else(|| {
        let mut c = Cli::parse_from(["atomgrad", "compare"]).cmd.expect("a subcommand");
        if let Cmd::Compare(a) = &mut c {
            a.seeds = BARE_RUN_SEEDS;
        }
        c
    });
    let result = Device::new().and_then(|dev| match cmd {
        Cmd::Info => {
            info(&dev);
            Ok(())
        }
        Cmd::Train(a) => {
            // Ctrl-C stops after the step with a checkpoint; a second one exits at once.
            atomgrad::run::install_interrupt_handler();
            train(&dev, a)
        }
        Cmd::Compare(a) => compare(&dev, a),
        Cmd::Explain(a) => {
            let out = a.out.clone().unwrap_or_else(|| a.checkpoint.parent().map(Path::to_path_buf).unwrap_or_default());
            let (acc, report) = atomgrad::experiments::task::explain(&dev, &a.checkpoint, a.data.as_deref(), &out)?;
            let drawn = ["importance.png", "importance.html", "latent.png"]
                .iter()
                .map(|f| out.join(f))
                .filter(|p| p.is_file())
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>();
            say!("test accuracy {:.2}%; {:?}; wrote {}", 100.0 * acc, report.metrics, drawn.join(", "));
            Ok(())
        }
        Cmd::Data(a) => {
            let method = a.task.info().methods[0];
            let o = Overrides { data: a.data.clone(), ..Overrides::default() };
            let opts = a.task.resolve(method, 0, &o)?;
            let file = atomgrad::experiments::task::export_data(&load_data(&opts)?, &a.out)?;
            say!("wrote {}", file.display());
            Ok(())
        }
        Cmd::Sample(a) => {
            let out = a.out.clone().unwrap_or_else(|| a.checkpoint.parent().map(Path::to_path_buf).unwrap_or_default());
            let file = atomgrad::experiments::gan::sample(&dev, &a.checkpoint, a.n as usize, a.seed, &out)?;
            say!("wrote {}", file.display());
            Ok(())
        }
    });
    if let Err(e) = result {
        warn!("error: {e}");
        std::process::exit(1);
    }
}
