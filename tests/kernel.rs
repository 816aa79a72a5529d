//! User kernels (`atomgrad::kernel`): a kernel with a backward rule trains through the tape, and
//! every mistake in a kernel or a launch is a one-line `Error::Config` naming the kernel, never a
//! GPU validation error or a panic. (`examples/custom_kernel.rs` gradient-checks one.)

mod common;
use atomgrad::kernel::Kernel;
use atomgrad::{DType, Error, Tape, Tensor};
use common::device;

const AXPY: &str = r#"
struct Params { n: u32, a: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@compute @workgroup_size(64)
fn axpy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if i >= p.n { return; }
    y[i] = p.a * x[i] + y[i];
}
@compute @workgroup_size(64)
fn count(@builtin(global_invocation_id) gid: vec3<u32>) {
    if gid.x >= p.n { return; }
    y[gid.x] = f32(gid.x);
}
"#;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    a: f32,
}

fn config_err(r: atomgrad::Result<impl std::fmt::Debug>, want: &[&str]) {
    match r {
        Err(Error::Config(m)) => {
            assert!(!m.contains('\n'), "not one line: {m}");
            for w in want {
                assert!(m.contains(w), "{m:?} does not say {w:?}");
            }
        }
        other => panic!("expected a config error saying {want:?}, got {other:?}"),
    }
}

#[test]
fn a_user_kernel_runs_on_odd_sizes_and_joins_the_tape() {
    let dev = device();
    let k = Kernel::new("axpy", AXPY).unwrap();
    assert_eq!(k.entry_points(), ["axpy", "count"]);
    for n in [1usize, 63, 64, 65, 1000] {
        let x: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let (xt, yt) = (Tensor::from_slice(&dev, &x, &[n]).unwrap(), Tensor::full(&dev, &[n], 1.0).unwrap());
        k.launch(&dev, "axpy").params(&Params { n: n as u32, a: 2.0 }).arg(&xt).arg(&yt).over(n).record().unwrap();
        let y = yt.to_vec().unwrap();
        assert!(y.iter().enumerate().all(|(i, &v)| v == 2.0 * i as f32 + 1.0), "n = {n}");
    }
    // As an op on the tape: y = 3 x + 0, backward 3 g (the same kernel on the gradient).
    let tape = Tape::new();
    let x = tape.leaf(Tensor::from_slice(&dev, &[1.0, -2.0, 0.5], &[3]).unwrap());
    let y = Tensor::zeros(&dev, &[3]).unwrap();
    k.launch(&dev, "axpy").params(&Params { n: 3, a: 3.0 }).arg(x.value()).arg(&y).over(3).record().unwrap();
    let (k2, d2) = (k.clone(), dev.clone());
    let yv = tape.op(y, &[&x], move |g| {
        let gx = Tensor::zeros(&d2, g.shape())?;
        k2.launch(&d2, "axpy").params(&Params { n: 3, a: 3.0 }).arg(g).arg(&gx).over(3).record()?;
        Ok(vec![Some(gx)])
    });
    assert_eq!(yv.value().to_vec().unwrap(), [3.0, -6.0, 1.5]);
    let w = tape.constant(Tensor::from_slice(&dev, &[1.0, 2.0, 3.0], &[3]).unwrap());
    let grads = yv.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(grads.get(&x).unwrap().to_vec().unwrap(), [3.0, 6.0, 9.0]);
}

#[test]
fn kernel_and_launch_mistakes_are_one_line_config_errors() {
    let dev = device();
    config_err(Kernel::new("broken", "fn main( {"), &["kernel broken"]);
    config_err(Kernel::new("none", "struct Params { n: u32 }\nfn f() {}"), &["no @compute entry point"]);
    let no_params = r#"
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@compute @workgroup_size(1) fn main() { y[0] = 1.0; }"#;
    config_err(Kernel::new("np", no_params), &["np", "main", "parameter block"]);
    let group1 = r#"
struct Params { n: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(1) @binding(0) var<storage, read_write> y: array<f32>;
@compute @workgroup_size(1) fn main() { y[0] = f32(p.n); }"#;
    config_err(Kernel::new("g1", group1), &["group 1"]);
    let k = Kernel::new("axpy", AXPY).unwrap();
    let x = Tensor::zeros(&dev, &[4]).unwrap();
    let u = Tensor::from_u32(&dev, &[1, 2, 3, 4], &[4]).unwrap();
    let p = Params { n: 4, a: 1.0 };
    config_err(k.launch(&dev, "nope").params(&p).arg(&x).arg(&x).over(4).record(), &["axpy::nope", "axpy, count"]);
    config_err(k.launch(&dev, "axpy").params(&p).arg(&x).over(4).record(), &["[1, 2]", "1 tensor(s)"]);
    config_err(k.launch(&dev, "axpy").params(&p).arg(&x).arg(&u).over(4).record(), &["binding 2", "F32"]);
    config_err(k.launch(&dev, "axpy").params(&[4u32]).arg(&x).arg(&x).over(4).record(), &["8 bytes", "has 4"]);
    config_err(k.launch(&dev, "axpy").params(&p).arg(&x).arg(&x).record(), &["workgroup count"]);
    // `count` uses only binding 2 of the two: it must be given exactly the bindings it uses.
    config_err(k.launch(&dev, "count").params(&p).arg(&x).over(4).record(), &["[2]"]);
    let y = Tensor::uninit(&dev, &[4], DType::F32).unwrap();
    assert_eq!(y.shape(), [4]);
    dev.flush().unwrap(); // nothing invalid was recorded
}
