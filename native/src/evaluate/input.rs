//! Evaluator input from files: cells of an `.h5ad` (or decoded codes) as dense log-normalised
//! rows in the model's gene order with class ids, and the test set's encoder features, stored
//! once per dataset (`features.f32` + `meta.json`) and reused by every evaluation.
use super::{evaluate, EvalParams, EvalResults, TestSet};
use crate::error::{bail, Context, Result};
use crate::io::artifacts::{load_bundle, load_codes};
use crate::io::h5ad::{self, MatrixSpec, ReadOptions};
use crate::io::{fs, prep};
use crate::params::Checked;
use ndarray::Array2;
use scdd_core::bundle::GeneratorBundle;
use scdd_core::reference::CpuModel;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Cells of an `.h5ad` as model input: dense log-normalised rows in the bundle's gene order
/// with class ids; cells of other classes are left out.
pub fn model_matrix(path: &Path, bundle: &GeneratorBundle, label: &str) -> Result<(Array2<f32>, Vec<u32>)> {
    let input = prep::load_model_input(path, &ReadOptions::default(), &bundle.genes, &bundle.spec.space)?;
    let ids = prep::labels_for_classes(&input.data, label, &bundle.classes, &path.display().to_string())?;
    let rows: Vec<usize> = (0..ids.len()).filter(|&i| ids[i].is_some()).collect();
    let labels = rows.iter().map(|&i| ids[i].unwrap()).collect();
    Ok((input.data.x.dense_rows(&rows), labels))
}

/// Synthetic cells written by `distill` or `decode`: already log-normalised in the bundle's
/// gene order, so taken as they are (decoded cells are not on any count lattice, so detecting
/// their normalisation would fail). Files with other genes go through [`model_matrix`].
pub fn synthetic_matrix(path: &Path, bundle: &GeneratorBundle, label: &str) -> Result<(Array2<f32>, Vec<u32>)> {
    let ds = h5ad::read_h5ad(path, &ReadOptions::default())?;
    if ds.genes != bundle.genes {
        return model_matrix(path, bundle, label);
    }
    scdd_core::preprocess::check_non_negative(&ds.x, &format!("{}:X", path.display()))?;
    let ids = prep::labels_for_classes(&ds, label, &bundle.classes, &path.display().to_string())?;
    let rows: Vec<usize> = (0..ids.len()).filter(|&i| ids[i].is_some()).collect();
    let labels = rows.iter().map(|&i| ids[i].unwrap()).collect();
    Ok((ds.x.dense_rows(&rows), labels))
}

/// `meta.json` of stored test features.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TestFeaturesMeta {
    pub n: usize,
    pub dim: usize,
    pub labels: Vec<u32>,
    pub classes: Vec<String>,
    /// Test cells whose label is not among the model's classes (left out).
    pub skipped: usize,
}

/// Encoder features of the rows of `x`, in chunks of 2048.
pub fn features(model: &CpuModel, x: &Array2<f32>) -> Result<Array2<f32>> {
    let probe = scdd_core::evaluate::FoundationLinearProbe::new(model, Default::default())?;
    Ok(probe.features(x.view())?)
}

/// Encodes the labelled test cells of `test` and stores them in `dir`.
pub fn write_test_features(test: &Path, bundle: &GeneratorBundle, model: &CpuModel, label: &str, dir: &Path) -> Result<TestFeaturesMeta> {
    let (x, labels) = model_matrix(test, bundle, label)?;
    let total = h5ad::H5adReader::open(test, &ReadOptions::default())?.n_rows();
    let features = features(model, &x)?;
    let meta =
        TestFeaturesMeta { n: features.nrows(), dim: features.ncols(), skipped: total - labels.len(), labels, classes: bundle.classes.clone() };
    let bytes: Vec<u8> = features.iter().flat_map(|v| v.to_le_bytes()).collect();
    fs::write_atomic(&dir.join("features.f32"), &bytes)?;
    fs::write_json(&dir.join("meta.json"), &meta)?;
    Ok(meta)
}

pub fn read_test_features(dir: &Path) -> Result<(TestSet, TestFeaturesMeta)> {
    let meta: TestFeaturesMeta = serde_json::from_slice(&fs::read(&dir.join("meta.json"))?)
        .with_context(|| format!("{}: unreadable", dir.join("meta.json").display()))?;
    let bytes = fs::read(&dir.join("features.f32"))?;
    if bytes.len() != meta.n * meta.dim * 4 {
        bail!("{}: {} bytes for {} × {} features", dir.join("features.f32").display(), bytes.len(), meta.n, meta.dim);
    }
    let v: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    let features = Array2::from_shape_vec((meta.n, meta.dim), v)?;
    Ok((TestSet { features: Some(features), genes: None, labels: meta.labels.clone() }, meta))
}

