//! Atom modeling: the kernels (pairwise distances, the weighted all-pairs token distance S, token
//! masking) against their f64 references forward and backward on odd sizes with variable token
//! counts; gradient checks of every op and of the whole loss (z, h, u, c); the spec's five
//! properties; the baselines (hinge L1/L2, NT-Xent); determinism; bad-input errors.
mod common;
use atomgrad::atom::{self, cpu as lref, AtomConfig, Norm, TokenMask};
use atomgrad::ops::atom::{self as kern, cpu, StructureKernel};
use atomgrad::rng::Rng;
use atomgrad::{Device, Error, Tape, Tensor, Var};
use common::*;

/// A random minibatch: latents z [N, D], tokens h [N, n, m], importances w [N, n] in (0.05, 0.95),
/// counts in 1..=n (sample 0 full). Padded entries hold `pad` (never to be read).
struct Batch {
    ns: usize,
    n: usize,
    m: usize,
    d: usize,
    counts: Vec<usize>,
    z: Vec<f64>,
    h: Vec<f64>,
    w: Vec<f64>,
}

fn batch(rng: &mut Rng, ns: usize, n: usize, m: usize, d: usize, pad: f64) -> Batch {
    let mut counts: Vec<usize> = (0..ns).map(|_| rng.below(n) + 1).collect();
    counts[0] = n;
    let z = rng.vec(ns * d, -1.0, 1.0);
    let mut h = rng.vec(ns * n * m, -1.0, 1.0);
    let mut w = rng.vec(ns * n, 0.05, 0.95);
    for (a, &c) in counts.iter().enumerate() {
        h[(a * n + c) * m..(a + 1) * n * m].fill(pad);
        w[a * n + c..(a + 1) * n].fill(pad);
    }
    Batch { ns, n, m, d, counts, z, h, w }
}

fn no_floor() -> AtomConfig {
    AtomConfig { r_max: None, ..AtomConfig::default() }
}

/// GPU evaluation of the atom terms on a no-grad tape: (L_A, C_w, s, kappa, k).
fn gpu_terms(dev: &Device, b: &Batch, cfg: &AtomConfig) -> (f64, f64, f64, Vec<f32>, Vec<f32>) {
    let tape = Tape::no_grad();
    let mask = TokenMask::new(dev, &b.counts, b.n).unwrap();
    let z = tape.constant(upload(dev, &b.z, &[b.ns, b.d]));
    let h = tape.constant(upload(dev, &b.h, &[b.ns, b.n, b.m]));
    let w = tape.constant(upload(dev, &b.w, &[b.ns, b.n]));
    let t = atom::atom_terms(&z, &h, &w, &mask, cfg).unwrap();
    let item = |v: &Var| v.value().item().unwrap() as f64;
    (item(&t.l_a), item(&t.c_w), t.stats.to_vec().unwrap()[0] as f64, t.kappa.to_vec().unwrap(), t.k.to_vec().unwrap())
}

fn off_diag<T: Copy>(x: &[T], n: usize) -> Vec<T> {
    (0..n * n).filter(|i| i / n != i % n).map(|i| x[i]).collect()
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-12)
}

// ---------------------------------------------------------------- kernels vs the f64 reference

#[test]
fn pdist_forward_and_backward_match_reference() {
    let dev = device();
    let mut rng = Rng::new(1);
    // sizes around the kernels' 4 x 4 blocks: one partial block, several with a partial last
    for ns in [2usize, 3, 5, 9] {
        for d in [1usize, 2, 9, 17, 200] {
            let z = rng.vec(ns * d, -1.0, 1.0);
            let g = rng.vec(ns * ns, -1.0, 1.0);
            let zt = upload(&dev, &z, &[ns, d]);
            for norm in [Norm::Floored, Norm::L1, Norm::L2] {
                let what = format!("pdist {norm:?} N {ns} D {d}");
                let y = kern::pdist(&zt, norm, 1e-3).unwrap();
                // The dims split into parts (GPUs, long latents), added in order by pdist_finish.
                let split = kern::pdist_with(&zt, norm, 1e-3, 3).unwrap();
                for (form, t) in [("", &y), (" in 3 parts", &split)] {
                    let yv = t.to_vec().unwrap();
                    assert_close(&format!("{what}{form}"), &yv, &cpu::pdist(&z, d, norm, 1e-3), 1e-6, 1e-5);
                    for a in 0..ns {
                        for b in 0..ns {
                            assert_eq!(
                                yv[a * ns + b].to_bits(),
                                yv[b * ns + a].to_bits(),
                                "{what}{form}: not bit-symmetric"
                            );
                        }
                    }
                }
                let dz = kern::pdist_backward(&zt, &y, &upload(&dev, &g, &[ns, ns]), norm).unwrap();
                let r = cpu::pdist_backward(&z, d, &g, norm, 1e-3);
                assert_close(&format!("{what} backward"), &dz.to_vec().unwrap(), &r, 1e-5, 1e-4);
            }
        }
    }
}

#[test]
fn pdist_gradient_at_zero_distance_is_zero_for_l1_and_l2() {
    let dev = device();
    // samples 0 and 1 coincide; sample 2 differs in dim 0 only (L1 sign at 0 in dim 1)
    let z = vec![0.5, -0.25, 0.5, -0.25, 1.5, -0.25];
    let zt = upload(&dev, &z, &[3, 2]);
    let mut g = vec![0.0; 9];
    g[1] = 1.0; // only the coincident pair (0, 1)
    let gt = upload(&dev, &g, &[3, 3]);
    for norm in [Norm::L1, Norm::L2] {
        let y = kern::pdist(&zt, norm, 0.0).unwrap();
        let dz = kern::pdist_backward(&zt, &y, &gt, norm).unwrap().to_vec().unwrap();
        assert!(dz.iter().all(|&v| v == 0.0), "{norm:?}: gradient at distance 0 must be 0, got {dz:?}");
    }
}

#[test]
fn structure_forward_and_backward_match_reference_on_odd_sizes() {
    let dev = device();
    let mut rng = Rng::new(2);
    let eps = 1e-3;
    let mut cases = Vec::new();
    for ns in [2usize, 3, 5] {
        for n in [1usize, 3, 7] {
            for m in [1usize, 5, 33] {
                cases.push((ns, n, m));
            }
        }
    }
    cases.push((3, 9, 70)); // three chunks of output dims in the backward pass
    cases.push((3, 40, 70)); // one partial Gram half-tile of tokens, two chunks of dims (one partial)
    cases.push((2, 64, 17)); // exactly one Gram half-tile
    cases.push((3, 130, 9)); // three Gram half-tiles, the last with 2 tokens
    cases.push((3, 12, 36)); // m a multiple of 4 (the 8-token kernels' vec4 rows unpadded), two chunks
    cases.push((4, 17, 8));
    for (ns, n, m) in cases {
        let b = batch(&mut rng, ns, n, m, 1, 1e3);
        let g = rng.vec(ns * ns, -1.0, 1.0);
        let gt = upload(&dev, &g, &[ns, ns]);
        let (rh, rw) = cpu::structure_backward(&b.h, &b.w, &b.counts, n, m, &g, eps);
        let rs = cpu::structure(&b.h, &b.w, &b.counts, n, m, eps);
        let mask = TokenMask::new(&dev, &b.counts, n).unwrap();
        let (ht, wt) = (upload(&dev, &b.h, &[ns, n, m]), upload(&dev, &b.w, &[ns, n]));
        for kernel in [StructureKernel::Registers, StructureKernel::Registers8, StructureKernel::Gram128] {
            let what = format!("structure {kernel:?} N {ns} n {n} m {m} counts {:?}", b.counts);
            let s = kern::structure_with(kernel, &ht, &wt, &mask, eps as f32).unwrap().to_vec().unwrap();
            assert_close(&what, &s, &rs, 1e-5, 1e-5);
            for a in 0..ns {
                for c in 0..ns {
                    assert_eq!(s[a * ns + c].to_bits(), s[c * ns + a].to_bits(), "{what}: S not bit-symmetric");
                }
            }
            // one split and every forced split of the samples B
            for splits in [1, 2, 3, ns, ns + 4] {
                let (dh, dw) = kern::structure_backward_with(kernel, splits, &ht, &wt, &mask, &gt, eps as f32).unwrap();
                assert_eq!((dh.shape(), dw.shape()), (&[ns, n, m][..], &[ns, n][..]));
                assert_close(&format!("{what} dh, {splits} splits"), &dh.to_vec().unwrap(), &rh, 1e-4, 1e-4);
                assert_close(&format!("{what} dw, {splits} splits"), &dw.to_vec().unwrap(), &rw, 1e-4, 1e-4);
            }
        }
        // the adapter's default kernels and splits
        let (dh, dw) = kern::structure_backward(&ht, &wt, &mask, &gt, eps as f32).unwrap();
        assert_close(&format!("N {ns} n {n} m {m} default dh"), &dh.to_vec().unwrap(), &rh, 1e-4, 1e-4);
        assert_close(&format!("N {ns} n {n} m {m} default dw"), &dw.to_vec().unwrap(), &rw, 1e-4, 1e-4);
    }
}

