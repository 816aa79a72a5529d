//! Layout ops (`shaders/layout.wgsl`): permute/transpose, slice, concat and broadcast, all as one
//! strided-copy kernel; reshape is free (it shares the buffer).

use crate::autodiff::Var;
use crate::device::{groups_1d, WG};
use crate::error::{Error, Result};
use crate::ops::elementwise::MAX_DIMS;
use crate::ops::reduce::sum_to;
use crate::tensor::{broadcast_strides, collapse_dims, numel, strides, Tensor};

crate::shader!(SHADER = "layout");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    ndim: u32,
    src_off: u32,
    dst_off: u32,
    shape: [u32; MAX_DIMS],
    ss: [u32; MAX_DIMS],
    ds: [u32; MAX_DIMS],
}

/// Records `dst[dst_off + i.ds] = src[src_off + i.ss]` for every index i of `shape`.
#[allow(clippy::too_many_arguments)]
fn copy_strided(
    op: &'static str,
    src: &Tensor,
    src_off: usize,
    ss: &[usize],
    shape: &[usize],
    dst: &Tensor,
    dst_off: usize,
    ds: &[usize],
) -> Result<()> {
    if shape.len() > MAX_DIMS {
        return Err(Error::shape(op, format!("at most {MAX_DIMS} dimensions, got {shape:?}")));
    }
    // Dims both sides walk as one are merged: fewer divisions per element in the kernel.
    let (dims, ss, ds) = collapse_dims(shape, ss, ds);
    let mut p = Params {
        n: numel(shape) as u32,
        ndim: dims.len() as u32,
        src_off: src_off as u32,
        dst_off: dst_off as u32,
        shape: [0; 8],
        ss: [0; 8],
        ds: [0; 8],
    };
    for d in 0..dims.len() {
        p.shape[d] = dims[d] as u32;
        p.ss[d] = ss[d] as u32;
        p.ds[d] = ds[d] as u32;
    }
    // Runs of 4 along an innermost dim that both sides store contiguously; whole vec4s where
    // every offset and outer stride is a multiple of 4 too (the copy then counts in vec4s).
    let last = dims.len() - 1;
    let run = if ss[last] == 1 && ds[last] == 1 && dims[last].is_multiple_of(4) { 4 } else { 1 };
    let aligned = run == 4
        && src_off.is_multiple_of(4)
        && dst_off.is_multiple_of(4)
        && ss[..last].iter().chain(&ds[..last]).all(|s| s.is_multiple_of(4));
    if aligned {
        p.n /= 4;
        p.src_off /= 4;
        p.dst_off /= 4;
        p.shape[last] /= 4;
        for d in 0..last {
            p.ss[d] /= 4;
            p.ds[d] /= 4;
        }
    }
    let ndim = ("NDIM", dims.len() as f64);
    let (entry, constants) =
        if aligned { ("copy_strided4", vec![ndim]) } else { ("copy_strided", vec![("RUN", run as f64), ndim]) };
    src.device().dispatch(
        &SHADER,
        entry,
        &constants,
        bytemuck::bytes_of(&p),
        &[src.bind(), dst.bind()],
        groups_1d(numel(shape) / run, WG),
    );
    Ok(())
}

/// Copies `src` into `dst` (same number of elements) with the GPU's copy engine.
pub fn copy_buffer(src: &Tensor, dst: &Tensor) -> Result<()> {
    if src.numel() != dst.numel() || src.dtype() != dst.dtype() {
        return Err(Error::shape("copy_buffer", format!("{src:?} into {dst:?}")));
    }
    src.device().copy(src.buffer(), 0, dst.buffer(), 0, src.bytes());
    Ok(())
}

