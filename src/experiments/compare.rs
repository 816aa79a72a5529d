//! The comparison driver, one for every task: methods × (a lambda grid, for the methods lambda
//! weighs) × seeds, each run a `train` run folder of its own (`<method>/[lambda-<λ>/]seed<k>/`),
//! then per method the lambda with the best mean validation score, its runs' test scores, and the
//! paired difference to the baseline (cross-entropy, or the plain GAN) with a 95% interval.
//!
//! Resumable: a run with `result.json` is finished and read back; one with a `config.json` is
//! resumed from its latest checkpoint (bit-identically, see `train::fit`); the rest start fresh.
//! `results.json` holds no timings, so a comparison killed and resumed writes the same file as an
//! uninterrupted one.

use crate::device::Device;
use crate::error::{Error, Result};
use crate::experiments::method::Method;
use crate::experiments::protocol::RunRecord;
use crate::experiments::stats::{best_index, fmt_ms, mean_std, paired_diff, PairedDiff};
use crate::experiments::task::{train_run, Data, Kind, Overrides, RunContext, RunOptions, Task};
use crate::fsio;
use crate::plot;
use crate::run::{Display, Run};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The most seeds a comparison takes (each is a run per method and lambda).
pub const MAX_SEEDS: u64 = 1000;

/// Per-term diagnostics records per epoch in a comparison's atom runs (`terms.png`; `train` logs
/// 10): fewer, as each costs a probe pass per term.
pub const TERMS_PER_EPOCH: usize = 2;

/// A comparison's options: its folder's `config.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompareOptions {
    pub task: Task,
    pub methods: Vec<Method>,
    /// Seeds 0, 1, .., seeds - 1.
    pub seeds: u64,
    /// The lambda grid for the methods lambda weighs (one value: no choice to make).
    pub lambdas: Vec<f64>,
    /// Every other option, over the task's defaults (its `lambda` is unused: see `lambdas`).
    #[serde(flatten)]
    pub options: Overrides,
}

impl CompareOptions {
    /// Fills the task's default methods and lambda; checks counts and the grid.
    pub fn new(task: Task, methods: Vec<Method>, seeds: u64, lambdas: Vec<f64>, options: Overrides) -> Result<Self> {
        if !(1..=MAX_SEEDS).contains(&seeds) {
            return Err(Error::Config(format!("--seeds must be in 1..={MAX_SEEDS}, got {seeds}")));
        }
        if task == Task::Moons {
            return Err(Error::Config(
                "--task: moons trains with cross-entropy only, so there is nothing to compare (use `train --task moons`)"
                    .into(),
            ));
        }
        let methods = if methods.is_empty() { task.info().compare_methods.to_vec() } else { methods };
        let mut seen = Vec::new();
        for m in &methods {
            if seen.contains(m) {
                return Err(Error::Config(format!("--methods: {:?} is listed twice", m.slug())));
            }
            seen.push(*m);
        }
        let lambdas = if lambdas.is_empty() { task.defaults().lambda.into_iter().collect() } else { lambdas };
        for (i, l) in lambdas.iter().enumerate() {
            if !(l.is_finite() && *l >= 0.0) {
                return Err(Error::Config(format!("--lambdas: {l} is not a number >= 0")));
            }
            if lambdas[..i].contains(l) {
                return Err(Error::Config(format!("--lambdas: {l} is listed twice")));
            }
        }
        Ok(CompareOptions { task, methods, seeds, lambdas, options: Overrides { lambda: None, ..options } })
    }

    /// Every run of the comparison with its folder (relative), in the order they are trained;
    /// resolving each checks every option before anything is written.
    pub fn plan(&self) -> Result<Vec<(RunOptions, PathBuf)>> {
        let mut plan = Vec::new();
        for &method in &self.methods {
            let lambdas: Vec<Option<f64>> =
                if method.uses_lambda() { self.lambdas.iter().map(|&l| Some(l)).collect() } else { vec![None] };
            for lambda in lambdas {
                for seed in 0..self.seeds {
                    let o = Overrides { lambda, ..self.options.clone() };
                    let opts = self.task.resolve(method, seed, &o)?;
                    let mut dir = PathBuf::from(method.slug());
                    if let Some(l) = lambda {
                        dir.push(format!("lambda-{l}"));
                    }
                    dir.push(format!("seed{seed}"));
                    plan.push((opts, dir));
                }
            }
        }
        Ok(plan)
    }
}