/// Every sample full (no padding) and n >= 8: the 8-token backward takes B's tokens as one flat
/// list too, tiles spanning two samples (n not a multiple of 8) and splits ending mid-tile.
#[test]
fn structure_backward_on_full_samples_matches_reference() {
    let dev = device();
    let mut rng = Rng::new(5);
    let eps = 1e-3;
    for (ns, n, m) in [(3usize, 9usize, 70usize), (4, 17, 8), (5, 12, 36), (2, 8, 5), (6, 13, 33), (3, 49, 4)] {
        let mut b = batch(&mut rng, ns, n, m, 1, 0.0);
        b.counts = vec![n; ns];
        b.h = rng.vec(ns * n * m, -1.0, 1.0);
        b.w = rng.vec(ns * n, 0.05, 0.95);
        let g = rng.vec(ns * ns, -1.0, 1.0);
        let gt = upload(&dev, &g, &[ns, ns]);
        let (rh, rw) = cpu::structure_backward(&b.h, &b.w, &b.counts, n, m, &g, eps);
        let mask = TokenMask::new(&dev, &b.counts, n).unwrap();
        let (ht, wt) = (upload(&dev, &b.h, &[ns, n, m]), upload(&dev, &b.w, &[ns, n]));
        for splits in [1, 2, 3, ns, ns + 4] {
            let (dh, dw) =
                kern::structure_backward_with(StructureKernel::Registers8, splits, &ht, &wt, &mask, &gt, eps as f32)
                    .unwrap();
            let what = format!("full N {ns} n {n} m {m}, {splits} splits");
            assert_close(&format!("{what} dh"), &dh.to_vec().unwrap(), &rh, 1e-4, 1e-4);
            assert_close(&format!("{what} dw"), &dw.to_vec().unwrap(), &rw, 1e-4, 1e-4);
        }
    }
}

/// The Gram kernels' precision where the Gram form cancels: a near-duplicate sample (tokens
/// 1e-4 apart), exact duplicates, the A == B diagonal with a nonzero gradient weight, and features
/// sharing a large offset. Every kernel against the f64 reference at the usual tolerances.
#[test]
fn gram_form_keeps_precision_for_near_duplicates_and_offsets() {
    let dev = device();
    let mut rng = Rng::new(33);
    let (ns, n, m) = (4, 37, 24);
    for offset in [0.0, 50.0] {
        let mut b = batch(&mut rng, ns, n, m, 1, 0.0);
        b.counts = vec![n, n, n, 30];
        for i in 0..n * m {
            b.h[n * m + i] = b.h[i] + 1e-4 * rng.vec(1, -1.0, 1.0)[0]; // sample 1 ~ sample 0
            b.h[2 * n * m + i] = b.h[i]; // sample 2 = sample 0
        }
        // the reference sees the f32 values the GPU gets (at offset 50 the 1e-4 steps round)
        b.h.iter_mut().for_each(|v| *v = (*v + offset) as f32 as f64);
        let g = rng.vec(ns * ns, -1.0, 1.0);
        let gt = upload(&dev, &g, &[ns, ns]);
        let rs = cpu::structure(&b.h, &b.w, &b.counts, n, m, 1e-3);
        let (rh, rw) = cpu::structure_backward(&b.h, &b.w, &b.counts, n, m, &g, 1e-3);
        let mask = TokenMask::new(&dev, &b.counts, n).unwrap();
        let (ht, wt) = (upload(&dev, &b.h, &[ns, n, m]), upload(&dev, &b.w, &[ns, n]));
        for kernel in [StructureKernel::Registers, StructureKernel::Registers8, StructureKernel::Gram128] {
            let what = format!("{kernel:?}, offset {offset}");
            let s = kern::structure_with(kernel, &ht, &wt, &mask, 1e-3).unwrap().to_vec().unwrap();
            assert_close(&format!("{what}: S"), &s, &rs, 1e-5, 1e-5);
            let (dh, dw) = kern::structure_backward_with(kernel, 2, &ht, &wt, &mask, &gt, 1e-3).unwrap();
            assert_close(&format!("{what}: dh"), &dh.to_vec().unwrap(), &rh, 1e-4, 1e-4);
            assert_close(&format!("{what}: dw"), &dw.to_vec().unwrap(), &rw, 1e-4, 1e-4);
        }
    }
}

#[test]
fn padding_is_never_read_and_gets_exactly_zero_gradient() {
    let dev = device();
    let mut rng = Rng::new(3);
    let (ns, n, m) = (3, 6, 5);
    let b = batch(&mut rng, ns, n, m, 1, 0.5);
    let counts = vec![6, 2, 4];
    let mut h = b.h.clone();
    let mut w = b.w.clone();
    for (a, &c) in counts.iter().enumerate() {
        h[(a * n + c) * m..(a + 1) * n * m].fill(f64::NAN);
        w[a * n + c..(a + 1) * n].fill(f64::NAN);
    }
    let mask = TokenMask::new(&dev, &counts, n).unwrap();
    let (ht, wt) = (upload(&dev, &h, &[ns, n, m]), upload(&dev, &w, &[ns, n]));
    let g = upload(&dev, &rng.vec(ns * ns, -1.0, 1.0), &[ns, ns]);
    for kernel in [StructureKernel::Registers, StructureKernel::Registers8, StructureKernel::Gram128] {
        let s = kern::structure_with(kernel, &ht, &wt, &mask, 1e-3).unwrap().to_vec().unwrap();
        assert!(s.iter().all(|v| v.is_finite()), "{kernel:?}: NaN padding leaked into S: {s:?}");
        assert_close("S with NaN padding", &s, &cpu::structure(&h, &w, &counts, n, m, 1e-3), 1e-5, 1e-5);
        let (dh, dw) = kern::structure_backward_with(kernel, 2, &ht, &wt, &mask, &g, 1e-3).unwrap();
        let (dh, dw) = (dh.to_vec().unwrap(), dw.to_vec().unwrap());
        for (a, &c) in counts.iter().enumerate() {
            for i in 0..n {
                let pad = i >= c;
                let row = &dh[(a * n + i) * m..(a * n + i + 1) * m];
                assert!(
                    row.iter().all(|v| v.is_finite()) && dw[a * n + i].is_finite(),
                    "{kernel:?}: NaN padding leaked"
                );
                if pad {
                    assert!(
                        row.iter().all(|&v| v == 0.0) && dw[a * n + i] == 0.0,
                        "{kernel:?}: padded token ({a}, {i}) has gradient"
                    );
                }
            }
        }
    }
    // the masking op and the importance head
    let y = kern::mask_tokens(&ht, &mask).unwrap().to_vec().unwrap();
    let hz: Vec<f64> = h.iter().map(|v| if v.is_nan() { 0.0 } else { *v }).collect();
    assert_close("mask_tokens", &y, &cpu::mask_tokens(&hz, &counts, n), 0.0, 0.0);
    let tape = Tape::no_grad();
    let u = rng.vec(m, -1.0, 1.0);
    let imp = atom::importance(
        &tape.constant(ht.clone()),
        &tape.constant(upload(&dev, &u, &[m])),
        &tape.constant(upload(&dev, &[0.3], &[1])),
        &mask,
    )
    .unwrap();
    let wv = imp.value().to_vec().unwrap();
    assert_close("importance", &wv, &cpu::importance(&hz, &u, 0.3, &counts, n), 1e-6, 1e-5);
    for (a, &c) in counts.iter().enumerate() {
        for i in 0..n {
            let v = wv[a * n + i];
            if i < c {
                assert!(v > 0.0 && v < 1.0, "importance ({a}, {i}) = {v} outside (0, 1)");
            } else {
                assert_eq!(v.to_bits(), 0f32.to_bits(), "padded importance ({a}, {i}) = {v}");
            }
        }
    }
    // Its gradients: finite, against the reference's chain rule, and exactly 0 on padded tokens.
    let tape = Tape::new();
    let (hv, uv, cv) =
        (tape.leaf(ht.clone()), tape.leaf(upload(&dev, &u, &[m])), tape.leaf(upload(&dev, &[0.3], &[1])));
    let gw = rng.vec(counts.len() * n, -1.0, 1.0);
    let imp = atom::importance(&hv, &uv, &cv, &mask).unwrap();
    let grads =
        imp.mul(&tape.constant(upload(&dev, &gw, &[counts.len(), n]))).unwrap().sum_all().unwrap().backward().unwrap();
    let (dh, du, dc) = [&hv, &uv, &cv].map(|v| grads.get(v).unwrap().to_vec().unwrap()).into();
    let w = cpu::importance(&hz, &u, 0.3, &counts, n);
    let gz: Vec<f64> =
        (0..w.len()).map(|t| if t % n < counts[t / n] { gw[t] * w[t] * (1.0 - w[t]) } else { 0.0 }).collect();
    let want_dh: Vec<f64> = (0..w.len() * m).map(|i| gz[i / m] * u[i % m]).collect();
    let want_du: Vec<f64> = (0..m).map(|k| (0..w.len()).map(|t| gz[t] * hz[t * m + k]).sum()).collect();
    assert_close("importance dh", &dh, &want_dh, 1e-6, 1e-5);
    assert_close("importance du", &du, &want_du, 1e-5, 1e-4);
    assert_close("importance dc", &dc, &[gz.iter().sum::<f64>()], 1e-5, 1e-4);
}

