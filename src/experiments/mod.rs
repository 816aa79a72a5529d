//! Experiments: each trains every method with identical budgets and seeds and writes a run
//! folder (table as JSON, plots as PNG). `compare` is the entry point the CLI calls.

pub mod classify;
pub mod gan;
pub mod synthetic;
pub mod terms;

use crate::atom::cpu::pair_energy;
use crate::atom::{atom_terms, hinge_lp, importance_budget, nt_xent, AtomConfig, Norm, TokenMask};
use crate::autodiff::Var;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::plot::{self, write_atomic};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// A training objective: the task loss alone or with one regulariser on the latent z.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Cross-entropy alone, no importance gate.
    Ce,
    /// Importance gate and its budget, lambda = 0 (the ablation the spec asks for).
    Gate,
    HingeL1,
    HingeL2,
    SimClr,
    /// Importance gate + budget + L_A.
    Atom,
}

impl Method {
    pub const ALL: [Method; 6] =
        [Method::Ce, Method::Gate, Method::HingeL1, Method::HingeL2, Method::SimClr, Method::Atom];
    pub fn gated(self) -> bool {
        matches!(self, Method::Gate | Method::Atom)
    }
    pub fn name(self) -> &'static str {
        match self {
            Method::Ce => "cross-entropy",
            Method::Gate => "gate only",
            Method::HingeL1 => "+hinge-L1",
            Method::HingeL2 => "+hinge-L2",
            Method::SimClr => "+SimCLR",
            Method::Atom => "+atom (L_A)",
        }
    }
    /// Methods named by slug (`ce`, `gate`, ...); all of them for an empty list.
    pub fn parse_list(names: &[String]) -> Result<Vec<Method>> {
        if names.is_empty() {
            return Ok(Method::ALL.to_vec());
        }
        names
            .iter()
            .map(|n| {
                Method::ALL.into_iter().find(|m| m.slug() == n.trim()).ok_or_else(|| {
                    let all: Vec<&str> = Method::ALL.iter().map(|m| m.slug()).collect();
                    Error::Config(format!("--methods: unknown method {n:?} (available: {})", all.join(", ")))
                })
            })
            .collect()
    }
    pub fn slug(self) -> &'static str {
        match self {
            Method::Ce => "ce",
            Method::Gate => "gate",
            Method::HingeL1 => "hinge-l1",
            Method::HingeL2 => "hinge-l2",
            Method::SimClr => "simclr",
            Method::Atom => "atom",
        }
    }
}

/// The training loss of `method`: the task loss `ce` plus the method's regulariser on the latent
/// `z` (and, for the gated methods, the tokens `h` and importances `w`). `views` builds SimCLR's
/// two projected augmented views; it is called only for [`Method::SimClr`].
#[allow(clippy::too_many_arguments)]
pub fn objective(
    method: Method,
    ce: Var,
    z: &Var,
    h: &Var,
    w: Option<&Var>,
    mask: &TokenMask,
    atom: &AtomConfig,
    lambda: f32,
    margin: f32,
    tau: f32,
    step: usize,
    views: impl FnOnce() -> Result<(Var, Var)>,
) -> Result<Var> {
    let gate =
        |w: Option<&Var>| w.cloned().ok_or_else(|| Error::Config(format!("{method:?} needs the importance gate")));
    match method {
        Method::Ce => Ok(ce),
        Method::Gate => ce.add(&importance_budget(&gate(w)?, mask, atom.tau_lo, atom.tau_hi)?.scale(atom.mu_w)?),
        Method::Atom => ce.add(&atom_terms(z, h, &gate(w)?, mask, atom)?.regularizer(atom, step)?),
        Method::HingeL1 => ce.add(&hinge_lp(z, Norm::L1, margin)?.scale(lambda)?),
        Method::HingeL2 => ce.add(&hinge_lp(z, Norm::L2, margin)?.scale(lambda)?),
        Method::SimClr => {
            let (a, b) = views()?;
            ce.add(&nt_xent(&a, &b, tau)?.scale(lambda)?)
        }
    }
}

/// Area under the ROC curve of scores `pos` against `neg` (Mann-Whitney U; ties count half).
pub fn auc(pos: &[f64], neg: &[f64]) -> f64 {
    if pos.is_empty() || neg.is_empty() {
        return f64::NAN;
    }
    let mut all: Vec<(f64, bool)> = pos.iter().map(|&v| (v, true)).chain(neg.iter().map(|&v| (v, false))).collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Average ranks over ties, then U = R_pos - n_pos (n_pos + 1) / 2.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j + 1 < all.len() && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let r = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += r * all[i..=j].iter().filter(|e| e.1).count() as f64;
        i = j + 1;
    }
    let (np, nn) = (pos.len() as f64, neg.len() as f64);
    (rank_sum - np * (np + 1.0) / 2.0) / (np * nn)
}

