//! `scdd bench`: benchmarks that print a table and write JSON — [`io`] (read + QC + normalise
//! against anndata/scanpy), [`train`] (trainer throughput), [`distill`] (distillation steps/s),
//! [`torch`] (the training and distillation loops against a compact PyTorch implementation),
//! [`evaluate`] (the evaluator plugins: the celltypist plugin against CellTypist, fit times),
//! [`decode`] (decoding throughput: libtorch against the core's reference).
pub mod decode;
pub mod distill;
pub mod evaluate;
pub mod io;
pub mod torch;
pub mod train;

use std::path::{Path, PathBuf};

/// The Python the benchmarks compare against: `$SCDD_PYTHON`, else the workspace's
/// `.venv/bin/python` (made by `scripts/setup.sh`).
pub fn default_python() -> PathBuf {
    match std::env::var_os("SCDD_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => workspace_root().join(".venv/bin/python"),
    }
}

/// The workspace this binary was built from.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}