/// The importance head's du and dc are summed over 64-token chunks and then over the chunks:
/// token counts that span several chunks, a partial last one and padding inside chunks.
#[test]
fn importance_gradients_over_many_token_chunks() {
    let dev = device();
    let mut rng = Rng::new(11);
    for (ns, n, m) in [(7, 23, 5), (3, 64, 9), (5, 70, 1)] {
        let counts: Vec<usize> = (0..ns).map(|a| 1 + (a * 13 + 5) % n).collect();
        let h = rng.vec(ns * n * m, -1.0, 1.0);
        let u = rng.vec(m, -1.0, 1.0);
        let gw = rng.vec(ns * n, -1.0, 1.0);
        let mask = TokenMask::new(&dev, &counts, n).unwrap();
        let tape = Tape::new();
        let (hv, uv, cv) = (
            tape.leaf(upload(&dev, &h, &[ns, n, m])),
            tape.leaf(upload(&dev, &u, &[m])),
            tape.leaf(upload(&dev, &[-0.2], &[1])),
        );
        let imp = atom::importance(&hv, &uv, &cv, &mask).unwrap();
        let loss = imp.mul(&tape.constant(upload(&dev, &gw, &[ns, n]))).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let w = cpu::importance(&h, &u, -0.2, &counts, n);
        let gz: Vec<f64> =
            (0..w.len()).map(|t| if t % n < counts[t / n] { gw[t] * w[t] * (1.0 - w[t]) } else { 0.0 }).collect();
        let want_du: Vec<f64> = (0..m).map(|k| (0..w.len()).map(|t| gz[t] * h[t * m + k]).sum()).collect();
        let du = grads.get(&uv).unwrap().to_vec().unwrap();
        let dc = grads.get(&cv).unwrap().to_vec().unwrap();
        assert_close(&format!("importance du {ns}x{n}x{m}"), &du, &want_du, 1e-5, 1e-4);
        assert_close(&format!("importance dc {ns}x{n}x{m}"), &dc, &[gz.iter().sum::<f64>()], 1e-5, 1e-4);
    }
}

// ---------------------------------------------------------------- gradient checks

#[test]
fn grad_check_pdist_and_structure_ops() {
    let mut rng = Rng::new(4);
    for (ns, d) in [(2usize, 1usize), (3, 2), (5, 9)] {
        let z = rng.vec(ns * d, -1.0, 1.0);
        for norm in [Norm::Floored, Norm::L1, Norm::L2] {
            grad_check(
                &format!("pdist {norm:?} N {ns} D {d}"),
                &[(z.clone(), vec![ns, d])],
                &[true],
                move |v| v[0].pdist(norm, 1e-3),
                move |i| cpu::pdist(&i[0], d, norm, 1e-3),
                1e-3,
            );
        }
    }
    for (ns, n, m) in [(2usize, 1usize, 1usize), (3, 3, 5), (5, 7, 33), (3, 7, 40)] {
        let b = batch(&mut rng, ns, n, m, 1, 3.0);
        let (c1, c2) = (b.counts.clone(), b.counts.clone());
        grad_check(
            &format!("structure N {ns} n {n} m {m} counts {:?}", b.counts),
            &[(b.h.clone(), vec![ns, n, m]), (b.w.clone(), vec![ns, n])],
            &[true, true],
            move |v| kern::structure_var(&v[0], &v[1], &TokenMask::new(v[0].value().device(), &c1, n)?, 1e-3),
            move |i| cpu::structure(&i[0], &i[1], &c2, n, m, 1e-3),
            1e-3,
        );
    }
}

/// The whole regulariser from the importance head on: inputs z, h, u, c; output [L_A, C_w].
fn grad_check_loss(seed: u64, ns: usize, n: usize, m: usize, d: usize, cfg: AtomConfig) {
    let mut rng = Rng::new(seed);
    let b = batch(&mut rng, ns, n, m, d, 5.0);
    let u = rng.vec(m, -1.5, 1.5);
    let c = vec![rng.range(-0.5, 0.5) as f32 as f64];
    let (c1, c2) = (b.counts.clone(), b.counts.clone());
    grad_check(
        &format!("atom loss N {ns} n {n} m {m} D {d} counts {:?} r_max {:?}", b.counts, cfg.r_max),
        &[(b.z.clone(), vec![ns, d]), (b.h.clone(), vec![ns, n, m]), (u, vec![m]), (c, vec![1])],
        &[true, true, true, true],
        move |v| {
            let mask = TokenMask::new(v[0].value().device(), &c1, n)?;
            let w = atom::importance(&v[1], &v[2], &v[3], &mask)?;
            let t = atom::atom_terms(&v[0], &v[1], &w, &mask, &cfg)?;
            Var::concat(&[&t.l_a.reshape(&[1])?, &t.c_w.reshape(&[1])?], 0)
        },
        move |i| {
            let w = cpu::importance(&i[1], &i[2], i[3][0], &c2, n);
            let t = lref::atom_terms(&i[0], d, &i[1], &w, &c2, &cfg);
            vec![t.l_a, t.c_w]
        },
        1e-3,
    );
}

