//! The 2-D mode-coverage benchmark ([`compare_gan2d`]): a ring of 8 Gaussians (radius 2, std 0.02) and a 5x5 grid of
//! 25 (spacing 2, centred, std 0.05); from 10,000 generated points, [`mode_stats`] counts the modes
//! covered, the share of high-quality points and the KL divergence of the per-mode histogram from
//! uniform.

use crate::atom::AtomConfig;
use crate::checkpoint;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::experiments::{fmt_ms, mean_std, Method, Progress};
use crate::nn::gan::{MlpDiscriminator, MlpGenerator};
use crate::nn::sub_seed;
use crate::plot::{self, write_atomic};
use crate::rng::Rng;
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};
use std::path::Path;

use super::*;

/// A 2-D Gaussian mixture with equal weights and isotropic components.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mixture {
    /// 8 components evenly on a circle of radius 2, std 0.02.
    Ring8,
    /// 25 components on a 5x5 grid with spacing 2 centred on the origin, std 0.05.
    Grid25,
}

impl Mixture {
    pub const ALL: [Mixture; 2] = [Mixture::Ring8, Mixture::Grid25];
    pub fn slug(self) -> &'static str {
        match self {
            Mixture::Ring8 => "ring8",
            Mixture::Grid25 => "grid25",
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Mixture::Ring8 => "ring of 8",
            Mixture::Grid25 => "5x5 grid",
        }
    }
    /// The component means.
    pub fn centres(self) -> Vec<(f64, f64)> {
        match self {
            Mixture::Ring8 => (0..8)
                .map(|k| {
                    let a = 2.0 * std::f64::consts::PI * k as f64 / 8.0;
                    (2.0 * a.cos(), 2.0 * a.sin())
                })
                .collect(),
            Mixture::Grid25 => (0..25).map(|k| (2.0 * (k / 5) as f64 - 4.0, 2.0 * (k % 5) as f64 - 4.0)).collect(),
        }
    }
    /// The components' standard deviation.
    pub fn std(self) -> f64 {
        match self {
            Mixture::Ring8 => 0.02,
            Mixture::Grid25 => 0.05,
        }
    }
    /// `n` points `[n, 2]` row-major: a uniformly chosen component plus N(0, std^2 I).
    pub fn sample(self, rng: &mut Rng, n: usize) -> Vec<f32> {
        let c = self.centres();
        let s = self.std();
        let mut out = Vec::with_capacity(2 * n);
        for _ in 0..n {
            let (x, y) = c[rng.below(c.len())];
            out.push((x + s * rng.normal()) as f32);
            out.push((y + s * rng.normal()) as f32);
        }
        out
    }
    pub fn parse_list(names: &[String]) -> Result<Vec<Mixture>> {
        if names.is_empty() {
            return Ok(Mixture::ALL.to_vec());
        }
        names
            .iter()
            .map(|n| {
                Mixture::ALL
                    .into_iter()
                    .find(|m| m.slug() == n.trim())
                    .ok_or_else(|| Error::Config(format!("gan2d: unknown mixture {n:?} (available: ring8, grid25)")))
            })
            .collect()
    }
}

/// Mode coverage of generated points against a mixture's centres.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModeStats {
    /// Modes with at least 1% of all points within 3 std of their centre.
    pub modes_covered: usize,
    /// Number of modes of the mixture.
    pub modes: usize,
    /// Share of points within 3 std of some centre (in [0, 1]).
    pub high_quality: f64,
    /// KL(p || uniform) of the per-mode histogram p of the high-quality points, in nats
    /// (0 when every mode holds the same share; ln(modes) when all fall in one mode). Defined as
    /// ln(modes), the value of a single-mode histogram, when no point is of high quality.
    pub kl: f64,
    /// High-quality points per mode.
    pub counts: Vec<usize>,
}

