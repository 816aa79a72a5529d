//! The `atomgrad` command line: `info` describes the adapter, `train` runs a training loop.
//! With no subcommand it trains the default task.

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

/// `train`'s options at their defaults.
#[derive(Parser)]
struct Defaults {
    #[command(flatten)]
    train: TrainArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print the adapter, backend, driver, limits and optional features in use.
    Info,
    /// Train a model.
    Train(TrainArgs),
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

fn main() {
    // No subcommand: train the default task with its default options.
    let cmd = Cli::parse().cmd.unwrap_or_else(|| Cmd::Train(Defaults::parse_from(["atomgrad"]).train));
    let result = Device::new().and_then(|dev| match cmd {
        Cmd::Info => {
            info(&dev);
            Ok(())
        }
        Cmd::Train(a) => train(&dev, &a),
    });
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
