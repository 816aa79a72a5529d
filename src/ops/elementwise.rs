//! Elementwise ops (`shaders/elementwise.wgsl`): unary maps, broadcasting binary maps, their
//! local gradients, and in-place gradient accumulation. The f64 reference is [`cpu`].

use crate::autodiff::Var;
use crate::device::{groups_1d, WG};
use crate::error::{Error, Result};
use crate::ops::reduce::sum_to;
use crate::tensor::{broadcast_shape, broadcast_strides, collapse_dims, DType, Tensor};

crate::shader!(SHADER = "elementwise");

pub(crate) const MAX_DIMS: usize = 8;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    ndim: u32,
    alpha: f32,
    beta: f32,
    shape: [u32; MAX_DIMS],
    sa: [u32; MAX_DIMS],
    sb: [u32; MAX_DIMS],
}

fn fill(dst: &mut [u32; MAX_DIMS], src: &[usize]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = *s as u32;
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Unary {
    Neg,
    Exp,
    Log,
    Sqrt,
    Relu,
    LeakyRelu(f32),
    Sigmoid,
    Tanh,
    /// GELU, tanh approximation (as GPT-2 and llm.c).
    Gelu,
    /// `alpha * x + beta`
    Affine(f32, f32),
    /// `x^alpha`
    Powf(f32),
}

impl Unary {
    fn code(self) -> u32 {
        match self {
            Unary::Neg => 0,
            Unary::Exp => 1,
            Unary::Log => 2,
            Unary::Sqrt => 3,
            Unary::Relu => 4,
            Unary::LeakyRelu(_) => 5,
            Unary::Sigmoid => 6,
            Unary::Tanh => 7,
            Unary::Gelu => 8,
            Unary::Affine(..) => 9,
            Unary::Powf(_) => 10,
        }
    }
    fn alpha_beta(self) -> (f32, f32) {
        match self {
            Unary::LeakyRelu(a) | Unary::Powf(a) => (a, 0.0),
            Unary::Affine(a, b) => (a, b),
            _ => (0.0, 0.0),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    /// Binary cross-entropy of logits `a` against targets `b`, per element.
    BceLogits,
}

impl Binary {
    fn code(self) -> u32 {
        self as u32
    }
    fn name(self) -> &'static str {
        match self {
            Binary::Add => "add",
            Binary::Sub => "sub",
            Binary::Mul => "mul",
            Binary::Div => "div",
            Binary::Pow => "pow",
            Binary::BceLogits => "bce_with_logits",
        }
    }
}

fn check_f32(op: &'static str, t: &Tensor) -> Result<()> {
    t.expect(op, DType::F32)?;
    if t.dims() > MAX_DIMS {
        return Err(Error::shape(op, format!("at most {MAX_DIMS} dimensions, got {:?}", t.shape())));
    }
    Ok(())
}

/// The entry point for `n` elements, flat: its vec4 form (`<entry>4`, one invocation per 4
/// elements) where `n` is a multiple of 4, and the invocations it needs.
fn flat_entry(entry: &'static str, entry4: &'static str, n: usize) -> (&'static str, usize) {
    if n.is_multiple_of(4) {
        (entry4, n / 4)
    } else {
        (entry, n)
    }
}

/// y = f(x)
pub fn unary(x: &Tensor, op: Unary) -> Result<Tensor> {
    check_f32("unary", x)?;
    let dev = x.device();
    let y = Tensor::empty(dev, "unary", x.shape(), DType::F32)?;
    let (alpha, beta) = op.alpha_beta();
    let (entry, n) = flat_entry("unary", "unary4", x.numel());
    let p = Params { n: n as u32, ndim: 0, alpha, beta, shape: [0; 8], sa: [0; 8], sb: [0; 8] };
    dev.dispatch(
        &SHADER,
        entry,
        &[("OP", op.code() as f64)],
        bytemuck::bytes_of(&p),
        &[x.bind(), y.bind()],
        groups_1d(n, WG),
    );
    Ok(y)
}

/// gx = gy * f'(x)
pub fn unary_backward(x: &Tensor, gy: &Tensor, op: Unary) -> Result<Tensor> {
    if x.shape() != gy.shape() {
        return Err(Error::shape("unary_backward", format!("x {:?} vs gy {:?}", x.shape(), gy.shape())));
    }
    let dev = x.device();
    let gx = Tensor::empty(dev, "unary_backward", x.shape(), DType::F32)?;
    let (alpha, beta) = op.alpha_beta();
    let (entry, n) = flat_entry("unary_backward", "unary_backward4", x.numel());
    let p = Params { n: n as u32, ndim: 0, alpha, beta, shape: [0; 8], sa: [0; 8], sb: [0; 8] };
    dev.dispatch(
        &SHADER,
        entry,
        &[("OP", op.code() as f64)],
        bytemuck::bytes_of(&p),
        &[x.bind(), gy.bind(), gx.bind()],
        groups_1d(n, WG),
    );
    Ok(gx)
}

fn binary_params(op: &'static str, a: &Tensor, b: &Tensor) -> Result<(Vec<usize>, Params)> {
    check_f32(op, a)?;
    check_f32(op, b)?;
    let out = broadcast_shape(op, a.shape(), b.shape())?;
    if out.len() > MAX_DIMS {
        return Err(Error::shape(op, format!("at most {MAX_DIMS} dimensions, got {out:?}")));
    }
    let (shape, sa, sb) = collapse_dims(&out, &broadcast_strides(a.shape(), &out), &broadcast_strides(b.shape(), &out));
    let mut p = Params {
        n: out.iter().product::<usize>() as u32,
        ndim: shape.len() as u32,
        alpha: 0.0,
        beta: 0.0,
        shape: [0; 8],
        sa: [0; 8],
        sb: [0; 8],
    };
    fill(&mut p.shape, &shape);
    fill(&mut p.sa, &sa);
    fill(&mut p.sb, &sb);
    Ok((out, p))
}

/// The binary kernel's entry point, invocations and layout constants: the vec4 form where the
/// output's innermost (collapsed) dim holds a multiple of 4 elements and each operand either runs
/// along it (stride 1) or is broadcast over it (stride 0), with `p.n` counting vec4s.
fn binary_entry(
    entry: &'static str,
    entry4: &'static str,
    p: &mut Params,
    a: &Tensor,
    b: &Tensor,
) -> (&'static str, usize, Vec<(&'static str, f64)>) {
    let n = p.n as usize;
    let d = p.ndim.max(1) as usize - 1;
    let (inner, sa, sb) = (p.shape[d], p.sa[d], p.sb[d]);
    // (Operands are bound as whole vec4s: a broadcast one of, say, 10 values would lose its last 2.)
    let whole = a.numel().is_multiple_of(4) && b.numel().is_multiple_of(4);
    if p.ndim > 0 && inner.is_multiple_of(4) && sa <= 1 && sb <= 1 && whole && n > 0 {
        p.n = (n / 4) as u32;
        (entry4, n / 4, vec![("A4", f64::from(sa)), ("B4", f64::from(sb)), ("NDIM", f64::from(p.ndim))])
    } else {
        (entry, n, vec![("NDIM", f64::from(p.ndim))])
    }
}

/// y = a (op) b with numpy broadcasting.
pub fn binary(a: &Tensor, b: &Tensor, op: Binary) -> Result<Tensor> {
    let (out, mut p) = binary_params(op.name(), a, b)?;
    let dev = a.device();
    let y = Tensor::empty(dev, op.name(), &out, DType::F32)?;
    let (entry, n, mut constants) = binary_entry("binary", "binary4", &mut p, a, b);
    constants.push(("OP", op.code() as f64));
    dev.dispatch(&SHADER, entry, &constants, bytemuck::bytes_of(&p), &[a.bind(), b.bind(), y.bind()], groups_1d(n, WG));
    Ok(y)
}

/// gy * d(a op b)/d(a) (`wrt_b = false`) or /d(b), in the broadcast output shape.
pub fn binary_backward(gy: &Tensor, a: &Tensor, b: &Tensor, op: Binary, wrt_b: bool) -> Result<Tensor> {
    let (out, mut p) = binary_params(op.name(), a, b)?;
    if gy.shape() != out.as_slice() {
        return Err(Error::shape(op.name(), format!("gradient {:?} vs output {out:?}", gy.shape())));
    }
    let dev = a.device();
    let g = Tensor::empty(dev, "binary_backward", &out, DType::F32)?;
    let (entry, n, mut constants) = binary_entry("binary_backward", "binary_backward4", &mut p, a, b);
    constants.extend([("OP", op.code() as f64), ("WHICH", wrt_b as u32 as f64)]);
    dev.dispatch(
        &SHADER,
        entry,
        &constants,
        bytemuck::bytes_of(&p),
        &[gy.bind(), a.bind(), b.bind(), g.bind()],
        groups_1d(n, WG),
    );
    Ok(g)
}

/// y += x, in place (gradient accumulation).
pub fn accumulate(y: &Tensor, x: &Tensor) -> Result<()> {
    if y.shape() != x.shape() {
        return Err(Error::shape("accumulate", format!("{:?} += {:?}", y.shape(), x.shape())));
    }
    let (entry, n) = flat_entry("accumulate", "accumulate4", x.numel());
    let p = Params { n: n as u32, ndim: 0, alpha: 0.0, beta: 0.0, shape: [0; 8], sa: [0; 8], sb: [0; 8] };
    x.device().dispatch(&SHADER, entry, &[], bytemuck::bytes_of(&p), &[x.bind(), y.bind()], groups_1d(n, WG));
    Ok(())
}

impl Var {
    /// y = f(x); local gradient f'(x).
    pub fn unary(&self, op: Unary) -> Result<Var> {
        let y = unary(self.value(), op)?;
        let x = self.value().clone();
        Ok(self.tape().op(y, &[self], move |gy| Ok(vec![Some(unary_backward(&x, gy, op)?)])))
    }
    pub fn neg(&self) -> Result<Var> {
        self.unary(Unary::Neg)
    }
    pub fn exp(&self) -> Result<Var> {
        self.unary(Unary::Exp)
    }
    pub fn log(&self) -> Result<Var> {
        self.unary(Unary::Log)
    }
    pub fn sqrt(&self) -> Result<Var> {
        self.unary(Unary::Sqrt)
    }
    pub fn relu(&self) -> Result<Var> {
        self.unary(Unary::Relu)
    }
    pub fn leaky_relu(&self, slope: f32) -> Result<Var> {
        self.unary(Unary::LeakyRelu(slope))
    }
    pub fn sigmoid(&self) -> Result<Var> {
        self.unary(Unary::Sigmoid)
    }
    pub fn tanh(&self) -> Result<Var> {
        self.unary(Unary::Tanh)
    }
    pub fn gelu(&self) -> Result<Var> {
        self.unary(Unary::Gelu)
    }
    /// `alpha * x + beta`
    pub fn affine(&self, alpha: f32, beta: f32) -> Result<Var> {
        self.unary(Unary::Affine(alpha, beta))
    }
    pub fn scale(&self, alpha: f32) -> Result<Var> {
        self.unary(Unary::Affine(alpha, 0.0))
    }
    pub fn powf(&self, e: f32) -> Result<Var> {
        self.unary(Unary::Powf(e))
    }

    /// y = a (op) b with broadcasting; each input's gradient is summed back to its own shape.
    pub fn binary(&self, other: &Var, op: Binary) -> Result<Var> {
        let (a, b) = (self.value().clone(), other.value().clone());
        let y = binary(&a, &b, op)?;
        Ok(self.tape().op(y, &[self, other], move |gy| {
            let local = |wrt_b: bool| -> Result<Tensor> {
                // d(a+b)/da = d(a+b)/db = d(a-b)/da = 1: the gradient passes through unchanged.
                let identity = matches!((op, wrt_b), (Binary::Add, _) | (Binary::Sub, false));
                let g = if identity { gy.clone() } else { binary_backward(gy, &a, &b, op, wrt_b)? };
                sum_to(&g, if wrt_b { b.shape() } else { a.shape() })
            };
            Ok(vec![Some(local(false)?), Some(local(true)?)])
        }))
    }
    pub fn add(&self, o: &Var) -> Result<Var> {
        self.binary(o, Binary::Add)
    }
    pub fn sub(&self, o: &Var) -> Result<Var> {
        self.binary(o, Binary::Sub)
    }
    pub fn mul(&self, o: &Var) -> Result<Var> {
        self.binary(o, Binary::Mul)
    }
    pub fn div(&self, o: &Var) -> Result<Var> {
        self.binary(o, Binary::Div)
    }
    pub fn pow(&self, o: &Var) -> Result<Var> {
        self.binary(o, Binary::Pow)
    }
}

/// f64 references of every elementwise op, on flat row-major data.
pub mod cpu {
    use super::{Binary, Unary};
    use crate::tensor::{broadcast_strides, strides};

    const SQRT_2_OVER_PI: f64 = 0.7978845608028654;

    fn powi_any(x: f64, e: f64) -> f64 {
        if x < 0.0 && e == e.round() {
            x.powi(e as i32)
        } else {
            x.powf(e)
        }
    }

    pub fn unary(op: Unary, x: f64) -> f64 {
        match op {
            Unary::Neg => -x,
            Unary::Exp => x.exp(),
            Unary::Log => x.ln(),
            Unary::Sqrt => x.sqrt(),
            Unary::Relu => x.max(0.0),
            Unary::LeakyRelu(a) => {
                if x > 0.0 {
                    x
                } else {
                    a as f64 * x
                }
            }
            Unary::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Unary::Tanh => x.tanh(),
            Unary::Gelu => 0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)).tanh()),
            Unary::Affine(a, b) => a as f64 * x + b as f64,
            Unary::Powf(e) => powi_any(x, e as f64),
        }
    }

    pub fn binary(op: Binary, a: f64, b: f64) -> f64 {
        match op {
            Binary::Add => a + b,
            Binary::Sub => a - b,
            Binary::Mul => a * b,
            Binary::Div => a / b,
            Binary::Pow => powi_any(a, b),
            Binary::BceLogits => a.max(0.0) - a * b + (1.0 + (-a.abs()).exp()).ln(),
        }
    }

    /// Broadcasting binary op over shapes; returns (values, output shape).
    pub fn binary_nd(op: Binary, a: &[f64], sa: &[usize], b: &[f64], sb: &[usize]) -> (Vec<f64>, Vec<usize>) {
        let out = crate::tensor::broadcast_shape("cpu", sa, sb).expect("shapes broadcast");
        let (ta, tb, to) = (broadcast_strides(sa, &out), broadcast_strides(sb, &out), strides(&out));
        let n: usize = out.iter().product();
        let v = (0..n)
            .map(|i| {
                let (mut oa, mut ob) = (0, 0);
                for d in 0..out.len() {
                    let idx = (i / to[d]) % out[d];
                    oa += idx * ta[d];
                    ob += idx * tb[d];
                }
                binary(op, a[oa], b[ob])
            })
            .collect();
        (v, out)
    }
}
