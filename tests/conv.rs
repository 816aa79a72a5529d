//! conv2d and conv_transpose2d: forward and both gradients against f64 references on odd sizes,
//! every register block and split of the kernels, gradient checks, and shape errors.
mod common;
use atomgrad::ops::conv::{self, cpu, WeightKernel, WeightPlan};
use atomgrad::rng::Rng;
use atomgrad::Tape;
use common::*;

/// (x shape, w shape, stride, padding) in conv2d terms.
type Case = ([usize; 4], [usize; 4], (usize, usize), (usize, usize));

const CASES: &[Case] = &[
    ([1, 1, 1, 1], [1, 1, 1, 1], (1, 1), (0, 0)),
    ([1, 1, 1, 1], [5, 1, 3, 3], (1, 1), (1, 1)),
    ([2, 3, 5, 5], [5, 3, 3, 3], (1, 1), (1, 1)),
    ([3, 1, 7, 7], [5, 1, 4, 4], (2, 2), (1, 1)),
    ([1, 3, 9, 11], [1, 3, 5, 3], (2, 1), (2, 1)),
    ([2, 3, 9, 11], [5, 3, 3, 3], (2, 2), (0, 0)),
    ([1, 3, 1, 5], [5, 3, 1, 3], (1, 2), (0, 1)),
    ([3, 3, 7, 9], [1, 3, 4, 4], (1, 2), (2, 2)),
    ([1, 1, 5, 7], [5, 1, 5, 3], (2, 1), (0, 2)),
    ([2, 1, 4, 4], [5, 1, 3, 3], (3, 3), (1, 1)),
    ([1, 3, 9, 11], [5, 3, 1, 1], (2, 2), (0, 0)),
    // More than 8 channels each way and rows past 8 pixels: partial 8-blocks.
    ([2, 10, 6, 13], [11, 10, 3, 3], (1, 1), (1, 1)),
    ([1, 9, 9, 19], [9, 9, 4, 4], (2, 2), (1, 1)),
    // A wide kernel at a wide stride: the forward's input window caps its pixel block.
    ([1, 2, 5, 40], [3, 2, 3, 9], (1, 4), (1, 2)),
];

/// Register block sides the tests try: every one up to 5, then 7 and 8.
const BLOCKS: [usize; 7] = [1, 2, 3, 4, 5, 7, 8];

fn data(seed: u64, shape: &[usize]) -> Vec<f64> {
    Rng::new(seed).vec(shape.iter().product(), -1.0, 1.0)
}

#[test]
fn conv2d_forward_matches_reference_on_odd_sizes() {
    let dev = device();
    for (i, &(xs, ws, s, p)) in CASES.iter().enumerate() {
        let (x, w) = (data(i as u64, &xs), data(100 + i as u64, &ws));
        let (xt, wt) = (upload(&dev, &x, &xs), upload(&dev, &w, &ws));
        let (r, rs) = cpu::conv2d(&x, xs, &w, ws, s, p);
        let y = conv::conv2d(&xt, &wt, s, p).unwrap();
        assert_eq!(y.shape(), rs.as_slice(), "case {i}");
        assert_close(&format!("conv2d case {i} {xs:?} {ws:?} s{s:?} p{p:?}"), &y.to_vec().unwrap(), &r, 1e-5, 1e-5);
    }
}

