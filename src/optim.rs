//! Optimizers (`shaders/optim.wgsl`): SGD with momentum, Adam and AdamW, each one fused kernel per
//! parameter that updates the parameter and its state (momentum buffer, or m and v) in place, and
//! gradient clipping by global norm computed entirely on the GPU.
//!
//! Semantics follow PyTorch (`torch.optim.SGD` without dampening/nesterov, `Adam`, `AdamW`,
//! `torch.nn.utils.clip_grad_norm_`); the f64 references of the same rules are in [`cpu`].
//!
//! Clipping design: an optimizer owns its clipping setting ([`Optimizer::set_clip`]). When set,
//! [`Optimizer::step`] first computes `[norm, scale]` over the gradients of *its* parameters with
//! [`clip_grad_norm`] (sums of squares per parameter, gathered into slots, then one kernel for
//! `norm = sqrt(sum)`, `scale = min(1, max_norm / (norm + 1e-6))`), and every update kernel
//! multiplies the gradient by `scale`, read from that GPU tensor: no readback, no extra pass over
//! the gradients, and the gradients themselves are left untouched. The `[norm, scale]` tensor of
//! the last step is [`Optimizer::grad_norm`], to read when printing. Without clipping the kernels
//! read a constant 1.0. Two optimizers over disjoint parameter sets (a GAN's generator and
//! discriminator) clip and step independently.
//!
//! A step only records dispatches: no flush, no readback, so a training step stays one submit.
//! The learning rate (and every other number) goes in the uniform block, so
//! [`Optimizer::set_lr`] between steps recompiles nothing. State tensors are created (zeroed) on
//! a parameter's first step with a gradient and live as long as the optimizer; parameters whose
//! gradient is `None` are skipped and their state (including Adam's per-parameter step count,
//! used for bias correction as in PyTorch) is untouched.

use crate::autodiff::Param;
use crate::device::{groups_1d, Device, WG};
use crate::error::{Error, Result};
use crate::ops::reduce::{reduce, Reduce};
use crate::tensor::{DType, Tensor};
use std::collections::HashMap;
use std::sync::Arc;

crate::shader!(SHADER = "optim");

/// Added to the norm before dividing, as in PyTorch's `clip_grad_norm_`.
pub const CLIP_EPS: f64 = 1e-6;

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    scale_at: u32,
    slot: u32,
    count: u32,
    lr: f32,
    momentum: f32,
    wd: f32,
    max_norm: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    l2: f32,
    decay: f32,
    step_size: f32,
    bc2_sqrt: f32,
    _pad: f32,
    ends: [u32; 4],
    ss: [f32; 4],
    bc: [f32; 4],
}

/// A learning-rate schedule over optimizer steps: a linear warm-up from 0 to `lr` over
/// `warmup_steps`, then `lr` held (`cosine: false`) or decayed along a half cosine to 0 at
/// `total_steps`. It depends on the step only, so a resumed run follows it exactly.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Schedule {
    pub lr: f32,
    pub warmup_steps: usize,
    pub total_steps: usize,
    pub cosine: bool,
}

impl Schedule {
    /// The learning rate of step `step` (0-based: the rate the step's update uses).
    pub fn lr_at(&self, step: usize) -> f32 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f32 / self.warmup_steps as f32;
        }
        if !self.cosine || self.total_steps <= self.warmup_steps {
            return self.lr;
        }
        let t = ((step - self.warmup_steps) as f64 / (self.total_steps - self.warmup_steps) as f64).min(1.0);
        (self.lr as f64 * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())) as f32
    }
}

