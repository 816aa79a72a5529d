//! Shared test harness: a device per test, GPU-vs-f64 comparison, and gradient checks against
//! central finite differences of the f64 CPU reference.
#![allow(dead_code)]

use atomgrad::rng::Rng;
use atomgrad::{Device, Result, Tape, Tensor, Var};

/// The test binary's one device, shared by its tests. Creating and dropping Vulkan devices on
/// several threads at once crashes or deadlocks NVIDIA's driver (wgpu issues #8365, #10010: a
/// grad check per device made the layout tests segfault and the embedding tests hang on an H200),
/// and one device is faster everywhere. Tests that count buffers or submits use [`own_device`].
pub fn device() -> Device {
    static DEVICE: std::sync::OnceLock<Device> = std::sync::OnceLock::new();
    DEVICE.get_or_init(own_device).clone()
}

/// A device of the test's own, for tests whose assertions read `Device::stats` (other tests'
/// work on the shared device would show in its counters).
pub fn own_device() -> Device {
    Device::new().expect("a Vulkan/Metal/DX12 adapter (lavapipe on CI)")
}

pub fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

pub fn upload(dev: &Device, v: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_slice(dev, &f32s(v), shape).unwrap()
}

/// Asserts |gpu - cpu| <= atol + rtol * |cpu| elementwise, naming the first element that fails.
pub fn assert_close(what: &str, gpu: &[f32], cpu: &[f64], atol: f64, rtol: f64) {
    assert_eq!(gpu.len(), cpu.len(), "{what}: {} GPU values vs {} reference values", gpu.len(), cpu.len());
    for (i, (&g, &c)) in gpu.iter().zip(cpu).enumerate() {
        let err = (g as f64 - c).abs();
        if g.is_nan() && c.is_nan() {
            continue;
        }
        assert!(
            err <= atol + rtol * c.abs(),
            "{what}: element {i}: GPU {g} vs f64 reference {c} (|err| {err:.3e}, atol {atol:e}, rtol {rtol:e})"
        );
    }
}

/// Checks an op on the tape against its f64 reference, forward and backward:
/// - the GPU forward matches `reference(inputs)`;
/// - the GPU gradient of sum(y * r) for random r matches central finite differences of
///   sum(reference(inputs) * r) for every element of every input in `check`.
pub fn grad_check(
    what: &str,
    inputs: &[(Vec<f64>, Vec<usize>)],
    check: &[bool],
    build: impl Fn(&[Var]) -> Result<Var>,
    reference: impl Fn(&[Vec<f64>]) -> Vec<f64>,
    tol: f64,
) {
    let dev = device();
    let tape = Tape::new();
    let vars: Vec<Var> = inputs
        .iter()
        .zip(check)
        .map(|((v, s), &c)| {
            let t = upload(&dev, v, s);
            if c {
                tape.leaf(t)
            } else {
                tape.constant(t)
            }
        })
        .collect();
    let y = build(&vars).unwrap_or_else(|e| panic!("{what}: {e}"));
    let base: Vec<Vec<f64>> = inputs.iter().map(|(v, _)| v.iter().map(|&x| x as f32 as f64).collect()).collect();
    let yref = reference(&base);
    assert_close(&format!("{what} forward"), &y.value().to_vec().unwrap(), &yref, tol, tol);
    let mut rng = Rng::new(0xfeed);
    let r = rng.vec(yref.len(), -1.0, 1.0);
    let grads = y.backward_with(upload(&dev, &r, y.shape())).unwrap();
    let dot = |ins: &[Vec<f64>]| -> f64 { reference(ins).iter().zip(&r).map(|(a, b)| a * b).sum() };
    for (k, var) in vars.iter().enumerate() {
        if !check[k] {
            continue;
        }
        let g = grads.get(var).unwrap_or_else(|| panic!("{what}: no gradient for input {k}")).to_vec().unwrap();
        let mut fd = vec![0.0; base[k].len()];
        for j in 0..base[k].len() {
            let h = 1e-6 * base[k][j].abs().max(1.0);
            let mut plus = base.clone();
            plus[k][j] += h;
            let mut minus = base.clone();
            minus[k][j] -= h;
            fd[j] = (dot(&plus) - dot(&minus)) / (2.0 * h);
        }
        assert_close(&format!("{what} d/d(input {k})"), &g, &fd, tol, tol);
    }
}
