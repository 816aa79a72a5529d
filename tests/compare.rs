//! The experiment protocol end to end: disjoint, fixed splits; model selection (epoch and lambda)
//! that never reads test labels; the paired interval in results.json; a comparison killed and
//! resumed that writes the uninterrupted one's results.json without re-running finished runs;
//! a task registry complete enough that the command line names no task.

mod common;

use atomgrad::experiments::compare::{run_comparison, CompareOptions};
use atomgrad::experiments::method::Method;
use atomgrad::experiments::stats::paired_diff;
use atomgrad::experiments::synthetic::{SyntheticConfig, SyntheticData};
use atomgrad::experiments::task::{Data, Kind, Overrides, Task};
use atomgrad::rng::Rng;
use atomgrad::run::Display;
use std::path::{Path, PathBuf};
use std::process::Command;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("atomgrad-compare-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&d).ok();
    d
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

#[test]
fn synthetic_splits_are_fixed_and_held_out_from_one_stream() {
    let cfg = SyntheticConfig::default();
    let a = SyntheticData::generate(&cfg);
    let b = SyntheticData::generate(&cfg);
    assert_eq!((a.train.len(), a.val.len(), a.test.len()), (cfg.train, cfg.val, cfg.test));
    assert_eq!((a.train.x.clone(), a.val.x.clone(), a.test.y.clone()), (b.train.x, b.val.x, b.test.y));
    // Validation is the continuation of the training stream: generating more training samples
    // would have produced exactly these.
    let longer = SyntheticData::generate(&SyntheticConfig { train: cfg.train + cfg.val, ..cfg.clone() });
    let per = a.train.x.len() / a.train.len();
    assert_eq!(&longer.train.x[cfg.train * per..], &a.val.x[..]);
    // No sample is in two splits, and both classes are in every split in equal numbers.
    let rows = |x: &[f32]| x.chunks(per).map(|c| c.iter().map(|v| v.to_bits()).collect::<Vec<_>>()).collect::<Vec<_>>();
    let train: std::collections::HashSet<Vec<u32>> = rows(&a.train.x).into_iter().collect();
    assert!(rows(&a.val.x).iter().chain(&rows(&a.test.x)).all(|r| !train.contains(r)));
    for s in [&a.train, &a.val, &a.test] {
        assert_eq!(s.y.iter().filter(|&&c| c == 1).count() * 2, s.len());
    }
    let other = SyntheticData::generate(&SyntheticConfig { data_seed: 1, ..cfg });
    assert_ne!(other.train.x, a.train.x);
}

/// The planted task's ground truth: informative tokens carry the class on their first feature,
/// varying tokens vary as much without it, constant tokens hardly vary at all.
#[test]
fn planted_tokens_are_what_they_are_said_to_be() {
    let cfg = SyntheticConfig::planted();
    assert_eq!(
        (cfg.informative.clone(), cfg.varying(), cfg.constant.clone()),
        (vec![2, 5], vec![1, 3, 6], vec![0, 4, 7])
    );
    let d = SyntheticData::generate(&cfg);
    let (n, t, f, per) = (d.train.len(), cfg.tokens, cfg.token_dim, cfg.tokens * (cfg.token_dim + cfg.tokens));
    let feature = |a: usize, i: usize, k: usize| d.train.x[a * per + i * (f + t) + k] as f64;
    for i in 0..t {
        // Class means and the spread of every feature of position i.
        let mut sums = [[0.0; 2]; 4];
        let mut sq = [0.0; 4];
        for a in 0..n {
            let c = d.train.y[a] as usize;
            for (k, s) in sums.iter_mut().enumerate().take(f) {
                s[c] += feature(a, i, k) / (n / 2) as f64;
            }
        }
        for a in 0..n {
            for k in 0..f {
                let m = (sums[k][0] + sums[k][1]) / 2.0;
                sq[k] += (feature(a, i, k) - m).powi(2) / n as f64;
            }
        }
        let class_diff = (sums[0][1] - sums[0][0]).abs();
        let spread = sq.iter().map(|v| v.sqrt()).fold(0.0, f64::max);
        // The one-hot position is the token's own.
        assert!((0..n).all(|a| (0..t).all(|j| (d.train.x[a * per + i * (f + t) + f + j] == 1.0) == (i == j))));
        if cfg.informative.contains(&i) {
            assert!((class_diff - 2.0 * cfg.signal as f64).abs() < 0.15, "token {i}: class difference {class_diff}");
        } else {
            assert!(class_diff < 0.15, "token {i} carries the class: {class_diff}");
        }
        if cfg.constant.contains(&i) {
            assert!(spread < 2.0 * cfg.constant_noise as f64, "constant token {i} spreads {spread}");
        } else {
            assert!(spread > 0.8, "token {i} should vary: {spread}");
        }
    }
    // The plain synthetic task is the same data where nothing is constant.
    let plain = SyntheticData::generate(&SyntheticConfig::default());
    assert_eq!(plain.train.y, d.train.y);
}

/// The same comparison with the test labels permuted selects the same epochs and lambdas and
/// reports the same validation scores: selection reads validation only.
#[test]
fn selection_never_reads_test_labels() {
    let dev = common::device();
    let c = CompareOptions::new(
        Task::Synthetic,
        vec![Method::Ce, Method::Atom],
        2,
        vec![0.01, 0.3],
        Overrides { epochs: Some(3), ..Overrides::default() },
    )
    .unwrap();
    let data = SyntheticData::generate(&SyntheticConfig::default());
    let mut permuted = data.clone();
    Rng::new(7).shuffle(&mut permuted.test.y);
    assert_ne!(permuted.test.y, data.test.y);
    let mut results = Vec::new();
    for (name, d) in [("plain", data), ("permuted", permuted)] {
        let out = scratch(&format!("select-{name}"));
        std::fs::create_dir_all(&out).unwrap();
        run_comparison(&dev, &c, &Data::Synthetic(d), &out, Display::Quiet).unwrap().expect("not stopped");
        results.push(json(&out.join("results.json")));
        std::fs::remove_dir_all(&out).ok();
    }
    let (a, b) = (&results[0]["rows"], &results[1]["rows"]);
    for (ra, rb) in a.as_array().unwrap().iter().zip(b.as_array().unwrap()) {
        for key in ["lambda", "lambda_grid", "selected_epoch", "val"] {
            assert_eq!(ra[key], rb[key], "{key} of {} changed with the test labels", ra["method"]);
        }
    }
    assert_ne!(a[0]["test"], b[0]["test"], "permuted test labels should change the test scores");
    // The atom row's lambda is the one with the best mean validation score, and its paired
    // difference is recomputed from the per-seed values.
    let atom = &a[1];
    let grid: Vec<(f64, f64)> = atom["lambda_grid"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["lambda"].as_f64().unwrap(), g["mean_val"].as_f64().unwrap()))
        .collect();
    let best = grid.iter().cloned().fold((f64::NAN, f64::NEG_INFINITY), |b, g| if g.1 > b.1 { g } else { b });
    assert_eq!(atom["lambda"].as_f64(), Some(best.0));
    let f = |v: &serde_json::Value| v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect::<Vec<_>>();
    let d = paired_diff(&f(&atom["test"]), &f(&a[0]["test"]), true);
    assert!((atom["vs_baseline"]["mean"].as_f64().unwrap() - d.mean).abs() < 1e-12);
    assert!((atom["vs_baseline"]["lo"].as_f64().unwrap() - d.lo).abs() < 1e-12);
    assert_eq!(atom["vs_baseline"]["verdict"], serde_json::to_value(d.verdict).unwrap());
}