/// Mean distance from each point to its nearest neighbour, over the mean pairwise distance
/// (scale-free: how evenly the latents spread rather than how large they are).
pub fn nn_spacing(x: &[f32], dim: usize) -> f64 {
    let n = x.len() / dim;
    if n < 2 {
        return f64::NAN;
    }
    let d = |a: usize, b: usize| -> f64 {
        (0..dim).map(|k| (x[a * dim + k] as f64 - x[b * dim + k] as f64).powi(2)).sum::<f64>().sqrt()
    };
    let (mut nn_sum, mut all_sum) = (0.0, 0.0);
    for a in 0..n {
        let mut best = f64::INFINITY;
        for b in 0..n {
            if a != b {
                let v = d(a, b);
                best = best.min(v);
                all_sum += v;
            }
        }
        nn_sum += best;
    }
    (nn_sum / n as f64) / (all_sum / (n * (n - 1)) as f64)
}

/// Mean and sample standard deviation.
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 { v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (m, var.sqrt())
}

fn fmt_ms(v: &[f64], scale: f64, digits: usize) -> String {
    if v.is_empty() || v.iter().any(|x| x.is_nan()) {
        return "n/a".into();
    }
    let (m, s) = mean_std(v);
    format!("{:.*} ± {:.*}", digits, m * scale, digits, s * scale)
}

/// One row of a comparison table.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub method: Method,
    pub name: &'static str,
    pub seeds: Vec<u64>,
    pub test_accuracy: Vec<f64>,
    pub auc: Vec<f64>,
    pub nn_spacing: Vec<f64>,
}

/// Renders rows as a Markdown table (mean ± sample std over seeds).
pub fn table(rows: &[Row]) -> String {
    let mut s =
        String::from("| method | test accuracy (%) | importance AUC | NN spacing |\n| --- | --- | --- | --- |\n");
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            r.name,
            fmt_ms(&r.test_accuracy, 100.0, 2),
            fmt_ms(&r.auc, 1.0, 3),
            fmt_ms(&r.nn_spacing, 1.0, 4)
        ));
    }
    s
}

/// The seed's Figure 2: U(d̄) for several relative structure terms kappa at s = 1.
pub fn energy_figure(path: &Path) -> Result<()> {
    let series: Vec<plot::Series> = [0.5, 0.75, 1.0, 1.5, 2.0]
        .iter()
        .map(|&k| plot::Series {
            name: format!("kappa = {k}"),
            // Clipped at U = 2 so the minima at d = s / kappa stay visible next to the d -> 0 wall.
            points: (1..=400)
                .map(|i| 0.1 + i as f64 * 0.01)
                .map(|d| (d, pair_energy(d, 1.0, k)))
                .filter(|p| p.1 <= 2.0)
                .collect(),
            band: None,
        })
        .collect();
    plot::line_plot(
        path,
        "Pair energy U(d) = (s/d)^2 - 2 kappa s/d, minimum at d = s/kappa (s = 1)",
        "distance d / s",
        "U",
        &series,
    )
}

/// Progress callback: (runs done, runs total, the run now going).
pub type Progress<'a> = &'a mut dyn FnMut(usize, usize, &str);

