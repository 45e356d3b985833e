//! `.scdd` latent-code files: the distilled dataset, a few kilobytes.
use crate::error::{CoreError, Result};
use crate::format::{self, FileKind};
use crate::tensor::{DType, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const KIND: FileKind = FileKind { name: "scdd latent-code (.scdd)", magic: *b"SCDDCODE", version: 1 };

/// Where a code file came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// Source dataset name (file stem) and shape (cells, genes) after QC.
    pub source_name: String,
    pub source_shape: (u64, u64),
    /// Distillation method, e.g. `"dm+dc"`.
    pub method: String,
    pub seed: u64,
    pub scdd_version: String,
    /// RFC 3339 UTC timestamp.
    pub created: String,
    /// Free-form run parameters (steps, learning rate, ...).
    pub params: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatentCodes {
    /// `[n, latent_dim]`, f32 or f16.
    pub codes: Tensor,
    /// Class of each code, an index into `classes`.
    pub labels: Vec<u32>,
    /// The generator's class names (all of them, also those without codes here).
    pub classes: Vec<String>,
    pub label_column: String,
    /// Synthetic cells per class.
    pub spc: u32,
    /// Diffusion timestep `t` the denoiser is applied at when decoding.
    pub timestep: u32,
    /// [`crate::bundle::GeneratorBundle::generator_id`] of the generator that decodes them.
    pub generator_id: String,
    pub provenance: Provenance,
}

impl LatentCodes {
    pub fn n_codes(&self) -> usize {
        self.labels.len()
    }
    pub fn latent_dim(&self) -> usize {
        self.codes.shape.get(1).copied().unwrap_or(0)
    }

    /// Structural checks: shapes, labels in range.
    pub fn validate(&self) -> Result<()> {
        if self.codes.shape.len() != 2 || self.codes.shape[0] != self.labels.len() {
            return Err(CoreError::data(
                "codes",
                format!("shape {:?} does not fit {} labels", self.codes.shape, self.labels.len()),
            ));
        }
        if let Some(&bad) = self.labels.iter().find(|&&l| l as usize >= self.classes.len()) {
            return Err(CoreError::data("codes/labels", format!("label {bad} but only {} classes", self.classes.len())));
        }
        self.codes.validate()
    }

    /// Whether `bundle` decodes these codes: the generator the codes were distilled with (its
    /// content id, which a recipient's slimmed bundle keeps), the same class list and latent
    /// width. The reason, when not, reads after a file name (every reader, native or in the
    /// browser, reports the same).
    pub fn compatibility(&self, bundle: &crate::bundle::GeneratorBundle) -> std::result::Result<(), String> {
        let id = bundle.generator_id();
        if !bundle.decodes_codes_of(&self.generator_id) {
            return Err(format!(
                "made for generator {} but the given bundle is generator {}; decode with the bundle the codes were distilled with",
                &self.generator_id[..12.min(self.generator_id.len())],
                &id[..12.min(id.len())]
            ));
        }
        if self.classes != bundle.classes {
            return Err("class list differs from the generator's".into());
        }
        if self.latent_dim() != bundle.spec.latent_dim {
            return Err(format!("codes of width {} but the generator's latent width is {}", self.latent_dim(), bundle.spec.latent_dim));
        }
        Ok(())
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        format::encode(&KIND, self)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let c: LatentCodes = format::decode(&KIND, bytes)?;
        c.validate()?;
        Ok(c)
    }

    /// Stores the codes as f16 (halves the file).
    pub fn to_f16(&self) -> Result<LatentCodes> {
        let mut c = self.clone();
        if c.codes.dtype == DType::F32 {
            c.codes = Tensor::from_f32_as_f16(c.codes.shape.clone(), &c.codes.to_f32()?)?;
        }
        Ok(c)
    }

    /// Merges code files made for the same generator over disjoint classes (e.g. one shard
    /// per class group). Codes come out grouped by class id.
    pub fn merge(parts: &[LatentCodes]) -> Result<LatentCodes> {
        let first = parts.first().ok_or_else(|| CoreError::Mismatch("nothing to merge".into()))?;
        let mut owner: BTreeMap<u32, usize> = BTreeMap::new();
        for (i, p) in parts.iter().enumerate() {
            p.validate().map_err(|e| CoreError::Mismatch(format!("code file {i}: {e}")))?;
            if p.generator_id != first.generator_id {
                return Err(CoreError::Mismatch(format!(
                    "code file {i} was made for generator {} but file 0 for {}",
                    short(&p.generator_id),
                    short(&first.generator_id)
                )));
            }
            if p.classes != first.classes || p.latent_dim() != first.latent_dim() || p.timestep != first.timestep {
                return Err(CoreError::Mismatch(format!(
                    "code file {i} differs from file 0 in classes, latent size or timestep"
                )));
            }
            for &l in &p.labels {
                if let Some(&j) = owner.get(&l) {
                    if j != i {
                        return Err(CoreError::Mismatch(format!(
                            "class {:?} has codes in files {j} and {i}; merged files must cover disjoint classes",
                            first.classes[l as usize]
                        )));
                    }
                }
                owner.insert(l, i);
            }
        }
        let dim = first.latent_dim();
        let mut rows: Vec<(u32, Vec<f32>)> = Vec::new();
        for p in parts {
            let v = p.codes.to_f32()?;
            for (k, &l) in p.labels.iter().enumerate() {
                rows.push((l, v[k * dim..(k + 1) * dim].to_vec()));
            }
        }
        rows.sort_by_key(|r| r.0);
        let labels: Vec<u32> = rows.iter().map(|r| r.0).collect();
        let flat: Vec<f32> = rows.into_iter().flat_map(|r| r.1).collect();
        let mut out = first.clone();
        out.codes = Tensor::from_f32(vec![labels.len(), dim], &flat)?;
        if first.codes.dtype == DType::F16 {
            out.codes = Tensor::from_f32_as_f16(vec![labels.len(), dim], &flat)?;
        }
        out.labels = labels;
        out.provenance.params.insert("merged_from".into(), parts.len().to_string());
        Ok(out)
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}
