//! Embedding lookup (`shaders/embedding.wgsl`): rows of a table `[V, D]` gathered by token ids,
//! and the table's gradient gathered (not scattered) through a CSR inverse index built once on
//! the host by [`Indices::new`], so the backward pass is deterministic without atomics.
//! The f64 reference is [`cpu`].

use crate::autodiff::Var;
use crate::device::{groups_1d, Device, WG};
use crate::error::{Error, Result};
use crate::tensor::{numel, strides, DType, Tensor};
use std::sync::Arc;

crate::shader!(SHADER = "embedding");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    d: u32,
    vocab: u32,
    _pad: u32,
}

/// Positions per chunk of the inverse index (`embedding_backward_part` sums one chunk per
/// invocation, so no invocation walks a frequent id's whole list).
pub const CHUNK: usize = 32;

/// Token ids on the GPU with their inverse index: `positions` lists the (flat, increasing) output
/// positions grouped by the id they read, cut into chunks of at most [`CHUNK`] positions of one id:
/// chunk `k` is `positions[chunks[k]..chunks[k + 1]]`, and vocabulary row `v`'s chunks are
/// `row_chunks[v]..row_chunks[v + 1]`.
#[derive(Clone, Debug)]
pub struct Indices {
    /// The ids, U32, of shape `shape`.
    pub ids: Tensor,
    /// U32 `[n]`: output positions grouped by the id they read, increasing within a group.
    pub positions: Tensor,
    /// U32 `[K + 1]`: where each chunk starts in `positions` (and where the last one ends); the
    /// chunks past the last row's are empty.
    pub chunks: Tensor,
    /// U32 `[V + 1]`: where each vocabulary row's chunks start.
    pub row_chunks: Tensor,
    /// The shape of the ids (the output is `[..shape, D]`).
    pub shape: Vec<usize>,
}

impl Indices {
    /// Uploads `ids` (row-major, of `shape`) after checking every id `< vocab`, and builds the
    /// inverse index (a stable counting sort by id, then chunks of [`CHUNK`]).
    pub fn new(dev: &Device, ids: &[u32], shape: &[usize], vocab: usize) -> Result<Indices> {
        if ids.len() != numel(shape) {
            return Err(Error::shape(
                "embedding",
                format!("{} ids do not fill shape {shape:?} ({} elements)", ids.len(), numel(shape)),
            ));
        }
        if let Some(pos) = ids.iter().position(|&id| id as usize >= vocab) {
            let st = strides(shape);
            let at: Vec<usize> = shape.iter().zip(&st).map(|(&n, &s)| (pos / s) % n).collect();
            return Err(Error::shape(
                "embedding",
                format!(
                    "id {} at position {at:?} (flat {pos}) of ids {shape:?} is out of range for a vocabulary of {vocab}",
                    ids[pos]
                ),
            ));
        }
        let mut offsets = vec![0u32; vocab + 1];
        for &id in ids {
            offsets[id as usize + 1] += 1;
        }
        for v in 0..vocab {
            offsets[v + 1] += offsets[v];
        }
        let mut next = offsets[..vocab].to_vec();
        let mut positions = vec![0u32; ids.len()];
        for (p, &id) in ids.iter().enumerate() {
            positions[next[id as usize] as usize] = p as u32;
            next[id as usize] += 1;
        }
        let mut chunks = Vec::with_capacity(ids.len() / CHUNK + 1);
        let mut row_chunks = Vec::with_capacity(vocab + 1);
        for v in 0..vocab {
            row_chunks.push(chunks.len() as u32);
            chunks.extend((offsets[v]..offsets[v + 1]).step_by(CHUNK));
        }
        row_chunks.push(chunks.len() as u32);
        // Padded with empty chunks to its bound (each id read adds at most one partial chunk), so
        // the buffer's size, and with it a training step's bind groups, depends on the shape only.
        chunks.resize(Self::max_chunks(ids.len(), vocab) + 1, ids.len() as u32);
        Ok(Indices {
            ids: Tensor::from_u32(dev, ids, shape)?,
            positions: Tensor::from_u32(dev, &positions, &[ids.len()])?,
            chunks: Tensor::from_u32(dev, &chunks, &[chunks.len()])?,
            row_chunks: Tensor::from_u32(dev, &row_chunks, &[vocab + 1])?,
            shape: shape.to_vec(),
        })
    }

    /// The most chunks `n` ids from a vocabulary of `vocab` can need.
    fn max_chunks(n: usize, vocab: usize) -> usize {
        n / CHUNK + n.min(vocab)
    }

