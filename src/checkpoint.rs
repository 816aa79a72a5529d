//! Checkpoints: named F32 / U32 tensors (model parameters, batch-norm running statistics,
//! optimizer state) in a [safetensors](https://github.com/huggingface/safetensors) file, plus a
//! JSON sidecar `<name>.json` beside it with everything that is not a tensor.
//!
//! # Files
//!
//! `<name>.safetensors` is the standard format, readable from Python with
//! `safetensors.numpy.load_file("<name>.safetensors")`: an 8-byte little-endian header length
//! `n`, `n` bytes of JSON (padded with spaces to a multiple of 8) mapping each tensor name to
//! `{"dtype": "F32" | "U32", "shape": [...], "data_offsets": [begin, end]}` plus a
//! `"__metadata__"` string map (`{"format": "atomgrad-checkpoint", "format_version": "1"}`), then
//! the tensors' little-endian bytes, back to back.
//!
//! `<name>.json` (the sidecar) is a JSON object: the caller's `meta` object (see [`Meta`] for the
//! fields a training loop stores: step, epoch, config, optimizer step counts, RNG state, the
//! metric used for "best", the adapter name) with these keys added by [`save`]:
//! `format` (`"atomgrad-checkpoint"`), `format_version` ([`FORMAT_VERSION`]), `tensors_file`
//! (the safetensors file's name), `tensors_bytes` (its size) and `tensors_crc32` (the CRC-32 of
//! all its bytes). [`load`] checks size and checksum, so a truncated, flipped or edited
//! tensors file, or one that belongs to another sidecar, is reported, never loaded.
//!
//! # Atomicity
//!
//! [`save`] reads every tensor back (one readback per batch of up to 64 MiB), encodes both files
//! in memory, writes each to a temporary file beside its target (`.<file name>.tmp-<pid>`) and
//! fsyncs it, and only then replaces the targets: the old sidecar is removed, the tensors file
//! renamed into place, the sidecar renamed into place last, and the directory fsynced. A
//! complete sidecar therefore implies a complete tensors file; a crash in between leaves no
//! sidecar, which [`load`] reports as an incomplete checkpoint. A save that fails before the
//! renames (unwritable directory, full disk, a target path that is a directory) leaves an
//! existing checkpoint at the same path untouched and removes its temporary files.
//!
//! # Restoring
//!
//! [`Checkpoint::restore_into`] writes the stored values into existing GPU tensors after
//! checking every name, dtype and shape first: on any mismatch it changes nothing and returns an
//! error listing each problem by tensor name (with both shapes for a shape mismatch). Optimizer
//! state, which a fresh optimizer does not have yet, goes through [`Checkpoint::select`] +
//! [`Checkpoint::upload`] into `Optimizer::load_state`:
//!
//! ```no_run
//! # use atomgrad::{checkpoint::{self, Meta}, nn::{Mlp, Activation}, optim::{Adam, AdamConfig, Optimizer}, Device};
//! # fn main() -> atomgrad::Result<()> {
//! # let dev = Device::new()?;
//! # let model = Mlp::new(&dev, "mlp", &[2, 8, 2], Activation::Relu, 0)?;
//! # let mut opt = Adam::new(model.params(), AdamConfig::default())?;
//! # let path = std::path::Path::new("run/ckpt.safetensors");
//! let mut tensors = checkpoint::prefixed("model.", model.tensors());
//! tensors.extend(checkpoint::prefixed("optim.", opt.state()?));
//! checkpoint::save(path, &tensors, &Meta { step: 100, ..Meta::default() }.to_value())?;
//!
//! let ck = checkpoint::load(path)?;
//! ck.select("model.").restore_into(&model.tensors())?;
//! opt.load_state(&ck.select("optim.").upload(&dev)?)?;
//! let step = ck.meta()?.step;
//! # Ok(()) }
//! ```
//!
//! [`CheckpointSet`] keeps the last `keep` checkpoints of a run (`ckpt-step-<N>.safetensors`) and
//! the best one by a validation metric in a run folder: `best.json`, a sidecar naming its tensors
//! file `best-step-<N>.safetensors`, so a new best replaces the old with one rename (the
//! sidecar's) and a kill at any moment leaves one whole best. [`load`] takes either file of a
//! checkpoint (the sidecar or the tensors) and reads the tensors file the sidecar names.

use crate::device::Device;
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};
use safetensors::{Dtype, SafeTensors, View};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The sidecar's `format` value and the safetensors `__metadata__` `format` entry.
pub const FORMAT: &str = "atomgrad-checkpoint";
/// The layout version this build writes and reads.
pub const FORMAT_VERSION: u64 = 1;
/// Keys [`save`] adds to the sidecar; a caller's `meta` may not use them.
pub const RESERVED_KEYS: [&str; 5] = ["format", "format_version", "tensors_file", "tensors_bytes", "tensors_crc32"];
/// The safetensors format's own limit on the JSON header.
const MAX_HEADER: u64 = 100_000_000;
/// A sidecar larger than this is rejected before it is read.
const MAX_SIDECAR: u64 = 64 << 20;
/// Tensors are read back in batches of at most this many bytes.
const READBACK_CHUNK: u64 = 64 << 20;

