//! The classifier models run forward and backward at their real shapes, gated and not, and learn
//! a small task (so every layer's gradient reaches its parameters).
mod common;
use atomgrad::atom::{atom_loss, AtomConfig, TokenMask};
use atomgrad::nn::cnn::{Cnn, CnnOut};
use atomgrad::nn::transformer::{Transformer, TransformerConfig};
use atomgrad::ops::atom::StructureKernel;
use atomgrad::ops::embedding::Indices;
use atomgrad::optim::{Adam, AdamConfig, Optimizer};
use atomgrad::rng::Rng;
use atomgrad::{Tape, Tensor};
use common::device;

/// `n` noisy 28x28 images, half of each class: class 1 has a bright 8x8 square in the top-left
/// quadrant, class 0 in the bottom-right.
fn bright_square_images(n: usize, seed: u64) -> (Vec<f32>, Vec<u32>) {
    let mut rng = Rng::new(seed);
    let mut x = vec![0f32; n * 784];
    let y: Vec<u32> = (0..n as u32).map(|i| i % 2).collect();
    for a in 0..n {
        let (r0, c0) = if y[a] == 1 { (2, 2) } else { (18, 18) };
        for (i, v) in x[a * 784..(a + 1) * 784].iter_mut().enumerate() {
            let (r, c) = (i / 28, i % 28);
            *v = 0.1 * rng.normal() as f32
                + if (r0..r0 + 8).contains(&r) && (c0..c0 + 8).contains(&c) { 1.0 } else { 0.0 };
        }
    }
    (x, y)
}

/// 15 Adam steps (lr 1e-2) of an image model with 49 tokens of width 8 on `bright_square_images`;
/// checks the output shapes on every step and that the loss falls below 0.3 of its start.
fn learns_bright_squares(
    dev: &atomgrad::Device,
    seed: u64,
    gated: bool,
    params: Vec<atomgrad::Param>,
    forward: impl Fn(&Tape, &atomgrad::Var, &TokenMask) -> atomgrad::Result<CnnOut>,
) {
    let n = 16;
    let (x, y) = bright_square_images(n, seed);
    let mut opt = Adam::new(params, AdamConfig { lr: 1e-2, ..Default::default() }).unwrap();
    let mask = TokenMask::new(dev, &vec![49; n], 49).unwrap();
    let xt = Tensor::from_slice(dev, &x, &[n, 1, 28, 28]).unwrap();
    let yt = Tensor::from_u32(dev, &y, &[n]).unwrap();
    let mut losses = Vec::new();
    for _ in 0..15 {
        let tape = Tape::new();
        let out = forward(&tape, &tape.constant(xt.clone()), &mask).unwrap();
        assert_eq!(out.h.shape(), &[n, 49, 8]);
        assert_eq!(out.z.shape(), &[n, 8 * 49]);
        assert_eq!(out.w.is_some(), gated);
        let loss = out.logits.cross_entropy(&yt).unwrap();
        loss.backward().unwrap();
        opt.step().unwrap();
        opt.zero_grad();
        losses.push(loss.value().item().unwrap());
    }
    assert!(losses.last().unwrap() < &(losses[0] * 0.3), "gated={gated}: loss {losses:?}");
}

#[test]
fn cnn_learns_to_tell_bright_from_dark_images_gated_and_not() {
    let dev = device();
    for gated in [false, true] {
        let model = Cnn::new(&dev, 4, 8, 2, 0).unwrap();
        learns_bright_squares(&dev, 1, gated, model.params(gated), |tape, x, mask| {
            model.forward(tape, x, true, gated, mask)
        });
    }
}

/// The residual CNN (reduced widths; the recipe's 32/64/128 have the same structure) learns the
/// same task; its shapes: 49 tokens of the last stage's width, the flattened gated map as z;
/// its checkpoint names are unique and include every batch norm's running statistics.
#[test]
fn resnet_learns_to_tell_bright_from_dark_images_gated_and_not() {
    use atomgrad::nn::resnet::ResNet;
    let dev = device();
    for gated in [false, true] {
        let model = ResNet::new(&dev, &[4, 6, 8], 2, 0).unwrap();
        assert_eq!((model.tokens(), model.channels), (49, 8));
        let names: std::collections::BTreeSet<String> = model.tensors().into_iter().map(|(k, _)| k).collect();
        assert_eq!(names.len(), model.tensors().len(), "duplicate tensor names");
        // stem + 6 blocks x 2 convs + 2 shortcuts = 15 batch norms, each with running stats.
        assert_eq!(names.iter().filter(|k| k.ends_with(".running_mean")).count(), 15);
        learns_bright_squares(&dev, 3, gated, model.params(gated), |tape, x, mask| {
            model.forward(tape, x, true, gated, mask)
        });
    }
}

