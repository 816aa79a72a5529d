//! Softmax, log-softmax (masked and not), cross-entropy and BCE against the f64 reference,
//! forward and backward, with odd sizes, extreme logits, fully masked rows and shape errors.
mod common;
use atomgrad::ops::softmax::{self, cpu, RowKernel, MASKED_LOG};

/// Both forms of the row kernels: one invocation per row (CPU adapters) and 32-lane teams (GPUs).
const KERNELS: [RowKernel; 2] = [RowKernel::PerRow, RowKernel::Team];
use atomgrad::rng::Rng;
use atomgrad::{Tape, Tensor};
use common::*;

/// A random keep/mask pattern of `m` rows of `len`, with roughly a third masked out.
fn random_mask(rng: &mut Rng, m: usize, len: usize) -> Vec<f64> {
    (0..m * len).map(|_| if rng.uniform() < 0.35 { 0.0 } else { 1.0 }).collect()
}

#[test]
fn forward_matches_reference_with_and_without_mask() {
    let dev = device();
    let mut rng = Rng::new(11);
    for len in [1usize, 7, 33, 257, 1000] {
        for rows in [1usize, 3, 513] {
            let x = rng.vec(rows * len, -4.0, 4.0);
            let xt = upload(&dev, &x, &[rows, len]);
            // rows sharing one mask row: every row its own, all rows one, and (rows 3, 513) groups of 3
            let mut ms = vec![rows, 1];
            if rows % 3 == 0 && rows > 3 {
                ms.push(rows / 3);
            }
            let mut cases: Vec<Option<(Vec<f64>, usize)>> = vec![None];
            for m in ms {
                cases.push(Some((random_mask(&mut rng, m, len), m)));
            }
            for case in cases {
                let mt = case.as_ref().map(|(m, mr)| upload(&dev, m, &[*mr, len]));
                let mref = case.as_ref().map(|(m, _)| m.as_slice());
                for k in KERNELS {
                    let what = format!("{k:?} rows {rows} L {len} mask rows {:?}", case.as_ref().map(|c| c.1));
                    let y = softmax::softmax_with(k, &xt, mt.as_ref(), false).unwrap().to_vec().unwrap();
                    assert_close(&format!("softmax {what}"), &y, &cpu::softmax(&x, len, mref), 1e-6, 1e-5);
                    let y = softmax::softmax_with(k, &xt, mt.as_ref(), true).unwrap().to_vec().unwrap();
                    let r = cpu::log_softmax(&x, len, mref);
                    assert_close(&format!("log_softmax {what}"), &y, &r, 1e-5, 1e-5);
                }
            }
        }
    }
}

#[test]
fn attention_shaped_scores_use_a_key_padding_mask() {
    // scores [B, H, Lq, Lk] with a mask [B, Lk]: row (b, h, q) uses mask row b.
    let dev = device();
    let mut rng = Rng::new(12);
    let (b, h, lq, lk) = (3, 2, 5, 9);
    let x = rng.vec(b * h * lq * lk, -3.0, 3.0);
    let mut mask = random_mask(&mut rng, b, lk);
    mask[0] = 1.0; // some kept entry in batch 0
    let y = softmax::softmax(&upload(&dev, &x, &[b, h, lq, lk]), Some(&upload(&dev, &mask, &[b, lk]))).unwrap();
    assert_eq!(y.shape(), &[b, h, lq, lk]);
    let y = y.to_vec().unwrap();
    // reference built from the explicitly expanded mask
    let mut full = Vec::new();
    for bi in 0..b {
        for _ in 0..h * lq {
            full.extend_from_slice(&mask[bi * lk..(bi + 1) * lk]);
        }
    }
    assert_close("attention softmax", &y, &cpu::softmax(&x, lk, Some(&full)), 1e-6, 1e-5);
}

