//! Reductions over one axis (`shaders/reduce.wgsl`): sum, mean, sum of squares, max, argmax,
//! and `sum_to` (summing a broadcast gradient back to an operand's shape), in one of three
//! [`Form`]s: one invocation per output, a team of 32 per output, or a tree over chunks.

use crate::autodiff::Var;
use crate::device::{groups_1d, AdapterClass, WG};
use crate::error::{Error, Result};
use crate::ops::layout::broadcast_to;
use crate::tensor::{DType, Tensor};

crate::shader!(SHADER = "reduce");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    outer: u32,
    len: u32,
    inner: u32,
    chunk: u32,
    scale: f32,
    n: u32,
    chunks: u32,
    _pad: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduce {
    Sum,
    Mean,
    Max,
    SumSq,
}

/// Outputs at or above this count use one invocation per output.
const ROWS_MIN_OUTPUTS: usize = 512;
/// On CPU adapters axes up to this long also use one invocation per output: the tree pass's
/// workgroup barriers cost lavapipe far more than such a loop (docs/PERFORMANCE.md).
const CPU_ROWS_MAX_LEN: usize = 4096;
/// Shortest contiguous axis the team form takes on GPUs (as the softmax teams).
const TEAM_MIN_LEN: usize = 64;
/// Axis elements per workgroup of the tree pass.
const TREE_CHUNK: usize = 256 * 64;

fn split(op: &'static str, shape: &[usize], axis: usize) -> Result<(usize, usize, usize)> {
    if axis >= shape.len() {
        return Err(Error::shape(op, format!("axis {axis} out of range for shape {shape:?}")));
    }
    Ok((shape[..axis].iter().product(), shape[axis], shape[axis + 1..].iter().product()))
}

fn out_shape(shape: &[usize], axis: usize, keepdim: bool) -> Vec<usize> {
    let mut s = shape.to_vec();
    if keepdim {
        s[axis] = 1;
    } else {
        s.remove(axis);
    }
    s
}

fn code(op: Reduce) -> f64 {
    match op {
        Reduce::Sum | Reduce::Mean => 0.0,
        Reduce::Max => 1.0,
        Reduce::SumSq => 2.0,
    }
}

/// How [`reduce`] walks the axis of `[outer, len, inner]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// One invocation per output loops over the axis: many outputs, short axes, and on CPU
    /// adapters any axis up to 4,096 long (no barriers).
    Rows,
    /// 32 invocations per output read a contiguous axis (`inner == 1`) coalesced and merge in a
    /// fixed tree: GPUs, axes of 64 or more where `Rows` would be picked (the CNN's bias
    /// gradients over H W).
    Team,
    /// Few outputs over a long axis: one workgroup per chunk of 16,384 elements with a
    /// shared-memory tree, then `Rows` over the chunks.
    Tree,
}

impl Form {
    /// The form for this adapter and shape.
    pub fn for_device(class: AdapterClass, outputs: usize, len: usize, inner: usize) -> Form {
        let cpu_rows = class == AdapterClass::Cpu && len <= CPU_ROWS_MAX_LEN;
        if !(outputs >= ROWS_MIN_OUTPUTS || len <= 256 || cpu_rows) {
            Form::Tree
        } else if class == AdapterClass::Gpu && inner == 1 && len >= TEAM_MIN_LEN {
            Form::Team
        } else {
            Form::Rows
        }
    }
}

/// Reduces `x` over `axis` in the adapter's [`Form`].
pub fn reduce(x: &Tensor, axis: usize, op: Reduce, keepdim: bool) -> Result<Tensor> {
    let (outer, len, inner) = split("reduce", x.shape(), axis)?;
    reduce_with(Form::for_device(x.device().class(), outer * inner, len, inner), x, axis, op, keepdim)
}

