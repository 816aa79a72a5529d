//! One module per shader family: each holds the GPU launchers, the autodiff rules (`impl Var`)
//! and an f64 CPU reference in a `cpu` submodule.

pub mod atom;
pub mod batchnorm;
pub mod conv;
pub mod elementwise;
pub mod embedding;
pub mod layernorm;
pub mod layout;
pub mod matmul;
pub mod peak;
pub mod pool;
pub mod random;
pub mod reduce;
pub mod softmax;