/// Reads an `eval.json`.
pub fn read_eval(path: &Path) -> Result<EvalResults> {
    serde_json::from_slice(&fs::read(path)?).with_context(|| format!("{}: unreadable evaluation", path.display()))
}

/// `scdd evaluate` as a library call: the training set is a code file (decoded with `model`)
/// or cells; the test set's cells are read with `test_matrix`. Without a model the training set
/// must be cells (`.h5ad`) and no evaluator may need the foundation encoder: the genes are the
/// training set's, log1p(1e4)-normalised as the native side does, the classes its labels'.
pub fn evaluate_files(
    synthetic: &Path,
    test: &Path,
    test_matrix: &MatrixSpec,
    model_path: Option<&Path>,
    label: Option<&str>,
    plan: &Checked<EvalParams>,
) -> Result<EvalResults> {
    test_matrix.check()?;
    let is_codes = synthetic.extension().is_some_and(|e| e == "scdd");
    let bundle = match model_path {
        Some(p) => Some(load_bundle(p)?),
        None if is_codes => bail!("{}: a code file is decoded with its generator bundle; give it with --model", synthetic.display()),
        None if plan.needs_encoder() => bail!("the default evaluator needs a generator bundle's encoder; give --model or choose gene-space evaluators (--evaluators lr,mlp,…)"),
        None => None,
    };
    if let (Some(b), Some(p)) = (&bundle, model_path) {
        if plan.needs_encoder() && b.spec.encoder.is_none() {
            return Err(crate::Error::MissingEncoder { path: p.to_path_buf(), needed: "evaluate".into() });
        }
    }
    let model = bundle.as_ref().map(CpuModel::from_bundle).transpose()?;
    let field = format!("{}:X", synthetic.display());
    let (genes, space, bundle_label, bundle_classes) = match &bundle {
        Some(b) => (b.genes.clone(), b.spec.space.clone(), b.label_column.clone(), b.classes.clone()),
        None => (h5ad::H5adReader::open(synthetic, &ReadOptions::default())?.read_genes()?, Default::default(), String::new(), Vec::new()),
    };
    let (train_in, label) = match &bundle {
        Some(b) if is_codes => {
            let codes = load_codes(synthetic)?;
            let label = label.map(str::to_string).unwrap_or_else(|| codes.label_column.clone());
            let ds = crate::synthetic::decode(&codes, b, synthetic)?;
            (prep::to_model_input_declared(ds, &genes, &space, &field, true)?, label)
        }
        _ => {
            let label = label
                .map(str::to_string)
                .or_else(|| (!bundle_label.is_empty()).then(|| bundle_label.clone()))
                .with_context(|| format!("--label is needed: {}", if bundle.is_some() { "the model bundle names no label column" } else { "no model bundle names one" }))?;
            (prep::load_model_input(synthetic, &ReadOptions::default(), &genes, &space)?, label)
        }
    };
    // Class space: the generator's classes, else the training set's.
    let classes = if bundle_classes.is_empty() { train_in.data.obs.labels(&label).with_context(|| synthetic.display().to_string())?.classes } else { bundle_classes };
    let train_ids = prep::labels_for_classes(&train_in.data, &label, &classes, &field)?;
    let keep: Vec<usize> = (0..train_ids.len()).filter(|&i| train_ids[i].is_some()).collect();
    let train_labels: Vec<u32> = keep.iter().map(|&i| train_ids[i].unwrap()).collect();
    let train_x = train_in.data.x.dense_rows(&keep);

    let test_in = prep::load_model_input(test, &test_matrix.read_options(), &genes, &space)?;
    eprintln!("test set {}: {}", test.display(), prep::describe(&test_in));
    let field = test.display().to_string();
    let test_ids = prep::labels_for_classes(&test_in.data, &label, &classes, &field)?;
    let test_rows: Vec<usize> = (0..test_ids.len()).filter(|&i| test_ids[i].is_some()).collect();
    let skipped = test_ids.len() - test_rows.len();
    if skipped > 0 {
        eprintln!("note: {skipped} test cells have a label outside the training classes and are left out");
    }
    if test_rows.is_empty() {
        bail!("{field}: no test cell has one of the training classes");
    }
    let test_labels: Vec<u32> = test_rows.iter().map(|&i| test_ids[i].unwrap()).collect();
    let test_set = TestSet::new(model.as_ref(), test_in.data.x.dense_rows(&test_rows), test_labels)?;
    evaluate(model.as_ref(), train_x.view(), &train_labels, &classes, &genes, &test_set, plan)
}
