//! The synthetic token experiments (the seed's Figures 2 and 3): two classes whose samples are 8
//! tokens, of which only a few carry the class signal, so the ground-truth important tokens are
//! known and importance recovery can be scored. The planted variant ([`SyntheticConfig::planted`])
//! adds tokens that are (nearly) the same in every sample, so a third kind of token is known:
//! class-informative, varying without class information, and constant.
//!
//! Model, per the spec: a shared per-token MLP (token features + one-hot position) gives tokens
//! h [N, n, m]; the importance head w = sigmoid(h.u + c) gates them (`gated` methods); a linear map
//! of the flattened (gated) tokens gives the 2-D latent z; a linear head classifies z.

use crate::atom::{importance, AtomConfig, TokenMask};
use crate::autodiff::{Param, Tape, Var};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::experiments::method::{objective, Method, Regularisers};
use crate::experiments::protocol::{Classifier, Report};
use crate::experiments::stats::{auc, class_gap, first_two_components, nn_spacing};
use crate::experiments::terms::{self, TermsLog};
use crate::nn::{sub_seed, Activation, Linear, Mlp};
use crate::ops::reduce::argmax;
use crate::optim::{Adam, AdamConfig, Optimizer};
use crate::plot;
use crate::rng::Rng;
use crate::tensor::Tensor;
use crate::train::{Eval, FitOptions, Learner};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SyntheticConfig {
    pub train: usize,
    /// Validation samples, held out from the same generator as the training samples.
    pub val: usize,
    pub test: usize,
    /// Seed of the data set (fixed: seeds of a comparison vary the model and batch order, not the data).
    pub data_seed: u64,
    /// Tokens per sample.
    pub tokens: usize,
    /// Features per token.
    pub token_dim: usize,
    /// Positions that carry the class signal.
    pub informative: Vec<usize>,
    /// Positions whose features are one fixed vector in every sample (plus `constant_noise`);
    /// the others that are not informative vary, N(0, I), without class information.
    pub constant: Vec<usize>,
    /// Standard deviation of the constant tokens' noise.
    pub constant_noise: f32,
    /// Class mean offset on the first feature of informative tokens (noise has std 1).
    pub signal: f32,
    pub hidden: usize,
    /// Token feature width m.
    pub m: usize,
    /// Width of the latent z (2 can be plotted as it is; wider latents are plotted by their first
    /// two principal components).
    pub latent_dim: usize,
    pub epochs: usize,
    pub batch: usize,
    pub lr: f32,
    /// Weight of every regulariser (L_A, hinge, NT-Xent).
    pub lambda: f32,
    /// L_A's soft floor `d̄' = sqrt(d̄^2 + (s / r_max)^2)` on this task (`None`: off). 2, not the
    /// spec's 20: a 2-D batch always has close pairs, whose steep push at s/20 drowned the
    /// cross-entropy's gradient and stalled training (docs/atom-stability.md).
    pub r_max: Option<f32>,
    /// Hinge margin on latent distances.
    pub margin: f32,
    /// SimCLR temperature and the std of the Gaussian jitter that makes its two views.
    pub simclr_tau: f32,
    pub jitter: f32,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        SyntheticConfig {
            train: 2048,
            val: 512,
            test: 1024,
            data_seed: 0,
            tokens: 8,
            token_dim: 4,
            informative: vec![2, 5],
            constant: vec![],
            constant_noise: 0.05,
            signal: 0.9,
            hidden: 32,
            m: 16,
            latent_dim: 2,
            epochs: 12,
            batch: 64,
            lr: 3e-3,
            lambda: AtomConfig::default().lambda,
            r_max: Some(2.0),
            margin: 1.0,
            simclr_tau: 0.5,
            jitter: 0.1,
        }
    }
}

