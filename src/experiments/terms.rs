//! Per-term diagnostics of the atom objective `L = CE + lambda * L_A + mu_w * C_w` on the
//! synthetic task (issue 21): at logging points (about 10 per epoch) the training batch is run
//! again on separate tapes, once per term, with zero-valued probes added at the tokens h, the
//! importances w and the latent z, so one backward pass per term gives that term's gradient at
//! h, w, z and at every parameter. What is recorded ([`TermStats`]) goes to `terms.jsonl` in the
//! run folder and is drawn as `terms.png` ([`draw`]).
//!
//! The measurement must not change the training trajectory: it draws no random numbers, never
//! touches the optimizer, and leaves every [`Param::grad`] as it found it (each parameter's
//! gradient is saved before and put back after; the extra backward passes only add to it in
//! between). `tests/terms.rs` checks that a run with logging ends with bit-identical weights.

use crate::atom::{atom_terms, importance_budget, AtomConfig, TokenMask};
use crate::autodiff::{Param, Tape, Var};
use crate::error::{Error, Result};
use crate::experiments::stats::auc;
use crate::experiments::synthetic::Model;
use crate::plot::{self, write_atomic, Series};
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Norms of one term's (unweighted) gradient at the probes and at the parameters.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct GradNorms {
    /// At the latent z `[N, D]` (Frobenius norm over the batch).
    pub z: f64,
    /// At the importances w `[N, n]` (the total derivative: directly and through the gate into z).
    pub w: f64,
    /// At the tokens h `[N, n, m]` (directly, through w and through z).
    pub h: f64,
    /// At the importance head's parameters (u, c).
    pub gate: f64,
    /// At every parameter of the model.
    pub params: f64,
}

/// Everything recorded at one logging point, for the batch of that step, before its update.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TermStats {
    /// Optimizer steps taken before this batch.
    pub step: usize,
    /// `step / steps per epoch`.
    pub epoch: f64,
    /// The weights the step uses: `lambda_at(step)` (0 for methods without L_A) and mu_w.
    pub lambda: f64,
    pub mu_w: f64,
    /// Cross-entropy, L_A and C_w of the batch (unweighted).
    pub ce: f64,
    pub l_a: f64,
    pub c_w: f64,
    /// Accuracy of the batch's logits.
    pub batch_acc: f64,
    /// Mean importance over the batch, over the informative and over the other token positions.
    pub mean_w: f64,
    pub w_informative: f64,
    pub w_noise: f64,
    /// AUC of the batch's importances, informative against the other positions.
    pub batch_auc: f64,
    /// Mean importance per token position, and the class-carrying positions.
    pub w_pos: Vec<f64>,
    pub informative: Vec<usize>,
    /// rms(z - mean z) of the raw latents (before L_A's normalisation).
    pub z_spread: f64,
    /// Standard deviation of kappa_AB over the pairs A != B.
    pub kappa_std: f64,
    /// The batch's mean structure distance mean_{A != B} k_AB.
    pub k_mean: f64,
    /// Mean over samples of the nearest other sample's d̄ over the batch mean s (L_A's latents).
    pub nn_ratio: f64,
    /// Correlation over pairs of kappa_AB with the normalised distance d̄_AB / s.
    pub kappa_dist_corr: f64,
    /// Gradient norms of CE, L_A and C_w (unweighted: multiply by `lambda`, `mu_w` for what the
    /// step receives).
    pub g_ce: GradNorms,
    pub g_la: GradNorms,
    pub g_cw: GradNorms,
    /// The push each term gives the importances of each token position: minus its gradient at
    /// w, averaged over the batch (positive: the term raises that position's importance).
    pub push_ce_w: Vec<f64>,
    pub push_la_w: Vec<f64>,
    /// Cosine between CE's and L_A's gradients at w and at the parameters (0 if either is 0).
    pub cos_ce_la_w: f64,
    pub cos_ce_la_params: f64,
    /// Cosine between CE's and L_A's gradients at z.
    pub cos_ce_la_z: f64,
}

/// Which term a probe pass differentiates.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Term {
    Ce,
    La,
    Cw,
}

