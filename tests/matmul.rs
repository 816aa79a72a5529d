//! Matmul, every kernel, against the f64 reference: odd sizes, transposes, batch broadcast, gradients.
mod common;
use atomgrad::ops::matmul::{self, cpu, Variant};
use atomgrad::rng::Rng;
use common::*;

#[test]
fn both_kernels_match_reference_on_odd_sizes_and_transposes() {
    let dev = device();
    let mut rng = Rng::new(12);
    // (the last three: few output tiles and a long K, so K is split into parts, `matmul::split_k`)
    let sizes = [
        (1, 1, 1),
        (1, 7, 3),
        (5, 1, 9),
        (33, 17, 65),
        (64, 64, 64),
        (70, 129, 31),
        (3, 100, 2),
        (130, 9, 259),
        (12, 2048, 20),
        (5, 1000, 7),
        (64, 1024, 64),
    ];
    for v in [Variant::Blocked, Variant::Blocked8, Variant::Blocked8V, Variant::Tiled, Variant::Tiled128] {
        for (m, k, n) in sizes {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                let a = rng.vec(m * k, -1.0, 1.0);
                let b = rng.vec(k * n, -1.0, 1.0);
                let sa = if ta { [k, m] } else { [m, k] };
                let sb = if tb { [n, k] } else { [k, n] };
                let c = matmul::matmul_with(v, &upload(&dev, &a, &sa), &upload(&dev, &b, &sb), ta, tb).unwrap();
                assert_eq!(c.shape(), &[m, n]);
                let r = cpu::matmul(&a, 1, sa[0], sa[1], ta, &b, 1, sb[0], sb[1], tb);
                let tol = 1e-6 * (k as f64).sqrt() * 4.0;
                assert_close(&format!("{v:?} {m}x{k}x{n} ta={ta} tb={tb}"), &c.to_vec().unwrap(), &r, tol, 1e-5);
            }
        }
    }
}

/// Blocked8V's vec4 core (`mm_blocked8v`) runs where N, and K or M as the layout needs, are
/// multiples of 4: sizes around its 8 x 8 blocks (rows and columns 4 past a block), K with and
/// without a remainder of single steps, all transposes, batches and broadcast operands.
#[test]
fn blocked8_vec4_form_matches_reference() {
    let dev = device();
    let mut rng = Rng::new(15);
    let sizes = [(4, 4, 4), (12, 20, 36), (68, 7, 100), (132, 36, 76), (8, 3, 8), (20, 64, 4)];
    for (m, k, n) in sizes {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            for (ba, bb) in [(1, 1), (3, 3), (1, 2), (2, 1)] {
                let a = rng.vec(ba * m * k, -1.0, 1.0);
                let b = rng.vec(bb * k * n, -1.0, 1.0);
                let sa = if ta { [ba, k, m] } else { [ba, m, k] };
                let sb = if tb { [bb, n, k] } else { [bb, k, n] };
                let c = matmul::matmul_with(Variant::Blocked8V, &upload(&dev, &a, &sa), &upload(&dev, &b, &sb), ta, tb)
                    .unwrap();
                let r = cpu::matmul(&a, ba, sa[1], sa[2], ta, &b, bb, sb[1], sb[2], tb);
                let what = format!("{ba}x{bb} {m}x{k}x{n} ta={ta} tb={tb}");
                assert_close(&what, &c.to_vec().unwrap(), &r, 1e-6 * (k as f64).sqrt() * 4.0, 1e-5);
            }
        }
    }
}

/// Products with few output tiles and a long K split K into parts summed in order (checked
/// against the reference in the first test): enough parts to fill the device, each a multiple
/// of 4 and at least 128 k's long.
#[test]
fn long_k_products_split_k_by_device_class() {
    use atomgrad::device::AdapterClass::{Cpu, Gpu};
    assert_eq!(matmul::split_k(Cpu, 3, 4096), 8);
    assert_eq!(matmul::split_k(Gpu, 3, 4096), 32);
    assert_eq!(matmul::split_k(Cpu, 3, 1000), 2); // parts must stay multiples of 4
    assert_eq!(matmul::split_k(Cpu, 3, 200), 1);
    assert_eq!(matmul::split_k(Cpu, 16, 4096), 1);
}