/// The sidecar fields a training loop stores (all optional to a reader: unknown keys are kept in
/// [`Checkpoint::sidecar`], missing ones take their defaults).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Meta {
    /// Optimizer steps taken (training iterations completed).
    pub step: u64,
    /// The epoch the run is in.
    pub epoch: u64,
    /// The run's configuration, as the caller serialises it.
    pub config: Value,
    /// [`crate::optim::Optimizer::step_count`] of each optimizer, by a caller-chosen name.
    pub optimizer_steps: BTreeMap<String, u64>,
    /// The host RNG's state ([`crate::rng::Rng::state`]), to continue the same stream.
    pub rng_state: Option<u64>,
    /// The validation metric of this checkpoint (what "best" is decided by). Non-finite values
    /// are stored as `null`.
    pub metric: Option<f64>,
    /// The adapter that produced the values ([`Device::describe`]): resuming bit-exactly needs
    /// the same one.
    pub adapter: String,
}

impl Meta {
    /// The JSON object [`save`] takes.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("Meta serialises to JSON")
    }
}

/// Host-side tensor values.
#[derive(Clone, Debug, PartialEq)]
pub enum HostData {
    F32(Vec<f32>),
    U32(Vec<u32>),
}

/// One tensor of a loaded checkpoint, on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: HostData,
}

impl HostTensor {
    pub fn dtype(&self) -> DType {
        match self.data {
            HostData::F32(_) => DType::F32,
            HostData::U32(_) => DType::U32,
        }
    }
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            HostData::F32(v) => Some(v),
            HostData::U32(_) => None,
        }
    }
    pub fn as_u32(&self) -> Option<&[u32]> {
        match &self.data {
            HostData::U32(v) => Some(v),
            HostData::F32(_) => None,
        }
    }
    /// A new GPU tensor holding these values.
    pub fn to_tensor(&self, dev: &Device) -> Result<Tensor> {
        match &self.data {
            HostData::F32(v) => Tensor::from_slice(dev, v, &self.shape),
            HostData::U32(v) => Tensor::from_u32(dev, v, &self.shape),
        }
    }
}

/// A loaded checkpoint: host-side named tensors and the sidecar.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// The safetensors file it was read from (named in errors).
    pub path: PathBuf,
    pub tensors: BTreeMap<String, HostTensor>,
    /// The whole sidecar object (the caller's meta plus the keys in [`RESERVED_KEYS`]).
    pub sidecar: Value,
}

impl Checkpoint {
    pub fn get(&self, name: &str) -> Option<&HostTensor> {
        self.tensors.get(name)
    }

    /// The sidecar read as [`Meta`].
    pub fn meta(&self) -> Result<Meta> {
        serde_json::from_value(self.sidecar.clone()).map_err(|e| {
            Error::data(sidecar_path(&self.path).unwrap_or_default(), format!("sidecar fields do not fit Meta: {e}"))
        })
    }