/// Reorders dimensions: output dim d is input dim `perm[d]`.
pub fn permute(x: &Tensor, perm: &[usize]) -> Result<Tensor> {
    let n = x.dims();
    let mut seen = vec![false; n];
    if perm.len() != n || perm.iter().any(|&p| p >= n || std::mem::replace(&mut seen[p], true)) {
        return Err(Error::shape("permute", format!("{perm:?} is not a permutation of the dims of {:?}", x.shape())));
    }
    let st = strides(x.shape());
    let shape: Vec<usize> = perm.iter().map(|&p| x.shape()[p]).collect();
    let ss: Vec<usize> = perm.iter().map(|&p| st[p]).collect();
    let y = Tensor::empty(x.device(), "permute", &shape, x.dtype())?;
    copy_strided("permute", x, 0, &ss, &shape, &y, 0, &strides(&shape))?;
    Ok(y)
}

/// Swaps two dimensions.
pub fn transpose(x: &Tensor, a: usize, b: usize) -> Result<Tensor> {
    if a >= x.dims() || b >= x.dims() {
        return Err(Error::shape("transpose", format!("dims {a}, {b} out of range for {:?}", x.shape())));
    }
    let mut perm: Vec<usize> = (0..x.dims()).collect();
    perm.swap(a, b);
    permute(x, &perm)
}

/// Elements `start..end` of `axis`.
pub fn slice(x: &Tensor, axis: usize, start: usize, end: usize) -> Result<Tensor> {
    if axis >= x.dims() || start > end || end > x.shape()[axis] {
        return Err(Error::shape("slice", format!("range {start}..{end} on axis {axis} of {:?}", x.shape())));
    }
    let mut shape = x.shape().to_vec();
    shape[axis] = end - start;
    let st = strides(x.shape());
    let y = Tensor::empty(x.device(), "slice", &shape, x.dtype())?;
    copy_strided("slice", x, start * st[axis], &st, &shape, &y, 0, &strides(&shape))?;
    Ok(y)
}

/// Part `part` of `parts` equal column blocks of `x [N, L, parts * d]`, split into `heads` heads:
/// `[N, heads, L, d / heads]` (attention's q, k or v from a fused projection), one strided copy
/// where a slice, a reshape and a permute took two.
pub fn split_heads(x: &Tensor, part: usize, parts: usize, heads: usize) -> Result<Tensor> {
    let (n, l, dh) = heads_shape("split_heads", x.shape(), part, parts, heads)?;
    let cols = x.shape()[2];
    let y = Tensor::empty(x.device(), "split_heads", &[n, heads, l, dh], x.dtype())?;
    let shape = [n, heads, l, dh];
    copy_strided("split_heads", x, part * heads * dh, &[l * cols, dh, cols, 1], &shape, &y, 0, &strides(&shape))?;
    Ok(y)
}

/// The gradient of [`split_heads`]: `g [N, heads, L, dh]` written into zeros of `[N, L, parts * d]`
/// at part `part`'s columns.
pub fn merge_heads_into_part(g: &Tensor, part: usize, parts: usize) -> Result<Tensor> {
    let &[n, heads, l, dh] = g.shape() else {
        return Err(Error::shape("split_heads", format!("gradient must be [N, heads, L, dh], got {:?}", g.shape())));
    };
    let cols = parts * heads * dh;
    let y = Tensor::zeros(g.device(), &[n, l, cols])?;
    copy_strided("split_heads", g, 0, &strides(g.shape()), g.shape(), &y, part * heads * dh, &[l * cols, dh, cols, 1])?;
    Ok(y)
}

fn heads_shape(
    op: &'static str,
    s: &[usize],
    part: usize,
    parts: usize,
    heads: usize,
) -> Result<(usize, usize, usize)> {
    match *s {
        [n, l, c] if parts > 0 && heads > 0 && part < parts && c % (parts * heads) == 0 => {
            Ok((n, l, c / (parts * heads)))
        }
        _ => Err(Error::shape(
            op,
            format!(
                "part {part} of {parts}, {heads} heads: needs [N, L, C] with C a multiple of {}, got {s:?}",
                parts * heads
            ),
        )),
    }
}

