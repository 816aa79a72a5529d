//! GAN training and the 2-D mode-coverage benchmark: metrics on hand-built point sets,
//! determinism, one submit per iteration, and that each player's step leaves the other's
//! parameters alone.

mod common;

use atomgrad::data::fashion::{load_fashion, FashionData, FashionSource, ImageSet};
use atomgrad::experiments::classify::ClassifyConfig;
use atomgrad::experiments::gan::{
    class_entropy, frechet_distance, from_tanh_range, generate_with, load_generator, mean_pair_distance, mode_stats,
    sample, save_generator, symmetric_eigen, to_tanh_range, train_dcgan, train_gan2d, FashionGan, FashionGanConfig,
    FeatureNet, Gan2d, Gan2dConfig, Gaussian, Mixture, Split,
};
use atomgrad::experiments::protocol::RunRecord;
use atomgrad::experiments::task::{RunContext, RunOptions, Task};
use atomgrad::experiments::Method;
use atomgrad::nn::gan::{DcGenerator, Discriminator, Generator};
use atomgrad::rng::Rng;
use atomgrad::run::{Display, Run};
use atomgrad::{Error, Param};
use std::path::PathBuf;

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("atomgrad-gan-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn pts(list: &[(f64, f64)]) -> Vec<f32> {
    list.iter().flat_map(|&(x, y)| [x as f32, y as f32]).collect()
}

/// `per` points at each centre, offset by `off` along x.
fn at_centres(centres: &[(f64, f64)], per: &[usize], off: f64) -> Vec<f32> {
    let mut v = Vec::new();
    for (c, &k) in centres.iter().zip(per) {
        for _ in 0..k {
            v.push((c.0 + off, c.1));
        }
    }
    pts(&v)
}

#[test]
fn every_mode_equally_filled_is_full_coverage_with_zero_kl() {
    for mix in Mixture::ALL {
        let c = mix.centres();
        let s = mode_stats(&at_centres(&c, &vec![40; c.len()], 0.0), &c, mix.std());
        assert_eq!(s.modes, c.len());
        assert_eq!(s.modes_covered, c.len(), "{mix:?}");
        assert_eq!(s.high_quality, 1.0);
        assert!(s.kl.abs() < 1e-12, "{mix:?}: KL of a uniform histogram is {}", s.kl);
        assert_eq!(s.counts, vec![40; c.len()]);
    }
}

#[test]
fn one_mode_is_one_covered_with_kl_ln_k() {
    let mix = Mixture::Ring8;
    let c = mix.centres();
    let mut per = vec![0; 8];
    per[3] = 500;
    let s = mode_stats(&at_centres(&c, &per, 0.01), &c, mix.std());
    assert_eq!(s.modes_covered, 1);
    assert_eq!(s.high_quality, 1.0);
    assert!((s.kl - 8f64.ln()).abs() < 1e-12, "KL {} vs ln 8", s.kl);
    // No high-quality point at all: KL is defined as ln K, nothing covered.
    let s = mode_stats(&pts(&[(0.0, 0.0), (10.0, 10.0)]), &c, mix.std());
    assert_eq!((s.modes_covered, s.high_quality), (0, 0.0));
    assert!((s.kl - 8f64.ln()).abs() < 1e-12);
}

#[test]
fn off_mode_points_lower_quality_and_do_not_count() {
    let mix = Mixture::Grid25;
    let c = mix.centres();
    let std = mix.std();
    // 25 x 20 points at 2 std from their centre (high quality), 500 at 4 std (not), 100 NaN.
    let mut v = at_centres(&c, &[20; 25], 2.0 * std);
    v.extend(at_centres(&c, &[20; 25], 4.0 * std));
    v.extend(std::iter::repeat_n(f32::NAN, 200));
    let s = mode_stats(&v, &c, std);
    assert_eq!(s.counts, vec![20; 25]);
    assert!((s.high_quality - 500.0 / 1100.0).abs() < 1e-12, "{}", s.high_quality);
    assert_eq!(s.modes_covered, 25, "20 of 1100 points is above 1%");
    assert!(s.kl.abs() < 1e-12);
}