/// Trains every method for every seed on the synthetic task and writes the run folder.
pub fn compare_synthetic(
    dev: &Device,
    cfg: &synthetic::SyntheticConfig,
    methods: &[Method],
    seeds: &[u64],
    out: &Path,
    progress: Progress,
) -> Result<String> {
    cfg.validate()?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let total = methods.len() * seeds.len();
    let mut rows = Vec::new();
    let mut importance_rows = Vec::new();
    let mut done = 0;
    for &method in methods {
        let mut row = Row {
            method,
            name: method.name(),
            seeds: seeds.to_vec(),
            test_accuracy: vec![],
            auc: vec![],
            nn_spacing: vec![],
        };
        let mut imp = Vec::new();
        for &seed in seeds {
            progress(done, total, &format!("{} seed {seed}", method.name()));
            let r = synthetic::run(dev, cfg, method, seed, || {})?;
            log_metrics(
                out,
                &[serde_json::json!({"method": method.slug(), "seed": seed, "epochs": cfg.epochs,
                "train_loss": r.final_train_loss, "test_accuracy": r.test_accuracy, "auc": r.auc, "nn_spacing": r.nn_spacing})],
            )?;
            row.test_accuracy.push(r.test_accuracy);
            row.nn_spacing.push(r.nn_spacing);
            if let Some(a) = r.auc {
                row.auc.push(a);
            }
            if let Some(m) = r.mean_importance.clone() {
                imp.push(m);
            }
            if seed == seeds[0] {
                let pts: Vec<(f64, f64, usize)> = r
                    .labels
                    .iter()
                    .enumerate()
                    .map(|(i, &c)| (r.latents[2 * i] as f64, r.latents[2 * i + 1] as f64, c as usize))
                    .collect();
                plot::scatter_plot(
                    out.join(format!("latent-{}.png", method.slug())),
                    &format!("{}: test latents z (seed {seed}, acc {:.1}%)", method.name(), 100.0 * r.test_accuracy),
                    &pts,
                    &["class 0".to_string(), "class 1".to_string()],
                    &[],
                )?;
            }
            done += 1;
        }
        if !imp.is_empty() {
            importance_rows.push((method, imp));
        }
        rows.push(row);
    }
    progress(done, total, "plots");
    for (method, imp) in &importance_rows {
        let k = cfg.tokens;
        let per_pos: Vec<Vec<f64>> = (0..k).map(|i| imp.iter().map(|m| m[i]).collect()).collect();
        let means: Vec<f64> = per_pos.iter().map(|v| mean_std(v).0).collect();
        let stds: Vec<f64> = per_pos.iter().map(|v| mean_std(v).1).collect();
        let labels: Vec<String> = (0..k).map(|i| format!("token {i}")).collect();
        let hl: Vec<bool> = (0..k).map(|i| cfg.informative.contains(&i)).collect();
        plot::bar_plot(
            out.join(format!("importance-{}.png", method.slug())),
            &format!("{}: mean learned importance per position (informative highlighted)", method.name()),
            &labels,
            &means,
            Some(&stds),
            &hl,
        )?;
    }
    energy_figure(&out.join("energy.png"))?;
    let md = table(&rows);
    let json = serde_json::json!({ "task": "synthetic", "config": cfg, "seeds": seeds, "rows": rows, "adapter": dev.describe() });
    write_atomic(out.join("results.json"), serde_json::to_string_pretty(&json).expect("serialisable").as_bytes())?;
    write_atomic(out.join("results.md"), md.as_bytes())?;
    Ok(md)
}

/// The real-data classifier tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClassifyTask {
    Fashion,
    Sentiment,
}

/// Mean ± std band over runs of per-epoch values.
fn band_series(name: &str, runs: &[Vec<f64>], scale: f64) -> plot::Series {
    let epochs = runs.iter().map(|r| r.len()).min().unwrap_or(0);
    let stats: Vec<(f64, f64)> =
        (0..epochs).map(|e| mean_std(&runs.iter().map(|r| r[e] * scale).collect::<Vec<_>>())).collect();
    plot::Series {
        name: name.to_string(),
        points: stats.iter().enumerate().map(|(e, &(m, _))| (e as f64 + 1.0, m)).collect(),
        band: Some(stats.iter().enumerate().map(|(e, &(m, s))| (e as f64 + 1.0, m - s, m + s)).collect()),
    }
}