/// One probe pass: the term's value, the gradients at h, w, z and every parameter (host copies).
struct Pass {
    value: f64,
    gz: Vec<f32>,
    gw: Vec<f32>,
    gh: Vec<f32>,
    gate: Vec<f32>,
    params: Vec<f32>,
    /// Forward values (the same in every pass): z, w and logits, and the atom terms' kappa and d̄.
    z: Vec<f32>,
    w: Vec<f32>,
    logits: Vec<f32>,
    kappa: Vec<f32>,
    dbar: Vec<f32>,
    stats: Vec<f32>,
}

fn host(t: Option<&Tensor>, len: usize) -> Result<Vec<f32>> {
    match t {
        Some(t) => t.to_vec(),
        None => Ok(vec![0.0; len]),
    }
}

fn norm(v: &[f32]) -> f64 {
    v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (na, nb) = (norm(a), norm(b));
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum::<f64>() / (na * nb)
}

/// Runs the batch forward on a fresh tape with zero probes at h, w and z, differentiates `term`
/// and reads everything back. Parameter gradients are cleared first; the caller restores them.
fn pass(model: &Model, params: &[Param], gate: &[Param], b: &Batch, cfg: &AtomConfig, term: Term) -> Result<Pass> {
    let dev = b.x.device();
    let tape = Tape::new();
    let x = tape.constant(b.x.clone());
    let h0 = model.tokens(&tape, &x)?;
    let ph = tape.leaf(Tensor::zeros(dev, h0.shape())?);
    let h = h0.add(&ph)?;
    let w0 = model.gate(&tape, &h, b.mask)?;
    let pw = tape.leaf(Tensor::zeros(dev, w0.shape())?);
    let w = w0.add(&pw)?;
    let z0 = model.latent(&tape, &h, Some(&w))?;
    let pz = tape.leaf(Tensor::zeros(dev, z0.shape())?);
    let z = z0.add(&pz)?;
    let logits = model.classify(&tape, &z)?;
    let terms = atom_terms(&z, &h, &w, b.mask, cfg)?;
    let loss: Var = match term {
        Term::Ce => logits.cross_entropy(b.labels)?,
        Term::La => terms.l_a.clone(),
        Term::Cw => importance_budget(&w, b.mask, cfg.tau_lo, cfg.tau_hi)?,
    };
    for p in params {
        p.zero_grad();
    }
    let g = loss.backward()?;
    let flat = |ps: &[Param]| -> Result<Vec<f32>> {
        let mut v = Vec::new();
        for p in ps {
            let n = p.value().numel();
            v.extend(host(p.grad().as_ref(), n)?);
        }
        Ok(v)
    };
    Ok(Pass {
        value: loss.value().item()? as f64,
        gz: host(g.get(&pz), pz.value().numel())?,
        gw: host(g.get(&pw), pw.value().numel())?,
        gh: host(g.get(&ph), ph.value().numel())?,
        gate: flat(gate)?,
        params: flat(params)?,
        z: z.value().to_vec()?,
        w: w.value().to_vec()?,
        logits: logits.value().to_vec()?,
        kappa: terms.kappa.to_vec()?,
        dbar: terms.dbar.value().to_vec()?,
        stats: terms.stats.to_vec()?,
    })
}

/// One training batch as the step sees it.
pub struct Batch<'a> {
    /// Inputs `[N, n, d]`.
    pub x: &'a Tensor,
    /// Labels `[N]` (u32) and the same on the host.
    pub labels: &'a Tensor,
    pub y: &'a [u32],
    pub mask: &'a TokenMask,
}

fn grad_norms(p: &Pass) -> GradNorms {
    GradNorms { z: norm(&p.gz), w: norm(&p.gw), h: norm(&p.gh), gate: norm(&p.gate), params: norm(&p.params) }
}