    /// The tensors whose names start with `prefix`, with the prefix removed (same path and
    /// sidecar): e.g. `select("model.")` for [`Checkpoint::restore_into`] on a model when the
    /// file also holds `optim.*` state.
    pub fn select(&self, prefix: &str) -> Checkpoint {
        let tensors = self
            .tensors
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k.to_string(), v.clone())))
            .collect();
        Checkpoint { path: self.path.clone(), tensors, sidecar: self.sidecar.clone() }
    }

    /// Every tensor as a new GPU tensor, in name order (for `Optimizer::load_state`).
    pub fn upload(&self, dev: &Device) -> Result<Vec<(String, Tensor)>> {
        self.tensors.iter().map(|(k, v)| Ok((k.clone(), v.to_tensor(dev)?))).collect()
    }

    /// Writes the stored values into `targets` (existing GPU tensors), which must match the
    /// checkpoint exactly: the same names, each with the same dtype and shape. Everything is
    /// checked before anything is written; on a mismatch nothing is modified and the error
    /// (`Error::Shape` with op `restore_into`) names every offending tensor, with both shapes
    /// when they differ ("checkpoint from another model shape"). (Only a GPU failure while the
    /// checked values are being uploaded, such as device loss, can leave targets partly written.)
    pub fn restore_into(&self, targets: &[(String, Tensor)]) -> Result<()> {
        let mut problems = Vec::new();
        let mut seen = BTreeSet::new();
        for (name, t) in targets {
            if !seen.insert(name.as_str()) {
                problems.push(format!("{name:?} is listed twice among the targets"));
                continue;
            }
            match self.tensors.get(name) {
                None => problems.push(format!(
                    "tensor {name:?} ({:?} of shape {:?}) is missing from the checkpoint",
                    t.dtype(),
                    t.shape()
                )),
                Some(h) if h.dtype() != t.dtype() => problems.push(format!(
                    "tensor {name:?} is {:?} in the checkpoint but {:?} in the model",
                    h.dtype(),
                    t.dtype()
                )),
                Some(h) if h.shape != t.shape() => problems.push(format!(
                    "checkpoint from another model shape: tensor {name:?} has shape {:?} in the checkpoint but {:?} in the model",
                    h.shape,
                    t.shape()
                )),
                Some(_) => {}
            }
        }
        for name in self.tensors.keys() {
            if !seen.contains(name.as_str()) {
                problems.push(format!("extra tensor {name:?} in the checkpoint is not in the model"));
            }
        }
        if !targets.is_empty() && !self.tensors.is_empty() && !targets.iter().any(|(k, _)| self.tensors.contains_key(k))
        {
            let (ours, theirs) = (self.tensors.keys().next().unwrap(), &targets[0].0);
            problems.insert(
                0,
                format!("no tensor name in common (the checkpoint has names like {ours:?}, the model {theirs:?}: select a prefix?)"),
            );
        }
        if !problems.is_empty() {
            const SHOWN: usize = 8;
            let mut list = problems.iter().take(SHOWN).cloned().collect::<Vec<_>>().join("; ");
            if problems.len() > SHOWN {
                list += &format!("; and {} more", problems.len() - SHOWN);
            }
            return Err(Error::shape(
                "restore_into",
                format!(
                    "{}: {} mismatch(es) between the checkpoint and the model, nothing restored: {list}",
                    self.path.display(),
                    problems.len()
                ),
            ));
        }
        for (name, t) in targets {
            match &self.tensors[name].data {
                HostData::F32(v) => t.write(v)?,
                HostData::U32(v) => t.write_u32(v)?,
            }
        }
        Ok(())
    }
}

/// `list` with every name prefixed (to keep a model's and an optimizer's tensors apart).
pub fn prefixed(prefix: &str, list: Vec<(String, Tensor)>) -> Vec<(String, Tensor)> {
    list.into_iter().map(|(k, t)| (format!("{prefix}{k}"), t)).collect()
}

/// The sidecar of a tensors file: the same path with the extension `json`.
pub fn sidecar_path(path: &Path) -> Result<PathBuf> {
    let side = path.with_extension("json");
    if side == path || path.file_name().is_none() {
        return Err(Error::Config(format!(
            "checkpoint path {} cannot have a sidecar beside it: use a name like run/ckpt.safetensors",
            path.display()
        )));
    }
    Ok(side)
}

/// Saves `tensors` (read back from the GPU) to `path` (a safetensors file) and `meta` (a JSON
/// object; see [`Meta`]) plus the format keys to its sidecar `path.with_extension("json")`, both
/// atomically, sidecar last (see the module documentation). Names must be non-empty, unique and
/// not `__metadata__`.
pub fn save(path: &Path, tensors: &[(String, Tensor)], meta: &Value) -> Result<()> {
    let encoded = Encoded::new(path, tensors, meta)?;
    encoded.write(path)
}

/// A checkpoint encoded in memory: the safetensors bytes and the sidecar without `tensors_file`.
struct Encoded {
    bytes: Vec<u8>,
    sidecar: Map<String, Value>,
}