/// The mean validation score of one lambda of a method over its seeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LambdaScore {
    pub lambda: f64,
    pub mean_val: f64,
    pub std_val: f64,
}

/// One method's row: its runs at the selected lambda.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub method: Method,
    pub name: String,
    /// The selected lambda (by the best mean validation score over seeds), for methods it weighs.
    pub lambda: Option<f64>,
    /// Every lambda tried, with its mean validation score.
    pub lambda_grid: Vec<LambdaScore>,
    pub seeds: Vec<u64>,
    /// Per seed, at each run's selected epoch (GANs: log interval).
    pub selected_epoch: Vec<usize>,
    pub val: Vec<f64>,
    pub test: Vec<f64>,
    /// The report's measures per seed.
    pub metrics: BTreeMap<String, Vec<f64>>,
    /// Test score minus the baseline's, seed by seed, with its 95% paired t interval.
    pub vs_baseline: Option<PairedDiff>,
}

/// Trains (or resumes) every run of a comparison into `out` (which holds `config.json`) and
/// writes `results.json`, `results.md` and the figures. Returns the Markdown, or `None` when a
/// stop was asked (Ctrl-C) after the running run saved a checkpoint.
pub fn run_comparison(
    dev: &Device,
    c: &CompareOptions,
    data: &Data,
    out: &Path,
    display: Display,
) -> Result<Option<String>> {
    let plan = c.plan()?;
    for (opts, _) in &plan {
        opts.validate(data)?;
    }
    let steps: Vec<usize> = plan.iter().map(|(o, _)| o.total_steps(data)).collect();
    let total: usize = steps.iter().sum();
    let bar = if display == Display::Bar { ProgressBar::new(total as u64) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {per_sec}  ETA {eta}  {msg}")
            .expect("valid template"),
    );
    let ctx = RunContext { detect_anomaly: false, shared: Some(out.to_path_buf()), terms_per_epoch: TERMS_PER_EPOCH };
    let t0 = std::time::Instant::now();
    let (mut records, mut done_steps, mut trained_steps) = (Vec::new(), 0usize, 0usize);
    for (k, ((opts, rel), &n)) in plan.iter().zip(&steps).enumerate() {
        let dir = out.join(rel);
        bar.set_message(format!("[{}/{}] {}", k + 1, plan.len(), opts.label()));
        let (record, fresh) = match finished(&dir, opts)? {
            Some(r) => (r, false),
            None => {
                let (mut run, ck) = open_run(&dir, opts)?;
                run.attach(bar.clone());
                match train_run(dev, opts, data, &mut run, ck.as_ref(), &ctx)? {
                    Some(r) => (r, true),
                    None => {
                        bar.finish_and_clear();
                        return Ok(None);
                    }
                }
            }
        };
        done_steps += n;
        if fresh {
            trained_steps += n;
        }
        bar.set_position(done_steps as u64);
        if display == Display::Lines {
            let rate = trained_steps as f64 / t0.elapsed().as_secs_f64().max(1e-9);
            let eta = if trained_steps > 0 { (total - done_steps) as f64 / rate } else { f64::NAN };
            let score = c.task.score();
            crate::run::print_line(&format!(
                "[{}/{}] {}: val {:.*}, test {:.*} (epoch {}){}{}",
                k + 1,
                plan.len(),
                opts.label(),
                score.digits,
                record.val * score.scale,
                score.digits,
                record.test * score.scale,
                record.selected_epoch(),
                if fresh { "" } else { " (finished earlier)" },
                if eta.is_finite() {
                    format!("  ETA {}m {:02}s", eta as u64 / 60, eta as u64 % 60)
                } else {
                    String::new()
                }
            ));
        }
        records.push((rel.clone(), record));
    }
    bar.finish_and_clear();
    let rows = rows(c, &records)?;
    let md = markdown(c, data, dev, &rows);
    let results = serde_json::json!({
        "task": c.task,
        "data": data.description(),
        "adapter": dev.describe(),
        "options": c,
        "score": c.task.score(),
        "interval": "95% paired t interval of (method - baseline) over the seeds both ran",
        "rows": rows,
        "runs": records.iter().map(|(_, r)| r).collect::<Vec<_>>(),
    });
    figures(c, out, &rows, &records)?;
    fsio::write_json(out.join("results.json"), &results)?;
    let provenance = provenance_lines(out);
    fsio::write_atomic(out.join("results.md"), format!("{provenance}{md}").as_bytes())?;
    Ok(Some(md))
}