/// The optimizer interface shared by [`Sgd`] and [`Adam`].
pub trait Optimizer {
    /// Records one update of every parameter that has a gradient (clipped first when
    /// [`Optimizer::set_clip`] is set). Records GPU work only: nothing is submitted or read back.
    fn step(&mut self) -> Result<()>;
    /// Drops the gradients of all parameters.
    fn zero_grad(&self) {
        for p in self.params() {
            p.zero_grad();
        }
    }
    fn params(&self) -> &[Param];
    fn lr(&self) -> f32;
    /// Changes the learning rate for the next steps (a uniform value: nothing is recompiled).
    fn set_lr(&mut self, lr: f32) -> Result<()>;
    /// Clips the gradients of this optimizer's parameters to a global L2 norm of at most
    /// `max_norm` on every step (`None`: no clipping).
    fn set_clip(&mut self, max_norm: Option<f32>) -> Result<()>;
    fn clip(&self) -> Option<f32>;
    /// `[norm, scale]` (shape `[2]`) computed by the last step with clipping: the global gradient
    /// norm before clipping and the factor applied. `None` before that or without clipping.
    fn grad_norm(&self) -> Option<Tensor>;
    /// Number of `step` calls so far (restored by `load_state`).
    fn step_count(&self) -> u64;
    /// Optimizer state for checkpoints: `("step", U32 [1])` with [`Optimizer::step_count`], then per
    /// parameter that has state `"<param name>.<field>"` (F32 tensors of the parameter's shape,
    /// live views that later steps keep updating; U32 `[1]` for per-parameter step counts).
    /// Sgd: `momentum_buffer`. Adam: `m`, `v`, `step`.
    fn state(&self) -> Result<Vec<(String, Tensor)>>;
    /// Replaces the whole state with one produced by [`Optimizer::state`] (tensors are copied;
    /// parameters without entries start fresh). Reads the U32 step counters back, so call it
    /// outside a training step.
    fn load_state(&mut self, state: &[(String, Tensor)]) -> Result<()>;
}

/// `[norm, scale]` (shape `[2]`) over the gradients of `params` that have one: `norm` is the global
/// L2 norm, `scale = min(1, max_norm / (norm + 1e-6))`. Computed on the GPU without a readback;
/// the gradients are not modified (the optimizers apply `scale` inside their update kernels).
pub fn clip_grad_norm(params: &[Param], max_norm: f32) -> Result<Tensor> {
    check_positive("clip_grad_norm", "max_norm", max_norm)?;
    let Some(first) = params.first() else {
        return Err(Error::Config("clip_grad_norm: no parameters".into()));
    };
    let dev = first.value().device().clone();
    let grads: Vec<Tensor> = params.iter().filter_map(|p| p.grad()).filter(|g| g.numel() > 0).collect();
    for g in &grads {
        g.expect("clip_grad_norm", DType::F32)?;
        same_device("clip_grad_norm", &dev, g.device())?;
    }
    let sums = Tensor::empty(&dev, "clip_grad_norm", &[grads.len()], DType::F32)?;
    for (slot, g) in grads.iter().enumerate() {
        let sq = reduce(&g.reshape(&[g.numel()])?, 0, Reduce::SumSq, false)?;
        let p = Params { slot: slot as u32, ..Default::default() };
        dev.dispatch(&SHADER, "put_slot", &[], bytemuck::bytes_of(&p), &[sq.bind(), sums.bind()], [1, 1, 1]);
    }
    let out = Tensor::empty(&dev, "clip_grad_norm", &[2], DType::F32)?;
    let p = Params { count: grads.len() as u32, max_norm, ..Default::default() };
    dev.dispatch(&SHADER, "clip_scale", &[], bytemuck::bytes_of(&p), &[sums.bind(), out.bind()], [1, 1, 1]);
    Ok(out)
}

fn same_device(what: &str, a: &Device, b: &Device) -> Result<()> {
    if !Arc::ptr_eq(&a.inner, &b.inner) {
        return Err(Error::Config(format!("{what}: all parameters must live on one device")));
    }
    Ok(())
}

fn check_positive(opt: &str, option: &str, v: f32) -> Result<()> {
    if !(v.is_finite() && v > 0.0) {
        return Err(Error::Config(format!("{opt}: {option} = {v} must be a finite number > 0")));
    }
    Ok(())
}

fn check_nonneg(opt: &str, option: &str, v: f32) -> Result<()> {
    if !(v.is_finite() && v >= 0.0) {
        return Err(Error::Config(format!("{opt}: {option} = {v} must be a finite number >= 0")));
    }
    Ok(())
}