/// The fused pair algebra (`pair_loss`, one dispatch each way) against its f64 reference: L_A, s,
/// mean k, k and kappa forward, and the gradients of L_A with respect to dbar, S and W against
/// central differences of the reference (every entry for small N; sampled entries for N = 300,
/// which spans more than one pass of the workgroup), with and without the soft floor, on symmetric
/// inputs (as L_A makes them) and on asymmetric ones.
#[test]
fn pair_loss_matches_reference_and_finite_differences() {
    let dev = device();
    let mut rng = Rng::new(44);
    let cases = [(2, None, true), (5, None, true), (5, Some(2.0f32), true), (37, Some(20.0), true), (300, None, true)];
    // symmetric, as the kernels make them, and not (the algebra does not assume it)
    for (n, r_max, sym) in cases.into_iter().chain([(300, Some(3.0), true), (6, None, false), (7, Some(2.0), false)]) {
        let what = format!("pair_loss N {n} r_max {r_max:?} symmetric {sym}");
        let mut dbar = rng.vec(n * n, 0.2, 2.0);
        let mut sm = rng.vec(n * n, 0.5, 3.0);
        for a in 0..n {
            for b in 0..a {
                if sym {
                    (dbar[a * n + b], sm[a * n + b]) = (dbar[b * n + a], sm[b * n + a]);
                }
            }
        }
        let mut wsum = rng.vec(n, 0.3, 4.0);
        wsum[n - 1] = 1e-7; // below the floor: taken as the floor, no gradient
        let floor = atom::W_FLOOR;
        let inv_r2 = r_max.map_or(0.0, |r| (1.0 / (r * r)) as f64);
        let (dt, st, wt) = (upload(&dev, &dbar, &[n, n]), upload(&dev, &sm, &[n, n]), upload(&dev, &wsum, &[n]));
        let out = kern::pair_loss(&dt, &st, &wt, r_max, floor).unwrap();
        let (l, s, mk, k, kappa) = cpu::pair_loss(&dbar, &sm, &wsum, inv_r2, floor as f64);
        assert_close(&format!("{what}: L_A"), &out.loss.to_vec().unwrap(), &[l], 1e-6, 1e-5);
        assert_close(&format!("{what}: s, mean k"), &out.stats.to_vec().unwrap(), &[s, mk], 1e-6, 1e-5);
        assert_close(&format!("{what}: k"), &out.k.to_vec().unwrap(), &k, 1e-6, 1e-5);
        assert_close(&format!("{what}: kappa"), &out.kappa.to_vec().unwrap(), &kappa, 1e-6, 1e-5);
        let g = 1.7;
        let (gd, gs, gw) =
            kern::pair_loss_backward(&dt, &st, &wt, &out.stats, &upload(&dev, &[g], &[]), r_max, floor).unwrap();
        let (gd, gs, gw) = (gd.to_vec().unwrap(), gs.to_vec().unwrap(), gw.to_vec().unwrap());
        // Central differences of g * L_A, entry by entry (both mirror entries of a symmetric
        // input are separate inputs here, as in the kernel's gradient).
        let fd = |which: usize, i: usize| -> f64 {
            let mut v = [dbar.clone(), sm.clone(), wsum.clone()];
            // (a step that stays below the floor for the W that sits there)
            let h = if v[which][i] < 1e-4 { 0.1 * v[which][i] } else { 1e-6 * v[which][i].abs().max(1.0) };
            v[which][i] += h;
            let up = cpu::pair_loss(&v[0], &v[1], &v[2], inv_r2, floor as f64).0;
            v[which][i] -= 2.0 * h;
            let down = cpu::pair_loss(&v[0], &v[1], &v[2], inv_r2, floor as f64).0;
            g * (up - down) / (2.0 * h)
        };
        let pick = |len: usize, rng: &mut Rng| -> Vec<usize> {
            if n <= 40 {
                (0..len).collect()
            } else {
                (0..24).map(|_| rng.below(len)).chain([0, len - 1]).collect()
            }
        };
        let checks: Vec<_> = [(0, "d dbar", &gd), (1, "dS", &gs), (2, "dW", &gw)]
            .into_iter()
            .map(|(which, name, got)| {
                let idx = pick(got.len(), &mut rng);
                let want: Vec<f64> = idx.iter().map(|&i| fd(which, i)).collect();
                (name, idx.iter().map(|&i| got[i]).collect::<Vec<f32>>(), want)
            })
            .collect();
        // Per-entry gradients are O(1 / N^2): the absolute tolerance follows the largest one
        // (N = 2 is scale-invariant through and through: every gradient is 0 but for rounding).
        let scale = checks.iter().flat_map(|c| &c.2).fold(0.0f64, |m, v| m.max(v.abs()));
        for (name, have, want) in &checks {
            assert_close(&format!("{what}: {name}"), have, want, 2e-4 * scale + 1e-6 / (n * n) as f64, 2e-3);
        }
        // No mean reads the diagonal: its gradients are exactly 0; nor does W pass one below the floor.
        assert!((0..n).all(|a| gd[a * n + a] == 0.0 && gs[a * n + a] == 0.0), "{what}: diagonal gradients");
        assert_eq!(gw[n - 1], 0.0, "{what}: gradient of W below the floor");
    }
}

/// The fused importance budget (`budget_var`) against its f64 reference, forward and gradient
/// (central differences), with means below, inside and above the bounds, N up to 300.
#[test]
fn budget_matches_reference_and_finite_differences() {
    let dev = device();
    let mut rng = Rng::new(45);
    let (lo, hi) = (0.3f32, 0.6f32);
    for n in [1, 7, 300] {
        let mw = rng.vec(n, 0.0, 1.0);
        let ones = vec![1; n];
        let reference = |m: &[f64]| lref::importance_budget(m, &ones, lo as f64, hi as f64);
        let tape = Tape::new();
        let v = tape.leaf(upload(&dev, &mw, &[n]));
        let c = kern::budget_var(&v, lo, hi).unwrap();
        assert_close(&format!("budget N {n}"), &c.value().to_vec().unwrap(), &[reference(&mw)], 1e-6, 1e-5);
        let g = c.scale(2.5).unwrap().backward().unwrap().get(&v).unwrap().to_vec().unwrap();
        let want: Vec<f64> = (0..n)
            .map(|i| {
                let (mut up, mut down) = (mw.clone(), mw.clone());
                up[i] += 1e-6;
                down[i] -= 1e-6;
                2.5 * (reference(&up) - reference(&down)) / 2e-6
            })
            .collect();
        assert_close(&format!("budget N {n} gradient"), &g, &want, 1e-5, 1e-3);
    }
}

/// The latents at unit RMS spread (`spread_scale_var`, the loss's `normalize`) against their f64
/// definition, forward and gradient (central differences of sum(G y) for a random G), for sizes
/// past one pass of the workgroup along N D and along D, in both forms.
#[test]
fn spread_scale_matches_reference_and_finite_differences() {
    let dev = device();
    let mut rng = Rng::new(46);
    for (n, d) in [(2, 1), (5, 3), (33, 70), (3, 300)] {
        let z = rng.vec(n * d, -2.0, 2.0);
        let gw = rng.vec(n * d, -1.0, 1.0);
        let reference = |z: &[f64]| -> Vec<f64> {
            let zbar: Vec<f64> = (0..d).map(|c| (0..n).map(|a| z[a * d + c]).sum::<f64>() / n as f64).collect();
            let ms = (0..n * d).map(|i| (z[i] - zbar[i % d]).powi(2)).sum::<f64>() / (n * d) as f64;
            let r = (ms + 1e-12).sqrt();
            z.iter().map(|v| v / r).collect()
        };
        let want: Vec<f64> = (0..n * d)
            .map(|i| {
                let (mut up, mut down) = (z.clone(), z.clone());
                up[i] += 1e-6;
                down[i] -= 1e-6;
                let f = |y: Vec<f64>| y.iter().zip(&gw).map(|(a, b)| a * b).sum::<f64>();
                (f(reference(&up)) - f(reference(&down))) / 2e-6
            })
            .collect();
        // One workgroup each way (CPU adapters, small latents) and many (large latents on GPUs).
        for many in [false, true] {
            let what = format!("spread_scale [{n}, {d}] many workgroups: {many}");
            let tape = Tape::new();
            let v = tape.leaf(upload(&dev, &z, &[n, d]));
            let y = kern::spread_scale_var_with(&v, many).unwrap();
            assert_close(&what, &y.value().to_vec().unwrap(), &reference(&z), 1e-5, 1e-5);
            let g = y.mul(&tape.constant(upload(&dev, &gw, &[n, d]))).unwrap().sum_all().unwrap().backward().unwrap();
            assert_close(&format!("{what}, gradient"), &g.get(&v).unwrap().to_vec().unwrap(), &want, 1e-4, 1e-3);
        }
    }
}

#[test]
fn grad_check_whole_loss_z_h_u_c() {
    // tau bounds around 0.5 so that C_w is active for some samples and not for others
    let cfg = AtomConfig { tau_lo: 0.45, tau_hi: 0.55, ..no_floor() };
    grad_check_loss(5, 2, 1, 1, 1, cfg);
    grad_check_loss(6, 3, 3, 5, 2, cfg);
    grad_check_loss(7, 5, 7, 33, 9, cfg);
    // with the soft floor, and a budget that is inactive
    grad_check_loss(8, 5, 3, 5, 2, AtomConfig::default());
    grad_check_loss(9, 3, 7, 1, 9, AtomConfig { r_max: Some(2.0), tau_lo: 0.6, tau_hi: 0.9, ..AtomConfig::default() });
}

/// The 8-token and Gram kernels through the whole loss (`Device::set_policy`, n > 32): L_A
/// matches the reference and every gradient (z, h, u, c) the 4-token register kernels'.
#[test]
fn whole_loss_with_gram_kernels_matches_the_register_kernels() {
    let dev = own_device(); // the flag must not reach the tests sharing `device()`
    let mut rng = Rng::new(40);
    let (ns, n, m, d) = (6, 40, 12, 5);
    let b = batch(&mut rng, ns, n, m, d, 0.0);
    let u = rng.vec(m, -1.0, 1.0);
    let cfg = AtomConfig::default();
    let run = |kernel: StructureKernel| -> Vec<Vec<f32>> {
        dev.set_policy(Some(kernel));
        let tape = Tape::new();
        let mask = TokenMask::new(&dev, &b.counts, n).unwrap();
        assert_eq!(StructureKernel::for_device(&dev, n, m), kernel);
        let z = tape.leaf(upload(&dev, &b.z, &[ns, d]));
        let h = tape.leaf(upload(&dev, &b.h, &[ns, n, m]));
        let uv = tape.leaf(upload(&dev, &u, &[m]));
        let c = tape.leaf(upload(&dev, &[0.1], &[1]));
        let w = atom::importance(&h, &uv, &c, &mask).unwrap();
        let t = atom::atom_terms(&z, &h, &w, &mask, &cfg).unwrap();
        let g = t.l_a.backward().unwrap();
        let mut out = vec![t.l_a.value().to_vec().unwrap()];
        out.extend([&z, &h, &uv, &c].map(|v| g.get(v).unwrap().to_vec().unwrap()));
        out
    };
    let reg = run(StructureKernel::Registers);
    let r = lref::atom_terms(&b.z, d, &b.h, &cpu::importance(&b.h, &u, 0.1f32 as f64, &b.counts, n), &b.counts, &cfg);
    assert_close("L_A, register kernels", &reg[0], &[r.l_a], 1e-5, 1e-4);
    for kernel in [StructureKernel::Registers8, StructureKernel::Gram128] {
        let gram = run(kernel);
        assert_close(&format!("L_A, {kernel:?} kernels"), &gram[0], &[r.l_a], 1e-5, 1e-4);
        for (what, i) in [("dz", 1), ("dh", 2), ("du", 3), ("dc", 4)] {
            let want: Vec<f64> = reg[i].iter().map(|&v| v as f64).collect();
            assert_close(&format!("{what}: {kernel:?} vs register kernels"), &gram[i], &want, 1e-5, 1e-3);
        }
    }
    dev.set_policy::<StructureKernel>(None);
}

