//! Checkpoints (`src/checkpoint.rs`): bit-exact round trips of models (with batch-norm running
//! statistics) and optimizer state, the safetensors layout checked byte by byte against the
//! format, strict restores that change nothing on a mismatch, keep-last + best bookkeeping,
//! atomic saves, corrupt files as `Error::Data`, and a resumed training run that ends
//! bit-identical to an uninterrupted one.
mod common;
use atomgrad::atom::TokenMask;
use atomgrad::checkpoint::{self, CheckpointSet, HostData, Meta};
use atomgrad::data::{epoch_batches, moons, Dataset};
use atomgrad::nn::cnn::Cnn;
use atomgrad::nn::transformer::{Transformer, TransformerConfig};
use atomgrad::nn::{Activation, Mlp};
use atomgrad::optim::{Adam, AdamConfig, Optimizer};
use atomgrad::rng::Rng;
use atomgrad::{DType, Device, Error, Tape, Tensor};
use common::device;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// A fresh scratch folder for one test.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("atomgrad-ckpt-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

/// Raw bits of a tensor (F32 as bit patterns, so NaN payloads and -0.0 compare exactly).
fn bits(t: &Tensor) -> Vec<u32> {
    match t.dtype() {
        DType::F32 => t.to_vec().unwrap().iter().map(|v| v.to_bits()).collect(),
        DType::U32 => t.to_vec_u32().unwrap(),
    }
}

fn host_bits(d: &HostData) -> Vec<u32> {
    match d {
        HostData::F32(v) => v.iter().map(|v| v.to_bits()).collect(),
        HostData::U32(v) => v.clone(),
    }
}

fn all_bits(list: &[(String, Tensor)]) -> Vec<(String, Vec<usize>, Vec<u32>)> {
    list.iter().map(|(k, t)| (k.clone(), t.shape().to_vec(), bits(t))).collect()
}

fn expect_data_err<T: std::fmt::Debug>(r: atomgrad::Result<T>, file: &Path, what: &str) -> String {
    match r {
        Err(Error::Data { path, msg }) => {
            assert!(
                path.ends_with(&*file.file_name().unwrap().to_string_lossy()),
                "{what}: error names {path}, expected {}",
                file.display()
            );
            msg
        }
        other => panic!("{what}: expected Error::Data for {}, got {other:?}", file.display()),
    }
}

const BATCH: usize = 32;

/// Runs steps `from..to` of the two-moons loop of `train::train_moons` (per-epoch shuffles from
/// the host RNG, Adam, one submit per step). `epoch_rng` is the RNG state at the start of the
/// epoch holding step `from`; returns the state at the start of the epoch holding step `to`,
/// which is what a checkpoint stores (with the step) to continue mid-epoch.
fn run_steps(
    dev: &Device,
    model: &Mlp,
    opt: &mut Adam,
    data: &Dataset,
    mut epoch_rng: u64,
    from: usize,
    to: usize,
) -> u64 {
    let spe = data.len() / BATCH;
    let mut step = from;
    while step < to {
        let mut rng = Rng::from_state(epoch_rng);
        let batches = epoch_batches(data.len(), BATCH, &mut rng);
        for idx in &batches[step % spe..] {
            if step == to {
                return epoch_rng;
            }
            let (bx, by) = data.batch(idx);
            let tape = Tape::new();
            let x = tape.constant(Tensor::from_slice(dev, &bx, &[idx.len(), 2]).unwrap());
            let y = Tensor::from_u32(dev, &by, &[idx.len()]).unwrap();
            let loss = model.forward(&tape, &x).unwrap().cross_entropy(&y).unwrap();
            loss.backward().unwrap();
            opt.step().unwrap();
            opt.zero_grad();
            drop(tape);
            dev.flush().unwrap();
            step += 1;
        }
        epoch_rng = rng.state();
    }
    epoch_rng
}

fn moons_model(dev: &Device, seed: u64) -> (Mlp, Adam) {
    let model = Mlp::new(dev, "mlp", &[2, 16, 16, 2], Activation::Relu, seed).unwrap();
    let opt = Adam::new(model.params(), AdamConfig::adam(1e-2)).unwrap();
    (model, opt)
}

fn model_and_optim(model: &[(String, Tensor)], opt: &dyn Optimizer) -> Vec<(String, Tensor)> {
    let mut t = checkpoint::prefixed("model.", model.to_vec());
    t.extend(checkpoint::prefixed("optim.", opt.state().unwrap()));
    t
}

#[test]
fn rng_state_continues_the_same_stream() {
    let mut a = Rng::new(7);
    for _ in 0..5 {
        a.next_u64();
    }
    let mut b = Rng::from_state(a.state());
    assert_eq!((0..100).map(|_| a.next_u64()).collect::<Vec<_>>(), (0..100).map(|_| b.next_u64()).collect::<Vec<_>>());
}