impl SyntheticConfig {
    /// The planted-structure task: 2 class-informative tokens (2, 5), 3 that vary without class
    /// information (1, 3, 6) and 3 that are nearly constant (0, 4, 7).
    pub fn planted() -> SyntheticConfig {
        SyntheticConfig { constant: vec![0, 4, 7], ..SyntheticConfig::default() }
    }
    /// Positions that are neither informative nor constant.
    pub fn varying(&self) -> Vec<usize> {
        (0..self.tokens).filter(|i| !self.informative.contains(i) && !self.constant.contains(i)).collect()
    }
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(format!("synthetic: {m}")));
        if self.batch < 2 || self.batch > self.train {
            return bad(format!("batch must be in 2..={} (pairs need 2 samples), got {}", self.train, self.batch));
        }
        if self.tokens == 0 || self.token_dim == 0 || self.m == 0 || self.hidden == 0 || self.val == 0 || self.test == 0
        {
            return bad("tokens, token_dim, m, hidden, val and test must be at least 1".into());
        }
        if let Some(&p) = self.informative.iter().chain(&self.constant).find(|&&p| p >= self.tokens) {
            return bad(format!("token position {p} is not below tokens = {}", self.tokens));
        }
        if self.informative.iter().any(|p| self.constant.contains(p)) {
            return bad("a token cannot be both informative and constant".into());
        }
        if self.latent_dim < 1 || self.latent_dim > 1024 {
            return bad(format!("--latent-dim must be in 1..=1024, got {}", self.latent_dim));
        }
        // Written so that NaN fails every comparison and is refused.
        let valid = self.lr > 0.0 && self.lr.is_finite() && self.lambda >= 0.0;
        if !valid {
            return bad(format!("lr must be > 0 and lambda >= 0, got lr {} lambda {}", self.lr, self.lambda));
        }
        Ok(())
    }
    /// Input width of a token: its features and a one-hot position.
    fn input_dim(&self) -> usize {
        self.token_dim + self.tokens
    }
}

/// Samples `[count, tokens, token_dim + tokens]` (features, then one-hot position) and labels.
#[derive(Clone, Debug)]
pub struct TokenData {
    pub x: Vec<f32>,
    pub y: Vec<u32>,
}

impl TokenData {
    pub fn len(&self) -> usize {
        self.y.len()
    }
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }
    /// The samples `range` (a contiguous slice).
    fn slice(&self, range: std::ops::Range<usize>, per: usize) -> TokenData {
        TokenData { x: self.x[range.start * per..range.end * per].to_vec(), y: self.y[range].to_vec() }
    }
}

/// The task's data set: train and validation drawn from one stream (the validation samples are
/// the last `val` of it), test from another, all from `data_seed`.
#[derive(Clone, Debug)]
pub struct SyntheticData {
    pub train: TokenData,
    pub val: TokenData,
    pub test: TokenData,
    /// The configuration it was generated with.
    pub config: SyntheticConfig,
}

impl SyntheticData {
    pub fn generate(cfg: &SyntheticConfig) -> SyntheticData {
        let per = cfg.tokens * cfg.input_dim();
        let all = generate(cfg, cfg.train + cfg.val, sub_seed(cfg.data_seed, 10));
        SyntheticData {
            train: all.slice(0..cfg.train, per),
            val: all.slice(cfg.train..cfg.train + cfg.val, per),
            test: generate(cfg, cfg.test, sub_seed(cfg.data_seed, 11)),
            config: cfg.clone(),
        }
    }
    pub fn description(&self, cfg: &SyntheticConfig) -> String {
        let kinds = if cfg.constant.is_empty() {
            format!("informative {:?}", cfg.informative)
        } else {
            format!("informative {:?}, varying {:?}, constant {:?}", cfg.informative, cfg.varying(), cfg.constant)
        };
        format!(
            "{} tokens (data seed {}): {} train / {} val / {} test samples of {} tokens, {kinds}",
            if cfg.constant.is_empty() { "synthetic" } else { "planted-structure" },
            cfg.data_seed,
            self.train.len(),
            self.val.len(),
            self.test.len(),
            cfg.tokens,
        )
    }
}