#[test]
fn grad_check_baselines() {
    let mut rng = Rng::new(10);
    for (ns, d) in [(2usize, 1usize), (3, 2), (5, 9)] {
        let z = rng.vec(ns * d, -1.0, 1.0);
        for (p, margin) in [(Norm::L1, 1.5f32), (Norm::L2, 0.8)] {
            grad_check(
                &format!("hinge {p:?} N {ns} D {d}"),
                &[(z.clone(), vec![ns, d])],
                &[true],
                move |v| atom::hinge_lp(&v[0], p, margin),
                move |i| vec![lref::hinge_lp(&i[0], d, p, margin as f64)],
                1e-3,
            );
        }
        let z2 = rng.vec(ns * d, -1.0, 1.0);
        grad_check(
            &format!("nt_xent N {ns} D {d}"),
            &[(z.clone(), vec![ns, d]), (z2, vec![ns, d])],
            &[true, true],
            |v| atom::nt_xent(&v[0], &v[1], atom::NT_XENT_TAU),
            move |i| vec![lref::nt_xent(&i[0], &i[1], d, 0.5)],
            1e-3,
        );
    }
}

#[test]
fn nt_xent_matches_a_hand_computed_case() {
    // N = 1: two views, the only candidate of each row is its positive: loss 0.
    let dev = device();
    let tape = Tape::no_grad();
    let z1 = tape.constant(upload(&dev, &[1.0, 0.0], &[1, 2]));
    let z2 = tape.constant(upload(&dev, &[0.0, 3.0], &[1, 2]));
    let l = atom::nt_xent(&z1, &z2, 0.5).unwrap().value().item().unwrap();
    assert!(l.abs() < 1e-6, "{l}");
    // N = 2, rows (1,0), (0,1) | (0,1), (1,0): every row has its positive at cosine 0 and the
    // negatives at cosines 0 and 1, so each row's loss is log(e^0 + e^0 + e^2) - 0.
    let a = [1.0, 0.0, 0.0, 1.0];
    let b = [0.0, 1.0, 1.0, 0.0];
    let l = atom::nt_xent(&tape.constant(upload(&dev, &a, &[2, 2])), &tape.constant(upload(&dev, &b, &[2, 2])), 0.5)
        .unwrap()
        .value()
        .item()
        .unwrap();
    let want = (2.0 + 2f64.exp()).ln();
    assert!(rel(l as f64, want) < 1e-5, "{l} vs {want}");
    assert!(rel(want, lref::nt_xent(&a, &b, 2, 0.5)) < 1e-12);
}

// ---------------------------------------------------------------- property 1: the pair energy

/// argmin over a log grid of d in [1e-3, 1e2] of `f(d)`.
fn grid() -> Vec<f64> {
    (0..=5000).map(|i| 10f64.powf(-3.0 + 5.0 * i as f64 / 5000.0)).collect()
}

#[test]
fn property1_pair_energy_minimum_moves_out_as_kappa_decays_and_blows_up_near_zero_cpu() {
    let s = 1.7;
    let g = grid();
    let mut prev_arg = 0.0;
    for kappa in [4.0, 2.0, 1.0, 0.5, 0.25] {
        let (i, &dmin) = g
            .iter()
            .enumerate()
            .min_by(|a, b| lref::pair_energy(*a.1, s, kappa).total_cmp(&lref::pair_energy(*b.1, s, kappa)))
            .unwrap();
        assert!(rel(dmin, s / kappa) < 3e-3, "kappa {kappa}: minimum at {dmin}, expected {}", s / kappa);
        assert!(rel(lref::pair_energy(s / kappa, s, kappa), -kappa * kappa) < 1e-12);
        assert!(dmin > prev_arg, "minimum did not move out as kappa decayed to {kappa}");
        prev_arg = dmin;
        // strictly decreasing from d = 1e-3 up to the minimum: grows without bound toward 0
        for j in 1..=i {
            assert!(lref::pair_energy(g[j - 1], s, kappa) > lref::pair_energy(g[j], s, kappa));
        }
        assert!(lref::pair_energy(1e-3, s, kappa) > 1e6);
        assert!(lref::pair_energy(1e-6, s, kappa) > 1e12);
    }
}

#[test]
fn property1_pair_energy_on_the_gpu() {
    let dev = device();
    let g = grid();
    let tape = Tape::no_grad();
    let d = tape.constant(upload(&dev, &g, &[g.len()]));
    let s = 1.7;
    let mut prev = 0.0;
    for kappa in [2.0, 1.0, 0.5] {
        let st = tape.constant(upload(&dev, &[s], &[]));
        let kt = tape.constant(upload(&dev, &[kappa], &[]));
        let u = atom::pair_energy(&d, &st, &kt).unwrap().value().to_vec().unwrap();
        let want: Vec<f64> = g.iter().map(|&x| lref::pair_energy(x as f32 as f64, s, kappa)).collect();
        assert_close(&format!("U kappa {kappa}"), &u, &want, 1e-5, 1e-5);
        let i = (0..u.len()).min_by(|&a, &b| u[a].total_cmp(&u[b])).unwrap();
        assert!(rel(g[i], s / kappa) < 3e-3, "GPU kappa {kappa}: minimum at {}, expected {}", g[i], s / kappa);
        assert!(g[i] > prev);
        prev = g[i];
        assert!(u[0] > 1e6 && (1..i).all(|j| u[j - 1] > u[j]), "GPU U must fall monotonically from d = eps");
    }
}

/// Three samples on a plane: 0 at the origin, 2 fixed at (0, 2), 1 at (t, 0). Sample 1's tokens
/// are either close copies of sample 0's (similar structure: small k_01) or unrelated.
fn three_sample(t: f64, similar: bool) -> Batch {
    let (n, m) = (2, 3);
    let h0 = [0.3, -0.2, 0.5, -0.4, 0.1, 0.2];
    let h1: Vec<f64> =
        if similar { h0.iter().map(|v| v + 0.05).collect() } else { vec![0.9, 0.8, -0.7, 0.6, -0.9, -0.5] };
    let h2 = [-0.6, 0.7, 0.1, 0.5, 0.6, -0.8];
    let h: Vec<f64> = h0.iter().chain(&h1).chain(&h2).map(|&v| v as f32 as f64).collect();
    let z = vec![0.0, 0.0, t as f32 as f64, 0.0, 0.0, 2.0];
    Batch { ns: 3, n, m, d: 2, counts: vec![2, 2, 2], z, h, w: vec![0.5; 6] }
}

#[test]
fn property1_whole_loss_on_the_gpu_three_samples() {
    let dev = device();
    let cfg = no_floor();
    let ts: Vec<f64> = (1..=60).map(|i| 0.1 * i as f64).collect();
    let mut argmins = Vec::new();
    for similar in [false, true] {
        let mut best = (f64::INFINITY, 0.0);
        let mut best_ref = (f64::INFINITY, 0.0);
        for &t in &ts {
            let b = three_sample(t, similar);
            let (l, ..) = gpu_terms(&dev, &b, &cfg);
            let r = lref::atom_terms(&b.z, b.d, &b.h, &b.w, &b.counts, &cfg).l_a;
            assert!(rel(l, r) < 1e-4, "t {t}: GPU L_A {l} vs reference {r}");
            if l < best.0 {
                best = (l, t);
            }
            if r < best_ref.0 {
                best_ref = (r, t);
            }
        }
        assert!((best.1 - best_ref.1).abs() < 0.11, "GPU argmin {} vs reference {}", best.1, best_ref.1);
        argmins.push(best_ref.1);
        // kappa_01 in this construction
        let b = three_sample(1.0, similar);
        let kap = lref::atom_terms(&b.z, b.d, &b.h, &b.w, &b.counts, &cfg).kappa[1];
        eprintln!("similar {similar}: kappa_01 {kap:.3}, argmin t {}", best_ref.1);
    }
    assert!(argmins[1] > argmins[0] + 0.15, "more similar structure must settle further out: {argmins:?}");
    // the loss grows without bound as sample 1 approaches sample 0
    let mut prev = f64::NEG_INFINITY;
    for t in [1e-1, 1e-2, 1e-3, 1e-4] {
        let (l, ..) = gpu_terms(&dev, &three_sample(t, true), &cfg);
        assert!(l > prev && l.is_finite(), "L_A at t = {t}: {l} after {prev}");
        prev = l;
    }
    assert!(prev > 1e5, "L_A at distance ~eps: {prev}");
}

