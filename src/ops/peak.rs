//! The ceiling probes (`shaders/peak.wgsl`) that benchmarks report next to each kernel: arithmetic
//! (`fma_peak`) and memory bandwidth as a kernel sees it (`copy_vec4`).

use crate::device::{groups_1d, Device, WG};
use crate::error::Result;
use crate::tensor::{DType, Tensor};

crate::shader!(SHADER = "peak");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    iters: u32,
    a: f32,
    b: f32,
}

/// Floating-point operations one call of [`fma_peak`] performs.
pub fn fma_peak_flops(n: usize, iters: u32) -> f64 {
    n as f64 * iters as f64 * 8.0 * 2.0
}

/// Runs 8 multiply-add chains of `iters` rounds per element; returns the per-element sums.
pub fn fma_peak(dev: &Device, n: usize, iters: u32, a: f32, b: f32) -> Result<Tensor> {
    let y = Tensor::empty(dev, "fma_peak", &[n], DType::F32)?;
    let p = Params { n: n as u32, iters, a, b };
    dev.dispatch(&SHADER, "fma_peak", &[], bytemuck::bytes_of(&p), &[y.bind()], groups_1d(n, WG));
    Ok(y)
}

/// `dst = src` by a compute kernel, 16 bytes per invocation; both hold a multiple of 4 elements.
pub fn copy_vec4(src: &Tensor, dst: &Tensor) -> Result<()> {
    if src.numel() != dst.numel() || !src.numel().is_multiple_of(4) || src.dtype() != dst.dtype() {
        return Err(crate::error::Error::shape(
            "copy_vec4",
            format!("{src:?} into {dst:?}: needs equal sizes, a multiple of 4"),
        ));
    }
    let n = src.numel() / 4;
    let p = Params { n: n as u32, iters: 0, a: 0.0, b: 0.0 };
    src.device().dispatch(
        &SHADER,
        "copy_vec4",
        &[],
        bytemuck::bytes_of(&p),
        &[src.bind(), dst.bind()],
        groups_1d(n, WG),
    );
    Ok(())
}

/// f64 reference.
pub mod cpu {
    pub fn fma_peak(n: usize, iters: u32, a: f64, b: f64) -> Vec<f64> {
        (0..n)
            .map(|i| {
                let x0 = (i as f32 * 1e-6) as f64;
                (0..8)
                    .map(|c| {
                        let mut x = (x0 as f32 + c as f32 * 1e-3) as f64;
                        for _ in 0..iters {
                            x = x * a + b;
                        }
                        x
                    })
                    .sum()
            })
            .collect()
    }
}
