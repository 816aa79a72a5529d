//! Layer normalisation over the last axis (`shaders/layernorm.wgsl`):
//! `y = (x - mean) / sqrt(var + eps) * gamma + beta` with the biased variance, per row of a
//! tensor viewed as `[rows, D]`. The forward pass saves each row's mean and `rstd`; the backward
//! pass computes `dx` per row and `dgamma`, `dbeta` per column, gathered over rows in a fixed
//! order (row chunks, then the deterministic reduce over the chunks). The f64 reference is [`cpu`].

use crate::autodiff::Var;
use crate::device::{groups_1d, WG};
use crate::error::{Error, Result};
use crate::ops::reduce::{reduce, Reduce};
use crate::tensor::{DType, Tensor};

crate::shader!(SHADER = "layernorm");

/// The usual epsilon.
pub const DEFAULT_EPS: f32 = 1e-5;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    d: u32,
    chunk: u32,
    chunks: u32,
    eps: f32,
    _pad: [u32; 3],
}

/// Column sums for dgamma / dbeta aim at about this many invocations (chunks x D).
const PARAM_INVOCATIONS: usize = 16384;
/// ... but never split the rows into chunks shorter than this.
const MIN_CHUNK_ROWS: usize = 32;

/// `(rows, D)`, after checking x `[.., D]`, gamma `[D]`, beta `[D]`.
fn check(x: &Tensor, gamma: &Tensor, beta: &Tensor) -> Result<(usize, usize)> {
    const OP: &str = "layer_norm";
    for t in [x, gamma, beta] {
        t.expect(OP, DType::F32)?;
    }
    let d = x.shape().last().copied().unwrap_or(0);
    if d == 0 || gamma.shape() != [d] || beta.shape() != [d] {
        return Err(Error::shape(
            OP,
            format!(
                "x {:?}, gamma {:?}, beta {:?}: needs x [.., D] (D >= 1), gamma [D], beta [D]",
                x.shape(),
                gamma.shape(),
                beta.shape()
            ),
        ));
    }
    Ok((x.numel() / d, d))
}

/// (The per-row kernels take their vec4 forms, `*4`, where D is a multiple of 4.)
fn params(rows: usize, d: usize, eps: f32) -> Params {
    Params { rows: rows as u32, d: d as u32, chunk: rows as u32, chunks: 1, eps, _pad: [0; 3] }
}

/// Returns `(y, mean [rows], rstd [rows])`.
pub fn layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f32) -> Result<(Tensor, Tensor, Tensor)> {
    let (rows, d) = check(x, gamma, beta)?;
    let dev = x.device();
    let y = Tensor::empty(dev, "layer_norm", x.shape(), DType::F32)?;
    let mean = Tensor::empty(dev, "layer_norm", &[rows], DType::F32)?;
    let rstd = Tensor::empty(dev, "layer_norm", &[rows], DType::F32)?;
    dev.dispatch(
        &SHADER,
        if d.is_multiple_of(4) { "ln_forward4" } else { "ln_forward" },
        &[],
        bytemuck::bytes_of(&params(rows, d, eps)),
        &[x.bind(), gamma.bind(), beta.bind(), y.bind(), mean.bind(), rstd.bind()],
        groups_1d(rows, WG),
    );
    Ok((y, mean, rstd))
}

fn check_saved(x: &Tensor, mean: &Tensor, rstd: &Tensor, gy: &Tensor) -> Result<(usize, usize)> {
    let d = x.shape().last().copied().unwrap_or(0);
    let rows = x.numel().checked_div(d).unwrap_or(0);
    if d == 0 || gy.shape() != x.shape() || mean.shape() != [rows] || rstd.shape() != [rows] {
        return Err(Error::shape(
            "layer_norm_backward",
            format!(
                "x {:?}, gy {:?}, mean {:?}, rstd {:?} do not fit together",
                x.shape(),
                gy.shape(),
                mean.shape(),
                rstd.shape()
            ),
        ));
    }
    Ok((rows, d))
}

/// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = gy * gamma, per row.
pub fn layer_norm_backward_x(x: &Tensor, gamma: &Tensor, mean: &Tensor, rstd: &Tensor, gy: &Tensor) -> Result<Tensor> {
    let (rows, d) = check_saved(x, mean, rstd, gy)?;
    if gamma.shape() != [d] {
        return Err(Error::shape("layer_norm_backward", format!("gamma {:?} for x {:?}", gamma.shape(), x.shape())));
    }
    let dev = x.device();
    let dx = Tensor::empty(dev, "layer_norm_backward", x.shape(), DType::F32)?;
    dev.dispatch(
        &SHADER,
        if d.is_multiple_of(4) { "ln_backward_x4" } else { "ln_backward_x" },
        &[],
        bytemuck::bytes_of(&params(rows, d, 0.0)),
        &[x.bind(), gamma.bind(), mean.bind(), rstd.bind(), gy.bind(), dx.bind()],
        groups_1d(rows, WG),
    );
    Ok(dx)
}