fn check_beta(opt: &str, option: &str, v: f32) -> Result<()> {
    if !(0.0..1.0).contains(&v) {
        return Err(Error::Config(format!("{opt}: {option} = {v} must be in [0, 1)")));
    }
    Ok(())
}

/// A fresh copy of a tensor (recorded, no flush).
fn copy_of(t: &Tensor) -> Result<Tensor> {
    let c = Tensor::empty(t.device(), "load_state", t.shape(), t.dtype())?;
    t.device().copy(t.buffer(), 0, c.buffer(), 0, t.bytes());
    Ok(c)
}

fn read_count(opt: &str, key: &str, t: &Tensor) -> Result<u64> {
    if t.dtype() != DType::U32 || t.numel() != 1 {
        return Err(Error::Config(format!(
            "{opt}: load_state: {key:?} must be a U32 tensor of one element, got {t:?}"
        )));
    }
    Ok(t.to_vec_u32()?[0] as u64)
}

fn count_tensor(dev: &Device, n: u64) -> Result<Tensor> {
    Tensor::from_u32(dev, &[n.min(u32::MAX as u64) as u32], &[1])
}

/// A parameter about to be updated: (index, value, gradient).
type Live = (usize, Tensor, Tensor);

/// What both optimizers share: the parameters, learning rate, clipping and the step counter.
struct Common {
    opt: &'static str,
    dev: Device,
    params: Vec<Param>,
    names: HashMap<String, usize>,
    lr: f32,
    clip: Option<f32>,
    last_clip: Option<Tensor>,
    one: Tensor,
    steps: u64,
}

impl Common {
    fn new(opt: &'static str, params: Vec<Param>, lr: f32) -> Result<Common> {
        check_nonneg(opt, "lr", lr)?;
        let Some(first) = params.first() else {
            return Err(Error::Config(format!("{opt}: no parameters to optimize")));
        };
        let dev = first.value().device().clone();
        let mut names = HashMap::new();
        for (i, p) in params.iter().enumerate() {
            let v = p.value();
            v.expect(opt, DType::F32)?;
            same_device(opt, &dev, v.device())?;
            if params[..i].iter().any(|q| q.same(p)) {
                return Err(Error::Config(format!("{opt}: parameter {:?} is listed twice", p.name())));
            }
            // Names key the checkpointed state, so they must tell parameters apart.
            if names.insert(p.name(), i).is_some() {
                return Err(Error::Config(format!("{opt}: two parameters are named {:?}", p.name())));
            }
        }
        let one = Tensor::from_slice(&dev, &[1.0], &[1])?;
        Ok(Common { opt, dev, params, names, lr, clip: None, last_clip: None, one, steps: 0 })
    }

    /// The parameters that have a gradient (index, value, gradient), shape-checked, and the
    /// tensor + index holding the gradient factor (the clip scale, or 1).
    fn begin_step(&mut self) -> Result<(Vec<Live>, Tensor, u32)> {
        let mut live = Vec::new();
        for (i, p) in self.params.iter().enumerate() {
            let Some(g) = p.grad() else { continue };
            let v = p.value();
            if g.shape() != v.shape() {
                return Err(Error::shape(
                    self.opt,
                    format!("gradient of shape {:?} for parameter {:?} of shape {:?}", g.shape(), p.name(), v.shape()),
                ));
            }
            g.expect(self.opt, DType::F32)?;
            live.push((i, v, g));
        }
        self.steps += 1;
        match self.clip {
            Some(max_norm) => {
                let t = clip_grad_norm(&self.params, max_norm)?;
                self.last_clip = Some(t.clone());
                Ok((live, t, 1))
            }
            None => {
                self.last_clip = None;
                Ok((live, self.one.clone(), 0))
            }
        }
    }

    fn set_clip(&mut self, max_norm: Option<f32>) -> Result<()> {
        if let Some(m) = max_norm {
            check_positive(self.opt, "max_norm", m)?;
        }
        self.clip = max_norm;
        Ok(())
    }

