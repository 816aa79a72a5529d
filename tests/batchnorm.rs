//! Batch norm against the f64 reference: training and evaluation forward on odd shapes (one and
//! several chunks per channel), the in-place running-statistics update, gradients, and shape
//! errors.
mod common;
use atomgrad::ops::batchnorm::{self, cpu, BatchNorm, Variant, CHUNK, LOOP_CHUNK};
use atomgrad::rng::Rng;
use atomgrad::{Device, Tape};
use common::*;

fn channel_params(rng: &mut Rng, c: usize) -> (Vec<f64>, Vec<f64>) {
    (rng.vec(c, 0.5, 1.5), rng.vec(c, -0.5, 0.5))
}

fn m_of(shape: &[usize]) -> usize {
    shape[0] * shape[2..].iter().product::<usize>()
}

/// [N, C], N = 1 with H * W > 1, C = 1, C = 17, H, W = 5, 7, channels of more than one chunk,
/// spatial sizes below, equal to and above the 256-element stride of the elementwise kernels, and
/// multiples of 4 (the vec4 kernels) and not.
const SHAPES: [&[usize]; 12] = [
    &[7, 3],
    &[2, 17],
    &[1, 3, 5, 7],
    &[4, 1, 5, 7],
    &[3, 17, 5, 7],
    &[2, 3, 61, 67],
    &[1, 2, 300, 337],
    &[5, 2, 7],
    &[3, 5, 16, 16],
    &[9, 3, 4, 4],
    &[2100, 3],
    &[3, 5, 6, 10], // S = 60: vec4 kernels whose 256-step (64 planes of 15 vec4s) crosses channels
];

const VARIANTS: [Variant; 2] = [Variant::Tree, Variant::Loop];

#[test]
fn chunked_shapes_really_span_several_chunks() {
    assert!(m_of(SHAPES[5]) > CHUNK && !m_of(SHAPES[5]).is_multiple_of(CHUNK));
    assert!(m_of(SHAPES[6]) > 20 * CHUNK);
    assert!(!m_of(SHAPES[5]).is_multiple_of(LOOP_CHUNK) && m_of(SHAPES[10]) > 2 * LOOP_CHUNK);
}

#[test]
fn training_forward_and_running_update_match_reference() {
    let dev = device();
    let mut rng = Rng::new(11);
    for (shape, variant) in SHAPES.into_iter().flat_map(|s| VARIANTS.map(|v| (s, v))) {
        let n: usize = shape.iter().product();
        let c = shape[1];
        let (g, b) = channel_params(&mut rng, c);
        let bn = BatchNorm::new(&dev, c).unwrap();
        let (mut rm, mut rv) = (vec![0.0; c], vec![1.0; c]);
        // Two steps, the second with an offset far from zero (two-pass variance must cope).
        for (step, (lo, hi)) in [(-1.0, 2.0), (99.0, 101.0)].into_iter().enumerate() {
            let x = rng.vec(n, lo, hi);
            let (y, stats) = batchnorm::batch_norm_with(
                variant,
                &upload(&dev, &x, shape),
                &upload(&dev, &g, &[c]),
                &upload(&dev, &b, &[c]),
                &bn,
                true,
            )
            .unwrap();
            let (yr, mean, var) = cpu::batch_norm_train(&x, shape, &g, &b, 1e-5);
            let what = format!("train {shape:?} {variant:?} step {step}");
            // Statistics of data at offset 100 carry f32 rounding of ~1e-5 relative to 100.
            assert_close(&format!("{what} y"), &y.to_vec().unwrap(), &yr, 5e-4, 1e-4);
            let st = stats.to_vec().unwrap();
            assert_close(&format!("{what} mean"), &st[..c], &mean, 1e-5, 1e-5);
            assert_close(&format!("{what} var"), &st[c..], &var, 1e-6, 2e-4);
            (rm, rv) = cpu::update_running(&rm, &rv, &mean, &var, m_of(shape), 0.1);
            assert_close(&format!("{what} running_mean"), &bn.running_mean.to_vec().unwrap(), &rm, 1e-5, 1e-5);
            assert_close(&format!("{what} running_var"), &bn.running_var.to_vec().unwrap(), &rv, 1e-6, 2e-4);
        }
    }
}

