//! Optimizers and gradient clipping against the f64 references in `optim::cpu`: several steps on
//! odd sizes, skipped parameters, clipping above and below the threshold, two optimizers in one
//! program, convergence on a tape, learning-rate changes, state save/load, bad configurations.
mod common;
use atomgrad::optim::{clip_grad_norm, cpu, Adam, AdamConfig, Optimizer, Sgd};
use atomgrad::rng::Rng;
use atomgrad::{Device, Param, Tape, Tensor};
use common::*;

// Six of whole vec4s, so Adam's four-to-a-dispatch update runs a full group and a partial one,
// with parameter 2 (skipped on some steps) at another step count than its group.
const SHAPES: [&[usize]; 10] = [&[1], &[7], &[1000], &[3, 5], &[257], &[8], &[4, 4], &[2, 2, 6], &[20], &[400]];

/// Parameters with random values, and their f64 copies.
fn make_params(dev: &Device, rng: &mut Rng, shapes: &[&[usize]], prefix: &str) -> (Vec<Param>, Vec<Vec<f64>>) {
    let mut ps = Vec::new();
    let mut vals = Vec::new();
    for (k, s) in shapes.iter().enumerate() {
        let n: usize = s.iter().product();
        let v = rng.vec(n, -1.0, 1.0);
        ps.push(Param::new(format!("{prefix}.p{k}"), upload(dev, &v, s)));
        vals.push(v);
    }
    (ps, vals)
}

/// Gives every parameter a fresh random gradient (None for those in `skip`); returns them.
fn set_grads(dev: &Device, rng: &mut Rng, ps: &[Param], skip: &[usize]) -> Vec<Option<Vec<f64>>> {
    ps.iter()
        .enumerate()
        .map(|(k, p)| {
            if skip.contains(&k) {
                p.set_grad(None);
                return None;
            }
            let g = rng.vec(p.value().numel(), -2.0, 2.0);
            p.set_grad(Some(upload(dev, &g, &p.shape())));
            Some(g)
        })
        .collect()
}

fn values(p: &Param) -> Vec<f32> {
    p.value().to_vec().unwrap()
}

#[test]
fn sgd_with_momentum_and_weight_decay_matches_reference() {
    let dev = device();
    let mut rng = Rng::new(11);
    for (momentum, wd) in [(0.9, 0.01), (0.0, 0.05), (0.5, 0.0)] {
        let (ps, mut refs) = make_params(&dev, &mut rng, &SHAPES, "sgd");
        let mut bufs: Vec<Vec<f64>> = refs.iter().map(|v| vec![0.0; v.len()]).collect();
        let mut opt = Sgd::new(ps.clone(), 0.1, momentum, wd).unwrap();
        for step in 0..4 {
            // Parameter 1 has no gradient on step 2: skipped, its buffer untouched.
            let skip: &[usize] = if step == 2 { &[1] } else { &[] };
            let grads = set_grads(&dev, &mut rng, &ps, skip);
            opt.step().unwrap();
            dev.flush().unwrap();
            for (k, g) in grads.iter().enumerate() {
                if let Some(g) = g {
                    cpu::sgd(&mut refs[k], g, &mut bufs[k], 0.1, momentum as f64, wd as f64, 1.0);
                }
            }
        }
        for (k, p) in ps.iter().enumerate() {
            assert_close(&format!("sgd m={momentum} wd={wd} {:?}", p.shape()), &values(p), &refs[k], 1e-5, 1e-5);
        }
        let state = opt.state().unwrap();
        assert_eq!(state[0].0, "step");
        assert_eq!(state[0].1.to_vec_u32().unwrap(), vec![4]);
        if momentum > 0.0 {
            assert_eq!(state.len(), 1 + ps.len());
            for (k, (name, t)) in state[1..].iter().enumerate() {
                assert_eq!(name, &format!("sgd.p{k}.momentum_buffer"));
                assert_close(name, &t.to_vec().unwrap(), &bufs[k], 1e-5, 1e-5);
            }
        } else {
            assert_eq!(state.len(), 1, "no momentum buffers without momentum");
        }
    }
}

