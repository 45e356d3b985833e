//! Loading an .h5ad as model input: the expression space a bundle expects (normalised + log1p,
//! never twice), genes aligned to the bundle's list, labels mapped to the bundle's classes.
use crate::io::h5ad::{self, ReadOptions};
use crate::error::{bail, Context, Result};
use scdd_core::dataset::Dataset;
use scdd_core::graph::ExpressionSpace;
use scdd_core::preprocess::{self, CountType, GeneAlignment};
use std::path::Path;

pub use scdd_core::preprocess::{min_overlap, DEFAULT_MIN_OVERLAP};

/// A dataset ready for a model.
pub struct ModelInput {
    /// Log-normalised, genes in the model's order.
    pub data: Dataset,
    /// What the file held before conversion.
    pub count_type: CountType,
    pub alignment: GeneAlignment,
}

/// `uns` key under which scdd marks files whose X is already in a model's expression space
/// (synthetic cells: decoded, class means, data-level distillation). Such values are not
/// counts of any kind, so they cannot be recognised from the numbers alone.
pub const SPACE_KEY: &str = "scdd_space";

/// The [`SPACE_KEY`] value for `space`.
pub fn space_tag(space: &ExpressionSpace) -> String {
    space.tag()
}

/// Reads `path`, converts it to `space` and aligns it to `genes`. A file marked with
/// [`SPACE_KEY`] for this space is taken as it is.
pub fn load_model_input(path: &Path, opts: &ReadOptions, genes: &[String], space: &ExpressionSpace) -> Result<ModelInput> {
    let reader = h5ad::H5adReader::open(path, opts)?;
    let declared = reader.read_uns_string(SPACE_KEY).is_some_and(|t| t == space_tag(space));
    let ds = reader.read_dataset()?;
    to_model_input_declared(ds, genes, space, &format!("{}:{}", path.display(), opts.matrix), declared)
}

/// [`load_model_input`] for a dataset already in memory; `field` names it in errors.
pub fn to_model_input(ds: Dataset, genes: &[String], space: &ExpressionSpace, field: &str) -> Result<ModelInput> {
    to_model_input_declared(ds, genes, space, field, false)
}

/// As [`to_model_input`]; `in_space` says the values are already in `space` (not detected).
pub fn to_model_input_declared(
    mut ds: Dataset,
    genes: &[String],
    space: &ExpressionSpace,
    field: &str,
    in_space: bool,
) -> Result<ModelInput> {
    if ds.n_cells() == 0 {
        bail!("{field}: the dataset has no cells");
    }
    preprocess::check_non_negative(&ds.x, field)?;
    if !space.log1p {
        bail!("{field}: models without log1p input are not supported");
    }
    let count_type = if in_space {
        CountType::LogNormalized { target_sum: space.target_sum as f64 }
    } else {
        preprocess::to_log_normalized(&mut ds.x, space.target_sum, field)?
    };
    let (data, alignment) = preprocess::align_genes(&ds, genes, min_overlap(genes.len()))
        .with_context(|| format!("aligning {field} to the model's genes"))?;
    Ok(ModelInput { data, count_type, alignment })
}

/// Class id (index into `classes`) of every cell of `ds` under `label`; cells whose label is
/// missing or not among `classes` are `None`. Errors if no cell has a known class.
pub fn labels_for_classes(ds: &Dataset, label: &str, classes: &[String], field: &str) -> Result<Vec<Option<u32>>> {
    let l = ds.obs.labels(label).with_context(|| field.to_string())?;
    let map: Vec<Option<u32>> =
        l.classes.iter().map(|c| classes.iter().position(|k| k == c).map(|p| p as u32)).collect();
    let ids: Vec<Option<u32>> = l.ids.iter().map(|id| id.and_then(|i| map[i as usize])).collect();
    if ids.iter().all(|i| i.is_none()) {
        bail!(
            "{field}: obs/{label}: none of its classes ({}) is among the model's classes ({})",
            l.classes.join(", "),
            classes.join(", ")
        );
    }
    Ok(ids)
}

/// A one-line account of what loading did, for logs.
pub fn describe(input: &ModelInput) -> String {
    format!(
        "{} cells; found {}; {} of the model's {} genes present",
        input.data.n_cells(),
        input.count_type,
        input.alignment.overlap,
        input.alignment.n_reference
    )
}