/// As [`reduce`] in the given form (`Team` needs `axis` to be the last non-1 dim).
pub fn reduce_with(form: Form, x: &Tensor, axis: usize, op: Reduce, keepdim: bool) -> Result<Tensor> {
    x.expect("reduce", DType::F32)?;
    let (outer, len, inner) = split("reduce", x.shape(), axis)?;
    if len == 0 {
        return Err(Error::shape("reduce", format!("cannot reduce an empty axis of {:?}", x.shape())));
    }
    if form == Form::Team && inner != 1 {
        return Err(Error::shape(
            "reduce",
            format!("the team form needs a contiguous axis: axis {axis} of {:?} is not", x.shape()),
        ));
    }
    let dev = x.device();
    let scale = if op == Reduce::Mean { 1.0 / len as f32 } else { 1.0 };
    let outputs = outer * inner;
    let y = Tensor::empty(dev, "reduce", &out_shape(x.shape(), axis, keepdim), DType::F32)?;
    let constants = [("OP", code(op))];
    if form != Form::Tree {
        let p = Params {
            outer: outer as u32,
            len: len as u32,
            inner: inner as u32,
            chunk: 0,
            scale,
            n: outputs as u32,
            chunks: 1,
            _pad: 0,
        };
        // Rows: one invocation per output; Team: 8 outputs of 32 lanes per workgroup.
        let (entry, per_group) = if form == Form::Team { ("reduce_team", WG / 32) } else { ("reduce_rows", WG) };
        dev.dispatch(
            &SHADER,
            entry,
            &constants,
            bytemuck::bytes_of(&p),
            &[x.bind(), y.bind()],
            groups_1d(outputs, per_group),
        );
        return Ok(y);
    }
    let chunks = len.div_ceil(TREE_CHUNK);
    let target =
        if chunks == 1 { y.clone() } else { Tensor::empty(dev, "reduce", &[outer, chunks, inner], DType::F32)? };
    let p = Params {
        outer: outer as u32,
        len: len as u32,
        inner: inner as u32,
        chunk: TREE_CHUNK as u32,
        scale,
        n: (outputs * chunks) as u32,
        chunks: chunks as u32,
        _pad: 0,
    };
    dev.dispatch(
        &SHADER,
        "reduce_tree",
        &constants,
        bytemuck::bytes_of(&p),
        &[x.bind(), target.bind()],
        groups_1d(outputs * chunks, 1),
    );
    if chunks == 1 {
        return Ok(y);
    }
    // Second pass over the partials: squares were already squared, so combine them as a sum.
    let second = if op == Reduce::SumSq { Reduce::Sum } else { op };
    let p = Params {
        outer: outer as u32,
        len: chunks as u32,
        inner: inner as u32,
        chunk: 0,
        scale,
        n: outputs as u32,
        chunks: 1,
        _pad: 0,
    };
    dev.dispatch(
        &SHADER,
        "reduce_rows",
        &[("OP", code(second))],
        bytemuck::bytes_of(&p),
        &[target.bind(), y.bind()],
        groups_1d(outputs, WG),
    );
    Ok(y)
}

/// Index of the largest element along `axis` (first on ties), as a U32 tensor.
pub fn argmax(x: &Tensor, axis: usize, keepdim: bool) -> Result<Tensor> {
    x.expect("argmax", DType::F32)?;
    let (outer, len, inner) = split("argmax", x.shape(), axis)?;
    if len == 0 {
        return Err(Error::shape("argmax", format!("empty axis in {:?}", x.shape())));
    }
    let dev = x.device();
    let y = Tensor::empty(dev, "argmax", &out_shape(x.shape(), axis, keepdim), DType::U32)?;
    let p = Params {
        outer: outer as u32,
        len: len as u32,
        inner: inner as u32,
        chunk: 0,
        scale: 1.0,
        n: (outer * inner) as u32,
        chunks: 1,
        _pad: 0,
    };
    dev.dispatch(
        &SHADER,
        "argmax_rows",
        &[],
        bytemuck::bytes_of(&p),
        &[x.bind(), y.bind()],
        groups_1d(outer * inner, WG),
    );
    Ok(y)
}

/// Routes `gy` to the argmax positions of a max over `axis` of a tensor of `shape`.
pub fn max_backward(gy: &Tensor, idx: &Tensor, shape: &[usize], axis: usize) -> Result<Tensor> {
    let (outer, len, inner) = split("max_backward", shape, axis)?;
    let dev = gy.device();
    let gx = Tensor::empty(dev, "max_backward", shape, DType::F32)?;
    let n = outer * len * inner;
    let p = Params {
        outer: outer as u32,
        len: len as u32,
        inner: inner as u32,
        chunk: 0,
        scale: 1.0,
        n: n as u32,
        chunks: 1,
        _pad: 0,
    };
    dev.dispatch(
        &SHADER,
        "max_backward",
        &[],
        bytemuck::bytes_of(&p),
        &[gy.bind(), idx.bind(), gx.bind()],
        groups_1d(n, WG),
    );
    Ok(gx)
}

