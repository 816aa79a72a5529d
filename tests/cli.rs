//! The command line end to end: a short classifier comparison saves a checkpoint that `explain`
//! turns into importance maps; bad input ends with a one-line error and a non-zero exit code.
use std::process::Command;

fn atomgrad(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_atomgrad")).args(args).env("NODEVICE_SELECT", "1").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn compare_saves_a_checkpoint_that_explain_draws() {
    let dir = std::env::temp_dir().join(format!("atomgrad-cli-{}", std::process::id()));
    let run = dir.join("run");
    let run_s = run.to_str().unwrap();
    let (ok, text) = atomgrad(&[
        "compare",
        "--task",
        "fashion",
        "--seeds",
        "1",
        "--epochs",
        "1",
        "--train-limit",
        "128",
        "--test-limit",
        "64",
        "--batch",
        "32",
        "--methods",
        "gate",
        "--out",
        run_s,
    ]);
    assert!(ok, "{text}");
    assert!(text.contains("gate only"), "{text}");
    for f in [
        "config.json",
        "provenance.json",
        "results.json",
        "results.md",
        "validation.png",
        "importance-gate.png",
        "gate/seed0/result.json",
        "gate/seed0/metrics.jsonl",
        "gate/seed0/checkpoints/best.json",
    ] {
        assert!(run.join(f).is_file(), "{f} missing; output:\n{text}");
    }
    // A second run into the same folder is refused rather than overwriting the first.
    let (ok, text) = atomgrad(&["compare", "--task", "synthetic", "--seeds", "1", "--epochs", "1", "--out", run_s]);
    assert!(!ok && text.contains("already holds results") && text.contains("--force"), "{text}");
    let ckpt = run.join("gate/seed0/checkpoints/best.safetensors");
    let (ok, text) =
        atomgrad(&["explain", "--checkpoint", ckpt.to_str().unwrap(), "--out", dir.join("explain").to_str().unwrap()]);
    assert!(ok, "{text}");
    assert!(dir.join("explain/importance.png").is_file(), "{text}");
    // The explained model (the run's best validation epoch) scores what the comparison reported.
    let results = std::fs::read_to_string(run.join("results.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&results).unwrap();
    let acc = v["rows"][0]["test"][0].as_f64().unwrap();
    assert!(text.contains(&format!("{:.2}%", 100.0 * acc)), "explain printed {text}, compare measured {acc}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_input_is_a_one_line_error_with_a_nonzero_exit() {
    let (ok, text) = atomgrad(&["compare", "--task", "nope"]);
    assert!(!ok && text.contains("unknown task \"nope\""), "{text}");
    let (ok, text) = atomgrad(&["explain", "--checkpoint", "/nonexistent/model.safetensors"]);
    assert!(!ok && text.contains("/nonexistent/model"), "{text}");
    let (ok, text) = atomgrad(&["train", "--batch", "0"]);
    assert!(!ok && text.contains("batch"), "{text}");
    let (ok, text) = atomgrad(&["compare", "--methods", "ce,bogus"]);
    assert!(!ok && text.contains("bogus"), "{text}");
    let (ok, text) = atomgrad(&["sample", "--checkpoint", "/nonexistent/generator.safetensors"]);
    assert!(!ok && text.contains("/nonexistent/generator"), "{text}");
    let (ok, text) = atomgrad(&["sample", "--checkpoint", "g.safetensors", "--n", "0"]);
    assert!(!ok && text.contains("--n"), "{text}");
    let (ok, text) = atomgrad(&["train", "--lr=-1"]);
    assert!(!ok && text.contains("lr"), "{text}");
    let (ok, text) = atomgrad(&["train", "--bogus-option"]);
    assert!(!ok && text.contains("--bogus-option"), "{text}");
    // --channels sizes the DCGAN only, and must be even
    let (ok, text) = atomgrad(&["train", "--task", "fashion", "--channels", "64"]);
    assert!(!ok && text.contains("--channels"), "{text}");
    let (ok, text) = atomgrad(&["compare", "--task", "gan2d", "--channels", "64"]);
    assert!(!ok && text.contains("--channels"), "{text}");
    let (ok, text) = atomgrad(&["train", "--task", "gan", "--channels", "3"]);
    assert!(!ok && text.contains("channels must be a multiple of 2"), "{text}");
    assert!(!text.contains("panicked"), "{text}");
    // Mixed precision where the adapter has no f16 cooperative matrices (lavapipe): refused, and
    // no run folder is left behind.
    let out = scratch("mixed");
    let (ok, text) = atomgrad(&["train", "--mixed-precision", "--out", out.to_str().unwrap()]);
    if !ok {
        assert!(text.contains("--mixed-precision") && text.contains("cooperative matrices"), "{text}");
        assert!(!out.exists(), "a refused run left {} behind", out.display());
    }
    std::fs::remove_dir_all(&out).ok();
}

fn scratch(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("atomgrad-cli-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&d).ok();
    d
}

/// The tensors of a checkpoint.
fn tensors(path: &std::path::Path) -> std::collections::BTreeMap<String, atomgrad::checkpoint::HostTensor> {
    atomgrad::checkpoint::load(path).unwrap().tensors
}

/// A run stopped mid-epoch by `--max-steps` and continued with `--resume` ends with the same
/// bits as an uninterrupted run: SimCLR draws augmentation noise from the host RNG inside the
/// step and atom modeling warms its weight up by step, so the RNG state, the epoch's batch
/// order, the step and the optimizer state must all come back.
#[test]
fn a_resumed_run_is_bit_identical_to_an_uninterrupted_one() {
    let dir = scratch("resume");
    let final_ckpt = "checkpoints/ckpt-step-64.safetensors";
    for method in ["simclr", "atom"] {
        let (a, b) = (dir.join(format!("{method}-a")), dir.join(format!("{method}-b")));
        let common = ["train", "--task", "synthetic", "--method", method, "--epochs", "2", "--quiet", "--out"];
        let (ok, text) = atomgrad(&[&common[..], &[a.to_str().unwrap()]].concat());
        assert!(ok, "{text}");
        let (ok, text) = atomgrad(&[&common[..], &[b.to_str().unwrap(), "--max-steps", "37"]].concat());
        assert!(ok && text.contains("stopped after step 37"), "{text}");
        assert!(b.join("checkpoints/ckpt-step-37.safetensors").is_file());
        let (ok, text) = atomgrad(&["train", "--resume", b.to_str().unwrap(), "--quiet"]);
        assert!(ok, "{text}");
        assert!(tensors(&a.join(final_ckpt)) == tensors(&b.join(final_ckpt)), "{method}: resumed run differs");
        // Both runs log every epoch once and keep the last 2 checkpoints and the best.
        for run in [&a, &b] {
            let log = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
            let lines: Vec<serde_json::Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
            assert_eq!(lines.len(), 2, "{log}");
            assert!(run.join("checkpoints/best.json").is_file() && run.join("loss.png").is_file());
        }
    }
    // The saved configuration starts the same run again through --config.
    let (a, c) = (dir.join("atom-a"), dir.join("c"));
    let cfg = a.join("config.json");
    let (ok, text) = atomgrad(&["train", "--config", cfg.to_str().unwrap(), "--quiet", "--out", c.to_str().unwrap()]);
    assert!(ok, "{text}");
    assert!(tensors(&c.join(final_ckpt)) == tensors(&a.join(final_ckpt)), "--config of config.json trains differently");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn config_files_give_defaults_that_the_command_line_overrides() {
    let dir = scratch("config");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("moons.json");
    std::fs::write(&file, r#"{"task": "moons", "epochs": 3, "batch": 32, "hidden": 16}"#).unwrap();
    let out = dir.join("run");
    let args =
        ["train", "--config", file.to_str().unwrap(), "--epochs", "1", "--quiet", "--out", out.to_str().unwrap()];
    let (ok, text) = atomgrad(&args);
    assert!(ok, "{text}");
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        (saved["epochs"].as_u64(), saved["batch"].as_u64(), saved["hidden"].as_u64()),
        (Some(1), Some(32), Some(16))
    );
    std::fs::write(&file, r#"{"task": "moons", "epohcs": 3}"#).unwrap();
    let (ok, text) = atomgrad(&["train", "--config", file.to_str().unwrap()]);
    assert!(!ok && text.contains("epohcs"), "{text}");
    std::fs::write(&file, "{ not json").unwrap();
    let (ok, text) = atomgrad(&["train", "--config", file.to_str().unwrap()]);
    assert!(!ok && text.contains("moons.json") && text.contains("not valid JSON"), "{text}");
    // --resume takes its settings from the run folder, so it refuses new ones.
    let (ok, text) = atomgrad(&["train", "--resume", out.to_str().unwrap(), "--epochs", "5"]);
    assert!(!ok && text.contains("--epochs") && text.contains("--resume"), "{text}");
    // A folder whose configuration no longer matches its checkpoints is refused, not resumed.
    let cfg_path = out.join("config.json");
    let edited = std::fs::read_to_string(&cfg_path).unwrap().replace("\"hidden\": 16", "\"hidden\": 32");
    std::fs::write(&cfg_path, edited).unwrap();
    let (ok, text) = atomgrad(&["train", "--resume", out.to_str().unwrap()]);
    assert!(!ok && text.contains("other options"), "{text}");
    assert!(!text.contains("panicked"), "{text}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn non_finite_training_stops_with_the_step_and_detect_anomaly_names_the_op() {
    let dir = scratch("nan");
    let out = dir.join("run");
    let args = ["train", "--task", "moons", "--lr", "1e30", "--epochs", "2", "--quiet", "--out", out.to_str().unwrap()];
    let (ok, text) = atomgrad(&args);
    assert!(!ok && text.contains("non-finite value at step 32") && text.contains("training loss"), "{text}");
    let (ok, text) = atomgrad(&[&args[..], &["--force", "--detect-anomaly"]].concat());
    assert!(!ok && text.contains("matmul") && text.contains("NaN/Inf"), "{text}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Ctrl-C (SIGINT) stops after the current step, saves a checkpoint, exits with 130, and the
/// run resumes from there.
#[cfg(unix)]
#[test]
fn ctrl_c_stops_cleanly_and_saves() {
    use std::io::BufRead;
    let dir = scratch("sigint");
    let out = dir.join("run");
    let mut child = Command::new(env!("CARGO_BIN_EXE_atomgrad"))
        .args(["train", "--task", "moons", "--epochs", "2000", "--out", out.to_str().unwrap()])
        .env("NODEVICE_SELECT", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = String::new();
    while !seen.contains("epoch   2 ") {
        seen += &(lines.next().expect("the run ended before epoch 2").unwrap() + "\n");
    }
    let kill = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let status = child.wait().unwrap();
    let text = seen + &rest.join("\n");
    assert_eq!(status.code(), Some(130), "{text}");
    assert!(text.contains("stopped after step") && text.contains("--resume"), "{text}");
    assert!(std::fs::read_dir(out.join("checkpoints")).unwrap().count() >= 2, "no checkpoint saved");
    let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert!(log.lines().all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()), "{log}");
    let (ok, text) = atomgrad(&["train", "--resume", out.to_str().unwrap(), "--max-steps", "1", "--quiet"]);
    assert!(ok && text.contains("stopped after step"), "{text}");
    std::fs::remove_dir_all(&dir).ok();
}

/// `train` checkpoints carry what `explain` needs: the best one of a gated run draws maps.
#[test]
fn explain_draws_a_train_checkpoint() {
    let dir = scratch("explain-train");
    let out = dir.join("run");
    let small = "train --task fashion --method gate --epochs 1 --train-limit 64 --test-limit 32 --batch 16 --quiet";
    let mut args: Vec<&str> = small.split(' ').collect();
    args.extend(["--out", out.to_str().unwrap()]);
    let (ok, text) = atomgrad(&[&args[..], &["--data", "/nonexistent-use-bundled"]].concat());
    assert!(!ok && text.contains("/nonexistent-use-bundled"), "a missing --data folder is named: {text}");
    let (ok, text) = atomgrad(&args);
    assert!(ok, "{text}");
    let best = out.join("checkpoints/best.json");
    let (ok, text) = atomgrad(&["explain", "--checkpoint", best.to_str().unwrap(), "--out", dir.to_str().unwrap()]);
    assert!(ok && dir.join("importance.png").is_file(), "{text}");
    std::fs::remove_dir_all(&dir).ok();
}

/// The GAN loop in a run folder: stopped mid-interval and resumed, it ends with the same tensors
/// (both models, both Adam states) as an uninterrupted run.
#[test]
fn a_resumed_gan_run_is_bit_identical() {
    let dir = scratch("gan-resume");
    let (a, b) = (dir.join("a"), dir.join("b"));
    let common = ["train", "--task", "gan2d", "--method", "atom", "--iters", "40", "--quiet", "--out"];
    let (ok, text) = atomgrad(&[&common[..], &[a.to_str().unwrap()]].concat());
    assert!(ok && text.contains("modes"), "{text}");
    let (ok, text) = atomgrad(&[&common[..], &[b.to_str().unwrap(), "--max-steps", "17"]].concat());
    assert!(ok && text.contains("stopped after step 17"), "{text}");
    let (ok, text) = atomgrad(&["train", "--resume", b.to_str().unwrap(), "--quiet"]);
    assert!(ok, "{text}");
    let last = "checkpoints/ckpt-step-40.safetensors";
    assert!(tensors(&a.join(last)) == tensors(&b.join(last)), "resumed GAN differs");
    for f in ["samples.png", "loss.png", "metrics.jsonl", "config.json"] {
        assert!(b.join(f).is_file(), "{f} missing");
    }
    let (ok, text) = atomgrad(&[
        "train",
        "--task",
        "gan2d",
        "--method",
        "simclr",
        "--iters",
        "20",
        "--quiet",
        "--out",
        dir.join("c").to_str().unwrap(),
    ]);
    assert!(ok && text.contains("modes covered"), "SimCLR on the generator: {text}");
    std::fs::remove_dir_all(&dir).ok();
}

/// SIGKILL at arbitrary moments of a run that checkpoints every few milliseconds: whatever
/// the kill interrupted, every complete checkpoint left in the folder loads, every metrics line
/// parses, and `--resume` continues from the latest complete one.
#[cfg(unix)]
#[test]
fn a_killed_run_leaves_readable_checkpoints_and_resumes() {
    let dir = scratch("sigkill");
    for (k, delay_ms) in [0u64, 30, 120, 400].into_iter().enumerate() {
        let out = dir.join(format!("run{k}"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_atomgrad"))
            .args(["train", "--task", "moons", "--epochs", "100000", "--batch", "256", "--quiet"])
            .args(["--out", out.to_str().unwrap()])
            .env("NODEVICE_SELECT", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Wait for the first complete checkpoint (its sidecar), then kill a little later.
        let ckdir = out.join("checkpoints");
        let t0 = std::time::Instant::now();
        while !std::fs::read_dir(&ckdir)
            .is_ok_and(|d| d.flatten().any(|e| e.file_name().to_string_lossy().starts_with("ckpt-step-")))
        {
            assert!(t0.elapsed().as_secs() < 120, "no checkpoint after 2 minutes");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        child.kill().unwrap(); // SIGKILL: no handler runs
        child.wait().unwrap();
        for e in std::fs::read_dir(&ckdir).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            // A tensors file without its sidecar is a save the kill interrupted (the sidecar is
            // renamed into place last); `--resume` skips it, as checked below.
            if name.ends_with(".safetensors") && !name.starts_with('.') && p.with_extension("json").is_file() {
                atomgrad::checkpoint::load(&p).unwrap_or_else(|e| panic!("{name} unreadable after SIGKILL: {e}"));
            }
        }
        if let Ok(log) = std::fs::read_to_string(out.join("metrics.jsonl")) {
            for l in log.lines() {
                serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("torn metrics line {l:?}: {e}"));
            }
        }
        let (ok, text) = atomgrad(&["train", "--resume", out.to_str().unwrap(), "--max-steps", "1", "--quiet"]);
        assert!(ok, "resume after SIGKILL {delay_ms} ms after the first checkpoint: {text}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// `atomgrad data` writes the split atomgrad trains on, for the PyTorch references: disjoint
/// splits of the sizes the loader reports, and each review's token ids.
#[test]
fn data_writes_the_splits_for_another_framework() {
    let dir = scratch("data");
    let (ok, text) = atomgrad(&["data", "--task", "fashion", "--out", dir.to_str().unwrap()]);
    assert!(ok, "{text}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("fashion-split.json")).unwrap()).unwrap();
    let ids = |k: &str| -> Vec<u64> { v[k].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect() };
    let (train, val, test) = (ids("train"), ids("val"), ids("test"));
    let desc = v["description"].as_str().unwrap();
    assert!(desc.contains(&format!("{} train / {} val / {} test", train.len(), val.len(), test.len())), "{desc}");
    let t: std::collections::HashSet<u64> = train.iter().copied().collect();
    assert!(val.iter().all(|i| !t.contains(i)), "a validation image is also a training image");
    if v["images"]["test"] == v["images"]["train"] {
        assert!(test.iter().all(|i| !t.contains(i) && !val.contains(i)), "the bundled split overlaps");
    }
    let (ok, text) = atomgrad(&["data", "--task", "sentiment", "--out", dir.to_str().unwrap()]);
    assert!(ok, "{text}");
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("reviews.json")).unwrap()).unwrap();
    for split in ["train", "val", "test"] {
        let n = r[split]["labels"].as_array().unwrap().len();
        assert_eq!(r[split]["ids"].as_array().unwrap().len(), n);
        assert!(n > 500, "{split}: {n} reviews");
    }
    let (ok, text) = atomgrad(&["data", "--task", "synthetic", "--out", dir.to_str().unwrap()]);
    assert!(!ok && text.contains("generate"), "{text}");
    std::fs::remove_dir_all(&dir).ok();
}
