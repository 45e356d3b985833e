//! Atomic output files: write to a temporary sibling, fsync, rename. A crash or an error leaves
//! either the old file or none, never a partial one.
use crate::error::{Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// A temporary path next to `path` (same directory, so the rename is atomic).
pub fn temp_sibling(path: &Path) -> PathBuf {
    let name = path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// Writes `bytes` to `path` atomically, creating parent directories.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    with_atomic(path, |tmp| {
        let mut f = std::fs::File::create(tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        Ok(())
    })
}

/// Runs `write` against a temporary path and renames it to `path` only if `write` succeeds.
pub fn with_atomic<T>(path: &Path, write: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating directory {}", dir.display()))?;
    }
    let tmp = temp_sibling(path);
    match write(&tmp) {
        Ok(v) => {
            std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
            Ok(v)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Writes pretty JSON atomically.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut s = serde_json::to_string_pretty(value)?;
    s.push('\n');
    write_atomic(path, s.as_bytes())
}

/// Reads a whole file, naming it in the error.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))
}

/// The current time as RFC 3339 (UTC, seconds).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// Checks, before any work, that `out` can be written as a file with one of the extensions in
/// `exts` (without the dot) and that it is none of `inputs`: not an existing directory, not
/// the same file as an input (also through another path or a link), parent directory
/// creatable. A clear error names the path and what is wrong.
pub fn check_output(flag: &str, out: &Path, exts: &[&str], inputs: &[&Path]) -> Result<()> {
    let ext = out.extension().and_then(|e| e.to_str()).unwrap_or("");
    if !exts.is_empty() && !exts.contains(&ext) {
        let want: Vec<String> = exts.iter().map(|e| format!(".{e}")).collect();
        return Err(crate::Error::Output {
            path: out.to_path_buf(),
            reason: format!("{flag} must end in {} for what is written here", want.join(" or ")),
        });
    }
    if out.is_dir() {
        return Err(crate::Error::Output { path: out.to_path_buf(), reason: format!("{flag} is an existing directory; give a file path") });
    }
    for input in inputs {
        if same_file(out, input) {
            return Err(crate::Error::Output {
                path: out.to_path_buf(),
                reason: format!("{flag} is the input file {}; it would be overwritten — choose another output", input.display()),
            });
        }
    }
    Ok(())
}

/// Checks that `dir` can hold outputs and is none of `inputs` nor contains an input that
/// would be overwritten by one of `names`.
pub fn check_output_dir(flag: &str, dir: &Path, names: &[&str], inputs: &[&Path]) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        return Err(crate::Error::Output { path: dir.to_path_buf(), reason: format!("{flag} is an existing file, not a directory") });
    }
    for name in names {
        let target = dir.join(name);
        for input in inputs {
            if same_file(&target, input) {
                return Err(crate::Error::Output {
                    path: dir.to_path_buf(),
                    reason: format!("{flag} would overwrite the input {} with {name}; choose another directory", input.display()),
                });
            }
        }
    }
    Ok(())
}

/// True when both paths name the same existing file (canonical paths equal).
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}