#[test]
fn transformer_learns_whether_a_marker_token_occurs_with_padding() {
    let dev = device();
    let (n, l, vocab) = (32, 10, 20);
    let mut rng = Rng::new(2);
    let mut ids = vec![0u32; n * l];
    let mut counts = Vec::new();
    let mut y = Vec::new();
    for a in 0..n {
        let len = 3 + rng.below(l - 2);
        let label = (a % 2) as u32;
        for i in 0..len {
            ids[a * l + i] = 3 + rng.below(vocab - 3) as u32; // never the marker 2
        }
        if label == 1 {
            ids[a * l + rng.below(len)] = 2;
        }
        // padding after `len` holds id 0
        counts.push(len);
        y.push(label);
    }
    let cfg = TransformerConfig { vocab, max_len: l, d: 16, heads: 2, layers: 2, ff: 32, dropout: 0.0, classes: 2 };
    for gated in [false, true] {
        let model = Transformer::new(&dev, cfg.clone(), 0).unwrap();
        let mut opt = Adam::new(model.params(gated), AdamConfig { lr: 3e-3, ..Default::default() }).unwrap();
        let idx = Indices::new(&dev, &ids, &[n, l], vocab).unwrap();
        let mask = TokenMask::new(&dev, &counts, l).unwrap();
        let yt = Tensor::from_u32(&dev, &y, &[n]).unwrap();
        let mut losses = Vec::new();
        for step in 0..60 {
            let tape = Tape::new();
            let out = model.forward(&tape, &idx, &mask, true, gated, step).unwrap();
            assert_eq!(out.z.shape(), &[n, 16]);
            let loss = out.logits.cross_entropy(&yt).unwrap();
            loss.backward().unwrap();
            opt.step().unwrap();
            opt.zero_grad();
            losses.push(loss.value().item().unwrap());
        }
        assert!(losses.last().unwrap() < &0.2, "gated={gated}: loss {:?}", &losses[losses.len() - 5..]);
        if gated {
            // padded tokens carry exactly zero importance
            let tape = Tape::no_grad();
            let w = model.forward(&tape, &idx, &mask, false, true, 0).unwrap().w.unwrap().value().to_vec().unwrap();
            for a in 0..n {
                assert!(w[a * l + counts[a]..(a + 1) * l].iter().all(|&v| v == 0.0));
            }
        }
    }
}

/// With wgpu's runtime checks off (`Device::set_shader_checks(false)`: no index clamps, no loop
/// counters) every kernel the CNN + atom modeling (register and Gram structure kernels, direct
/// and GEMM convolutions) and the Transformer run computes bit for bit what the checked form
/// computes: a kernel that read past a workgroup or private array would differ (clamped there,
/// undefined here).
#[test]
fn kernels_without_wgpu_shader_checks_train_bit_identically() {
    let dev = common::own_device(); // the modes are per device: keep them away from the shared one
    let n = 12;
    let mut rng = Rng::new(3);
    let x: Vec<f32> = (0..n * 784).map(|_| rng.normal() as f32).collect();
    let y: Vec<u32> = (0..n as u32).map(|i| i % 3).collect();
    let ids: Vec<u32> = (0..n * 9).map(|_| 1 + rng.below(15) as u32).collect();
    let counts: Vec<usize> = (0..n).map(|a| 3 + a % 7).collect();
    let run = |checks: bool| -> Vec<u32> {
        dev.set_shader_checks(checks);
        let mut bits = Vec::new();
        for (kernel, gemm) in [(None, false), (Some(StructureKernel::Gram128), true)] {
            dev.set_policy(kernel);
            dev.set_gemm_conv(gemm);
            let model = Cnn::new(&dev, 4, 40, 3, 0).unwrap(); // 40 channels: odd for every tile
            let mut opt = Adam::new(model.params(true), AdamConfig::default()).unwrap();
            let mask = TokenMask::new(&dev, &vec![49; n], 49).unwrap();
            let xt = Tensor::from_slice(&dev, &x, &[n, 1, 28, 28]).unwrap();
            let yt = Tensor::from_u32(&dev, &y, &[n]).unwrap();
            for _ in 0..2 {
                let tape = Tape::new();
                let out = model.forward(&tape, &tape.constant(xt.clone()), true, true, &mask).unwrap();
                let la = atom_loss(&out.z, &out.h, out.w.as_ref().unwrap(), &mask, &AtomConfig::default()).unwrap();
                let loss = out.logits.cross_entropy(&yt).unwrap().add(&la.scale(0.1).unwrap()).unwrap();
                loss.backward().unwrap();
                opt.step().unwrap();
                opt.zero_grad();
                bits.push(loss.value().item().unwrap().to_bits());
            }
            for (_, t) in model.tensors() {
                bits.extend(t.to_vec().unwrap().iter().map(|v| v.to_bits()));
            }
        }
        dev.set_policy::<StructureKernel>(None);
        dev.set_gemm_conv(false);
        let cfg =
            TransformerConfig { vocab: 16, max_len: 9, d: 24, heads: 3, layers: 1, ff: 40, dropout: 0.1, classes: 3 };
        let model = Transformer::new(&dev, cfg, 0).unwrap();
        let mut opt = Adam::new(model.params(true), AdamConfig::default()).unwrap();
        let idx = Indices::new(&dev, &ids, &[n, 9], 16).unwrap();
        let mask = TokenMask::new(&dev, &counts, 9).unwrap();
        let yt = Tensor::from_u32(&dev, &y, &[n]).unwrap();
        for step in 0..2 {
            let tape = Tape::new();
            let out = model.forward(&tape, &idx, &mask, true, true, step).unwrap();
            let loss = out.logits.cross_entropy(&yt).unwrap();
            loss.backward().unwrap();
            opt.step().unwrap();
            opt.zero_grad();
            bits.push(loss.value().item().unwrap().to_bits());
        }
        for (_, t) in model.tensors() {
            bits.extend(t.to_vec().unwrap().iter().map(|v| v.to_bits()));
        }
        bits
    };
    let checked = run(true);
    let unchecked = run(false);
    assert!(!dev.shader_checks());
    let first = checked.iter().zip(&unchecked).position(|(a, b)| a != b);
    assert!(checked.len() == unchecked.len() && first.is_none(), "first difference at value {first:?}");
}