fn check_adam(cfg: AdamConfig, what: &str) {
    let dev = device();
    let mut rng = Rng::new(12);
    let (ps, mut refs) = make_params(&dev, &mut rng, &SHAPES, "adam");
    let mut m: Vec<Vec<f64>> = refs.iter().map(|v| vec![0.0; v.len()]).collect();
    let mut v = m.clone();
    let mut t = vec![0u64; ps.len()];
    let mut opt = Adam::new(ps.clone(), cfg).unwrap();
    for step in 0..5 {
        // Parameter 2 skips steps 1 and 3: its own step count (bias correction) lags behind.
        let skip: &[usize] = if step % 2 == 1 { &[2] } else { &[] };
        let grads = set_grads(&dev, &mut rng, &ps, skip);
        opt.step().unwrap();
        dev.flush().unwrap();
        for (k, g) in grads.iter().enumerate() {
            if let Some(g) = g {
                t[k] += 1;
                cpu::adam(&mut refs[k], g, &mut m[k], &mut v[k], t[k], &cfg, 1.0);
            }
        }
    }
    for (k, p) in ps.iter().enumerate() {
        assert_close(&format!("{what} {:?}", p.shape()), &values(p), &refs[k], 2e-5, 1e-4);
    }
    let state = opt.state().unwrap();
    for (k, p) in ps.iter().enumerate() {
        let get = |f: &str| state.iter().find(|(n, _)| *n == format!("{}.{f}", p.name())).unwrap().1.clone();
        assert_close(&format!("{what} m"), &get("m").to_vec().unwrap(), &m[k], 1e-5, 1e-4);
        assert_close(&format!("{what} v"), &get("v").to_vec().unwrap(), &v[k], 1e-6, 1e-4);
        assert_eq!(get("step").to_vec_u32().unwrap(), vec![t[k] as u32], "{what} step count of {}", p.name());
    }
}

#[test]
fn adam_matches_reference() {
    check_adam(AdamConfig { lr: 0.01, weight_decay: 0.1, ..AdamConfig::default() }, "adam");
    check_adam(AdamConfig { lr: 0.02, beta1: 0.5, beta2: 0.9, eps: 1e-6, ..AdamConfig::default() }, "adam no wd");
}

#[test]
fn adamw_matches_reference() {
    check_adam(AdamConfig::adamw(0.01, 0.1), "adamw");
    check_adam(AdamConfig { beta1: 0.0, ..AdamConfig::adamw(0.05, 0.5) }, "adamw beta1=0");
}

#[test]
fn default_configs_are_pytorch_defaults() {
    let d = AdamConfig::default();
    assert_eq!((d.lr, d.beta1, d.beta2, d.eps, d.weight_decay, d.decoupled), (1e-3, 0.9, 0.999, 1e-8, 0.0, false));
    let w = AdamConfig::adamw(3e-4, 0.01);
    assert_eq!((w.lr, w.beta1, w.beta2, w.eps, w.weight_decay, w.decoupled), (3e-4, 0.9, 0.999, 1e-8, 0.01, true));
}

#[test]
fn global_norm_matches_reference_and_scales_only_above_the_threshold() {
    let dev = device();
    let mut rng = Rng::new(13);
    // 20001 elements take the reduction's multi-chunk tree path.
    let shapes: [&[usize]; 5] = [&[1], &[7], &[1000], &[20001], &[4, 3]];
    let (ps, vals) = make_params(&dev, &mut rng, &shapes, "clip");
    // The last parameter has no gradient: it is left out of the norm.
    let grads = set_grads(&dev, &mut rng, &ps, &[4]);
    let live: Vec<&[f64]> = grads.iter().flatten().map(|g| g.as_slice()).collect();
    let (norm, _) = cpu::clip_grad_norm(&live, 1.0);
    for max_norm in [norm / 3.0, norm * 2.0] {
        let (rn, rs) = cpu::clip_grad_norm(&live, max_norm);
        let ns = clip_grad_norm(&ps, max_norm as f32).unwrap().to_vec().unwrap();
        assert_close(&format!("[norm, scale] max_norm={max_norm}"), &ns, &[rn, rs], 1e-6, 1e-5);
        if max_norm > norm {
            assert_eq!(ns[1], 1.0, "no scaling below the threshold");
        } else {
            assert!(ns[1] < 0.34, "scaled above the threshold: {}", ns[1]);
        }
    }
    // The fused scale inside the update: SGD with lr 1 gives p - scale * g.
    for max_norm in [norm / 3.0, norm * 2.0] {
        let before: Vec<Vec<f32>> = ps.iter().map(values).collect();
        let mut opt = Sgd::new(ps.clone(), 1.0, 0.0, 0.0).unwrap();
        opt.set_clip(Some(max_norm as f32)).unwrap();
        assert_eq!(opt.clip(), Some(max_norm as f32));
        opt.step().unwrap();
        let (rn, rs) = cpu::clip_grad_norm(&live, max_norm);
        let ns = opt.grad_norm().expect("a step with clipping records [norm, scale]").to_vec().unwrap();
        assert_close("grad_norm()", &ns, &[rn, rs], 1e-6, 1e-5);
        for (k, p) in ps.iter().enumerate() {
            let want: Vec<f64> = match &grads[k] {
                Some(g) => before[k].iter().zip(g).map(|(&w, &g)| w as f64 - rs * g).collect(),
                None => before[k].iter().map(|&w| w as f64).collect(),
            };
            assert_close(&format!("clipped sgd {:?} max_norm={max_norm}", p.shape()), &values(p), &want, 1e-6, 1e-5);
        }
        // The gradients themselves are not modified.
        let g0 = ps[2].grad().unwrap().to_vec().unwrap();
        assert_close("gradient untouched", &g0, grads[2].as_ref().unwrap(), 0.0, 0.0);
    }
    let _ = vals;
}

