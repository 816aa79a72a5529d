//! Run folders under kills, --force, pipes, full disks, concurrent runs and hostile input: no
//! record lost, duplicated, torn or foreign, and never a panic. The kill test aborts a run at
//! every write point (through the test-only `ATOMGRAD_CRASH_AT` hook, see `fsio::crash_point`)
//! and at seeded random moments, resumes it, and checks the folder and the final bits. The storm
//! (100+ random kills) is `cargo test --release --test reliability -- --ignored`.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_atomgrad"));
    c.env("NODEVICE_SELECT", "1").env_remove("ATOMGRAD_CRASH_AT");
    c
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr)
}

fn run(args: &[&str]) -> (Option<i32>, String) {
    let o = bin().args(args).output().unwrap();
    (o.status.code(), text(&o))
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("atomgrad-rel-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&d).ok();
    d
}

fn no_panic(code: Option<i32>, text: &str, what: &str) {
    assert!(!text.contains("panicked") && code != Some(101), "{what}: panicked\n{text}");
}

/// The metrics lines of a run folder; panics on a torn or unparseable line.
fn metrics(dir: &Path) -> Vec<Value> {
    let Ok(t) = std::fs::read_to_string(dir.join("metrics.jsonl")) else { return Vec::new() };
    t.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("torn metrics line {l:?}: {e}"))).collect()
}

/// The tensors of a checkpoint.
fn tensors(path: &Path) -> std::collections::BTreeMap<String, atomgrad::checkpoint::HostTensor> {
    atomgrad::checkpoint::load(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).tensors
}

/// What must hold of a finished run folder of `epochs` epochs: one metrics line per epoch in
/// order, the best checkpoint present with the best validation accuracy, no temporary files.
fn check_finished(dir: &Path, epochs: usize) {
    let m = metrics(dir);
    let got: Vec<u64> = m.iter().map(|l| l["epoch"].as_u64().unwrap()).collect();
    assert_eq!(got, (0..epochs as u64).collect::<Vec<_>>(), "{}: epochs lost or repeated", dir.display());
    let best = atomgrad::checkpoint::load(&dir.join("checkpoints/best.json")).expect("a best checkpoint");
    let top = m.iter().map(|l| l["val_accuracy"].as_f64().unwrap()).fold(f64::NEG_INFINITY, f64::max);
    assert_eq!(best.sidecar["metric"].as_f64(), Some(top), "{}: best is not the best", dir.display());
    assert!(dir.join("result.json").is_file());
    for d in [dir.to_path_buf(), dir.join("checkpoints")] {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            assert!(!n.contains(".tmp-"), "{}: temporary file {n} left", d.display());
        }
    }
}

const MOONS: [&str; 9] = ["train", "--task", "moons", "--epochs", "3", "--batch", "256", "--quiet", "--out"];
const FINAL: &str = "checkpoints/ckpt-step-24.safetensors";

/// Brings a run interrupted in any way to its end: resumed while it has a configuration, started
/// again (without --force: nothing of it is visible yet) otherwise.
fn finish(dir: &Path) {
    let (code, t) = if dir.join("config.json").is_file() {
        run(&["train", "--resume", dir.to_str().unwrap(), "--quiet"])
    } else {
        run(&[&MOONS[..], &[dir.to_str().unwrap()]].concat())
    };
    no_panic(code, &t, "finishing");
    assert_eq!(code, Some(0), "{}: could not finish the run: {t}", dir.display());
}