/// The record of a finished run in `dir`, checked against the options planned for it.
fn finished(dir: &Path, opts: &RunOptions) -> Result<Option<RunRecord>> {
    let path = dir.join("result.json");
    if !path.is_file() {
        return Ok(None);
    }
    let r: RunRecord = fsio::read_json(&path)?;
    if &r.options != opts {
        return Err(Error::data(
            &path,
            "this run was made with other options than the comparison's config.json plans for it; \
             start the comparison in a new folder",
        ));
    }
    Ok(Some(r))
}

/// A run folder to train in: resumed from its latest checkpoint when it has a `config.json`
/// (which must hold the planned options), else created.
fn open_run(dir: &Path, opts: &RunOptions) -> Result<(Run, Option<crate::checkpoint::Checkpoint>)> {
    let config = serde_json::to_value(opts).expect("options serialise");
    if dir.join("config.json").is_file() {
        let (run, saved, ck) = Run::resume(dir, Display::Quiet)?;
        if saved != config {
            return Err(Error::data(
                dir.join("config.json"),
                "this run was made with other options than the comparison plans for it",
            ));
        }
        Ok((run, ck))
    } else {
        // No configuration yet: nothing in the folder belongs to a run worth keeping.
        Ok((Run::create(dir, true, &config, Display::Quiet)?, None))
    }
}

/// Groups the records by method and lambda; picks each method's lambda on validation; pairs the
/// test scores with the baseline's.
fn rows(c: &CompareOptions, records: &[(PathBuf, RunRecord)]) -> Result<Vec<Row>> {
    let hib = c.task.score().higher_is_better;
    let mut rows = Vec::new();
    for &method in &c.methods {
        let of = |l: Option<f64>| -> Vec<&RunRecord> {
            records.iter().map(|(_, r)| r).filter(|r| r.options.method == method && r.options.lambda == l).collect()
        };
        let (lambda, grid) = if method.uses_lambda() {
            let grid: Vec<LambdaScore> = c
                .lambdas
                .iter()
                .map(|&l| {
                    let (mean_val, std_val) = mean_std(&of(Some(l)).iter().map(|r| r.val).collect::<Vec<_>>());
                    LambdaScore { lambda: l, mean_val, std_val }
                })
                .collect();
            let means: Vec<f64> = grid.iter().map(|g| g.mean_val).collect();
            let pick = best_index(&means, hib).unwrap_or(0);
            (Some(c.lambdas[pick]), grid)
        } else {
            (None, Vec::new())
        };
        let runs = of(lambda);
        let mut metrics: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for r in &runs {
            for (k, v) in &r.report.metrics {
                metrics.entry(k.clone()).or_default().push(*v);
            }
        }
        rows.push(Row {
            method,
            name: if c.task.kind() == Kind::Gan { method.gan_name() } else { method.name() }.to_string(),
            lambda,
            lambda_grid: grid,
            seeds: runs.iter().map(|r| r.options.seed).collect(),
            selected_epoch: runs.iter().map(|r| r.selected_epoch()).collect(),
            val: runs.iter().map(|r| r.val).collect(),
            test: runs.iter().map(|r| r.test).collect(),
            metrics,
            vs_baseline: None,
        });
    }
    if let Some(base) = rows.iter().find(|r| r.method == Method::Ce).cloned() {
        for r in rows.iter_mut().filter(|r| r.method != Method::Ce) {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            for (i, s) in r.seeds.iter().enumerate() {
                if let Some(j) = base.seeds.iter().position(|t| t == s) {
                    a.push(r.test[i]);
                    b.push(base.test[j]);
                }
            }
            r.vs_baseline = Some(paired_diff(&a, &b, hib));
        }
    }
    Ok(rows)
}

