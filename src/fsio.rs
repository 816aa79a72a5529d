//! The one home of file writes that must survive a kill: whole files replaced atomically
//! ([`write_atomic`]: plots, tables, configurations, the pieces of a checkpoint) and JSON lines
//! appended whole ([`append_line`]: `metrics.jsonl`), read back without a torn tail
//! ([`read_json_lines`]).

use crate::error::{Error, Result};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Test-only crash points, for the kill tests: with `ATOMGRAD_CRASH_AT=<name>:<n>` in the
/// environment the process aborts (no destructors, no flushing, as SIGKILL would end it) the n-th
/// time (1-based) it passes the point `name`. Without the variable this is one atomic load.
pub fn crash_point(name: &str) {
    if crash_armed(name) {
        std::process::abort();
    }
}

/// Whether the crash point `name` fires now (see [`crash_point`]); for points that first leave a
/// partial write behind.
pub fn crash_armed(name: &str) -> bool {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static SPEC: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static PASSED: AtomicU64 = AtomicU64::new(0);
    let spec = SPEC.get_or_init(|| {
        let v = std::env::var("ATOMGRAD_CRASH_AT").ok()?;
        let (n, k) = v.rsplit_once(':')?;
        Some((n.to_string(), k.parse().ok()?))
    });
    match spec {
        Some((n, k)) if n == name => PASSED.fetch_add(1, Ordering::SeqCst) + 1 == *k,
        _ => false,
    }
}

/// A temporary file's path beside `path`: `.<name>.tmp-<pid>` (one writer per target and process).
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Writes `bytes` to the file at `path` (created or truncated) and syncs it to disk.
pub fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f =
        fs::OpenOptions::new().write(true).create(true).truncate(true).open(path).map_err(|e| Error::io(path, e))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| Error::io(path, e))
}

/// Makes renames and removals in `file`'s directory durable (best effort: some platforms and
/// filesystems cannot open or sync a directory).
pub fn sync_dir(file: &Path) {
    let dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Writes `bytes` to `path` atomically: a temporary file beside the target is written, synced and
/// renamed over it. On failure the temporary file is removed and an existing target is untouched.
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    let path = path.as_ref();
    let io = |msg: String| Error::Io { path: path.display().to_string(), msg };
    if path.file_name().is_none() {
        return Err(io("not a file name".into()));
    }
    let tmp = temp_path(path);
    let result = write_synced(&tmp, bytes)
        .map_err(|e| io(format!("writing temporary file {}: {e}", tmp.display())))
        .and_then(|_| {
            crash_point("atomic-before-rename");
            fs::rename(&tmp, path).map_err(|e| io(format!("cannot replace it with {}: {e}", tmp.display())))
        });
    crash_point("atomic-after-rename");
    match result {
        Ok(()) => sync_dir(path),
        Err(_) => {
            let _ = fs::remove_file(&tmp);
        }
    }
    result
}

/// [`write_atomic`] of a value as pretty JSON.
pub fn write_json(path: impl AsRef<Path>, value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("a serialisable value");
    write_atomic(path, format!("{text}\n").as_bytes())
}

/// Reads a JSON file written by [`write_json`], naming the file in any error.
pub fn read_json<T: serde::de::DeserializeOwned>(path: impl AsRef<Path>) -> Result<T> {
    let path = path.as_ref();
    let text = fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::data(path, format!("not the expected JSON: {e}")))
}

/// Appends `line` and a newline to `path` in one `write` and syncs the data, so a kill leaves
/// either the whole line or (at worst) a torn last line that [`read_json_lines`] drops.
pub fn append_line(path: &Path, line: &str) -> Result<()> {
    let mut f = fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| Error::io(path, e))?;
    let mut buf = Vec::with_capacity(line.len() + 1);
    buf.extend_from_slice(line.as_bytes());
    buf.push(b'\n');
    if crash_armed("metrics-torn") {
        let _ = f.write_all(&buf[..buf.len() / 2]).and_then(|_| f.sync_data());
        std::process::abort();
    }
    f.write_all(&buf).and_then(|_| f.sync_data()).map_err(|e| Error::io(path, e))?;
    crash_point("metrics-after-line");
    Ok(())
}

/// The JSON objects of a JSON-lines file, in order; a last line without its newline (a write cut
/// short by a kill) or one that does not parse is dropped. A missing file has no lines.
pub fn read_json_lines(path: &Path) -> Result<Vec<serde_json::Value>> {
    let text = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let complete = match text.iter().rposition(|&b| b == b'\n') {
        Some(i) => &text[..=i],
        None => &[][..],
    };
    Ok(complete.split(|&b| b == b'\n').filter_map(|l| serde_json::from_slice(l).ok()).collect())
}

/// Rewrites a JSON-lines file atomically with `lines` (a resumed run trims its metrics to its
/// checkpoint this way).
pub fn write_json_lines(path: &Path, lines: &[serde_json::Value]) -> Result<()> {
    let mut text = String::new();
    for l in lines {
        text.push_str(&l.to_string());
        text.push('\n');
    }
    write_atomic(path, text.as_bytes())
}

/// Today's date in UTC as `YYYY-MM-DD` (for provenance lines; no time-zone database needed).
pub fn today_utc() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The source commit of this build, for provenance: `$ATOMGRAD_COMMIT` when set (packed binaries
/// on machines without the repository), else `git rev-parse --short HEAD` in the crate's source
/// tree (with `+dirty` for uncommitted changes to tracked files), else `"unknown"`.
pub fn source_commit() -> String {
    if let Ok(c) = std::env::var("ATOMGRAD_COMMIT") {
        if !c.trim().is_empty() {
            return c.trim().to_string();
        }
    }
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(env!("CARGO_MANIFEST_DIR"))
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(c) if !c.is_empty() => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{c}+dirty")
            } else {
                c
            }
        }
        _ => "unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_drop_a_torn_tail() {
        let dir = std::env::temp_dir().join(format!("atomgrad-fsio-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("m.jsonl");
        let _ = fs::remove_file(&p);
        append_line(&p, r#"{"a":1}"#).unwrap();
        append_line(&p, r#"{"a":2}"#).unwrap();
        let mut f = fs::OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(br#"{"a":3"#).unwrap();
        let lines = read_json_lines(&p).unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["a"], 2);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn civil_date_is_well_formed() {
        let d = today_utc();
        assert_eq!(d.len(), 10);
        assert!(d.starts_with("20"));
    }
}