impl Encoded {
    fn new(path: &Path, tensors: &[(String, Tensor)], meta: &Value) -> Result<Encoded> {
        let cfg = |msg: String| Error::Config(format!("checkpoint {}: {msg}", path.display()));
        let Some(meta) = meta.as_object() else {
            return Err(cfg(format!("meta must be a JSON object, got {meta}")));
        };
        if let Some(k) = RESERVED_KEYS.iter().find(|k| meta.contains_key(**k)) {
            return Err(cfg(format!("meta may not set {k:?}: save writes it")));
        }
        let mut names = BTreeSet::new();
        for (name, _) in tensors {
            if name.is_empty() || name == "__metadata__" {
                return Err(cfg(format!("{name:?} cannot name a tensor")));
            }
            if !names.insert(name.as_str()) {
                return Err(cfg(format!("two tensors are named {name:?}")));
            }
        }
        let data = read_back(tensors)?;
        let views: Vec<(&str, Raw)> = tensors
            .iter()
            .zip(&data)
            .map(|((name, t), d)| {
                let dtype = match t.dtype() {
                    DType::F32 => Dtype::F32,
                    DType::U32 => Dtype::U32,
                };
                (name.as_str(), Raw { dtype, shape: t.shape(), data: d })
            })
            .collect();
        let info = [("format", FORMAT.to_string()), ("format_version", FORMAT_VERSION.to_string())];
        let bytes = safetensors::serialize(views, Some(info.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
            .map_err(|e| cfg(format!("cannot encode the tensors: {e}")))?;
        let bytes = canonical_header(bytes).map_err(cfg)?;
        let mut sidecar = meta.clone();
        sidecar.insert("format".into(), FORMAT.into());
        sidecar.insert("format_version".into(), FORMAT_VERSION.into());
        sidecar.insert("tensors_bytes".into(), (bytes.len() as u64).into());
        sidecar.insert("tensors_crc32".into(), crc32(&bytes).into());
        Ok(Encoded { bytes, sidecar })
    }

    /// Writes the pair at `path` and its sidecar beside it (see the module documentation).
    fn write(&self, path: &Path) -> Result<()> {
        self.write_to(path, &sidecar_path(path)?)
    }

    /// Writes the tensors to `path` and the sidecar to `side`. When `side` names another tensors
    /// file than `path` (a best checkpoint moving to its new step's file), the sidecar's rename
    /// is the one step that switches from the old checkpoint to the new: a kill at any moment
    /// leaves one of them complete.
    fn write_to(&self, path: &Path, side: &Path) -> Result<()> {
        let side = side.to_path_buf();
        let mut sidecar = self.sidecar.clone();
        let file_name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        sidecar.insert("tensors_file".into(), file_name.into());
        let side_bytes = serde_json::to_vec_pretty(&Value::Object(sidecar))
            .map_err(|e| Error::Config(format!("checkpoint {}: cannot encode the sidecar: {e}", path.display())))?;
        for p in [path, side.as_path()] {
            if fs::symlink_metadata(p).is_ok_and(|m| m.is_dir()) {
                return Err(Error::Io { path: p.display().to_string(), msg: "is a directory, not a file".into() });
            }
        }
        let tmp_t = temp_path(path);
        let tmp_s = temp_path(&side);
        let result = (|| {
            write_synced(&tmp_t, &self.bytes)?;
            write_synced(&tmp_s, &side_bytes)?;
            // Replacing the tensors file the old sidecar names: remove that sidecar first (no
            // sidecar means incomplete). Otherwise the old pair stays whole until the rename.
            let old_names_this = read_sidecar(&side)
                .ok()
                .and_then(|o| o.get("tensors_file").and_then(Value::as_str).map(|n| side.with_file_name(n)))
                .is_none_or(|p| p == path);
            if old_names_this {
                match fs::remove_file(&side) {
                    Ok(()) => sync_dir(&side),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io(&side, e)),
                }
            }
            crate::fsio::crash_point("checkpoint-before-renames");
            fs::rename(&tmp_t, path).map_err(|e| Error::io(path, e))?;
            crate::fsio::crash_point("checkpoint-between-renames");
            fs::rename(&tmp_s, &side).map_err(|e| Error::io(&side, e))?;
            sync_dir(&side);
            crate::fsio::crash_point("checkpoint-after-renames");
            Ok(())
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp_t);
            let _ = fs::remove_file(&tmp_s);
        }
        result
    }
}

/// The safetensors bytes with their JSON header's keys sorted (the writer emits its metadata map
/// in hash order), so one state always gives one file. The data offsets are relative to the end
/// of the header, and the sorted header has the same length, so only the header bytes change.
fn canonical_header(mut bytes: Vec<u8>) -> std::result::Result<Vec<u8>, String> {
    let n = bytes.get(..8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize).unwrap_or(0);
    let header = bytes.get(8..8 + n).ok_or("encoded header out of range")?;
    let v: Value = serde_json::from_slice(header).map_err(|e| format!("encoded header: {e}"))?;
    let mut sorted = serde_json::to_vec(&v).expect("a JSON value serialises");
    if sorted.len() > n {
        return Err("sorted header longer than the written one".into());
    }
    sorted.resize(n, b' ');
    bytes[8..8 + n].copy_from_slice(&sorted);
    Ok(bytes)
}

/// A borrowed tensor for `safetensors::serialize`.
struct Raw<'a> {
    dtype: Dtype,
    shape: &'a [usize],
    data: &'a [u8],
}