/// The results table (and the lambda grid, when there was one).
fn markdown(c: &CompareOptions, data: &Data, dev: &Device, rows: &[Row]) -> String {
    let score = c.task.score();
    let cols = c.task.columns();
    let base = if c.task.kind() == Kind::Gan { "GAN" } else { "cross-entropy" };
    let mut s = format!(
        "task {}: {}\n\nadapter: {}; {} seed(s) per method (0..{}); each run reports its epoch of best validation {}; \
         lambda chosen per method by the mean validation {} over seeds; test read only for the table. \
         Δ: test {} minus {base}'s on the same seeds, 95% paired t interval; the verdict is read from the interval.\n\n",
        c.task.name(),
        data.description(),
        dev.describe(),
        c.seeds,
        c.seeds - 1,
        score.name,
        score.name,
        score.name,
    );
    s.push_str(&format!(
        "| method | λ | epoch selected (per seed) | val {n}{u} | test {n}{u} | Δ test vs {base} [95% CI] | verdict |",
        n = score.name,
        u = score.unit
    ));
    for (_, title, _, _) in cols {
        s.push_str(&format!(" {title} |"));
    }
    s.push_str(&format!("\n|{}\n", " --- |".repeat(7 + cols.len())));
    for r in rows {
        let lambda = r.lambda.map_or("–".into(), |l| l.to_string());
        let epochs = r.selected_epoch.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", ");
        let (delta, verdict) = match &r.vs_baseline {
            Some(d) if d.lo.is_finite() => (
                format!(
                    "{:+.*} [{:+.*}, {:+.*}]",
                    score.digits,
                    d.mean * score.scale,
                    score.digits,
                    d.lo * score.scale,
                    score.digits,
                    d.hi * score.scale
                ),
                d.verdict.text().to_string(),
            ),
            Some(d) => (format!("{:+.*}", score.digits, d.mean * score.scale), d.verdict.text().to_string()),
            None if r.method == Method::Ce => ("(baseline)".into(), "–".into()),
            None => (format!("n/a ({base} not run)"), "–".into()),
        };
        s.push_str(&format!(
            "| {} | {lambda} | {epochs} | {} | {} | {delta} | {verdict} |",
            r.name,
            fmt_ms(&r.val, score.scale, score.digits),
            fmt_ms(&r.test, score.scale, score.digits)
        ));
        for (key, _, scale, digits) in cols {
            s.push_str(&format!(" {} |", r.metrics.get(*key).map_or("n/a".into(), |v| fmt_ms(v, *scale, *digits))));
        }
        s.push('\n');
    }
    if c.lambdas.len() > 1 {
        s.push_str(&format!(
            "\nLambda grid (mean ± std of the validation {} over seeds; * = selected):\n\n",
            score.name
        ));
        s.push_str("| method |");
        for l in &c.lambdas {
            s.push_str(&format!(" λ = {l} |"));
        }
        s.push_str(&format!("\n|{}\n", " --- |".repeat(1 + c.lambdas.len())));
        for r in rows.iter().filter(|r| !r.lambda_grid.is_empty()) {
            s.push_str(&format!("| {} |", r.name));
            for g in &r.lambda_grid {
                let star = if Some(g.lambda) == r.lambda { "*" } else { "" };
                s.push_str(&format!(
                    " {:.*} ± {:.*}{star} |",
                    score.digits,
                    g.mean_val * score.scale,
                    score.digits,
                    g.std_val * score.scale
                ));
            }
            s.push('\n');
        }
    }
    s
}

