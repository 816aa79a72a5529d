//! Reductions against the f64 reference: rows and tree paths, odd sizes, gradients.
mod common;
use atomgrad::ops::reduce::{self, cpu, Form, Reduce};
use atomgrad::rng::Rng;
use common::*;

#[test]
fn reductions_match_reference_on_both_paths() {
    let dev = device();
    let mut rng = Rng::new(5);
    // [outer, len, inner]: many outputs (rows path), few outputs over long axes (tree path,
    // one chunk and several chunks), size-1 dims.
    let shapes: [&[usize]; 9] = [
        &[3, 5, 7],
        &[1, 1, 1],
        &[600, 3],
        &[2, 1000, 1],
        &[1, 40000, 2],
        &[1, 100_001],
        &[33, 1, 9],
        &[13, 97], // team form: 8 outputs per workgroup and a partial workgroup, rows of 3 lanes' worth
        &[3, 5, 33],
    ];
    for shape in shapes {
        let n: usize = shape.iter().product();
        let x = rng.vec(n, -1.0, 1.0);
        let t = upload(&dev, &x, shape);
        for axis in 0..shape.len() {
            for op in [Reduce::Sum, Reduce::Mean, Reduce::Max, Reduce::SumSq] {
                let r = cpu::reduce(&x, shape, axis, op);
                let len = shape[axis] as f64;
                let y = reduce::reduce(&t, axis, op, false).unwrap().to_vec().unwrap();
                assert_close(&format!("{op:?} {shape:?} axis {axis}"), &y, &r, 1e-6 * len.sqrt() * 4.0, 1e-5);
                // and the forms this adapter would not pick: rows up to the longest axis any
                // adapter gives it, the team form on contiguous axes, the tree
                let contiguous = shape[axis + 1..].iter().product::<usize>() == 1;
                let forms = [(Form::Rows, shape[axis] <= 4096), (Form::Team, contiguous), (Form::Tree, true)];
                for form in forms.into_iter().filter(|f| f.1).map(|f| f.0) {
                    let y = reduce::reduce_with(form, &t, axis, op, false).unwrap().to_vec().unwrap();
                    let what = format!("{op:?} {shape:?} axis {axis} {form:?}");
                    assert_close(&what, &y, &r, 1e-6 * len.sqrt() * 4.0, 1e-5);
                }
            }
            let a = reduce::argmax(&t, axis, false).unwrap().to_vec_u32().unwrap();
            assert_eq!(a, cpu::argmax(&x, shape, axis), "argmax {shape:?} axis {axis}");
        }
    }
}

#[test]
fn reductions_are_bit_identical_across_runs() {
    let dev = device();
    let x = Rng::new(6).vec(300_000, -1.0, 1.0);
    let t = upload(&dev, &x, &[300_000]);
    let a = reduce::reduce(&t, 0, Reduce::Sum, false).unwrap().to_vec().unwrap();
    let b = reduce::reduce(&t, 0, Reduce::Sum, false).unwrap().to_vec().unwrap();
    assert_eq!(a[0].to_bits(), b[0].to_bits());
}

#[test]
fn sum_mean_max_gradients_match_finite_differences() {
    let mut rng = Rng::new(7);
    let shape = vec![3, 4, 5];
    for axis in 0..3 {
        for op in [Reduce::Sum, Reduce::Mean, Reduce::Max] {
            let x = rng.vec(60, -1.0, 1.0);
            let s = shape.clone();
            grad_check(
                &format!("{op:?} axis {axis}"),
                &[(x, shape.clone())],
                &[true],
                |v| match op {
                    Reduce::Sum => v[0].sum(axis, false),
                    Reduce::Mean => v[0].mean(axis, true),
                    _ => v[0].max(axis, false),
                },
                move |i| cpu::reduce(&i[0], &s, axis, op),
                2e-3,
            );
        }
    }
}

#[test]
fn sum_to_undoes_broadcasting() {
    let dev = device();
    let x = Rng::new(8).vec(24, -1.0, 1.0);
    let t = upload(&dev, &x, &[2, 3, 4]);
    let y = reduce::sum_to(&t, &[3, 1]).unwrap();
    assert_eq!(y.shape(), &[3, 1]);
    let mut r = vec![0.0; 3];
    for a in 0..2 {
        for b in 0..3 {
            for c in 0..4 {
                r[b] += x[(a * 3 + b) * 4 + c];
            }
        }
    }
    assert_close("sum_to", &y.to_vec().unwrap(), &r, 1e-6, 1e-6);
    assert!(reduce::sum_to(&t, &[2, 4]).is_err());
}

#[test]
fn bad_axis_is_an_error_not_a_panic() {
    let dev = device();
    let t = upload(&dev, &[1.0, 2.0], &[2]);
    let e = reduce::reduce(&t, 3, Reduce::Sum, false).unwrap_err().to_string();
    assert!(e.contains("reduce") && e.contains("axis 3"), "{e}");
    // the team form over an axis that is not contiguous
    let t = upload(&dev, &[0.5; 24], &[2, 3, 4]);
    let e = reduce::reduce_with(Form::Team, &t, 1, Reduce::Sum, false).unwrap_err().to_string();
    assert!(e.contains("reduce") && e.contains("team") && e.contains("[2, 3, 4]"), "{e}");
}