#[test]
fn property1_two_samples_are_always_at_their_minimum() {
    // With N = 2, s = d̄_01 and kappa_01 = 1, so U = 1 - 2 = -1 whatever the batch: the batch-relative
    // normalisation leaves nothing to optimise.
    let dev = device();
    let mut rng = Rng::new(11);
    for (n, m, d) in [(1, 1, 1), (3, 5, 2), (7, 33, 9)] {
        let mut b = batch(&mut rng, 2, n, m, d, 0.0);
        for scale in [1e-2, 1.0, 30.0] {
            b.z.iter_mut().for_each(|v| *v = (*v * scale) as f32 as f64);
            let (l, ..) = gpu_terms(&dev, &b, &no_floor());
            assert!((l + 1.0).abs() < 1e-5, "2-sample L_A = {l}");
        }
    }
}

// ---------------------------------------------------------------- properties 2 to 4

#[test]
fn property2_scale_and_translation_invariance() {
    let dev = device();
    let mut rng = Rng::new(12);
    for cfg in [AtomConfig::default(), no_floor()] {
        let b = batch(&mut rng, 5, 7, 5, 3, 0.0);
        let (l0, ..) = gpu_terms(&dev, &b, &cfg);
        let r0 = lref::atom_terms(&b.z, b.d, &b.h, &b.w, &b.counts, &cfg).l_a;
        // eps perturbs each distance by at most a relative eps^2 / (2 d^2): bound the change by the
        // closest pair at the smallest scale used below (0.5)
        let dmin = off_diag(&cpu::pdist(&b.z, b.d, Norm::L2, 0.0), 5).into_iter().fold(f64::INFINITY, f64::min);
        let tol = 20.0 * (cfg.eps as f64 / (0.5 * dmin)).powi(2);
        assert!(tol < 1e-2, "the batch has a near-duplicate pair: dmin {dmin}");
        // with a vanishing eps the reference is invariant to rounding
        let tiny = AtomConfig { eps: 1e-7, ..cfg };
        let t0 = lref::atom_terms(&b.z, b.d, &b.h, &b.w, &b.counts, &tiny).l_a;
        let shift = rng.vec(b.d, -5.0, 5.0);
        // (variant, its exactness in f32: z + t is rounded to f32 so that both sides see the same input)
        let variants: Vec<(&str, Vec<f64>, f64)> = vec![
            ("z * 0.5", b.z.iter().map(|v| v * 0.5).collect(), 1e-9),
            ("z * 7", b.z.iter().map(|v| v * 7.0).collect(), 1e-9),
            ("z + t", b.z.iter().enumerate().map(|(i, v)| (v + shift[i % b.d]) as f32 as f64).collect(), 1e-5),
        ];
        for (what, z, exact) in variants {
            let bb = Batch { z, counts: b.counts.clone(), h: b.h.clone(), w: b.w.clone(), ..b };
            let (l, ..) = gpu_terms(&dev, &bb, &cfg);
            let r = lref::atom_terms(&bb.z, bb.d, &bb.h, &bb.w, &bb.counts, &cfg).l_a;
            assert!(rel(r, r0) < tol, "{what}: reference L_A {r} vs {r0} (tolerance {tol:e})");
            assert!(rel(l, l0) < tol + 1e-5, "{what}: GPU L_A {l} vs {l0} (tolerance {tol:e} + 1e-5)");
            let t = lref::atom_terms(&bb.z, bb.d, &bb.h, &bb.w, &bb.counts, &tiny).l_a;
            assert!(rel(t, t0) < exact, "{what}: reference L_A with eps 1e-7: {t} vs {t0}");
        }
    }
    // kappa under h -> b h with w fixed (off the diagonal: the diagonal's i == j terms are eps)
    let b = batch(&mut rng, 5, 7, 5, 3, 0.0);
    let cfg = no_floor();
    let (.., kap0, _) = gpu_terms(&dev, &b, &cfg);
    let ref0 = lref::atom_terms(&b.z, b.d, &b.h, &b.w, &b.counts, &cfg).kappa;
    for s in [0.25, 4.0] {
        let h: Vec<f64> = b.h.iter().map(|v| v * s).collect();
        let bb = Batch { h, counts: b.counts.clone(), z: b.z.clone(), w: b.w.clone(), ..b };
        let (.., kap, _) = gpu_terms(&dev, &bb, &cfg);
        let r = lref::atom_terms(&bb.z, bb.d, &bb.h, &bb.w, &bb.counts, &cfg).kappa;
        assert_close(&format!("reference kappa, h * {s}"), &f32s(&off_diag(&r, 5)), &off_diag(&ref0, 5), 1e-4, 1e-4);
        let k0: Vec<f64> = off_diag(&kap0, 5).iter().map(|&v| v as f64).collect();
        assert_close(&format!("GPU kappa, h * {s}"), &off_diag(&kap, 5), &k0, 2e-4, 2e-4);
    }
}

#[test]
fn property3_k_is_invariant_to_scaling_one_samples_importances() {
    let dev = device();
    let mut rng = Rng::new(13);
    let b = batch(&mut rng, 5, 7, 5, 3, 0.0);
    let cfg = no_floor();
    let (.., k0) = gpu_terms(&dev, &b, &cfg);
    let r0 = lref::atom_terms(&b.z, b.d, &b.h, &b.w, &b.counts, &cfg).k;
    for (a, c) in [(0usize, 0.3), (3, 1.05)] {
        let mut w = b.w.clone();
        w[a * b.n..(a + 1) * b.n].iter_mut().for_each(|v| *v = (*v * c) as f32 as f64);
        let bb = Batch { w, counts: b.counts.clone(), z: b.z.clone(), h: b.h.clone(), ..b };
        let (.., k) = gpu_terms(&dev, &bb, &cfg);
        let r = lref::atom_terms(&bb.z, bb.d, &bb.h, &bb.w, &bb.counts, &cfg).k;
        assert_close(&format!("reference k, w_{a}. * {c}"), &f32s(&r), &r0, 1e-6, 1e-6);
        let k0d: Vec<f64> = k0.iter().map(|&v| v as f64).collect();
        assert_close(&format!("GPU k, w_{a}. * {c}"), &k, &k0d, 1e-5, 1e-5);
    }
}

#[test]
fn property4_no_labels_and_symmetric_under_permuting_the_batch() {
    // The API takes no labels (z, h, w and token counts only); permuting samples changes nothing.
    let dev = device();
    let mut rng = Rng::new(14);
    let b = batch(&mut rng, 5, 7, 5, 3, 0.0);
    let perm = [3usize, 0, 4, 2, 1];
    let mut pb = Batch { z: vec![], h: vec![], w: vec![], counts: vec![], ..b };
    for &p in &perm {
        pb.z.extend_from_slice(&b.z[p * b.d..(p + 1) * b.d]);
        pb.h.extend_from_slice(&b.h[p * b.n * b.m..(p + 1) * b.n * b.m]);
        pb.w.extend_from_slice(&b.w[p * b.n..(p + 1) * b.n]);
        pb.counts.push(b.counts[p]);
    }
    for cfg in [AtomConfig::default(), no_floor()] {
        let (l0, c0, s0, kap0, _) = gpu_terms(&dev, &b, &cfg);
        let (l1, c1, s1, kap1, _) = gpu_terms(&dev, &pb, &cfg);
        assert!(rel(l1, l0) < 1e-5 && rel(c1, c0) < 1e-5 && rel(s1, s0) < 1e-5, "{l0} {l1} / {c0} {c1} / {s0} {s1}");
        for (x, &p) in perm.iter().enumerate() {
            for (y, &q) in perm.iter().enumerate() {
                assert!((kap1[x * 5 + y] - kap0[p * 5 + q]).abs() < 1e-5, "kappa not permuted with the batch");
            }
        }
        let r0 = lref::atom_terms(&b.z, b.d, &b.h, &b.w, &b.counts, &cfg);
        let r1 = lref::atom_terms(&pb.z, pb.d, &pb.h, &pb.w, &pb.counts, &cfg);
        assert!(rel(r1.l_a, r0.l_a) < 1e-12 && rel(r1.c_w, r0.c_w) < 1e-12);
        assert!(rel(l0, r0.l_a) < 1e-4 && rel(c0, r0.c_w) < 1e-4 + 1e-6 / r0.c_w.abs().max(1e-12));
    }
}