#[test]
fn conv2d_every_register_block_matches_reference() {
    let dev = device();
    for &ci in &[2usize, 3, 4, 7, 11, 12, 13] {
        let (xs, ws, s, p) = CASES[ci];
        let (x, w) = (data(ci as u64, &xs), data(100 + ci as u64, &ws));
        let (xt, wt) = (upload(&dev, &x, &xs), upload(&dev, &w, &ws));
        let (r, _) = cpu::conv2d(&x, xs, &w, ws, s, p);
        for ob in BLOCKS {
            for pb in BLOCKS {
                let y = conv::conv2d_with(&xt, &wt, s, p, ob, pb).unwrap();
                assert_close(&format!("conv2d case {ci} block {ob}x{pb}"), &y.to_vec().unwrap(), &r, 1e-5, 1e-5);
            }
        }
    }
    let (xt, wt) = (upload(&dev, &[0.0; 9], &[1, 1, 3, 3]), upload(&dev, &[0.0; 4], &[1, 1, 2, 2]));
    assert!(conv::conv2d_with(&xt, &wt, (1, 1), (0, 0), 9, 1).is_err());
    // Kernels wider than the forward's 32-input window are a clear error, not a wrong answer.
    let (xt, wt) = (upload(&dev, &[0.0; 40], &[1, 1, 1, 40]), upload(&dev, &[0.0; 33], &[1, 1, 1, 33]));
    let e = conv::conv2d(&xt, &wt, (1, 1), (0, 0)).unwrap_err().to_string();
    assert!(e.contains("conv2d") && e.contains("kernel width 33"), "{e}");
}

#[test]
fn conv2d_gradient_kernels_match_reference() {
    let dev = device();
    for (i, &(xs, ws, s, p)) in CASES.iter().enumerate() {
        let (x, w) = (data(i as u64, &xs), data(100 + i as u64, &ws));
        let (_, ys) = cpu::conv2d(&x, xs, &w, ws, s, p);
        let dy = data(200 + i as u64, &ys);
        let (xt, wt, dyt) = (upload(&dev, &x, &xs), upload(&dev, &w, &ws), upload(&dev, &dy, &ys));
        let rdx = cpu::conv2d_backward_input(&dy, xs, &w, ws, s, p);
        for cb in [0, 1, 2, 3, 4, 5, 8] {
            for pb in [0, 1, 2, 3, 4, 5, 8] {
                let dx = conv::conv2d_backward_input_with(&dyt, &wt, (xs[2], xs[3]), s, p, (cb, pb)).unwrap();
                assert_eq!(dx.shape(), xs.as_slice());
                assert_close(&format!("dx case {i} block {cb}x{pb}"), &dx.to_vec().unwrap(), &rdx, 1e-5, 1e-5);
            }
        }
        let rdw = cpu::conv2d_backward_weight(&dy, &x, xs, ws, s, p);
        let taps: &[(usize, usize)] = &[(0, 0), (1, 1), (4, 4), (3, 2), (2, 3), (8, 8), (5, 7), (8, 3)];
        let rows: &[(usize, usize)] = &[(0, 0), (1, 1), (4, 4), (3, 2), (2, 3), (1, 4), (8, 4), (5, 3), (8, 1)];
        for (kernel, blocks) in
            [(None, &[(0, 0)][..]), (Some(WeightKernel::Taps), taps), (Some(WeightKernel::Rows), rows)]
        {
            for splits in [0, 1, 2, 3, 1000] {
                for &blocks in blocks {
                    let plan = WeightPlan { kernel, splits, blocks };
                    let dw = conv::conv2d_backward_weight_with(&dyt, &xt, (ws[2], ws[3]), s, p, plan);
                    if kernel == Some(WeightKernel::Rows) && 3 * s.1 + ws[3] > 16 {
                        // The rows kernel's window cannot hold this tap row: a clear error.
                        let e = dw.unwrap_err().to_string();
                        assert!(e.contains("conv2d_backward_weight") && e.contains("rows kernel"), "{e}");
                        continue;
                    }
                    let dw = dw.unwrap();
                    assert_eq!(dw.shape(), ws.as_slice());
                    let what = format!("dw case {i} {plan:?}");
                    assert_close(&what, &dw.to_vec().unwrap(), &rdw, 1e-4, 1e-4);
                }
            }
        }
    }
}