/// Class c in {0, 1}; informative tokens are N((2c - 1) signal e_1, I), constant tokens a fixed
/// vector (one per position, drawn from `data_seed`) plus N(0, constant_noise^2 I), the others
/// N(0, I) for both classes. The Bayes accuracy with two informative tokens is
/// Phi(sqrt(2) signal) (0.90 at 0.9).
pub fn generate(cfg: &SyntheticConfig, count: usize, seed: u64) -> TokenData {
    let mut fixed_rng = Rng::new(sub_seed(cfg.data_seed, 12));
    let fixed: Vec<f32> = (0..cfg.tokens * cfg.token_dim).map(|_| fixed_rng.normal() as f32).collect();
    let mut rng = Rng::new(seed);
    let d = cfg.input_dim();
    let mut x = vec![0f32; count * cfg.tokens * d];
    let mut y = Vec::with_capacity(count);
    for a in 0..count {
        let c = (a % 2) as u32;
        y.push(c);
        for i in 0..cfg.tokens {
            let t = &mut x[(a * cfg.tokens + i) * d..(a * cfg.tokens + i + 1) * d];
            for v in &mut t[..cfg.token_dim] {
                *v = rng.normal() as f32;
            }
            if cfg.informative.contains(&i) {
                t[0] += if c == 1 { cfg.signal } else { -cfg.signal };
            }
            if cfg.constant.contains(&i) {
                for (k, v) in t[..cfg.token_dim].iter_mut().enumerate() {
                    *v = fixed[i * cfg.token_dim + k] + cfg.constant_noise * *v;
                }
            }
            t[cfg.token_dim + i] = 1.0;
        }
    }
    TokenData { x, y }
}

pub struct Model {
    tok1: Linear,
    tok2: Linear,
    u: Param,
    c: Param,
    to_z: Linear,
    head: Linear,
    /// SimCLR's projection head (only trained by the SimCLR method).
    proj: Mlp,
}

/// What one forward pass exposes to the losses.
pub struct Forward {
    pub h: Var,
    pub w: Option<Var>,
    pub z: Var,
    pub logits: Var,
}

impl Model {
    pub fn new(dev: &Device, cfg: &SyntheticConfig, seed: u64) -> Result<Model> {
        let s = |i| sub_seed(seed, i);
        Ok(Model {
            tok1: Linear::new(dev, "tok1", cfg.input_dim(), cfg.hidden, s(1))?,
            tok2: Linear::new(dev, "tok2", cfg.hidden, cfg.m, s(2))?,
            u: Param::new("imp.u", Tensor::rand_uniform(dev, &[cfg.m], -0.1, 0.1, s(3))?),
            c: Param::new("imp.c", Tensor::zeros(dev, &[1])?),
            to_z: Linear::new(dev, "to_z", cfg.tokens * cfg.m, cfg.latent_dim, s(4))?,
            head: Linear::new(dev, "head", cfg.latent_dim, 2, s(5))?,
            proj: Mlp::new(dev, "proj", &[cfg.latent_dim, 16, 8], Activation::Relu, s(6))?,
        })
    }

    /// Every parameter (gate and projection head included), by name: what checkpoints hold.
    pub fn tensors(&self) -> Vec<(String, Tensor)> {
        let mut p = self.params(Method::Atom);
        p.extend(self.proj.params());
        p.iter().map(|p| (p.name(), p.value())).collect()
    }

    /// The importance head's parameters (u, c).
    pub fn gate_params(&self) -> Vec<Param> {
        vec![self.u.clone(), self.c.clone()]
    }

    pub fn params(&self, method: Method) -> Vec<Param> {
        let mut p = [self.tok1.params(), self.tok2.params(), self.to_z.params(), self.head.params()].concat();
        if method.gated() {
            p.extend([self.u.clone(), self.c.clone()]);
        }
        if method == Method::SimClr {
            p.extend(self.proj.params());
        }
        p
    }

    pub fn forward(&self, tape: &Tape, x: &Var, gated: bool, mask: &TokenMask) -> Result<Forward> {
        let h = self.tokens(tape, x)?;
        let w = if gated { Some(self.gate(tape, &h, mask)?) } else { None };
        let z = self.latent(tape, &h, w.as_ref())?;
        let logits = self.classify(tape, &z)?;
        Ok(Forward { h, w, z, logits })
    }

