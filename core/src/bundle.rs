//! `.scddg` generator bundles: graph spec, gene list, classes and named tensors.
use crate::error::{CoreError, Result};
use crate::format::{self, FileKind};
use crate::graph::GraphSpec;
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Metadata key of a half-precision copy made by [`GeneratorBundle::for_recipients`]: the id of
/// the generator it was converted from. Codes made for that generator decode with the copy (to
/// f16 rounding of the weights). Like everything in a file, it is trusted as written: the
/// checksum catches damage, not forgery.
pub const F16_OF: &str = "scdd.f16_of";

pub const KIND: FileKind = FileKind { name: "scdd generator bundle (.scddg)", magic: *b"SCDDGENB", version: 1 };

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GeneratorBundle {
    pub spec: GraphSpec,
    /// Gene order of the model's input and output (length `spec.n_genes`).
    pub genes: Vec<String>,
    /// Label column the denoiser's classes came from (empty for a foundation-only bundle).
    pub label_column: String,
    /// Class names; index = class id of the class embedding.
    pub classes: Vec<String>,
    pub tensors: BTreeMap<String, Tensor>,
    /// Training reports and provenance (free-form, not part of the content id).
    pub metadata: BTreeMap<String, String>,
}

/// The part of a bundle that decides what a latent code decodes to.
#[derive(Serialize)]
struct GeneratingPart<'a> {
    n_genes: usize,
    latent_dim: usize,
    space: &'a crate::graph::ExpressionSpace,
    decoder: &'a crate::graph::Stack,
    denoiser: &'a Option<crate::graph::DenoiserSpec>,
    schedule: &'a crate::graph::NoiseSchedule,
    genes: &'a [String],
    classes: &'a [String],
    tensors: Vec<(&'a String, &'a Tensor)>,
}

impl GeneratorBundle {
    /// SHA-256 (hex) over everything that decides decoding: decoder, denoiser, schedule, genes,
    /// classes and their tensors. Dropping the encoder or task head, or editing metadata, keeps
    /// the id, so codes stay valid for a recipient's slimmed bundle.
    pub fn generator_id(&self) -> String {
        let s = &self.spec;
        let part = GeneratingPart {
            n_genes: s.n_genes,
            latent_dim: s.latent_dim,
            space: &s.space,
            decoder: &s.decoder,
            denoiser: &s.denoiser,
            schedule: &s.schedule,
            genes: &self.genes,
            classes: &self.classes,
            tensors: self
                .tensors
                .iter()
                .filter(|(k, _)| k.starts_with(&format!("{}.", s.decoder.prefix)) || k.starts_with("denoiser."))
                .collect(),
        };
        format::hex(&Sha256::digest(format::to_payload(&part)))
    }

    /// Checks spec, gene list and that every parameter the spec names is present with the right
    /// shape.
    pub fn validate(&self) -> Result<()> {
        self.spec.validate()?;
        if self.genes.len() != self.spec.n_genes {
            return Err(CoreError::data(
                "bundle/genes",
                format!("{} names for n_genes = {}", self.genes.len(), self.spec.n_genes),
            ));
        }
        if let Some(d) = crate::dataset::first_duplicate(&self.genes) {
            return Err(CoreError::data("bundle/genes", format!("duplicate gene name {d:?}")));
        }
        if let Some(d) = &self.spec.denoiser {
            if d.n_classes != self.classes.len() {
                return Err(CoreError::data(
                    "bundle/classes",
                    format!("{} class names for a denoiser with {} classes", self.classes.len(), d.n_classes),
                ));
            }
        }
        for (name, t) in &self.tensors {
            t.validate().map_err(|e| CoreError::data(format!("bundle/tensors/{name}"), e.to_string()))?;
        }
        for (name, shape) in self.spec.params() {
            let t = self
                .tensors
                .get(&name)
                .ok_or_else(|| CoreError::data(format!("bundle/tensors/{name}"), "missing"))?;
            if t.shape != shape {
                return Err(CoreError::data(
                    format!("bundle/tensors/{name}"),
                    format!("has shape {:?}, the graph needs {:?}", t.shape, shape),
                ));
            }
        }
        Ok(())
    }

    /// A copy without the encoder (what a recipient needs to decode codes).
    pub fn without_encoder(&self) -> GeneratorBundle {
        let mut b = self.clone();
        if let Some(e) = b.spec.encoder.take() {
            let prefix = format!("{}.", e.prefix);
            b.tensors.retain(|k, _| !k.starts_with(&prefix));
        }
        b
    }

    /// What a recipient of latent codes needs and nothing more: no encoder, no task head; with
    /// `f16`, every f32 tensor stored in half precision (half the bytes) and the source
    /// generator's id recorded under [`F16_OF`]. Without `f16` the content id is unchanged.
    pub fn for_recipients(&self, f16: bool) -> Result<GeneratorBundle> {
        let mut b = self.without_encoder();
        if let Some(h) = b.spec.task_head.take() {
            let prefix = format!("{}.", h.prefix);
            b.tensors.retain(|k, _| !k.starts_with(&prefix));
        }
        if f16 {
            let source = self.metadata.get(F16_OF).cloned().unwrap_or_else(|| self.generator_id());
            for (name, t) in b.tensors.iter_mut() {
                if t.dtype == crate::tensor::DType::F32 {
                    *t = Tensor::from_f32_as_f16(t.shape.clone(), &t.to_f32()?)
                        .map_err(|e| CoreError::data(format!("bundle/tensors/{name}"), e.to_string()))?;
                }
            }
            b.metadata.insert(F16_OF.to_string(), source);
        }
        Ok(b)
    }

    /// The generator ids whose codes this bundle decodes: its own, and for a half-precision copy
    /// the generator it was made from.
    pub fn decodes_codes_of(&self, id: &str) -> bool {
        self.generator_id() == id || self.metadata.get(F16_OF).is_some_and(|s| s == id)
    }

    pub fn tensor_f32(&self, name: &str) -> Result<Vec<f32>> {
        self.tensors
            .get(name)
            .ok_or_else(|| CoreError::data(format!("bundle/tensors/{name}"), "missing"))?
            .to_f32()
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        format::encode(&KIND, self)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let b: GeneratorBundle = format::decode(&KIND, bytes)?;
        b.validate()?;
        Ok(b)
    }
}