#[cfg(unix)]
#[test]
fn kills_at_every_write_point_lose_and_repeat_nothing() {
    let dir = scratch("points");
    let reference = dir.join("ref");
    let (code, t) = run(&[&MOONS[..], &[reference.to_str().unwrap()]].concat());
    assert_eq!(code, Some(0), "{t}");
    let want = tensors(&reference.join(FINAL));
    let points = [
        "atomic-before-rename",
        "atomic-after-rename",
        "metrics-torn",
        "metrics-after-line",
        "checkpoint-before-renames",
        "checkpoint-between-renames",
        "checkpoint-after-renames",
        "checkpoint-before-best",
        "checkpoint-before-prune",
    ];
    let mut crashed = 0;
    for point in points {
        for n in [1, 3] {
            let out = dir.join(format!("{point}-{n}"));
            let o = bin()
                .args([&MOONS[..], &[out.to_str().unwrap()]].concat())
                .env("ATOMGRAD_CRASH_AT", format!("{point}:{n}"))
                .output()
                .unwrap();
            crashed += (!o.status.success()) as usize;
            // Whatever is on disk now parses: every metrics line but a torn last one (which resume
            // drops), every complete checkpoint.
            let text = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap_or_default();
            let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
            for l in complete.lines() {
                serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{point}:{n}: bad line {l:?}: {e}"));
            }
            if let Ok(d) = std::fs::read_dir(out.join("checkpoints")) {
                for e in d.flatten() {
                    let n = e.file_name().to_string_lossy().into_owned();
                    if n.ends_with(".json") && !n.starts_with('.') {
                        atomgrad::checkpoint::load(&e.path()).unwrap_or_else(|e| panic!("{point}:{n}: {e}"));
                    }
                }
            }
            finish(&out);
            check_finished(&out, 3);
            assert!(tensors(&out.join(FINAL)) == want, "{point}:{n}: the resumed run ended elsewhere");
        }
    }
    assert!(crashed >= points.len(), "only {crashed} of the injected crashes fired");
    std::fs::remove_dir_all(&dir).ok();
}

/// SIGKILL at `n` seeded random moments of one run, resumed after each; returns how many kills
/// landed before the run finished.
#[cfg(unix)]
fn random_kills(dir: &Path, epochs: usize, n: usize, seed: u64, max_delay_ms: u64) -> usize {
    let mut rng = atomgrad::rng::Rng::new(seed);
    let mut landed = 0;
    let args: Vec<String> = ["train", "--task", "moons", "--batch", "256", "--quiet", "--epochs", &epochs.to_string()]
        .iter()
        .map(|s| s.to_string())
        .chain(["--out".into(), dir.to_str().unwrap().into()])
        .collect();
    for _ in 0..n {
        let mut cmd = bin();
        if dir.join("config.json").is_file() {
            cmd.args(["train", "--resume", dir.to_str().unwrap(), "--quiet"]);
        } else {
            cmd.args(&args);
        }
        let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(rng.below(max_delay_ms as usize) as u64));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            landed += 1;
        }
        child.wait().unwrap();
    }
    finish(dir);
    landed
}

#[cfg(unix)]
#[test]
fn random_kills_lose_and_repeat_nothing() {
    let dir = scratch("random");
    let reference = dir.join("ref");
    let (code, t) = run(&[&MOONS[..], &[reference.to_str().unwrap()]].concat());
    assert_eq!(code, Some(0), "{t}");
    let out = dir.join("killed");
    let landed = random_kills(&out, 3, 6, 11, 700);
    assert!(landed >= 1, "no kill landed");
    check_finished(&out, 3);
    assert!(tensors(&out.join(FINAL)) == tensors(&reference.join(FINAL)), "the killed run ended elsewhere");
    std::fs::remove_dir_all(&dir).ok();
}