/// The module API: a `Builder` names layers uniquely in creation order and seeds them
/// reproducibly; `Sequential` lists its layers' parameters and passes the mode on; batch norm as
/// a `Module` uses batch statistics in training mode and its running statistics in evaluation
/// mode; the importance gate returns gated tokens and importances; losses take `&Tensor` or
/// `&Var` targets alike.
#[test]
fn modules_builders_gates_and_loss_targets() {
    use atomgrad::nn::{Activation, Builder, Module, Sequential};
    let dev = device();
    let build = || {
        let mut b = Builder::new(&dev, 5);
        let seq = Sequential::new()
            .push(b.conv2d(1, 2, 3, 1, 1).unwrap())
            .push(b.batch_norm2d(2).unwrap())
            .push(Activation::Relu);
        (seq, b.importance_gate(2).unwrap())
    };
    let (mut seq, gate) = build();
    let names: Vec<String> = seq.params().iter().map(|p| p.name()).collect();
    assert_eq!(names, ["conv0.w", "conv0.b", "bn1.gamma", "bn1.beta"]);
    let tensors: Vec<String> = seq.tensors().into_iter().map(|(n, _)| n).collect();
    assert!(tensors.contains(&"bn1.running_mean".to_string()), "{tensors:?}");
    let (seq2, _) = build();
    assert_eq!(seq.params()[0].value().to_vec().unwrap(), seq2.params()[0].value().to_vec().unwrap(), "same seed");
    let x = Tensor::from_slice(&dev, &(0..2 * 16).map(|i| (i % 7) as f32).collect::<Vec<_>>(), &[2, 1, 4, 4]).unwrap();
    let tape = Tape::no_grad();
    let train = seq.forward(&tape, &tape.constant(x.clone())).unwrap().value().to_vec().unwrap();
    seq.set_training(false);
    let eval = seq.forward(&tape, &tape.constant(x)).unwrap().value().to_vec().unwrap();
    assert_ne!(train, eval, "evaluation mode reads the running statistics");
    // The gate: tokens [N, n, m] -> h * w and w in (0, 1).
    let tape = Tape::new();
    let h = tape.constant(Tensor::from_slice(&dev, &[1.0, 2.0, -1.0, 0.5, 3.0, -2.0], &[1, 3, 2]).unwrap());
    let g = gate.forward(&tape, &h, &TokenMask::full(&dev, 1, 3).unwrap()).unwrap();
    let (w, t) = (g.importance.value().to_vec().unwrap(), g.tokens.value().to_vec().unwrap());
    assert_eq!(g.importance.shape(), [1, 3]);
    assert!(w.iter().all(|&v| v > 0.0 && v < 1.0), "{w:?}");
    let hv = [1.0, 2.0, -1.0, 0.5, 3.0, -2.0];
    assert!(t.iter().enumerate().all(|(i, &v)| (v - hv[i] * w[i / 2]).abs() < 1e-6), "{t:?} {w:?}");
    // Targets as data or on the tape give the same losses.
    let logits = tape.constant(Tensor::from_slice(&dev, &[0.5, -1.0, 2.0, 0.0], &[2, 2]).unwrap());
    let labels = Tensor::from_u32(&dev, &[1, 0], &[2]).unwrap();
    let a = logits.cross_entropy(&labels).unwrap().value().item().unwrap();
    let b = logits.cross_entropy(&tape.constant(labels)).unwrap().value().item().unwrap();
    assert_eq!(a, b);
    let probs = Tensor::from_slice(&dev, &[1.0, 0.0, 0.25, 0.5], &[2, 2]).unwrap();
    let a = logits.bce_with_logits(&probs).unwrap().value().item().unwrap();
    let b = logits.bce_with_logits(&tape.constant(probs)).unwrap().value().item().unwrap();
    assert_eq!(a, b);
}