    /// Splits a state key into (parameter index, field); "step" is the optimizer's counter.
    fn parse_key<'a>(&self, key: &'a str, fields: &[&str]) -> Result<(usize, &'a str)> {
        let bad = || Error::Config(format!("{}: load_state: unknown entry {key:?}", self.opt));
        let (name, field) = key.rsplit_once('.').ok_or_else(bad)?;
        let &i = self.names.get(name).ok_or_else(bad)?;
        if !fields.contains(&field) {
            return Err(bad());
        }
        Ok((i, field))
    }

    fn check_state_tensor(&self, key: &str, i: usize, t: &Tensor) -> Result<()> {
        let want = self.params[i].shape();
        if t.shape() != want.as_slice() || t.dtype() != DType::F32 {
            return Err(Error::shape(
                "load_state",
                format!("{}: {key:?} is {t:?}, the parameter is F32 of shape {want:?}", self.opt),
            ));
        }
        same_device(self.opt, &self.dev, t.device())
    }
}

/// Stochastic gradient descent with momentum and L2 weight decay, as `torch.optim.SGD`
/// (dampening 0, no Nesterov): `g += wd * p; buf = momentum * buf + g; p -= lr * buf`
/// (no buffer when momentum is 0).
pub struct Sgd {
    c: Common,
    momentum: f32,
    weight_decay: f32,
    bufs: Vec<Option<Tensor>>,
}

impl Sgd {
    pub fn new(params: Vec<Param>, lr: f32, momentum: f32, weight_decay: f32) -> Result<Sgd> {
        check_nonneg("Sgd", "momentum", momentum)?;
        check_nonneg("Sgd", "weight_decay", weight_decay)?;
        let c = Common::new("Sgd", params, lr)?;
        let bufs = vec![None; c.params.len()];
        Ok(Sgd { c, momentum, weight_decay, bufs })
    }
    pub fn momentum(&self) -> f32 {
        self.momentum
    }
    pub fn weight_decay(&self) -> f32 {
        self.weight_decay
    }
}

impl Optimizer for Sgd {
    fn step(&mut self) -> Result<()> {
        let (live, clip, scale_at) = self.c.begin_step()?;
        let dev = self.c.dev.clone();
        for (i, v, g) in live {
            let n = v.numel();
            let p = Params {
                n: n as u32,
                scale_at,
                lr: self.c.lr,
                momentum: self.momentum,
                wd: self.weight_decay,
                ..Default::default()
            };
            if self.momentum == 0.0 {
                dev.dispatch(
                    &SHADER,
                    "sgd",
                    &[],
                    bytemuck::bytes_of(&p),
                    &[v.bind(), g.bind(), clip.bind()],
                    groups_1d(n, WG),
                );
                continue;
            }
            if self.bufs[i].is_none() {
                self.bufs[i] = Some(Tensor::zeros(&dev, v.shape())?);
            }
            let b = self.bufs[i].as_ref().unwrap();
            dev.dispatch(
                &SHADER,
                "sgd_momentum",
                &[],
                bytemuck::bytes_of(&p),
                &[v.bind(), g.bind(), b.bind(), clip.bind()],
                groups_1d(n, WG),
            );
        }
        Ok(())
    }
    fn params(&self) -> &[Param] {
        &self.c.params
    }
    fn lr(&self) -> f32 {
        self.c.lr
    }
    fn set_lr(&mut self, lr: f32) -> Result<()> {
        check_nonneg("Sgd", "lr", lr)?;
        self.c.lr = lr;
        Ok(())
    }
    fn set_clip(&mut self, max_norm: Option<f32>) -> Result<()> {
        self.c.set_clip(max_norm)
    }
    fn clip(&self) -> Option<f32> {
        self.c.clip
    }
    fn grad_norm(&self) -> Option<Tensor> {
        self.c.last_clip.clone()
    }
    fn step_count(&self) -> u64 {
        self.c.steps
    }
    fn state(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = vec![("step".to_string(), count_tensor(&self.c.dev, self.c.steps)?)];
        for (p, b) in self.c.params.iter().zip(&self.bufs) {
            if let Some(b) = b {
                out.push((format!("{}.momentum_buffer", p.name()), b.clone()));
            }
        }
        Ok(out)
    }
    fn load_state(&mut self, state: &[(String, Tensor)]) -> Result<()> {
        let mut steps = 0;
        let mut bufs = vec![None; self.c.params.len()];
        for (key, t) in state {
            if key == "step" {
                steps = read_count("Sgd", key, t)?;
                continue;
            }
            let (i, _) = self.c.parse_key(key, &["momentum_buffer"])?;
            self.c.check_state_tensor(key, i, t)?;
            bufs[i] = Some(copy_of(t)?);
        }
        self.c.steps = steps;
        self.bufs = bufs;
        Ok(())
    }
}