/// Scores `points` (`[n, 2]` row-major): a point is of high quality when it lies within `3 std`
/// of a centre (its nearest one); non-finite points never are.
pub fn mode_stats(points: &[f32], centres: &[(f64, f64)], std: f64) -> ModeStats {
    let k = centres.len();
    let n = points.len() / 2;
    let mut counts = vec![0usize; k];
    let r2 = (3.0 * std).powi(2);
    for p in points.chunks_exact(2) {
        let (x, y) = (p[0] as f64, p[1] as f64);
        if !(x.is_finite() && y.is_finite()) {
            continue;
        }
        let (best, d2) = centres
            .iter()
            .enumerate()
            .map(|(i, &(cx, cy))| (i, (x - cx).powi(2) + (y - cy).powi(2)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .expect("at least one centre");
        if d2 <= r2 {
            counts[best] += 1;
        }
    }
    let hq: usize = counts.iter().sum();
    let modes_covered = counts.iter().filter(|&&c| n > 0 && c as f64 >= 0.01 * n as f64).count();
    let kl = if hq == 0 {
        (k as f64).ln()
    } else {
        counts
            .iter()
            .filter(|&&c| c > 0)
            .map(|&c| {
                let p = c as f64 / hq as f64;
                p * (p * k as f64).ln()
            })
            .sum::<f64>()
            .max(0.0)
    };
    ModeStats { modes_covered, modes: k, high_quality: if n == 0 { 0.0 } else { hq as f64 / n as f64 }, kl, counts }
}

/// Budget and model of the 2-D benchmark.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Gan2dConfig {
    /// Training iterations (one D step and one G step each).
    pub iters: usize,
    pub batch: usize,
    /// Noise dimension of the generator.
    pub noise: usize,
    /// Hidden width of both networks (two hidden layers each).
    pub hidden: usize,
    /// Tokens the generator's last hidden layer is split into (`hidden / tokens` features each).
    pub tokens: usize,
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    /// Leaky-ReLU slope of the discriminator.
    pub slope: f32,
    /// Weight of L_A (atom) and of the hinge baselines.
    pub lambda: f32,
    /// Hinge margin on latent distances.
    pub margin: f32,
    /// The pairwise regularisers (L_A, C_w, hinge) see the first `reg_batch` samples of each
    /// generated batch (all when >= batch): their cost grows with the square of the batch (L_A's
    /// token term with N^2 n^2 m), and a mean over the pairs of a sub-batch is an unbiased
    /// estimate of the mean over the batch's pairs.
    pub reg_batch: usize,
    /// Log (losses, fixed-noise coverage) every this many iterations.
    pub log_every: usize,
    /// Generated points scored at the end.
    pub eval_points: usize,
    /// Fixed-noise points scored (and drawn, with `snapshots`) at each log.
    pub snapshot_points: usize,
    /// Draw the fixed-noise samples as a PNG at each log (in the run's folder).
    pub snapshots: bool,
}

impl Default for Gan2dConfig {
    /// The benchmark's budget, measured on lavapipe (2 shared cores): 3000 iterations of batch 128
    /// at lr 1e-3. With DCGAN's lr 2e-4 the plain GAN covered nothing of the ring in 2,500
    /// iterations of batch 256 for one of two seeds; at 1e-3 it covers 4-8 of 8 ring modes by
    /// 1,500-3,000 iterations and starts covering grid modes near 3,000. Noise 2 covered more of the
    /// grid than noise 8 (7 vs 1 of 25 at 4,000 iterations, one seed). The hinge margin 10 is
    /// about the median distance between the generator's 128-d latents after 1,000 plain
    /// iterations (2 at initialisation); with a margin of 1 the hinge was inactive within 300.
    fn default() -> Self {
        Gan2dConfig {
            iters: 3000,
            batch: 128,
            noise: 2,
            hidden: 128,
            tokens: 16,
            lr: 1e-3,
            beta1: 0.5,
            beta2: 0.999,
            slope: 0.2,
            lambda: 0.1,
            margin: 10.0,
            reg_batch: 64,
            log_every: 250,
            eval_points: 10_000,
            snapshot_points: 2_000,
            snapshots: true,
        }
    }
}

impl Gan2dConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(format!("gan2d: {m}")));
        if self.iters == 0 || self.log_every == 0 {
            return bad(format!("iters and log_every must be >= 1, got {} and {}", self.iters, self.log_every));
        }
        if self.batch < 2 || self.reg_batch < 2 {
            return bad(format!(
                "batch and reg_batch must be >= 2 (pairs need 2 samples), got {} and {}",
                self.batch, self.reg_batch
            ));
        }
        if self.noise == 0 || self.hidden == 0 || self.tokens == 0 || !self.hidden.is_multiple_of(self.tokens) {
            return bad(format!(
                "noise >= 1 and hidden a positive multiple of tokens needed; got noise {}, hidden {}, tokens {}",
                self.noise, self.hidden, self.tokens
            ));
        }
        if self.eval_points == 0 || self.snapshot_points == 0 {
            return bad("eval_points and snapshot_points must be >= 1".into());
        }
        if !(self.lr > 0.0 && self.lr.is_finite() && self.lambda >= 0.0 && self.lambda.is_finite()) {
            return bad(format!("need lr > 0 and lambda >= 0, got lr {} lambda {}", self.lr, self.lambda));
        }
        Ok(())
    }
    /// Samples the regularisers see.
    pub fn reg_samples(&self) -> usize {
        self.reg_batch.min(self.batch)
    }
    pub fn settings(&self) -> GanSettings {
        GanSettings {
            batch: self.batch,
            reg_batch: self.reg_samples(),
            lr: self.lr,
            beta1: self.beta1,
            beta2: self.beta2,
            lambda: self.lambda,
            margin: self.margin,
        }
    }
}