#[test]
fn a_mode_needs_one_percent_of_all_points() {
    let mix = Mixture::Ring8;
    let c = mix.centres();
    // 1000 points: mode 0 holds 891, mode 1 holds 100, mode 2 holds 9 (< 1%).
    let s = mode_stats(&at_centres(&c, &[891, 100, 9, 0, 0, 0, 0, 0], 0.0), &c, mix.std());
    assert_eq!(s.modes_covered, 2);
    let p = [0.891f64, 0.1, 0.009];
    let kl: f64 = p.iter().map(|&q| q * (q * 8.0).ln()).sum();
    assert!((s.kl - kl).abs() < 1e-12, "KL {} vs {kl}", s.kl);
}

#[test]
fn mixture_samples_lie_on_their_modes() {
    let ring = Mixture::Ring8.centres();
    for &(x, y) in &ring {
        assert!(((x * x + y * y).sqrt() - 2.0).abs() < 1e-12);
    }
    let grid = Mixture::Grid25.centres();
    assert!(grid.contains(&(-4.0, -4.0)) && grid.contains(&(4.0, 4.0)) && grid.contains(&(0.0, 0.0)));
    for mix in Mixture::ALL {
        let p = mix.sample(&mut Rng::new(7), 20_000);
        let s = mode_stats(&p, &mix.centres(), mix.std());
        assert_eq!(s.modes_covered, s.modes, "{mix:?}");
        // Within 3 std in 2-D: 1 - exp(-4.5) = 98.9%.
        assert!((s.high_quality - 0.989).abs() < 0.005, "{mix:?}: {}", s.high_quality);
        assert!(s.kl < 0.01, "{mix:?}: {}", s.kl);
    }
}

fn small() -> Gan2dConfig {
    Gan2dConfig {
        iters: 60,
        batch: 32,
        reg_batch: 16,
        hidden: 32,
        tokens: 4,
        log_every: 30,
        eval_points: 500,
        snapshot_points: 200,
        snapshots: false,
        ..Gan2dConfig::default()
    }
}

/// The options of a run of `task` with `method` and `seed` (what `train` would resolve).
fn options(task: Task, method: Method, seed: u64) -> RunOptions {
    task.resolve(method, seed, &Default::default()).unwrap()
}

/// A run folder for `opts` in `dir`.
fn run_folder(dir: &std::path::Path, opts: &RunOptions) -> Run {
    Run::create(dir, true, &serde_json::to_value(opts).unwrap(), Display::Quiet).unwrap()
}

/// Trains the small 2-D GAN in `dir`; returns its record and its metrics lines.
fn gan2d_run(dev: &atomgrad::Device, method: Method, seed: u64, dir: &std::path::Path) -> (RunRecord, String) {
    let opts = options(Task::Gan2d, method, seed);
    let mut run = run_folder(dir, &opts);
    let r = train_gan2d(dev, &small(), Mixture::Ring8, &opts, &mut run, None, &RunContext::default()).unwrap().unwrap();
    (r, std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap())
}