/// The opt-in f16 tensor-core kernel: each product rounds both operands to f16 (relative error
/// 2^-11 each), so the bound is 2.5 * 2^-11 * sum_k |a_ik b_kj| plus f32 accumulation. Where the
/// adapter has no such matrices (lavapipe), asking for it is a clear error.
#[test]
fn coop16_matches_reference_within_f16_rounding() {
    let dev = device();
    let mut rng = Rng::new(14);
    let x = upload(&dev, &[1.0; 6], &[2, 3]);
    if !dev.has_coop16() {
        for v in [Variant::Coop16, Variant::Coop16Packed] {
            let e = matmul::matmul_with(v, &x, &x, false, true).unwrap_err().to_string();
            assert!(e.contains("cooperative matrices"), "{e}");
        }
        let e = matmul::matmul_mixed(&x, &x, false, true).unwrap_err().to_string();
        assert!(e.contains("cooperative matrices"), "{e}");
        assert!(dev.set_mixed_precision(true).is_err());
        eprintln!("no 16x16 f16 cooperative matrices on {}: only the error path is checked", dev.info().name);
        return;
    }
    let sizes = [(1, 1, 1), (33, 17, 65), (128, 128, 128), (130, 70, 259), (256, 512, 128), (300, 1000, 200)];
    for (v, (m, k, n)) in [Variant::Coop16, Variant::Coop16Packed].into_iter().flat_map(|v| sizes.map(|s| (v, s))) {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            for batch in [1, 3] {
                let a = rng.vec(batch * m * k, -1.0, 1.0);
                let b = rng.vec(batch * k * n, -1.0, 1.0);
                let sa = if ta { [batch, k, m] } else { [batch, m, k] };
                let sb = if tb { [batch, n, k] } else { [batch, k, n] };
                let c = matmul::matmul_with(v, &upload(&dev, &a, &sa), &upload(&dev, &b, &sb), ta, tb)
                    .unwrap()
                    .to_vec()
                    .unwrap();
                let r = cpu::matmul(&a, batch, sa[1], sa[2], ta, &b, batch, sb[1], sb[2], tb);
                let abs = |v: &[f64]| v.iter().map(|x| x.abs()).collect::<Vec<_>>();
                let bound = cpu::matmul(&abs(&a), batch, sa[1], sa[2], ta, &abs(&b), batch, sb[1], sb[2], tb);
                for i in 0..r.len() {
                    let tol = 2.5 * (2f64).powi(-11) * bound[i] + 1e-6 * (k as f64).sqrt() * 4.0;
                    assert!(
                        (c[i] as f64 - r[i]).abs() <= tol,
                        "{v:?} {batch}x{m}x{k}x{n} ta={ta} tb={tb}: element {i} is {} but the reference is {} (tolerance {tol})",
                        c[i],
                        r[i]
                    );
                }
            }
        }
    }
    // Mixed precision picks Coop16 for small products and Coop16Packed from 2^31 multiply-adds.
    for ((m, k, n), v) in [((130, 70, 150), Variant::Coop16), ((1024, 1024, 2048), Variant::Coop16Packed)] {
        let (a, b) =
            (upload(&dev, &rng.vec(m * k, -1.0, 1.0), &[m, k]), upload(&dev, &rng.vec(k * n, -1.0, 1.0), &[k, n]));
        let got = matmul::matmul_mixed(&a, &b, false, false).unwrap().to_vec().unwrap();
        let want = matmul::matmul_with(v, &a, &b, false, false).unwrap().to_vec().unwrap();
        assert!(got.iter().zip(&want).all(|(x, y)| x.to_bits() == y.to_bits()), "mixed {m}x{k}x{n} is not {v:?}");
    }
    // A weight matrix broadcast over a batch (as the tape's linear layers use it), on both sides.
    let (m, k, n, bt) = (130, 70, 150, 3);
    for v in [Variant::Coop16, Variant::Coop16Packed] {
        for (ba, bb) in [(1, bt), (bt, 1)] {
            let a = rng.vec(ba * m * k, -1.0, 1.0);
            let b = rng.vec(bb * k * n, -1.0, 1.0);
            let (at, btt) = (upload(&dev, &a, &[ba, m, k]), upload(&dev, &b, &[bb, k, n]));
            let c = matmul::matmul_with(v, &at, &btt, false, false).unwrap().to_vec().unwrap();
            let r = cpu::matmul(&a, ba, m, k, false, &b, bb, k, n, false);
            assert_close(&format!("{v:?} broadcast {ba}/{bb}"), &c, &r, 2.5 * (2f64).powi(-11) * k as f64, 0.0);
        }
    }
}

/// The value of an IEEE binary16 bit pattern.
fn f16_value(h: u32) -> f64 {
    let (sign, exp, frac) = (if h & 0x8000 != 0 { -1.0 } else { 1.0 }, (h >> 10) & 0x1f, (h & 0x3ff) as f64);
    sign * match exp {
        0 => frac * (2f64).powi(-24),
        31 => f64::NAN,
        e => (1.0 + frac / 1024.0) * (2f64).powi(e as i32 - 15),
    }
}