#[test]
fn importance_budget_and_warmup() {
    let dev = device();
    let counts = [3usize, 1, 2];
    let n = 3;
    // mean w: (0.05+0.05+0.05)/3 = 0.05 (below 0.1), 0.9 (above 0.5), 0.3 (inside)
    let w = [0.05, 0.05, 0.05, 0.9, 7.0, 7.0, 0.2, 0.4, 7.0];
    let tape = Tape::no_grad();
    let mask = TokenMask::new(&dev, &counts, n).unwrap();
    let c = atom::importance_budget(&tape.constant(upload(&dev, &w, &[3, n])), &mask, 0.1, 0.5).unwrap();
    let want = (0.05f64.powi(2) + 0.4f64.powi(2)) / 3.0;
    assert!(rel(c.value().item().unwrap() as f64, want) < 1e-5);
    assert!(rel(lref::importance_budget(&w, &counts, 0.1, 0.5), want) < 1e-12);
    let cfg = AtomConfig { warmup_steps: 100, lambda: 0.2, ..AtomConfig::default() };
    assert_eq!(cfg.lambda_at(0), 0.0);
    assert!((cfg.lambda_at(50) - 0.1).abs() < 1e-7);
    assert_eq!(cfg.lambda_at(100), 0.2);
    assert_eq!(cfg.lambda_at(1000), 0.2);
    assert_eq!(AtomConfig::default().lambda_at(0), 0.1);
    // the regulariser is lambda_at(step) * L_A + mu_w * C_w
    let mut rng = Rng::new(15);
    let b = batch(&mut rng, 4, 3, 5, 2, 0.0);
    let mask = TokenMask::new(&dev, &b.counts, b.n).unwrap();
    let z = tape.constant(upload(&dev, &b.z, &[4, 2]));
    let h = tape.constant(upload(&dev, &b.h, &[4, 3, 5]));
    let wv = tape.constant(upload(&dev, &b.w, &[4, 3]));
    let cfg = AtomConfig { tau_lo: 0.6, tau_hi: 0.9, mu_w: 2.0, warmup_steps: 10, ..AtomConfig::default() };
    let (total, t) = atom::atom_regularizer(&z, &h, &wv, &mask, &cfg, 5).unwrap();
    let (l, cw) = (t.l_a.value().item().unwrap(), t.c_w.value().item().unwrap());
    let want = cfg.lambda_at(5) * l + 2.0 * cw;
    assert!(cw > 0.0 && (total.value().item().unwrap() - want).abs() < 1e-6 * want.abs().max(1.0));
    let kap = t.kappa.to_vec().unwrap();
    let mean_kappa: f32 = off_diag(&kap, 4).iter().sum::<f32>() / 12.0;
    assert!((mean_kappa - 1.0).abs() < 1e-5, "mean kappa {mean_kappa}");
}

// ---------------------------------------------------------------- determinism

#[test]
fn forward_and_backward_are_bit_identical_across_runs() {
    let dev = device();
    let mut rng = Rng::new(16);
    let b = batch(&mut rng, 5, 7, 33, 9, 0.0);
    let u = rng.vec(33, -1.0, 1.0);
    let run = || -> Vec<Vec<u32>> {
        let tape = Tape::new();
        let mask = TokenMask::new(&dev, &b.counts, b.n).unwrap();
        let z = tape.leaf(upload(&dev, &b.z, &[5, 9]));
        let h = tape.leaf(upload(&dev, &b.h, &[5, 7, 33]));
        let u = tape.leaf(upload(&dev, &u, &[33]));
        let c = tape.leaf(upload(&dev, &[0.1], &[1]));
        let w = atom::importance(&h, &u, &c, &mask).unwrap();
        let (total, _) = atom::atom_regularizer(&z, &h, &w, &mask, &AtomConfig::default(), 3).unwrap();
        let g = total.backward().unwrap();
        let bits = |t: &Tensor| t.to_vec().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<u32>>();
        vec![bits(total.value()), bits(g.get(&z).unwrap()), bits(g.get(&h).unwrap()), bits(g.get(&u).unwrap())]
    };
    let first = run();
    for _ in 0..3 {
        assert!(run() == first, "atom loss or its gradients changed between identical runs");
    }
    // the split backward (the GPU default) too
    let mask = TokenMask::new(&dev, &b.counts, b.n).unwrap();
    let (ht, wt) = (upload(&dev, &b.h, &[5, 7, 33]), upload(&dev, &b.w, &[5, 7]));
    let g = upload(&dev, &rng.vec(25, -1.0, 1.0), &[5, 5]);
    let bits = |t: &Tensor| t.to_vec().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<u32>>();
    for kernel in [StructureKernel::Registers, StructureKernel::Registers8, StructureKernel::Gram128] {
        let once = || {
            let (dh, dw) = kern::structure_backward_with(kernel, 3, &ht, &wt, &mask, &g, 1e-3).unwrap();
            (bits(&dh), bits(&dw), bits(&kern::structure_with(kernel, &ht, &wt, &mask, 1e-3).unwrap()))
        };
        let a = once();
        assert!(once() == a && once() == a, "{kernel:?}: split backward changed between identical runs");
    }
}

// ---------------------------------------------------------------- bad input

fn err_text<T: std::fmt::Debug>(r: atomgrad::Result<T>) -> (Error, String) {
    let e = r.unwrap_err();
    let s = e.to_string();
    (e, s)
}

#[test]
fn bad_inputs_are_clear_errors() {
    let dev = device();
    let tape = Tape::new();
    let c = |shape: &[usize]| tape.leaf(Tensor::zeros(&dev, shape).unwrap());
    let cfg = AtomConfig::default();
    // token counts
    let (_, e) = err_text(TokenMask::new(&dev, &[2, 0, 1], 3));
    assert!(e.contains("atom token mask") && e.contains("sample 1") && e.contains("[2, 0, 1]"), "{e}");
    let (_, e) = err_text(TokenMask::new(&dev, &[2, 4], 3));
    assert!(e.contains("atom token mask") && e.contains("4 tokens") && e.contains("1..=3"), "{e}");
    assert!(TokenMask::new(&dev, &[], 3).is_err());
    let mask = TokenMask::new(&dev, &[3, 1, 2], 3).unwrap();
    // N mismatch between z and h, w not [N, n], counts length != N, N < 2
    let (_, e) = err_text(atom::atom_terms(&c(&[4, 2]), &c(&[3, 3, 5]), &c(&[3, 3]), &mask, &cfg));
    assert!(e.contains("atom_loss") && e.contains("[4, 2]") && e.contains("[3, 3, 5]"), "{e}");
    let (_, e) = err_text(atom::atom_terms(&c(&[3, 2]), &c(&[3, 3, 5]), &c(&[3, 4]), &mask, &cfg));
    assert!(e.contains("atom_loss") && e.contains("[3, 4]") && e.contains("n = 3"), "{e}");
    let (_, e) = err_text(atom::atom_terms(&c(&[3, 2]), &c(&[3, 3, 5]), &c(&[3]), &mask, &cfg));
    assert!(e.contains("atom_loss") && e.contains("w [3]"), "{e}");
    let mask2 = TokenMask::new(&dev, &[3, 1], 3).unwrap();
    let (_, e) = err_text(atom::atom_terms(&c(&[3, 2]), &c(&[3, 3, 5]), &c(&[3, 3]), &mask2, &cfg));
    assert!(e.contains("atom_loss") && e.contains("2 counts"), "{e}");
    let mask1 = TokenMask::new(&dev, &[2], 3).unwrap();
    let (_, e) = err_text(atom::atom_terms(&c(&[1, 2]), &c(&[1, 3, 5]), &c(&[1, 3]), &mask1, &cfg));
    assert!(e.contains("atom_loss") && e.contains("at least 2 samples") && e.contains("[1, 2]"), "{e}");
    // kernels and head
    let (_, e) = err_text(kern::structure(
        &Tensor::zeros(&dev, &[3, 3]).unwrap(),
        &Tensor::zeros(&dev, &[3, 3]).unwrap(),
        &mask,
        1e-3,
    ));
    assert!(e.contains("atom_structure") && e.contains("[3, 3]") && e.contains("[3, 3, m]"), "{e}");
    let (_, e) = err_text(kern::structure(
        &Tensor::zeros(&dev, &[3, 3, 2]).unwrap(),
        &Tensor::zeros(&dev, &[3, 2]).unwrap(),
        &mask,
        1e-3,
    ));
    assert!(e.contains("atom_structure") && e.contains("importances w [3, 2]"), "{e}");
    let (_, e) = err_text(atom::importance(&c(&[3, 3, 5]), &c(&[4]), &c(&[1]), &mask));
    assert!(e.contains("atom_importance") && e.contains("[3, 3, 5]") && e.contains("[4]"), "{e}");
    let (_, e) = err_text(kern::pdist(&Tensor::zeros(&dev, &[6]).unwrap(), Norm::L2, 0.0));
    assert!(e.contains("atom_pdist") && e.contains("[6]"), "{e}");
    // configuration
    for bad in [
        AtomConfig { eps: 0.0, ..cfg },
        AtomConfig { eps: f32::NAN, ..cfg },
        AtomConfig { tau_lo: 0.6, tau_hi: 0.5, ..cfg },
        AtomConfig { r_max: Some(0.0), ..cfg },
        AtomConfig { lambda: f32::NAN, ..cfg },
    ] {
        let (e, s) = err_text(atom::atom_terms(&c(&[3, 2]), &c(&[3, 3, 5]), &c(&[3, 3]), &mask, &bad));
        assert!(matches!(e, Error::Config(_)) && s.contains("atom config"), "{s}");
    }
    // baselines
    let (_, e) = err_text(atom::hinge_lp(&c(&[1, 4]), Norm::L1, 1.0));
    assert!(e.contains("hinge_lp") && e.contains("[1, 4]"), "{e}");
    let (_, e) = err_text(atom::nt_xent(&c(&[3, 4]), &c(&[2, 4]), 0.5));
    assert!(e.contains("nt_xent") && e.contains("[3, 4]") && e.contains("[2, 4]"), "{e}");
    assert!(atom::nt_xent(&c(&[3, 4]), &c(&[3, 4]), 0.0).is_err());
}

