//! The gene-space evaluators against scikit-learn on real cells (pancreas E15.5, shipped in
//! `data/`): scdd's `lr` must find scikit-learn's `LogisticRegression()` solution — the same
//! predictions on held-out cells up to a few near-ties — since it minimises the same convex
//! objective. Needs the repo's Python (`scripts/setup.sh`); fails, never skips, without it.
mod common;

use scdd_core::evaluate::{Evaluator, LogRegParams, LogisticRegression, TrainingSet};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/pancreas_endocrinogenesis_e15_2k_genes_SuperCell.h5ad");

#[test]
fn logistic_regression_matches_scikit_learn() {
    let reference: serde_json::Value = serde_json::from_str(&common::run_py("sklearn_logreg.py", &[DATA, "cell_type"])).unwrap();
    let common::Halves { ds, classes: sorted, y, train, test } = common::halves(std::path::Path::new(DATA), "cell_type");
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
