//! The per-term diagnostics of the synthetic task (`experiments::terms`, issue 21): logging them
//! leaves the training trajectory bit for bit as it was, and what they record adds up.

mod common;

use atomgrad::experiments::protocol::Classifier;
use atomgrad::experiments::synthetic::{SyntheticConfig, SyntheticData, SyntheticLearner};
use atomgrad::experiments::terms::read_jsonl;
use atomgrad::experiments::Method;
use atomgrad::train::{fit, Learner};
use atomgrad::DType;
use common::device;

fn small() -> SyntheticConfig {
    SyntheticConfig { train: 256, val: 64, test: 64, epochs: 2, batch: 32, ..SyntheticConfig::default() }
}

/// Every model and optimizer tensor after training, as raw bits, and the terms recorded.
fn train(
    method: Method,
    data: &SyntheticData,
    log: Option<&std::path::Path>,
) -> (Vec<(String, Vec<u32>)>, Vec<atomgrad::experiments::terms::TermStats>) {
    let dev = device();
    let mut l = SyntheticLearner::new(&dev, &small(), data, method, 7).unwrap();
    if let Some(dir) = log {
        l.log_terms(dir, 10);
    }
    let opts = l.fit_options();
    fit(&dev, &mut l, &opts, None, &mut ()).unwrap();
    let mut out: Vec<(String, Vec<u32>)> = Vec::new();
    for (name, t) in l.tensors().into_iter().chain(l.optimizer().state().unwrap()) {
        let bits = match t.dtype() {
            DType::U32 => t.to_vec_u32().unwrap(),
            _ => t.to_vec().unwrap().iter().map(|v| v.to_bits()).collect(),
        };
        out.push((name, bits));
    }
    (out, l.terms().map(|t| t.records.clone()).unwrap_or_default())
}

#[test]
fn logging_terms_leaves_the_trajectory_bit_identical() {
    let data = SyntheticData::generate(&small());
    for method in [Method::Atom, Method::Gate] {
        let (plain, _) = train(method, &data, None);
        let dir = std::env::temp_dir().join(format!("atomgrad-terms-{}-{}", std::process::id(), method.slug()));
        std::fs::create_dir_all(&dir).unwrap();
        let (logged, recs) = train(method, &data, Some(&dir));
        assert_eq!(plain.len(), logged.len());
        for ((na, a), (nb, b)) in plain.iter().zip(&logged) {
            assert_eq!(na, nb);
            assert!(a == b, "{method:?}: {na} differs after training with the per-term log on");
        }
        // 8 steps per epoch: a record before every step (every = max(1, 8 / 10)).
        assert_eq!(recs.len(), 16);
        let back = read_jsonl(&dir.join("terms.jsonl")).unwrap();
        assert_eq!(back.len(), recs.len());
        for (a, b) in back.iter().zip(&recs) {
            assert_eq!(a.step, b.step);
            assert!((a.l_a - b.l_a).abs() <= 1e-12 * b.l_a.abs() && (a.g_la.z - b.g_la.z).abs() <= 1e-12 * b.g_la.z);
        }
        assert!(dir.join("terms.png").exists());
        for r in &recs {
            assert!(r.ce.is_finite() && r.l_a.is_finite() && r.c_w >= 0.0, "{r:?}");
            assert!(r.g_ce.z > 0.0 && r.g_la.z > 0.0 && r.g_la.w > 0.0, "{r:?}");
            // C_w does not reach z; L_A does not reach the classifier head, CE does.
            assert_eq!(r.g_cw.z, 0.0);
            assert!(r.g_ce.params >= r.g_ce.gate);
            let expect = if method == Method::Atom { 0.1 } else { 0.0 };
            assert!((r.lambda - expect).abs() < 1e-7);
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}

/// The fix of issue 21 (docs/atom-stability.md): with the task's soft floor (r_max = 2) atom
/// modeling learns as fast as cross-entropy. With the spec's r_max = 20 both seeds below were
/// still at 50-55% after 3 epochs (L_A's gradient 17-800x CE's); cross-entropy is at 88-89%.
#[test]
fn atom_at_the_task_defaults_learns_as_fast_as_cross_entropy() {
    let dev = device();
    assert_eq!(SyntheticConfig::default().r_max, Some(2.0));
    let cfg = SyntheticConfig { epochs: 3, ..SyntheticConfig::default() };
    let data = SyntheticData::generate(&cfg);
    for seed in [1, 16] {
        let acc = |method: Method| {
            let mut l = SyntheticLearner::new(&dev, &cfg, &data, method, seed).unwrap();
            assert_eq!(l.atom().r_max, Some(2.0));
            let opts = l.fit_options();
            fit(&dev, &mut l, &opts, None, &mut ()).unwrap();
            l.evaluate().unwrap().test
        };
        let (ce, atom) = (acc(Method::Ce), acc(Method::Atom));
        assert!(atom > ce - 0.03, "seed {seed}: atom {atom} vs cross-entropy {ce} after 3 epochs");
    }
}
