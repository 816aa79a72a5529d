//! What one run reports under the experiment protocol: a score on the validation split and on
//! the test split at every epoch (or GAN log interval), the point reported (the best validation
//! score, first on ties), and the test-side measures of the model at that point. The validation
//! split selects; the test split is only reported.

use crate::error::Result;
use crate::experiments::stats::best_index;
use crate::experiments::task::RunOptions;
use crate::train::{EpochReport, Learner};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// One evaluation during a run: no timings, so a resumed run's record equals the uninterrupted one's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// 1-based epoch (GANs: log interval).
    pub epoch: usize,
    /// Optimizer steps (GANs: iterations) so far.
    pub step: usize,
    pub train_loss: f64,
    /// The validation score: what selection reads.
    pub val: f64,
    /// The test score, where one is measured at every point.
    pub test: Option<f64>,
}

impl Point {
    pub fn from_epoch(r: &EpochReport) -> Point {
        Point {
            epoch: r.epoch + 1,
            step: r.step,
            train_loss: r.train_loss,
            val: r.val_accuracy,
            test: Some(r.test_accuracy),
        }
    }
}

/// Test-side measures of a selected model beyond its score (importance AUC, latent spacing, ...)
/// and, for the gated methods, its mean importance per token position where positions mean the
/// same in every sample (the synthetic tasks).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub metrics: BTreeMap<String, f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub importance: Option<Vec<f64>>,
}

/// A finished run: `result.json` in its folder (its presence marks the run finished).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub options: RunOptions,
    pub history: Vec<Point>,
    /// Index into `history` of the reported point: the best validation score.
    pub selected: usize,
    /// Validation and test score at the selected point.
    pub val: f64,
    pub test: f64,
    /// Measures of the selected model on the test split.
    pub report: Report,
    /// The source commit of the binary that finished the run.
    pub commit: String,
}

impl RunRecord {
    /// The record of a run whose test score at the selected point is in its history.
    pub fn from_history(
        options: &RunOptions,
        history: Vec<Point>,
        report: Report,
        higher_is_better: bool,
    ) -> RunRecord {
        let vals: Vec<f64> = history.iter().map(|p| p.val).collect();
        let selected = best_index(&vals, higher_is_better).unwrap_or(history.len().saturating_sub(1));
        let (val, test) = history.get(selected).map_or((f64::NAN, f64::NAN), |p| (p.val, p.test.unwrap_or(f64::NAN)));
        RunRecord {
            options: options.clone(),
            history,
            selected,
            val,
            test,
            report,
            commit: crate::fsio::source_commit(),
        }
    }
    /// The 1-based epoch (GANs: log interval) reported.
    pub fn selected_epoch(&self) -> usize {
        self.history.get(self.selected).map_or(0, |p| p.epoch)
    }
}

/// A classifier task's model and data beyond training ([`Learner`]): what the protocol reports
/// about the selected model.
pub trait Classifier: Learner {
    /// Measures of the current model on the test split, with its figures (latents, importance
    /// maps) drawn into `dir`; `title` names the run in figure titles.
    fn report(&mut self, dir: &Path, title: &str) -> Result<Report>;
    /// Turns on per-term diagnostics of the objective into `dir` (`terms.jsonl`, `terms.png`),
    /// about `per_epoch` records an epoch, where the task has them (the synthetic atom runs).
    fn log_terms(&mut self, _dir: &Path, _per_epoch: usize) {}
}
