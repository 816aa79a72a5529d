//! atomgrad: a small tensor runtime on wgpu whose every kernel is hand-written WGSL
//! (`shaders/`), its own reverse-mode autodiff tape, and training loops for atom modeling.
//!
//! Layout: `device` (adapter, pool, recorder), `tensor` (GPU buffers with shapes), `ops::<family>`
//! (one per shader file: GPU launchers, autodiff rules, and the f64 CPU reference in `cpu`),
//! `autodiff` (the tape), `nn`, `optim`, `data`, `train`.

pub mod atom;
pub mod autodiff;
pub mod checkpoint;
pub mod data;
pub mod device;
pub mod error;
pub mod experiments;
pub mod fsio;
pub mod kernel;
pub mod nn;
pub mod ops;
pub mod optim;
pub mod plot;
pub mod rng;
pub mod run;
pub mod tensor;
pub mod train;

pub use autodiff::{Gradients, Param, Tape, Target, Var};
pub use device::Device;
pub use error::{Error, Result};
pub use tensor::{DType, Tensor};