/// Fresh points of a 2-D mixture every batch.
struct MixtureSource(Mixture);

impl RealSource for MixtureSource {
    fn next(&mut self, dev: &Device, rng: &mut Rng, b: usize) -> Result<Tensor> {
        Tensor::from_slice(dev, &self.0.sample(rng, b), &[b, 2])
    }
}

/// The 2-D benchmark's GAN.
pub type Gan2d = Gan<MlpGenerator, MlpDiscriminator>;

impl Gan<MlpGenerator, MlpDiscriminator> {
    /// MLPs `noise -> hidden -> hidden -> 2` and `2 -> hidden -> hidden -> 1` on `mixture`.
    pub fn new(dev: &Device, cfg: &Gan2dConfig, mixture: Mixture, method: Method, seed: u64) -> Result<Gan2d> {
        cfg.validate()?;
        check_method(method)?;
        let g = MlpGenerator::new(dev, cfg.noise, cfg.hidden, 2, cfg.tokens, sub_seed(seed, 1))?;
        let d = MlpDiscriminator::new(dev, &[2, cfg.hidden, cfg.hidden, 1], cfg.slope, sub_seed(seed, 2))?;
        Gan::with_models(dev, g, d, cfg.settings(), Box::new(MixtureSource(mixture)), method, seed)
    }
}

/// `atomgrad train --task gan2d`: one GAN on one mixture in a run folder, scored every log
/// interval on the fixed-noise snapshot points (best checkpoint by modes covered + high-quality
/// share). Returns the summary line, or `None` when stopped early.
#[allow(clippy::too_many_arguments)]
pub fn train_gan2d(
    dev: &Device,
    cfg: &Gan2dConfig,
    mixture: Mixture,
    method: Method,
    seed: u64,
    run: &mut crate::run::Run,
    resume: Option<&checkpoint::Checkpoint>,
) -> Result<Option<String>> {
    let mut gan = Gan2d::new(dev, cfg, mixture, method, seed)?;
    gan.detect_anomaly = run.detect_anomaly();
    let (centres, std) = (mixture.centres(), mixture.std());
    let snap_seed = sub_seed(seed, 5);
    let mut score = |gan: &Gan2d| -> Result<(serde_json::Value, Option<f64>)> {
        let s = mode_stats(&gan.generate(cfg.snapshot_points, snap_seed)?, &centres, std);
        let m = serde_json::json!({"modes_covered": s.modes_covered, "high_quality": s.high_quality, "kl": s.kl});
        Ok((m, Some(s.modes_covered as f64 + s.high_quality)))
    };
    if fit_gan(&mut gan, cfg.iters, cfg.log_every, resume, run, &mut score)? {
        return Ok(None);
    }
    let points = gan.generate(cfg.eval_points, sub_seed(seed, 6))?;
    let s = mode_stats(&points, &centres, std);
    let summary = format!(
        "{} on {} (seed {seed}): {}/{} modes, {:.1}% high quality, KL {:.3} from {} points",
        gan_method_name(method),
        mixture.name(),
        s.modes_covered,
        s.modes,
        100.0 * s.high_quality,
        s.kl,
        cfg.eval_points
    );
    scatter(&run.dir().join("samples.png"), &summary, &points, &centres)?;
    Ok(Some(summary))
}

