//! Softmax family (`shaders/softmax.wgsl`): softmax and log-softmax over the last axis with an
//! optional mask, their gradients, cross-entropy from logits with u32 labels (fused per-row
//! loss, then the mean), and binary cross-entropy from logits (built on the elementwise
//! `BceLogits` op). The f64 reference is [`cpu`].
//!
//! Masks: a tensor viewed as `[rows, L]` takes a mask of shape `[.., L]` holding `M` rows of
//! `L` values (nonzero = keep, 0 = masked out) where `M` divides `rows`; row `r` uses mask row
//! `r / (rows / M)`. So scores `[B, H, Lq, Lk]` take a key-padding mask `[B, Lk]`, and a
//! `[Lq, Lk]` causal mask serves scores `[B*H, Lq, Lk]` only when `B*H = 1` (expand it to
//! `[B*H*Lq, Lk]` otherwise).
//!
//! Masked entries get probability 0; a fully masked row gives softmax 0 everywhere (no NaN).
//! Log-softmax writes [`MASKED_LOG`] (-1e30, a finite stand-in for log 0) at every masked entry,
//! so a fully masked row is all `MASKED_LOG`; `exp` of it is the all-zero softmax row, and
//! `0 * y` stays 0 downstream. Masked entries take no gradient.

use crate::autodiff::{Target, Var};
use crate::device::{groups_1d, AdapterClass, Device, WG};
use crate::error::{Error, Result};
use crate::ops::elementwise::Binary;
use crate::ops::reduce::{reduce, Reduce};
use crate::tensor::{DType, Tensor};

crate::shader!(SHADER = "softmax");

/// What log-softmax writes at masked entries (and everywhere in a fully masked row).
pub const MASKED_LOG: f32 = -1e30;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    len: u32,
    group: u32,
    inv_n: f32,
}

/// Which form of the row kernels (softmax, log-softmax and their gradients) runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowKernel {
    /// One invocation per row, no barriers: CPU adapters, short rows.
    PerRow,
    /// A team of 32 invocations per row with coalesced loads, combined through workgroup memory:
    /// GPU adapters, rows of at least 64 entries (several times the per-row kernel there:
    /// docs/PERFORMANCE.md).
    Team,
}

impl RowKernel {
    pub fn for_device(dev: &Device, len: usize) -> RowKernel {
        if dev.class() == AdapterClass::Gpu && len >= 64 {
            RowKernel::Team
        } else {
            RowKernel::PerRow
        }
    }
    /// Invocations per row (the shader's `LANES`).
    fn lanes(self) -> usize {
        match self {
            RowKernel::PerRow => 1,
            RowKernel::Team => 32,
        }
    }
    /// The grid for `rows` rows: 256 / lanes rows per workgroup.
    fn groups(self, rows: usize) -> [u32; 3] {
        groups_1d(rows, (WG as usize / self.lanes()) as u32)
    }
}

/// `(rows, L)` of a tensor viewed as `[rows, L]` over its last axis.
fn rows_len(op: &'static str, x: &Tensor) -> Result<(usize, usize)> {
    x.expect(op, DType::F32)?;
    let Some(&len) = x.shape().last() else {
        return Err(Error::shape(op, format!("needs at least one axis, got shape {:?}", x.shape())));
    };
    let rows = x.numel().checked_div(len).unwrap_or_else(|| x.shape()[..x.dims() - 1].iter().product());
    Ok((rows, len))
}

/// Rows sharing one mask row, after checking that the mask fits `x`.
fn mask_group(op: &'static str, x: &Tensor, rows: usize, len: usize, mask: &Tensor) -> Result<usize> {
    mask.expect(op, DType::F32)?;
    let bad = || {
        Error::shape(
            op,
            format!(
                "mask {:?} does not fit input {:?}: needs [M, {len}] with M dividing the {rows} rows",
                mask.shape(),
                x.shape()
            ),
        )
    };
    if mask.shape().last() != Some(&len) || len == 0 {
        return Err(bad());
    }
    let m = mask.numel() / len;
    if m == 0 || !rows.is_multiple_of(m) {
        return Err(bad());
    }
    Ok(rows / m)
}

/// Softmax (`log` false) or log-softmax over the last axis in the given form.
pub fn softmax_with(kernel: RowKernel, x: &Tensor, mask: Option<&Tensor>, log: bool) -> Result<Tensor> {
    let op = if log { "log_softmax" } else { "softmax" };
    let (rows, len) = rows_len(op, x)?;
    let dev = x.device();
    let y = Tensor::empty(dev, op, x.shape(), DType::F32)?;
    if x.numel() == 0 {
        return Ok(y);
    }
    let group = match mask {
        Some(m) => mask_group(op, x, rows, len, m)?,
        None => 1,
    };
    let p = Params { rows: rows as u32, len: len as u32, group: group as u32, inv_n: 0.0 };
    // Unmasked: x stands in for the mask binding (never read with MASKED = 0).
    let m = mask.unwrap_or(x);
    let lanes = ("LANES", kernel.lanes() as f64);
    dev.dispatch(
        &SHADER,
        "softmax_rows",
        &[("LOG", log as u32 as f64), ("MASKED", mask.is_some() as u32 as f64), lanes],
        bytemuck::bytes_of(&p),
        &[x.bind(), m.bind(), y.bind()],
        kernel.groups(rows),
    );
    Ok(y)
}

