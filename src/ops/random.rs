//! GPU randomness (`shaders/random.wgsl`): a counter-based generator, so value `i` of the stream
//! of a 64-bit `seed` is a pure function of `(seed, i)`, reproducible and independent of how the
//! work is dispatched. The function is Philox4x32-10 (Salmon et al. 2011), chosen over cheaper
//! integer hashes for its statistical quality (it passes TestU01 BigCrush and is the generator of
//! cuRAND and of PyTorch on CUDA) at a cost that is still small next to one memory access per
//! output: value `i` is word `i % 4` of `philox(counter = (i / 4, 0, 0, 0), key = (seed_lo,
//! seed_hi))`. [`cpu`] reimplements it in plain integer arithmetic, bit for bit.
//!
//! On top of the raw stream: uniform floats with 24-bit resolution ([`Tensor::rand_uniform`]),
//! Box-Muller normals ([`Tensor::rand_normal`]; 24-bit uniforms cap |z| at about 5.8), and
//! dropout whose mask is recomputed from `(seed, index)` in backward instead of being stored.
//! Callers choose distinct seeds for distinct uses (each layer, each step).

use crate::autodiff::Var;
use crate::device::{groups_1d, Device, WG};
use crate::error::{Error, Result};
use crate::tensor::{numel, DType, Tensor};

crate::shader!(SHADER = "random");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    seed_lo: u32,
    seed_hi: u32,
    threshold: u32,
    a: f32,
    b: f32,
    _pad: [u32; 2],
}

fn params(op: &'static str, shape: &[usize], seed: u64, a: f32, b: f32, threshold: u32) -> Result<Params> {
    let n = numel(shape);
    if n > u32::MAX as usize - 3 {
        return Err(Error::shape(op, format!("shape {shape:?} has more than 2^32 - 4 elements")));
    }
    Ok(Params { n: n as u32, seed_lo: seed as u32, seed_hi: (seed >> 32) as u32, threshold, a, b, _pad: [0; 2] })
}

#[allow(clippy::too_many_arguments)]
fn generate(
    dev: &Device,
    op: &'static str,
    entry: &str,
    shape: &[usize],
    dtype: DType,
    seed: u64,
    a: f32,
    b: f32,
) -> Result<Tensor> {
    let p = params(op, shape, seed, a, b, 0)?;
    let y = Tensor::empty(dev, op, shape, dtype)?;
    dev.dispatch(&SHADER, entry, &[], bytemuck::bytes_of(&p), &[y.bind()], groups_1d(y.numel().div_ceil(4), WG));
    Ok(y)
}

fn finite(op: &'static str, what: &[(&str, f32)]) -> Result<()> {
    for (name, v) in what {
        if !v.is_finite() {
            return Err(Error::Config(format!("{op}: {name} = {v} is not finite")));
        }
    }
    Ok(())
}

impl Tensor {
    /// The raw stream: element i is `cpu::raw(seed, i)` (a U32 tensor).
    pub fn rand_u32(dev: &Device, shape: &[usize], seed: u64) -> Result<Tensor> {
        generate(dev, "rand_u32", "raw_u32", shape, DType::U32, seed, 0.0, 0.0)
    }

    /// Uniform in [lo, hi) (24-bit resolution: `lo + (hi - lo) * k / 2^24`, k in 0..2^24,
    /// rounded to f32, so `hi` itself can appear only through that rounding).
    pub fn rand_uniform(dev: &Device, shape: &[usize], lo: f32, hi: f32, seed: u64) -> Result<Tensor> {
        finite("rand_uniform", &[("lo", lo), ("hi", hi), ("hi - lo", hi - lo)])?;
        generate(dev, "rand_uniform", "uniform_f32", shape, DType::F32, seed, lo, hi - lo)
    }

    /// Normal with the given mean and standard deviation (Box-Muller from uniforms in (0, 1]).
    pub fn rand_normal(dev: &Device, shape: &[usize], mean: f32, std: f32, seed: u64) -> Result<Tensor> {
        finite("rand_normal", &[("mean", mean), ("std", std)])?;
        if std < 0.0 {
            return Err(Error::Config(format!("rand_normal: std = {std} is negative")));
        }
        generate(dev, "rand_normal", "normal_f32", shape, DType::F32, seed, mean, std)
    }
}

fn check_p(p: f32, shape: &[usize]) -> Result<()> {
    if !(0.0..1.0).contains(&p) {
        return Err(Error::Config(format!("dropout: p = {p} is outside [0, 1) (input of shape {shape:?})")));
    }
    Ok(())
}