/// A batch shrunk below eps reaches L_A = -1 (every floored distance equal), below what spread-out
/// 2-D latents can reach; normalising the batch's scale removes that degenerate minimum.
#[test]
fn normalised_latents_cannot_collapse_below_eps() {
    use atomgrad::atom::{atom_terms, AtomConfig, TokenMask};
    use atomgrad::{Tape, Tensor};
    let dev = common::device();
    let (n, t, m) = (16, 3, 4);
    let mut rng = atomgrad::rng::Rng::new(77);
    let z: Vec<f32> = (0..n * 2).map(|_| rng.normal() as f32).collect();
    let h: Vec<f32> = (0..n * t * m).map(|_| rng.normal() as f32).collect();
    let w: Vec<f32> = (0..n * t).map(|_| rng.range(0.2, 0.8) as f32).collect();
    let mask = TokenMask::new(&dev, &vec![t; n], t).unwrap();
    let l_a = |scale: f32, normalize: bool| -> f32 {
        let tape = Tape::no_grad();
        let zs: Vec<f32> = z.iter().map(|v| v * scale).collect();
        let cfg = AtomConfig { normalize, r_max: None, ..AtomConfig::default() };
        let zv = tape.constant(Tensor::from_slice(&dev, &zs, &[n, 2]).unwrap());
        let hv = tape.constant(Tensor::from_slice(&dev, &h, &[n, t, m]).unwrap());
        let wv = tape.constant(Tensor::from_slice(&dev, &w, &[n, t]).unwrap());
        atom_terms(&zv, &hv, &wv, &mask, &cfg).unwrap().l_a.value().item().unwrap()
    };
    let spread = l_a(1.0, false);
    let collapsed = l_a(1e-6, false);
    assert!((collapsed + 1.0).abs() < 1e-3, "collapsed L_A {collapsed} should be -1");
    assert!(collapsed < spread, "collapse ({collapsed}) must beat the spread batch ({spread}) without normalisation");
    let normed = l_a(1.0, true);
    assert!((l_a(1e-6, true) - normed).abs() < 1e-3 * normed.abs().max(1.0), "normalised L_A must not depend on scale");
    assert!((normed - spread).abs() < 1e-3 * spread.abs().max(1.0), "normalisation changes nothing at unit scale");
}

// ---------------------------------------------------------------- the soft floor (issue 21)

/// |dL_A/dz| of a batch of 2-D latents `z` (random tokens and importances, fixed seed).
fn latent_grad_norm(dev: &Device, z: &[f64], cfg: &AtomConfig) -> f64 {
    let (ns, n, m) = (z.len() / 2, 3, 4);
    let mut rng = Rng::new(5);
    let h = rng.vec(ns * n * m, -1.0, 1.0);
    let w = rng.vec(ns * n, 0.2, 0.8);
    let tape = Tape::new();
    let mask = TokenMask::new(dev, &vec![n; ns], n).unwrap();
    let zv = tape.leaf(upload(dev, z, &[ns, 2]));
    let hv = tape.constant(upload(dev, &h, &[ns, n, m]));
    let wv = tape.constant(upload(dev, &w, &[ns, n]));
    let g = atom::atom_loss(&zv, &hv, &wv, &mask, cfg).unwrap().backward().unwrap();
    let g = g.get(&zv).unwrap().to_vec().unwrap();
    g.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt()
}

/// Why the synthetic task's soft floor is r_max = 2 (docs/atom-stability.md): a batch of 64
/// random 2-D latents always has close neighbours, and under the (s/d)^2 wall their push makes
/// L_A's gradient many times that of an evenly spaced batch (a grid, where every nearest
/// neighbour is equally far); on the synthetic task it was 17-800x the cross-entropy's and
/// training stalled. The floor at half the mean distance bounds the push of any pair: random and
/// evenly spaced latents get gradients of the same order, two orders of magnitude below r_max 20.
#[test]
fn soft_floor_at_half_the_mean_distance_bounds_the_push_of_close_pairs() {
    let dev = device();
    let mut rng = Rng::new(21);
    let random: Vec<f64> = (0..64 * 2).map(|_| rng.normal()).collect();
    // an 8 x 8 grid, slightly jittered so no two pairs are exactly alike
    let grid: Vec<f64> = (0..64).flat_map(|i| [(i % 8) as f64 + 0.01 * rng.normal(), (i / 8) as f64]).collect();
    let norm = |z: &[f64], r: f32| latent_grad_norm(&dev, z, &AtomConfig { r_max: Some(r), ..AtomConfig::default() });
    let (r2, g2, r20, g20) = (norm(&random, 2.0), norm(&grid, 2.0), norm(&random, 20.0), norm(&grid, 20.0));
    eprintln!("|dL_A/dz|: r_max 2: random {r2:.4} grid {g2:.4}; r_max 20: random {r20:.4} grid {g20:.4}");
    assert!(r20 > 20.0 * g20, "r_max 20: close neighbours must dominate ({r20} vs {g20} evenly spaced)");
    assert!(r2 < 10.0 * g2, "r_max 2: random latents {r2} vs evenly spaced {g2}");
    assert!(r20 > 50.0 * r2, "the floor at s/2 must bound the push: {r20} at r_max 20 vs {r2} at 2");
}

/// With the floor at s / 2 the pair energy keeps the seed's Figure 2 shape (S3) for the structure
/// terms a batch holds (kappa < r_max): one minimum, at d̄' = s / kappa, which moves out as kappa
/// decays, and U rising monotonically toward d̄ = 0.
#[test]
fn pair_energy_under_a_floor_at_half_the_mean_distance_keeps_its_shape() {
    let r: f64 = 2.0;
    let s = 1.3;
    let g = grid();
    let u = |d: f64, kappa: f64| lref::pair_energy((d * d + (s / r).powi(2)).sqrt(), s, kappa);
    let mut prev = 0.0;
    for kappa in [1.5, 1.2, 1.0, 0.7, 0.5] {
        let i = (0..g.len()).min_by(|&a, &b| u(g[a], kappa).total_cmp(&u(g[b], kappa))).unwrap();
        let want = s * (1.0 / (kappa * kappa) - 1.0 / (r * r)).sqrt();
        assert!(rel(g[i], want) < 3e-3, "kappa {kappa}: minimum at {}, expected {want}", g[i]);
        assert!(g[i] > prev, "the minimum must move out as kappa decays");
        prev = g[i];
        assert!((1..=i).all(|j| u(g[j - 1], kappa) > u(g[j], kappa)), "U must fall from d = 0 to the minimum");
        assert!(u(1e-3, kappa) > u(g[i], kappa) + 0.01);
    }
}
