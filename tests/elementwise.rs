//! Elementwise kernels against the f64 reference, forward and backward, with broadcasting.
mod common;
use atomgrad::ops::elementwise::{self, cpu, Binary, Unary};
use atomgrad::rng::Rng;
use common::*;

const UNARY: [Unary; 11] = [
    Unary::Neg,
    Unary::Exp,
    Unary::Log,
    Unary::Sqrt,
    Unary::Relu,
    Unary::LeakyRelu(0.2),
    Unary::Sigmoid,
    Unary::Tanh,
    Unary::Gelu,
    Unary::Affine(-1.5, 0.25),
    Unary::Powf(3.0),
];

fn domain(op: Unary) -> (f64, f64) {
    match op {
        Unary::Log | Unary::Sqrt => (0.1, 3.0),
        _ => (-3.0, 3.0),
    }
}

#[test]
fn unary_forward_matches_reference_on_odd_sizes() {
    let dev = device();
    let mut rng = Rng::new(1);
    for op in UNARY {
        for n in [1usize, 7, 255, 257, 1000] {
            let (lo, hi) = domain(op);
            let x = rng.vec(n, lo, hi);
            let y = elementwise::unary(&upload(&dev, &x, &[n]), op).unwrap().to_vec().unwrap();
            let r: Vec<f64> = x.iter().map(|&v| cpu::unary(op, v)).collect();
            assert_close(&format!("{op:?} n={n}"), &y, &r, 1e-5, 1e-5);
        }
    }
}

#[test]
fn unary_extremes_stay_finite() {
    let dev = device();
    let x = [-1e4, -100.0, 0.0, 100.0, 1e4];
    for op in [Unary::Sigmoid, Unary::Tanh, Unary::Gelu] {
        let y = elementwise::unary(&upload(&dev, &x, &[5]), op).unwrap().to_vec().unwrap();
        let r: Vec<f64> = x.iter().map(|&v| cpu::unary(op, v)).collect();
        assert_close(&format!("{op:?} extremes"), &y, &r, 1e-6, 1e-6);
    }
}

#[test]
fn unary_gradients_match_finite_differences() {
    let mut rng = Rng::new(2);
    for op in UNARY {
        let (lo, hi) = domain(op);
        // 13 elements run one per invocation, 12 as vec4s (the *4 kernels); away from the kinks of
        // relu / leaky relu where finite differences are undefined
        for n in [13, 12] {
            let x: Vec<f64> =
                rng.vec(n, lo, hi).into_iter().map(|v| if v.abs() < 0.05 { v + 0.1 } else { v }).collect();
            grad_check(
                &format!("{op:?} n={n}"),
                &[(x, vec![n])],
                &[true],
                |v| v[0].unary(op),
                |i| i[0].iter().map(|&x| cpu::unary(op, x)).collect(),
                2e-3,
            );
        }
    }
}

#[test]
fn binary_broadcast_forward_matches_reference() {
    let dev = device();
    let mut rng = Rng::new(3);
    // including shapes whose dims the launcher merges (same-shape runs, broadcast runs, size-1 dims)
    // and the vec4 forms: an innermost dim of a multiple of 4 that an operand runs along or is
    // broadcast over (a bias, a per-row scale, a per-channel shift), whole or not in vec4s
    let cases: [(&[usize], &[usize]); 16] = [
        (&[6, 8], &[8]),
        (&[6, 8], &[6, 1]),
        (&[3, 4, 12], &[4, 1]),
        (&[3, 5, 8], &[5, 1]),
        (&[2, 3, 4], &[1]),
        (&[4, 1, 8], &[1, 3, 1]),
        (&[5, 3], &[5, 3]),
        (&[5, 3], &[3]),
        (&[4, 1, 3], &[1, 5, 1]),
        (&[1], &[7]),
        (&[2, 3, 4], &[3, 1]),
        (&[300, 7], &[300, 1]),
        (&[2, 3, 4, 5], &[2, 3, 4, 5]),
        (&[3, 4, 5, 2], &[1, 4, 1, 1]),
        (&[2, 1, 3, 4], &[2, 5, 1, 1]),
        (&[1, 1, 6], &[2, 3, 1, 1]),
    ];
    for op in [Binary::Add, Binary::Sub, Binary::Mul, Binary::Div, Binary::Pow, Binary::BceLogits] {
        for (sa, sb) in cases {
            let na: usize = sa.iter().product();
            let nb: usize = sb.iter().product();
            let a = if op == Binary::Pow { rng.vec(na, 0.2, 2.0) } else { rng.vec(na, -2.0, 2.0) };
            let b = match op {
                Binary::Div => rng.vec(nb, 0.5, 2.0),
                Binary::BceLogits => rng.vec(nb, 0.0, 1.0),
                _ => rng.vec(nb, -2.0, 2.0),
            };
            let y = elementwise::binary(&upload(&dev, &a, sa), &upload(&dev, &b, sb), op).unwrap();
            let (r, shape) = cpu::binary_nd(op, &a, sa, &b, sb);
            assert_eq!(y.shape(), shape.as_slice());
            assert_close(&format!("{op:?} {sa:?} {sb:?}"), &y.to_vec().unwrap(), &r, 1e-5, 1e-5);
        }
    }
}