fn atomgrad(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_atomgrad")).args(args).env("NODEVICE_SELECT", "1").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// SIGKILL in the middle of a comparison's third run; `compare --resume` reads the two finished
/// runs back (their files untouched), resumes the third from its checkpoint and trains the rest:
/// results.json is byte for byte the uninterrupted comparison's.
#[cfg(unix)]
#[test]
fn a_killed_comparison_resumes_to_the_uninterrupted_results() {
    let dir = scratch("resume");
    let (a, b) = (dir.join("a"), dir.join("b"));
    let args = |out: &Path| -> Vec<String> {
        "compare --task synthetic --methods ce,atom --seeds 2 --epochs 3 --lambdas 0.01,0.1 --quiet --out"
            .split(' ')
            .map(String::from)
            .chain([out.to_str().unwrap().to_string()])
            .collect()
    };
    let a_args = args(&a);
    let (ok, text) = atomgrad(&a_args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(ok, "{text}");
    assert!(text.contains("+atom (L_A)") && text.contains("[95% CI]"), "{text}");

    let mut child = Command::new(env!("CARGO_BIN_EXE_atomgrad"))
        .args(args(&b))
        .env("NODEVICE_SELECT", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait for the third run (atom, lambda 0.01, seed 0) to save its first epoch, then kill.
    let third = b.join("atom/lambda-0.01/seed0/checkpoints");
    let t0 = std::time::Instant::now();
    while !std::fs::read_dir(&third)
        .is_ok_and(|d| d.flatten().any(|e| e.file_name().to_string_lossy().ends_with(".json")))
    {
        assert!(t0.elapsed().as_secs() < 300, "the third run saved nothing in 5 minutes");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!b.join("results.json").exists(), "killed too late: the comparison had finished");
    let finished = b.join("ce/seed0/result.json");
    let before = std::fs::metadata(&finished).unwrap().modified().unwrap();
    let (ok, text) = atomgrad(&["compare", "--resume", b.to_str().unwrap(), "--quiet"]);
    assert!(ok, "{text}");
    assert_eq!(std::fs::metadata(&finished).unwrap().modified().unwrap(), before, "a finished run was re-run");
    assert_eq!(
        std::fs::read_to_string(a.join("results.json")).unwrap(),
        std::fs::read_to_string(b.join("results.json")).unwrap(),
        "the resumed comparison's results.json differs from the uninterrupted one's"
    );
    let prov = json(&b.join("provenance.json"));
    let what: Vec<&str> = prov["entries"].as_array().unwrap().iter().map(|e| e["what"].as_str().unwrap()).collect();
    assert_eq!(what, ["created", "resumed"]);
    // Options given with --resume are refused (they come from the folder).
    let (ok, text) = atomgrad(&["compare", "--resume", b.to_str().unwrap(), "--seeds", "3"]);
    assert!(!ok && text.contains("--seeds"), "{text}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_comparison_options_leave_no_folder() {
    let dir = scratch("bad");
    let out = dir.join("x");
    let o = out.to_str().unwrap();
    for (args, want) in [
        (vec!["compare", "--batch", "0", "--out", o], "batch"),
        (vec!["compare", "--task", "gan2d", "--model", "resnet", "--out", o], "--model"),
        (vec!["compare", "--lambdas", "0.1,-1", "--out", o], "--lambdas"),
        (vec!["compare", "--lambdas", "0.1,0.1", "--out", o], "twice"),
        (vec!["compare", "--seeds", "18446744073709551615", "--out", o], "--seeds"),
        (vec!["compare", "--task", "moons", "--out", o], "nothing to compare"),
        (vec!["compare", "--task", "fashion", "--hidden", "8", "--out", o], "--hidden does not apply"),
        (vec!["compare", "--test-limit", "0", "--task", "fashion", "--out", o], "test-limit"),
    ] {
        let (ok, text) = atomgrad(&args);
        assert!(!ok && text.contains(want) && !text.contains("panicked"), "{args:?}: {text}");
        assert!(!out.exists(), "{args:?} left {} behind", out.display());
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Every task is one registry entry: a name that parses back, a kind, methods, defaults that
/// resolve for each of its methods, and a line of the `--help` table; the command line names
/// no task (it dispatches through the registry).
#[test]
fn every_task_is_one_registry_entry_and_the_command_line_names_none() {
    let help = Task::defaults_help();
    for t in Task::ALL {
        assert_eq!(Task::parse(t.name()).unwrap(), t);
        assert!(help.lines().any(|l| l.trim_start().starts_with(t.name())), "{} missing from:\n{help}", t.name());
        let d = t.defaults();
        for given in d.given() {
            assert!(t.takes().contains(&given), "{}: default for --{given}, which it does not take", t.name());
        }
        for &m in t.info().methods {
            let o = t.resolve(m, 3, &Overrides::default()).unwrap();
            assert_eq!((o.task, o.method, o.seed), (t, m, 3));
            assert_eq!(o.lambda.is_some(), m.uses_lambda() && d.lambda.is_some(), "{} {}", t.name(), m.slug());
            let back: atomgrad::experiments::task::RunOptions =
                serde_json::from_value(serde_json::to_value(&o).unwrap()).unwrap();
            assert_eq!(back, o, "options survive config.json");
        }
        assert!(t.info().compare_methods.iter().all(|m| t.info().methods.contains(m)));
        assert_eq!(t.score().higher_is_better, t != Task::Gan);
        assert_eq!(t.kind() == Kind::Gan, matches!(t, Task::Gan | Task::Gan2d));
    }
    let main = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/main.rs")).unwrap();
    for t in Task::ALL {
        assert!(!main.contains(&format!("\"{}\"", t.name())), "src/main.rs names task {:?}", t.name());
    }
}
