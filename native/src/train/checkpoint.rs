//! The one checkpoint container of every training loop (foundation, generator, distillation):
//! the loop's tensors (weights, optimiser moments, EMA weights, the variable being optimised),
//! the step, the loop's own state as JSON, its settings and a fingerprint of its inputs, in a
//! checksummed file written atomically.
//!
//! Each loop has its own magic number ([`CheckpointKind`]), so a checkpoint of one kind given
//! to another loop is refused by its header, naming both kinds. A resume is refused, naming
//! what changed, when the settings or the input fingerprint differ.
//!
//! Randomness needs no saved state: every draw comes from a stream keyed by the seed and the
//! step ([`crate::nn::rng`]), so the step number *is* the RNG state. A run resumed from a
//! checkpoint therefore reaches the same result as an uninterrupted one.
use crate::error::{Context, Result};
use crate::Error;
use scdd_core::format::{self, FileKind};
use scdd_core::tensor::Tensor as CoreTensor;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};

/// Which loop wrote a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckpointKind {
    Foundation,
    Generator,
    Distill,
}

impl CheckpointKind {
    pub const ALL: [CheckpointKind; 3] = [CheckpointKind::Foundation, CheckpointKind::Generator, CheckpointKind::Distill];

    pub fn file_kind(self) -> FileKind {
        match self {
            CheckpointKind::Foundation => FileKind { name: "scdd foundation checkpoint", magic: *b"SCDDCKFM", version: 1 },
            CheckpointKind::Generator => FileKind { name: "scdd generator checkpoint", magic: *b"SCDDCKGN", version: 1 },
            CheckpointKind::Distill => FileKind { name: "scdd distillation checkpoint", magic: *b"SCDDCKDS", version: 1 },
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            CheckpointKind::Foundation => "train-foundation",
            CheckpointKind::Generator => "train-generator",
            CheckpointKind::Distill => "distill",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The loop's settings as canonical JSON; a resume must use the same.
    pub config: String,
    /// What the inputs were (file names, shapes, content ids); a resume must see the same.
    pub inputs: BTreeMap<String, String>,
    /// Optimisation steps completed.
    pub step: u64,
    /// Loop state (early stopping, loss history...) as JSON.
    pub state: String,
    /// Named tensors: `model/<param>`, `adam.m/<param>`, `adam.v/<param>`, `ema/<param>`,
    /// `best/<param>`, `var`...
    pub tensors: BTreeMap<String, CoreTensor>,
}

/// Where `--checkpoint-every` writes and `--resume` reads by default: `OUT.ckpt`.
pub fn default_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".ckpt");
    PathBuf::from(s)
}

impl Checkpoint {
    pub fn new(config: String, inputs: BTreeMap<String, String>, step: u64, state: String) -> Self {
        Checkpoint { config, inputs, step, state, tensors: BTreeMap::new() }
    }

    pub fn save(&self, kind: CheckpointKind, path: &Path) -> Result<()> {
        crate::io::fs::write_atomic(path, &format::encode(&kind.file_kind(), self))
            .with_context(|| format!("{}: writing checkpoint", path.display()))
    }

    /// Reads a checkpoint of `kind`; one written by another loop is refused naming both.
    pub fn load(kind: CheckpointKind, path: &Path) -> Result<Self> {
        let bytes = crate::io::fs::read(path)?;
        if let Some(other) = CheckpointKind::ALL.iter().find(|k| **k != kind && bytes.starts_with(&k.file_kind().magic)) {
            return Err(Error::Incompatible {
                path: path.to_path_buf(),
                reason: format!("is a checkpoint of `scdd {}`, not of `scdd {}`", other.name(), kind.name()),
            });
        }
        format::decode(&kind.file_kind(), &bytes).with_context(|| format!("{}: reading checkpoint", path.display()))
    }

    /// Refuses a checkpoint of other settings or other inputs, naming what changed.
    pub fn check(&self, path: &Path, config: &str, inputs: &BTreeMap<String, String>) -> Result<()> {
        if self.config != config {
            return Err(Error::Incompatible {
                path: path.to_path_buf(),
                reason: format!(
                    "was written with other settings; resume with the same ones (checkpoint: {}; now: {})",
                    self.config, config
                ),
            });
        }
        let changed: Vec<String> = inputs
            .iter()
            .filter(|(k, v)| self.inputs.get(*k) != Some(v))
            .map(|(k, v)| format!("{k} was {} and is now {v}", self.inputs.get(k).map(String::as_str).unwrap_or("absent")))
            .collect();
        if !changed.is_empty() {
            return Err(Error::Incompatible {
                path: path.to_path_buf(),
                reason: format!("was written for other inputs ({}); remove it or run without --resume", changed.join("; ")),
            });
        }
        Ok(())
    }

    pub fn put(&mut self, name: impl Into<String>, t: &Tensor) -> Result<()> {
        self.tensors.insert(name.into(), crate::nn::to_core(t)?);
        Ok(())
    }

    /// One tensor by name, on `device`.
    pub fn get(&self, name: &str, device: Device) -> Result<Tensor> {
        let t = self.tensors.get(name).with_context(|| format!("checkpoint: tensor {name} missing"))?;
        crate::nn::from_core(t, device)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_refused_by_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.ckpt");
        let ck = Checkpoint::new("{}".into(), BTreeMap::from([("data".into(), "a".into())]), 3, "{}".into());
        ck.save(CheckpointKind::Foundation, &p).unwrap();
        let e = Checkpoint::load(CheckpointKind::Distill, &p).unwrap_err();
        assert!(matches!(e.root(), Error::Incompatible { .. }), "{e}");
        assert!(e.to_string().contains("`scdd train-foundation`, not of `scdd distill`"), "{e}");
        let back = Checkpoint::load(CheckpointKind::Foundation, &p).unwrap();
        assert_eq!(back, ck);
        back.check(&p, "{}", &BTreeMap::from([("data".into(), "a".into())])).unwrap();
        let e = back.check(&p, "{}", &BTreeMap::from([("data".into(), "b".into())])).unwrap_err();
        assert!(e.to_string().contains("data was a and is now b"), "{e}");
        assert!(back.check(&p, "{\"x\":1}", &back.inputs).is_err());
    }
}