/// Softmax over the last axis; masked entries (mask 0) get probability 0.
pub fn softmax(x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    softmax_with(RowKernel::for_device(x.device(), x.shape().last().copied().unwrap_or(0)), x, mask, false)
}

/// Log-softmax over the last axis; masked entries get [`MASKED_LOG`].
pub fn log_softmax(x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    softmax_with(RowKernel::for_device(x.device(), x.shape().last().copied().unwrap_or(0)), x, mask, true)
}

fn check_same(op: &'static str, y: &Tensor, gy: &Tensor) -> Result<()> {
    gy.expect(op, DType::F32)?;
    if y.shape() != gy.shape() {
        return Err(Error::shape(op, format!("gradient {:?} vs output {:?}", gy.shape(), y.shape())));
    }
    Ok(())
}

/// gx = y * (gy - sum(gy * y)) per row, from the softmax output `y`.
pub fn softmax_backward(y: &Tensor, gy: &Tensor) -> Result<Tensor> {
    softmax_backward_with(RowKernel::for_device(y.device(), y.shape().last().copied().unwrap_or(0)), y, gy)
}

/// As [`softmax_backward`] in the given form.
pub fn softmax_backward_with(kernel: RowKernel, y: &Tensor, gy: &Tensor) -> Result<Tensor> {
    let (rows, len) = rows_len("softmax_backward", y)?;
    check_same("softmax_backward", y, gy)?;
    let dev = y.device();
    let gx = Tensor::empty(dev, "softmax_backward", y.shape(), DType::F32)?;
    let p = Params { rows: rows as u32, len: len as u32, group: 1, inv_n: 0.0 };
    if y.numel() > 0 {
        dev.dispatch(
            &SHADER,
            "softmax_backward",
            &[("LANES", kernel.lanes() as f64)],
            bytemuck::bytes_of(&p),
            &[y.bind(), gy.bind(), gx.bind()],
            kernel.groups(rows),
        );
    }
    Ok(gx)
}

/// gx = gy - exp(y) * sum(gy) per row over kept entries (0 at masked ones), from the
/// log-softmax output `y`.
pub fn log_softmax_backward(y: &Tensor, gy: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    let kernel = RowKernel::for_device(y.device(), y.shape().last().copied().unwrap_or(0));
    log_softmax_backward_with(kernel, y, gy, mask)
}

/// As [`log_softmax_backward`] in the given form.
pub fn log_softmax_backward_with(kernel: RowKernel, y: &Tensor, gy: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    let (rows, len) = rows_len("log_softmax_backward", y)?;
    check_same("log_softmax_backward", y, gy)?;
    let dev = y.device();
    let gx = Tensor::empty(dev, "log_softmax_backward", y.shape(), DType::F32)?;
    if y.numel() == 0 {
        return Ok(gx);
    }
    let group = match mask {
        Some(m) => mask_group("log_softmax_backward", y, rows, len, m)?,
        None => 1,
    };
    let p = Params { rows: rows as u32, len: len as u32, group: group as u32, inv_n: 0.0 };
    let m = mask.unwrap_or(y);
    dev.dispatch(
        &SHADER,
        "log_softmax_backward",
        &[("MASKED", mask.is_some() as u32 as f64), ("LANES", kernel.lanes() as f64)],
        bytemuck::bytes_of(&p),
        &[y.bind(), gy.bind(), m.bind(), gx.bind()],
        kernel.groups(rows),
    );
    Ok(gx)
}

/// Checks logits `[.., C]` against labels of the logits' shape without its last axis;
/// returns `(N, C)`.
fn ce_check(logits: &Tensor, labels: &Tensor) -> Result<(usize, usize)> {
    const OP: &str = "cross_entropy";
    logits.expect(OP, DType::F32)?;
    labels.expect(OP, DType::U32)?;
    let s = logits.shape();
    if s.len() < 2 || s[s.len() - 1] == 0 || labels.shape() != &s[..s.len() - 1] || labels.numel() == 0 {
        return Err(Error::shape(
            OP,
            format!("logits {s:?} and labels {:?}: needs logits [N, C] (C, N >= 1) and labels [N]", labels.shape()),
        ));
    }
    Ok((labels.numel(), s[s.len() - 1]))
}