#[test]
fn evaluation_forward_uses_running_statistics_and_leaves_them() {
    let dev = device();
    let mut rng = Rng::new(12);
    for shape in SHAPES {
        let n: usize = shape.iter().product();
        let c = shape[1];
        let (g, b) = channel_params(&mut rng, c);
        let (rm, rv) = (rng.vec(c, -1.0, 1.0), rng.vec(c, 0.2, 3.0));
        let mut bn = BatchNorm::new(&dev, c).unwrap();
        bn.running_mean = upload(&dev, &rm, &[c]);
        bn.running_var = upload(&dev, &rv, &[c]);
        bn.eps = 1e-3;
        let x = rng.vec(n, -2.0, 2.0);
        let (y, _) = batchnorm::batch_norm(
            &upload(&dev, &x, shape),
            &upload(&dev, &g, &[c]),
            &upload(&dev, &b, &[c]),
            &bn,
            false,
        )
        .unwrap();
        let yr = cpu::normalize(&x, shape, &g, &b, &rm, &rv, 1e-3);
        assert_close(&format!("eval {shape:?}"), &y.to_vec().unwrap(), &yr, 1e-5, 1e-5);
        assert_eq!(bn.running_mean.to_vec().unwrap(), common::f32s(&rm), "eval must not touch running_mean");
        assert_eq!(bn.running_var.to_vec().unwrap(), common::f32s(&rv), "eval must not touch running_var");
    }
    // The default state normalises with mean 0, var 1.
    let bn = BatchNorm::new(&dev, 2).unwrap();
    assert_eq!((bn.channels(), bn.eps, bn.momentum), (2, 1e-5, 0.1));
    let x = [1.0, -2.0, 3.0, 4.0];
    let (y, _) = batchnorm::batch_norm(
        &upload(&dev, &x, &[2, 2]),
        &upload(&dev, &[1.0, 2.0], &[2]),
        &upload(&dev, &[0.0, 1.0], &[2]),
        &bn,
        false,
    )
    .unwrap();
    let s = (1.0f64 + 1e-5).sqrt();
    let r = [1.0 / s, -2.0 * 2.0 / s + 1.0, 3.0 / s, 4.0 * 2.0 / s + 1.0];
    assert_close("eval default state", &y.to_vec().unwrap(), &r, 1e-6, 1e-6);
}

#[test]
fn backward_matches_analytic_reference_on_large_shapes() {
    let dev = device();
    let mut rng = Rng::new(13);
    for shape in [SHAPES[2], SHAPES[4], SHAPES[5], SHAPES[6], SHAPES[8], SHAPES[10]] {
        let n: usize = shape.iter().product();
        let c = shape[1];
        let (g, b) = channel_params(&mut rng, c);
        let x = rng.vec(n, -1.0, 3.0);
        let gy = rng.vec(n, -1.0, 1.0);
        for (training, variant) in [true, false].into_iter().flat_map(|t| VARIANTS.map(|v| (t, v))) {
            let mut bn = BatchNorm::new(&dev, c).unwrap();
            bn.running_var = upload(&dev, &vec![0.7; c], &[c]);
            let xt = upload(&dev, &x, shape);
            let gt = upload(&dev, &g, &[c]);
            let (_, stats) =
                batchnorm::batch_norm_with(variant, &xt, &gt, &upload(&dev, &b, &[c]), &bn, training).unwrap();
            let (mean, var) = if training { cpu::channel_stats(&x, shape) } else { (vec![0.0; c], vec![0.7; c]) };
            let gyt = upload(&dev, &gy, shape);
            let (dx, dgamma, dbeta) =
                batchnorm::batch_norm_backward_with(variant, &xt, &gyt, &stats, &gt, bn.eps, training).unwrap();
            let (rdx, rdg, rdb) = cpu::batch_norm_backward(&x, shape, &gy, &g, &mean, &var, 1e-5, training);
            let what = format!("backward {shape:?} {variant:?} training={training}");
            let m = (m_of(shape) as f64).sqrt();
            assert_close(&format!("{what} dx"), &dx.to_vec().unwrap(), &rdx, 2e-5, 1e-3);
            assert_close(&format!("{what} dgamma"), &dgamma.to_vec().unwrap(), &rdg, 1e-5 * m, 1e-4);
            assert_close(&format!("{what} dbeta"), &dbeta.to_vec().unwrap(), &rdb, 1e-5 * m, 1e-4);
        }
    }
}

