//! The gene-space evaluators against scikit-learn on real cells (pancreas E15.5, shipped in
//! `data/`): scdd's `lr` must find scikit-learn's `LogisticRegression()` solution — the same
//! predictions on held-out cells up to a few near-ties — since it minimises the same convex
//! objective. Needs the repo's Python (`scripts/setup.sh`); fails, never skips, without it.
mod common;

use scdd::io::h5ad::{read_h5ad, ReadOptions};
use scdd_core::evaluate::{Evaluator, LogRegParams, LogisticRegression, TrainingSet};
use scdd_core::preprocess::{log1p, normalize_total};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/pancreas_endocrinogenesis_e15_2k_genes_SuperCell.h5ad");

#[test]
fn logistic_regression_matches_scikit_learn() {
    let reference: serde_json::Value = serde_json::from_str(&common::run_py("sklearn_logreg.py", &[DATA, "cell_type"])).unwrap();
    let mut ds = read_h5ad(std::path::Path::new(DATA), &ReadOptions::default()).unwrap();
    normalize_total(&mut ds.x, 1e4);
    log1p(&mut ds.x);
    let labels = ds.obs.labels("cell_type").unwrap();
    // Class ids in sorted-name order, as the script numbers them.
    let mut sorted = labels.classes.clone();
    sorted.sort();
    let y: Vec<u32> = labels.ids.iter().map(|c| sorted.iter().position(|s| *s == labels.classes[c.unwrap() as usize]).unwrap() as u32).collect();
    let train: Vec<usize> = (0..y.len()).step_by(2).collect();
    let test: Vec<usize> = (1..y.len()).step_by(2).collect();
    let x_train = ds.x.dense_rows(&train);
    let y_train: Vec<u32> = train.iter().map(|&i| y[i]).collect();
    let mut lr = LogisticRegression::new(LogRegParams::default());
    lr.fit(&TrainingSet { x: x_train.view(), labels: &y_train, n_classes: sorted.len(), genes: &[] }, 0).unwrap();
    let pred = lr.predict(ds.x.dense_rows(&test).view()).unwrap();
    let theirs: Vec<u32> = reference["pred"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    assert_eq!(pred.len(), theirs.len());
    let agree = pred.iter().zip(&theirs).filter(|(a, b)| a == b).count() as f64 / pred.len() as f64;
    let acc = pred.iter().zip(&test).filter(|(p, &i)| **p == y[i]).count() as f64 / test.len() as f64;
    let their_acc = reference["accuracy"].as_f64().unwrap();
    assert!(agree >= 0.99, "predictions agree on {:.2} % of held-out cells", 100.0 * agree);
    assert!((acc - their_acc).abs() <= 0.005, "accuracy {acc:.4} vs scikit-learn {their_acc:.4}");
}
