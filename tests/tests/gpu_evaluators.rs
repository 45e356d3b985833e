//! The WGSL evaluators of the browser build, run natively through wgpu (lavapipe here), on real
//! cells: pancreas, even cells to train, odd cells to test, restricted to the 300 genes of
//! highest variance in the training cells (lavapipe runs the kernels on one CPU core).
mod common;

use ndarray::Array2;
use scdd_core::evaluate::{Evaluator, LogRegParams, LogisticRegression, TrainingSet};
use scdd_wasm::gpu::Gpu;
use scdd_wasm::train::{GpuClassifier, Scaler, TrainSettings};
use std::path::Path;

const PANCREAS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/pancreas_endocrinogenesis_e15_2k_genes_SuperCell.h5ad");

fn accuracy(pred: &[u32], truth: &[u32]) -> f64 {
    pred.iter().zip(truth).filter(|(a, b)| a == b).count() as f64 / truth.len() as f64
}

#[test]
fn wgsl_logistic_regression_matches_the_reference_solver_and_the_mlp_learns() {
    let common::Halves { ds, classes, y, train, test } = common::halves(Path::new(PANCREAS), "cell_type");
    let x_train = ds.x.dense_rows(&train);
    let x_test = ds.x.dense_rows(&test);
    let var = x_train.var_axis(ndarray::Axis(0), 0.0);
    let mut genes: Vec<usize> = (0..var.len()).collect();
    genes.sort_by(|&a, &b| var[b].total_cmp(&var[a]));
    genes.truncate(300);
    genes.sort_unstable();
    let x_train = x_train.select(ndarray::Axis(1), &genes);
    let x_test = x_test.select(ndarray::Axis(1), &genes);
    let (n, d, k) = (train.len(), genes.len(), classes.len());
    let y_train: Vec<u32> = train.iter().map(|&i| y[i]).collect();
    let y_test: Vec<u32> = test.iter().map(|&i| y[i]).collect();
    let xs: Vec<f32> = x_train.iter().copied().collect();
    let xt: Vec<f32> = x_test.iter().copied().collect();
    let gpu = pollster::block_on(Gpu::new()).expect("a wgpu adapter (scripts/setup.sh installs lavapipe)");

    // The reference: the same objective (mean cross-entropy + ‖W‖²/(2n), C = 1) on the same
    // scaled, clipped cells, minimised by the core's L-BFGS.
    let scaler = Scaler::fit(&xs, n, d);
    let z = Array2::from_shape_vec((n, d), scaler.apply(&xs)).unwrap();
    let zt = Array2::from_shape_vec((test.len(), d), scaler.apply(&xt)).unwrap();
    let mut reference = LogisticRegression::new(LogRegParams::default());
    reference.fit(&TrainingSet { x: z.view(), labels: &y_train, n_classes: k, genes: &[] }, 0).unwrap();
    let ref_acc = accuracy(&reference.predict(zt.view()).unwrap(), &y_test);

    let t0 = std::time::Instant::now();
    let lr = pollster::block_on(GpuClassifier::fit(&gpu, &xs, (n, d), &y_train, k, &TrainSettings::logistic(n))).unwrap();
    let lr_acc = accuracy(&pollster::block_on(lr.predict(&gpu, &xt, test.len())).unwrap(), &y_test);
    eprintln!("LR {:.4} in {:.1} s", lr_acc, t0.elapsed().as_secs_f64());
    let t0 = std::time::Instant::now();
    // The perceptron on every third training cell (lavapipe's time, not the method's limit).
    let third: Vec<usize> = (0..n).step_by(3).collect();
    let xs3: Vec<f32> = third.iter().flat_map(|&i| xs[i * d..(i + 1) * d].iter().copied()).collect();
    let y3: Vec<u32> = third.iter().map(|&i| y_train[i]).collect();
    let mlp = pollster::block_on(GpuClassifier::fit(&gpu, &xs3, (third.len(), d), &y3, k, &TrainSettings { hidden: 32, steps: 300, ..TrainSettings::mlp(0) })).unwrap();
    let mlp_acc = accuracy(&pollster::block_on(mlp.predict(&gpu, &xt, test.len())).unwrap(), &y_test);
    eprintln!("MLP in {:.1} s", t0.elapsed().as_secs_f64());
    eprintln!("{}: reference LR {:.4}, WGSL LR {:.4}, WGSL MLP {:.4} ({n} training cells × {d} genes)", gpu.adapter, ref_acc, lr_acc, mlp_acc);
    assert!((lr_acc - ref_acc).abs() <= 0.02, "WGSL logistic regression {lr_acc:.4} vs reference {ref_acc:.4}");
    assert!(mlp_acc >= ref_acc - 0.05, "WGSL MLP {mlp_acc:.4} vs reference LR {ref_acc:.4}");
}

#[test]
fn bad_training_input_is_refused_with_the_reason() {
    let gpu = pollster::block_on(Gpu::new()).expect("a wgpu adapter");
    let fit = |x: &[f32], labels: &[u32], k: usize, s: TrainSettings| pollster::block_on(GpuClassifier::fit(&gpu, x, (2, 2), labels, k, &s)).err().unwrap();
    assert!(fit(&[0.0; 4], &[0, 2], 2, TrainSettings::logistic(2)).contains("class id 2"));
    assert!(fit(&[0.0; 4], &[0, 0], 1, TrainSettings::logistic(2)).contains("need two or more"));
    assert!(fit(&[0.0, f32::NAN, 0.0, 1.0], &[0, 1], 2, TrainSettings::logistic(2)).contains("non-finite"));
    assert!(fit(&[0.0; 3], &[0, 1], 2, TrainSettings::logistic(2)).contains("3 values"));
    assert!(fit(&[0.0; 4], &[0, 1], 2, TrainSettings { steps: 0, ..TrainSettings::logistic(2) }).contains("steps = 0"));
}
