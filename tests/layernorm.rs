//! Layer norm against the f64 reference: forward with odd D and many rows, backward kernels on
//! the one-chunk and many-chunk column paths, gradient checks for x, gamma and beta, errors.
mod common;
use atomgrad::ops::layernorm::{self, cpu, DEFAULT_EPS};
use atomgrad::rng::Rng;
use atomgrad::{Tape, Tensor};
use common::*;

const EPS: f64 = DEFAULT_EPS as f64;

#[test]
fn forward_matches_reference_on_odd_sizes() {
    let dev = device();
    let mut rng = Rng::new(31);
    for d in [1usize, 3, 65, 300] {
        for rows in [1usize, 7, 1000] {
            // an offset mean checks that the variance does not cancel catastrophically
            let offset = if rows == 7 { 50.0 } else { 0.0 };
            let x = rng.vec(rows * d, offset - 2.0, offset + 2.0);
            let g = rng.vec(d, 0.5, 1.5);
            let b = rng.vec(d, -0.5, 0.5);
            let (y, mean, rstd) = layernorm::layer_norm(
                &upload(&dev, &x, &[rows, d]),
                &upload(&dev, &g, &[d]),
                &upload(&dev, &b, &[d]),
                DEFAULT_EPS,
            )
            .unwrap();
            let (ry, rm, rr) = cpu::layer_norm(&x, &g, &b, EPS);
            let what = format!("rows {rows} D {d}");
            assert_close(&format!("layer_norm y {what}"), &y.to_vec().unwrap(), &ry, 1e-4, 1e-4);
            assert_close(&format!("layer_norm mean {what}"), &mean.to_vec().unwrap(), &rm, 1e-5, 1e-6);
            assert_close(&format!("layer_norm rstd {what}"), &rstd.to_vec().unwrap(), &rr, 1e-4, 1e-4);
        }
    }
}

#[test]
fn higher_rank_input_normalises_the_last_axis() {
    let dev = device();
    let mut rng = Rng::new(32);
    let (b, t, d) = (2, 3, 5);
    let x = rng.vec(b * t * d, -1.0, 1.0);
    let g = rng.vec(d, 0.5, 1.5);
    let bt = rng.vec(d, -0.5, 0.5);
    let (y, ..) =
        layernorm::layer_norm(&upload(&dev, &x, &[b, t, d]), &upload(&dev, &g, &[d]), &upload(&dev, &bt, &[d]), 1e-3)
            .unwrap();
    assert_eq!(y.shape(), &[b, t, d]);
    assert_close("layer_norm [2, 3, 5]", &y.to_vec().unwrap(), &cpu::layer_norm(&x, &g, &bt, 1e-3).0, 1e-5, 1e-4);
}

#[test]
fn backward_kernels_match_reference_on_both_column_paths() {
    let dev = device();
    let mut rng = Rng::new(33);
    for d in [1usize, 3, 65, 300] {
        for rows in [1usize, 7, 1000] {
            let x = rng.vec(rows * d, -2.0, 2.0);
            let g = rng.vec(d, 0.5, 1.5);
            let b = rng.vec(d, -0.5, 0.5);
            let gy = rng.vec(rows * d, -1.0, 1.0);
            let (xt, gt, gyt) = (upload(&dev, &x, &[rows, d]), upload(&dev, &g, &[d]), upload(&dev, &gy, &[rows, d]));
            let (_, mean, rstd) = layernorm::layer_norm(&xt, &gt, &upload(&dev, &b, &[d]), DEFAULT_EPS).unwrap();
            let (rdx, rdg, rdb) = cpu::layer_norm_backward(&x, &g, &gy, EPS);
            let what = format!("rows {rows} D {d}");
            let dx = layernorm::layer_norm_backward_x(&xt, &gt, &mean, &rstd, &gyt).unwrap();
            assert_close(&format!("dx {what}"), &dx.to_vec().unwrap(), &rdx, 2e-4, 2e-3);
            // the automatic chunking, one chunk, one row per chunk, and a ragged last chunk
            let sum_tol = 1e-5 * (rows as f64).sqrt() * 4.0;
            let auto = layernorm::layer_norm_backward_params(&xt, &mean, &rstd, &gyt).unwrap();
            for (label, (dg, db)) in [("auto", auto)].into_iter().chain([rows, 1, 7].into_iter().map(|c| {
                ("chunked", layernorm::layer_norm_backward_params_chunked(&xt, &mean, &rstd, &gyt, c).unwrap())
            })) {
                assert_eq!(dg.shape(), &[d]);
                assert_close(&format!("dgamma {label} {what}"), &dg.to_vec().unwrap(), &rdg, sum_tol, 1e-3);
                assert_close(&format!("dbeta {label} {what}"), &db.to_vec().unwrap(), &rdb, sum_tol, 1e-4);
            }
        }
    }
}

