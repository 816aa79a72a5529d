//! GPU randomness: the raw Philox stream bit-exact against the integer reference (and the
//! Random123 known answers), distribution and independence checks, seeding, and dropout forward,
//! backward and errors.
mod common;
use atomgrad::ops::random::{self, cpu};
use atomgrad::rng::Rng;
use atomgrad::{Tape, Tensor};
use common::*;

const SEEDS: [u64; 4] = [0, 1, 0xDEAD_BEEF_CAFE_F00D, u64::MAX];

#[test]
fn philox_reference_matches_random123_known_answers() {
    // Random123 tests/kat_vectors, "philox4x32 10": ctr[4] key[2] -> out[4].
    let kat = [
        ([0u32; 4], [0u32; 2], [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]),
        ([u32::MAX; 4], [u32::MAX; 2], [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]),
        (
            [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
            [0xa4093822, 0x299f31d0],
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1],
        ),
    ];
    for (ctr, key, out) in kat {
        assert_eq!(cpu::philox4x32_10(ctr, key), out, "ctr {ctr:08x?} key {key:08x?}");
    }
    assert_eq!(cpu::raw(0, 2), 0xbc57ac4c);
}

#[test]
fn raw_stream_is_bit_exact_with_the_cpu_reference() {
    let dev = device();
    for seed in SEEDS {
        for n in [1usize, 3, 4, 5, 255, 1023, 1025, 4099, 100_003] {
            let gpu = Tensor::rand_u32(&dev, &[n], seed).unwrap().to_vec_u32().unwrap();
            let cpu = cpu::raw_stream(seed, n);
            if let Some(i) = (0..n).find(|&i| gpu[i] != cpu[i]) {
                panic!("seed {seed:#x} n {n}: element {i}: GPU {:#010x} vs CPU {:#010x}", gpu[i], cpu[i]);
            }
        }
    }
    // Shape does not matter, only the flat index.
    let a = Tensor::rand_u32(&dev, &[3, 1, 7], 9).unwrap().to_vec_u32().unwrap();
    assert_eq!(a, cpu::raw_stream(9, 21));
    // A prefix of a longer stream is the shorter stream.
    let long = Tensor::rand_u32(&dev, &[1001], 5).unwrap().to_vec_u32().unwrap();
    let short = Tensor::rand_u32(&dev, &[37], 5).unwrap().to_vec_u32().unwrap();
    assert_eq!(&long[..37], &short[..]);
}

fn moments(v: &[f32]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean, var)
}

/// Pearson correlation of v[i] and v[i + lag].
fn correlation(v: &[f32], lag: usize) -> f64 {
    let a = &v[..v.len() - lag];
    let b = &v[lag..];
    let (ma, va) = moments(a);
    let (mb, vb) = moments(b);
    let cov = a.iter().zip(b).map(|(&x, &y)| (x as f64 - ma) * (y as f64 - mb)).sum::<f64>() / a.len() as f64;
    cov / (va * vb).sqrt()
}

const N: usize = 100_000;

#[test]
fn uniform_matches_reference_and_distribution() {
    let dev = device();
    let (lo, hi) = (-2.0f32, 3.0f32);
    let v = Tensor::rand_uniform(&dev, &[N], lo, hi, 42).unwrap().to_vec().unwrap();
    assert_close("uniform vs reference", &v, &cpu::uniform(42, N, lo as f64, hi as f64), 1e-6, 1e-6);
    assert!(v.iter().all(|&x| (lo..hi).contains(&x)), "values outside [lo, hi)");
    // Tolerances are 5 standard errors of the estimates (the seed is fixed, so this is exact).
    let (mean, var) = moments(&v);
    let w = (hi - lo) as f64;
    assert!((mean - 0.5).abs() < 5.0 * w * 0.2887 / (N as f64).sqrt(), "mean {mean} vs 0.5");
    assert!((var - w * w / 12.0).abs() < 5.0 * w * w * 0.0745 / (N as f64).sqrt(), "var {var} vs {}", w * w / 12.0);
    // 64 equal bins: chi-square with 63 degrees of freedom (mean 63, sd 11.2).
    let mut bins = [0usize; 64];
    for &x in &v {
        bins[(((x - lo) / (hi - lo)) * 64.0).min(63.0) as usize] += 1;
    }
    let e = N as f64 / 64.0;
    let chi2: f64 = bins.iter().map(|&b| (b as f64 - e).powi(2) / e).sum();
    assert!(chi2 < 63.0 + 5.0 * 11.2, "chi-square {chi2} over 64 bins");
    // Independence: consecutive values (inside and across Philox blocks) are uncorrelated.
    for lag in 1..=5 {
        let r = correlation(&v, lag);
        assert!(r.abs() < 5.0 / (N as f64).sqrt(), "lag-{lag} correlation {r}");
    }
}

