//! A kernel of your own with its own backward rule: swish, `y = x * sigmoid(x)`, as two WGSL
//! entry points (forward and gradient), recorded on the tape with `Tape::op`, checked against an
//! f64 reference and its gradient against central differences.
//! `cargo run --release --example custom_kernel` prints the largest errors.

use atomgrad::kernel::Kernel;
use atomgrad::{rng::Rng, DType, Device, Result, Tape, Tensor, Var};

/// Bindings: 0 the parameter block, 1 x, 2 y (forward) or 1 x, 2 dL/dy, 3 dL/dx (backward).
/// Workgroups: 256 invocations, one element each.
const SWISH: &str = r#"
struct Params { n: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> gx: array<f32>;

@compute @workgroup_size(256)
fn forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if i >= p.n { return; }
    y[i] = x[i] / (1.0 + exp(-x[i]));
}

// dL/dx = dL/dy * s * (1 + x * (1 - s)) with s = sigmoid(x); binding 2 holds dL/dy here.
@compute @workgroup_size(256)
fn backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if i >= p.n { return; }
    let s = 1.0 / (1.0 + exp(-x[i]));
    gx[i] = y[i] * s * (1.0 + x[i] * (1.0 - s));
}
"#;

/// `swish(x)` on the tape: the forward kernel now, the backward kernel when `backward` reaches it.
fn swish(kernel: &Kernel, x: &Var) -> Result<Var> {
    let (dev, n) = (x.value().device().clone(), x.value().numel());
    let y = Tensor::uninit(&dev, x.shape(), DType::F32)?;
    kernel.launch(&dev, "forward").params(&[n as u32]).arg(x.value()).arg(&y).over(n).record()?;
    let (kernel, xv) = (kernel.clone(), x.value().clone());
    Ok(x.tape().op(y, &[x], move |gy| {
        let gx = Tensor::uninit(&dev, xv.shape(), DType::F32)?;
        kernel.launch(&dev, "backward").params(&[n as u32]).arg(&xv).arg(gy).arg(&gx).over(n).record()?;
        Ok(vec![Some(gx)])
    }))
}

/// The largest errors of the forward pass (against f64) and of the gradient of
/// `L = sum(r * swish(x))` (against central differences of the kernel itself).
pub fn run() -> Result<(f64, f64)> {
    let dev = Device::new()?;
    let kernel = Kernel::new("swish", SWISH)?;
    let mut rng = Rng::new(7);
    let (shape, n) = ([4, 8], 32);
    let x: Vec<f32> = (0..n).map(|_| 2.0 * rng.normal() as f32).collect();
    let r: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
    // L(x) in f64 from the kernel's output, for the differences.
    let loss = |x: &[f32]| -> Result<f64> {
        let tape = Tape::no_grad();
        let y = swish(&kernel, &tape.constant(Tensor::from_slice(&dev, x, &shape)?))?.value().to_vec()?;
        Ok(y.iter().zip(&r).map(|(&y, &r)| y as f64 * r as f64).sum())
    };
    let tape = Tape::new();
    let xv = tape.leaf(Tensor::from_slice(&dev, &x, &shape)?);
    let y = swish(&kernel, &xv)?;
    let reference = x.iter().map(|&v| v as f64 / (1.0 + (-v as f64).exp()));
    let fwd_err = y.value().to_vec()?.iter().zip(reference).map(|(&a, b)| (a as f64 - b).abs()).fold(0.0, f64::max);
    let r_t = tape.constant(Tensor::from_slice(&dev, &r, &shape)?);
    let grads = y.mul(&r_t)?.sum_all()?.backward()?;
    let g = grads.get(&xv).expect("x is a leaf").to_vec()?;
    let (mut grad_err, h) = (0f64, 1e-2f32);
    for i in 0..n {
        let (mut up, mut down) = (x.clone(), x.clone());
        up[i] += h;
        down[i] -= h;
        let numeric = (loss(&up)? - loss(&down)?) / (up[i] as f64 - down[i] as f64);
        grad_err = grad_err.max((g[i] as f64 - numeric).abs() / (1.0 + numeric.abs()));
    }
    Ok((fwd_err, grad_err))
}

fn main() -> Result<()> {
    let (fwd, grad) = run()?;
    println!("custom_kernel: swish forward max error {fwd:.2e} (vs f64), gradient max error {grad:.2e} (vs central differences)");
    Ok(())
}

#[test]
fn swish_matches_its_reference_and_its_gradient_check() {
    let (fwd, grad) = run().unwrap();
    assert!(fwd < 1e-5, "forward error {fwd}");
    assert!(grad < 2e-3, "gradient error {grad}");
}