#[test]
fn clipped_adam_matches_reference() {
    let dev = device();
    let mut rng = Rng::new(14);
    let (ps, mut refs) = make_params(&dev, &mut rng, &SHAPES, "ca");
    let mut m: Vec<Vec<f64>> = refs.iter().map(|v| vec![0.0; v.len()]).collect();
    let mut v = m.clone();
    let cfg = AdamConfig::adamw(0.01, 0.1);
    let mut opt = Adam::new(ps.clone(), cfg).unwrap();
    opt.set_clip(Some(5.0)).unwrap();
    for step in 1..=3 {
        let grads = set_grads(&dev, &mut rng, &ps, &[]);
        opt.step().unwrap();
        let live: Vec<&[f64]> = grads.iter().flatten().map(|g| g.as_slice()).collect();
        let (norm, scale) = cpu::clip_grad_norm(&live, 5.0);
        assert!(norm > 5.0, "the test wants clipping active (norm {norm})");
        for (k, g) in grads.iter().enumerate() {
            cpu::adam(&mut refs[k], g.as_ref().unwrap(), &mut m[k], &mut v[k], step, &cfg, scale);
        }
    }
    for (k, p) in ps.iter().enumerate() {
        assert_close(&format!("clipped adamw {:?}", p.shape()), &values(p), &refs[k], 2e-5, 1e-4);
    }
}

#[test]
fn a_step_with_clipping_only_records_work() {
    let dev = own_device();
    let mut rng = Rng::new(15);
    let (ps, _) = make_params(&dev, &mut rng, &SHAPES, "rec");
    let mut adam = Adam::new(ps.clone(), AdamConfig::default()).unwrap();
    adam.set_clip(Some(1.0)).unwrap();
    set_grads(&dev, &mut rng, &ps, &[]);
    dev.flush().unwrap();
    let before = dev.stats();
    adam.step().unwrap();
    adam.set_lr(1e-4).unwrap();
    adam.step().unwrap();
    let after = dev.stats();
    assert_eq!(after.submits, before.submits, "an optimizer step must not submit");
    assert_eq!(after.readbacks, before.readbacks, "an optimizer step must not read back");
    assert!(after.dispatches > before.dispatches);
    dev.flush().unwrap();
    assert_eq!(dev.stats().submits, before.submits + 1, "the whole step is one submit");
}