impl View for Raw<'_> {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// The little-endian bytes of every tensor: tensors on one device are copied into one staging
/// tensor (up to [`READBACK_CHUNK`] bytes) and read back together.
fn read_back(tensors: &[(String, Tensor)]) -> Result<Vec<Vec<u8>>> {
    let mut out = vec![Vec::new(); tensors.len()];
    let mut i = 0;
    while i < tensors.len() {
        let dev = tensors[i].1.device().clone();
        let cap = READBACK_CHUNK.min(dev.max_binding());
        let mut j = i;
        let mut total = 0u64;
        while j < tensors.len() {
            let t = &tensors[j].1;
            if !Arc::ptr_eq(&t.device().inner, &dev.inner) || (j > i && total + t.bytes() > cap) {
                break;
            }
            total += t.bytes();
            j += 1;
        }
        if j == i + 1 || total == 0 {
            for k in i..j {
                let t = &tensors[k].1;
                out[k] = dev.read(t.buffer(), t.bytes())?;
            }
        } else {
            let stage = Tensor::empty(&dev, "checkpoint", &[(total / 4) as usize], DType::U32)?;
            let mut off = 0;
            for (_, t) in &tensors[i..j] {
                dev.copy(t.buffer(), 0, stage.buffer(), off, t.bytes());
                off += t.bytes();
            }
            let all = dev.read(stage.buffer(), total)?;
            let mut off = 0;
            for k in i..j {
                let n = tensors[k].1.bytes() as usize;
                out[k] = all[off..off + n].to_vec();
                off += n;
            }
        }
        i = j;
    }
    // GPU buffers hold native-endian words; the file is little-endian (a no-op on LE hosts).
    for d in &mut out {
        for w in d.chunks_exact_mut(4) {
            let v = u32::from_ne_bytes([w[0], w[1], w[2], w[3]]);
            w.copy_from_slice(&v.to_le_bytes());
        }
    }
    Ok(out)
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut c = flate2::Crc::new();
    c.update(bytes);
    c.sum()
}

use crate::fsio::{sync_dir, temp_path, write_synced};

/// Reads a whole file that is expected to be `expect` bytes long (or at most `max`), checking
/// the size before allocating.
fn read_file(path: &Path, what: &str, expect: Option<u64>, max: u64) -> Result<Vec<u8>> {
    let bad = |m: String| Error::data(path, m);
    let md = fs::metadata(path).map_err(|e| bad(format!("cannot open the {what}: {e}")))?;
    if !md.is_file() {
        return Err(bad(format!("the {what} is not a regular file")));
    }
    if let Some(n) = expect {
        if md.len() != n {
            return Err(bad(format!(
                "the {what} is {} bytes but its sidecar says {n} (truncated, or not the file the sidecar was written with)",
                md.len()
            )));
        }
    } else if md.len() > max {
        return Err(bad(format!("the {what} is {} bytes, more than the {max} allowed", md.len())));
    }
    let mut bytes = Vec::with_capacity(md.len() as usize);
    fs::File::open(path)
        .and_then(|f| f.take(md.len() + 1).read_to_end(&mut bytes))
        .map_err(|e| bad(format!("cannot read the {what}: {e}")))?;
    if bytes.len() as u64 != md.len() {
        return Err(bad(format!("the {what} changed size while it was read")));
    }
    Ok(bytes)
}

/// Reads and checks a sidecar.
fn read_sidecar(side: &Path) -> Result<Map<String, Value>> {
    let bytes = read_file(side, "checkpoint sidecar (an interrupted save leaves none)", None, MAX_SIDECAR)?;
    check_sidecar(side, &bytes)
}

/// A sidecar's JSON object, checked: this format and version, with the tensors file's size and
/// checksum.
fn check_sidecar(side: &Path, bytes: &[u8]) -> Result<Map<String, Value>> {
    let bad = |m: String| Error::data(side, m);
    let v: Value = serde_json::from_slice(bytes).map_err(|e| bad(format!("the sidecar is not valid JSON: {e}")))?;
    let Value::Object(obj) = v else {
        return Err(bad("the sidecar is not a JSON object".into()));
    };
    if obj.get("format").and_then(Value::as_str) != Some(FORMAT) {
        return Err(bad(format!("not an atomgrad checkpoint sidecar (no \"format\": \"{FORMAT}\")")));
    }
    match obj.get("format_version").and_then(Value::as_u64) {
        Some(FORMAT_VERSION) => {}
        Some(v) => {
            return Err(bad(format!("format version {v} is not supported (this build reads version {FORMAT_VERSION})")))
        }
        None => return Err(bad("\"format_version\" is missing or not an integer".into())),
    }
    if obj.get("tensors_bytes").and_then(Value::as_u64).is_none() {
        return Err(bad("\"tensors_bytes\" is missing or not an integer".into()));
    }
    if obj.get("tensors_crc32").and_then(Value::as_u64).is_none_or(|c| c > u32::MAX as u64) {
        return Err(bad("\"tensors_crc32\" is missing or not a 32-bit integer".into()));
    }
    Ok(obj)
}

/// Loads a checkpoint written by [`save`]: the sidecar first, then the tensors file, whose size
/// is checked against the sidecar before it is read, and its checksum before it is parsed. Any
/// problem with either file is `Error::Data` naming the file and what is wrong.
pub fn load(path: &Path) -> Result<Checkpoint> {
    let is_sidecar = path.extension().is_some_and(|e| e == "json");
    let side = if is_sidecar { path.to_path_buf() } else { sidecar_path(path)? };
    let sidecar = read_sidecar(&side)?;
    // A tensors file given by path is read (a copied checkpoint keeps its old name inside);
    // the sidecar's `tensors_file` is followed from a sidecar, or for a best checkpoint.
    let tensors = if !is_sidecar && path.is_file() { path.to_path_buf() } else { tensors_path(&side, &sidecar)? };
    let n = sidecar.get("tensors_bytes").and_then(Value::as_u64).unwrap_or_default();
    let bytes = read_file(&tensors, "checkpoint tensors file", Some(n), 0)?;
    finish(&tensors, &side, sidecar, &bytes)
}