/// Curves (validation score and training loss per epoch, mean ± std over seeds, at the selected
/// lambda) and each method's first-seed figures copied to the top (`<figure>-<method>.png`).
fn figures(c: &CompareOptions, out: &Path, rows: &[Row], records: &[(PathBuf, RunRecord)]) -> Result<()> {
    let score = c.task.score();
    let (mut val, mut loss) = (Vec::new(), Vec::new());
    for row in rows {
        let runs: Vec<&(PathBuf, RunRecord)> =
            records.iter().filter(|(_, r)| r.options.method == row.method && r.options.lambda == row.lambda).collect();
        let curves = |f: &dyn Fn(&crate::experiments::protocol::Point) -> f64| -> Vec<Vec<f64>> {
            runs.iter().map(|(_, r)| r.history.iter().map(f).collect()).collect()
        };
        val.push(band(&row.name, &curves(&|p| p.val * score.scale)));
        loss.push(band(&row.name, &curves(&|p| p.train_loss)));
        if let Some((rel, _)) = runs.first() {
            for f in ["latent.png", "importance.png", "importance.html", "samples.png"] {
                let src = out.join(rel).join(f);
                if src.is_file() {
                    let (stem, ext) = f.split_once('.').expect("a file name with an extension");
                    let bytes = std::fs::read(&src).map_err(|e| Error::io(&src, e))?;
                    fsio::write_atomic(out.join(format!("{stem}-{}.{ext}", row.method.slug())), &bytes)?;
                }
            }
        }
    }
    let x = if c.task.kind() == Kind::Gan { "log interval" } else { "epoch" };
    plot::line_plot(
        out.join("validation.png"),
        &format!("{}: validation {} (mean ± std over seeds)", c.task.name(), score.name),
        x,
        &format!("validation {}{}", score.name, score.unit),
        &val,
    )?;
    plot::line_plot(
        out.join("loss.png"),
        &format!("{}: training loss (mean ± std over seeds)", c.task.name()),
        x,
        "loss",
        &loss,
    )?;
    if matches!(c.task, Task::Synthetic | Task::Planted) {
        crate::experiments::synthetic::compare_figures(out, rows, records)?;
    }
    Ok(())
}

/// Mean ± std band over runs of per-point values.
fn band(name: &str, runs: &[Vec<f64>]) -> plot::Series {
    let n = runs.iter().map(|r| r.len()).min().unwrap_or(0);
    let stats: Vec<(f64, f64)> = (0..n).map(|e| mean_std(&runs.iter().map(|r| r[e]).collect::<Vec<_>>())).collect();
    plot::Series::new(name, stats.iter().enumerate().map(|(e, &(m, _))| (e as f64 + 1.0, m)).collect())
        .with_band(stats.iter().enumerate().map(|(e, &(m, s))| (e as f64 + 1.0, m - s, m + s)).collect())
}

/// What `provenance.json` records of a comparison folder: how and when it was started and
/// resumed, by which binary.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Provenance {
    pub entries: Vec<ProvenanceEntry>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProvenanceEntry {
    /// `created` or `resumed`.
    pub what: String,
    pub date: String,
    pub commit: String,
    pub adapter: String,
    pub command: Vec<String>,
}

/// Adds an entry to the folder's `provenance.json`.
pub fn record_provenance(out: &Path, what: &str, dev: &Device) -> Result<()> {
    let path = out.join("provenance.json");
    let mut p: Provenance = if path.is_file() { fsio::read_json(&path)? } else { Provenance::default() };
    p.entries.push(ProvenanceEntry {
        what: what.into(),
        date: fsio::today_utc(),
        commit: fsio::source_commit(),
        adapter: dev.describe(),
        command: std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect(),
    });
    fsio::write_json(&path, &p)
}

/// The provenance as Markdown lines above the table.
fn provenance_lines(out: &Path) -> String {
    let p: Provenance = fsio::read_json(out.join("provenance.json")).unwrap_or_default();
    let mut s = String::new();
    for e in &p.entries {
        s.push_str(&format!(
            "- {} {} by `{}` (commit {}, {})\n",
            e.what,
            e.date,
            e.command.join(" "),
            e.commit,
            e.adapter
        ));
    }
    if !s.is_empty() {
        s.push('\n');
    }
    s
}