#[test]
fn two_optimizers_on_disjoint_parameters_update_only_their_own() {
    let dev = device();
    let mut rng = Rng::new(16);
    let (gen, _) = make_params(&dev, &mut rng, &[&[7], &[3, 4]], "gen");
    let (disc, _) = make_params(&dev, &mut rng, &[&[5], &[1]], "disc");
    let mut opt_g = Adam::new(gen.clone(), AdamConfig::adam(0.01)).unwrap();
    let mut opt_d = Sgd::new(disc.clone(), 0.1, 0.9, 0.0).unwrap();
    opt_g.set_clip(Some(0.5)).unwrap();
    opt_d.set_clip(Some(100.0)).unwrap();
    let all: Vec<Param> = gen.iter().chain(&disc).cloned().collect();
    for _ in 0..2 {
        set_grads(&dev, &mut rng, &all, &[]);
        let before: Vec<Vec<f32>> = all.iter().map(values).collect();
        opt_d.step().unwrap();
        let mid: Vec<Vec<f32>> = all.iter().map(values).collect();
        for k in 0..4 {
            assert_eq!(before[k] == mid[k], k < 2, "after the discriminator step, parameter {k}");
        }
        opt_g.step().unwrap();
        let after: Vec<Vec<f32>> = all.iter().map(values).collect();
        for k in 0..4 {
            assert_eq!(mid[k] == after[k], k >= 2, "after the generator step, parameter {k}");
        }
        // Each clip covers only its own optimizer's gradients.
        let gn: Vec<f64> = gen.iter().flat_map(|p| p.grad().unwrap().to_vec().unwrap()).map(|x| x as f64).collect();
        let dn: Vec<f64> = disc.iter().flat_map(|p| p.grad().unwrap().to_vec().unwrap()).map(|x| x as f64).collect();
        let ng = opt_g.grad_norm().unwrap().to_vec().unwrap();
        let nd = opt_d.grad_norm().unwrap().to_vec().unwrap();
        let (rg, sg) = cpu::clip_grad_norm(&[&gn], 0.5);
        let (rd, sd) = cpu::clip_grad_norm(&[&dn], 100.0);
        assert_close("generator [norm, scale]", &ng, &[rg, sg], 1e-6, 1e-5);
        assert_close("discriminator [norm, scale]", &nd, &[rd, sd], 1e-6, 1e-5);
        opt_g.zero_grad();
        opt_d.zero_grad();
        assert!(all.iter().all(|p| p.grad().is_none()));
    }
}

/// Minimises sum((p - target)^2) on a tape; returns (first loss, last loss).
fn converge(opt: &mut dyn Optimizer, p: &Param, target: &Tensor, steps: usize) -> (f32, f32) {
    let dev = target.device().clone();
    let mut first = 0.0;
    let mut last = 0.0;
    for s in 0..steps {
        let tape = Tape::new();
        let x = tape.param(p);
        let t = tape.constant(target.clone());
        let d = x.sub(&t).unwrap();
        let loss = d.mul(&d).unwrap().sum_all().unwrap();
        opt.zero_grad();
        loss.backward().unwrap();
        opt.step().unwrap();
        if s == 0 || s == steps - 1 {
            // Reading the loss submits the step; the other steps submit with a flush.
            let l = loss.value().item().unwrap();
            if s == 0 {
                first = l;
            } else {
                last = l;
            }
        } else {
            dev.flush().unwrap();
        }
    }
    (first, last)
}

#[test]
fn optimizers_converge_on_a_quadratic() {
    let dev = device();
    let mut rng = Rng::new(17);
    let n = 33;
    let target = upload(&dev, &rng.vec(n, -1.0, 1.0), &[n]);
    type Make = fn(Param) -> Box<dyn Optimizer>;
    let runs: [(&str, Make, usize); 3] = [
        ("sgd", |p| Box::new(Sgd::new(vec![p], 0.05, 0.9, 0.0).unwrap()), 120),
        ("adam", |p| Box::new(Adam::new(vec![p], AdamConfig::adam(0.05)).unwrap()), 200),
        ("adamw", |p| Box::new(Adam::new(vec![p], AdamConfig::adamw(0.05, 1e-4)).unwrap()), 200),
    ];
    for (what, make, steps) in runs {
        let p = Param::new("p", upload(&dev, &rng.vec(n, -2.0, 2.0), &[n]));
        let mut opt = make(p.clone());
        let (first, last) = converge(opt.as_mut(), &p, &target, steps);
        assert!(first > 1.0 && last * 100.0 < first, "{what}: loss {first} -> {last}, wanted a 100x decrease");
    }
}