/// The tensors file a sidecar names (`"tensors_file"`, a plain file name in the sidecar's folder).
fn tensors_path(side: &Path, sidecar: &Map<String, Value>) -> Result<PathBuf> {
    let name = sidecar.get("tensors_file").and_then(Value::as_str).unwrap_or_default();
    let plain = !name.is_empty() && Path::new(name).file_name().is_some_and(|f| f == name) && name != "..";
    if !plain {
        return Err(Error::data(side, format!("\"tensors_file\" must name a file beside the sidecar, got {name:?}")));
    }
    Ok(side.with_file_name(name))
}

/// [`load`] on bytes already in memory: `tensors` and `sidecar` are the contents of the files
/// `path` and its sidecar (the paths are only used to name them in errors).
pub fn decode(path: &Path, tensors: &[u8], sidecar: &[u8]) -> Result<Checkpoint> {
    let side = sidecar_path(path)?;
    let sidecar = check_sidecar(&side, sidecar)?;
    finish(path, &side, sidecar, tensors)
}

fn finish(path: &Path, side: &Path, sidecar: Map<String, Value>, bytes: &[u8]) -> Result<Checkpoint> {
    let n = sidecar.get("tensors_bytes").and_then(Value::as_u64).unwrap_or_default();
    if bytes.len() as u64 != n {
        return Err(Error::data(
            path,
            format!(
                "the checkpoint tensors file is {} bytes but its sidecar says {n} (truncated, or not the file the sidecar was written with)",
                bytes.len()
            ),
        ));
    }
    let crc = sidecar.get("tensors_crc32").and_then(Value::as_u64).unwrap_or_default();
    let got = crc32(bytes) as u64;
    if got != crc {
        return Err(Error::data(
            path,
            format!(
                "checksum mismatch (CRC-32 {got:#010x}, sidecar {} says {crc:#010x}): the file is corrupt or belongs to another save",
                side.display()
            ),
        ));
    }
    let tensors = parse(path, bytes)?;
    Ok(Checkpoint { path: path.to_path_buf(), tensors, sidecar: Value::Object(sidecar) })
}

/// Reads any safetensors file of F32 and U32 tensors (no sidecar, no checksum): e.g. one written
/// from Python. Every header rule is checked; a violation is `Error::Data` naming the file.
pub fn load_tensors(path: &Path) -> Result<BTreeMap<String, HostTensor>> {
    let bytes = read_file(path, "safetensors file", None, u64::MAX)?;
    parse(path, &bytes)
}