/// The GEMM path (im2col + the matmul cores + col2im) against the same references.
#[test]
fn conv2d_gemm_path_matches_reference() {
    let dev = device();
    for (i, &(xs, ws, s, p)) in CASES.iter().enumerate() {
        let (x, w) = (data(i as u64, &xs), data(100 + i as u64, &ws));
        let (r, ys) = cpu::conv2d(&x, xs, &w, ws, s, p);
        let dy = data(200 + i as u64, &ys);
        let (xt, wt, dyt) = (upload(&dev, &x, &xs), upload(&dev, &w, &ws), upload(&dev, &dy, &ys));
        let what = format!("gemm case {i} {xs:?} {ws:?} s{s:?} p{p:?}");
        let y = conv::conv2d_gemm(&xt, &wt, s, p).unwrap();
        assert_eq!(y.shape(), ys.as_slice(), "{what}");
        assert_close(&format!("{what} y"), &y.to_vec().unwrap(), &r, 1e-5, 1e-5);
        let dx = conv::conv2d_backward_input_gemm(&dyt, &wt, (xs[2], xs[3]), s, p).unwrap();
        assert_eq!(dx.shape(), xs.as_slice());
        let rdx = cpu::conv2d_backward_input(&dy, xs, &w, ws, s, p);
        assert_close(&format!("{what} dx"), &dx.to_vec().unwrap(), &rdx, 1e-5, 1e-5);
        let dw = conv::conv2d_backward_weight_gemm(&dyt, &xt, (ws[2], ws[3]), s, p).unwrap();
        assert_eq!(dw.shape(), ws.as_slice());
        let rdw = cpu::conv2d_backward_weight(&dy, &x, xs, ws, s, p);
        assert_close(&format!("{what} dw"), &dw.to_vec().unwrap(), &rdw, 1e-4, 1e-4);
    }
}

/// `Var::conv2d` on a device that opted in to the GEMM path: the same values and gradients as the
/// direct kernels (which the finite-difference checks below cover).
#[test]
fn conv2d_on_the_tape_gives_the_same_results_through_gemm() {
    let dev = own_device(); // the switch is per device
    let (xs, ws, s, p) = CASES[3];
    let (x, w) = (data(7, &xs), data(8, &ws));
    let run = |gemm: bool| {
        dev.set_gemm_conv(gemm);
        let tape = Tape::new();
        let (xv, wv) = (tape.leaf(upload(&dev, &x, &xs)), tape.leaf(upload(&dev, &w, &ws)));
        let y = xv.conv2d(&wv, s, p).unwrap();
        let r = upload(&dev, &data(9, y.shape()), y.shape());
        let g = y.backward_with(r).unwrap();
        [y.value(), g.get(&xv).unwrap(), g.get(&wv).unwrap()].map(|t| t.to_vec().unwrap())
    };
    let direct = run(false);
    let gemm = run(true);
    dev.set_gemm_conv(false);
    for (what, a, b) in [("y", &gemm[0], &direct[0]), ("dx", &gemm[1], &direct[1]), ("dw", &gemm[2], &direct[2])] {
        let b: Vec<f64> = b.iter().map(|&v| v as f64).collect();
        assert_close(&format!("gemm {what}"), a, &b, 1e-4, 1e-4);
    }
}

#[test]
fn conv2d_weight_gradient_is_deterministic() {
    let dev = device();
    let (xs, ws, s, p) = ([3, 3, 9, 11], [2, 3, 3, 3], (1, 1), (1, 1));
    let (x, w) = (data(1, &xs), data(2, &ws));
    let (_, ys) = cpu::conv2d(&x, xs, &w, ws, s, p);
    let (xt, dyt) = (upload(&dev, &x, &xs), upload(&dev, &data(3, &ys), &ys));
    for kernel in [WeightKernel::Taps, WeightKernel::Rows] {
        let plan = WeightPlan { kernel: Some(kernel), splits: 4, blocks: (0, 0) };
        let a = conv::conv2d_backward_weight_with(&dyt, &xt, (3, 3), s, p, plan).unwrap().to_vec().unwrap();
        let b = conv::conv2d_backward_weight_with(&dyt, &xt, (3, 3), s, p, plan).unwrap().to_vec().unwrap();
        assert_eq!(a, b, "{kernel:?}");
    }
}