#[test]
fn column_gradients_are_bit_identical_across_runs() {
    let dev = device();
    let mut rng = Rng::new(34);
    let (rows, d) = (1000, 65);
    let x = upload(&dev, &rng.vec(rows * d, -2.0, 2.0), &[rows, d]);
    let g = upload(&dev, &rng.vec(d, 0.5, 1.5), &[d]);
    let gy = upload(&dev, &rng.vec(rows * d, -1.0, 1.0), &[rows, d]);
    let (_, mean, rstd) = layernorm::layer_norm(&x, &g, &Tensor::zeros(&dev, &[d]).unwrap(), DEFAULT_EPS).unwrap();
    let a = layernorm::layer_norm_backward_params(&x, &mean, &rstd, &gy).unwrap().0.to_vec().unwrap();
    let b = layernorm::layer_norm_backward_params(&x, &mean, &rstd, &gy).unwrap().0.to_vec().unwrap();
    assert!(a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()));
}

#[test]
fn gradients_match_finite_differences() {
    let mut rng = Rng::new(35);
    for (rows, d) in [(1usize, 1usize), (7, 3), (3, 65), (2, 300)] {
        let x = rng.vec(rows * d, -2.0, 2.0);
        let g = rng.vec(d, 0.5, 1.5);
        let b = rng.vec(d, -0.5, 0.5);
        grad_check(
            &format!("layer_norm rows {rows} D {d}"),
            &[(x, vec![rows, d]), (g, vec![d]), (b, vec![d])],
            &[true, true, true],
            |v| v[0].layer_norm(&v[1], &v[2], DEFAULT_EPS),
            |i| cpu::layer_norm(&i[0], &i[1], &i[2], EPS).0,
            2e-3,
        );
    }
}

#[test]
fn only_the_needed_gradients_are_computed() {
    // gamma and beta as constants: x still gets its gradient, nothing fails.
    let dev = device();
    let mut rng = Rng::new(36);
    let (rows, d) = (4, 6);
    let x = rng.vec(rows * d, -1.0, 1.0);
    let g = rng.vec(d, 0.5, 1.5);
    let tape = Tape::new();
    let xv = tape.leaf(upload(&dev, &x, &[rows, d]));
    let gv = tape.constant(upload(&dev, &g, &[d]));
    let bv = tape.constant(Tensor::zeros(&dev, &[d]).unwrap());
    let gy = rng.vec(rows * d, -1.0, 1.0);
    let grads = xv.layer_norm(&gv, &bv, DEFAULT_EPS).unwrap().backward_with(upload(&dev, &gy, &[rows, d])).unwrap();
    let dx = grads.get(&xv).unwrap().to_vec().unwrap();
    assert_close("dx with constant gamma/beta", &dx, &cpu::layer_norm_backward(&x, &g, &gy, EPS).0, 1e-4, 1e-3);
}

#[test]
fn shape_errors_name_the_op_and_shapes() {
    let dev = device();
    let tape = Tape::new();
    let x = tape.leaf(Tensor::zeros(&dev, &[4, 6]).unwrap());
    let g = tape.leaf(Tensor::zeros(&dev, &[5]).unwrap());
    let b = tape.leaf(Tensor::zeros(&dev, &[6]).unwrap());
    let e = x.layer_norm(&g, &b, DEFAULT_EPS).unwrap_err().to_string();
    assert!(e.contains("layer_norm") && e.contains("[4, 6]") && e.contains("[5]"), "{e}");
    let e = x.layer_norm(&b, &g, DEFAULT_EPS).unwrap_err().to_string();
    assert!(e.contains("layer_norm") && e.contains("[4, 6]") && e.contains("[5]"), "{e}");
    let s = tape.leaf(Tensor::scalar(&dev, 1.0).unwrap());
    assert!(s.layer_norm(&b, &b, DEFAULT_EPS).unwrap_err().to_string().contains("layer_norm"));
}