#[test]
fn binary_gradients_with_broadcasting_match_finite_differences() {
    let mut rng = Rng::new(4);
    for op in [Binary::Add, Binary::Sub, Binary::Mul, Binary::Div, Binary::Pow, Binary::BceLogits] {
        let cases =
            [(vec![3, 4], vec![3, 4]), (vec![3, 4], vec![4]), (vec![2, 1, 3], vec![2, 1]), (vec![4, 4], vec![4, 1])];
        for (sa, sb) in cases {
            let na: usize = sa.iter().product();
            let nb: usize = sb.iter().product();
            let a = if op == Binary::Pow { rng.vec(na, 0.5, 2.0) } else { rng.vec(na, -2.0, 2.0) };
            let b = if op == Binary::Div { rng.vec(nb, 0.5, 2.0) } else { rng.vec(nb, -1.0, 1.0) };
            let (sa2, sb2) = (sa.clone(), sb.clone());
            grad_check(
                &format!("{op:?} {sa:?} {sb:?}"),
                &[(a, sa.clone()), (b, sb.clone())],
                &[true, true],
                |v| v[0].binary(&v[1], op),
                move |i| cpu::binary_nd(op, &i[0], &sa2, &i[1], &sb2).0,
                2e-3,
            );
        }
    }
}

#[test]
fn shape_mismatch_names_the_op_and_both_shapes() {
    let dev = device();
    let a = upload(&dev, &[0.0; 6], &[2, 3]);
    let b = upload(&dev, &[0.0; 8], &[2, 4]);
    let e = elementwise::binary(&a, &b, Binary::Mul).unwrap_err().to_string();
    assert!(e.contains("mul") && e.contains("[2, 3]") && e.contains("[2, 4]"), "{e}");
}

#[test]
fn a_tensor_used_twice_gets_both_gradients() {
    // y = x * x + x: dy/dx = 2x + 1, summed by the accumulation kernel.
    let x = vec![0.5, -1.0, 2.0];
    grad_check(
        "x*x+x",
        &[(x, vec![3])],
        &[true],
        |v| v[0].mul(&v[0])?.add(&v[0]),
        |i| i[0].iter().map(|&x| x * x + x).collect(),
        1e-3,
    );
}

#[test]
fn large_tensors_fold_the_grid_past_65535_workgroups() {
    let dev = device();
    let n = 256 * 65535 + 1001; // odd: one element per invocation, past 65535 workgroups
    let x: Vec<f32> = (0..n).map(|i| (i % 1000) as f32).collect();
    let t = atomgrad::Tensor::from_slice(&dev, &x, &[n]).unwrap();
    let y = elementwise::unary(&t, Unary::Affine(2.0, 1.0)).unwrap().to_vec().unwrap();
    for i in [0, 1, 255 * 65535, n - 1] {
        assert_eq!(y[i], 2.0 * x[i] + 1.0, "element {i}");
    }
}

/// In-place gradient accumulation, flat (one element per invocation) and as vec4s.
#[test]
fn accumulate_adds_in_place() {
    let dev = device();
    let mut rng = Rng::new(5);
    for n in [1usize, 13, 12, 1000, 1001] {
        let (x, y) = (rng.vec(n, -1.0, 1.0), rng.vec(n, -1.0, 1.0));
        let yt = upload(&dev, &y, &[n]);
        elementwise::accumulate(&yt, &upload(&dev, &x, &[n])).unwrap();
        let r: Vec<f64> = x.iter().zip(&y).map(|(a, b)| (*a as f32 + *b as f32) as f64).collect();
        assert_close(&format!("accumulate n={n}"), &yt.to_vec().unwrap(), &r, 0.0, 0.0);
    }
    let e = elementwise::accumulate(&upload(&dev, &[0.0; 4], &[4]), &upload(&dev, &[0.0; 3], &[3])).unwrap_err();
    assert!(e.to_string().contains("accumulate"), "{e}");
}