/// Zeros of `shape` with `x` written at `start..` of `axis` (the gradient of `slice`).
pub fn pad_axis(x: &Tensor, shape: &[usize], axis: usize, start: usize) -> Result<Tensor> {
    // Padding only the last axis to whole vec4s: one pass (the conv and atom kernels' operands).
    let rows = match (x.shape().split_last(), shape.split_last()) {
        (Some((&len, outer)), Some((&to, to_outer))) => {
            axis == shape.len() - 1 && outer == to_outer && to.is_multiple_of(4) && len > 0 && start + len <= to
        }
        _ => false,
    };
    if rows && x.numel() > 0 {
        return pad_rows(x, shape, start);
    }
    let y = Tensor::zeros(x.device(), shape)?;
    let st = strides(shape);
    copy_strided("pad_axis", x, 0, &strides(x.shape()), x.shape(), &y, start * st[axis], &st)?;
    Ok(y)
}

/// [`pad_axis`] along the last axis to whole vec4 rows: one pass that writes every element of the
/// result (the general path clears it, then copies).
fn pad_rows(x: &Tensor, shape: &[usize], start: usize) -> Result<Tensor> {
    let y = Tensor::empty(x.device(), "pad_axis", shape, x.dtype())?;
    let len = *x.shape().last().expect("rows_only: at least one dim");
    let vecs = shape[shape.len() - 1] / 4;
    let n = numel(shape) / 4;
    let mut p = Params { n: n as u32, ndim: 0, src_off: 0, dst_off: 0, shape: [0; 8], ss: [0; 8], ds: [0; 8] };
    p.shape[..3].copy_from_slice(&[len as u32, vecs as u32, start as u32]);
    x.device().dispatch(&SHADER, "pad_rows", &[], bytemuck::bytes_of(&p), &[x.bind(), y.bind()], groups_1d(n, WG));
    Ok(y)
}

/// `x` with its last axis zero-padded to a multiple of `k` (`x` itself where it already is one):
/// rows of whole vec4s for the kernels that read them so (k = 4).
pub fn pad_last_to(x: &Tensor, k: usize) -> Result<Tensor> {
    let Some(&last) = x.shape().last() else { return Ok(x.clone()) };
    if last.is_multiple_of(k) {
        return Ok(x.clone());
    }
    let mut shape = x.shape().to_vec();
    *shape.last_mut().expect("not empty") = last.next_multiple_of(k);
    pad_axis(x, &shape, shape.len() - 1, 0)
}

/// Joins tensors along `axis`; all other dimensions must agree.
pub fn concat(xs: &[&Tensor], axis: usize) -> Result<Tensor> {
    let first = xs.first().ok_or_else(|| Error::shape("concat", "no tensors to join"))?;
    let mut shape = first.shape().to_vec();
    if axis >= shape.len() {
        return Err(Error::shape("concat", format!("axis {axis} out of range for {shape:?}")));
    }
    shape[axis] = 0;
    for x in xs {
        let ok = x.dims() == first.dims()
            && (0..x.dims()).all(|d| d == axis || x.shape()[d] == first.shape()[d])
            && x.dtype() == first.dtype();
        if !ok {
            return Err(Error::shape(
                "concat",
                format!("{:?} and {:?} differ outside axis {axis}", first.shape(), x.shape()),
            ));
        }
        shape[axis] += x.shape()[axis];
    }
    let y = Tensor::empty(first.device(), "concat", &shape, first.dtype())?;
    let st = strides(&shape);
    let mut at = 0;
    for x in xs {
        copy_strided("concat", x, 0, &strides(x.shape()), x.shape(), &y, at * st[axis], &st)?;
        at += x.shape()[axis];
    }
    Ok(y)
}

/// Repeats `x` along broadcast dimensions to `shape` (numpy rules).
pub fn broadcast_to(x: &Tensor, shape: &[usize]) -> Result<Tensor> {
    let out = crate::tensor::broadcast_shape("broadcast_to", x.shape(), shape)?;
    if out != shape {
        return Err(Error::shape("broadcast_to", format!("{:?} does not broadcast to {shape:?}", x.shape())));
    }
    if x.shape() == shape {
        return Ok(x.clone());
    }
    let y = Tensor::empty(x.device(), "broadcast_to", shape, x.dtype())?;
    copy_strided("broadcast_to", x, 0, &broadcast_strides(x.shape(), shape), shape, &y, 0, &strides(shape))?;
    Ok(y)
}