#[test]
fn a_seeded_run_is_bit_identical_and_reports_its_best_validation_interval() {
    let dev = common::device();
    let dir = temp("seeded");
    let (a, la) = gan2d_run(&dev, Method::Atom, 3, &dir.join("a"));
    let (b, lb) = gan2d_run(&dev, Method::Atom, 3, &dir.join("b"));
    let (_, lc) = gan2d_run(&dev, Method::Atom, 4, &dir.join("c"));
    // Two log intervals; every metrics line carries the losses (L_A and C_w too) and the score.
    assert_eq!(a.history.len(), 2);
    assert_eq!(la.lines().count(), 2);
    assert!(la.contains("\"l_a\"") && la.contains("\"c_w\"") && la.contains("\"val\""));
    assert_eq!(la, lb, "same seed, different losses or scores");
    assert_eq!(a, b, "same seed, different records");
    assert_ne!(la, lc, "another seed gave the same losses");
    let best = |d: &str| atomgrad::checkpoint::load(&dir.join(d).join("checkpoints/best.json")).unwrap().tensors;
    assert_eq!(best("a"), best("b"));
    assert_ne!(best("a"), best("c"));
    // The reported interval is the first with the most validation modes; its test score is the
    // selected generator's on fresh points.
    let vals: Vec<f64> = a.history.iter().map(|p| p.val).collect();
    let top = vals.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    assert_eq!(a.selected, vals.iter().position(|&v| v == top).unwrap());
    assert!(a.test >= 0.0 && a.test <= 8.0 && a.test.fract() == 0.0, "{}", a.test);
    assert!(a.report.metrics.contains_key("high_quality") && a.report.metrics.contains_key("kl"));
    assert!(dir.join("a/samples.png").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn one_iteration_is_one_submit_for_every_method() {
    let dev = common::own_device();
    let pac = Gan2dConfig {
        hidden: 32,
        maxout: Some((16, 5, 3)),
        train_points: Some(500),
        ..Gan2dConfig { iters: 60, log_every: 30, eval_points: 500, snapshot_points: 200, ..Gan2dConfig::pacgan() }
    };
    let every = Method::ALL.iter().map(|&m| (m, small())).chain([(Method::Ce, pac.clone()), (Method::Atom, pac)]);
    for (m, cfg) in every {
        let mut gan = Gan2d::new(&dev, &cfg, Mixture::Grid25, m, 1).unwrap();
        gan.step().unwrap(); // first step: optimizer state is created
        dev.flush().unwrap();
        for _ in 0..2 {
            let before = dev.stats();
            gan.step().unwrap();
            let after = dev.stats();
            assert_eq!(after.submits - before.submits, 1, "{m:?}: one iteration took several submits");
            assert_eq!(after.readbacks, before.readbacks, "{m:?}: an iteration read back");
        }
        let l = gan.take_losses().unwrap();
        assert!(l.d.is_finite() && l.g.is_finite() && l.reg.is_finite(), "{m:?}: {l:?}");
        assert_eq!(l.l_a.is_some(), m == Method::Atom);
        assert_eq!(l.c_w.is_some(), m.gated());
    }
}

fn values(ps: &[Param]) -> Vec<Vec<u32>> {
    ps.iter().map(|p| p.value().to_vec().unwrap().iter().map(|v| v.to_bits()).collect()).collect()
}

#[test]
fn each_step_changes_only_its_own_player() {
    let dev = common::device();
    for m in [Method::Ce, Method::Atom] {
        let mut gan = Gan2d::new(&dev, &small(), Mixture::Ring8, m, 2).unwrap();
        let g_params = gan.g.params(m.gated());
        let d_params = gan.d.params();
        let (g0, d0) = (values(&g_params), values(&d_params));
        gan.step_d().unwrap();
        let (g1, d1) = (values(&g_params), values(&d_params));
        assert_eq!(g0, g1, "{m:?}: the D step changed G");
        assert!(d0.iter().zip(&d1).all(|(a, b)| a != b), "{m:?}: the D step left a D tensor unchanged");
        assert!(g_params.iter().all(|p| p.grad().is_none()), "{m:?}: the D step left gradients on G");
        gan.step_g().unwrap();
        let (g2, d2) = (values(&g_params), values(&d_params));
        assert_eq!(d1, d2, "{m:?}: the G step changed D");
        assert!(g1.iter().zip(&g2).all(|(a, b)| a != b), "{m:?}: the G step left a G tensor unchanged");
        assert!(d_params.iter().all(|p| p.grad().is_none()), "{m:?}: the G step left gradients on D");
        // A full iteration changes both.
        gan.step().unwrap();
        let (g3, d3) = (values(&g_params), values(&d_params));
        assert!(g2 != g3 && d2 != d3);
    }
}

#[test]
fn bad_settings_are_errors() {
    let dev = common::device();
    for cfg in [
        Gan2dConfig { depth: 0, ..small() },
        Gan2dConfig { train_points: Some(3), ..small() },
        Gan2dConfig { hidden: 30, tokens: 4, ..small() },
        Gan2dConfig { batch: 1, ..small() },
        Gan2dConfig { iters: 0, ..small() },
        Gan2dConfig { lr: 0.0, ..small() },
    ] {
        let e = Gan2d::new(&dev, &cfg, Mixture::Ring8, Method::Ce, 0).err().expect("bad config is rejected");
        assert!(matches!(e, Error::Config(ref m) if m.starts_with("gan2d")), "{e}");
    }
    assert!(Mixture::parse("ring9").is_err());
    assert_eq!(Mixture::parse("grid25").unwrap(), Mixture::Grid25);
}

#[test]
fn dcgan_iteration_is_one_submit_and_steps_keep_to_their_player() {
    let dev = common::own_device();
    let data = load_fashion(FashionSource::Bundled).unwrap();
    let cfg = FashionGanConfig {
        batch: 8,
        reg_batch: 4,
        channels: 8,
        noise: 16,
        train_limit: Some(64),
        ..Default::default()
    };
    for m in [Method::Ce, Method::Atom] {
        let mut gan = FashionGan::fashion(&dev, &cfg, &data.train, m, 0).unwrap();
        gan.step().unwrap();
        dev.flush().unwrap();
        let before = dev.stats();
        gan.step().unwrap();
        let after = dev.stats();
        assert_eq!((after.submits - before.submits, after.readbacks - before.readbacks), (1, 0), "{m:?}");
        let (gp, dp) = (gan.g.params(m.gated()), gan.d.params());
        let (g0, d0) = (values(&gp), values(&dp));
        gan.step_d().unwrap();
        let (g1, d1) = (values(&gp), values(&dp));
        assert_eq!(g0, g1, "{m:?}: the D step changed G");
        assert_ne!(d0, d1);
        gan.step_g().unwrap();
        let (g2, d2) = (values(&gp), values(&dp));
        assert_eq!(d1, d2, "{m:?}: the G step changed D");
        assert_ne!(g1, g2);
        let l = gan.take_losses().unwrap();
        assert!(l.d.is_finite() && l.g.is_finite() && l.reg.is_finite(), "{m:?}: {l:?}");
        let x = gan.generate(5, 1).unwrap();
        assert_eq!(x.len(), 5 * 784);
        assert!(x.iter().all(|v| (-1.0..=1.0).contains(v)), "tanh output out of range");
    }
}

// ---- Sample-quality metrics ----

/// A random symmetric n x n matrix.
fn random_symmetric(rng: &mut Rng, n: usize) -> Vec<f64> {
    let mut a = vec![0.0; n * n];
    for i in 0..n {
        for j in i..n {
            let v = rng.normal();
            a[i * n + j] = v;
            a[j * n + i] = v;
        }
    }
    a
}

#[test]
fn jacobi_eigen_reconstructs_the_matrix_with_orthonormal_vectors() {
    let (vals, _) = symmetric_eigen(&[2.0, 1.0, 1.0, 2.0], 2).unwrap();
    let mut v = vals.clone();
    v.sort_by(f64::total_cmp);
    assert!((v[0] - 1.0).abs() < 1e-14 && (v[1] - 3.0).abs() < 1e-14, "{vals:?}");
    assert_eq!(symmetric_eigen(&[-4.5], 1).unwrap().0, vec![-4.5]);
    let mut rng = Rng::new(1);
    for n in [3, 13, 32] {
        let a = random_symmetric(&mut rng, n);
        let (vals, v) = symmetric_eigen(&a, n).unwrap();
        for i in 0..n {
            for j in 0..n {
                let rec: f64 = (0..n).map(|k| v[i * n + k] * vals[k] * v[j * n + k]).sum();
                assert!((rec - a[i * n + j]).abs() < 1e-11, "n {n}: A[{i}][{j}] {} rebuilt as {rec}", a[i * n + j]);
                let dot: f64 = (0..n).map(|k| v[k * n + i] * v[k * n + j]).sum();
                assert!((dot - (i == j) as u8 as f64).abs() < 1e-12, "n {n}: columns {i}, {j} dot {dot}");
            }
        }
        // The trace is the sum of the eigenvalues.
        let tr: f64 = (0..n).map(|i| a[i * n + i]).sum();
        assert!((tr - vals.iter().sum::<f64>()).abs() < 1e-11);
    }
    assert!(matches!(symmetric_eigen(&[1.0, 2.0, 3.0], 2), Err(Error::Shape { .. })));
    assert!(symmetric_eigen(&[1.0, f64::NAN, f64::NAN, 1.0], 2).is_err());
}

/// `n` samples of dimension `d` with correlated coordinates (x = A e + shift).
fn correlated(rng: &mut Rng, n: usize, d: usize, shift: f64) -> Vec<f32> {
    let a = random_symmetric(rng, d);
    let mut out = Vec::with_capacity(n * d);
    for _ in 0..n {
        let e: Vec<f64> = (0..d).map(|_| rng.normal()).collect();
        for i in 0..d {
            out.push(((0..d).map(|k| a[i * d + k] * e[k]).sum::<f64>() + shift) as f32);
        }
    }
    out
}

#[test]
fn frechet_distance_of_a_set_with_itself_is_zero_and_it_is_symmetric() {
    let mut rng = Rng::new(2);
    let d = 8;
    let a = Gaussian::fit(&correlated(&mut rng, 400, d, 0.0), d).unwrap();
    let b = Gaussian::fit(&correlated(&mut rng, 300, d, 0.5), d).unwrap();
    let scale: f64 = (0..d).map(|i| a.cov[i * d + i]).sum();
    let same = frechet_distance(&a, &a).unwrap();
    assert!(same.abs() < 1e-9 * scale, "FD(a, a) = {same} (trace {scale})");
    let (ab, ba) = (frechet_distance(&a, &b).unwrap(), frechet_distance(&b, &a).unwrap());
    assert!(ab > 0.1 * scale, "FD of two different sets is {ab}");
    assert!((ab - ba).abs() < 1e-9 * ab, "FD(a, b) {ab} != FD(b, a) {ba}");
    let e = frechet_distance(&a, &Gaussian::fit(&[0.0; 6], 3).unwrap()).unwrap_err();
    assert!(e.to_string().contains("frechet_distance") && e.to_string().contains("8 and 3"), "{e}");
    assert!(Gaussian::fit(&[1.0; 8], 8).is_err(), "one sample has no covariance");
    assert!(Gaussian::fit(&[1.0; 10], 4).is_err(), "10 values are not rows of 4");
}

#[test]
fn frechet_distance_matches_the_closed_form_for_diagonal_and_rotated_gaussians() {
    // Diagonal covariances: FD = |mu1 - mu2|^2 + sum_i (sqrt(s1_i) - sqrt(s2_i))^2.
    let d = 5;
    let diag = |v: &[f64]| {
        let mut c = vec![0.0; d * d];
        for (i, &x) in v.iter().enumerate() {
            c[i * d + i] = x;
        }
        c
    };
    let (m1, m2) = (vec![0.0, 1.0, -2.0, 0.5, 3.0], vec![1.0, 1.0, 0.0, 0.5, -1.0]);
    let (s1, s2) = ([1.0, 4.0, 0.25, 9.0, 2.0], [4.0, 1.0, 0.25, 1.0, 0.5]);
    let a = Gaussian { dim: d, mean: m1.clone(), cov: diag(&s1) };
    let b = Gaussian { dim: d, mean: m2.clone(), cov: diag(&s2) };
    let want: f64 = m1.iter().zip(&m2).map(|(x, y)| (x - y).powi(2)).sum::<f64>()
        + s1.iter().zip(&s2).map(|(x, y)| (x.sqrt() - y.sqrt()).powi(2)).sum::<f64>();
    let got = frechet_distance(&a, &b).unwrap();
    assert!((got - want).abs() < 1e-12 * want, "FD {got} vs closed form {want}");
    // The same pair in a rotated basis (Q from a random symmetric matrix's eigenvectors): FD is
    // rotation invariant, so the non-diagonal path must give the same value.
    let (_, q) = symmetric_eigen(&random_symmetric(&mut Rng::new(3), d), d).unwrap();
    let rot = |g: &Gaussian| {
        let mean = (0..d).map(|i| (0..d).map(|k| q[i * d + k] * g.mean[k]).sum()).collect();
        let mut cov = vec![0.0; d * d];
        for i in 0..d {
            for j in 0..d {
                cov[i * d + j] = (0..d).map(|k| q[i * d + k] * g.cov[k * d + k] * q[j * d + k]).sum();
            }
        }
        Gaussian { dim: d, mean, cov }
    };
    let got = frechet_distance(&rot(&a), &rot(&b)).unwrap();
    assert!((got - want).abs() < 1e-10 * want, "rotated FD {got} vs {want}");
}

#[test]
fn class_entropy_and_pair_distance_on_known_sets() {
    let all: Vec<u32> = (0..10).cycle().take(200).collect();
    assert!((class_entropy(&all, 10) - 10f64.ln()).abs() < 1e-12);
    assert_eq!(class_entropy(&[3; 50], 10).to_bits(), 0f64.to_bits(), "not -0");
    assert!((class_entropy(&[1, 7, 1, 7], 10) - 2f64.ln()).abs() < 1e-12);
    assert!(class_entropy(&[], 10).is_nan());
    // (0,0), (3,4), (0,0): distances 5, 0, 5.
    assert!((mean_pair_distance(&[0.0, 0.0, 3.0, 4.0, 0.0, 0.0], 2) - 10.0 / 3.0).abs() < 1e-12);
    assert!(mean_pair_distance(&[1.0, 2.0], 2).is_nan());
    let x = [-1.5f32, 0.0, 0.7, 2.8];
    for (a, b) in x.iter().zip(from_tanh_range(&to_tanh_range(&x))) {
        assert!((a - b).abs() < 1e-5, "{a} -> {b}");
    }
}

fn tiny_gan() -> FashionGanConfig {
    FashionGanConfig {
        epochs: 1,
        batch: 16,
        reg_batch: 8,
        channels: 8,
        noise: 16,
        train_limit: Some(64),
        grid: 16,
        eval_samples: 64,
        ..Default::default()
    }
}

#[test]
fn a_saved_generator_samples_what_it_generated_and_a_foreign_checkpoint_is_refused() {
    let dev = common::device();
    let data = load_fashion(FashionSource::Bundled).unwrap();
    let dir = temp("ckpt");
    let cfg = tiny_gan();
    for m in [Method::Ce, Method::Atom] {
        let mut gan = FashionGan::fashion(&dev, &cfg, &data.train, m, 5).unwrap();
        for _ in 0..3 {
            gan.step().unwrap(); // moves the batch-norm running statistics off their start
        }
        let path = dir.join(format!("g-{}.safetensors", m.slug()));
        save_generator(&path, &gan, &cfg, 5, "test").unwrap();
        let (x, w) = gan.generate_with_importance(10, 77).unwrap();
        let (g, method) = load_generator(&dev, &path).unwrap();
        assert_eq!(method, m);
        let (y, v) = generate_with(&dev, &g, m.gated(), 10, 77).unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&x), bits(&y), "{m:?}: the restored generator draws other images");
        assert_eq!(w.is_some(), m.gated());
        assert_eq!(w.map(|w| bits(&w)), v.map(|v| bits(&v)));
        let png = sample(&dev, &path, 10, 77, &dir.join(format!("s-{}", m.slug()))).unwrap();
        assert!(png.ends_with(format!("samples-{}-n10-seed77.png", m.slug())), "{}", png.display());
        let img = image::open(&png).unwrap();
        assert!(img.width() > img.height(), "10 images in 4 columns make a wide grid");
        let named = sample(&dev, &path, 1, 0, &dir.join("one.png")).unwrap();
        assert!(named.exists() && named.ends_with("one.png"));
        let e = sample(&dev, &path, 0, 0, &dir).unwrap_err();
        assert!(e.to_string().contains("n must be"), "{e}");
    }
    // Tensors of a 16-channel generator under a sidecar that names 8 channels: a shape error naming
    // the tensor and both shapes, and nothing sampled.
    let g16 = DcGenerator::new(&dev, 16, 16, 0).unwrap();
    let bad = dir.join("bad.safetensors");
    let meta = serde_json::json!({"task": "gan-generator", "model": "DcGenerator", "channels": 8, "noise": 16, "method": "ce"});
    atomgrad::checkpoint::save(&bad, &g16.tensors(), &meta).unwrap();
    let e = sample(&dev, &bad, 4, 0, &dir.join("bad.png")).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    assert!(msg.contains("\"g.fc.w\"") && msg.contains("[16, 784]") && msg.contains("[16, 392]"), "{msg}");
    assert!(!dir.join("bad.png").exists());
    // A classifier checkpoint is not a generator.
    let cnn = atomgrad::nn::cnn::Cnn::new(&dev, 4, 8, 10, 0).unwrap();
    let cls = dir.join("cls.safetensors");
    atomgrad::checkpoint::save(&cls, &cnn.tensors(), &serde_json::json!({"task": "fashion", "method": "ce"})).unwrap();
    let e = load_generator(&dev, &cls).err().expect("a classifier is refused");
    assert!(e.to_string().contains("not a DCGAN generator") && e.to_string().contains("\"fashion\""), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn feature_cnn_scores_real_images_above_collapse_and_noise_and_a_run_writes_its_figures() {
    let dev = common::device();
    let full = load_fashion(FashionSource::Bundled).unwrap();
    // Every 5th test image (400, all classes) keeps scoring cheap on lavapipe (~3 ms an image).
    let keep: Vec<usize> = (0..full.test.len()).step_by(5).collect();
    let (tx, ty) = full.test.batch(&keep);
    let data = FashionData { test: ImageSet { x: tx, y: ty }, ..full };
    let dir = temp("features");
    let fc = ClassifyConfig { epochs: 1, train_limit: Some(640), test_limit: Some(100), ..ClassifyConfig::fashion() };
    let path = dir.join("feature-cnn.safetensors");
    let net = FeatureNet::prepare(&dev, &data, &fc, &path).unwrap();
    assert!(!net.reused && path.exists());
    assert_eq!(net.dim, fc.channels.1);
    assert!(net.test_accuracy > 0.4, "feature CNN test accuracy {}", net.test_accuracy);
    let n = 300;
    let real = net.quality_normalised(&data.train.x[..n * 784], Split::Test).unwrap();
    // One image repeated: a single class, no diversity.
    let one: Vec<f32> = data.train.x[..784].repeat(n);
    let collapsed = net.quality_normalised(&one, Split::Test).unwrap();
    // Uniform noise in [-1, 1] (the generator's range).
    let mut rng = Rng::new(9);
    let noise: Vec<f32> = (0..n * 784).map(|_| (2.0 * rng.uniform() - 1.0) as f32).collect();
    let noisy = net.quality(&noise, Split::Test).unwrap();
    assert!(real.class_entropy > 2.0, "real training images: entropy {}", real.class_entropy);
    assert_eq!(collapsed.class_entropy, 0.0);
    assert_eq!(collapsed.class_counts.iter().filter(|&&c| c > 0).count(), 1);
    assert_eq!(collapsed.classes_covered, 1);
    assert!(real.classes_covered > collapsed.classes_covered, "{real:?}");
    assert!((0.0..=1.0).contains(&real.confident) && (0.0..=1.0).contains(&collapsed.confident));
    assert!(collapsed.diversity.abs() < 1e-6, "{}", collapsed.diversity);
    assert!((real.diversity - 1.0).abs() < 0.2, "real training over real test diversity {}", real.diversity);
    assert!(
        real.frechet < 0.2 * collapsed.frechet && real.frechet < 0.2 * noisy.frechet,
        "FD real {} collapsed {} noise {}",
        real.frechet,
        collapsed.frechet,
        noisy.frechet
    );
    // The same settings find the checkpoint; other settings retrain.
    let again = FeatureNet::prepare(&dev, &data, &fc, &path).unwrap();
    assert!(again.reused);
    assert_eq!(again.test_accuracy, net.test_accuracy);
    // A gated run scores every epoch against the validation images, then its best generator
    // against the test images, and writes the generator and the importance grid.
    let cfg = FashionGanConfig { epochs: 2, ..tiny_gan() };
    let run_dir = dir.join("atom");
    let opts = options(Task::Gan, Method::Atom, 0);
    let mut run = run_folder(&run_dir, &opts);
    let ctx = RunContext { shared: Some(dir.clone()), ..RunContext::default() };
    let r = train_dcgan(&dev, &data, &cfg, &opts, &mut run, None, &ctx).unwrap().unwrap();
    assert_eq!(r.history.len(), 2);
    assert!(r.history.iter().all(|p| p.val.is_finite() && p.val > 0.0));
    assert!(r.test.is_finite() && r.test > 0.0, "{}", r.test);
    assert!(r.report.metrics["class_entropy"] >= 0.0);
    for f in ["generator.safetensors", "generator.json", "importance.png", "samples.png", "metrics.jsonl"] {
        assert!(run_dir.join(f).exists(), "{f} missing");
    }
    // The feature CNN of the shared folder was reused, not retrained into the run.
    assert!(!run_dir.join("feature-cnn.safetensors").exists());
    let jsonl = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    assert!(jsonl.lines().count() == 2 && jsonl.contains("\"frechet\""));
    let (_, m) = load_generator(&dev, &run_dir.join("generator.safetensors")).unwrap();
    assert_eq!(m, Method::Atom);
    let _ = std::fs::remove_dir_all(&dir);
}

/// PacGAN's criterion counts a mode with a single point; the 1% criterion does not.
#[test]
fn a_single_point_covers_a_mode_only_under_pacgans_criterion() {
    let mix = Mixture::Ring8Unit;
    let c = mix.centres();
    assert!((c[0].0 - 1.0).abs() < 1e-12 && mix.std() == 0.01);
    // 200 points on mode 0, one on mode 1.
    let mut pts = at_centres(&c, &[200, 1, 0, 0, 0, 0, 0, 0], 0.0);
    pts.truncate(2 * 201);
    assert_eq!(atomgrad::experiments::gan::mode_stats_with(&pts, &c, mix.std(), 0.0).modes_covered, 2);
    assert_eq!(mode_stats(&pts, &c, mix.std()).modes_covered, 1);
}

/// The standard-size DCGAN (deep generator and discriminator, at reduced widths): its shapes, one
/// submit per iteration for the plain GAN, SimCLR (projection head trained with the generator)
/// and atom modeling, and a checkpoint that `sample` rebuilds.
#[test]
fn deep_dcgan_trains_every_method_in_one_submit_and_saves_a_generator() {
    let dev = common::own_device();
    let data = load_fashion(FashionSource::Bundled).unwrap();
    let cfg = FashionGanConfig { channels: 8, d_channels: 4, deep: true, ..tiny_gan() };
    for m in [Method::Ce, Method::SimClr, Method::Atom] {
        let mut gan = FashionGan::fashion(&dev, &cfg, &data.train, m, 0).unwrap();
        assert!(gan.g.deep.is_some() && gan.d.c3.is_some());
        gan.step().unwrap();
        dev.flush().unwrap();
        let before = dev.stats();
        gan.step().unwrap();
        assert_eq!(dev.stats().submits - before.submits, 1, "{m:?}");
        let l = gan.take_losses().unwrap();
        assert!(l.d.is_finite() && l.g.is_finite() && l.reg.is_finite(), "{m:?}: {l:?}");
        assert_eq!(l.reg == 0.0, m == Method::Ce, "{m:?}: {l:?}");
        let x = gan.generate(3, 1).unwrap();
        assert_eq!(x.len(), 3 * 784);
        assert!(x.iter().all(|v| v.abs() <= 1.0));
        // SimCLR's projection head is part of the training state.
        let names: Vec<String> = gan.state().unwrap().into_iter().map(|(k, _)| k).collect();
        assert_eq!(names.iter().any(|k| k.starts_with("model.proj")), m == Method::SimClr);
    }
    let dir = temp("deep");
    let gan = FashionGan::fashion(&dev, &cfg, &data.train, Method::Atom, 0).unwrap();
    let path = dir.join("generator.safetensors");
    save_generator(&path, &gan, &cfg, 0, "test").unwrap();
    let (g, m) = load_generator(&dev, &path).unwrap();
    assert_eq!(m, Method::Atom);
    assert!(g.deep.is_some());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The standard-size DCGAN scores in the residual CNN's features (here a tiny one): features of
/// its last stage's width, and the new measures on a collapsed set.
#[test]
fn the_feature_net_can_be_the_residual_cnn() {
    let dev = common::device();
    let full = load_fashion(FashionSource::Bundled).unwrap();
    let keep: Vec<usize> = (0..full.test.len()).step_by(10).collect();
    let (tx, ty) = full.test.batch(&keep);
    let data = FashionData { test: ImageSet { x: tx, y: ty }, ..full };
    let fc = ClassifyConfig {
        stages: vec![4, 6, 8],
        epochs: 1,
        batch: 32,
        train_limit: Some(64),
        test_limit: Some(32),
        ..ClassifyConfig::fashion_resnet()
    };
    let dir = temp("resnet-features");
    let net = FeatureNet::prepare(&dev, &data, &fc, &dir.join("feature-cnn.safetensors")).unwrap();
    assert_eq!(net.dim, 8);
    let one: Vec<f32> = data.train.x[..784].repeat(50);
    let q = net.quality_normalised(&one, Split::Test).unwrap();
    assert_eq!((q.images, q.classes_covered), (50, 1));
    assert!(q.frechet.is_finite() && q.frechet > 0.0);
    let _ = std::fs::remove_dir_all(&dir);
}
