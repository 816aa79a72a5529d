//! The statistics every comparison reports: mean ± sample std over seeds, the paired difference
//! to the baseline with a Student-t 95% interval and the verdict read from it, model selection on
//! validation scores, and the task-side scores (importance AUC, latent spacing and class gap).
//!
//! Why a paired t interval and not a bootstrap: runs of two methods with the same seed share
//! their data order and initialisation, so their difference removes the seed's own effect, and
//! with 5-10 seeds a percentile bootstrap has only a handful of distinct resamples and covers
//! less than its nominal 95%; the t interval is exact for normal differences and robust enough
//! for the bounded, unimodal accuracies compared here.

use serde::{Deserialize, Serialize};

/// Mean and sample standard deviation (0 for one value, NaN for none).
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 { v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (m, var.sqrt())
}

/// `mean ± std` of `v` times `scale`, or `n/a` when empty or not finite.
pub fn fmt_ms(v: &[f64], scale: f64, digits: usize) -> String {
    if v.is_empty() || v.iter().any(|x| !x.is_finite()) {
        return "n/a".into();
    }
    let (m, s) = mean_std(v);
    format!("{:.*} ± {:.*}", digits, m * scale, digits, s * scale)
}

/// The index of the best score (the first one on ties; NaN never wins): what the protocol
/// reports for a run (the epoch with the best validation score) and picks for a method (the
/// lambda with the best mean validation score).
pub fn best_index(scores: &[f64], higher_is_better: bool) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, &s) in scores.iter().enumerate() {
        if s.is_nan() {
            continue;
        }
        let better = match best {
            None => true,
            Some(b) => (higher_is_better && s > scores[b]) || (!higher_is_better && s < scores[b]),
        };
        if better {
            best = Some(i);
        }
    }
    best
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, 9 terms: about 15 significant digits).
fn ln_gamma(x: f64) -> f64 {
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x) Γ(1 - x) = π / sin(πx).
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + 7.5;
    for (i, &c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// The regularised incomplete beta function I_x(a, b) (continued fraction, modified Lentz).
fn inc_beta(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    // The continued fraction converges fast for x < (a + 1) / (a + b + 2); use symmetry otherwise.
    if x > (a + 1.0) / (a + b + 2.0) {
        return 1.0 - inc_beta(1.0 - x, b, a);
    }
    let front = (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln()).exp() / a;
    let tiny = 1e-300;
    let (mut f, mut c, mut d) = (1.0, 1.0, 0.0);
    for i in 0..400 {
        let m = (i / 2) as f64;
        let num = if i == 0 {
            1.0
        } else if i % 2 == 0 {
            m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m))
        } else {
            -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0))
        };
        d = 1.0 + num * d;
        d = if d.abs() < tiny { tiny } else { d };
        d = 1.0 / d;
        c = 1.0 + num / c;
        c = if c.abs() < tiny { tiny } else { c };
        let cd = c * d;
        f *= cd;
        if (1.0 - cd).abs() < 1e-15 {
            break;
        }
    }
    front * (f - 1.0)
}

/// P(T <= t) for Student's t with `df` degrees of freedom.
pub fn student_t_cdf(t: f64, df: f64) -> f64 {
    let tail = 0.5 * inc_beta(df / (df + t * t), df / 2.0, 0.5);
    if t >= 0.0 {
        1.0 - tail
    } else {
        tail
    }
}

/// The quantile t such that P(T <= t) = p, for 0.5 <= p < 1 (bisection on the CDF to 1e-12).
pub fn student_t_quantile(p: f64, df: f64) -> f64 {
    assert!((0.5..1.0).contains(&p) && df > 0.0, "student_t_quantile: need 0.5 <= p < 1 and df > 0");
    let (mut lo, mut hi) = (0.0, 1.0);
    while student_t_cdf(hi, df) < p {
        hi *= 2.0;
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if student_t_cdf(mid, df) < p {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo < 1e-12 {
            break;
        }
    }
    0.5 * (lo + hi)
}

/// What the interval says about a method against the baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The whole interval lies on the better side of 0.
    Better,
    /// The whole interval lies on the worse side of 0.
    Worse,
    /// The interval contains 0.
    NoDetectableDifference,
    /// Fewer than 2 paired seeds: no interval.
    TooFewSeeds,
}

