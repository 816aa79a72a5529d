//! One training run's folder and what happens around the loop: `config.json` (the effective
//! configuration), `metrics.jsonl` (one object per epoch), checkpoints (the last 2 and the best
//! by validation accuracy, safetensors + JSON sidecar), live progress (a bar with ETA on a
//! terminal, plain lines otherwise, nothing with `quiet`), and a clean stop on Ctrl-C. [`Run`]
//! implements [`Hooks`], so any [`crate::train::Learner`] gets all of it from [`crate::train::fit`].

use crate::checkpoint::{self, Checkpoint, CheckpointSet};
use crate::error::{Error, Result};
use crate::fsio::{self, write_atomic};
use crate::tensor::Tensor;
use crate::train::{EpochReport, Hooks};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Checkpoints kept besides the best.
pub const KEEP_LAST: usize = 2;

static STOP: AtomicBool = AtomicBool::new(false);

/// Makes the first Ctrl-C (or SIGTERM) ask the running loop to stop after its current step and
/// save; a second one exits at once with status 130. Installing twice is harmless.
pub fn install_interrupt_handler() {
    let _ = ctrlc::set_handler(|| {
        if STOP.swap(true, Ordering::SeqCst) {
            eprint_line("\ninterrupted again: exiting without saving");
            std::process::exit(130);
        }
        eprint_line("\ninterrupt: stopping after this step and saving a checkpoint (Ctrl-C again to abort)");
    });
}

/// Prints a line to stdout, ignoring a closed pipe or a full disk: training never dies because
/// its terminal or pipe went away (`atomgrad train | head -3`).
pub fn print_line(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes()).and_then(|_| out.write_all(b"\n")).and_then(|_| out.flush());
}

/// [`print_line`] to stderr.
pub fn eprint_line(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// Whether an interrupt asked training to stop.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// The entries of `dir` other than hidden ones (the lock, temporary files); none if it is missing.
fn visible_entries(dir: &Path) -> Vec<std::fs::DirEntry> {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().filter(|e| !e.file_name().to_string_lossy().starts_with('.')).collect())
        .unwrap_or_default()
}

/// Fails when `out` already holds files, unless `force`, and with `force` unless it is an
/// atomgrad folder (it has a `config.json`), which [`prepare_folder`] then empties: earlier
/// results are never overwritten by accident, and `--force` never empties a folder of other files.
pub fn check_empty(out: &Path, force: bool) -> Result<()> {
    if visible_entries(out).is_empty() {
        return Ok(());
    }
    if !force {
        return Err(Error::Config(format!(
            "--out: run folder {} already holds results; choose another folder, pass --force, or --resume it",
            out.display()
        )));
    }
    if !out.join("config.json").is_file() {
        return Err(Error::Config(format!(
            "--force: {} holds files but is not an atomgrad run or comparison folder (no config.json); \
             refusing to empty it",
            out.display()
        )));
    }
    Ok(())
}

/// An exclusive lock on a run or comparison folder (`<dir>/.lock`, holding the owner's pid),
/// held while this process works in it: a second process gets an error, not a share of the folder.
pub struct FolderLock {
    _file: std::fs::File,
}