impl Var {
    /// Same data, new shape; gradient reshaped back.
    pub fn reshape(&self, shape: &[usize]) -> Result<Var> {
        let y = self.value().reshape(shape)?;
        let old = self.shape().to_vec();
        Ok(self.tape().op(y, &[self], move |gy| Ok(vec![Some(gy.reshape(&old)?)])))
    }
    /// [`split_heads`]; gradient: the incoming one written into part `part`'s columns of zeros.
    pub fn split_heads(&self, part: usize, parts: usize, heads: usize) -> Result<Var> {
        let y = split_heads(self.value(), part, parts, heads)?;
        Ok(self.tape().op(y, &[self], move |gy| Ok(vec![Some(merge_heads_into_part(gy, part, parts)?)])))
    }
    /// Gradient: the inverse permutation.
    pub fn permute(&self, perm: &[usize]) -> Result<Var> {
        let y = permute(self.value(), perm)?;
        let mut inv = vec![0; perm.len()];
        for (i, &p) in perm.iter().enumerate() {
            inv[p] = i;
        }
        Ok(self.tape().op(y, &[self], move |gy| Ok(vec![Some(permute(gy, &inv)?)])))
    }
    pub fn transpose(&self, a: usize, b: usize) -> Result<Var> {
        let mut perm: Vec<usize> = (0..self.shape().len()).collect();
        if a >= perm.len() || b >= perm.len() {
            return Err(Error::shape("transpose", format!("dims {a}, {b} out of range for {:?}", self.shape())));
        }
        perm.swap(a, b);
        self.permute(&perm)
    }
    /// Gradient: zeros with the incoming gradient in the sliced region.
    pub fn slice(&self, axis: usize, start: usize, end: usize) -> Result<Var> {
        let y = slice(self.value(), axis, start, end)?;
        let shape = self.shape().to_vec();
        Ok(self.tape().op(y, &[self], move |gy| Ok(vec![Some(pad_axis(gy, &shape, axis, start)?)])))
    }
    /// Gradient: the slice of the incoming gradient that each input filled.
    pub fn concat(xs: &[&Var], axis: usize) -> Result<Var> {
        let first = xs.first().ok_or_else(|| Error::shape("concat", "no tensors to join"))?;
        let vals: Vec<&Tensor> = xs.iter().map(|v| v.value()).collect();
        let y = concat(&vals, axis)?;
        let sizes: Vec<usize> = xs.iter().map(|v| v.shape()[axis]).collect();
        Ok(first.tape().op(y, xs, move |gy| {
            let mut at = 0;
            let mut out = Vec::with_capacity(sizes.len());
            for s in &sizes {
                out.push(Some(slice(gy, axis, at, at + s)?));
                at += s;
            }
            Ok(out)
        }))
    }
    /// Gradient: summed over the broadcast dimensions.
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Var> {
        let y = broadcast_to(self.value(), shape)?;
        let old = self.shape().to_vec();
        Ok(self.tape().op(y, &[self], move |gy| Ok(vec![Some(sum_to(gy, &old)?)])))
    }
}

/// f64 references.
pub mod cpu {
    use crate::tensor::strides;

    pub fn permute(x: &[f64], shape: &[usize], perm: &[usize]) -> (Vec<f64>, Vec<usize>) {
        let st = strides(shape);
        let out: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
        let ost = strides(&out);
        let n: usize = out.iter().product();
        let v = (0..n)
            .map(|i| {
                let off: usize = (0..out.len()).map(|d| ((i / ost[d]) % out[d]) * st[perm[d]]).sum();
                x[off]
            })
            .collect();
        (v, out)
    }

    pub fn slice(x: &[f64], shape: &[usize], axis: usize, start: usize, end: usize) -> Vec<f64> {
        let outer: usize = shape[..axis].iter().product();
        let inner: usize = shape[axis + 1..].iter().product();
        let mut y = Vec::new();
        for o in 0..outer {
            y.extend_from_slice(&x[(o * shape[axis] + start) * inner..(o * shape[axis] + end) * inner]);
        }
        y
    }
}