/// Channel blocks past what a weight-gradient kernel holds are a clear error naming the limit.
#[test]
fn weight_gradient_blocks_past_the_kernel_are_errors() {
    let dev = device();
    let (xt, dyt) = (upload(&dev, &[0.0; 50], &[1, 2, 5, 5]), upload(&dev, &[0.0; 225], &[1, 9, 5, 5]));
    for (kernel, blocks, want) in [
        (WeightKernel::Rows, (1, 5), "input channel block must be 1..=4"),
        (WeightKernel::Rows, (9, 1), "output channel block must be 1..=8"),
        (WeightKernel::Taps, (1, 9), "input channel block must be 1..=8"),
    ] {
        let plan = WeightPlan { kernel: Some(kernel), splits: 0, blocks };
        let e = conv::conv2d_backward_weight_with(&dyt, &xt, (3, 3), (1, 1), (1, 1), plan).unwrap_err().to_string();
        assert!(e.contains("conv2d_backward_weight") && e.contains(want), "{kernel:?} {blocks:?}: {e}");
    }
}

/// (x shape, w shape [Cin, Cout, KH, KW], stride, padding, output_padding).
type TCase = ([usize; 4], [usize; 4], (usize, usize), (usize, usize), (usize, usize));

const TCASES: &[TCase] = &[
    ([1, 1, 1, 1], [1, 1, 1, 1], (1, 1), (0, 0), (0, 0)),
    ([1, 1, 1, 1], [1, 5, 3, 3], (2, 2), (0, 0), (1, 0)),
    ([2, 3, 4, 5], [3, 5, 3, 3], (2, 2), (1, 1), (1, 1)),
    ([3, 5, 5, 3], [5, 1, 4, 4], (2, 1), (1, 0), (0, 0)),
    ([1, 3, 7, 9], [3, 3, 5, 3], (1, 2), (2, 1), (0, 1)),
    ([2, 1, 3, 3], [1, 3, 3, 3], (3, 3), (1, 2), (2, 1)),
];

#[test]
fn conv_transpose2d_forward_matches_reference() {
    let dev = device();
    for (i, &(xs, ws, s, p, op)) in TCASES.iter().enumerate() {
        let (x, w) = (data(300 + i as u64, &xs), data(400 + i as u64, &ws));
        let (xt, wt) = (upload(&dev, &x, &xs), upload(&dev, &w, &ws));
        let (r, rs) = cpu::conv_transpose2d(&x, xs, &w, ws, s, p, op);
        let y = conv::conv_transpose2d(&xt, &wt, s, p, op).unwrap();
        assert_eq!(y.shape(), rs.as_slice(), "case {i}");
        assert_close(&format!("conv_transpose2d case {i}"), &y.to_vec().unwrap(), &r, 1e-5, 1e-5);
    }
}

#[test]
fn conv2d_gradients_match_finite_differences() {
    let cases: &[Case] = &[
        ([2, 2, 5, 4], [3, 2, 3, 2], (2, 1), (1, 0)),
        ([1, 3, 4, 5], [5, 3, 3, 3], (1, 1), (2, 1)),
        ([3, 1, 1, 3], [1, 1, 1, 3], (1, 2), (0, 1)),
    ];
    for (i, &(xs, ws, s, p)) in cases.iter().enumerate() {
        for check in [[true, true], [false, true], [true, false]] {
            grad_check(
                &format!("conv2d case {i} {check:?}"),
                &[(data(500 + i as u64, &xs), xs.to_vec()), (data(600 + i as u64, &ws), ws.to_vec())],
                &check,
                |v| v[0].conv2d(&v[1], s, p),
                |ins| cpu::conv2d(&ins[0], xs, &ins[1], ws, s, p).0,
                1e-3,
            );
        }
    }
}

#[test]
fn conv_transpose2d_gradients_match_finite_differences() {
    let cases: &[TCase] = &[
        ([2, 3, 3, 4], [3, 2, 3, 3], (2, 2), (1, 0), (1, 1)),
        ([1, 2, 4, 3], [2, 3, 2, 3], (1, 1), (0, 1), (0, 0)),
        ([2, 1, 2, 2], [1, 1, 4, 4], (3, 2), (1, 1), (2, 0)),
    ];
    for (i, &(xs, ws, s, p, op)) in cases.iter().enumerate() {
        grad_check(
            &format!("conv_transpose2d case {i}"),
            &[(data(700 + i as u64, &xs), xs.to_vec()), (data(800 + i as u64, &ws), ws.to_vec())],
            &[true, true],
            |v| v[0].conv_transpose2d(&v[1], s, p, op),
            |ins| cpu::conv_transpose2d(&ins[0], xs, &ins[1], ws, s, p, op).0,
            1e-3,
        );
    }
}