/// The storm: 160 SIGKILLs at random moments of 600-epoch runs (not in CI: a few minutes).
/// Prints the figures the README's reliability section quotes.
#[cfg(unix)]
#[test]
#[ignore]
fn storm_of_random_kills() {
    let dir = scratch("storm");
    let epochs = 600;
    let reference = dir.join("ref");
    let (code, t) = run(&[
        "train",
        "--task",
        "moons",
        "--batch",
        "256",
        "--quiet",
        "--epochs",
        &epochs.to_string(),
        "--out",
        reference.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{t}");
    let (mut kills, mut lost, mut repeated, mut torn, mut diverged) = (0, 0, 0, 0, 0);
    for round in 0..4 {
        let out = dir.join(format!("run{round}"));
        kills += random_kills(&out, epochs, 40, 100 + round, 900);
        let text = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
        let lines: Vec<Option<Value>> = text.lines().map(|l| serde_json::from_str(l).ok()).collect();
        torn += lines.iter().filter(|l| l.is_none()).count();
        let epochs_seen: Vec<u64> = lines.iter().flatten().map(|l| l["epoch"].as_u64().unwrap()).collect();
        let distinct: std::collections::BTreeSet<u64> = epochs_seen.iter().copied().collect();
        repeated += epochs_seen.len() - distinct.len();
        lost += epochs - distinct.len();
        let last = format!("checkpoints/ckpt-step-{}.safetensors", epochs * 8);
        diverged += (tensors(&out.join(&last)) != tensors(&reference.join(&last))) as usize;
        check_finished(&out, epochs);
    }
    println!("storm: {kills} kills landed; records lost {lost}, repeated {repeated}, torn {torn}; runs ending elsewhere {diverged}");
    assert_eq!((lost, repeated, torn, diverged), (0, 0, 0, 0));
    assert!(kills >= 100, "only {kills} kills landed");
    std::fs::remove_dir_all(&dir).ok();
}

/// The issue's repros, each a one-line error or the right result.
#[cfg(unix)]
#[test]
fn repros_give_one_line_errors_or_the_right_result() {
    let dir = scratch("repros");
    std::fs::create_dir_all(&dir).unwrap();
    let d = |n: &str| dir.join(n).to_str().unwrap().to_string();
    // D1: --force leaves no trace of the old run; the new run's resume continues the new run.
    let f = d("F");
    let (code, t) = run(&["train", "--task", "synthetic", "--epochs", "3", "--out", &f, "--quiet"]);
    assert_eq!(code, Some(0), "{t}");
    let (code, t) = run(&[
        "train",
        "--task",
        "synthetic",
        "--epochs",
        "2",
        "--seed",
        "1",
        "--lr",
        "0.01",
        "--out",
        &f,
        "--force",
        "--max-steps",
        "40",
        "--quiet",
    ]);
    assert_eq!(code, Some(0), "{t}");
    let names: Vec<String> = std::fs::read_dir(dir.join("F/checkpoints"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains("ckpt-step-96")), "old checkpoints kept: {names:?}");
    assert_eq!(metrics(&dir.join("F")).len(), 1, "the old run's metrics kept");
    let (code, t) = run(&["train", "--resume", &f, "--quiet"]);
    assert_eq!(code, Some(0), "{t}");
    assert!(t.contains("seed 1") && t.contains("of 2"), "{t}");
    // A checkpoint copied in from another run is refused.
    let g = d("G");
    assert_eq!(run(&["train", "--task", "synthetic", "--epochs", "1", "--out", &g, "--quiet"]).0, Some(0));
    for ext in ["safetensors", "json"] {
        std::fs::copy(
            dir.join(format!("G/checkpoints/ckpt-step-32.{ext}")),
            dir.join(format!("F/checkpoints/ckpt-step-9999.{ext}")),
        )
        .unwrap();
    }
    let (code, t) = run(&["train", "--resume", &f]);
    assert!(code == Some(1) && t.contains("other options") && t.lines().count() == 1, "{t}");
    // --force does not empty a folder that is not an atomgrad folder.
    let plain = dir.join("plain");
    std::fs::create_dir_all(&plain).unwrap();
    std::fs::write(plain.join("thesis.tex"), "x").unwrap();
    let (code, t) = run(&["train", "--out", plain.to_str().unwrap(), "--force", "--quiet"]);
    assert!(code != Some(0) && t.contains("refusing to empty") && plain.join("thesis.tex").is_file(), "{t}");

    // D2 + D6: a closed pipe does not kill the run, and resume repeats no metrics line.
    let p = d("P");
    let sh = format!("{} train --epochs 5 --out {p} | head -3", env!("CARGO_BIN_EXE_atomgrad"));
    let o = Command::new("sh").args(["-c", &sh]).env("NODEVICE_SELECT", "1").output().unwrap();
    no_panic(o.status.code(), &text(&o), "| head -3");
    assert!(std::fs::read_to_string(dir.join("P/result.json")).is_ok(), "the run died with its pipe");
    let (code, t) = run(&["train", "--resume", &p, "--quiet"]);
    assert_eq!(code, Some(0), "{t}");
    assert_eq!(metrics(&dir.join("P")).len(), 5);
    let o = Command::new("sh")
        .args(["-c", &format!("{} info | head -1", env!("CARGO_BIN_EXE_atomgrad"))])
        .env("NODEVICE_SELECT", "1")
        .output()
        .unwrap();
    no_panic(o.status.code(), &text(&o), "info | head -1");
    let full = std::fs::File::create("/dev/full");
    if let Ok(full) = full {
        let o = bin().args(["train", "--quiet", "--out", &d("Q")]).stdout(full).output().unwrap();
        no_panic(o.status.code(), &text(&o), "> /dev/full");
        assert!(o.status.success(), "{}", text(&o));
    }

    // D5: non-UTF-8 arguments.
    use std::os::unix::ffi::OsStrExt;
    let o = bin().arg("train").arg("--out").arg(std::ffi::OsStr::from_bytes(b"x\xff")).output().unwrap();
    assert!(o.status.code() == Some(2) && text(&o).contains("not valid UTF-8"), "{}", text(&o));

    // D7: a second process on a locked folder is refused, naming the holder.
    let l = d("L");
    let mut holder = bin()
        .args(["train", "--task", "moons", "--epochs", "100000", "--quiet", "--out", &l])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while !dir.join("L/config.json").is_file() {
        assert!(t0.elapsed().as_secs() < 60);
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    for args in [vec!["train", "--resume", &l], vec!["train", "--out", &l, "--force", "--quiet"]] {
        let (code, t) = run(&args);
        assert!(
            code != Some(0) && t.contains("in use by another atomgrad process") && t.contains(&holder.id().to_string()),
            "{args:?}: {t}"
        );
    }
    holder.kill().unwrap();
    holder.wait().unwrap();

    // D8: an edited sidecar whose position does not fit the run.
    let e = d("E");
    assert_eq!(run(&["train", "--epochs", "2", "--out", &e, "--quiet"]).0, Some(0));
    let side = dir.join("E/checkpoints/ckpt-step-64.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&side).unwrap()).unwrap();
    v["fit"] = serde_json::json!({"epoch": 99, "pos": 0, "step": 64, "rng": 1, "history": []});
    std::fs::write(&side, serde_json::to_string(&v).unwrap()).unwrap();
    let (code, t) = run(&["train", "--resume", &e]);
    no_panic(code, &t, "edited sidecar");
    assert!(code == Some(1) && t.contains("does not fit this run"), "{t}");

    // D9, D10, D12, D16: refused before any folder exists.
    for (args, want) in [
        (vec!["compare", "--seeds", "18446744073709551615", "--out", &d("X1")], "--seeds"),
        (vec!["train", "--task", "moons", "--method", "atom", "--out", &d("X2")], "atom"),
        (vec!["compare", "--batch", "0", "--out", &d("X3")], "batch"),
        (vec!["train", "--task", "fashion", "--test-limit", "0", "--out", &d("X4")], "--test-limit"),
        (vec!["train", "--lambda", "nan", "--out", &d("X5")], "--lambda"),
        (vec!["train", "--task", "synthetic", "--method", "hinge-l1", "--lambda", "nan", "--out", &d("X6")], "lambda"),
    ] {
        let (code, t) = run(&args);
        no_panic(code, &t, &format!("{args:?}"));
        assert!(code != Some(0) && t.contains(want) && t.trim().lines().count() == 1, "{args:?}: {t}");
        let out = args[args.len() - 1];
        assert!(!Path::new(out).exists(), "{args:?} left {out} behind");
    }

    // D11: temporary files a killed writer left are removed when the folder is next opened.
    let stale = dir.join("E/checkpoints/.ckpt-step-64.safetensors.tmp-99999");
    std::fs::write(&stale, b"junk").unwrap();
    std::fs::write(dir.join("E/.config.json.tmp-99999"), b"junk").unwrap();
    let (code, t) = run(&["train", "--resume", &e]);
    assert!(code == Some(1), "{t}");
    assert!(!stale.exists() && !dir.join("E/.config.json.tmp-99999").exists(), "stale temporary files kept");

    // D13: --max-steps N takes N steps (0 takes none).
    for (n, want) in [(0usize, 0usize), (5, 5)] {
        let m = d(&format!("M{n}"));
        let (code, t) = run(&["train", "--out", &m, "--max-steps", &n.to_string(), "--quiet"]);
        assert!(code == Some(0) && t.contains(&format!("stopped after step {want};")), "{n}: {t}");
    }

    // D14: clap errors are one line; a negative value in a config file reaches the option; help
    // cannot come from a config file.
    let (code, t) = run(&["train", "--bogus-option"]);
    assert!(code == Some(2) && t.trim().lines().count() == 1 && t.contains("--bogus-option"), "{t}");
    let cfg = dir.join("neg.json");
    std::fs::write(&cfg, r#"{"lr": -0.01}"#).unwrap();
    let (code, t) = run(&["train", "--config", cfg.to_str().unwrap(), "--out", &d("X7")]);
    assert!(code != Some(0) && t.contains("--lr must be a positive number, got -0.01"), "{t}");
    std::fs::write(&cfg, r#"{"help": true}"#).unwrap();
    let (code, t) = run(&["train", "--config", cfg.to_str().unwrap()]);
    assert!(code == Some(2) && t.contains("neg.json") && t.contains("help"), "{t}");
    std::fs::write(&cfg, r#"{"epohcs": 3}"#).unwrap();
    let (code, t) = run(&["train", "--config", cfg.to_str().unwrap()]);
    assert!(code == Some(2) && t.contains("neg.json") && t.contains("epohcs"), "{t}");

    // D18: resuming a comparison folder as a run creates nothing in it.
    let c = d("C");
    let (code, t) = run(&["compare", "--seeds", "1", "--epochs", "1", "--methods", "ce", "--out", &c, "--quiet"]);
    assert_eq!(code, Some(0), "{t}");
    let (code, t) = run(&["train", "--resume", &c]);
    assert!(code == Some(1) && t.contains("compare --resume"), "{t}");
    assert!(!dir.join("C/checkpoints").exists(), "train --resume wrote into a comparison folder");
    std::fs::remove_dir_all(&dir).ok();
}

/// Hostile command lines and config files: always an exit status, never a panic.
#[cfg(unix)]
#[test]
fn fuzzed_command_lines_never_panic() {
    use std::os::unix::ffi::OsStrExt;
    let dir = scratch("fuzz");
    std::fs::create_dir_all(&dir).unwrap();
    let values: Vec<&[u8]> = vec![
        b"",
        b"-1",
        b"0",
        b"1",
        b"-0",
        b"1e309",
        b"-1e309",
        b"18446744073709551616",
        b"99999999999999999999999",
        b"nan",
        b"inf",
        b"-inf",
        b"0x10",
        b"abc",
        b"\xff\xfe",
        b"1,2,,3",
        b"ce,,atom",
        b"ring8",
        b"/dev/null",
    ];
    let options = [
        "--epochs",
        "--iters",
        "--batch",
        "--lr",
        "--lambda",
        "--lambdas",
        "--seed",
        "--seeds",
        "--train-limit",
        "--test-limit",
        "--hidden",
        "--channels",
        "--mixture",
        "--task",
        "--method",
        "--methods",
        "--max-steps",
        "--data",
        "--config",
    ];
    let mut rng = atomgrad::rng::Rng::new(5);
    for k in 0..160 {
        let sub = if k % 2 == 0 { "train" } else { "compare" };
        let mut cmd = bin();
        cmd.current_dir(&dir).arg(sub);
        for _ in 0..1 + rng.below(3) {
            cmd.arg(options[rng.below(options.len())]);
            cmd.arg(std::ffi::OsStr::from_bytes(values[rng.below(values.len())]));
        }
        // Never a long run: train stops before its first step, compare is refused by its task.
        if sub == "train" {
            cmd.args(["--max-steps", "0"]);
        } else {
            cmd.args(["--task", "moons"]);
        }
        cmd.arg("--out").arg(dir.join(format!("o{k}")));
        let o = cmd.output().unwrap();
        no_panic(o.status.code(), &text(&o), &format!("{cmd:?}"));
        assert!(o.status.code().is_some(), "{cmd:?} died by a signal");
    }
    // Config files of every JSON shape.
    let cfgs = [
        "[]",
        "3",
        "null",
        "{\"epochs\": {\"a\": 1}}",
        "{\"epochs\": [[1]]}",
        "{\"epochs\": 1e400}",
        "{\"lr\": -1}",
        "{\"task\": 7}",
        "{\"seed\": -3}",
        "{\"\": 1}",
        "{\"max-steps\": true}",
        "{\"out\": null}",
        "{",
    ];
    for (i, c) in cfgs.iter().enumerate() {
        let f = dir.join(format!("c{i}.json"));
        std::fs::write(&f, c).unwrap();
        let o = bin()
            .current_dir(&dir)
            .args(["train", "--config", f.to_str().unwrap(), "--max-steps", "0", "--out"])
            .arg(dir.join(format!("c{i}")))
            .output()
            .unwrap();
        no_panic(o.status.code(), &text(&o), c);
    }
    std::fs::remove_dir_all(&dir).ok();
}