    /// The forward pass in its four pieces ([`Model::forward`] chains them; the per-term
    /// diagnostics in `terms` put probes between them). Tokens `h [N, n, m]` of inputs `x [N, n, d]`.
    pub fn tokens(&self, tape: &Tape, x: &Var) -> Result<Var> {
        let (n, t, d) = (x.shape()[0], x.shape()[1], x.shape()[2]);
        let hidden = self.tok1.forward(tape, &x.reshape(&[n * t, d])?)?.relu()?;
        let m = self.tok2.w.shape()[1];
        self.tok2.forward(tape, &hidden)?.reshape(&[n, t, m])
    }
    /// Importances `w [N, n]` of tokens `h`.
    pub fn gate(&self, tape: &Tape, h: &Var, mask: &TokenMask) -> Result<Var> {
        importance(h, &tape.param(&self.u), &tape.param(&self.c), mask)
    }
    /// The latent `z [N, 2]` of tokens `h`, gated by `w` when given.
    pub fn latent(&self, tape: &Tape, h: &Var, w: Option<&Var>) -> Result<Var> {
        let (n, t, m) = (h.shape()[0], h.shape()[1], h.shape()[2]);
        let feats = match w {
            Some(w) => h.mul(&w.reshape(&[n, t, 1])?)?,
            None => h.clone(),
        };
        self.to_z.forward(tape, &feats.reshape(&[n, t * m])?)
    }
    /// Class logits of latents `z`.
    pub fn classify(&self, tape: &Tape, z: &Var) -> Result<Var> {
        self.head.forward(tape, z)
    }
}

fn upload_batch(
    dev: &Device,
    cfg: &SyntheticConfig,
    data: &TokenData,
    idx: &[usize],
    jitter: Option<&mut Rng>,
) -> Result<Tensor> {
    let per = cfg.tokens * cfg.input_dim();
    let mut x = Vec::with_capacity(idx.len() * per);
    for &i in idx {
        x.extend_from_slice(&data.x[i * per..(i + 1) * per]);
    }
    if let Some(rng) = jitter {
        // Gaussian jitter on token features only (the one-hot position stays clean).
        for (k, v) in x.iter_mut().enumerate() {
            if k % cfg.input_dim() < cfg.token_dim {
                *v += cfg.jitter * rng.normal() as f32;
            }
        }
    }
    Tensor::from_slice(dev, &x, &[idx.len(), cfg.tokens, cfg.input_dim()])
}

/// The token model with one method's objective, as a [`Learner`].
pub struct SyntheticLearner<'a> {
    dev: Device,
    cfg: SyntheticConfig,
    method: Method,
    seed: u64,
    data: &'a SyntheticData,
    pub model: Model,
    opt: Adam,
    atom: AtomConfig,
    mask: TokenMask,
    /// Per-term diagnostics ([`Classifier::log_terms`]); `None`: off.
    terms: Option<TermsLog>,
}

/// What the model computes on a whole split.
struct Outputs {
    accuracy: f64,
    latents: Vec<f32>,
    importance: Option<Vec<f32>>,
}

impl<'a> SyntheticLearner<'a> {
    pub fn new(
        dev: &Device,
        cfg: &SyntheticConfig,
        data: &'a SyntheticData,
        method: Method,
        seed: u64,
    ) -> Result<SyntheticLearner<'a>> {
        cfg.validate()?;
        let model = Model::new(dev, cfg, sub_seed(seed, 12))?;
        Ok(SyntheticLearner {
            dev: dev.clone(),
            cfg: cfg.clone(),
            method,
            seed,
            data,
            opt: Adam::new(model.params(method), AdamConfig { lr: cfg.lr, ..AdamConfig::default() })?,
            atom: AtomConfig { lambda: cfg.lambda, r_max: cfg.r_max, ..AtomConfig::default() },
            mask: TokenMask::new(dev, &vec![cfg.tokens; cfg.batch], cfg.tokens)?,
            model,
            terms: None,
        })
    }
    /// The per-term diagnostics recorded so far.
    pub fn terms(&self) -> Option<&TermsLog> {
        self.terms.as_ref()
    }
    /// The atom regulariser's settings (diagnostic harnesses replace them with [`Self::with_atom`]).
    pub fn atom(&self) -> &AtomConfig {
        &self.atom
    }
    pub fn with_atom(mut self, atom: AtomConfig) -> Self {
        self.atom = atom;
        self
    }
    pub fn fit_options(&self) -> FitOptions {
        let (epochs, batch) = (self.cfg.epochs, self.cfg.batch);
        FitOptions { epochs, batch, seed: sub_seed(self.seed, 13), detect_anomaly: false, schedule: None }
    }
    /// The model on a whole split (no grad).
    fn outputs(&self, split: &TokenData) -> Result<Outputs> {
        let n = split.len();
        let tape = Tape::no_grad();
        let mask = TokenMask::new(&self.dev, &vec![self.cfg.tokens; n], self.cfg.tokens)?;
        let idx: Vec<usize> = (0..n).collect();
        let x = tape.constant(upload_batch(&self.dev, &self.cfg, split, &idx, None)?);
        let f = self.model.forward(&tape, &x, self.method.gated(), &mask)?;
        let pred = argmax(f.logits.value(), 1, false)?.to_vec_u32()?;
        let accuracy = pred.iter().zip(&split.y).filter(|(p, y)| p == y).count() as f64 / n as f64;
        let importance = f.w.as_ref().map(|w| w.value().to_vec()).transpose()?;
        Ok(Outputs { accuracy, latents: f.z.value().to_vec()?, importance })
    }
}

