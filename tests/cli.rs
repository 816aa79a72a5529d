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
        "results.json",
        "results.md",
        "accuracy.png",
        "importance-gate.png",
        "model-gate.safetensors",
        "model-gate.json",
    ] {
        assert!(run.join(f).is_file(), "{f} missing; output:\n{text}");
    }
    // A second run into the same folder is refused rather than overwriting the first.
    let (ok, text) = atomgrad(&["compare", "--task", "synthetic", "--seeds", "1", "--epochs", "1", "--out", run_s]);
    assert!(!ok && text.contains("already holds results") && text.contains("--force"), "{text}");
    let ckpt = run.join("model-gate.safetensors");
    let (ok, text) =
        atomgrad(&["explain", "--checkpoint", ckpt.to_str().unwrap(), "--out", dir.join("explain").to_str().unwrap()]);
    assert!(ok, "{text}");
    assert!(dir.join("explain/explain-gate.png").is_file(), "{text}");
    // The explained model scores what the comparison reported (same weights, same test images).
    let results = std::fs::read_to_string(run.join("results.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&results).unwrap();
    let acc = v["rows"][0]["test_accuracy"][0].as_f64().unwrap();
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
    assert!(!text.contains("panicked"), "{text}");
}