#[test]
fn training_gradients_match_finite_differences() {
    let mut rng = Rng::new(14);
    for shape in [vec![5, 3], vec![3, 2, 2, 3], vec![1, 1, 5, 7], vec![2, 4, 3]] {
        let n: usize = shape.iter().product();
        let c = shape[1];
        let (g, b) = channel_params(&mut rng, c);
        let x = rng.vec(n, -1.0, 2.0);
        let s = shape.clone();
        grad_check(
            &format!("batch_norm train {shape:?}"),
            &[(x, shape.clone()), (g, vec![c]), (b, vec![c])],
            &[true, true, true],
            move |v| {
                let bn = BatchNorm::new(v[0].value().device(), c)?;
                v[0].batch_norm(&v[1], &v[2], &bn, true)
            },
            move |i| cpu::batch_norm_train(&i[0], &s, &i[1], &i[2], 1e-5).0,
            3e-3,
        );
    }
}

#[test]
fn evaluation_gradients_match_finite_differences() {
    let mut rng = Rng::new(15);
    for shape in [vec![4, 3], vec![2, 3, 2, 3], vec![1, 1, 5, 7]] {
        let n: usize = shape.iter().product();
        let c = shape[1];
        let (g, b) = channel_params(&mut rng, c);
        let (rm, rv) = (rng.vec(c, -0.5, 0.5), rng.vec(c, 0.5, 2.0));
        let x = rng.vec(n, -1.0, 2.0);
        let s = shape.clone();
        let (rm2, rv2) = (rm.clone(), rv.clone());
        grad_check(
            &format!("batch_norm eval {shape:?}"),
            &[(x, shape.clone()), (g, vec![c]), (b, vec![c])],
            &[true, true, true],
            move |v| {
                let dev = v[0].value().device();
                let mut bn = BatchNorm::new(dev, c)?;
                bn.running_mean = upload(dev, &rm, &[c]);
                bn.running_var = upload(dev, &rv, &[c]);
                v[0].batch_norm(&v[1], &v[2], &bn, false)
            },
            move |i| {
                let (rm, rv): (Vec<f64>, Vec<f64>) =
                    (rm2.iter().map(|&v| v as f32 as f64).collect(), rv2.iter().map(|&v| v as f32 as f64).collect());
                cpu::normalize(&i[0], &s, &i[1], &i[2], &rm, &rv, 1e-5)
            },
            2e-3,
        );
    }
}

#[test]
fn gradient_sees_the_statistics_of_its_forward() {
    // An eval forward, then a training forward that updates the running statistics in place:
    // the eval op's backward must still use the statistics it normalised with.
    let dev = device();
    let c = 2;
    let mut bn = BatchNorm::new(&dev, c).unwrap();
    bn.running_var = upload(&dev, &[4.0, 0.25], &[c]);
    let tape = Tape::new();
    let x = tape.leaf(upload(&dev, &[1.0, 2.0, 3.0, 4.0], &[2, c]));
    let gamma = tape.constant(upload(&dev, &[1.0, 1.0], &[c]));
    let beta = tape.constant(upload(&dev, &[0.0, 0.0], &[c]));
    let y = x.batch_norm(&gamma, &beta, &bn, false).unwrap();
    let other = tape.constant(upload(&dev, &[10.0, 20.0, 50.0, 90.0], &[2, c]));
    other.batch_norm(&gamma, &beta, &bn, true).unwrap();
    let grads = y.backward_with(upload(&dev, &[1.0; 4], &[2, c])).unwrap();
    let r: Vec<f64> = [4.0f64, 0.25, 4.0, 0.25].iter().map(|v| 1.0 / (v + 1e-5).sqrt()).collect();
    assert_close("eval dx after update", &grads.get(&x).unwrap().to_vec().unwrap(), &r, 1e-6, 1e-6);
}