/// Checks the header by the format's rules (with messages naming the tensor), then lets the
/// safetensors crate read it (its own validation is the final word) and copies the values out.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<BTreeMap<String, HostTensor>> {
    let bad = |m: String| Error::data(path, m);
    if bytes.len() < 8 {
        return Err(bad(format!("{} bytes is too short for the 8-byte header length (truncated?)", bytes.len())));
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    let rest = (bytes.len() - 8) as u64;
    if n > MAX_HEADER {
        return Err(bad(format!("header length {n} exceeds the format's limit of {MAX_HEADER} bytes")));
    }
    if n > rest {
        return Err(bad(format!(
            "header length {n} runs past the end of the file ({rest} bytes follow it; truncated?)"
        )));
    }
    let header = std::str::from_utf8(&bytes[8..8 + n as usize])
        .map_err(|e| bad(format!("the JSON header is not valid UTF-8: {e}")))?;
    let v: Value = serde_json::from_str(header).map_err(|e| bad(format!("the header is not valid JSON: {e}")))?;
    let Value::Object(obj) = v else {
        return Err(bad("the header is not a JSON object".into()));
    };
    let data_len = rest - n;
    let mut spans = Vec::new();
    for (name, e) in &obj {
        if name == "__metadata__" {
            if !e.as_object().is_some_and(|m| m.values().all(Value::is_string)) {
                return Err(bad("\"__metadata__\" is not a map of strings".into()));
            }
            continue;
        }
        let t = |m: String| bad(format!("tensor {name:?}: {m}"));
        let Some(e) = e.as_object() else {
            return Err(t("the header entry is not an object".into()));
        };
        let dtype = e.get("dtype").and_then(Value::as_str).ok_or_else(|| t("no \"dtype\" string".into()))?;
        if dtype != "F32" && dtype != "U32" {
            return Err(t(format!("unsupported dtype {dtype:?} (atomgrad checkpoints hold F32 and U32)")));
        }
        let shape = e
            .get("shape")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().map(Value::as_u64).collect::<Option<Vec<u64>>>())
            .ok_or_else(|| t("\"shape\" is not an array of non-negative integers".into()))?;
        let need = shape
            .iter()
            .try_fold(4u64, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| t(format!("shape {shape:?} is too large")))?;
        let off = e
            .get("data_offsets")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().map(Value::as_u64).collect::<Option<Vec<u64>>>())
            .filter(|a| a.len() == 2)
            .ok_or_else(|| t("\"data_offsets\" is not a pair of non-negative integers".into()))?;
        let (b, end) = (off[0], off[1]);
        if end < b {
            return Err(t(format!("data_offsets [{b}, {end}] end before they begin")));
        }
        if end > data_len {
            return Err(t(format!(
                "data_offsets [{b}, {end}] lie outside the {data_len}-byte data section (truncated?)"
            )));
        }
        if end - b != need {
            return Err(t(format!(
                "data_offsets [{b}, {end}] span {} bytes but shape {shape:?} of {dtype} needs {need}",
                end - b
            )));
        }
        spans.push((b, end, name.as_str()));
    }
    spans.sort();
    let mut pos = 0;
    let mut prev = "";
    for &(b, end, name) in &spans {
        if b < pos {
            return Err(bad(format!("tensors {prev:?} and {name:?} overlap in the data section")));
        }
        if b > pos {
            return Err(bad(format!("{} unused bytes before tensor {name:?} in the data section", b - pos)));
        }
        pos = end;
        prev = name;
    }
    if pos != data_len {
        return Err(bad(format!("the tensors cover {pos} bytes of the {data_len}-byte data section")));
    }
    let st = SafeTensors::deserialize(bytes).map_err(|e| bad(format!("rejected by the safetensors reader: {e}")))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let words = view.data().chunks_exact(4).map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
        let data = match view.dtype() {
            Dtype::F32 => HostData::F32(words.map(f32::from_bits).collect()),
            Dtype::U32 => HostData::U32(words.collect()),
            other => return Err(bad(format!("tensor {name:?}: unsupported dtype {other:?}"))),
        };
        out.insert(name, HostTensor { shape: view.shape().to_vec(), data });
    }
    Ok(out)
}

/// What [`CheckpointSet::save`] wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct Saved {
    /// `ckpt-step-<N>.safetensors`.
    pub path: PathBuf,
    /// Whether it also became the best (`best.json`).
    pub best: bool,
}

/// The checkpoints of one run in one folder: the last `keep` saves (`ckpt-step-<N>.safetensors`
/// and `.json`) and the best one by a validation metric (`best.json` naming
/// `best-step-<N>.safetensors`, a copy written when a save's metric beats the best so far).
/// Older checkpoints are deleted only after the new one (and the new best) are complete.
pub struct CheckpointSet {
    dir: PathBuf,
    keep: usize,
    higher_is_better: bool,
    best: Option<f64>,
}

impl CheckpointSet {
    /// Opens a run's checkpoint folder (created at the first save) keeping the last `keep` (>= 1) checkpoints;
    /// `higher_is_better` says which way the metric improves (accuracy: true, loss: false). The
    /// best metric so far is read from an existing `best.json`.
    pub fn open(dir: impl AsRef<Path>, keep: usize, higher_is_better: bool) -> Result<CheckpointSet> {
        let dir = dir.as_ref().to_path_buf();
        if keep == 0 {
            return Err(Error::Config("CheckpointSet: keep must be at least 1".into()));
        }
        let mut set = CheckpointSet { dir, keep, higher_is_better, best: None };
        let best_side = set.best_path();
        if best_side.exists() {
            let side = read_sidecar(&best_side)?;
            set.best = side.get("metric").and_then(Value::as_f64).filter(|m| m.is_finite());
        }
        // A kill between a step checkpoint's save and its promotion to best leaves a complete
        // step checkpoint that beats best.json (a resumed run would not train that epoch again):
        // promote it now, from its own (checked) files.
        for step in set.steps()? {
            let path = set.path_for(step);
            let Ok(side) = read_sidecar(&sidecar_path(&path)?) else { continue };
            let Some(metric) = side.get("metric").and_then(Value::as_f64).filter(|m| m.is_finite()) else { continue };
            if !set.beats(metric) || load(&path).is_err() {
                continue;
            }
            let bytes = fs::read(&path).map_err(|e| Error::io(&path, e))?;
            set.promote(step, &Encoded { bytes, sidecar: side }, metric)?;
        }
        Ok(set)
    }

    /// Whether `metric` beats the best so far.
    fn beats(&self, metric: f64) -> bool {
        match self.best {
            Some(b) => (self.higher_is_better && metric > b) || (!self.higher_is_better && metric < b),
            None => true,
        }
    }