/// The operand packing of `Variant::Coop16Packed` (runs on every adapter): each value is its
/// f16 rounding (the reference rounds ties to even; a GPU may round the other way, so either
/// neighbour of the input passes), the padding is exactly 0, the layout row-major.
#[test]
fn pack_f16_rounds_pads_and_transposes_like_the_reference() {
    let dev = device();
    let mut rng = Rng::new(15);
    for (batch, r, c, trans, pad) in [
        (1, 1, 1, false, (128, 32)),
        (3, 33, 17, false, (128, 32)),
        (2, 70, 130, true, (32, 128)),
        (1, 129, 40, true, (128, 8)),
    ] {
        // Values over f16's whole range: normal, subnormal (below 2^-14), exact zeros.
        let mut x = rng.vec(batch * r * c, -1.0, 1.0);
        for (i, v) in x.iter_mut().enumerate() {
            *v *= [1.0, 3e4, 1e-5, 0.0, 1e-3][i % 5];
        }
        let t = upload(&dev, &x, &[batch, r, c]);
        let got = matmul::pack_f16(&t, trans, pad).unwrap();
        let (rows, cols) = if trans { (c, r) } else { (r, c) };
        let (rp, cp) = (rows.next_multiple_of(pad.0), cols.next_multiple_of(pad.1));
        assert_eq!(got.shape(), &[batch, rp, cp / 2]);
        let words = got.to_vec_u32().unwrap();
        let halves: Vec<f64> = words.iter().flat_map(|&w| [f16_value(w & 0xffff), f16_value(w >> 16)]).collect();
        let want = cpu::pack_f16(&x, batch, r, c, trans, rp, cp);
        for i in 0..want.len() {
            let (b, rr, cc) = (i / (rp * cp), i / cp % rp, i % cp);
            if rr >= rows || cc >= cols {
                assert!(words[i / 2] >> (16 * (i % 2)) & 0xffff == 0, "padding element {i} is not +0");
                continue;
            }
            let input = if trans { x[(b * r + cc) * c + rr] } else { x[(b * r + rr) * c + cc] } as f32 as f64;
            // Either f16 neighbour of the input: less than one f16 spacing away.
            let spacing = (input.abs().log2().floor().max(-14.0) - 10.0).exp2();
            assert!(
                halves[i] == want[i] || (halves[i] - input).abs() < spacing,
                "pack {batch}x{r}x{c} trans={trans} pad={pad:?}: element {i} (b {b}, row {rr}, col {cc}) is {} for input {input}, the reference {}",
                halves[i],
                want[i]
            );
        }
    }
    let t = upload(&dev, &[1.0; 6], &[2, 3]);
    let e = matmul::pack_f16(&t, false, (128, 12)).unwrap_err().to_string();
    assert!(e.contains("pack_f16") && e.contains("multiple of 8"), "{e}");
}

#[test]
fn batched_and_broadcast_batches_match_reference() {
    let dev = device();
    let mut rng = Rng::new(13);
    for v in [Variant::Blocked, Variant::Blocked8, Variant::Blocked8V, Variant::Tiled, Variant::Tiled128] {
        for (ba, bb) in [(3, 3), (1, 4), (5, 1)] {
            let (m, k, n) = (9, 13, 6);
            let a = rng.vec(ba * m * k, -1.0, 1.0);
            let b = rng.vec(bb * k * n, -1.0, 1.0);
            let c =
                matmul::matmul_with(v, &upload(&dev, &a, &[ba, m, k]), &upload(&dev, &b, &[bb, k, n]), false, false)
                    .unwrap();
            assert_eq!(c.shape(), &[ba.max(bb), m, n]);
            let r = cpu::matmul(&a, ba, m, k, false, &b, bb, k, n, false);
            assert_close(&format!("{v:?} batch {ba}x{bb}"), &c.to_vec().unwrap(), &r, 1e-5, 1e-5);
        }
        // 4-D operands: leading dims are the batch.
        let a = rng.vec(2 * 3 * 4 * 5, -1.0, 1.0);
        let b = rng.vec(5 * 2, -1.0, 1.0);
        let c =
            matmul::matmul_with(v, &upload(&dev, &a, &[2, 3, 4, 5]), &upload(&dev, &b, &[5, 2]), false, false).unwrap();
        assert_eq!(c.shape(), &[2, 3, 4, 2]);
        assert_close("4-D", &c.to_vec().unwrap(), &cpu::matmul(&a, 6, 4, 5, false, &b, 1, 5, 2, false), 1e-5, 1e-5);
    }
}