/// Mlp + Adam after a few steps: every tensor (F32 parameters and moments, U32 step counts) and
/// the sidecar come back bit-exact, into a differently initialised model and a fresh optimizer.
#[test]
fn mlp_and_adam_state_round_trip_bit_exact() {
    let dev = device();
    let dir = scratch("mlp");
    let data = moons(256, 0.1, 1);
    let (model, mut opt) = moons_model(&dev, 0);
    let rng = run_steps(&dev, &model, &mut opt, &data, Rng::new(5).state(), 0, 3);
    let saved = model_and_optim(&model.tensors(), &opt);
    assert!(saved.iter().any(|(k, t)| k == "optim.mlp.0.w.step" && t.dtype() == DType::U32));
    let meta = Meta {
        step: 3,
        epoch: 0,
        config: json!({"hidden": 16, "lr": 1e-2}),
        optimizer_steps: [("adam".to_string(), opt.step_count())].into(),
        rng_state: Some(rng),
        metric: Some(0.75),
        adapter: dev.describe(),
    };
    let path = dir.join("mlp.safetensors");
    checkpoint::save(&path, &saved, &meta.to_value()).unwrap();
    assert!(dir.join("mlp.json").is_file(), "sidecar beside the tensors file");

    let ck = checkpoint::load(&path).unwrap();
    assert_eq!(ck.meta().unwrap(), meta);
    assert_eq!(ck.sidecar["format"], "atomgrad-checkpoint");
    assert_eq!(ck.sidecar["format_version"], 1);
    assert_eq!(ck.sidecar["tensors_file"], "mlp.safetensors");
    assert_eq!(ck.tensors.len(), saved.len());
    for (name, t) in &saved {
        let h = ck.get(name).unwrap_or_else(|| panic!("{name} missing after load"));
        assert_eq!((h.dtype(), h.shape.as_slice()), (t.dtype(), t.shape()), "{name}");
        assert_eq!(host_bits(&h.data), bits(t), "{name} is not bit-exact");
    }

    let (fresh, mut fresh_opt) = moons_model(&dev, 1234);
    assert_ne!(all_bits(&fresh.tensors()), all_bits(&model.tensors()), "a different init to overwrite");
    ck.select("model.").restore_into(&fresh.tensors()).unwrap();
    assert_eq!(all_bits(&fresh.tensors()), all_bits(&model.tensors()));
    fresh_opt.load_state(&ck.select("optim.").upload(&dev).unwrap()).unwrap();
    assert_eq!(fresh_opt.step_count(), 3);
    assert_eq!(all_bits(&fresh_opt.state().unwrap()), all_bits(&opt.state().unwrap()));
    fs::remove_dir_all(&dir).unwrap();
}

/// Cnn with both batch norms' running statistics after two training steps (and Adam state):
/// restored into another Cnn, every tensor is bit-identical and so is the evaluation forward.
#[test]
fn cnn_with_batch_norm_running_stats_round_trip_bit_exact() {
    let dev = device();
    let dir = scratch("cnn");
    let n = 2;
    let mut rng = Rng::new(3);
    let x: Vec<f32> = (0..n * 784).map(|_| rng.normal() as f32).collect();
    let xt = Tensor::from_slice(&dev, &x, &[n, 1, 28, 28]).unwrap();
    let yt = Tensor::from_u32(&dev, &[0, 2], &[n]).unwrap();
    let mask = TokenMask::new(&dev, &vec![49; n], 49).unwrap();
    let model = Cnn::new(&dev, 2, 3, 3, 0).unwrap();
    let init_stats = bits(&model.bn1.state.running_mean);
    let mut opt = Adam::new(model.params(true), AdamConfig::adam(1e-2)).unwrap();
    for _ in 0..2 {
        let tape = Tape::new();
        let out = model.forward(&tape, &tape.constant(xt.clone()), true, true, &mask).unwrap();
        out.logits.cross_entropy(&yt).unwrap().backward().unwrap();
        opt.step().unwrap();
        opt.zero_grad();
        dev.flush().unwrap();
    }
    assert_ne!(bits(&model.bn1.state.running_mean), init_stats, "training updated the running stats");
    let names: BTreeSet<String> = model.tensors().into_iter().map(|(k, _)| k).collect();
    assert_eq!(names.len(), model.tensors().len(), "tensor names are unique");
    for k in ["bn1.running_mean", "bn1.running_var", "bn2.running_mean", "bn2.running_var", "importance.u"] {
        assert!(names.contains(k), "{k} listed by Cnn::tensors");
    }

    let path = dir.join("cnn.safetensors");
    checkpoint::save(&path, &model_and_optim(&model.tensors(), &opt), &json!({"step": 2})).unwrap();
    let ck = checkpoint::load(&path).unwrap();
    let other = Cnn::new(&dev, 2, 3, 3, 77).unwrap();
    ck.select("model.").restore_into(&other.tensors()).unwrap();
    assert_eq!(all_bits(&other.tensors()), all_bits(&model.tensors()));
    let mut other_opt = Adam::new(other.params(true), AdamConfig::adam(1e-2)).unwrap();
    other_opt.load_state(&ck.select("optim.").upload(&dev).unwrap()).unwrap();
    assert_eq!(all_bits(&other_opt.state().unwrap()), all_bits(&opt.state().unwrap()));

    let eval = |m: &Cnn| {
        let tape = Tape::no_grad();
        bits(m.forward(&tape, &tape.constant(xt.clone()), false, true, &mask).unwrap().logits.value())
    };
    assert_eq!(eval(&other), eval(&model), "evaluation (running stats) forward is identical");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn transformer_tensors_are_unique_and_round_trip() {
    let dev = device();
    let dir = scratch("transformer");
    let cfg = TransformerConfig { vocab: 11, max_len: 5, d: 8, heads: 2, layers: 2, ff: 16, dropout: 0.0, classes: 2 };
    let a = Transformer::new(&dev, cfg.clone(), 0).unwrap();
    let b = Transformer::new(&dev, cfg, 9).unwrap();
    let t = a.tensors();
    assert_eq!(t.len(), a.params(true).len());
    assert_eq!(t.iter().map(|(k, _)| k).collect::<BTreeSet<_>>().len(), t.len(), "unique names");
    let path = dir.join("tr.safetensors");
    checkpoint::save(&path, &t, &json!({})).unwrap();
    checkpoint::load(&path).unwrap().restore_into(&b.tensors()).unwrap();
    assert_eq!(all_bits(&b.tensors()), all_bits(&t));
    fs::remove_dir_all(&dir).unwrap();
}

fn header_of(bytes: &[u8]) -> (usize, Value) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    (n, serde_json::from_slice(&bytes[8..8 + n]).unwrap())
}

