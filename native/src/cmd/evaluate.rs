//! `scdd evaluate`: train the default evaluator on a synthetic set, test on real cells.
use crate::cmd::decode::{decode, load_bundle, load_codes};
use crate::evaluation::{evaluate_default, render, TestSet};
use crate::h5ad::ReadOptions;
use crate::{fsutil, prep};
use anyhow::{bail, Context, Result};
use scdd_core::evaluate::SgdParams;
use scdd_core::reference::CpuModel;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The training set: a latent-code file (.scdd, decoded with --model) or cells (.h5ad).
    pub synthetic: PathBuf,
    /// Real test cells (.h5ad, raw counts or log-normalised).
    #[arg(long)]
    pub test: PathBuf,
    /// Bundle with the foundation encoder (and the generator, to decode .scdd codes).
    #[arg(long, short = 'm')]
    pub model: PathBuf,
    /// Label column (default: the code file's, or the generator's).
    #[arg(long)]
    pub label: Option<String>,
    /// Fresh initialisations of the evaluator.
    #[arg(long, default_value_t = 10)]
    pub repeats: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// SGD steps of the linear head.
    #[arg(long, default_value_t = SgdParams::default().steps)]
    pub steps: usize,
    /// Learning rate of the linear head.
    #[arg(long, default_value_t = SgdParams::default().lr)]
    pub lr: f32,
    #[command(flatten)]
    pub matrix: super::MatrixArgs,
    /// Also write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<()> {
    let bundle = load_bundle(&a.model)?;
    let model = CpuModel::from_bundle(&bundle)?;
    let is_codes = a.synthetic.extension().is_some_and(|e| e == "scdd");
    let field = format!("{}:X", a.synthetic.display());
    let (train_in, label) = if is_codes {
        let codes = load_codes(&a.synthetic)?;
        let label = a.label.clone().unwrap_or_else(|| codes.label_column.clone());
        let ds = decode(&codes, &bundle, &a.synthetic)?;
        (prep::to_model_input_declared(ds, &bundle.genes, &bundle.spec.space, &field, true)?, label)
    } else {
        let label = a
            .label
            .clone()
            .or_else(|| (!bundle.label_column.is_empty()).then(|| bundle.label_column.clone()))
            .context("--label is needed: the model bundle names no label column")?;
        (prep::load_model_input(&a.synthetic, &ReadOptions::default(), &bundle.genes, &bundle.spec.space)?, label)
    };
    // Class space: the generator's classes, else the training set's.
    let classes = if bundle.classes.is_empty() {
        train_in.data.obs.labels(&label).with_context(|| a.synthetic.display().to_string())?.classes
    } else {
        bundle.classes.clone()
    };
    let train_ids = prep::labels_for_classes(&train_in.data, &label, &classes, &field)?;
    let keep: Vec<usize> = (0..train_ids.len()).filter(|&i| train_ids[i].is_some()).collect();
    let train_labels: Vec<u32> = keep.iter().map(|&i| train_ids[i].unwrap()).collect();
    let train_x = train_in.data.x.dense_rows(&keep);

    let opts = a.matrix.read_options();
    let test_in = prep::load_model_input(&a.test, &opts, &bundle.genes, &bundle.spec.space)?;
    eprintln!("test set {}: {}", a.test.display(), prep::describe(&test_in));
    let field = a.test.display().to_string();
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
    let mut features = Vec::new();
    for chunk in test_rows.chunks(2048) {
        let x = test_in.data.x.dense_rows(chunk);
        features.push(TestSet::new(&model, x.view(), vec![])?.features);
    }
    let views: Vec<_> = features.iter().map(|f| f.view()).collect();
    let test = TestSet { features: ndarray::concatenate(ndarray::Axis(0), &views)?, labels: test_labels };

    let sgd = SgdParams { steps: a.steps, lr: a.lr, ..SgdParams::default() };
    let summary = evaluate_default(&model, train_x.view(), &train_labels, &classes, &test, a.repeats, a.seed, &sgd)?;
    println!("{}", render(&summary));
    if let Some(p) = &a.json {
        fsutil::write_json(p, &summary)?;
    }
    Ok(())
}