#[test]
fn learning_rate_changes_take_effect() {
    let dev = device();
    let mut rng = Rng::new(18);
    let (ps, mut refs) = make_params(&dev, &mut rng, &[&[7], &[300]], "lr");
    let mut bufs: Vec<Vec<f64>> = refs.iter().map(|v| vec![0.0; v.len()]).collect();
    let mut sgd = Sgd::new(ps.clone(), 0.1, 0.9, 0.01).unwrap();
    for lr in [0.1f32, 0.5, 0.0, 0.02] {
        sgd.set_lr(lr).unwrap();
        assert_eq!(sgd.lr(), lr);
        let grads = set_grads(&dev, &mut rng, &ps, &[]);
        sgd.step().unwrap();
        for (k, g) in grads.iter().enumerate() {
            cpu::sgd(&mut refs[k], g.as_ref().unwrap(), &mut bufs[k], lr as f64, 0.9, 0.01, 1.0);
        }
        for (k, p) in ps.iter().enumerate() {
            assert_close(&format!("sgd at lr {lr}"), &values(p), &refs[k], 1e-5, 1e-5);
        }
    }
    let (ps, mut refs) = make_params(&dev, &mut rng, &[&[7], &[300]], "lra");
    let mut m: Vec<Vec<f64>> = refs.iter().map(|v| vec![0.0; v.len()]).collect();
    let mut v = m.clone();
    let mut adam = Adam::new(ps.clone(), AdamConfig::adamw(0.01, 0.1)).unwrap();
    for (t, lr) in [0.01f32, 0.1, 0.001].into_iter().enumerate() {
        adam.set_lr(lr).unwrap();
        let grads = set_grads(&dev, &mut rng, &ps, &[]);
        adam.step().unwrap();
        let cfg = AdamConfig { lr, ..AdamConfig::adamw(0.01, 0.1) };
        for (k, g) in grads.iter().enumerate() {
            cpu::adam(&mut refs[k], g.as_ref().unwrap(), &mut m[k], &mut v[k], t as u64 + 1, &cfg, 1.0);
        }
        for (k, p) in ps.iter().enumerate() {
            assert_close(&format!("adamw at lr {lr}"), &values(p), &refs[k], 2e-5, 1e-4);
        }
    }
    assert_eq!(adam.config().lr, 0.001);
}

#[test]
fn state_round_trips_through_load_state() {
    let dev = device();
    let mut rng = Rng::new(19);
    let shapes: [&[usize]; 3] = [&[7], &[2, 3], &[1]];
    let (a, vals) = make_params(&dev, &mut rng, &shapes, "net");
    let cfg = AdamConfig::adamw(0.01, 0.1);
    let mut opt_a = Adam::new(a.clone(), cfg).unwrap();
    for _ in 0..3 {
        // net.p2 only gets a gradient on the first step.
        let skip: &[usize] = if opt_a.step_count() > 0 { &[2] } else { &[] };
        set_grads(&dev, &mut rng, &a, skip);
        opt_a.step().unwrap();
    }
    // A "checkpoint": host copies of the state and the parameters, uploaded into fresh tensors.
    let saved: Vec<(String, Tensor)> = opt_a
        .state()
        .unwrap()
        .into_iter()
        .map(|(name, t)| {
            let fresh = if name.ends_with("step") {
                Tensor::from_u32(&dev, &t.to_vec_u32().unwrap(), t.shape()).unwrap()
            } else {
                Tensor::from_slice(&dev, &t.to_vec().unwrap(), t.shape()).unwrap()
            };
            (name, fresh)
        })
        .collect();
    assert_eq!(saved.len(), 1 + 3 * 3);
    let b: Vec<Param> =
        a.iter().map(|p| Param::new(p.name(), Tensor::from_slice(&dev, &values(p), &p.shape()).unwrap())).collect();
    let mut opt_b = Adam::new(b.clone(), cfg).unwrap();
    opt_b.load_state(&saved).unwrap();
    assert_eq!(opt_b.step_count(), 3);
    for _ in 0..2 {
        let grads = set_grads(&dev, &mut rng, &a, &[]);
        for (p, g) in b.iter().zip(&grads) {
            p.set_grad(Some(upload(&dev, g.as_ref().unwrap(), &p.shape())));
        }
        opt_a.step().unwrap();
        opt_b.step().unwrap();
    }
    for (pa, pb) in a.iter().zip(&b) {
        assert_eq!(values(pa), values(pb), "resumed {} differs", pa.name());
    }
    // The loaded state was copied: changing the checkpoint tensors changes nothing.
    saved[1].1.write(&vec![9.0; saved[1].1.numel()]).unwrap();
    let st = opt_b.state().unwrap();
    assert_ne!(st[1].1.to_vec().unwrap(), vec![9.0; saved[1].1.numel()]);
    // Sgd round trip of the momentum buffers.
    let mut sgd = Sgd::new(a.clone(), 0.1, 0.9, 0.0).unwrap();
    set_grads(&dev, &mut rng, &a, &[]);
    sgd.step().unwrap();
    let st = sgd.state().unwrap();
    let mut sgd2 = Sgd::new(b.clone(), 0.1, 0.9, 0.0).unwrap();
    sgd2.load_state(&st).unwrap();
    let st2 = sgd2.state().unwrap();
    assert_eq!(st.len(), st2.len());
    for ((n1, t1), (n2, t2)) in st.iter().zip(&st2) {
        assert_eq!(n1, n2);
        if n1 != "step" {
            assert_eq!(t1.to_vec().unwrap(), t2.to_vec().unwrap());
        }
    }
    // Unknown entries, wrong shapes and partial Adam state are errors naming the entry.
    let e = opt_b.load_state(&[("net.p9.m".into(), upload(&dev, &[0.0], &[1]))]).unwrap_err().to_string();
    assert!(e.contains("net.p9.m"), "{e}");
    let e = opt_b.load_state(&[("net.p0.m".into(), upload(&dev, &[0.0; 6], &[6]))]).unwrap_err().to_string();
    assert!(e.contains("net.p0.m") && e.contains("[6]") && e.contains("[7]"), "{e}");
    let e = opt_b.load_state(&[("net.p2.m".into(), upload(&dev, &[0.0], &[1]))]).unwrap_err().to_string();
    assert!(e.contains("net.p2") && e.contains(".v"), "{e}");
    let _ = vals;
}