impl Learner for SyntheticLearner<'_> {
    fn tensors(&self) -> Vec<(String, Tensor)> {
        self.model.tensors()
    }
    fn optimizer(&mut self) -> &mut dyn Optimizer {
        &mut self.opt
    }
    fn train_len(&self) -> usize {
        self.data.train.len()
    }
    fn loss(&mut self, tape: &Tape, idx: &[usize], step: usize, rng: &mut Rng) -> Result<Var> {
        let (dev, cfg, model, mask, train) = (&self.dev, &self.cfg, &self.model, &self.mask, &self.data.train);
        let xt = upload_batch(dev, cfg, train, idx, None)?;
        let labels: Vec<u32> = idx.iter().map(|&i| train.y[i]).collect();
        let y = Tensor::from_u32(dev, &labels, &[idx.len()])?;
        if let Some(log) = self.terms.as_mut().filter(|l| l.due(step)) {
            let lambda = if self.method == Method::Atom { self.atom.lambda_at(step) } else { 0.0 };
            let batch = terms::Batch { x: &xt, labels: &y, y: &labels, mask };
            let (params, gate) = (model.params(self.method), model.gate_params());
            let r = terms::measure(
                model,
                &params,
                &gate,
                &batch,
                &self.atom,
                lambda,
                &cfg.informative,
                step,
                log.steps_per_epoch,
            )?;
            log.push(r)?;
        }
        let x = tape.constant(xt);
        let f = model.forward(tape, &x, self.method.gated(), mask)?;
        let ce = f.logits.cross_entropy(&y)?;
        let reg = Regularisers { atom: &self.atom, lambda: cfg.lambda, margin: cfg.margin, tau: cfg.simclr_tau };
        objective(self.method, ce, &f.z, &f.h, f.w.as_ref(), mask, reg, step, || {
            let mut views = Vec::new();
            for _ in 0..2 {
                let xv = tape.constant(upload_batch(dev, cfg, train, idx, Some(&mut *rng))?);
                let zv = model.forward(tape, &xv, false, mask)?.z;
                views.push(model.proj.forward(tape, &zv)?);
            }
            Ok((views.remove(0), views.remove(0)))
        })
    }
    fn evaluate(&mut self) -> Result<Eval> {
        if let Some(log) = &self.terms {
            log.draw()?;
        }
        Ok(Eval { val: self.outputs(&self.data.val)?.accuracy, test: self.outputs(&self.data.test)?.accuracy })
    }
}