    /// Makes `encoded` (the checkpoint of `step`) the best: `best-step-<step>.safetensors` and
    /// `best.json` naming it, then removes the older best files.
    fn promote(&mut self, step: u64, encoded: &Encoded, metric: f64) -> Result<()> {
        // The best lives in a file of its step; best.json, replaced atomically, names it.
        let file = self.dir.join(format!("best-step-{step}.safetensors"));
        encoded.write_to(&file, &self.best_path())?;
        self.best = Some(metric);
        for e in fs::read_dir(&self.dir).map_err(|e| Error::io(&self.dir, e))?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let stale = (name.starts_with("best-step-") && name.ends_with(".safetensors") && e.path() != file)
                || name == "best.safetensors";
            if stale {
                let _ = fs::remove_file(e.path());
            }
        }
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn path_for(&self, step: u64) -> PathBuf {
        self.dir.join(format!("ckpt-step-{step}.safetensors"))
    }
    /// The best checkpoint's sidecar, `best.json` (it names its tensors file,
    /// `best-step-<N>.safetensors`); [`load`] takes it.
    pub fn best_path(&self) -> PathBuf {
        self.dir.join("best.json")
    }
    /// The best metric so far (`None` before the first save with a finite metric).
    pub fn best_metric(&self) -> Option<f64> {
        self.best
    }

    /// Steps of the complete step checkpoints on disk (both files present), ascending.
    pub fn steps(&self) -> Result<Vec<u64>> {
        let mut steps: Vec<u64> = self
            .step_files()?
            .into_iter()
            .filter(|&s| self.path_for(s).is_file() && sidecar_path(&self.path_for(s)).is_ok_and(|p| p.is_file()))
            .collect();
        steps.dedup();
        Ok(steps)
    }

    /// The highest-step complete checkpoint, to resume from.
    pub fn latest(&self) -> Result<Option<PathBuf>> {
        Ok(self.steps()?.last().map(|&s| self.path_for(s)))
    }

    /// Saves `tensors` as `ckpt-step-<step>`, with `meta` (a JSON object; its `"step"`, if
    /// given, must equal `step`) and `"metric": metric` in the sidecar; also as `best` when
    /// `metric` is finite and beats the best so far; then deletes step checkpoints older than
    /// the last `keep` (those with a step below `step`; a higher step left by an abandoned run
    /// is not touched).
    pub fn save(
        &mut self,
        step: u64,
        tensors: &[(String, Tensor)],
        meta: &Value,
        metric: Option<f64>,
    ) -> Result<Saved> {
        let path = self.path_for(step);
        let mut meta = meta.clone();
        let Some(obj) = meta.as_object_mut() else {
            return Err(Error::Config(format!("checkpoint {}: meta must be a JSON object", path.display())));
        };
        match obj.get("step") {
            None => {
                obj.insert("step".into(), step.into());
            }
            Some(s) if s.as_u64() == Some(step) => {}
            Some(s) => {
                return Err(Error::Config(format!(
                    "checkpoint {}: meta says step {s}, saving step {step}",
                    path.display()
                )))
            }
        }
        let metric = metric.filter(|m| m.is_finite());
        obj.insert("metric".into(), metric.map_or(Value::Null, Value::from));
        fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        let encoded = Encoded::new(&path, tensors, &meta)?;
        encoded.write(&path)?;
        let best = metric.is_some_and(|m| self.beats(m));
        crate::fsio::crash_point("checkpoint-before-best");
        if let (true, Some(m)) = (best, metric) {
            self.promote(step, &encoded, m)?;
        }
        crate::fsio::crash_point("checkpoint-before-prune");
        let older: Vec<u64> = self.step_files()?.into_iter().filter(|&s| s < step).collect();
        let drop_n = (older.len() + 1).saturating_sub(self.keep);
        for &s in &older[..drop_n] {
            let p = self.path_for(s);
            let side = sidecar_path(&p)?;
            for f in [&side, &p] {
                match fs::remove_file(f) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io(f, e)),
                }
            }
        }
        if drop_n > 0 {
            sync_dir(&path);
        }
        Ok(Saved { path, best })
    }

    /// Steps that have a `ckpt-step-<N>` tensors file or sidecar (complete or not), ascending.
    fn step_files(&self) -> Result<Vec<u64>> {
        let mut steps = BTreeSet::new();
        let entries = match fs::read_dir(&self.dir) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&self.dir, e)),
        };
        for e in entries {
            let e = e.map_err(|e| Error::io(&self.dir, e))?;
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(rest) = name.strip_prefix("ckpt-step-") else { continue };
            let Some(num) = rest.strip_suffix(".safetensors").or_else(|| rest.strip_suffix(".json")) else {
                continue;
            };
            if let Ok(s) = num.parse::<u64>() {
                if num == s.to_string() {
                    steps.insert(s);
                }
            }
        }
        Ok(steps.into_iter().collect())
    }
}