#[test]
fn matmul_gradients_match_finite_differences() {
    let mut rng = Rng::new(14);
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        let (m, k, n) = (3, 5, 4);
        let sa = if ta { vec![k, m] } else { vec![m, k] };
        let sb = if tb { vec![n, k] } else { vec![k, n] };
        let (sa2, sb2) = (sa.clone(), sb.clone());
        grad_check(
            &format!("matmul ta={ta} tb={tb}"),
            &[(rng.vec(m * k, -1.0, 1.0), sa), (rng.vec(k * n, -1.0, 1.0), sb)],
            &[true, true],
            |v| v[0].matmul_t(&v[1], ta, tb),
            move |i| cpu::matmul(&i[0], 1, sa2[0], sa2[1], ta, &i[1], 1, sb2[0], sb2[1], tb),
            1e-3,
        );
    }
    // A broadcast weight over a batch: its gradient sums over the batch (on CPU adapters as one
    // product over the folded batch), stored as is, transposed (a linear layer's x Wᵀ), or
    // multiplied by transposed A's (which do not fold).
    for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
        let sa = if ta { vec![2, 4, 3] } else { vec![2, 3, 4] };
        let sb = if tb { vec![5, 4] } else { vec![4, 5] };
        let (sa2, sb2) = (sa.clone(), sb.clone());
        grad_check(
            &format!("batched x shared weight ta={ta} tb={tb}"),
            &[(rng.vec(2 * 3 * 4, -1.0, 1.0), sa), (rng.vec(4 * 5, -1.0, 1.0), sb)],
            &[true, true],
            move |v| v[0].matmul_t(&v[1], ta, tb),
            move |i| cpu::matmul(&i[0], 2, sa2[1], sa2[2], ta, &i[1], 1, sb2[0], sb2[1], tb),
            1e-3,
        );
    }
}

#[test]
fn mismatched_inner_dims_name_both_shapes() {
    let dev = device();
    let a = upload(&dev, &[0.0; 6], &[2, 3]);
    let b = upload(&dev, &[0.0; 8], &[4, 2]);
    let e = matmul::matmul(&a, &b, false, false).unwrap_err().to_string();
    assert!(e.contains("matmul") && e.contains("[2, 3]") && e.contains("[4, 2]"), "{e}");
    let v = upload(&dev, &[0.0; 3], &[3]);
    assert!(matmul::matmul(&v, &a, false, false).is_err());
}

/// The default core per adapter class and shape, as measured on lavapipe and an H200.
#[test]
fn default_core_follows_the_measurements() {
    use atomgrad::device::AdapterClass::{Cpu, Gpu};
    assert_eq!(Variant::for_size(Cpu, 4096, 4096, 4096, 1, false), Variant::Tiled128);
    assert_eq!(Variant::for_size(Cpu, 4096, 4096, 4096, 1, true), Variant::Blocked8V);
    assert_eq!(Variant::for_size(Cpu, 4096, 4, 256, 1, true), Variant::Blocked8);
    assert_eq!(Variant::for_size(Cpu, 4096, 128, 64, 1, false), Variant::Tiled128);
    assert_eq!(Variant::for_size(Cpu, 4096, 64, 64, 1, false), Variant::Blocked8);
    assert_eq!(Variant::for_size(Cpu, 64, 64, 16, 256, false), Variant::Blocked8);
    assert_eq!(Variant::for_size(Cpu, 128, 10, 3136, 1, false), Variant::Blocked8);
    assert_eq!(Variant::for_size(Cpu, 1, 1568, 128, 1, false), Variant::Blocked);
    assert_eq!(Variant::for_size(Cpu, 128, 1, 1568, 1, false), Variant::Blocked8);
    assert_eq!(Variant::for_size(Cpu, 128, 1568, 1, 1, false), Variant::Blocked8);
    assert_eq!(Variant::for_size(Gpu, 4096, 4096, 256, 1, false), Variant::Tiled128);
    assert_eq!(Variant::for_size(Gpu, 1000, 1000, 256, 1, false), Variant::Tiled128);
    // thin products and small attention blocks keep the 64-tile core's parallelism
    assert_eq!(Variant::for_size(Gpu, 4096, 128, 256, 1, false), Variant::Tiled);
    assert_eq!(Variant::for_size(Gpu, 64, 64, 256, 256, false), Variant::Tiled);
    assert_eq!(Variant::for_size(Gpu, 128, 128, 256, 256, false), Variant::Tiled128);
}