impl Classifier for SyntheticLearner<'_> {
    /// Per-term diagnostics of the gated methods into `dir/terms.jsonl` and `terms.png` (about
    /// `per_epoch` records an epoch; the trajectory is unchanged, `tests/terms.rs`).
    fn log_terms(&mut self, dir: &Path, per_epoch: usize) {
        if self.method.gated() {
            let steps = self.cfg.train / self.cfg.batch;
            self.terms = Some(TermsLog::new(steps, per_epoch, Some(dir.join("terms.jsonl"))));
        }
    }

    /// On the test split: the importance AUCs (informative against the other tokens; with
    /// constant tokens also varying against constant) and the mean importance per position (gated
    /// methods), the latents' nearest-neighbour spacing and class gap; draws `latent.png` (the
    /// seed's Figure 3a) and, gated, `importance.png` (Figure 3b).
    fn report(&mut self, dir: &Path, title: &str) -> Result<Report> {
        let (cfg, test) = (&self.cfg, &self.data.test);
        let out = self.outputs(test)?;
        let (n, dim) = (test.len(), cfg.latent_dim);
        let mut report = Report::default();
        report.metrics.insert("nn_spacing".into(), nn_spacing(&out.latents, dim));
        report.metrics.insert("class_gap".into(), class_gap(&out.latents, dim, &test.y));
        if let Some(w) = &out.importance {
            let at = |positions: &[usize]| -> Vec<f64> {
                (0..n).flat_map(|a| positions.iter().map(move |&i| w[a * cfg.tokens + i] as f64)).collect()
            };
            let rest: Vec<usize> = (0..cfg.tokens).filter(|i| !cfg.informative.contains(i)).collect();
            report.metrics.insert("auc".into(), auc(&at(&cfg.informative), &at(&rest)));
            if !cfg.constant.is_empty() {
                report.metrics.insert("auc_varying".into(), auc(&at(&cfg.varying()), &at(&cfg.constant)));
            }
            let mean: Vec<f64> =
                (0..cfg.tokens).map(|i| (0..n).map(|a| w[a * cfg.tokens + i] as f64).sum::<f64>() / n as f64).collect();
            let labels: Vec<String> = (0..cfg.tokens).map(|i| format!("token {i}")).collect();
            let hl: Vec<bool> = (0..cfg.tokens).map(|i| cfg.informative.contains(&i)).collect();
            plot::bar_plot(
                dir.join("importance.png"),
                &format!("{title}: mean learned importance per position (informative highlighted)"),
                &labels,
                &mean,
                None,
                &hl,
            )?;
            report.importance = Some(mean);
        }
        let pts: Vec<(f64, f64, usize)> = first_two_components(&out.latents, dim)
            .into_iter()
            .zip(&test.y)
            .map(|((a, b), &c)| (a, b, c as usize))
            .collect();
        let what = if dim == 2 {
            "test latents z".to_string()
        } else {
            format!("{dim}-d test latents z, first two principal components")
        };
        plot::scatter_plot(
            dir.join("latent.png"),
            &format!("{title}: {what} (test accuracy {:.1}%)", 100.0 * out.accuracy),
            &pts,
            &["class 0".to_string(), "class 1".to_string()],
            &[],
        )?;
        Ok(report)
    }
}

/// The comparison's synthetic figures: per gated method the mean importance per position over
/// seeds (`importance-<method>.png`, the seed's Figure 3b) and the pair energy (`energy.png`,
/// Figure 2).
pub fn compare_figures(
    out: &Path,
    rows: &[crate::experiments::compare::Row],
    records: &[(std::path::PathBuf, crate::experiments::protocol::RunRecord)],
) -> Result<()> {
    let cfg = SyntheticConfig::default();
    for row in rows {
        let imp: Vec<&Vec<f64>> = records
            .iter()
            .filter(|(_, r)| r.options.method == row.method && r.options.lambda == row.lambda)
            .filter_map(|(_, r)| r.report.importance.as_ref())
            .collect();
        if imp.is_empty() {
            continue;
        }
        let k = imp[0].len();
        let per_pos: Vec<Vec<f64>> = (0..k).map(|i| imp.iter().map(|m| m[i]).collect()).collect();
        let means: Vec<f64> = per_pos.iter().map(|v| crate::experiments::stats::mean_std(v).0).collect();
        let stds: Vec<f64> = per_pos.iter().map(|v| crate::experiments::stats::mean_std(v).1).collect();
        let labels: Vec<String> = (0..k).map(|i| format!("token {i}")).collect();
        let hl: Vec<bool> = (0..k).map(|i| cfg.informative.contains(&i)).collect();
        plot::bar_plot(
            out.join(format!("importance-{}.png", row.method.slug())),
            &format!(
                "{}: mean learned importance per position over {} seeds (informative highlighted)",
                row.name,
                imp.len()
            ),
            &labels,
            &means,
            Some(&stds),
            &hl,
        )?;
    }
    energy_figure(&out.join("energy.png"))
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
                .map(|d| (d, crate::atom::cpu::pair_energy(d, 1.0, k)))
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
