//! Tensors: a contiguous row-major buffer on the GPU plus a shape. Reshape shares the buffer;
//! every other layout change (permute, slice, concat, broadcast) is a copy kernel in `ops::layout`.

use crate::device::Device;
use crate::error::{Error, Result};
use std::fmt;
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    F32,
    /// Labels, token ids, argmax indices.
    U32,
}

/// Owns one pool buffer; hands it back to the pool on drop.
pub(crate) struct Storage {
    buf: Option<wgpu::Buffer>,
    class: u64,
    pub(crate) dev: Device,
}

impl Drop for Storage {
    fn drop(&mut self) {
        if let Some(b) = self.buf.take() {
            self.dev.release(self.class, b);
        }
    }
}

/// A row-major array of `f32` or `u32` ([`DType`]) in a GPU storage buffer, with its shape.
///
/// Cloning and [`Tensor::reshape`] share the buffer (a view of the same data); every other
/// layout change is a copy kernel. Tensors are made from host data ([`Tensor::from_slice`],
/// [`Tensor::from_u32`]), filled ([`Tensor::zeros`], [`Tensor::full`], `rand_uniform`), or
/// returned by ops; reading one back ([`Tensor::to_vec`], [`Tensor::item`]) submits the pending
/// work and waits. A dropped tensor's buffer returns to the device's pool and is reused by the
/// next allocation of its size class, after the commands that may still read it are submitted.
/// Tensors carry no gradient: put them on a [`crate::Tape`] as [`crate::Var`]s for that.
#[derive(Clone)]
pub struct Tensor {
    storage: Arc<Storage>,
    shape: Vec<usize>,
    dtype: DType,
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor({:?}, {:?})", self.dtype, self.shape)
    }
}

pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

impl Tensor {
    /// An uninitialised tensor: every kernel that returns one writes all of it.
    pub(crate) fn empty(dev: &Device, op: &'static str, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let bytes = (numel(shape) * 4) as u64;
        let (buf, class) = dev.alloc(op, bytes)?;
        Ok(Tensor {
            storage: Arc::new(Storage { buf: Some(buf), class, dev: dev.clone() }),
            shape: shape.to_vec(),
            dtype,
        })
    }

    /// A tensor whose contents are whatever its pooled buffer last held: for kernels that write
    /// every element (a user kernel's output, [`crate::kernel`]).
    pub fn uninit(dev: &Device, shape: &[usize], dtype: DType) -> Result<Tensor> {
        Tensor::empty(dev, "uninit", shape, dtype)
    }

    pub fn zeros(dev: &Device, shape: &[usize]) -> Result<Tensor> {
        let t = Tensor::empty(dev, "zeros", shape, DType::F32)?;
        dev.clear(t.buffer(), t.bytes());
        Ok(t)
    }

    pub fn from_slice(dev: &Device, data: &[f32], shape: &[usize]) -> Result<Tensor> {
        if data.len() != numel(shape) {
            return Err(Error::shape(
                "from_slice",
                format!("{} values do not fill shape {shape:?} ({} elements)", data.len(), numel(shape)),
            ));
        }
        let t = Tensor::empty(dev, "from_slice", shape, DType::F32)?;
        dev.upload(t.buffer(), bytemuck::cast_slice(data));
        Ok(t)
    }

    pub fn from_u32(dev: &Device, data: &[u32], shape: &[usize]) -> Result<Tensor> {
        if data.len() != numel(shape) {
            return Err(Error::shape(
                "from_u32",
                format!("{} values do not fill shape {shape:?} ({} elements)", data.len(), numel(shape)),
            ));
        }
        let t = Tensor::empty(dev, "from_u32", shape, DType::U32)?;
        dev.upload(t.buffer(), bytemuck::cast_slice(data));
        Ok(t)
    }

    pub fn scalar(dev: &Device, v: f32) -> Result<Tensor> {
        Tensor::from_slice(dev, &[v], &[])
    }

    pub fn full(dev: &Device, shape: &[usize], v: f32) -> Result<Tensor> {
        Tensor::from_slice(dev, &vec![v; numel(shape)], shape)
    }