fn err_names(e: atomgrad::Error, op: &str, a: &str, b: &str) {
    let m = e.to_string();
    assert!(m.contains(op) && m.contains(a) && m.contains(b), "message {m:?} must name {op}, {a} and {b}");
}

#[test]
fn shape_errors_name_the_op_and_both_shapes() {
    let dev = device();
    let t = |shape: &[usize]| upload(&dev, &vec![0.5; shape.iter().product()], shape);
    let (x, w) = (t(&[1, 3, 5, 5]), t(&[2, 4, 3, 3]));
    err_names(conv::conv2d(&x, &w, (1, 1), (0, 0)).unwrap_err(), "conv2d", "[1, 3, 5, 5]", "[2, 4, 3, 3]");
    let (x, w) = (t(&[1, 1, 2, 2]), t(&[1, 1, 3, 3]));
    err_names(conv::conv2d(&x, &w, (1, 1), (0, 0)).unwrap_err(), "conv2d", "[1, 1, 2, 2]", "[1, 1, 3, 3]");
    assert!(conv::conv2d(&x, &w, (1, 1), (1, 1)).is_ok(), "padding makes the kernel fit");
    err_names(conv::conv2d(&x, &w, (0, 1), (1, 1)).unwrap_err(), "conv2d", "[1, 1, 2, 2]", "[1, 1, 3, 3]");
    let (x3, w) = (t(&[1, 2, 2]), t(&[1, 1, 1, 1]));
    err_names(conv::conv2d(&x3, &w, (1, 1), (0, 0)).unwrap_err(), "conv2d", "[1, 2, 2]", "[1, 1, 1, 1]");

    let (x, w) = (t(&[1, 3, 4, 4]), t(&[2, 5, 3, 3]));
    err_names(
        conv::conv_transpose2d(&x, &w, (1, 1), (0, 0), (0, 0)).unwrap_err(),
        "conv_transpose2d",
        "[1, 3, 4, 4]",
        "[2, 5, 3, 3]",
    );
    let w = t(&[3, 5, 3, 3]);
    for (s, p, op) in [((0, 1), (0, 0), (0, 0)), ((2, 2), (0, 0), (2, 0)), ((1, 1), (3, 0), (0, 0))] {
        err_names(
            conv::conv_transpose2d(&x, &w, s, p, op).unwrap_err(),
            "conv_transpose2d",
            "[1, 3, 4, 4]",
            "[3, 5, 3, 3]",
        );
    }

    let tape = Tape::new();
    let (xv, wv) = (tape.leaf(t(&[2, 3, 5, 5])), tape.leaf(t(&[4, 2, 3, 3])));
    err_names(xv.conv2d(&wv, (1, 1), (0, 0)).unwrap_err(), "conv2d", "[2, 3, 5, 5]", "[4, 2, 3, 3]");
    err_names(
        xv.conv_transpose2d(&wv, (1, 1), (0, 0), (0, 0)).unwrap_err(),
        "conv_transpose2d",
        "[2, 3, 5, 5]",
        "[4, 2, 3, 3]",
    );

    // Gradient launchers check the incoming gradient too.
    let (dy, w) = (t(&[1, 2, 3, 3]), t(&[2, 1, 3, 3]));
    assert!(conv::conv2d_backward_input(&dy, &w, (5, 5), (1, 1), (0, 0)).is_ok());
    err_names(
        conv::conv2d_backward_input(&dy, &w, (6, 5), (1, 1), (0, 0)).unwrap_err(),
        "conv2d_backward_input",
        "[1, 2, 3, 3]",
        "[1, 2, 4, 3]",
    );
}