/// One logged interval of a run (one JSON line of `metrics.jsonl`).
#[derive(Clone, Debug, Serialize)]
pub struct LogLine {
    pub iter: usize,
    pub seconds: f64,
    pub loss: LossMeans,
    /// Coverage of the fixed-noise sample at this iteration.
    pub modes_covered: usize,
    pub high_quality: f64,
    pub kl: f64,
}

/// The outcome of one run.
#[derive(Clone, Debug, Serialize)]
pub struct Gan2dResult {
    pub method: Method,
    pub mixture: Mixture,
    pub seed: u64,
    /// Scores of `eval_points` generated points after training.
    pub stats: ModeStats,
    pub log: Vec<LogLine>,
    /// Iteration at which a loss became non-finite (training stopped there), if it did.
    pub diverged_at: Option<usize>,
    pub seconds: f64,
    pub iters_per_sec: f64,
    /// The scored points `[eval_points, 2]`.
    #[serde(skip)]
    pub points: Vec<f32>,
}

/// Trains one method on one mixture with one seed. With `dir`, writes `metrics.jsonl` (one object
/// per log interval), `loss.png` and, with `cfg.snapshots`, `samples-<iter>.png` at each log (the
/// fixed-noise points over the true centres). `on_iter` is called after every iteration.
pub fn run(
    dev: &Device,
    cfg: &Gan2dConfig,
    mixture: Mixture,
    method: Method,
    seed: u64,
    dir: Option<&Path>,
    on_iter: &mut dyn FnMut(usize),
) -> Result<Gan2dResult> {
    let mut gan = Gan2d::new(dev, cfg, mixture, method, seed)?;
    if let Some(d) = dir {
        std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
    }
    let (centres, std) = (mixture.centres(), mixture.std());
    let snap_seed = sub_seed(seed, 5);
    let t0 = std::time::Instant::now();
    let (mut log, mut jsonl) = (Vec::new(), String::new());
    let mut diverged_at = None;
    for i in 0..cfg.iters {
        gan.step()?;
        on_iter(i + 1);
        if (i + 1) % cfg.log_every != 0 && i + 1 != cfg.iters {
            continue;
        }
        let loss = gan.take_losses()?;
        let pts = gan.generate(cfg.snapshot_points, snap_seed)?;
        let s = mode_stats(&pts, &centres, std);
        let line = LogLine {
            iter: i + 1,
            seconds: t0.elapsed().as_secs_f64(),
            modes_covered: s.modes_covered,
            high_quality: s.high_quality,
            kl: s.kl,
            loss,
        };
        let finite = [line.loss.d, line.loss.g, line.loss.reg].iter().all(|v| v.is_finite());
        if let Some(d) = dir {
            jsonl.push_str(&serde_json::to_string(&line).expect("serialisable"));
            jsonl.push('\n');
            write_atomic(d.join("metrics.jsonl"), jsonl.as_bytes())?;
            if cfg.snapshots {
                scatter(
                    &d.join(format!("samples-{:06}.png", i + 1)),
                    &format!(
                        "{} on {}, iteration {} (seed {seed}): {}/{} modes, {:.0}% high quality",
                        gan_method_name(method),
                        mixture.name(),
                        i + 1,
                        s.modes_covered,
                        s.modes,
                        100.0 * s.high_quality
                    ),
                    &pts,
                    &centres,
                )?;
            }
        }
        log.push(line);
        if !finite {
            diverged_at = Some(i + 1);
            break;
        }
    }
    let seconds = t0.elapsed().as_secs_f64();
    let points = gan.generate(cfg.eval_points, sub_seed(seed, 6))?;
    let stats = mode_stats(&points, &centres, std);
    if let Some(d) = dir {
        let curve = |name: &str, f: &dyn Fn(&LogLine) -> Option<f64>| {
            plot::Series::new(name, log.iter().filter_map(|l| f(l).map(|v| (l.iter as f64, v))).collect())
        };
        let mut series = vec![curve("D loss", &|l| Some(l.loss.d)), curve("G adversarial loss", &|l| Some(l.loss.g))];
        if method != Method::Ce {
            series.push(curve("G regulariser", &|l| Some(l.loss.reg)));
        }
        if method == Method::Atom {
            series.push(curve("L_A", &|l| l.loss.l_a));
        }
        plot::line_plot(
            d.join("loss.png"),
            &format!("{} on {} (seed {seed}): mean losses per log interval", gan_method_name(method), mixture.name()),
            "iteration",
            "loss",
            &series,
        )?;
    }
    Ok(Gan2dResult {
        method,
        mixture,
        seed,
        stats,
        iters_per_sec: gan.iteration() as f64 / seconds,
        log,
        diverged_at,
        seconds,
        points,
    })
}