/// The bytes follow the safetensors format (parsed by hand here, as `safetensors.numpy.load_file`
/// would): 8-byte little-endian header length, a JSON header (padded to 8 bytes) whose entries
/// have dtype / shape / data_offsets and whose `__metadata__` is a string map, then the tensors'
/// little-endian bytes covering the rest of the file exactly.
#[test]
fn file_layout_follows_the_safetensors_format() {
    let dev = device();
    let dir = scratch("layout");
    let w = Tensor::from_slice(&dev, &[1.5, -0.0, f32::MIN_POSITIVE, 3.0e38, -2.25, 7.0], &[2, 3]).unwrap();
    let s = Tensor::from_slice(&dev, &[0.125], &[]).unwrap();
    let c = Tensor::from_u32(&dev, &[7, u32::MAX, 0], &[3]).unwrap();
    let list = vec![("w".to_string(), w), ("s".to_string(), s), ("optim.step".to_string(), c)];
    let path = dir.join("l.safetensors");
    checkpoint::save(&path, &list, &json!({"step": 1})).unwrap();
    let bytes = fs::read(&path).unwrap();
    let (n, header) = header_of(&bytes);
    assert_eq!(n % 8, 0, "header padded to a multiple of 8 bytes");
    let obj = header.as_object().unwrap();
    assert_eq!(obj["__metadata__"], json!({"format": "atomgrad-checkpoint", "format_version": "1"}));
    let data = &bytes[8 + n..];
    let mut spans = Vec::new();
    for (name, t) in &list {
        let e = &obj[name.as_str()];
        let dtype = if t.dtype() == DType::F32 { "F32" } else { "U32" };
        assert_eq!(e["dtype"], dtype, "{name}");
        assert_eq!(e["shape"], json!(t.shape()), "{name}");
        let (b, end) =
            (e["data_offsets"][0].as_u64().unwrap() as usize, e["data_offsets"][1].as_u64().unwrap() as usize);
        assert_eq!(end - b, 4 * t.numel(), "{name}");
        let le: Vec<u32> = data[b..end].chunks(4).map(|w| u32::from_le_bytes(w.try_into().unwrap())).collect();
        assert_eq!(le, bits(t), "{name}: little-endian values");
        spans.push((b, end));
    }
    assert_eq!(obj.len(), list.len() + 1, "only the tensors and __metadata__");
    spans.sort();
    assert_eq!(spans[0].0, 0);
    assert!(spans.windows(2).all(|p| p[0].1 == p[1].0), "contiguous, no overlap: {spans:?}");
    assert_eq!(spans.last().unwrap().1, data.len(), "the tensors cover the data section exactly");
    // The same file through the crate's reader (no sidecar): identical values.
    let back = checkpoint::load_tensors(&path).unwrap();
    for (name, t) in &list {
        assert_eq!(host_bits(&back[name].data), bits(t));
    }
    fs::remove_dir_all(&dir).unwrap();
}

/// Restoring into another model shape names each tensor with both shapes and leaves every target
/// tensor untouched, including those that would have matched; so do missing, extra and
/// wrong-dtype tensors.
#[test]
fn restore_mismatch_errors_name_the_tensor_and_change_nothing() {
    let dev = device();
    let dir = scratch("mismatch");
    let small = Mlp::new(&dev, "mlp", &[2, 8, 2], Activation::Relu, 0).unwrap();
    let mut opt = Adam::new(small.params(), AdamConfig::default()).unwrap();
    opt.step().unwrap(); // no gradients: only the step counter
    let path = dir.join("small.safetensors");
    checkpoint::save(&path, &model_and_optim(&small.tensors(), &opt), &json!({})).unwrap();
    let ck = checkpoint::load(&path).unwrap();

    let restore_err = |ck: &checkpoint::Checkpoint, targets: &[(String, Tensor)]| {
        let before = all_bits(targets);
        let e = ck.restore_into(targets).unwrap_err();
        assert_eq!(all_bits(targets), before, "a failed restore modified a target");
        match e {
            Error::Shape { op: "restore_into", msg } => msg,
            other => panic!("expected a restore_into shape error, got {other:?}"),
        }
    };

    let wide = Mlp::new(&dev, "mlp", &[2, 16, 2], Activation::Relu, 1).unwrap();
    let msg = restore_err(&ck.select("model."), &wide.tensors());
    for part in
        ["checkpoint from another model shape", "\"mlp.0.w\"", "[2, 8]", "[2, 16]", "\"mlp.1.w\"", "[8, 2]", "[16, 2]"]
    {
        assert!(msg.contains(part), "{part:?} not in: {msg}");
    }
    assert!(msg.contains("small.safetensors"), "names the file: {msg}");

    // Only the last layer differs: the matching first layer must not be written either.
    let other_out = Mlp::new(&dev, "mlp", &[2, 8, 3], Activation::Relu, 2).unwrap();
    let msg = restore_err(&ck.select("model."), &other_out.tensors());
    assert!(msg.contains("\"mlp.1.b\"") && msg.contains("[2]") && msg.contains("[3]"), "{msg}");
    assert!(!msg.contains("\"mlp.0.w\""), "{msg}");

    let same = Mlp::new(&dev, "mlp", &[2, 8, 2], Activation::Relu, 3).unwrap();
    let msg = restore_err(&ck, &checkpoint::prefixed("model.", same.tensors()));
    assert!(msg.contains("extra tensor \"optim.step\"") && !msg.contains("model.mlp"), "{msg}");
    let msg = restore_err(&ck, &same.tensors());
    assert!(msg.contains("no tensor name in common") && msg.contains("\"model.mlp.0.b\""), "{msg}");
    let mut targets = same.tensors();
    targets.push(("mlp.2.w".into(), Tensor::zeros(&dev, &[2, 2]).unwrap()));
    let msg = restore_err(&ck.select("model."), &targets);
    assert!(msg.contains("\"mlp.2.w\"") && msg.contains("missing"), "{msg}");
    let msg = restore_err(&ck.select("optim."), &[("step".into(), Tensor::zeros(&dev, &[1]).unwrap())]);
    assert!(msg.contains("\"step\" is U32 in the checkpoint but F32"), "{msg}");
    fs::remove_dir_all(&dir).unwrap();
}