#[test]
fn normal_matches_reference_and_distribution() {
    let dev = device();
    let (mu, sd) = (0.5f32, 2.0f32);
    let v = Tensor::rand_normal(&dev, &[N], mu, sd, 7).unwrap().to_vec().unwrap();
    // sin / cos / log of f32 arguments: the error grows with |z|, at most ~5.8 sd.
    assert_close("normal vs reference", &v, &cpu::normal(7, N, mu as f64, sd as f64), 1e-4, 1e-4);
    let (mean, var) = moments(&v);
    let se = 1.0 / (N as f64).sqrt();
    assert!((mean - 0.5).abs() < 5.0 * 2.0 * se, "mean {mean} vs 0.5");
    assert!((var.sqrt() - 2.0).abs() < 5.0 * 2.0 * se / 2f64.sqrt(), "std {} vs 2", var.sqrt());
    let z: Vec<f64> = v.iter().map(|&x| (x as f64 - 0.5) / 2.0).collect();
    let within1 = z.iter().filter(|z| z.abs() < 1.0).count() as f64 / N as f64;
    assert!((within1 - 0.682_689).abs() < 5.0 * 0.4655 * se, "P(|z| < 1) = {within1}");
    let kurt = z.iter().map(|z| z.powi(4)).sum::<f64>() / N as f64;
    assert!((kurt - 3.0).abs() < 5.0 * 96f64.sqrt() * se, "fourth moment {kurt} vs 3");
    for lag in 1..=5 {
        let r = correlation(&v, lag);
        assert!(r.abs() < 5.0 * se, "lag-{lag} correlation {r}");
    }
    // Odd lengths still produce both halves of the last pair correctly.
    let w = Tensor::rand_normal(&dev, &[5], 0.0, 1.0, 7).unwrap().to_vec().unwrap();
    assert_close("normal n=5", &w, &cpu::normal(7, 5, 0.0, 1.0), 1e-4, 1e-4);
}

#[test]
fn seeds_reproduce_and_differ() {
    let dev = device();
    let a = Tensor::rand_uniform(&dev, &[2, 513], 0.0, 1.0, 3).unwrap().to_vec().unwrap();
    let b = Tensor::rand_uniform(&dev, &[2, 513], 0.0, 1.0, 3).unwrap().to_vec().unwrap();
    assert_eq!(a.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), b.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
    // Seeds differing in the low word, in the high word, by one bit: streams share ~nothing.
    for other in [4u64, 3 | (1 << 32), 3 ^ (1 << 63)] {
        let c = Tensor::rand_uniform(&dev, &[2, 513], 0.0, 1.0, other).unwrap().to_vec().unwrap();
        let same = a.iter().zip(&c).filter(|(x, y)| x == y).count();
        assert!(same <= 2, "seed 3 and {other:#x} agree on {same} of {} values", a.len());
    }
    let n1 = Tensor::rand_normal(&dev, &[1000], 0.0, 1.0, 3).unwrap().to_vec().unwrap();
    let n2 = Tensor::rand_normal(&dev, &[1000], 0.0, 1.0, 3).unwrap().to_vec().unwrap();
    assert_eq!(n1, n2);
}

