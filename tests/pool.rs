//! max_pool2d and avg_pool2d: forward (values and argmax) against f64 references on odd sizes,
//! overlapping windows and padding, gradient checks, and shape errors.
mod common;
use atomgrad::ops::pool::{self, cpu};
use atomgrad::rng::Rng;
use atomgrad::Tape;
use common::*;

/// (input shape, kernel, stride, padding)
type Case = ([usize; 4], (usize, usize), (usize, usize), (usize, usize));

const CASES: &[Case] = &[
    ([1, 1, 1, 1], (1, 1), (1, 1), (0, 0)),
    ([2, 3, 7, 9], (3, 3), (2, 2), (1, 1)),
    ([1, 2, 5, 5], (3, 3), (1, 1), (1, 1)),
    ([3, 1, 9, 11], (2, 3), (1, 2), (1, 1)),
    ([2, 3, 6, 7], (4, 4), (3, 2), (2, 2)),
    ([1, 1, 5, 4], (5, 4), (1, 1), (0, 0)),
    ([2, 2, 1, 7], (1, 3), (1, 2), (0, 1)),
    ([1, 3, 8, 8], (2, 2), (2, 2), (0, 0)),
    // Rows longer than one run of 8 elements, a partial last run, overlapping and strided windows.
    ([2, 2, 5, 21], (3, 2), (2, 3), (1, 1)),
    ([1, 2, 4, 19], (2, 5), (1, 1), (1, 2)),
    // Windows that tile the input exactly (the tiled backward): rows of more than 8 windows,
    // unequal sides; then kernel = stride with a remainder row and column (the general one).
    ([2, 3, 6, 20], (2, 2), (2, 2), (0, 0)),
    ([2, 1, 4, 27], (2, 3), (2, 3), (0, 0)),
    ([1, 2, 7, 9], (2, 2), (2, 2), (0, 0)),
];

/// Distinct values (no ties, gaps far above the finite-difference step), shuffled.
fn distinct(seed: u64, n: usize) -> Vec<f64> {
    let mut v: Vec<f64> = (0..n).map(|i| (i as f64 * 0.01 - 0.005 * n as f64) as f32 as f64).collect();
    Rng::new(seed).shuffle(&mut v);
    v
}

#[test]
fn max_pool2d_forward_matches_reference() {
    let dev = device();
    for (i, &(xs, k, s, p)) in CASES.iter().enumerate() {
        let n = xs.iter().product();
        // Random values (ties are possible and resolved to the first), then all-negative values,
        // where a padded zero winning would show.
        for x in [Rng::new(i as u64).vec(n, -1.0, 1.0), Rng::new(50 + i as u64).vec(n, -2.0, -1.0)] {
            let (y, idx) = pool::max_pool2d(&upload(&dev, &x, &xs), k, s, p).unwrap();
            let (ry, ridx, rs) = cpu::max_pool2d(&x, xs, k, s, p);
            assert_eq!(y.shape(), rs.as_slice(), "case {i}");
            assert_eq!(idx.shape(), rs.as_slice(), "case {i}");
            assert_close(
                &format!("max_pool2d case {i} {xs:?} k{k:?} s{s:?} p{p:?}"),
                &y.to_vec().unwrap(),
                &ry,
                0.0,
                0.0,
            );
            assert_eq!(idx.to_vec_u32().unwrap(), ridx, "max_pool2d argmax case {i}");
        }
    }
    // Ties resolve to the first element of the window in row-major order.
    let (_, idx) = pool::max_pool2d(&upload(&dev, &[1.0; 16], &[1, 1, 4, 4]), (2, 2), (2, 2), (0, 0)).unwrap();
    assert_eq!(idx.to_vec_u32().unwrap(), vec![0, 2, 8, 10]);
}

#[test]
fn avg_pool2d_forward_matches_reference() {
    let dev = device();
    for (i, &(xs, k, s, p)) in CASES.iter().enumerate() {
        let x = Rng::new(i as u64).vec(xs.iter().product(), -1.0, 1.0);
        let y = pool::avg_pool2d(&upload(&dev, &x, &xs), k, s, p).unwrap();
        let (ry, rs) = cpu::avg_pool2d(&x, xs, k, s, p);
        assert_eq!(y.shape(), rs.as_slice(), "case {i}");
        assert_close(
            &format!("avg_pool2d case {i} {xs:?} k{k:?} s{s:?} p{p:?}"),
            &y.to_vec().unwrap(),
            &ry,
            1e-6,
            1e-6,
        );
    }
    // count_include_pad: a corner window of ones with padding 1 averages 4 ones over 9 taps.
    let y = pool::avg_pool2d(&upload(&dev, &[1.0; 9], &[1, 1, 3, 3]), (3, 3), (2, 2), (1, 1)).unwrap();
    assert_close("avg_pool2d include pad", &y.to_vec().unwrap(), &[4.0 / 9.0; 4], 1e-7, 1e-6);
}