fn filled(dev: &Device, v: f32) -> Vec<(String, Tensor)> {
    vec![
        ("w".to_string(), Tensor::full(dev, &[3], v).unwrap()),
        ("n".to_string(), Tensor::from_u32(dev, &[v as u32], &[1]).unwrap()),
    ]
}

fn stray_files(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

#[test]
fn checkpoint_set_keeps_the_last_two_and_the_best() {
    let dev = device();
    let dir = scratch("set");
    assert!(matches!(CheckpointSet::open(&dir, 0, true), Err(Error::Config(_))));
    let mut set = CheckpointSet::open(&dir, 2, true).unwrap();
    let metrics = [Some(0.5), Some(0.7), Some(0.6), Some(0.9), None, Some(f64::NAN), Some(0.85)];
    let expect_best = [true, true, false, true, false, false, false];
    for (i, (&m, &b)) in metrics.iter().zip(&expect_best).enumerate() {
        let step = 10 * (i as u64 + 1);
        let saved = set.save(step, &filled(&dev, step as f32), &json!({"epoch": i}), m).unwrap();
        assert_eq!(saved, checkpoint::Saved { path: dir.join(format!("ckpt-step-{step}.safetensors")), best: b });
        let want: Vec<u64> = if i == 0 { vec![10] } else { vec![step - 10, step] };
        assert_eq!(set.steps().unwrap(), want, "after saving step {step}");
        assert_eq!(set.latest().unwrap(), Some(saved.path.clone()));
        let ck = checkpoint::load(&saved.path).unwrap();
        assert_eq!(ck.meta().unwrap().step, step);
        assert_eq!(ck.sidecar["metric"], m.filter(|m| m.is_finite()).map_or(Value::Null, Value::from));
    }
    let files: BTreeSet<String> =
        fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    let mut want: BTreeSet<String> = ["ckpt-step-60", "ckpt-step-70"]
        .iter()
        .flat_map(|s| [format!("{s}.safetensors"), format!("{s}.json")])
        .collect();
    want.extend(["best.json".to_string(), "best-step-40.safetensors".to_string()]);
    assert_eq!(files, want, "only the last two and the best remain, no temporary files");
    assert_eq!(set.best_metric(), Some(0.9));
    let best = checkpoint::load(&set.best_path()).unwrap();
    assert_eq!(best.get("w").unwrap().as_f32().unwrap(), &[40.0; 3], "best holds step 40's tensors");
    assert_eq!(best.meta().unwrap().step, 40);
    assert_eq!(best.sidecar["tensors_file"], "best-step-40.safetensors");
    // Either file of a checkpoint names it: the tensors path finds its sidecar, the sidecar its tensors.
    let by_tensors = checkpoint::load(&dir.join("best-step-40.safetensors"));
    assert!(by_tensors.is_err(), "best-step-40.safetensors has no best-step-40.json beside it");
    assert_eq!(checkpoint::load(&dir.join("best.safetensors")).unwrap().tensors, best.tensors);
    // Reopening reads the best metric back; a step whose meta disagrees is refused.
    let mut again = CheckpointSet::open(&dir, 2, true).unwrap();
    assert_eq!(again.best_metric(), Some(0.9));
    assert!(matches!(again.save(80, &filled(&dev, 1.0), &json!({"step": 79}), None), Err(Error::Config(_))));

    // Lower is better (a loss).
    let dir2 = scratch("set-loss");
    let mut loss = CheckpointSet::open(&dir2, 1, false).unwrap();
    let flags: Vec<bool> = [3.0, 2.0, 4.0, 1.0]
        .iter()
        .enumerate()
        .map(|(i, &m)| loss.save(i as u64, &filled(&dev, m as f32), &json!({}), Some(m)).unwrap().best)
        .collect();
    assert_eq!(flags, [true, true, false, true]);
    assert_eq!(loss.steps().unwrap(), [3], "keep = 1");
    fs::remove_dir_all(&dir).unwrap();
    fs::remove_dir_all(&dir2).unwrap();
}

/// A save that fails leaves the existing checkpoint loadable with its old values, leaves no
/// temporary files, and (in a set) prunes nothing.
#[test]
fn failed_saves_leave_existing_checkpoints_intact() {
    let dev = device();
    let dir = scratch("atomic");
    let path = dir.join("b.safetensors");
    checkpoint::save(&path, &filled(&dev, 1.0), &json!({"step": 1})).unwrap();
    let check_old = |what: &str| {
        let ck = checkpoint::load(&path).unwrap_or_else(|e| panic!("{what}: old checkpoint lost: {e}"));
        assert_eq!(ck.get("w").unwrap().as_f32().unwrap(), &[1.0; 3], "{what}");
        assert_eq!(ck.sidecar["step"], 1, "{what}");
        assert_eq!(stray_files(&dir), Vec::<String>::new(), "{what}: temporary files left");
    };

    // The target path is a directory.
    let as_dir = dir.join("d.safetensors");
    fs::create_dir(&as_dir).unwrap();
    let e = checkpoint::save(&as_dir, &filled(&dev, 2.0), &json!({})).unwrap_err();
    assert!(matches!(&e, Error::Io { msg, .. } if msg.contains("directory")), "{e:?}");
    check_old("target is a directory");

    // Overwriting fails while writing the tensors' temporary file, then the sidecar's.
    let pid = std::process::id();
    for blocked in [format!(".b.safetensors.tmp-{pid}"), format!(".b.json.tmp-{pid}")] {
        let block = dir.join(&blocked);
        fs::create_dir(&block).unwrap();
        fs::write(block.join("keep"), b"x").unwrap(); // non-empty: cannot be replaced
        let e = checkpoint::save(&path, &filled(&dev, 2.0), &json!({"step": 2})).unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{e:?}");
        fs::remove_dir_all(&block).unwrap();
        check_old(&format!("{blocked} blocked"));
    }

    // A read-only folder (only enforced for non-root users: root writes anyway).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o555)).unwrap();
        let enforced = fs::write(dir.join("probe"), b"x").is_err();
        let _ = fs::remove_file(dir.join("probe"));
        if enforced {
            assert!(checkpoint::save(&path, &filled(&dev, 2.0), &json!({"step": 2})).is_err());
        } else {
            eprintln!("read-only folder not enforced (running as root): case skipped");
        }
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        check_old("read-only folder");
    }

    // Bad arguments fail before anything is written.
    for (meta, list) in [
        (json!({"format": "x"}), filled(&dev, 2.0)),
        (json!([1]), filled(&dev, 2.0)),
        (json!({}), [filled(&dev, 2.0), filled(&dev, 3.0)].concat()),
        (json!({}), vec![("__metadata__".to_string(), Tensor::zeros(&dev, &[1]).unwrap())]),
    ] {
        assert!(matches!(checkpoint::save(&path, &list, &meta), Err(Error::Config(_))));
        check_old("bad arguments");
    }
    assert!(matches!(checkpoint::save(&dir.join("x.json"), &filled(&dev, 2.0), &json!({})), Err(Error::Config(_))));

    // Now the overwrite succeeds.
    checkpoint::save(&path, &filled(&dev, 2.0), &json!({"step": 2})).unwrap();
    assert_eq!(checkpoint::load(&path).unwrap().get("w").unwrap().as_f32().unwrap(), &[2.0; 3]);

    // In a set: step 3's path is a directory, so its save fails and steps 1 and 2 stay.
    let run = dir.join("run");
    let mut set = CheckpointSet::open(&run, 2, true).unwrap();
    set.save(1, &filled(&dev, 1.0), &json!({}), Some(1.0)).unwrap();
    set.save(2, &filled(&dev, 2.0), &json!({}), Some(2.0)).unwrap();
    fs::create_dir(set.path_for(3)).unwrap();
    assert!(set.save(3, &filled(&dev, 3.0), &json!({}), Some(3.0)).is_err());
    assert_eq!(set.steps().unwrap(), [1, 2]);
    for s in [1, 2] {
        assert_eq!(checkpoint::load(&set.path_for(s)).unwrap().get("w").unwrap().as_f32().unwrap(), &[s as f32; 3]);
    }
    assert_eq!(set.best_metric(), Some(2.0), "a failed save does not become the best");
    fs::remove_dir_all(&dir).unwrap();
}