/// Per-row cross-entropy `logsumexp(x[r]) - x[r, label[r]]` (shape of `labels`) and the per-row
/// log-sum-exp `[N]` that the backward pass reuses. A label >= C gives NaN for its row (never an
/// out-of-bounds read); loaders validate labels on the host.
pub fn cross_entropy_rows(logits: &Tensor, labels: &Tensor) -> Result<(Tensor, Tensor)> {
    let (n, c) = ce_check(logits, labels)?;
    let dev = logits.device();
    let loss = Tensor::empty(dev, "cross_entropy", labels.shape(), DType::F32)?;
    let lse = Tensor::empty(dev, "cross_entropy", &[n], DType::F32)?;
    let p = Params { rows: n as u32, len: c as u32, group: 1, inv_n: 1.0 / n as f32 };
    dev.dispatch(
        &SHADER,
        "ce_forward",
        &[],
        bytemuck::bytes_of(&p),
        &[logits.bind(), labels.bind(), loss.bind(), lse.bind()],
        groups_1d(n, WG),
    );
    Ok((loss, lse))
}

/// Mean cross-entropy of logits `[N, C]` against u32 labels `[N]`, as a scalar of shape [].
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let (loss, _) = cross_entropy_rows(logits, labels)?;
    let n = loss.numel();
    reduce(&loss.reshape(&[n])?, 0, Reduce::Mean, false)
}

/// gx = (softmax(x) - onehot(label)) * `gy[0]` / N; `gy` is the 1-element gradient of the mean
/// loss, read by the kernel (no host round trip). `lse` comes from [`cross_entropy_rows`].
pub fn cross_entropy_backward(logits: &Tensor, labels: &Tensor, lse: &Tensor, gy: &Tensor) -> Result<Tensor> {
    let (n, c) = ce_check(logits, labels)?;
    if gy.numel() != 1 || lse.shape() != [n] {
        return Err(Error::shape(
            "cross_entropy_backward",
            format!("gradient {:?} (needs 1 element) and lse {:?} (needs [{n}])", gy.shape(), lse.shape()),
        ));
    }
    let dev = logits.device();
    let gx = Tensor::empty(dev, "cross_entropy_backward", logits.shape(), DType::F32)?;
    let p = Params { rows: (n * c) as u32, len: c as u32, group: 1, inv_n: 1.0 / n as f32 };
    dev.dispatch(
        &SHADER,
        "ce_backward",
        &[],
        bytemuck::bytes_of(&p),
        &[logits.bind(), labels.bind(), lse.bind(), gy.bind(), gx.bind()],
        groups_1d(n * c, WG),
    );
    Ok(gx)
}

impl Var {
    /// Softmax over the last axis with an optional mask (see the module docs); local gradient
    /// gx = y * (gy - sum(gy * y)).
    pub fn softmax(&self, mask: Option<&Tensor>) -> Result<Var> {
        let y = softmax(self.value(), mask)?;
        let saved = y.clone();
        Ok(self.tape().op(y, &[self], move |gy| Ok(vec![Some(softmax_backward(&saved, gy)?)])))
    }

    /// Log-softmax over the last axis with an optional mask (masked entries hold
    /// [`MASKED_LOG`]); local gradient gx = gy - exp(y) * sum(gy) over kept entries.
    pub fn log_softmax(&self, mask: Option<&Tensor>) -> Result<Var> {
        let y = log_softmax(self.value(), mask)?;
        let saved = y.clone();
        let mask = mask.cloned();
        Ok(self.tape().op(y, &[self], move |gy| Ok(vec![Some(log_softmax_backward(&saved, gy, mask.as_ref())?)])))
    }

    /// Mean cross-entropy of these logits `[N, C]` against u32 labels `[N]` (a `&Tensor` of data
    /// or a `&Var`, see [`Target`]; labels get no gradient), as a scalar of shape []. A label
    /// >= C makes the loss NaN (see [`cross_entropy_rows`]).
    pub fn cross_entropy(&self, labels: &impl Target) -> Result<Var> {
        let labels = labels.target_value();
        let (rows, lse) = cross_entropy_rows(self.value(), labels)?;
        let n = rows.numel();
        let loss = reduce(&rows.reshape(&[n])?, 0, Reduce::Mean, false)?;
        let (x, labels) = (self.value().clone(), labels.clone());
        Ok(self.tape().op(loss, &[self], move |gy| Ok(vec![Some(cross_entropy_backward(&x, &labels, &lse, gy)?)])))
    }

