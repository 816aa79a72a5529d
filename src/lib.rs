//! atomgrad: a small GPU compute-shader engine for training neural networks, built to study atom
//! modeling (an importance-gated latent-separation regulariser). Every kernel is hand-written
//! WGSL run through wgpu (Vulkan, Metal, DX12, or the CPU through Mesa's lavapipe); it has its
//! own reverse-mode autodiff tape, optimizers and training loop.
//!
//! # Start from the examples
//!
//! - `examples/mlp_atom.rs` — a model of your own with the importance gate
//!   and the atom regulariser, trained on two moons in about 40 lines:
//!   `cargo run --release --example mlp_atom`.
//! - `examples/custom_kernel.rs` — your own WGSL kernel with its own backward rule, checked
//!   against an f64 reference and central differences ([`kernel`]).
//! - `examples/own_images.rs` — the CNN with atom modeling on a folder of your own images
//!   ([`data::images`], [`train::fit`]).
//!
//! Each runs in seconds on lavapipe and is run by the test suite (`cargo test --release --examples`).
//!
//! # A first model
//!
//! Ops record into one command encoder; [`Device::flush`] submits a whole step at once, and a
//! readback ([`Tensor::to_vec`]) flushes first. This runs as a doc test:
//!
//! ```
//! use atomgrad::nn::{Activation, Builder, Module, Sequential};
//! use atomgrad::optim::{Adam, AdamConfig, Optimizer};
//! use atomgrad::{ops::reduce::argmax, Device, Tape, Tensor};
//! # fn main() -> atomgrad::Result<()> {
//! let dev = Device::new()?; // the best adapter: a GPU, else lavapipe
//! let mut b = Builder::new(&dev, 0); // names and seeds the layers
//! let model = Sequential::new().push(b.linear(2, 16)?).push(Activation::Tanh).push(b.linear(16, 2)?);
//! let mut opt = Adam::new(model.params(), AdamConfig::adam(0.05))?;
//! let x = Tensor::from_slice(&dev, &[0., 0., 0., 1., 1., 0., 1., 1.], &[4, 2])?; // XOR
//! let y = Tensor::from_u32(&dev, &[0, 1, 1, 0], &[4])?;
//! for _ in 0..150 {
//!     let tape = Tape::new(); // this step's forward pass
//!     let loss = model.forward(&tape, &tape.constant(x.clone()))?.cross_entropy(&y)?;
//!     loss.backward()?; // gradients into each Param
//!     opt.step()?;
//!     opt.zero_grad();
//!     dev.flush()?; // the step's one submit
//! }
//! let tape = Tape::no_grad();
//! let logits = model.forward(&tape, &tape.constant(x))?;
//! assert_eq!(argmax(logits.value(), 1, false)?.to_vec_u32()?, [0, 1, 1, 0]);
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! - [`Device`] (adapter, buffer pool, pipeline cache, the recorder), [`Tensor`] (f32/u32 GPU
//!   buffers with shapes), [`Tape`], [`Var`], [`Param`] (reverse-mode autodiff).
//! - [`ops`]: one module per shader file, each with its GPU launchers, its autodiff rules (methods
//!   of [`Var`]) and an f64 CPU reference (`cpu`); [`kernel`]: your own WGSL kernels.
//! - [`nn`]: layers ([`nn::Module`]), the CNN, ResNet and Transformer, the importance gate;
//!   [`atom`]: the atom regulariser and its baselines; [`optim`]: SGD, Adam, AdamW, schedules,
//!   clipping; [`train`]: the training loop ([`train::fit`] over a [`train::Learner`]);
//!   [`checkpoint`]: safetensors checkpoints; [`data`]: moons, Fashion-MNIST, reviews, image
//!   folders, text CSVs; [`fsio`]: atomic writes.
//! - With the `app` feature (on by default): `experiments` (the task registry, methods, the
//!   comparison protocol), `run` (run folders, progress, Ctrl-C), `plot` (PNG figures) and the
//!   `atomgrad` binary. `cargo build --no-default-features` builds the engine alone, without clap,
//!   indicatif, ctrlc or plotters.

pub mod atom;
pub mod autodiff;
pub mod checkpoint;
pub mod data;
pub mod device;
pub mod error;
#[cfg(feature = "app")]
pub mod experiments;
pub mod fsio;
pub mod kernel;
pub mod nn;
pub mod ops;
pub mod optim;
#[cfg(feature = "app")]
pub mod plot;
pub mod rng;
#[cfg(feature = "app")]
pub mod run;
pub mod tensor;
pub mod train;

pub use autodiff::{Gradients, Param, Tape, Target, Var};
pub use device::Device;
pub use error::{Error, Result};
pub use tensor::{DType, Tensor};