/// Sums `g` over the dimensions that broadcasting added or stretched, giving `shape`. Neighbouring
/// summed dims (size-1 dims between them aside) are one axis of a reshaped view, so a bias over
/// [B, T, D] takes one reduction of B T rows, not two.
pub fn sum_to(g: &Tensor, shape: &[usize]) -> Result<Tensor> {
    if g.shape() == shape {
        return Ok(g.clone());
    }
    let gs = g.shape().to_vec();
    if shape.len() > gs.len() {
        return Err(Error::shape("sum_to", format!("cannot sum {gs:?} to the larger rank {shape:?}")));
    }
    let off = gs.len() - shape.len();
    // The view: (extent, summed) per group of dims, size-1 dims dropped.
    let mut view: Vec<(usize, bool)> = Vec::new();
    for (d, &n) in gs.iter().enumerate() {
        let target = if d < off { 1 } else { shape[d - off] };
        if target != n && target != 1 {
            return Err(Error::shape("sum_to", format!("cannot sum {gs:?} to {shape:?}")));
        }
        if n == 1 {
            continue;
        }
        let summed = target != n;
        match view.last_mut() {
            Some(last) if last.1 && summed => last.0 *= n,
            _ => view.push((n, summed)),
        }
    }
    let mut t = g.reshape(&view.iter().map(|v| v.0).collect::<Vec<_>>())?;
    for (axis, _) in view.iter().enumerate().rev().filter(|(_, v)| v.1) {
        t = reduce(&t, axis, Reduce::Sum, true)?;
    }
    t.reshape(shape)
}

impl Var {
    /// Sum over `axis`; local gradient 1 (the gradient is broadcast back).
    pub fn sum(&self, axis: usize, keepdim: bool) -> Result<Var> {
        self.reduce_linear(axis, keepdim, Reduce::Sum)
    }
    /// Mean over `axis`; local gradient 1/len.
    pub fn mean(&self, axis: usize, keepdim: bool) -> Result<Var> {
        self.reduce_linear(axis, keepdim, Reduce::Mean)
    }
    /// Sum of every element, as a scalar of shape [].
    pub fn sum_all(&self) -> Result<Var> {
        self.reshape(&[self.value().numel()])?.sum(0, false)
    }
    /// Mean of every element, as a scalar of shape [].
    pub fn mean_all(&self) -> Result<Var> {
        self.reshape(&[self.value().numel()])?.mean(0, false)
    }

    fn reduce_linear(&self, axis: usize, keepdim: bool, op: Reduce) -> Result<Var> {
        let y = reduce(self.value(), axis, op, keepdim)?;
        let shape = self.shape().to_vec();
        Ok(self.tape().op(y, &[self], move |gy| {
            let mut kept = shape.clone();
            kept[axis] = 1;
            let g = broadcast_to(&gy.reshape(&kept)?, &shape)?;
            let g = if op == Reduce::Mean {
                crate::ops::elementwise::unary(
                    &g,
                    crate::ops::elementwise::Unary::Affine(1.0 / shape[axis] as f32, 0.0),
                )?
            } else {
                g
            };
            Ok(vec![Some(g)])
        }))
    }

    /// Max over `axis`; the gradient goes to the (first) largest element.
    pub fn max(&self, axis: usize, keepdim: bool) -> Result<Var> {
        let y = reduce(self.value(), axis, Reduce::Max, keepdim)?;
        let idx = argmax(self.value(), axis, keepdim)?;
        let shape = self.shape().to_vec();
        Ok(self.tape().op(y, &[self], move |gy| Ok(vec![Some(max_backward(gy, &idx, &shape, axis)?)])))
    }
}

/// f64 references.
pub mod cpu {
    use super::Reduce;

    /// Reduces `x` of `shape` over `axis` (axis removed from the result).
    pub fn reduce(x: &[f64], shape: &[usize], axis: usize, op: Reduce) -> Vec<f64> {
        let outer: usize = shape[..axis].iter().product();
        let len = shape[axis];
        let inner: usize = shape[axis + 1..].iter().product();
        let mut y = Vec::with_capacity(outer * inner);
        for o in 0..outer {
            for i in 0..inner {
                let it = (0..len).map(|l| x[(o * len + l) * inner + i]);
                y.push(match op {
                    Reduce::Sum => it.sum(),
                    Reduce::Mean => it.sum::<f64>() / len as f64,
                    Reduce::SumSq => it.map(|v| v * v).sum(),
                    Reduce::Max => it.fold(f64::NEG_INFINITY, f64::max),
                });
            }
        }
        y
    }

    pub fn argmax(x: &[f64], shape: &[usize], axis: usize) -> Vec<u32> {
        let outer: usize = shape[..axis].iter().product();
        let len = shape[axis];
        let inner: usize = shape[axis + 1..].iter().product();
        let mut y = Vec::with_capacity(outer * inner);
        for o in 0..outer {
            for i in 0..inner {
                let mut best = 0;
                for l in 1..len {
                    if x[(o * len + l) * inner + i] > x[(o * len + best) * inner + i] {
                        best = l;
                    }
                }
                y.push(best as u32);
            }
        }
        y
    }
}
