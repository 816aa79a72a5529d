//! How good generated samples are: the Fréchet distance between Gaussians fitted to features
//! (with the symmetric eigen-solver it needs), class entropy, mean pairwise distance.

use crate::error::{Error, Result};

/// Eigenvalues and eigenvectors of the symmetric `n x n` matrix `a` (row-major; its symmetric
/// part `(a + a^T) / 2` is used) by cyclic Jacobi rotations in f64: `(values, v)` with the
/// eigenvectors as the columns of `v` (row-major), so `a = v diag(values) v^T`. Values are not
/// sorted. Non-finite input or a wrong length is an error.
pub fn symmetric_eigen(a: &[f64], n: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    if a.len() != n * n {
        return Err(Error::shape("symmetric_eigen", format!("{} values for a {n} x {n} matrix", a.len())));
    }
    if a.iter().any(|v| !v.is_finite()) {
        return Err(Error::Config("symmetric_eigen: the matrix has non-finite entries".into()));
    }
    let mut m: Vec<f64> = (0..n * n).map(|k| 0.5 * (a[k] + a[(k % n) * n + k / n])).collect();
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    let total: f64 = m.iter().map(|x| x * x).sum();
    let off = |m: &[f64]| -> f64 { (0..n * n).filter(|k| k / n != k % n).map(|k| m[k] * m[k]).sum() };
    for _sweep in 0..100 {
        if off(&m) <= f64::EPSILON * f64::EPSILON * total {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = m[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                // The rotation in the (p, q) plane that zeroes m[p][q] (the smaller angle).
                let theta = (m[q * n + q] - m[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (kp, kq) = (m[k * n + p], m[k * n + q]);
                    m[k * n + p] = c * kp - s * kq;
                    m[k * n + q] = s * kp + c * kq;
                }
                for k in 0..n {
                    let (pk, qk) = (m[p * n + k], m[q * n + k]);
                    m[p * n + k] = c * pk - s * qk;
                    m[q * n + k] = s * pk + c * qk;
                }
                for k in 0..n {
                    let (kp, kq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * kp - s * kq;
                    v[k * n + q] = s * kp + c * kq;
                }
            }
        }
    }
    if off(&m) > 1e-20 * total {
        return Err(Error::Config(format!(
            "symmetric_eigen: Jacobi did not converge in 100 sweeps ({n} x {n}, off-diagonal {:.3e} of {total:.3e})",
            off(&m)
        )));
    }
    Ok(((0..n).map(|i| m[i * n + i]).collect(), v))
}

/// The symmetric square root of a symmetric positive semi-definite matrix (negative eigenvalues,
/// rounding noise, are taken as 0).
pub fn sqrt_psd(a: &[f64], n: usize) -> Result<Vec<f64>> {
    let (vals, v) = symmetric_eigen(a, n)?;
    let r: Vec<f64> = vals.iter().map(|&l| l.max(0.0).sqrt()).collect();
    let mut out = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            out[i * n + j] = (0..n).map(|k| v[i * n + k] * r[k] * v[j * n + k]).sum();
        }
    }
    Ok(out)
}

/// A Gaussian fitted to feature vectors: mean and (unbiased) covariance, f64.
#[derive(Clone, Debug, PartialEq)]
pub struct Gaussian {
    pub dim: usize,
    pub mean: Vec<f64>,
    /// `dim x dim`, row-major.
    pub cov: Vec<f64>,
}

