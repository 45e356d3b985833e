//! Training checkpoints: model weights, optimizer moments, EMA weights, the step and the
//! trainer's own state, in one checksummed file written atomically.
//!
//! Randomness needs no saved state: every draw comes from a stream keyed by the seed and the
//! step ([`crate::rng`]), so the step number *is* the RNG state. A run resumed from a
//! checkpoint therefore reaches the same final weights as an uninterrupted one.
use anyhow::{bail, Context, Result};
use scdd_core::format::{self, FileKind};
use scdd_core::tensor::Tensor as CoreTensor;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};

pub const KIND: FileKind = FileKind { name: "scdd training checkpoint", magic: *b"SCDDCKPT", version: 1 };

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// `foundation` or `generator`.
    pub task: String,
    /// The training configuration as JSON; a resume must use the same one.
    pub config: String,
    /// Optimisation steps completed.
    pub step: u64,
    /// Trainer state (early stopping, history...) as JSON.
    pub state: String,
    /// `model/<param>`, `adam.m/<param>`, `adam.v/<param>`, `ema/<param>`, `best/<param>`.
    pub tensors: BTreeMap<String, CoreTensor>,
}

/// Where `--checkpoint-every` writes and `--resume` reads by default: `OUT.ckpt`.
pub fn default_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".ckpt");
    PathBuf::from(s)
}

impl Checkpoint {
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::fsutil::write_atomic(path, &format::encode(&KIND, self)).with_context(|| format!("{}: writing checkpoint", path.display()))
    }

    pub fn load(path: &Path) -> Result<Self> {
        let bytes = crate::fsutil::read(path)?;
        format::decode(&KIND, &bytes).with_context(|| format!("{}: reading checkpoint", path.display()))
    }

    /// Refuses a checkpoint of another task or another configuration.
    pub fn check(&self, path: &Path, task: &str, config: &str) -> Result<()> {
        if self.task != task {
            bail!("{}: is a checkpoint of `{}`, not of `{task}`", path.display(), self.task);
        }
        if self.config != config {
            bail!(
                "{}: was written with a different training configuration; resume with the same flags (checkpoint: {}; now: {})",
                path.display(),
                self.config,
                config
            );
        }
        Ok(())
    }

    pub fn put(&mut self, name: String, t: &Tensor) -> Result<()> {
        self.tensors.insert(name, crate::nn::to_core(t)?);
        Ok(())
    }

    /// The tensors whose name starts with `prefix` (prefix removed), on `device`.
    pub fn group(&self, prefix: &str, device: Device) -> Result<BTreeMap<String, Tensor>> {
        let mut out = BTreeMap::new();
        for (k, v) in &self.tensors {
            if let Some(rest) = k.strip_prefix(prefix) {
                out.insert(rest.to_string(), crate::nn::from_core(v, device)?);
            }
        }
        Ok(out)
    }

    /// Tensors with their full names, on `device`.
    pub fn all(&self, device: Device) -> Result<BTreeMap<String, Tensor>> {
        self.group("", device)
    }
}
