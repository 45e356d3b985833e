//! Reading scdd's own artifacts — latent-code files (`.scdd`) and generator bundles
//! (`.scddg`) — with the file named in every error.
use crate::error::{Context, Result};
use crate::io::fs;
use scdd_core::bundle::GeneratorBundle;
use scdd_core::codes::LatentCodes;
use std::path::Path;

/// A latent-code file.
pub fn load_codes(path: &Path) -> Result<LatentCodes> {
    LatentCodes::from_bytes(&fs::read(path)?).with_context(|| path.display().to_string())
}

/// A generator (or foundation) bundle.
pub fn load_bundle(path: &Path) -> Result<GeneratorBundle> {
    GeneratorBundle::from_bytes(&fs::read(path)?).with_context(|| path.display().to_string())
}

/// Lower-case hex of bytes (content hashes): the core's, so ids read the same everywhere.
pub use scdd_core::format::hex;