#[test]
fn fully_masked_rows_are_zero_and_finite() {
    let dev = device();
    let len = 6;
    let x = Rng::new(13).vec(3 * len, -2.0, 2.0);
    // row 1 fully masked, row 2 all kept
    let mut mask = vec![1.0, 0.0, 1.0, 0.0, 1.0, 1.0];
    mask.extend(vec![0.0; len]);
    mask.extend(vec![1.0; len]);
    let (xt, mt) = (upload(&dev, &x, &[3, len]), upload(&dev, &mask, &[3, len]));
    let gy = Rng::new(14).vec(3 * len, -1.0, 1.0);
    let gyt = upload(&dev, &gy, &[3, len]);
    for k in KERNELS {
        let yt = softmax::softmax_with(k, &xt, Some(&mt), false).unwrap();
        let y = yt.to_vec().unwrap();
        assert!(y[len..2 * len].iter().all(|&v| v == 0.0), "{k:?}: fully masked softmax row: {y:?}");
        assert_close("masked softmax", &y, &cpu::softmax(&x, len, Some(&mask)), 1e-6, 1e-5);
        let lyt = softmax::softmax_with(k, &xt, Some(&mt), true).unwrap();
        let ly = lyt.to_vec().unwrap();
        assert!(ly[len..2 * len].iter().all(|&v| v == MASKED_LOG), "{k:?}: fully masked log_softmax row: {ly:?}");
        assert!(ly.iter().all(|v| v.is_finite()));
        assert_eq!(ly[1], MASKED_LOG);
        // gradients through a fully masked row are 0, never NaN
        let g = softmax::softmax_backward_with(k, &yt, &gyt).unwrap().to_vec().unwrap();
        assert!(g[len..2 * len].iter().all(|&v| v == 0.0) && g.iter().all(|v| v.is_finite()), "{k:?}: {g:?}");
        let g = softmax::log_softmax_backward_with(k, &lyt, &gyt, Some(&mt)).unwrap().to_vec().unwrap();
        assert!(g[len..2 * len].iter().all(|&v| v == 0.0) && g.iter().all(|v| v.is_finite()), "{k:?}: {g:?}");
    }
}

#[test]
fn backward_kernels_match_reference_and_ignore_masked_gradients() {
    let dev = device();
    let mut rng = Rng::new(15);
    for (rows, len, m) in [(5usize, 7usize, 5usize), (6, 33, 2), (1, 1, 1), (4, 300, 1), (17, 100, 17)] {
        let x = rng.vec(rows * len, -3.0, 3.0);
        let mask = random_mask(&mut rng, m, len);
        let gy = rng.vec(rows * len, -1.0, 1.0); // nonzero at masked entries too
        let (xt, mt, gyt) =
            (upload(&dev, &x, &[rows, len]), upload(&dev, &mask, &[m, len]), upload(&dev, &gy, &[rows, len]));
        for (k, mk) in KERNELS.into_iter().flat_map(|k| [(k, None), (k, Some(&mt))]) {
            let what = format!("{k:?} rows {rows} L {len} M {m} masked {}", mk.is_some());
            let mref = mk.map(|_| mask.as_slice());
            let y = softmax::softmax_with(k, &xt, mk, false).unwrap();
            let g = softmax::softmax_backward_with(k, &y, &gyt).unwrap().to_vec().unwrap();
            let yr = cpu::softmax(&x, len, mref);
            assert_close(&format!("softmax_backward {what}"), &g, &cpu::softmax_backward(&yr, &gy, len), 1e-5, 1e-4);
            let y = softmax::softmax_with(k, &xt, mk, true).unwrap();
            let g = softmax::log_softmax_backward_with(k, &y, &gyt, mk).unwrap().to_vec().unwrap();
            let yr = cpu::log_softmax(&x, len, mref);
            let r = cpu::log_softmax_backward(&yr, &gy, len, mref);
            assert_close(&format!("log_softmax_backward {what}"), &g, &r, 1e-5, 1e-4);
        }
    }
}

#[test]
fn large_logits_stay_finite() {
    let dev = device();
    let x = vec![1e4, -1e4, 0.0, 9999.0, -1e4, -1e4, -1e4, 1e4, 1e4, 1e4, 1e4, 1e4];
    let xt = upload(&dev, &x, &[3, 4]);
    for k in KERNELS {
        let y = softmax::softmax_with(k, &xt, None, false).unwrap().to_vec().unwrap();
        assert_close(&format!("{k:?} softmax of +-1e4"), &y, &cpu::softmax(&x, 4, None), 1e-6, 1e-5);
        let y = softmax::softmax_with(k, &xt, None, true).unwrap().to_vec().unwrap();
        assert!(y.iter().all(|v| v.is_finite()), "{y:?}");
        assert_close(&format!("{k:?} log_softmax of +-1e4"), &y, &cpu::log_softmax(&x, 4, None), 1e-3, 1e-6);
    }
    let labels = [3u32, 0, 2];
    let l = softmax::cross_entropy(&xt, &Tensor::from_u32(&dev, &labels, &[3]).unwrap()).unwrap().item().unwrap();
    let r = cpu::cross_entropy(&x, 4, &labels);
    assert!(l.is_finite() && (l as f64 - r).abs() < 1e-3 * r.abs().max(1.0), "cross-entropy {l} vs {r}");
}