impl Verdict {
    pub fn text(self) -> &'static str {
        match self {
            Verdict::Better => "better",
            Verdict::Worse => "worse",
            Verdict::NoDetectableDifference => "no detectable difference",
            Verdict::TooFewSeeds => "n/a (< 2 seeds)",
        }
    }
}

/// The paired difference `method - baseline` over seeds with its 95% interval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairedDiff {
    /// Paired seeds.
    pub n: usize,
    pub mean: f64,
    /// Sample std of the per-seed differences.
    pub std: f64,
    /// The 95% interval `mean ± t(0.975, n - 1) std / sqrt(n)` (NaN with fewer than 2 seeds).
    pub lo: f64,
    pub hi: f64,
    pub verdict: Verdict,
}

/// The paired t interval of `method[i] - baseline[i]` (same seeds, same order). `higher_is_better`
/// says which side of 0 is "better".
pub fn paired_diff(method: &[f64], baseline: &[f64], higher_is_better: bool) -> PairedDiff {
    assert_eq!(method.len(), baseline.len(), "paired_diff: one value per seed on both sides");
    let d: Vec<f64> = method.iter().zip(baseline).map(|(a, b)| a - b).collect();
    let n = d.len();
    let (mean, std) = if n == 0 { (f64::NAN, f64::NAN) } else { mean_std(&d) };
    if n < 2 || !mean.is_finite() || !std.is_finite() {
        return PairedDiff { n, mean, std, lo: f64::NAN, hi: f64::NAN, verdict: Verdict::TooFewSeeds };
    }
    let half = student_t_quantile(0.975, (n - 1) as f64) * std / (n as f64).sqrt();
    let (lo, hi) = (mean - half, mean + half);
    let verdict = if lo > 0.0 {
        if higher_is_better {
            Verdict::Better
        } else {
            Verdict::Worse
        }
    } else if hi < 0.0 {
        if higher_is_better {
            Verdict::Worse
        } else {
            Verdict::Better
        }
    } else {
        Verdict::NoDetectableDifference
    };
    PairedDiff { n, mean, std, lo, hi, verdict }
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

/// Means and the pooled within-class covariance (`dim x dim`, row-major) of two classes' points.
fn class_moments(x: &[f32], dim: usize, labels: &[u32]) -> ([Vec<f64>; 2], Vec<f64>, [usize; 2]) {
    let mut mean = [vec![0.0; dim], vec![0.0; dim]];
    let mut count = [0usize; 2];
    for (p, &c) in x.chunks_exact(dim).zip(labels) {
        let c = (c as usize).min(1);
        count[c] += 1;
        for k in 0..dim {
            mean[c][k] += p[k] as f64;
        }
    }
    for c in 0..2 {
        for v in &mut mean[c] {
            *v /= count[c].max(1) as f64;
        }
    }
    let mut cov = vec![0.0; dim * dim];
    for (p, &c) in x.chunks_exact(dim).zip(labels) {
        let c = (c as usize).min(1);
        for i in 0..dim {
            for j in 0..dim {
                cov[i * dim + j] += (p[i] as f64 - mean[c][i]) * (p[j] as f64 - mean[c][j]);
            }
        }
    }
    let n = (count[0] + count[1]).saturating_sub(2).max(1) as f64;
    cov.iter_mut().for_each(|v| *v /= n);
    (mean, cov, count)
}

/// The `q`-quantile (0..=1) of `v` (sorted in place; linear interpolation).
fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let pos = q * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// How far apart two classes' latents lie along their best linear separator (Fisher's
/// discriminant direction `S_w^-1 (mu_1 - mu_0)`): the gap between the 5th percentile of the
/// upper class and the 95th of the lower one, in units of the pooled within-class standard
/// deviation along that direction. Positive: a gap with 90% of each class on its side (the
/// seed's Figure 3a); negative: the classes overlap. NaN with fewer than 2 points in a class.
pub fn class_gap(x: &[f32], dim: usize, labels: &[u32]) -> f64 {
    let (mean, mut cov, count) = class_moments(x, dim, labels);
    if count[0] < 2 || count[1] < 2 {
        return f64::NAN;
    }
    // A small ridge keeps S_w invertible when a latent direction is unused.
    let ridge = 1e-9 * (0..dim).map(|i| cov[i * dim + i]).sum::<f64>().max(1e-30) / dim as f64;
    for i in 0..dim {
        cov[i * dim + i] += ridge;
    }
    let Ok((vals, vecs)) = crate::experiments::gan::symmetric_eigen(&cov, dim) else { return f64::NAN };
    let diff: Vec<f64> = (0..dim).map(|k| mean[1][k] - mean[0][k]).collect();
    let mut w = vec![0.0; dim];
    for e in 0..dim {
        let proj: f64 = (0..dim).map(|k| vecs[k * dim + e] * diff[k]).sum::<f64>() / vals[e].max(ridge);
        for k in 0..dim {
            w[k] += vecs[k * dim + e] * proj;
        }
    }
    let (mut p0, mut p1) = (Vec::new(), Vec::new());
    for (p, &c) in x.chunks_exact(dim).zip(labels) {
        let v: f64 = (0..dim).map(|k| p[k] as f64 * w[k]).sum();
        if c == 0 {
            p0.push(v)
        } else {
            p1.push(v)
        }
    }
    let var = |v: &[f64]| mean_std(v).1.powi(2);
    let pooled = (((p0.len() - 1) as f64 * var(&p0) + (p1.len() - 1) as f64 * var(&p1))
        / (p0.len() + p1.len() - 2) as f64)
        .sqrt();
    (quantile(&mut p1, 0.05) - quantile(&mut p0, 0.95)) / pooled
}

/// Points `[n, dim]` projected on their first two principal components (for plots of latents
/// wider than 2); 2-D points come back as they are.
pub fn first_two_components(x: &[f32], dim: usize) -> Vec<(f64, f64)> {
    if dim == 2 {
        return x.chunks_exact(2).map(|p| (p[0] as f64, p[1] as f64)).collect();
    }
    let n = x.len() / dim;
    let mut mean = vec![0.0; dim];
    for p in x.chunks_exact(dim) {
        for k in 0..dim {
            mean[k] += p[k] as f64 / n as f64;
        }
    }
    let mut cov = vec![0.0; dim * dim];
    for p in x.chunks_exact(dim) {
        for i in 0..dim {
            for j in 0..dim {
                cov[i * dim + j] += (p[i] as f64 - mean[i]) * (p[j] as f64 - mean[j]);
            }
        }
    }
    let Ok((vals, vecs)) = crate::experiments::gan::symmetric_eigen(&cov, dim) else {
        return vec![(f64::NAN, f64::NAN); n];
    };
    let mut order: Vec<usize> = (0..dim).collect();
    order.sort_by(|&a, &b| vals[b].total_cmp(&vals[a]));
    let (e0, e1) = (order[0], order[1.min(dim - 1)]);
    x.chunks_exact(dim)
        .map(|p| {
            let c = |e: usize| (0..dim).map(|k| (p[k] as f64 - mean[k]) * vecs[k * dim + e]).sum::<f64>();
            (c(e0), c(e1))
        })
        .collect()
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

    #[test]
    fn t_quantiles_match_the_tables() {
        // Two-sided 95% critical values of Student's t (any statistics table).
        for (df, t) in
            [(1.0, 12.706_204_7), (2.0, 4.302_652_7), (4.0, 2.776_445_1), (9.0, 2.262_157_2), (29.0, 2.045_229_6)]
        {
            let q = student_t_quantile(0.975, df);
            assert!((q - t).abs() < 1e-6, "df {df}: {q} vs {t}");
        }
        assert!((student_t_quantile(0.975, 1e6) - 1.959_966).abs() < 1e-5);
        assert!((student_t_cdf(0.0, 3.0) - 0.5).abs() < 1e-15);
    }

    #[test]
    fn paired_interval_worked_example() {
        // Differences 1.2, 0.4, -0.3, 0.9, 0.8: mean 0.6, sample std sqrt(1.34 / 4) = 0.578792,
        // standard error 0.258844, t(0.975, 4) = 2.776445, half-width 0.718668.
        let base = [90.0, 91.0, 89.5, 90.5, 90.2];
        let diffs = [1.2, 0.4, -0.3, 0.9, 0.8];
        let m: Vec<f64> = base.iter().zip(&diffs).map(|(b, d)| b + d).collect();
        let p = paired_diff(&m, &base, true);
        assert_eq!(p.n, 5);
        assert!((p.mean - 0.6).abs() < 1e-9);
        assert!((p.std - 0.578_792).abs() < 1e-6);
        assert!((p.lo - (0.6 - 0.718_668)).abs() < 1e-5, "{p:?}");
        assert!((p.hi - (0.6 + 0.718_668)).abs() < 1e-5, "{p:?}");
        assert_eq!(p.verdict, Verdict::NoDetectableDifference);
        // Shifted up by 1: the interval clears 0.
        let up: Vec<f64> = m.iter().map(|v| v + 1.0).collect();
        assert_eq!(paired_diff(&up, &base, true).verdict, Verdict::Better);
        // The same numbers where lower is better (a distance): the verdict flips.
        assert_eq!(paired_diff(&up, &base, false).verdict, Verdict::Worse);
        assert_eq!(paired_diff(&[1.0], &[0.0], true).verdict, Verdict::TooFewSeeds);
    }

    #[test]
    fn class_gap_is_positive_for_separated_classes_and_negative_for_overlapping_ones() {
        let mut rng = crate::rng::Rng::new(3);
        let mut pts = |shift: f64, n: usize, dim: usize| -> (Vec<f32>, Vec<u32>) {
            let mut x = Vec::new();
            let mut y = Vec::new();
            for i in 0..n {
                let c = (i % 2) as u32;
                for k in 0..dim {
                    // Classes apart along a diagonal, with a wide nuisance direction.
                    let along = if c == 1 { shift } else { -shift };
                    let nuisance = if k == 1 { 10.0 * rng.normal() } else { rng.normal() };
                    x.push((along + nuisance) as f32);
                }
                y.push(c);
            }
            (x, y)
        };
        let (x, y) = pts(4.0, 400, 3);
        assert!(class_gap(&x, 3, &y) > 1.0, "{}", class_gap(&x, 3, &y));
        let (x, y) = pts(0.2, 400, 3);
        assert!(class_gap(&x, 3, &y) < 0.0, "{}", class_gap(&x, 3, &y));
        // Scale-free.
        let (x, y) = pts(4.0, 400, 2);
        let x10: Vec<f32> = x.iter().map(|v| v * 10.0).collect();
        assert!((class_gap(&x, 2, &y) - class_gap(&x10, 2, &y)).abs() < 1e-6);
    }

    #[test]
    fn principal_components_keep_the_widest_directions() {
        // Points on a line along (1, 1, 0) with small noise: the first component carries it.
        let mut rng = crate::rng::Rng::new(1);
        let mut x = Vec::new();
        for i in 0..100 {
            let t = i as f64 - 50.0;
            x.extend([
                (t + 0.01 * rng.normal()) as f32,
                (t + 0.01 * rng.normal()) as f32,
                (0.01 * rng.normal()) as f32,
            ]);
        }
        let p = first_two_components(&x, 3);
        let spread0 = p.iter().map(|q| q.0 * q.0).sum::<f64>();
        let spread1 = p.iter().map(|q| q.1 * q.1).sum::<f64>();
        assert!(spread0 > 1e4 * spread1, "{spread0} {spread1}");
    }

    #[test]
    fn selection_takes_the_first_best_and_skips_nan() {
        assert_eq!(best_index(&[0.5, 0.9, 0.9, 0.1], true), Some(1));
        assert_eq!(best_index(&[f64::NAN, 0.3, 0.2], false), Some(2));
        assert_eq!(best_index(&[f64::NAN], true), None);
    }
}