/// Measures every term on one batch. `params` are all the model's trainable parameters, `gate`
/// the importance head's (u, c); their gradients are restored before returning. `lambda` is the
/// weight L_A gets at this step (0 for gate only), `informative` the class-carrying positions.
#[allow(clippy::too_many_arguments)]
pub fn measure(
    model: &Model,
    params: &[Param],
    gate: &[Param],
    batch: &Batch,
    cfg: &AtomConfig,
    lambda: f32,
    informative: &[usize],
    step: usize,
    steps_per_epoch: usize,
) -> Result<TermStats> {
    let saved: Vec<Option<Tensor>> = params.iter().map(|p| p.grad()).collect();
    let result = (|| -> Result<[Pass; 3]> {
        Ok([
            pass(model, params, gate, batch, cfg, Term::Ce)?,
            pass(model, params, gate, batch, cfg, Term::La)?,
            pass(model, params, gate, batch, cfg, Term::Cw)?,
        ])
    })();
    for (p, g) in params.iter().zip(saved) {
        p.set_grad(g);
    }
    let [ce, la, cw] = result?;
    let n = batch.y.len();
    let t = ce.w.len() / n;
    let d = ce.z.len() / n;
    // Importances: per position, informative against the rest.
    let (mut pos, mut neg) = (Vec::new(), Vec::new());
    let mut w_pos = vec![0.0; t];
    for a in 0..n {
        for (i, wp) in w_pos.iter_mut().enumerate() {
            let v = ce.w[a * t + i] as f64;
            *wp += v / n as f64;
            if informative.contains(&i) {
                pos.push(v)
            } else {
                neg.push(v)
            }
        }
    }
    let push = |g: &[f32]| -> Vec<f64> {
        (0..t).map(|i| -(0..n).map(|a| g[a * t + i] as f64).sum::<f64>() / n as f64).collect()
    };
    let mean = |v: &[f64]| if v.is_empty() { f64::NAN } else { v.iter().sum::<f64>() / v.len() as f64 };
    // Latent spread (raw z).
    let mut zm = vec![0.0; d];
    for (i, &v) in ce.z.iter().enumerate() {
        zm[i % d] += v as f64 / n as f64;
    }
    let z_spread = ((0..n * d).map(|i| (ce.z[i] as f64 - zm[i % d]).powi(2)).sum::<f64>() / (n * d) as f64).sqrt();
    // kappa and d̄ over the pairs A != B.
    let s = la.stats[0] as f64;
    let (mut kap, mut dist) = (Vec::new(), Vec::new());
    let mut nn = 0.0;
    for a in 0..n {
        let mut best = f64::INFINITY;
        for b in 0..n {
            if a != b {
                kap.push(la.kappa[a * n + b] as f64);
                let r = la.dbar[a * n + b] as f64 / s;
                dist.push(r);
                best = best.min(r);
            }
        }
        nn += best / n as f64;
    }
    let std = |v: &[f64]| {
        let m = mean(v);
        (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
    };
    let (km, dm, ks, ds) = (mean(&kap), mean(&dist), std(&kap), std(&dist));
    let corr = kap.iter().zip(&dist).map(|(k, r)| (k - km) * (r - dm)).sum::<f64>() / (kap.len() as f64 * ks * ds);
    let classes = ce.logits.len() / n;
    let correct = (0..n)
        .filter(|&a| {
            let row = &ce.logits[a * classes..(a + 1) * classes];
            let best = (0..classes).fold(0, |b, c| if row[c] > row[b] { c } else { b });
            best as u32 == batch.y[a]
        })
        .count();
    Ok(TermStats {
        step,
        epoch: step as f64 / steps_per_epoch as f64,
        lambda: lambda as f64,
        mu_w: cfg.mu_w as f64,
        ce: ce.value,
        l_a: la.value,
        c_w: cw.value,
        batch_acc: correct as f64 / n as f64,
        mean_w: mean(&ce.w.iter().map(|&v| v as f64).collect::<Vec<_>>()),
        w_informative: mean(&pos),
        w_noise: mean(&neg),
        batch_auc: auc(&pos, &neg),
        w_pos,
        informative: informative.to_vec(),
        z_spread,
        kappa_std: ks,
        k_mean: la.stats[1] as f64,
        nn_ratio: nn,
        kappa_dist_corr: corr,
        g_ce: grad_norms(&ce),
        g_la: grad_norms(&la),
        g_cw: grad_norms(&cw),
        push_ce_w: push(&ce.gw),
        push_la_w: push(&la.gw),
        cos_ce_la_w: cosine(&ce.gw, &la.gw),
        cos_ce_la_params: cosine(&ce.params, &la.params),
        cos_ce_la_z: cosine(&ce.gz, &la.gz),
    })
}

/// When to measure and where the records go.
#[derive(Clone, Debug)]
pub struct TermsLog {
    /// Measure before every `every`-th step (step 0 included).
    pub every: usize,
    pub steps_per_epoch: usize,
    /// `terms.jsonl`: one [`TermStats`] per line (appended; truncated at step 0).
    pub path: Option<PathBuf>,
    pub records: Vec<TermStats>,
}

impl TermsLog {
    /// About `per_epoch` records per epoch.
    pub fn new(steps_per_epoch: usize, per_epoch: usize, path: Option<PathBuf>) -> TermsLog {
        TermsLog { every: (steps_per_epoch / per_epoch.max(1)).max(1), steps_per_epoch, path, records: Vec::new() }
    }
    pub fn due(&self, step: usize) -> bool {
        step.is_multiple_of(self.every)
    }
    /// Keeps `r` and appends it to the file.
    pub fn push(&mut self, r: TermStats) -> Result<()> {
        if let Some(path) = &self.path {
            if r.step == 0 {
                let _ = std::fs::remove_file(path);
            }
            crate::fsio::append_line(path, &serde_json::to_string(&r).expect("serialisable"))?;
        }
        self.records.push(r);
        Ok(())
    }
    /// Draws `terms.png` next to the file from everything the file holds (a resumed run's
    /// earlier records included).
    pub fn draw(&self) -> Result<()> {
        let Some(path) = &self.path else { return Ok(()) };
        let records = read_jsonl(path)?;
        draw(&records, &path.with_extension("png"))
    }
}

/// The records of a `terms.jsonl` in step order (a step written twice, as by a resumed run,
/// keeps its last record; a line torn by a kill is dropped).
pub fn read_jsonl(path: &Path) -> Result<Vec<TermStats>> {
    let mut by_step = std::collections::BTreeMap::new();
    for v in crate::fsio::read_json_lines(path)? {
        if let Ok(r) = serde_json::from_value::<TermStats>(v) {
            by_step.insert(r.step, r);
        }
    }
    Ok(by_step.into_values().collect())
}

fn series(name: &str, rs: &[TermStats], f: impl Fn(&TermStats) -> f64) -> Series {
    Series::new(name, rs.iter().map(|r| (r.epoch, f(r))).collect())
}

/// Eight panels in one PNG (2 columns x 4 rows of the usual 800 x 500 charts): the loss terms,
/// the weighted gradient norms at z and w, at the parameters, the importances, the latent's
/// state, the agreement of CE's and L_A's gradients, the push each term gives the informative
/// and the other tokens' importances, and the ratio of L_A's gradient norms to CE's.
pub fn draw(rs: &[TermStats], png: &Path) -> Result<()> {
    let dir = png.parent().unwrap_or(Path::new("."));
    let stem = png.file_stem().and_then(|s| s.to_str()).unwrap_or("terms");
    let panel = |i: usize| dir.join(format!(".{stem}.panel{i}.png"));
    let x = "epoch";
    plot::line_plot(
        panel(0),
        "Loss terms of the batch (unweighted) and its accuracy",
        x,
        "value",
        &[
            series("CE", rs, |r| r.ce),
            series("L_A", rs, |r| r.l_a),
            series("C_w", rs, |r| r.c_w),
            series("batch accuracy", rs, |r| r.batch_acc),
        ],
    )?;
    plot::line_plot_log_y(
        panel(1),
        "Gradient norm each term gives the latent z and the importances w",
        x,
        "norm (weighted)",
        &[
            series("CE at z", rs, |r| r.g_ce.z),
            series("lambda L_A at z", rs, |r| r.lambda * r.g_la.z),
            series("CE at w", rs, |r| r.g_ce.w),
            series("lambda L_A at w", rs, |r| r.lambda * r.g_la.w),
            series("mu C_w at w", rs, |r| r.mu_w * r.g_cw.w),
        ],
    )?;
    plot::line_plot_log_y(
        panel(2),
        "Gradient norm each term gives the parameters",
        x,
        "norm (weighted)",
        &[
            series("CE, all", rs, |r| r.g_ce.params),
            series("lambda L_A, all", rs, |r| r.lambda * r.g_la.params),
            series("CE, gate u c", rs, |r| r.g_ce.gate),
            series("lambda L_A, gate u c", rs, |r| r.lambda * r.g_la.gate),
            series("mu C_w, gate u c", rs, |r| r.mu_w * r.g_cw.gate),
        ],
    )?;
    plot::line_plot(
        panel(3),
        "Importances: informative vs other tokens",
        x,
        "value",
        &[
            series("mean w, informative", rs, |r| r.w_informative),
            series("mean w, other", rs, |r| r.w_noise),
            series("mean w", rs, |r| r.mean_w),
            series("batch AUC", rs, |r| r.batch_auc),
        ],
    )?;
    plot::line_plot_log_y(
        panel(4),
        "Latent and structure: spread of z, of kappa, NN distance",
        x,
        "value",
        &[
            series("rms(z - mean z)", rs, |r| r.z_spread),
            series("std kappa", rs, |r| r.kappa_std),
            series("NN d / s", rs, |r| r.nn_ratio),
            series("mean k", rs, |r| r.k_mean),
        ],
    )?;
    plot::line_plot(
        panel(5),
        "Agreement of CE's and L_A's gradients (cosine)",
        x,
        "cosine",
        &[
            series("at z", rs, |r| r.cos_ce_la_z),
            series("at w", rs, |r| r.cos_ce_la_w),
            series("at the parameters", rs, |r| r.cos_ce_la_params),
            series("corr(kappa, d/s)", rs, |r| r.kappa_dist_corr),
        ],
    )?;
    let split = |r: &TermStats, v: &[f64], inf: bool| {
        let pick: Vec<f64> =
            v.iter().enumerate().filter(|(i, _)| r.informative.contains(i) == inf).map(|(_, &x)| x).collect();
        pick.iter().sum::<f64>() / pick.len().max(1) as f64
    };
    plot::line_plot(
        panel(6),
        "Push on the importances (minus the gradient at w), per token",
        x,
        "mean push (weighted)",
        &[
            series("CE, informative", rs, |r| split(r, &r.push_ce_w, true)),
            series("CE, other", rs, |r| split(r, &r.push_ce_w, false)),
            series("lambda L_A, informative", rs, |r| r.lambda * split(r, &r.push_la_w, true)),
            series("lambda L_A, other", rs, |r| r.lambda * split(r, &r.push_la_w, false)),
        ],
    )?;
    plot::line_plot_log_y(
        panel(7),
        "Ratio of L_A's weighted gradient norm to CE's",
        x,
        "lambda |grad L_A| / |grad CE|",
        &[
            series("at z", rs, |r| r.lambda * r.g_la.z / r.g_ce.z),
            series("at w", rs, |r| r.lambda * r.g_la.w / r.g_ce.w),
            series("at the gate u c", rs, |r| r.lambda * r.g_la.gate / r.g_ce.gate),
            series("at all parameters", rs, |r| r.lambda * r.g_la.params / r.g_ce.params),
        ],
    )?;
    let mut panels = Vec::new();
    for i in 0..8 {
        let p = panel(i);
        let img = image::open(&p).map_err(|e| Error::data(&p, format!("reading a panel back: {e}")))?.to_rgb8();
        let _ = std::fs::remove_file(&p);
        panels.push(img);
    }
    let (w, h) = (panels[0].width(), panels[0].height());
    let mut out = image::RgbImage::from_pixel(2 * w, 4 * h, image::Rgb([255, 255, 255]));
    for (i, p) in panels.iter().enumerate() {
        image::imageops::overlay(&mut out, p, ((i % 2) as u32 * w) as i64, ((i / 2) as u32 * h) as i64);
    }
    let mut bytes = Vec::new();
    image::DynamicImage::ImageRgb8(out)
        .write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
        .map_err(|e| Error::data(png, format!("encoding: {e}")))?;
    write_atomic(png, &bytes)
}