#[test]
fn softmax_and_log_softmax_gradients_match_finite_differences() {
    let mut rng = Rng::new(16);
    for (rows, len, m) in [(4usize, 7usize, 2usize), (3, 1, 3), (2, 20, 1)] {
        let x = rng.vec(rows * len, -2.0, 2.0);
        let mut mask = random_mask(&mut rng, m, len);
        for r in 0..m {
            mask[r * len] = 1.0; // keep one entry per mask row so the FD reference is smooth
        }
        let shape = vec![rows, len];
        // keep as a full [rows, len] tensor, to zero the MASKED_LOG entries in both paths
        let group = rows / m;
        let keep: Vec<f64> = (0..rows * len).map(|i| mask[(i / len / group) * len + i % len]).collect();
        for masked in [false, true] {
            let (mk, mk2) = (mask.clone(), mask.clone());
            let what = format!("rows {rows} L {len} masked {masked}");
            grad_check(
                &format!("softmax {what}"),
                &[(x.clone(), shape.clone())],
                &[true],
                move |v| {
                    let mt = masked.then(|| Tensor::from_slice(v[0].value().device(), &f32s(&mk), &[m, len]).unwrap());
                    v[0].softmax(mt.as_ref())
                },
                move |i| cpu::softmax(&i[0], len, masked.then_some(mk2.as_slice())),
                2e-3,
            );
            let (mk, mk2) = (mask.clone(), mask.clone());
            grad_check(
                &format!("log_softmax {what}"),
                &[(x.clone(), shape.clone()), (keep.clone(), shape.clone())],
                &[true, false],
                move |v| {
                    let mt = masked.then(|| Tensor::from_slice(v[0].value().device(), &f32s(&mk), &[m, len]).unwrap());
                    v[0].log_softmax(mt.as_ref())?.mul(&v[1])
                },
                move |i| {
                    let y = cpu::log_softmax(&i[0], len, masked.then_some(mk2.as_slice()));
                    y.iter().zip(&i[1]).map(|(a, k)| if *k == 0.0 { 0.0 } else { a * k }).collect()
                },
                2e-3,
            );
        }
    }
}

#[test]
fn cross_entropy_forward_and_gradient() {
    let dev = device();
    let mut rng = Rng::new(17);
    for (n, c) in [(1usize, 1usize), (5, 3), (513, 10), (3, 1000)] {
        let x = rng.vec(n * c, -3.0, 3.0);
        let labels: Vec<u32> = (0..n).map(|_| rng.below(c) as u32).collect();
        let lt = Tensor::from_u32(&dev, &labels, &[n]).unwrap();
        let xt = upload(&dev, &x, &[n, c]);
        let (rows, _) = softmax::cross_entropy_rows(&xt, &lt).unwrap();
        assert_close(
            &format!("cross_entropy rows N {n} C {c}"),
            &rows.to_vec().unwrap(),
            &cpu::cross_entropy_rows(&x, c, &labels),
            1e-5,
            1e-5,
        );
        let l = softmax::cross_entropy(&xt, &lt).unwrap();
        assert_eq!(l.shape(), &[] as &[usize]);
        assert_close(
            &format!("cross_entropy N {n} C {c}"),
            &[l.item().unwrap()],
            &[cpu::cross_entropy(&x, c, &labels)],
            1e-5,
            1e-5,
        );
    }
    for (n, c) in [(4usize, 5usize), (1, 3), (7, 1)] {
        let x = rng.vec(n * c, -2.0, 2.0);
        let labels: Vec<u32> = (0..n).map(|_| rng.below(c) as u32).collect();
        let l2 = labels.clone();
        grad_check(
            &format!("cross_entropy N {n} C {c}"),
            &[(x, vec![n, c])],
            &[true],
            move |v| v[0].cross_entropy(&Tensor::from_u32(v[0].value().device(), &labels, &[n]).unwrap()),
            move |i| vec![cpu::cross_entropy(&i[0], c, &l2)],
            2e-3,
        );
    }
}

