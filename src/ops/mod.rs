//! One module per shader family: each holds the GPU launchers, the autodiff rules (`impl Var`)
//! and an f64 CPU reference in a `cpu` submodule.

pub mod batchnorm;
pub mod elementwise;
pub mod layout;
pub mod random;
pub mod reduce;