/// A safetensors file from a header string and data bytes.
fn st_bytes(header: &str, data: &[u8]) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(data);
    b
}

/// Each kind of damage gets an `Error::Data` naming the file and saying what is wrong.
#[test]
fn missing_truncated_and_corrupt_files_are_data_errors() {
    let dev = device();
    let dir = scratch("corrupt");
    let path = dir.join("c.safetensors");
    let side = dir.join("c.json");
    let msg = expect_data_err(checkpoint::load(&path), &side, "no files");
    assert!(msg.contains("sidecar"), "{msg}");
    checkpoint::save(&path, &filled(&dev, 1.0), &json!({"step": 1})).unwrap();
    let good = fs::read(&path).unwrap();
    let good_side = fs::read(&side).unwrap();

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("truncated", good[..good.len() - 3].to_vec(), "bytes but its sidecar says"),
        (
            "flipped",
            good.iter().enumerate().map(|(i, &b)| if i == good.len() - 1 { b ^ 1 } else { b }).collect(),
            "checksum",
        ),
    ];
    for (what, bytes, want) in cases {
        fs::write(&path, bytes).unwrap();
        let msg = expect_data_err(checkpoint::load(&path), &path, what);
        assert!(msg.contains(want), "{what}: {msg}");
    }
    fs::remove_file(&path).unwrap();
    let msg = expect_data_err(checkpoint::load(&path), &path, "tensors file missing");
    assert!(msg.contains("cannot open"), "{msg}");
    fs::write(&path, &good).unwrap();

    let side_cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("sidecar truncated", good_side[..good_side.len() / 2].to_vec(), "not valid JSON"),
        ("sidecar not an object", b"[1, 2]".to_vec(), "not a JSON object"),
        ("sidecar of something else", br#"{"step": 1}"#.to_vec(), "not an atomgrad checkpoint"),
        (
            "sidecar from the future",
            br#"{"format": "atomgrad-checkpoint", "format_version": 2, "tensors_bytes": 1, "tensors_crc32": 1}"#
                .to_vec(),
            "format version 2",
        ),
        (
            "sidecar without size",
            br#"{"format": "atomgrad-checkpoint", "format_version": 1, "tensors_crc32": 1}"#.to_vec(),
            "tensors_bytes",
        ),
    ];
    for (what, bytes, want) in side_cases {
        fs::write(&side, bytes).unwrap();
        let msg = expect_data_err(checkpoint::load(&path), &side, what);
        assert!(msg.contains(want), "{what}: {msg}");
    }
    fs::remove_file(&side).unwrap();
    let msg = expect_data_err(checkpoint::load(&path), &side, "sidecar missing");
    assert!(msg.contains("interrupted save"), "{msg}");

    // Header rules, through the sidecar-free reader.
    let d8 = [0u8; 8];
    let raw = dir.join("raw.safetensors");
    let header_cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "too short"),
        ("short length", vec![1, 0, 0], "too short"),
        ("length past the end", st_bytes("{}", &[])[..9].to_vec(), "runs past the end"),
        ("huge length", [u64::MAX.to_le_bytes().as_slice(), b"{}"].concat(), "exceeds"),
        ("invalid JSON", st_bytes("{\"a\": ", &[]), "not valid JSON"),
        ("not UTF-8", [1u64.to_le_bytes().as_slice(), &[0xff]].concat(), "UTF-8"),
        ("not an object", st_bytes("[]", &[]), "not a JSON object"),
        (
            "unsupported dtype",
            st_bytes(r#"{"a":{"dtype":"F16","shape":[4],"data_offsets":[0,8]}}"#, &d8),
            "unsupported dtype \"F16\"",
        ),
        (
            "offsets out of range",
            st_bytes(r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#, &d8),
            "outside the 8-byte data section",
        ),
        ("reversed offsets", st_bytes(r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}}"#, &d8), "end before"),
        (
            "overlapping",
            st_bytes(
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"U32","shape":[1],"data_offsets":[4,8]}}"#,
                &d8,
            ),
            "overlap",
        ),
        ("gap", st_bytes(r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, &d8), "unused bytes"),
        ("data length mismatch", st_bytes(r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#, &d8), "needs 8"),
        (
            "trailing data",
            st_bytes(r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, &d8),
            "cover 4 bytes of the 8-byte",
        ),
        ("bad shape", st_bytes(r#"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#, &d8), "\"shape\""),
        (
            "huge shape",
            st_bytes(r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}"#, &d8),
            "too large",
        ),
        ("bad metadata", st_bytes(r#"{"__metadata__":{"a":1}}"#, &[]), "__metadata__"),
    ];
    for (what, bytes, want) in header_cases {
        fs::write(&raw, bytes).unwrap();
        let msg = expect_data_err(checkpoint::load_tensors(&raw), &raw, what);
        assert!(msg.contains(want), "{what}: {want:?} not in {msg}");
    }
    fs::remove_dir_all(&dir).unwrap();
}

/// Random damage never panics. 3,000 cases: 2,400 on the tensors file (400 each of truncation,
/// 1-4 random byte flips anywhere, byte flips inside the header, header-length edits, structured
/// JSON header edits, inserted / appended bytes) and 600 on the sidecar (300 truncations, 300
/// byte flips). Every case goes through `decode` (in memory: sidecar checks, size, CRC-32, header
/// rules) and 360 of them (every tenth tensors-file case, a fifth of the sidecar cases) also
/// through files and `load` (file I/O is slow here, about 3 ms per write + read, so the
/// in-memory path keeps the test to a few seconds in the debug profile). Every tensors-file case
/// and every sidecar truncation is `Error::Data` naming the damaged file; a flipped sidecar byte
/// may still be valid JSON and load (a digit of "step" changed), so those must be `Ok` or
/// `Error::Data`. Through the checksum-free parser every tensors-file case except plain byte
/// flips (which may hit tensor data or header whitespace) must be `Error::Data` too.
#[test]
fn random_corruption_never_panics_and_is_always_a_data_error() {
    let dev = device();
    let dir = scratch("fuzz");
    let path = dir.join("f.safetensors");
    let side = dir.join("f.json");
    let model = Mlp::new(&dev, "mlp", &[2, 4, 2], Activation::Tanh, 0).unwrap();
    let mut opt = Adam::new(model.params(), AdamConfig::default()).unwrap();
    let tape = Tape::new();
    let x = tape.constant(Tensor::from_slice(&dev, &[0.5, -1.0], &[1, 2]).unwrap());
    model.forward(&tape, &x).unwrap().sum_all().unwrap().backward().unwrap();
    opt.step().unwrap();
    checkpoint::save(&path, &model_and_optim(&model.tensors(), &opt), &Meta { step: 1, ..Meta::default() }.to_value())
        .unwrap();
    let good = fs::read(&path).unwrap();
    let good_side = fs::read(&side).unwrap();
    let (n, header) = header_of(&good);
    let names: Vec<String> = header.as_object().unwrap().keys().filter(|k| *k != "__metadata__").cloned().collect();
    let mut rng = Rng::new(42);
    let start = std::time::Instant::now();
    let (mut cases, mut parse_ok, mut file_cases) = (0, 0, 0);

    for i in 0..2400 {
        let kind = i % 6;
        let mut b = good.clone();
        match kind {
            0 => b.truncate(rng.below(good.len())),
            1 | 2 => {
                let span = if kind == 1 { b.len() } else { 8 + n };
                for _ in 0..1 + rng.below(4) {
                    b[rng.below(span)] ^= 1 + rng.below(255) as u8;
                }
            }
            3 => {
                let choices = [
                    0,
                    n as u64 - 1,
                    n as u64 + 1,
                    n as u64 + 8,
                    good.len() as u64,
                    u64::MAX,
                    rng.next_u64(),
                    (n + 1 + rng.below(64)) as u64,
                ];
                let v = choices[rng.below(choices.len())];
                let v = if v == n as u64 { v + 1 } else { v };
                b[..8].copy_from_slice(&v.to_le_bytes());
            }
            4 => {
                let mut h = header.clone();
                let name = &names[rng.below(names.len())];
                let e = h.get_mut(name.as_str()).unwrap();
                let shape_len = e["shape"].as_array().unwrap().len();
                let (b0, b1) = (e["data_offsets"][0].as_u64().unwrap(), e["data_offsets"][1].as_u64().unwrap());
                match rng.below(12) {
                    0 => e["dtype"] = json!(["F16", "I64", "BF16", "F64", "X9", "", "f32"][rng.below(7)]),
                    1 => e["dtype"] = json!(7),
                    2 => e["shape"] = json!([1 + rng.below(5), 3, 1000]),
                    3 => e["shape"].as_array_mut().unwrap().push(json!(2)),
                    4 => e["shape"] = json!(if shape_len > 0 { json!([-1]) } else { json!("x") }),
                    5 => e["data_offsets"] = json!([b1, b0]),
                    6 => e["data_offsets"] = json!([b0, b1 + good.len() as u64]),
                    7 => e["data_offsets"] = json!([b0 + 4, b1 + 4]),
                    8 => e["data_offsets"] = json!([b0]),
                    9 => {
                        h.as_object_mut().unwrap().remove(name.as_str());
                    }
                    10 => {
                        h[format!("{name}.copy")] = h[name.as_str()].clone();
                    }
                    _ => h["__metadata__"]["format"] = json!(1),
                }
                let mut text = serde_json::to_string(&h).unwrap();
                while text.len() % 8 != 0 {
                    text.push(' ');
                }
                b = st_bytes(&text, &good[8 + n..]);
            }
            _ => {
                let at = if rng.below(2) == 0 { b.len() } else { rng.below(b.len()) };
                let junk: Vec<u8> = (0..1 + rng.below(16)).map(|_| rng.next_u64() as u8).collect();
                b.splice(at..at, junk);
            }
        }
        if b == good {
            continue; // a flip that xored to the same byte cannot happen (1..=255), but be safe
        }
        let what = format!("case {i} (kind {kind})");
        expect_data_err(checkpoint::decode(&path, &b, &good_side), &path, &what);
        if i % 10 == 0 {
            fs::write(&path, &b).unwrap();
            expect_data_err(checkpoint::load(&path), &path, &what);
            file_cases += 1;
        }
        match checkpoint::parse(&path, &b) {
            Ok(_) if kind == 1 || kind == 2 => parse_ok += 1,
            Ok(_) => panic!("{what}: the parser accepted a damaged file"),
            Err(Error::Data { .. }) => {}
            Err(e) => panic!("{what}: not a data error: {e:?}"),
        }
        cases += 1;
    }
    fs::write(&path, &good).unwrap();
    let mut side_ok = 0;
    for i in 0..600 {
        let mut s = good_side.clone();
        if i % 2 == 0 {
            s.truncate(rng.below(s.len()));
        } else {
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(s.len());
                s[at] ^= 1 + rng.below(255) as u8;
            }
        }
        let result = if i % 10 == 1 || i % 10 == 2 {
            fs::write(&side, &s).unwrap();
            file_cases += 1;
            checkpoint::load(&path)
        } else {
            checkpoint::decode(&path, &good, &s)
        };
        match result {
            Ok(_) if i % 2 == 1 => side_ok += 1,
            Ok(_) => panic!("sidecar case {i}: a truncated sidecar loaded"),
            Err(Error::Data { path: p, .. }) => assert!(p.ends_with("f.json"), "sidecar case {i}: names {p}"),
            Err(e) => panic!("sidecar case {i}: not a data error: {e:?}"),
        }
        cases += 1;
    }
    eprintln!(
        "{cases} corruption cases ({file_cases} of them through files) in {:.2?}; {parse_ok} byte-flip cases still \
         parse without the checksum, {side_ok} flipped sidecars still load",
        start.elapsed()
    );
    assert_eq!((cases, file_cases), (3000, 360));
    fs::remove_dir_all(&dir).unwrap();
}

/// Two-moons MLP with Adam for 2,000 steps in one go, versus 1,001 steps (mid-epoch), a
/// checkpoint (parameters, Adam state, RNG state at the epoch start, step), and the remaining
/// 999 steps on a fresh device with a freshly built (differently initialised) model and
/// optimizer restored from it: the final parameters and optimizer state are bit-identical.
#[test]
fn resumed_training_is_bit_identical_to_an_uninterrupted_run() {
    const TOTAL: usize = 2000;
    const K: usize = 1001;
    let data = moons(256, 0.1, 11);
    let spe = data.len() / BATCH;
    assert_ne!(K % spe, 0, "the checkpoint falls mid-epoch");
    let seed_rng = Rng::new(0xba7c).state();

    let dev = device();
    let (model, mut opt) = moons_model(&dev, 0);
    run_steps(&dev, &model, &mut opt, &data, seed_rng, 0, TOTAL);
    let straight = all_bits(&model.tensors());
    let straight_opt = all_bits(&opt.state().unwrap());

    let dir = scratch("resume");
    let path = dir.join("ckpt.safetensors");
    {
        let (model, mut opt) = moons_model(&dev, 0);
        let rng_state = run_steps(&dev, &model, &mut opt, &data, seed_rng, 0, K);
        let meta = Meta {
            step: K as u64,
            epoch: (K / spe) as u64,
            config: json!({"sizes": [2, 16, 16, 2], "lr": 1e-2, "batch": BATCH}),
            optimizer_steps: [("adam".to_string(), opt.step_count())].into(),
            rng_state: Some(rng_state),
            metric: None,
            adapter: dev.describe(),
        };
        checkpoint::save(&path, &model_and_optim(&model.tensors(), &opt), &meta.to_value()).unwrap();
    }

    let dev2 = Device::new().unwrap();
    let (model, mut opt) = moons_model(&dev2, 999);
    let ck = checkpoint::load(&path).unwrap();
    let meta = ck.meta().unwrap();
    assert_eq!(meta.adapter, dev2.describe(), "bit-exact resume needs the same adapter");
    ck.select("model.").restore_into(&model.tensors()).unwrap();
    opt.load_state(&ck.select("optim.").upload(&dev2).unwrap()).unwrap();
    assert_eq!(opt.step_count(), meta.optimizer_steps["adam"]);
    run_steps(&dev2, &model, &mut opt, &data, meta.rng_state.unwrap(), meta.step as usize, TOTAL);
    assert_eq!(opt.step_count(), TOTAL as u64);
    assert_eq!(all_bits(&model.tensors()), straight, "resumed parameters differ from the uninterrupted run");
    assert_eq!(all_bits(&opt.state().unwrap()), straight_opt, "resumed Adam state differs");
    fs::remove_dir_all(&dir).unwrap();
}

/// One state gives one file: two saves of the same tensors are byte-identical (the header's
/// keys are written sorted, whatever order the encoder's maps hold them in).
#[test]
fn identical_states_give_identical_bytes() {
    let dev = device();
    let dir = scratch("bytes");
    let mut files = Vec::new();
    for k in 0..4 {
        let p = dir.join(format!("s{k}.safetensors"));
        checkpoint::save(&p, &filled(&dev, 3.0), &json!({"step": 5})).unwrap();
        files.push(fs::read(&p).unwrap());
        assert_eq!(checkpoint::load(&p).unwrap().get("w").unwrap().as_f32().unwrap(), &[3.0; 3]);
    }
    assert!(files.windows(2).all(|w| w[0] == w[1]), "the same state saved twice gave different bytes");
    fs::remove_dir_all(&dir).unwrap();
}

/// A run's best checkpoint read back by the safetensors format's reference reader (the
/// `safetensors` crate, which the Python package `safetensors` wraps: what
/// `safetensors.torch.load_file` and `safetensors.numpy.load_file` run): every tensor of the model
/// and the optimizer under its name, with its dtype, shape and little-endian values.
#[test]
fn a_run_checkpoint_reads_back_with_the_reference_safetensors_reader() {
    use safetensors::{Dtype, SafeTensors};
    let dev = device();
    let dir = scratch("reference");
    let model = Cnn::new(&dev, 2, 3, 4, 0).unwrap();
    let mut opt = Adam::new(model.params(true), AdamConfig::default()).unwrap();
    let tape = Tape::new();
    let x = tape.constant(Tensor::from_slice(&dev, &vec![0.5; 2 * 784], &[2, 1, 28, 28]).unwrap());
    let out = model.forward(&tape, &x, true, true, &TokenMask::full(&dev, 2, 49).unwrap()).unwrap();
    out.logits.cross_entropy(&Tensor::from_u32(&dev, &[1, 3], &[2]).unwrap()).unwrap().backward().unwrap();
    opt.step().unwrap();
    let mut list = checkpoint::prefixed("model.", model.tensors());
    list.extend(checkpoint::prefixed("optim.", opt.state().unwrap()));
    let mut set = CheckpointSet::open(&dir, 2, true).unwrap();
    set.save(7, &list, &json!({"epoch": 0}), Some(0.5)).unwrap();
    // best.json names the tensors file, as a run folder's does.
    let side: Value = serde_json::from_str(&fs::read_to_string(set.best_path()).unwrap()).unwrap();
    assert_eq!(side["tensors_file"], "best-step-7.safetensors");
    let bytes = fs::read(dir.join("best-step-7.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let info = meta.metadata().clone().unwrap();
    assert_eq!(info.get("format").map(String::as_str), Some("atomgrad-checkpoint"));
    let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
    names.sort();
    let mut want: Vec<String> = list.iter().map(|(n, _)| n.clone()).collect();
    want.sort();
    assert_eq!(names, want, "every tensor, by name");
    assert!(names.iter().any(|n| n == "model.conv1.w") && names.iter().any(|n| n == "model.bn1.running_mean"));
    for (name, t) in &list {
        let v = st.tensor(name).unwrap();
        let dtype = if t.dtype() == DType::F32 { Dtype::F32 } else { Dtype::U32 };
        assert_eq!(v.dtype(), dtype, "{name}");
        assert_eq!(v.shape(), t.shape(), "{name}");
        let words: Vec<u32> = v.data().chunks(4).map(|w| u32::from_le_bytes(w.try_into().unwrap())).collect();
        assert_eq!(words, bits(t), "{name}: values");
    }
    fs::remove_dir_all(&dir).unwrap();
}

/// A kill between a step checkpoint's save and its promotion to best leaves a step checkpoint
/// that beats best.json; opening the set promotes it, so a resumed run's best is the best.
#[test]
fn opening_a_set_promotes_a_step_checkpoint_that_a_kill_left_unpromoted() {
    let dev = device();
    let dir = scratch("promote");
    let mut set = CheckpointSet::open(&dir, 2, true).unwrap();
    set.save(10, &filled(&dev, 10.0), &json!({"epoch": 0}), Some(0.5)).unwrap();
    // Step 20 saved as the set saves it, but killed before best.json moved.
    checkpoint::save(&set.path_for(20), &filled(&dev, 20.0), &json!({"step": 20, "epoch": 1, "metric": 0.9})).unwrap();
    assert_eq!(checkpoint::load(&set.best_path()).unwrap().meta().unwrap().step, 10);
    let set = CheckpointSet::open(&dir, 2, true).unwrap();
    assert_eq!(set.best_metric(), Some(0.9));
    let best = checkpoint::load(&set.best_path()).unwrap();
    assert_eq!(best.get("w").unwrap().as_f32().unwrap(), &[20.0; 3]);
    assert_eq!(best.sidecar["tensors_file"], "best-step-20.safetensors");
    assert!(!dir.join("best-step-10.safetensors").exists(), "the old best is gone");
    fs::remove_dir_all(&dir).unwrap();
}