/// Creates `dir` if needed and takes its lock, or fails naming the process that holds it; then
/// checks that the folder is writable (before any training) and removes temporary files a
/// killed writer left (no other process can be writing them now).
pub fn lock_folder(dir: &Path) -> Result<FolderLock> {
    use std::io::{Read, Seek, Write};
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let path = dir.join(".lock");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            return Err(Error::Config(format!(
                "{} is in use by another atomgrad process (pid {}); wait for it to finish or choose another folder",
                dir.display(),
                pid.trim()
            )));
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
    }
    file.set_len(0)
        .and_then(|_| file.rewind())
        .and_then(|_| write!(file, "{}", std::process::id()))
        .map_err(|e| Error::io(&path, e))?;
    let probe = dir.join(format!(".probe.tmp-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .map_err(|e| Error::Io { path: dir.display().to_string(), msg: format!("not writable: {e}") })?;
    let _ = std::fs::remove_file(&probe);
    for d in [dir.to_path_buf(), dir.join("checkpoints")] {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.contains(".tmp-") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(FolderLock { _file: file })
}

/// Locks `dir` and, with `force`, empties it (all but the lock): `--force` leaves no trace of an
/// earlier run. Call [`check_empty`] first.
pub fn prepare_folder(dir: &Path, force: bool) -> Result<FolderLock> {
    check_empty(dir, force)?;
    let lock = lock_folder(dir)?;
    if force {
        for e in visible_entries(dir) {
            let p = e.path();
            let r = if e.file_type().is_ok_and(|t| t.is_dir()) {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            r.map_err(|e| Error::io(&p, e))?;
        }
    }
    Ok(lock)
}

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Display {
    /// A bar per epoch with ETA, samples/s and the last epoch's metrics (stderr is a terminal).
    Bar,
    /// One line per epoch (logs, pipes, CI).
    Lines,
    /// Only the final summary.
    Quiet,
}

impl Display {
    pub fn detect(quiet: bool) -> Display {
        if quiet {
            Display::Quiet
        } else if std::io::stderr().is_terminal() {
            Display::Bar
        } else {
            Display::Lines
        }
    }
}

/// A training run's folder, progress display and checkpoints.
pub struct Run {
    dir: PathBuf,
    ckpts: CheckpointSet,
    display: Display,
    bar: ProgressBar,
    /// Extra sidecar fields of every checkpoint: the run's options (`"options"`) and what the
    /// caller adds ([`Run::add_meta`]).
    meta: Value,
    /// Steps taken so far, and the limit after which training stops (`--max-steps`).
    step: usize,
    max_steps: Option<usize>,
    detect_anomaly: bool,
    /// Lines mode: when the epoch started and when the last progress line was printed.
    epoch_start: std::time::Instant,
    last_line: std::time::Instant,
    /// The batch the display started counting at (not 1 in a resumed epoch).
    first_batch: usize,
    /// An outer progress bar (a comparison's) that counts this run's steps too.
    outer: Option<ProgressBar>,
    /// The folder's lock, held as long as the run is open.
    _lock: FolderLock,
}

/// Lines mode prints a progress line at most this often within an epoch.
const LINE_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

impl Run {
    /// Starts a run in `dir` (refusing a non-empty one unless `force`) and writes `config`
    /// as `config.json`.
    pub fn create(dir: &Path, force: bool, config: &Value, display: Display) -> Result<Run> {
        let lock = prepare_folder(dir, force)?;
        let text = serde_json::to_string_pretty(config).expect("a JSON value serialises");
        write_atomic(dir.join("config.json"), text.as_bytes())?;
        Run::open(dir, config, display, lock)
    }

    /// Reopens a run folder written by [`Run::create`]: its configuration and latest checkpoint
    /// (`None` when it was stopped before its first one). A checkpoint saved with other options
    /// than the folder's is refused; `metrics.jsonl` is cut back to the lines the checkpoint
    /// covers (a stop between a metrics line and its checkpoint would otherwise repeat it).
    pub fn resume(dir: &Path, display: Display) -> Result<(Run, Value, Option<Checkpoint>)> {
        let path = dir.join("config.json");
        if !path.is_file() {
            return Err(Error::Config(format!("--resume: {} has no config.json: not a run folder", dir.display())));
        }
        let lock = lock_folder(dir)?;
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let config: Value = serde_json::from_str(&text)
            .map_err(|e| Error::data(&path, format!("not valid JSON ({e}); was this folder written by `train`?")))?;
        let mut run = Run::open(dir, &config, display, lock)?;
        let ck = run.ckpts.latest()?.map(|p| checkpoint::load(&p)).transpose()?;
        let step = match &ck {
            Some(ck) => {
                if ck.sidecar.get("options") != Some(&config) {
                    return Err(Error::data(
                        &ck.path,
                        format!("this checkpoint was saved with other options than {}: not this run's", path.display()),
                    ));
                }
                ck.sidecar.get("step").and_then(Value::as_u64).unwrap_or(0)
            }
            None => 0,
        };
        run.step = step as usize; // so --max-steps counts the steps already taken
        let metrics = dir.join("metrics.jsonl");
        let lines = fsio::read_json_lines(&metrics)?;
        let kept: Vec<Value> = lines
            .iter()
            .filter(|l| l.get("step").and_then(Value::as_u64).is_some_and(|s| s <= step))
            .cloned()
            .collect();
        if kept.len() != lines.len() || metrics.is_file() {
            fsio::write_json_lines(&metrics, &kept)?;
        }
        Ok((run, config, ck))
    }

    fn open(dir: &Path, config: &Value, display: Display, lock: FolderLock) -> Result<Run> {
        let bar = if display == Display::Bar { ProgressBar::new(0) } else { ProgressBar::hidden() };
        bar.set_style(
            ProgressStyle::with_template("epoch {prefix} {bar:30} {pos}/{len} samples  {rate}  ETA {eta}  {msg}")
                .expect("valid template")
                .with_key("rate", |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.0} samples/s", s.per_sec());
                }),
        );
        Ok(Run {
            dir: dir.to_path_buf(),
            ckpts: CheckpointSet::open(dir.join("checkpoints"), KEEP_LAST, true)?,
            display,
            bar,
            meta: serde_json::json!({ "options": config }),
            step: 0,
            max_steps: None,
            detect_anomaly: false,
            epoch_start: std::time::Instant::now(),
            last_line: std::time::Instant::now(),
            first_batch: 1,
            outer: None,
            _lock: lock,
        })
    }

    /// Makes every step of this run also advance `bar` (a comparison's progress over its runs).
    pub fn attach(&mut self, bar: ProgressBar) {
        self.outer = Some(bar);
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn display(&self) -> Display {
        self.display
    }
    /// The best checkpoint so far: `checkpoints/best.json`, naming `best-step-<N>.safetensors`.
    pub fn best_path(&self) -> PathBuf {
        self.ckpts.best_path()
    }

    /// Prints a line unless quiet (above the bar on a terminal).
    pub fn say(&self, line: &str) {
        match self.display {
            Display::Bar => self.bar.println(line),
            Display::Lines => print_line(line),
            Display::Quiet => {}
        }
    }

    /// Appends one JSON object (with a `"step"` field, which resume trims by) to `metrics.jsonl`,
    /// in one synced write.
    pub fn log(&self, line: &Value) -> Result<()> {
        fsio::append_line(&self.dir.join("metrics.jsonl"), &line.to_string())
    }

    /// Adds `fields` (a JSON object) to the sidecar of every checkpoint from now on (e.g. what
    /// `explain` needs to rebuild the model).
    pub fn add_meta(&mut self, fields: Value) {
        if let (Some(m), Value::Object(f)) = (self.meta.as_object_mut(), fields) {
            m.extend(f);
        }
    }

    /// Stop (and save) once this many optimizer steps are done in all.
    pub fn set_max_steps(&mut self, max_steps: Option<usize>) {
        self.max_steps = max_steps;
    }
    /// Whether training loops should check every op for NaN/Inf (`--detect-anomaly`).
    pub fn set_detect_anomaly(&mut self, on: bool) {
        self.detect_anomaly = on;
    }
    pub fn detect_anomaly(&self) -> bool {
        self.detect_anomaly
    }

    /// Optimizer steps taken so far (as of the last step this run saw).
    pub fn steps(&self) -> usize {
        self.step
    }

    /// Writes `loss.png` and `accuracy.png` (validation and test, per epoch) into the run folder.
    pub fn curves(&self, title: &str, history: &[EpochReport]) -> Result<()> {
        let series = |name: &str, f: &dyn Fn(&EpochReport) -> f64| crate::plot::Series {
            name: name.to_string(),
            points: history.iter().map(|r| (r.epoch as f64 + 1.0, f(r))).collect(),
            band: None,
        };
        let loss = [series("training loss", &|r| r.train_loss)];
        crate::plot::line_plot(self.dir.join("loss.png"), &format!("{title}: training loss"), "epoch", "loss", &loss)?;
        let acc = [series("validation", &|r| 100.0 * r.val_accuracy), series("test", &|r| 100.0 * r.test_accuracy)];
        crate::plot::line_plot(
            self.dir.join("accuracy.png"),
            &format!("{title}: accuracy"),
            "epoch",
            "accuracy (%)",
            &acc,
        )
    }

    /// Clears the bar (before the final summary).
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Hooks for Run {
    fn after_step(&mut self, step: usize, epoch: usize, batch: usize, batches: usize) {
        self.step = step;
        if let Some(b) = &self.outer {
            b.inc(1);
        }
        // The bar counts samples (the run's batch size from its options), so its rate reads in
        // samples per second.
        let per = self.meta["options"].get("batch").and_then(Value::as_u64).unwrap_or(1).max(1);
        if batch == 1 || self.bar.length() != Some(batches as u64 * per) {
            self.bar.set_length(batches as u64 * per);
            self.bar.set_prefix(format!("{}", epoch + 1));
            self.bar.reset_eta();
            self.epoch_start = std::time::Instant::now();
            self.last_line = self.epoch_start;
            self.first_batch = batch;
        }
        self.bar.set_position(batch as u64 * per);
        // Without a terminal, a line every 30 s shows a long epoch is alive and when it ends.
        if self.display == Display::Lines && self.last_line.elapsed() >= LINE_EVERY {
            self.last_line = std::time::Instant::now();
            let rate = (batch + 1 - self.first_batch) as f64 / self.epoch_start.elapsed().as_secs_f64();
            let eta = (batches - batch) as f64 / rate.max(1e-9);
            print_line(&format!(
                "epoch {:>3}  step {batch}/{batches}  {rate:.2} steps/s  ETA {}m {:02}s",
                epoch + 1,
                eta as u64 / 60,
                eta as u64 % 60
            ));
        }
    }

    fn should_stop(&self) -> bool {
        stop_requested() || self.max_steps.is_some_and(|m| self.step >= m)
    }

    fn after_epoch(&mut self, r: &EpochReport) -> Result<()> {
        self.log(&serde_json::to_value(r).expect("EpochReport serialises"))?;
        let line = format!(
            "epoch {:>3}  step {:>6}  loss {:.4}  val acc {:.2}%  test acc {:.2}%  {:.0} samples/s",
            r.epoch + 1,
            r.step,
            r.train_loss,
            100.0 * r.val_accuracy,
            100.0 * r.test_accuracy,
            r.samples_per_sec
        );
        self.bar.set_message(format!("last: loss {:.4}, val acc {:.2}%", r.train_loss, 100.0 * r.val_accuracy));
        self.say(&line);
        Ok(())
    }

    fn wants_checkpoints(&self) -> bool {
        true
    }

    fn checkpoint(&mut self, step: u64, tensors: &[(String, Tensor)], meta: &Value, metric: Option<f64>) -> Result<()> {
        let mut meta = meta.clone();
        if let (Some(m), Some(extra)) = (meta.as_object_mut(), self.meta.as_object()) {
            m.extend(extra.clone());
        }
        let saved = self.ckpts.save(step, tensors, &meta, metric)?;
        if metric.is_none() {
            self.say(&format!("stopped at step {step}; saved {} (resume with --resume)", saved.path.display()));
        }
        Ok(())
    }
}