#[test]
fn bad_distribution_parameters_are_errors() {
    let dev = device();
    let e = Tensor::rand_normal(&dev, &[4], 0.0, -1.0, 1).unwrap_err().to_string();
    assert!(e.contains("rand_normal") && e.contains("std"), "{e}");
    let e = Tensor::rand_uniform(&dev, &[4], 0.0, f32::INFINITY, 1).unwrap_err().to_string();
    assert!(e.contains("rand_uniform") && e.contains("hi"), "{e}");
}

#[test]
fn dropout_keeps_the_right_fraction_with_the_reference_mask() {
    let dev = device();
    let x = vec![1.5f64; N];
    let xt = upload(&dev, &x, &[N]);
    for (p, seed) in [(0.1f32, 1u64), (0.5, 2), (0.9, 3)] {
        let y = random::dropout(&xt, p, seed).unwrap().to_vec().unwrap();
        let scale = 1.0 / (1.0 - p as f64);
        let kept = y.iter().filter(|&&v| v != 0.0).count() as f64 / N as f64;
        let sd = ((1.0 - p as f64) * p as f64 / N as f64).sqrt();
        assert!((kept - (1.0 - p as f64)).abs() < 5.0 * sd, "p {p}: kept fraction {kept}");
        assert_close(&format!("dropout p {p}"), &y, &cpu::dropout(&x, p, seed), 1e-6, 1e-6);
        for (i, &v) in y.iter().enumerate().take(2000) {
            let keep = cpu::dropout_keep(seed, i as u64, p);
            assert!(if keep { (v as f64 - 1.5 * scale).abs() < 1e-5 } else { v == 0.0 }, "element {i}");
        }
    }
}

#[test]
fn dropout_gradient_is_the_recomputed_mask_times_scale() {
    let dev = device();
    let (p, seed) = (0.3f32, 0x5eed_0000_0001u64);
    let n = 1027;
    let x = Rng::new(20).vec(n, -1.0, 1.0);
    let tape = Tape::new();
    let xv = tape.leaf(upload(&dev, &x, &[n]));
    let y = xv.dropout(p, seed, true).unwrap();
    // Gradient of sum(y): mask * scale, exactly the CPU mask.
    let g = y.backward_with(upload(&dev, &vec![1.0; n], &[n])).unwrap().get(&xv).unwrap().to_vec().unwrap();
    let scale = 1.0 / (1.0 - p as f64);
    let mask: Vec<f64> = (0..n).map(|i| if cpu::dropout_keep(seed, i as u64, p) { scale } else { 0.0 }).collect();
    assert_close("dropout gradient", &g, &mask, 1e-6, 1e-6);
    assert!(mask.contains(&0.0) && mask.iter().any(|&m| m != 0.0));
    // Finite differences of the reference with the same mask.
    for shape in [vec![7], vec![3, 5, 2]] {
        let n: usize = shape.iter().product();
        grad_check(
            &format!("dropout {shape:?}"),
            &[(Rng::new(21).vec(n, -1.0, 1.0), shape.clone())],
            &[true],
            move |v| v[0].dropout(0.4, 77, true),
            move |i| cpu::dropout(&i[0], 0.4, 77),
            1e-4,
        );
    }
}

#[test]
fn dropout_identity_cases_and_errors() {
    let dev = device();
    let x = Rng::new(22).vec(10, -1.0, 1.0);
    let tape = Tape::new();
    let xv = tape.leaf(upload(&dev, &x, &[2, 5]));
    for (p, training) in [(0.0f32, true), (0.5, false)] {
        let y = xv.dropout(p, 1, training).unwrap();
        assert_eq!(y.value().to_vec().unwrap(), f32s(&x), "p {p} training {training}");
        let g = y.backward_with(upload(&dev, &[2.0; 10], &[2, 5])).unwrap();
        assert_eq!(g.get(&xv).unwrap().to_vec().unwrap(), vec![2.0f32; 10]);
    }
    for p in [1.0f32, 1.5, -0.1, f32::NAN] {
        for training in [true, false] {
            let e = xv.dropout(p, 1, training).unwrap_err().to_string();
            assert!(e.contains("dropout") && e.contains("[2, 5]"), "p {p}: {e}");
        }
        assert!(random::dropout(xv.value(), p, 1).is_err());
    }
}
