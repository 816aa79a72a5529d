//! One module per shader family: each holds the GPU launchers, the autodiff rules (`impl Var`)
//! and an f64 CPU reference in a `cpu` submodule.

pub mod atom;
pub mod elementwise;
pub mod embedding;
pub mod layernorm;
pub mod layout;
pub mod matmul;
pub mod peak;
pub mod reduce;
pub mod softmax;