#[test]
fn cross_entropy_gradient_reads_the_upstream_scalar() {
    // d(3 * loss)/dx = 3 * (softmax - onehot) / N, with the 3 coming from a GPU tensor
    let dev = device();
    let (n, c) = (3, 4);
    let x = Rng::new(18).vec(n * c, -2.0, 2.0);
    let labels = [1u32, 3, 0];
    let tape = Tape::new();
    let xv = tape.leaf(upload(&dev, &x, &[n, c]));
    let loss = xv.cross_entropy(&Tensor::from_u32(&dev, &labels, &[n]).unwrap()).unwrap().scale(3.0).unwrap();
    let g = loss.backward().unwrap().get(&xv).unwrap().to_vec().unwrap();
    let p = cpu::softmax(&x, c, None);
    let r: Vec<f64> =
        (0..n * c).map(|i| 3.0 * (p[i] - if labels[i / c] as usize == i % c { 1.0 } else { 0.0 }) / n as f64).collect();
    assert_close("3 * cross_entropy gradient", &g, &r, 1e-6, 1e-5);
}

#[test]
fn bad_label_gives_nan_not_an_out_of_bounds_read() {
    let dev = device();
    let x = Rng::new(19).vec(8, -1.0, 1.0);
    let xt = upload(&dev, &x, &[2, 4]);
    let lt = Tensor::from_u32(&dev, &[1, 4], &[2]).unwrap();
    let (rows, _) = softmax::cross_entropy_rows(&xt, &lt).unwrap();
    let rows = rows.to_vec().unwrap();
    assert!(rows[0].is_finite() && rows[1].is_nan(), "{rows:?}");
    let tape = Tape::new();
    let xv = tape.leaf(xt);
    let loss = xv.cross_entropy(&lt).unwrap();
    assert!(loss.value().item().unwrap().is_nan());
    let g = loss.backward().unwrap().get(&xv).unwrap().to_vec().unwrap();
    assert!(g[4..].iter().all(|v| v.is_nan()), "{g:?}");
}

#[test]
fn bce_with_logits_forward_and_gradient() {
    let mut rng = Rng::new(20);
    for shape in [vec![1usize], vec![3, 7], vec![2, 5, 3]] {
        let n: usize = shape.iter().product();
        let x = rng.vec(n, -4.0, 4.0);
        let t: Vec<f64> =
            (0..n).map(|i| if i % 3 == 0 { rng.uniform() as f32 as f64 } else { (i % 2) as f64 }).collect();
        grad_check(
            &format!("bce_with_logits {shape:?}"),
            &[(x, shape.clone()), (t, shape.clone())],
            &[true, true],
            |v| v[0].bce_with_logits(&v[1]),
            |i| vec![cpu::bce_with_logits(&i[0], &i[1])],
            2e-3,
        );
    }
}

#[test]
fn shape_errors_name_the_op_and_shapes() {
    let dev = device();
    let tape = Tape::new();
    let x = tape.leaf(Tensor::zeros(&dev, &[6, 5]).unwrap());
    // labels length != N
    let e = x.cross_entropy(&Tensor::from_u32(&dev, &[0, 1, 2], &[3]).unwrap()).unwrap_err().to_string();
    assert!(e.contains("cross_entropy") && e.contains("[6, 5]") && e.contains("[3]"), "{e}");
    // labels of the wrong dtype
    let e = x.cross_entropy(&Tensor::zeros(&dev, &[6]).unwrap()).unwrap_err().to_string();
    assert!(e.contains("cross_entropy") && e.contains("U32"), "{e}");
    // mask rows not dividing rows, and mask of the wrong length
    for ms in [[4usize, 5], [3, 4]] {
        let m = Tensor::zeros(&dev, &ms).unwrap();
        for e in [x.softmax(Some(&m)).unwrap_err(), x.log_softmax(Some(&m)).unwrap_err()] {
            let e = e.to_string();
            assert!(e.contains("softmax") && e.contains("[6, 5]") && e.contains(&format!("{ms:?}")), "{e}");
        }
    }
    let t = tape.leaf(Tensor::zeros(&dev, &[5, 6]).unwrap());
    let e = x.bce_with_logits(&t).unwrap_err().to_string();
    assert!(e.contains("bce_with_logits") && e.contains("[6, 5]") && e.contains("[5, 6]"), "{e}");
    let s = tape.leaf(Tensor::scalar(&dev, 1.0).unwrap());
    assert!(s.softmax(None).unwrap_err().to_string().contains("softmax"));
}