/// Dropout as applied in training: element i is kept iff `cpu::dropout_keep(seed, i, p)`, kept
/// values are scaled by 1 / (1 - p). The same call on the output gradient is the backward pass.
pub fn dropout(x: &Tensor, p: f32, seed: u64) -> Result<Tensor> {
    x.expect("dropout", DType::F32)?;
    check_p(p, x.shape())?;
    let scale = (1.0 / (1.0 - p as f64)) as f32;
    let prm = params("dropout", x.shape(), seed, 0.0, scale, cpu::dropout_threshold(p))?;
    let dev = x.device();
    let y = Tensor::empty(dev, "dropout", x.shape(), DType::F32)?;
    // Whole vec4s where the element count allows (same mask and values).
    let entry = if x.numel().is_multiple_of(4) { "dropout4" } else { "dropout" };
    dev.dispatch(
        &SHADER,
        entry,
        &[],
        bytemuck::bytes_of(&prm),
        &[x.bind(), y.bind()],
        groups_1d(x.numel().div_ceil(4), WG),
    );
    Ok(y)
}

impl Var {
    /// Dropout with drop probability `p` in [0, 1): in training each element is kept with
    /// probability 1 - p and scaled by 1 / (1 - p); the mask is a function of `(seed, index)`,
    /// recomputed in backward (local gradient mask * scale). `p = 0` or `!training` is the
    /// identity. Use a fresh seed per layer and step.
    pub fn dropout(&self, p: f32, seed: u64, training: bool) -> Result<Var> {
        check_p(p, self.shape())?;
        if p == 0.0 || !training {
            return Ok(self.clone());
        }
        let y = dropout(self.value(), p, seed)?;
        Ok(self.tape().op(y, &[self], move |gy| Ok(vec![Some(dropout(gy, p, seed)?)])))
    }
}

/// Integer / f64 references of the generator and everything built on it.
pub mod cpu {
    const M0: u32 = 0xD251_1F53;
    const M1: u32 = 0xCD9E_8D57;
    const W0: u32 = 0x9E37_79B9;
    const W1: u32 = 0xBB67_AE85;

    fn mulhilo(a: u32, b: u32) -> (u32, u32) {
        let p = a as u64 * b as u64;
        ((p >> 32) as u32, p as u32)
    }

    /// Philox4x32 with 10 rounds, as Random123's `philox4x32_R(10, ctr, key)`.
    pub fn philox4x32_10(ctr: [u32; 4], key: [u32; 2]) -> [u32; 4] {
        let (mut c, mut k) = (ctr, key);
        for round in 0..10 {
            if round > 0 {
                k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
            }
            let (hi0, lo0) = mulhilo(M0, c[0]);
            let (hi1, lo1) = mulhilo(M1, c[2]);
            c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
        }
        c
    }

    /// Value `i` of the stream of `seed`.
    pub fn raw(seed: u64, i: u64) -> u32 {
        let block = i / 4;
        philox4x32_10([block as u32, (block >> 32) as u32, 0, 0], [seed as u32, (seed >> 32) as u32])[(i % 4) as usize]
    }

    pub fn raw_stream(seed: u64, n: usize) -> Vec<u32> {
        (0..n as u64).map(|i| raw(seed, i)).collect()
    }

    /// [0, 1) with 24 bits.
    pub fn unit_co(r: u32) -> f64 {
        (r >> 8) as f64 / (1u64 << 24) as f64
    }

    /// (0, 1] with 24 bits.
    pub fn unit_oc(r: u32) -> f64 {
        ((r >> 8) + 1) as f64 / (1u64 << 24) as f64
    }

    pub fn uniform(seed: u64, n: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..n as u64).map(|i| lo + (hi - lo) * unit_co(raw(seed, i))).collect()
    }

    /// Box-Muller on the pairs (4b, 4b + 1) and (4b + 2, 4b + 3) of the raw stream: the first
    /// element of a pair gets the cosine, the second the sine, with the angle in [-pi, pi).
    pub fn normal(seed: u64, n: usize, mean: f64, std: f64) -> Vec<f64> {
        (0..n as u64)
            .map(|i| {
                let first = i & !1;
                let rad = (-2.0 * unit_oc(raw(seed, first)).ln()).sqrt();
                let theta = std::f64::consts::PI * (2.0 * unit_co(raw(seed, first + 1)) - 1.0);
                mean + std * rad * if i % 2 == 0 { theta.cos() } else { theta.sin() }
            })
            .collect()
    }

    /// Element i is kept iff its raw value is at least this: P(keep) = 1 - threshold / 2^32.
    pub fn dropout_threshold(p: f32) -> u32 {
        (p as f64 * 4294967296.0).round().min(u32::MAX as f64) as u32
    }

    pub fn dropout_keep(seed: u64, i: u64, p: f32) -> bool {
        raw(seed, i) >= dropout_threshold(p)
    }

    /// The training-mode dropout of `x` (also its gradient map).
    pub fn dropout(x: &[f64], p: f32, seed: u64) -> Vec<f64> {
        let scale = 1.0 / (1.0 - p as f64);
        x.iter().enumerate().map(|(i, &v)| if dropout_keep(seed, i as u64, p) { v * scale } else { 0.0 }).collect()
    }
}