/// Generated points (grey) over the true centres (crosses), at most 5,000 drawn.
fn scatter(path: &Path, title: &str, pts: &[f32], centres: &[(f64, f64)]) -> Result<()> {
    let step = (pts.len() / 2).div_ceil(5000).max(1);
    let p: Vec<(f64, f64, usize)> = pts.chunks_exact(2).step_by(step).map(|q| (q[0] as f64, q[1] as f64, 0)).collect();
    plot::scatter_plot(path, title, &p, &["generated".to_string()], centres)
}

/// One row of the GAN table: a method on a mixture over seeds.
#[derive(Clone, Debug, Serialize)]
pub struct GanRow {
    pub mixture: Mixture,
    pub method: Method,
    pub name: &'static str,
    pub modes: usize,
    pub seeds: Vec<u64>,
    pub modes_covered: Vec<f64>,
    pub high_quality: Vec<f64>,
    pub kl: Vec<f64>,
    /// Runs whose loss became non-finite (scored as they stood).
    pub diverged: usize,
}

/// Markdown table: mean ± sample std over seeds.
pub fn gan_table(rows: &[GanRow]) -> String {
    let mut s = String::from(
        "| mixture | method | modes covered | high-quality points (%) | KL(modes ‖ uniform) |\n| --- | --- | --- | --- | --- |\n",
    );
    for r in rows {
        let div = if r.diverged > 0 { format!(" ({} diverged)", r.diverged) } else { String::new() };
        s.push_str(&format!(
            "| {} | {}{} | {} / {} | {} | {} |\n",
            r.mixture.name(),
            r.name,
            div,
            fmt_ms(&r.modes_covered, 1.0, 1),
            r.modes,
            fmt_ms(&r.high_quality, 100.0, 1),
            fmt_ms(&r.kl, 1.0, 3)
        ));
    }
    s
}

/// Mean ± std band over runs of a per-log value, x = iteration.
fn log_band(name: &str, runs: &[&Gan2dResult], f: impl Fn(&LogLine) -> f64) -> plot::Series {
    let len = runs.iter().map(|r| r.log.len()).min().unwrap_or(0);
    let xs: Vec<f64> = (0..len).map(|i| runs[0].log[i].iter as f64).collect();
    let stats: Vec<(f64, f64)> =
        (0..len).map(|i| mean_std(&runs.iter().map(|r| f(&r.log[i])).collect::<Vec<_>>())).collect();
    plot::Series::new(name, xs.iter().zip(&stats).map(|(&x, &(m, _))| (x, m)).collect())
        .with_band(xs.iter().zip(&stats).map(|(&x, &(m, s))| (x, m - s, m + s)).collect())
}