    /// The vocabulary size the ids were checked against.
    pub fn vocab(&self) -> usize {
        self.row_chunks.numel() - 1
    }
    /// Number of ids.
    pub fn len(&self) -> usize {
        self.positions.numel()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `(V, D)` after checking the table against the indices.
fn check(table: &Tensor, idx: &Indices) -> Result<(usize, usize)> {
    table.expect("embedding", DType::F32)?;
    let s = table.shape();
    if s.len() != 2 || s[0] != idx.vocab() {
        return Err(Error::shape(
            "embedding",
            format!("table {s:?} does not fit ids {:?} checked against a vocabulary of {}", idx.shape, idx.vocab()),
        ));
    }
    if !Arc::ptr_eq(&table.device().inner, &idx.ids.device().inner) {
        return Err(Error::shape(
            "embedding",
            format!("table {s:?} and ids {:?} live on different devices", idx.shape),
        ));
    }
    Ok((s[0], s[1]))
}

/// `y[..shape, D]`: row `ids[p]` of `table` at every position `p`.
pub fn embedding(table: &Tensor, idx: &Indices) -> Result<Tensor> {
    let (v, d) = check(table, idx)?;
    let mut shape = idx.shape.clone();
    shape.push(d);
    let dev = table.device();
    let y = Tensor::empty(dev, "embedding", &shape, DType::F32)?;
    let n = y.numel();
    let p = Params { n: n as u32, d: d as u32, vocab: v as u32, _pad: 0 };
    dev.dispatch(
        &SHADER,
        "embedding_forward",
        &[],
        bytemuck::bytes_of(&p),
        &[table.bind(), idx.ids.bind(), y.bind()],
        groups_1d(n, WG),
    );
    Ok(y)
}

/// The table's gradient `[V, D]`: for each row, the sum of `gy` over the positions that read
/// it, in increasing order (per chunk of [`CHUNK`], then the chunks in order); rows never read
/// get 0.
pub fn embedding_backward(gy: &Tensor, idx: &Indices, d: usize) -> Result<Tensor> {
    let mut shape = idx.shape.clone();
    shape.push(d);
    if gy.shape() != shape.as_slice() {
        return Err(Error::shape("embedding_backward", format!("gradient {:?} vs output {shape:?}", gy.shape())));
    }
    let (v, k) = (idx.vocab(), idx.chunks.numel() - 1);
    let dev = gy.device();
    let part = Tensor::empty(dev, "embedding_backward", &[k.max(1), d], DType::F32)?;
    let p = Params { n: (k * d) as u32, d: d as u32, vocab: v as u32, _pad: 0 };
    // One invocation per (chunk, column).
    dev.dispatch(
        &SHADER,
        "embedding_backward_part",
        &[],
        bytemuck::bytes_of(&p),
        &[gy.bind(), idx.chunks.bind(), idx.positions.bind(), part.bind()],
        groups_1d(k * d, WG),
    );
    let g = Tensor::empty(dev, "embedding_backward", &[v, d], DType::F32)?;
    let p = Params { n: (v * d) as u32, ..p };
    // One invocation per (vocabulary row, column).
    dev.dispatch(
        &SHADER,
        "embedding_backward",
        &[],
        bytemuck::bytes_of(&p),
        &[part.bind(), idx.row_chunks.bind(), g.bind()],
        groups_1d(v * d, WG),
    );
    Ok(g)
}

impl Var {
    /// Looks up rows of this table `[V, D]`: output `[..idx.shape, D]`. The gradient goes to the
    /// table (gathered per row, deterministic).
    pub fn embedding(&self, idx: &Indices) -> Result<Var> {
        let y = embedding(self.value(), idx)?;
        let d = self.shape()[1];
        let idx = idx.clone();
        Ok(self.tape().op(y, &[self], move |gy| Ok(vec![Some(embedding_backward(gy, &idx, d)?)])))
    }
}

/// f64 references on flat row-major data.
pub mod cpu {
    /// Rows `ids[p]` of `table` (`[V, d]`), concatenated.
    pub fn embedding(table: &[f64], d: usize, ids: &[u32]) -> Vec<f64> {
        ids.iter().flat_map(|&id| table[id as usize * d..(id as usize + 1) * d].iter().copied()).collect()
    }

    /// The table gradient `[vocab, d]`: `gy` rows added into the rows their ids read.
    pub fn embedding_backward(gy: &[f64], d: usize, ids: &[u32], vocab: usize) -> Vec<f64> {
        let mut g = vec![0.0; vocab * d];
        for (p, &id) in ids.iter().enumerate() {
            for j in 0..d {
                g[id as usize * d + j] += gy[p * d + j];
            }
        }
        g
    }
}