#[test]
fn bad_configurations_are_errors_naming_the_option() {
    let dev = device();
    let p = || vec![Param::new("w", Tensor::zeros(&dev, &[3]).unwrap())];
    let err = |r: atomgrad::Result<()>| r.unwrap_err().to_string();
    let e = err(Sgd::new(p(), -0.1, 0.0, 0.0).map(drop));
    assert!(e.contains("lr") && e.contains("-0.1"), "{e}");
    let e = err(Sgd::new(p(), 0.1, -0.5, 0.0).map(drop));
    assert!(e.contains("momentum"), "{e}");
    let e = err(Sgd::new(p(), 0.1, 0.0, -1.0).map(drop));
    assert!(e.contains("weight_decay"), "{e}");
    let e = err(Sgd::new(p(), f32::NAN, 0.0, 0.0).map(drop));
    assert!(e.contains("lr"), "{e}");
    for (cfg, option) in [
        (AdamConfig { beta1: 1.0, ..AdamConfig::default() }, "beta1"),
        (AdamConfig { beta1: -0.1, ..AdamConfig::default() }, "beta1"),
        (AdamConfig { beta2: 1.5, ..AdamConfig::default() }, "beta2"),
        (AdamConfig { lr: -1e-3, ..AdamConfig::default() }, "lr"),
        (AdamConfig { eps: -1.0, ..AdamConfig::default() }, "eps"),
        (AdamConfig { weight_decay: -0.1, ..AdamConfig::adamw(1e-3, 0.0) }, "weight_decay"),
    ] {
        let e = err(Adam::new(p(), cfg).map(drop));
        assert!(e.contains(option), "{option}: {e}");
    }
    let mut adam = Adam::new(p(), AdamConfig::default()).unwrap();
    let e = err(adam.set_lr(-1.0));
    assert!(e.contains("lr"), "{e}");
    assert_eq!(adam.lr(), 1e-3, "a rejected lr leaves the old one");
    let e = err(adam.set_clip(Some(0.0)));
    assert!(e.contains("max_norm"), "{e}");
    let e = err(clip_grad_norm(&p(), -1.0).map(drop));
    assert!(e.contains("max_norm"), "{e}");
    let e = err(Sgd::new(vec![], 0.1, 0.0, 0.0).map(drop));
    assert!(e.contains("no parameters"), "{e}");
    // The same parameter twice, or two parameters with one name (state keys would collide).
    let w = p().remove(0);
    let e = err(Adam::new(vec![w.clone(), w.clone()], AdamConfig::default()).map(drop));
    assert!(e.contains("twice"), "{e}");
    let e = err(Adam::new(vec![w, p().remove(0)], AdamConfig::default()).map(drop));
    assert!(e.contains("\"w\""), "{e}");
    // A gradient whose shape differs from its parameter's: names the optimizer and both shapes.
    let w = p().remove(0);
    w.set_grad(Some(Tensor::zeros(&dev, &[4]).unwrap()));
    let mut sgd = Sgd::new(vec![w], 0.1, 0.0, 0.0).unwrap();
    let e = err(sgd.step());
    assert!(e.contains("Sgd") && e.contains("[4]") && e.contains("[3]"), "{e}");
}