/// Adam / AdamW hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// false: Adam (L2: `g += wd * p`); true: AdamW (`p *= 1 - lr * wd`, decoupled).
    pub decoupled: bool,
}

impl Default for AdamConfig {
    /// PyTorch's `torch.optim.Adam` defaults.
    fn default() -> Self {
        AdamConfig { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, decoupled: false }
    }
}

impl AdamConfig {
    /// AdamW with PyTorch's betas and eps.
    pub fn adamw(lr: f32, weight_decay: f32) -> Self {
        AdamConfig { lr, weight_decay, decoupled: true, ..AdamConfig::default() }
    }
    /// Adam with PyTorch's betas and eps.
    pub fn adam(lr: f32) -> Self {
        AdamConfig { lr, ..AdamConfig::default() }
    }
}

struct AdamState {
    m: Tensor,
    v: Tensor,
    step: u64,
}

/// Adam (`decoupled: false`) or AdamW, as PyTorch, with per-parameter step counts for the bias
/// corrections `1 - beta^t` (computed on the host in f64).
pub struct Adam {
    c: Common,
    cfg: AdamConfig,
    state: Vec<Option<AdamState>>,
    /// Distinct stand-ins for the unused slots of a partial `adam4_multi` dispatch (3 slots x
    /// param, grad, m, v), made on first need.
    spare: Vec<Tensor>,
}

impl Adam {
    pub fn new(params: Vec<Param>, cfg: AdamConfig) -> Result<Adam> {
        let opt = if cfg.decoupled { "AdamW" } else { "Adam" };
        check_beta(opt, "beta1", cfg.beta1)?;
        check_beta(opt, "beta2", cfg.beta2)?;
        check_nonneg(opt, "eps", cfg.eps)?;
        check_nonneg(opt, "weight_decay", cfg.weight_decay)?;
        let c = Common::new(opt, params, cfg.lr)?;
        let state = (0..c.params.len()).map(|_| None).collect();
        Ok(Adam { c, cfg, state, spare: Vec::new() })
    }
    /// The configuration, with the current learning rate.
    pub fn config(&self) -> AdamConfig {
        AdamConfig { lr: self.c.lr, ..self.cfg }
    }

    /// One `adam4_multi` dispatch for up to 4 parameters of whole vec4s: (index, value,
    /// gradient, step_size, bc2_sqrt) each, their state already made.
    fn step_group(&mut self, base: &Params, group: &[(usize, Tensor, Tensor, f32, f32)], clip: &Tensor) -> Result<()> {
        let dev = self.c.dev.clone();
        if group.len() < 4 && self.spare.is_empty() {
            for _ in 0..12 {
                self.spare.push(Tensor::zeros(&dev, &[4])?);
            }
        }
        let mut p = *base;
        let mut binds = Vec::with_capacity(17);
        let mut end = 0u32;
        for k in 0..4 {
            match group.get(k) {
                Some((i, v, g, ss, bc)) => {
                    let st = self.state[*i].as_ref().expect("state made before the group");
                    end += (v.numel() / 4) as u32;
                    (p.ss[k], p.bc[k]) = (*ss, *bc);
                    binds.extend([v.bind(), g.bind(), st.m.bind(), st.v.bind()]);
                }
                None => binds.extend(self.spare[4 * (k - 1)..4 * k].iter().map(|t| t.bind())),
            }
            p.ends[k] = end;
        }
        binds.push(clip.bind());
        dev.dispatch(&SHADER, "adam4_multi", &[], bytemuck::bytes_of(&p), &binds, groups_1d(end as usize, WG));
        Ok(())
    }
}