/// `(dgamma, dbeta)`: column sums of `gy * xhat` and `gy` over all rows.
pub fn layer_norm_backward_params(x: &Tensor, mean: &Tensor, rstd: &Tensor, gy: &Tensor) -> Result<(Tensor, Tensor)> {
    let (rows, d) = check_saved(x, mean, rstd, gy)?;
    let chunks = PARAM_INVOCATIONS.div_ceil(d).min(rows.div_ceil(MIN_CHUNK_ROWS)).max(1);
    layer_norm_backward_params_chunked(x, mean, rstd, gy, rows.div_ceil(chunks))
}

/// [`layer_norm_backward_params`] with an explicit number of rows per chunk (tests use it to
/// cover the one-chunk and many-chunk paths).
pub fn layer_norm_backward_params_chunked(
    x: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
    gy: &Tensor,
    chunk_rows: usize,
) -> Result<(Tensor, Tensor)> {
    let (rows, d) = check_saved(x, mean, rstd, gy)?;
    let chunk = chunk_rows.clamp(1, rows.max(1));
    let chunks = rows.div_ceil(chunk).max(1);
    let dev = x.device();
    let dgamma = Tensor::empty(dev, "layer_norm_backward", &[chunks, d], DType::F32)?;
    let dbeta = Tensor::empty(dev, "layer_norm_backward", &[chunks, d], DType::F32)?;
    let p =
        Params { rows: rows as u32, d: d as u32, chunk: chunk as u32, chunks: chunks as u32, eps: 0.0, _pad: [0; 3] };
    dev.dispatch(
        &SHADER,
        "ln_backward_params",
        &[],
        bytemuck::bytes_of(&p),
        &[x.bind(), mean.bind(), rstd.bind(), gy.bind(), dgamma.bind(), dbeta.bind()],
        groups_1d(chunks * d, WG),
    );
    if chunks == 1 {
        return Ok((dgamma.reshape(&[d])?, dbeta.reshape(&[d])?));
    }
    // The chunk partials, summed in chunk order by the deterministic reduce kernel.
    Ok((reduce(&dgamma, 0, Reduce::Sum, false)?, reduce(&dbeta, 0, Reduce::Sum, false)?))
}

impl Var {
    /// Layer norm over the last axis with learned `gamma [D]` and `beta [D]`
    /// ([`DEFAULT_EPS`] is the usual `eps`). Gradients flow to x, gamma and beta.
    pub fn layer_norm(&self, gamma: &Var, beta: &Var, eps: f32) -> Result<Var> {
        let (y, mean, rstd) = layer_norm(self.value(), gamma.value(), beta.value(), eps)?;
        let (x, g) = (self.value().clone(), gamma.value().clone());
        let need_x = self.requires_grad();
        let need_params = gamma.requires_grad() || beta.requires_grad();
        Ok(self.tape().op(y, &[self, gamma, beta], move |gy| {
            let dx = if need_x { Some(layer_norm_backward_x(&x, &g, &mean, &rstd, gy)?) } else { None };
            let (dg, db) = if need_params {
                let (dg, db) = layer_norm_backward_params(&x, &mean, &rstd, gy)?;
                (Some(dg), Some(db))
            } else {
                (None, None)
            };
            Ok(vec![dx, dg, db])
        }))
    }
}

/// f64 references on flat row-major data viewed as `[rows, D]`.
pub mod cpu {
    /// Returns `(y, mean, rstd)`.
    pub fn layer_norm(x: &[f64], gamma: &[f64], beta: &[f64], eps: f64) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let d = gamma.len();
        let rows = x.len() / d;
        let (mut y, mut means, mut rstds) = (vec![0.0; x.len()], vec![0.0; rows], vec![0.0; rows]);
        for r in 0..rows {
            let row = &x[r * d..(r + 1) * d];
            let mean = row.iter().sum::<f64>() / d as f64;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / d as f64;
            let rstd = 1.0 / (var + eps).sqrt();
            for i in 0..d {
                y[r * d + i] = (row[i] - mean) * rstd * gamma[i] + beta[i];
            }
            means[r] = mean;
            rstds[r] = rstd;
        }
        (y, means, rstds)
    }

    /// Returns `(dx, dgamma, dbeta)` for the upstream gradient `gy`.
    pub fn layer_norm_backward(x: &[f64], gamma: &[f64], gy: &[f64], eps: f64) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let d = gamma.len();
        let rows = x.len() / d;
        let (_, means, rstds) = layer_norm(x, gamma, &vec![0.0; d], eps);
        let (mut dx, mut dg, mut db) = (vec![0.0; x.len()], vec![0.0; d], vec![0.0; d]);
        for r in 0..rows {
            let xhat: Vec<f64> = (0..d).map(|i| (x[r * d + i] - means[r]) * rstds[r]).collect();
            let g: Vec<f64> = (0..d).map(|i| gy[r * d + i] * gamma[i]).collect();
            let mg = g.iter().sum::<f64>() / d as f64;
            let mgx = g.iter().zip(&xhat).map(|(a, b)| a * b).sum::<f64>() / d as f64;
            for i in 0..d {
                dx[r * d + i] = rstds[r] * (g[i] - mg - xhat[i] * mgx);
                dg[i] += gy[r * d + i] * xhat[i];
                db[i] += gy[r * d + i];
            }
        }
        (dx, dg, db)
    }
}