    /// Reads the tensor back (submits pending work and waits).
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        if self.dtype != DType::F32 {
            return Err(Error::shape("to_vec", format!("tensor is {:?}, use to_vec_u32", self.dtype)));
        }
        let bytes = self.device().read(self.buffer(), self.bytes())?;
        Ok(bytemuck::cast_slice(&bytes).to_vec())
    }

    pub fn to_vec_u32(&self) -> Result<Vec<u32>> {
        if self.dtype != DType::U32 {
            return Err(Error::shape("to_vec_u32", format!("tensor is {:?}, use to_vec", self.dtype)));
        }
        let bytes = self.device().read(self.buffer(), self.bytes())?;
        Ok(bytemuck::cast_slice(&bytes).to_vec())
    }

    /// Reads a one-element tensor.
    pub fn item(&self) -> Result<f32> {
        let v = self.to_vec()?;
        if v.len() != 1 {
            return Err(Error::shape("item", format!("tensor of shape {:?} is not a scalar", self.shape)));
        }
        Ok(v[0])
    }

    /// Overwrites the contents from the host (used for checkpoint loading): flushes first so that
    /// the write cannot overtake pending commands that read the old contents.
    pub fn write(&self, data: &[f32]) -> Result<()> {
        if data.len() != self.numel() || self.dtype != DType::F32 {
            return Err(Error::shape("write", format!("{} values into {:?}", data.len(), self)));
        }
        self.device().flush()?;
        self.device().upload(self.buffer(), bytemuck::cast_slice(data));
        Ok(())
    }

    /// [`Tensor::write`] for U32 tensors.
    pub fn write_u32(&self, data: &[u32]) -> Result<()> {
        if data.len() != self.numel() || self.dtype != DType::U32 {
            return Err(Error::shape("write_u32", format!("{} values into {:?}", data.len(), self)));
        }
        self.device().flush()?;
        self.device().upload(self.buffer(), bytemuck::cast_slice(data));
        Ok(())
    }

    /// A view of the same buffer with another shape of equal size.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if numel(shape) != self.numel() {
            return Err(Error::shape("reshape", format!("cannot reshape {:?} to {shape:?}", self.shape)));
        }
        Ok(Tensor { storage: self.storage.clone(), shape: shape.to_vec(), dtype: self.dtype })
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn dims(&self) -> usize {
        self.shape.len()
    }
    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    pub fn device(&self) -> &Device {
        &self.storage.dev
    }
    pub(crate) fn buffer(&self) -> &wgpu::Buffer {
        self.storage.buf.as_ref().unwrap()
    }
    pub(crate) fn bytes(&self) -> u64 {
        (self.numel() * 4) as u64
    }
    /// `(buffer, bytes)` as `Device::dispatch` binds it.
    pub(crate) fn bind(&self) -> (&wgpu::Buffer, u64) {
        (self.buffer(), self.bytes())
    }
    /// True when both tensors share one buffer.
    pub fn same_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.storage, &other.storage)
    }
    /// True when no other tensor shares this buffer (in-place updates are then safe).
    pub(crate) fn is_unique(&self) -> bool {
        Arc::strong_count(&self.storage) == 1
    }
    /// Checks the dtype an op needs.
    pub(crate) fn expect(&self, op: &'static str, dtype: DType) -> Result<()> {
        if self.dtype != dtype {
            return Err(Error::shape(op, format!("expected a {dtype:?} tensor, got {self:?}")));
        }
        Ok(())
    }
}

/// Row-major strides of a shape.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// The numpy broadcast of two shapes, or an error naming the op and both shapes.
pub fn broadcast_shape(op: &'static str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i + a.len() >= n { a[i + a.len() - n] } else { 1 };
        let db = if i + b.len() >= n { b[i + b.len() - n] } else { 1 };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return Err(Error::shape(op, format!("shapes {a:?} and {b:?} do not broadcast")));
        };
    }
    Ok(out)
}

/// Strides for reading a tensor of `shape` as if it had the broadcast shape `out` (0 on
/// broadcast dimensions).
pub fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let st = strides(shape);
    let off = out.len() - shape.len();
    (0..out.len()).map(|i| if i < off || shape[i - off] == 1 { 0 } else { st[i - off] }).collect()
}

/// Merges neighbouring dims of `shape` that both stride lists `sa`, `sb` step through as one
/// (size-1 dims dropped), so a kernel's per-element index arithmetic runs over fewer dims: a
/// same-shape elementwise op or a contiguous copy becomes one flat dim, a bias over
/// [N, C, H, W] three. Every element keeps its offsets.
pub(crate) fn collapse_dims(shape: &[usize], sa: &[usize], sb: &[usize]) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
    let mut dims: Vec<(usize, usize, usize)> = Vec::with_capacity(shape.len());
    for ((&n, &a), &b) in shape.iter().zip(sa).zip(sb) {
        if n == 1 {
            continue;
        }
        match dims.last_mut() {
            // the outer dim steps n times this one in both operands: one dim of size outer * n
            Some(last) if last.1 == a * n && last.2 == b * n => *last = (last.0 * n, a, b),
            _ => dims.push((n, a, b)),
        }
    }
    if dims.is_empty() {
        dims.push((1, 0, 0));
    }
    (dims.iter().map(|d| d.0).collect(), dims.iter().map(|d| d.1).collect(), dims.iter().map(|d| d.2).collect())
}