    /// Mean binary cross-entropy of these logits against `targets` (same shape, values in
    /// [0, 1]; a `&Var` or a `&Tensor` of data, see [`Target`]) over all elements, as a scalar of
    /// shape []. Gradients flow to both (a `&Tensor` is a constant).
    pub fn bce_with_logits(&self, targets: &impl Target) -> Result<Var> {
        let targets = &targets.target_var(self.tape());
        if self.shape() != targets.shape() {
            return Err(Error::shape(
                "bce_with_logits",
                format!("logits {:?} and targets {:?} differ", self.shape(), targets.shape()),
            ));
        }
        self.binary(targets, Binary::BceLogits)?.mean_all()
    }
}

/// f64 references on flat row-major data viewed as `[rows, len]`; masks as `[M, len]`.
pub mod cpu {
    use super::MASKED_LOG;

    fn kept(mask: Option<&[f64]>, rows: usize, len: usize, r: usize, l: usize) -> bool {
        match mask {
            None => true,
            Some(m) => {
                let group = rows / (m.len() / len);
                m[(r / group) * len + l] != 0.0
            }
        }
    }

    /// (max, sum of exp(x - max)) over the kept entries of row r; None when all are masked.
    fn stats(x: &[f64], mask: Option<&[f64]>, len: usize, r: usize) -> Option<(f64, f64)> {
        let rows = x.len() / len;
        let row = &x[r * len..(r + 1) * len];
        let keep: Vec<usize> = (0..len).filter(|&l| kept(mask, rows, len, r, l)).collect();
        if keep.is_empty() {
            return None;
        }
        let m = keep.iter().map(|&l| row[l]).fold(f64::NEG_INFINITY, f64::max);
        Some((m, keep.iter().map(|&l| (row[l] - m).exp()).sum()))
    }

    pub fn softmax(x: &[f64], len: usize, mask: Option<&[f64]>) -> Vec<f64> {
        let rows = x.len() / len;
        let mut y = vec![0.0; x.len()];
        for r in 0..rows {
            if let Some((m, s)) = stats(x, mask, len, r) {
                for l in 0..len {
                    if kept(mask, rows, len, r, l) {
                        y[r * len + l] = (x[r * len + l] - m).exp() / s;
                    }
                }
            }
        }
        y
    }

    pub fn log_softmax(x: &[f64], len: usize, mask: Option<&[f64]>) -> Vec<f64> {
        let rows = x.len() / len;
        let mut y = vec![MASKED_LOG as f64; x.len()];
        for r in 0..rows {
            if let Some((m, s)) = stats(x, mask, len, r) {
                for l in 0..len {
                    if kept(mask, rows, len, r, l) {
                        y[r * len + l] = x[r * len + l] - m - s.ln();
                    }
                }
            }
        }
        y
    }

    pub fn softmax_backward(y: &[f64], gy: &[f64], len: usize) -> Vec<f64> {
        let mut gx = vec![0.0; y.len()];
        for r in 0..y.len() / len {
            let s = r * len..(r + 1) * len;
            let dot: f64 = y[s.clone()].iter().zip(&gy[s.clone()]).map(|(a, b)| a * b).sum();
            for i in s {
                gx[i] = y[i] * (gy[i] - dot);
            }
        }
        gx
    }

    pub fn log_softmax_backward(y: &[f64], gy: &[f64], len: usize, mask: Option<&[f64]>) -> Vec<f64> {
        let rows = y.len() / len;
        let mut gx = vec![0.0; y.len()];
        for r in 0..rows {
            let total: f64 = (0..len).filter(|&l| kept(mask, rows, len, r, l)).map(|l| gy[r * len + l]).sum();
            for l in 0..len {
                if kept(mask, rows, len, r, l) {
                    let i = r * len + l;
                    gx[i] = gy[i] - y[i].exp() * total;
                }
            }
        }
        gx
    }

    /// Per-row losses `logsumexp(x[r]) - x[r, label]`, NaN for a label >= C.
    pub fn cross_entropy_rows(x: &[f64], classes: usize, labels: &[u32]) -> Vec<f64> {
        labels
            .iter()
            .enumerate()
            .map(|(r, &t)| {
                let (m, s) = stats(x, None, classes, r).expect("unmasked rows have entries");
                if (t as usize) < classes {
                    m + s.ln() - x[r * classes + t as usize]
                } else {
                    f64::NAN
                }
            })
            .collect()
    }

    /// Mean cross-entropy.
    pub fn cross_entropy(x: &[f64], classes: usize, labels: &[u32]) -> f64 {
        cross_entropy_rows(x, classes, labels).iter().sum::<f64>() / labels.len() as f64
    }

    /// Mean binary cross-entropy of logits against targets.
    pub fn bce_with_logits(x: &[f64], t: &[f64]) -> f64 {
        let s: f64 = x.iter().zip(t).map(|(&a, &b)| a.max(0.0) - a * b + (1.0 + (-a.abs()).exp()).ln()).sum();
        s / x.len() as f64
    }
}