impl Optimizer for Adam {
    fn step(&mut self) -> Result<()> {
        let (live, clip, scale_at) = self.c.begin_step()?;
        let dev = self.c.dev.clone();
        let cfg = self.config();
        let (lr, wd) = (cfg.lr as f64, cfg.weight_decay as f64);
        let base = Params {
            scale_at,
            lr: cfg.lr,
            beta1: cfg.beta1,
            beta2: cfg.beta2,
            eps: cfg.eps,
            l2: if cfg.decoupled { 0.0 } else { cfg.weight_decay },
            decay: if cfg.decoupled { (1.0 - lr * wd) as f32 } else { 1.0 },
            ..Default::default()
        };
        // Parameters of whole vec4s go four to a dispatch where the adapter binds their 16
        // buffers and the clip factor (`adam4_multi`); the others one each.
        let multi = dev.limits().max_storage_buffers_per_shader_stage >= 17;
        let mut group: Vec<(usize, Tensor, Tensor, f32, f32)> = Vec::with_capacity(4);
        for (i, v, g) in live {
            if self.state[i].is_none() {
                let m = Tensor::zeros(&dev, v.shape())?;
                let s = Tensor::zeros(&dev, v.shape())?;
                self.state[i] = Some(AdamState { m, v: s, step: 0 });
            }
            let st = self.state[i].as_mut().unwrap();
            st.step += 1;
            let t = st.step.min(i32::MAX as u64) as i32;
            let bc1 = 1.0 - (cfg.beta1 as f64).powi(t);
            let bc2 = 1.0 - (cfg.beta2 as f64).powi(t);
            let (step_size, bc2_sqrt) = ((lr / bc1) as f32, bc2.sqrt() as f32);
            let vec4 = v.numel().is_multiple_of(4);
            if vec4 && multi {
                group.push((i, v, g, step_size, bc2_sqrt));
                if group.len() == 4 {
                    self.step_group(&base, &group, &clip)?;
                    group.clear();
                }
                continue;
            }
            // Whole vec4s where the element count allows (the same arithmetic per element).
            let (entry, n) = if vec4 { ("adam4", v.numel() / 4) } else { ("adam", v.numel()) };
            let p = Params { n: n as u32, step_size, bc2_sqrt, ..base };
            dev.dispatch(
                &SHADER,
                entry,
                &[],
                bytemuck::bytes_of(&p),
                &[v.bind(), g.bind(), st.m.bind(), st.v.bind(), clip.bind()],
                groups_1d(n, WG),
            );
        }
        if !group.is_empty() {
            self.step_group(&base, &group, &clip)?;
        }
        Ok(())
    }
    fn params(&self) -> &[Param] {
        &self.c.params
    }
    fn lr(&self) -> f32 {
        self.c.lr
    }
    fn set_lr(&mut self, lr: f32) -> Result<()> {
        check_nonneg(self.c.opt, "lr", lr)?;
        self.c.lr = lr;
        Ok(())
    }
    fn set_clip(&mut self, max_norm: Option<f32>) -> Result<()> {
        self.c.set_clip(max_norm)
    }
    fn clip(&self) -> Option<f32> {
        self.c.clip
    }
    fn grad_norm(&self) -> Option<Tensor> {
        self.c.last_clip.clone()
    }
    fn step_count(&self) -> u64 {
        self.c.steps
    }
    fn state(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = vec![("step".to_string(), count_tensor(&self.c.dev, self.c.steps)?)];
        for (p, s) in self.c.params.iter().zip(&self.state) {
            if let Some(s) = s {
                let name = p.name();
                out.push((format!("{name}.m"), s.m.clone()));
                out.push((format!("{name}.v"), s.v.clone()));
                out.push((format!("{name}.step"), count_tensor(&self.c.dev, s.step)?));
            }
        }
        Ok(out)
    }
    fn load_state(&mut self, state: &[(String, Tensor)]) -> Result<()> {
        let opt = self.c.opt;
        let mut steps = 0;
        let mut parts: Vec<[Option<&Tensor>; 3]> = vec![[None; 3]; self.c.params.len()];
        for (key, t) in state {
            if key == "step" {
                steps = read_count(opt, key, t)?;
                continue;
            }
            let (i, field) = self.c.parse_key(key, &["m", "v", "step"])?;
            let slot = match field {
                "m" => 0,
                "v" => 1,
                _ => 2,
            };
            if slot < 2 {
                self.c.check_state_tensor(key, i, t)?;
            }
            parts[i][slot] = Some(t);
        }
        let mut new = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            new.push(match part {
                [None, None, None] => None,
                [Some(m), Some(v), Some(s)] => {
                    let key = format!("{}.step", self.c.params[i].name());
                    Some(AdamState { m: copy_of(m)?, v: copy_of(v)?, step: read_count(opt, &key, s)? })
                }
                _ => {
                    return Err(Error::Config(format!(
                        "{opt}: load_state: parameter {:?} needs all of .m, .v and .step",
                        self.c.params[i].name()
                    )))
                }
            });
        }
        self.c.steps = steps;
        self.state = new;
        Ok(())
    }
}