#[test]
fn pool_gradients_match_finite_differences() {
    for (i, &(xs, k, s, p)) in CASES.iter().enumerate() {
        let x = distinct(i as u64, xs.iter().product());
        grad_check(
            &format!("max_pool2d case {i}"),
            &[(x.clone(), xs.to_vec())],
            &[true],
            |v| v[0].max_pool2d(k, s, p),
            |ins| cpu::max_pool2d(&ins[0], xs, k, s, p).0,
            1e-3,
        );
        grad_check(
            &format!("avg_pool2d case {i}"),
            &[(x, xs.to_vec())],
            &[true],
            |v| v[0].avg_pool2d(k, s, p),
            |ins| cpu::avg_pool2d(&ins[0], xs, k, s, p).0,
            1e-3,
        );
    }
}

#[test]
fn max_pool2d_gradient_sums_over_overlapping_windows() {
    // One large element inside every 3x3 window of a 5x5 plane (stride 1): it wins all 9 windows.
    let dev = device();
    let mut x = vec![0.0; 25];
    x[12] = 1.0;
    let tape = Tape::new();
    let v = tape.leaf(upload(&dev, &x, &[1, 1, 5, 5]));
    let y = v.max_pool2d((3, 3), (1, 1), (0, 0)).unwrap();
    let g = y.sum_all().unwrap().backward().unwrap();
    let gx = g.get(&v).unwrap().to_vec().unwrap();
    let mut want = vec![0.0; 25];
    want[12] = 9.0;
    assert_close("max_pool2d overlap", &gx, &want, 0.0, 0.0);
}

#[test]
fn shape_errors_name_the_op_and_shapes() {
    let dev = device();
    let t = |shape: &[usize]| upload(&dev, &vec![0.5; shape.iter().product()], shape);
    let check = |r: atomgrad::Result<atomgrad::Tensor>, op: &str, shape: &str| {
        let m = r.unwrap_err().to_string();
        assert!(m.contains(op) && m.contains(shape), "message {m:?} must name {op} and {shape}");
    };
    let x = t(&[1, 2, 3, 3]);
    for op in ["max_pool2d", "avg_pool2d"] {
        let run = |x: &atomgrad::Tensor, k, s, p| {
            if op == "max_pool2d" {
                pool::max_pool2d(x, k, s, p).map(|r| r.0)
            } else {
                pool::avg_pool2d(x, k, s, p)
            }
        };
        check(run(&x, (4, 4), (1, 1), (0, 0)), op, "[1, 2, 3, 3]"); // kernel larger than input
        check(run(&x, (4, 4), (1, 1), (0, 0)), op, "(4, 4)");
        check(run(&x, (3, 3), (0, 1), (1, 1)), op, "[1, 2, 3, 3]"); // zero stride
        check(run(&x, (3, 3), (1, 1), (2, 0)), op, "[1, 2, 3, 3]"); // padding more than half the kernel
        check(run(&t(&[2, 3, 3]), (2, 2), (1, 1), (0, 0)), op, "[2, 3, 3]"); // not 4-D
        assert!(run(&x, (4, 4), (1, 1), (1, 1)).is_ok(), "padding makes the kernel fit");
    }
    let tape = Tape::new();
    let v = tape.leaf(t(&[1, 1, 2, 2]));
    let m = v.max_pool2d((3, 3), (1, 1), (0, 0)).unwrap_err().to_string();
    assert!(m.contains("max_pool2d") && m.contains("[1, 1, 2, 2]"), "{m}");
    // The backward launchers reject a gradient of the wrong shape.
    let gy = t(&[1, 2, 2, 2]);
    check(pool::avg_pool2d_backward(&gy, &[1, 2, 3, 3], (3, 3), (1, 1), (0, 0)), "avg_pool2d_backward", "[1, 2, 1, 1]");
}