impl Gaussian {
    /// Fits `x` (`[n, dim]` row-major, n >= 2).
    pub fn fit(x: &[f32], dim: usize) -> Result<Gaussian> {
        if dim == 0 || !x.len().is_multiple_of(dim) || x.len() / dim < 2 {
            return Err(Error::shape(
                "Gaussian::fit",
                format!("{} values are not n >= 2 rows of {dim} features", x.len()),
            ));
        }
        let n = x.len() / dim;
        let mut mean = vec![0.0f64; dim];
        for row in x.chunks_exact(dim) {
            for (m, &v) in mean.iter_mut().zip(row) {
                *m += v as f64;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let mut cov = vec![0.0f64; dim * dim];
        let mut c = vec![0.0f64; dim];
        for row in x.chunks_exact(dim) {
            for (ci, (&v, m)) in c.iter_mut().zip(row.iter().zip(&mean)) {
                *ci = v as f64 - m;
            }
            for i in 0..dim {
                for j in i..dim {
                    cov[i * dim + j] += c[i] * c[j];
                }
            }
        }
        for i in 0..dim {
            for j in i..dim {
                cov[i * dim + j] /= (n - 1) as f64;
                cov[j * dim + i] = cov[i * dim + j];
            }
        }
        Ok(Gaussian { dim, mean, cov })
    }
}

/// The Fréchet distance between two Gaussians, `|mu1 - mu2|^2 + tr(S1) + tr(S2) -
/// 2 tr((S1^{1/2} S2 S1^{1/2})^{1/2})`, in f64 via symmetric eigendecompositions (the squared
/// 2-Wasserstein distance). Applied to features of real and generated images this is the
/// Fréchet feature distance; with Inception-v3 pool features it would be FID.
pub fn frechet_distance(a: &Gaussian, b: &Gaussian) -> Result<f64> {
    let d = a.dim;
    if b.dim != d || a.mean.len() != d || b.mean.len() != d || a.cov.len() != d * d || b.cov.len() != d * d {
        return Err(Error::shape("frechet_distance", format!("Gaussians of dims {} and {}", a.dim, b.dim)));
    }
    let mean2: f64 = a.mean.iter().zip(&b.mean).map(|(x, y)| (x - y) * (x - y)).sum();
    let tr = |c: &[f64]| (0..d).map(|i| c[i * d + i]).sum::<f64>();
    let r = sqrt_psd(&a.cov, d)?;
    let mul = |x: &[f64], y: &[f64]| -> Vec<f64> {
        let mut o = vec![0.0; d * d];
        for i in 0..d {
            for k in 0..d {
                let xik = x[i * d + k];
                for j in 0..d {
                    o[i * d + j] += xik * y[k * d + j];
                }
            }
        }
        o
    };
    let m = mul(&mul(&r, &b.cov), &r);
    let (vals, _) = symmetric_eigen(&m, d)?;
    let tr_sqrt: f64 = vals.iter().map(|&l| l.max(0.0).sqrt()).sum();
    Ok(mean2 + tr(&a.cov) + tr(&b.cov) - 2.0 * tr_sqrt)
}

/// The entropy (nats) of the histogram of `preds` over `classes` classes: ln(classes) when every
/// class is equally frequent, 0 when all are one class; NaN for no predictions.
pub fn class_entropy(preds: &[u32], classes: usize) -> f64 {
    if preds.is_empty() {
        return f64::NAN;
    }
    let mut counts = vec![0usize; classes.max(1)];
    for &p in preds {
        if let Some(c) = counts.get_mut(p as usize) {
            *c += 1;
        }
    }
    let n = preds.len() as f64;
    // 0 - sum, not -sum: a single class gives 0.0, not -0.0.
    0.0 - counts.iter().filter(|&&c| c > 0).map(|&c| c as f64 / n).map(|p| p * p.ln()).sum::<f64>()
}

/// Mean pairwise L2 distance between the rows of `x` (`[n, dim]`); NaN for fewer than 2 rows.
pub fn mean_pair_distance(x: &[f32], dim: usize) -> f64 {
    let n = x.len().checked_div(dim).unwrap_or(0);
    let (mut sum, mut pairs) = (0.0, 0usize);
    for a in 0..n {
        for b in a + 1..n {
            let d: f64 = (0..dim).map(|k| (x[a * dim + k] - x[b * dim + k]) as f64).map(|v| v * v).sum();
            sum += d.sqrt();
            pairs += 1;
        }
    }
    if pairs == 0 {
        f64::NAN
    } else {
        sum / pairs as f64
    }
}