/// Trains every method on every mixture for every seed with the same budget and writes the run
/// folder: `results.md` / `results.json`, `<mixture>-<method>.png` (seed 0's generated points over
/// the centres), `<mixture>-loss-d.png`, `<mixture>-loss-g.png`, `<mixture>-modes.png` (curves,
/// mean ± std over seeds) and per run `<mixture>/<method>/seed<k>/` (metrics.jsonl, loss.png,
/// sample snapshots for seed 0).
pub fn compare_gan2d(
    dev: &Device,
    cfg: &Gan2dConfig,
    mixtures: &[Mixture],
    methods: &[Method],
    seeds: &[u64],
    out: &Path,
    progress: Progress,
) -> Result<String> {
    cfg.validate()?;
    for &m in methods {
        check_method(m)?;
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let t0 = std::time::Instant::now();
    let total = mixtures.len() * methods.len() * seeds.len();
    let (mut rows, mut runs) = (Vec::new(), Vec::new());
    let mut done = 0;
    for &mixture in mixtures {
        let mut mix_runs: Vec<Gan2dResult> = Vec::new();
        for &method in methods {
            let mut row = GanRow {
                mixture,
                method,
                name: gan_method_name(method),
                modes: mixture.centres().len(),
                seeds: seeds.to_vec(),
                modes_covered: vec![],
                high_quality: vec![],
                kl: vec![],
                diverged: 0,
            };
            for &seed in seeds {
                progress(done, total, &format!("{}: {} seed {seed}", mixture.name(), gan_method_name(method)));
                let dir = out.join(mixture.slug()).join(method.slug()).join(format!("seed{seed}"));
                let run_cfg = Gan2dConfig { snapshots: cfg.snapshots && seed == seeds[0], ..cfg.clone() };
                let r = run(dev, &run_cfg, mixture, method, seed, Some(&dir), &mut |_| {})?;
                row.modes_covered.push(r.stats.modes_covered as f64);
                row.high_quality.push(r.stats.high_quality);
                row.kl.push(r.stats.kl);
                row.diverged += r.diverged_at.is_some() as usize;
                if seed == seeds[0] {
                    scatter(
                        &out.join(format!("{}-{}.png", mixture.slug(), method.slug())),
                        &format!(
                            "{} on {} (seed {seed}): {}/{} modes, {:.0}% high quality, KL {:.3}",
                            gan_method_name(method),
                            mixture.name(),
                            r.stats.modes_covered,
                            r.stats.modes,
                            100.0 * r.stats.high_quality,
                            r.stats.kl
                        ),
                        &r.points,
                        &mixture.centres(),
                    )?;
                }
                mix_runs.push(r);
                done += 1;
            }
            rows.push(row);
        }
        progress(done, total, &format!("{}: plots", mixture.name()));
        let by = |m: Method| mix_runs.iter().filter(|r| r.method == m).collect::<Vec<_>>();
        type Pick = fn(&LogLine) -> f64;
        let plots: [(&str, &str, Pick); 3] = [
            ("loss-d", "discriminator loss", |l| l.loss.d),
            ("loss-g", "generator adversarial loss", |l| l.loss.g),
            ("modes", "modes covered by 2,000 fixed-noise points", |l| l.modes_covered as f64),
        ];
        for (file, what, f) in plots {
            let series: Vec<plot::Series> = methods.iter().map(|&m| log_band(gan_method_name(m), &by(m), f)).collect();
            plot::line_plot(
                out.join(format!("{}-{file}.png", mixture.slug())),
                &format!("{}: {what} (mean ± std over seeds)", mixture.name()),
                "iteration",
                what,
                &series,
            )?;
        }
        runs.extend(mix_runs);
    }
    let md = gan_table(&rows);
    let seconds = t0.elapsed().as_secs_f64();
    let a = AtomConfig { lambda: cfg.lambda, ..AtomConfig::default() };
    let json = serde_json::json!({
        "task": "gan2d",
        "config": cfg,
        "atom": {
            "lambda": a.lambda, "mu_w": a.mu_w, "eps": a.eps, "tau_lo": a.tau_lo, "tau_hi": a.tau_hi,
            "r_max": a.r_max, "warmup_steps": a.warmup_steps, "normalize": a.normalize,
            "attach": format!("generator's last hidden layer ({} units) as {} tokens of {}", cfg.hidden, cfg.tokens, cfg.hidden / cfg.tokens),
        },
        "mixtures": mixtures,
        "seeds": seeds,
        "rows": rows,
        "runs": runs,
        "adapter": dev.describe(),
        "seconds": seconds,
    });
    write_atomic(out.join("results.json"), serde_json::to_string_pretty(&json).expect("serialisable").as_bytes())?;
    let header = format!(
        "gan2d: {} iterations, batch {} (regularisers on the first {}), noise {}, MLP width {} ({} tokens), Adam lr {} \
         betas ({}, {}), lambda {}, margin {}; metrics from {} generated points; {} seeds; {:.0} s on {}\n\n",
        cfg.iters,
        cfg.batch,
        cfg.reg_samples(),
        cfg.noise,
        cfg.hidden,
        cfg.tokens,
        cfg.lr,
        cfg.beta1,
        cfg.beta2,
        cfg.lambda,
        cfg.margin,
        cfg.eval_points,
        seeds.len(),
        seconds,
        dev.describe()
    );
    write_atomic(out.join("results.md"), format!("{header}{md}").as_bytes())?;
    Ok(format!("{header}{md}"))
}

// ---- DCGAN on Fashion-MNIST ----