/// Trains every method for every seed on a real-data classifier task and writes the run folder:
/// results.json / results.md, accuracy and loss curves, importance maps of the gated methods.
#[allow(clippy::too_many_arguments)] // the task's data, model config, methods, seeds and outputs
pub fn compare_classify(
    dev: &Device,
    task: ClassifyTask,
    cfg: &classify::ClassifyConfig,
    methods: &[Method],
    seeds: &[u64],
    data_dir: Option<&Path>,
    out: &Path,
    progress: Progress,
) -> Result<String> {
    use crate::data::fashion::{load_fashion, FashionSource};
    use crate::data::reviews::load_reviews;
    let (fashion, reviews) = match task {
        ClassifyTask::Fashion => {
            let src = data_dir.map_or(FashionSource::Auto, |d| FashionSource::Dir(d.to_path_buf()));
            (Some(load_fashion(src)?), None)
        }
        ClassifyTask::Sentiment => (None, Some(load_reviews(data_dir, 0, 64)?)),
    };
    let (data_desc, train_len) = match (&fashion, &reviews) {
        (Some(f), _) => (f.description(), f.train.len()),
        (_, Some(r)) => (r.description(), r.train.labels.len()),
        _ => unreachable!("one data set is loaded"),
    };
    cfg.validate(train_len)?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    progress(0, methods.len() * seeds.len(), &format!("data: {data_desc}"));
    let total = methods.len() * seeds.len();
    let (mut rows, mut runs) = (Vec::new(), Vec::new());
    let (mut acc_series, mut loss_series) = (Vec::new(), Vec::new());
    let mut done = 0;
    for &method in methods {
        let mut row = Row {
            method,
            name: method.name(),
            seeds: seeds.to_vec(),
            test_accuracy: vec![],
            auc: vec![],
            nn_spacing: vec![],
        };
        let (mut curves, mut losses) = (Vec::new(), Vec::new());
        for &seed in seeds {
            progress(done, total, &format!("{} seed {seed}", method.name()));
            // The first seed's model of every method is kept for `atomgrad explain`.
            let save = (seed == seeds[0]).then(|| out.join(format!("model-{}.safetensors", method.slug())));
            let r = match (&fashion, &reviews) {
                (Some(f), _) => classify::run_fashion(dev, f, cfg, method, seed, save.as_deref(), &mut || {})?,
                (_, Some(d)) => classify::run_sentiment(dev, d, cfg, method, seed, save.as_deref(), &mut || {})?,
                _ => unreachable!("one data set is loaded"),
            };
            row.test_accuracy.push(r.test_accuracy);
            row.nn_spacing.push(r.nn_spacing);
            let lines: Vec<serde_json::Value> = (0..r.curve.len())
                .map(|e| {
                    serde_json::json!({"method": method.slug(), "seed": seed, "epoch": e + 1,
                        "train_loss": r.train_loss[e], "test_accuracy": r.curve[e]})
                })
                .collect();
            log_metrics(out, &lines)?;
            curves.push(r.curve.clone());
            losses.push(r.train_loss.clone());
            if let (Some(maps), true) = (&r.importance, seed == seeds[0]) {
                let title = format!("{}: learned token importance (seed {seed})", method.name());
                match (&fashion, &reviews) {
                    (Some(f), _) => classify::fashion_importance_grid(
                        &out.join(format!("importance-{}.png", method.slug())),
                        &f.test,
                        maps,
                        true,
                    )?,
                    (_, Some(d)) => classify::sentiment_importance_html(
                        &out.join(format!("importance-{}.html", method.slug())),
                        d,
                        maps,
                        &title,
                    )?,
                    _ => {}
                }
            }
            runs.push(r);
            done += 1;
        }
        acc_series.push(band_series(method.name(), &curves, 100.0));
        loss_series.push(band_series(method.name(), &losses, 1.0));
        rows.push(row);
    }
    let name = if task == ClassifyTask::Fashion { "fashion" } else { "sentiment" };
    plot::line_plot(
        out.join("accuracy.png"),
        &format!("{name}: test accuracy (mean ± std over seeds)"),
        "epoch",
        "test accuracy (%)",
        &acc_series,
    )?;
    plot::line_plot(
        out.join("loss.png"),
        &format!("{name}: training loss (mean ± std over seeds)"),
        "epoch",
        "loss",
        &loss_series,
    )?;
    let md = table(&rows);
    let json = serde_json::json!({
        "task": name, "data": data_desc, "config": cfg, "seeds": seeds, "rows": rows, "runs": runs, "adapter": dev.describe()
    });
    write_atomic(out.join("results.json"), serde_json::to_string_pretty(&json).expect("serialisable").as_bytes())?;
    write_atomic(out.join("results.md"), format!("data: {data_desc}\n\n{md}").as_bytes())?;
    Ok(format!("data: {data_desc}\n\n{md}"))
}

/// Appends one JSON object per line to `metrics.jsonl` in a run folder, flushed line by line, so
/// an interrupted comparison keeps the metrics of every run it finished.
pub fn log_metrics(out: &Path, lines: &[serde_json::Value]) -> Result<()> {
    use std::io::Write;
    let path = out.join("metrics.jsonl");
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| Error::io(&path, e))?;
    for l in lines {
        writeln!(f, "{l}").map_err(|e| Error::io(&path, e))?;
    }
    f.flush().map_err(|e| Error::io(&path, e))
}

/// `runs/<task>-<unix seconds>` unless the caller names a folder.
pub fn default_out(task: &str) -> PathBuf {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    PathBuf::from("runs").join(format!("{task}-{t}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn auc_of_separated_tied_and_reversed_scores() {
        assert_eq!(auc(&[0.9, 0.8], &[0.1, 0.2]), 1.0);
        assert_eq!(auc(&[0.1], &[0.9]), 0.0);
        assert_eq!(auc(&[0.5, 0.5], &[0.5]), 0.5);
        assert!((auc(&[0.3, 0.7], &[0.5]) - 0.5).abs() < 1e-12);
    }
    #[test]
    fn nn_spacing_is_scale_free() {
        let x = [0.0f32, 0.0, 1.0, 0.0, 0.0, 2.0, 5.0, 5.0];
        let y: Vec<f32> = x.iter().map(|v| v * 3.0).collect();
        assert!((nn_spacing(&x, 2) - nn_spacing(&y, 2)).abs() < 1e-6);
    }
    #[test]
    fn mean_std_uses_the_sample_std() {
        let (m, s) = mean_std(&[1.0, 3.0]);
        assert_eq!(m, 2.0);
        assert!((s - 2f64.sqrt()).abs() < 1e-12);
    }
}