/// f64 references of the update rules, on flat data; `scale` is the clip factor.
pub mod cpu {
    use super::{AdamConfig, CLIP_EPS};

    /// One SGD step: `g' = g * scale + wd * p`; with momentum `buf = momentum * buf + g'`,
    /// `p -= lr * buf` (pass a zeroed `buf` before the first step); without, `p -= lr * g'`.
    pub fn sgd(p: &mut [f64], g: &[f64], buf: &mut [f64], lr: f64, momentum: f64, wd: f64, scale: f64) {
        for i in 0..p.len() {
            let gi = g[i] * scale + wd * p[i];
            if momentum == 0.0 {
                p[i] -= lr * gi;
            } else {
                buf[i] = momentum * buf[i] + gi;
                p[i] -= lr * buf[i];
            }
        }
    }

    /// One Adam / AdamW step number `t` (1-based) with the configuration's numbers taken as f64.
    pub fn adam(p: &mut [f64], g: &[f64], m: &mut [f64], v: &mut [f64], t: u64, cfg: &AdamConfig, scale: f64) {
        let (lr, b1, b2, eps, wd) =
            (cfg.lr as f64, cfg.beta1 as f64, cfg.beta2 as f64, cfg.eps as f64, cfg.weight_decay as f64);
        let bc1 = 1.0 - b1.powi(t as i32);
        let bc2 = 1.0 - b2.powi(t as i32);
        for i in 0..p.len() {
            let mut gi = g[i] * scale;
            if cfg.decoupled {
                p[i] *= 1.0 - lr * wd;
            } else {
                gi += wd * p[i];
            }
            m[i] = b1 * m[i] + (1.0 - b1) * gi;
            v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
            let mhat = m[i] / bc1;
            let vhat = v[i] / bc2;
            p[i] -= lr * mhat / (vhat.sqrt() + eps);
        }
    }

    /// `(norm, scale)` of `clip_grad_norm` over several gradients.
    pub fn clip_grad_norm(grads: &[&[f64]], max_norm: f64) -> (f64, f64) {
        let norm = grads.iter().flat_map(|g| g.iter()).map(|x| x * x).sum::<f64>().sqrt();
        (norm, (max_norm / (norm + CLIP_EPS)).min(1.0))
    }
}

#[cfg(test)]
mod schedule_tests {
    use super::Schedule;
    #[test]
    fn warm_up_then_half_cosine_to_zero() {
        let s = Schedule { lr: 1.0, warmup_steps: 4, total_steps: 104, cosine: true };
        assert_eq!([s.lr_at(0), s.lr_at(1), s.lr_at(3)], [0.25, 0.5, 1.0]);
        assert_eq!(s.lr_at(4), 1.0);
        assert!((s.lr_at(54) - 0.5).abs() < 1e-6, "{}", s.lr_at(54));
        assert!(s.lr_at(103) < 1e-3 && s.lr_at(104) == 0.0 && s.lr_at(500) == 0.0);
        let flat = Schedule { cosine: false, ..s };
        assert_eq!(flat.lr_at(90), 1.0);
        let none = Schedule { lr: 0.3, warmup_steps: 0, total_steps: 10, cosine: false };
        assert_eq!(none.lr_at(0), 0.3);
    }
}
