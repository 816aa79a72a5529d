//! Experiments: the tasks, the methods they compare, and the protocol and driver that compare
//! them.
//!
//! - [`method`]: [`Method`], the shared vocabulary (add a method here).
//! - [`task`]: the task registry, [`Task`] (add a task here), the effective options of a run
//!   ([`task::RunOptions`]) and one run's training ([`task::train_run`]).
//! - [`protocol`]: what a run reports (validation-selected epoch, test scores) and [`protocol::Classifier`].
//! - [`compare`]: the comparison driver (methods × lambda grid × seeds, resumable, paired intervals).
//! - [`stats`]: mean ± std, the paired t interval, AUC, latent spacing.
//! - [`terms`]: per-term diagnostics of the atom objective (`terms.png` of synthetic atom runs).
//! - The tasks: [`synthetic`], [`classify`] (Fashion-MNIST CNN, review Transformer), [`gan`].

pub mod classify;
pub mod compare;
pub mod gan;
pub mod method;
pub mod protocol;
pub mod stats;
pub mod synthetic;
pub mod task;
pub mod terms;

pub use method::Method;
pub use task::Task;

/// `runs/<task>-<unix seconds>-<pid>` unless the caller names a folder: two jobs started in the
/// same second get two folders.
pub fn default_out(task: &str) -> std::path::PathBuf {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    std::path::PathBuf::from("runs").join(format!("{task}-{t}-{}", std::process::id()))
}