#[test]
fn results_are_bit_identical_across_runs() {
    let dev = device();
    let shape = [2, 3, 61, 67];
    let n: usize = shape.iter().product();
    let x = upload(&dev, &Rng::new(16).vec(n, -1.0, 1.0), &shape);
    let (g, b) = (upload(&dev, &[1.0, 2.0, 3.0], &[3]), upload(&dev, &[0.0; 3], &[3]));
    for variant in VARIANTS {
        let run = || {
            let bn = BatchNorm::new(&dev, 3).unwrap();
            let (y, stats) = batchnorm::batch_norm_with(variant, &x, &g, &b, &bn, true).unwrap();
            let (dx, dg, _) = batchnorm::batch_norm_backward_with(variant, &x, &y, &stats, &g, bn.eps, true).unwrap();
            let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
            (bits(y.to_vec().unwrap()), bits(dx.to_vec().unwrap()), bits(dg.to_vec().unwrap()))
        };
        assert!(run() == run(), "{variant:?}");
    }
}

fn err(dev: &Device, x: &[usize], g: usize, b: usize, bn_c: usize, training: bool) -> String {
    let n: usize = x.iter().product();
    let bn = BatchNorm::new(dev, bn_c).unwrap();
    batchnorm::batch_norm(
        &upload(dev, &vec![0.5; n], x),
        &upload(dev, &vec![1.0; g], &[g]),
        &upload(dev, &vec![0.0; b], &[b]),
        &bn,
        training,
    )
    .unwrap_err()
    .to_string()
}

#[test]
fn shape_mismatches_are_errors_naming_op_and_shapes() {
    let dev = device();
    let e = err(&dev, &[4, 3, 5, 7], 4, 3, 3, true);
    assert!(e.contains("batch_norm") && e.contains("gamma") && e.contains("[4]") && e.contains("[4, 3, 5, 7]"), "{e}");
    let e = err(&dev, &[4, 3], 3, 2, 3, false);
    assert!(e.contains("batch_norm") && e.contains("beta") && e.contains("[2]") && e.contains("[4, 3]"), "{e}");
    let e = err(&dev, &[4, 3], 3, 3, 5, true);
    assert!(e.contains("batch_norm") && e.contains("running_mean") && e.contains("[5]") && e.contains("[4, 3]"), "{e}");
    let e = err(&dev, &[6], 6, 6, 6, true);
    assert!(e.contains("batch_norm") && e.contains("[6]"), "{e}");
    // One value per channel: no batch variance to train with (evaluation is fine).
    let e = err(&dev, &[1, 3], 3, 3, 3, true);
    assert!(e.contains("batch_norm") && e.contains("[1, 3]"), "{e}");
    let bn = BatchNorm::new(&dev, 3).unwrap();
    let one = upload(&dev, &[1.0; 3], &[3]);
    assert!(batchnorm::batch_norm(&upload(&dev, &[0.5; 3], &[1, 3]), &one, &one, &bn, false).is_ok());
    // An empty batch is fine in evaluation mode.
    let (y, _) = batchnorm::batch_norm(&upload(&dev, &[], &[0, 3, 2]), &one, &one, &bn, false).unwrap();
    assert_eq!(y.shape(), &[0, 3, 2]);
    // The autodiff entry point reports the same error.
    let tape = Tape::new();
    let x = tape.leaf(upload(&dev, &[0.5; 12], &[4, 3]));
    let g = tape.leaf(upload(&dev, &[1.0; 2], &[2]));
    let e = x.batch_norm(&g, &g, &bn, true).unwrap_err().to_string();
    assert!(e.contains("batch_norm") && e.contains("[2]") && e.contains("[4, 3]"), "{e}");
}
