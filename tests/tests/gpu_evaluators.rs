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

/// The page's preparation of a recipient's test file (`scdd_wasm::session`, run natively): raw
/// counts normalised as the native reader does, genes aligned to the bundle, cells of unknown
/// classes left out and counted, and the refusals, each naming the file.
#[test]
fn test_cells_are_prepared_as_the_native_reader_prepares_them() {
    use scdd::io::h5ad::{read_h5ad, ReadOptions};
    use scdd_wasm::session::{evaluate, explore, EvaluatorKind, TestCells};
    let raw = read_h5ad(Path::new(PANCREAS), &ReadOptions::default()).unwrap();
    let rows: Vec<usize> = (0..raw.n_cells()).step_by(9).collect();
    let ds = raw.select_cells(&rows);
    let bundle = common::random_generator(&ds, 8, 32, 0);
    let labels_of = |ds: &scdd_core::dataset::Dataset| -> Vec<Option<String>> {
        let l = ds.obs.labels("cell_type").unwrap();
        l.ids.iter().map(|i| i.map(|i| l.classes[i as usize].clone())).collect()
    };
    let mut labels = labels_of(&ds);
    labels[0] = None;
    labels[1] = Some("Not a class".into());
    let t = TestCells::prepare("test.h5ad", ds.x.clone(), ds.genes.clone(), &labels, false, &bundle).unwrap();
    let r = &t.report;
    assert_eq!((r.cells_in_file, r.cells_kept, r.unlabelled, r.unknown_class), (ds.n_cells(), ds.n_cells() - 2, 1, 1));
    assert_eq!(r.unknown_classes, vec!["Not a class".to_string()]);
    assert!(r.values.starts_with("raw counts"), "{}", r.values);
    assert_eq!((r.shared_genes, r.model_genes), (bundle.genes.len(), bundle.genes.len()));
    // The same cells as the native model-input path (normalise 1e4 + log1p, align).
    let native = scdd::io::prep::to_model_input(ds.clone(), &bundle.genes, &bundle.spec.space, "test").unwrap();
    let want = native.data.x.dense_rows(&(2..ds.n_cells()).collect::<Vec<_>>());
    let worst = want.iter().zip(&t.x).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(worst <= 1e-6, "{worst}");

    // Refusals: other gene names, no cell of a known class, already-scaled values.
    let renamed: Vec<String> = (0..ds.n_genes()).map(|i| format!("ENSG{i:08}")).collect();
    let e = TestCells::prepare("other.h5ad", ds.x.clone(), renamed, &labels, false, &bundle).err().unwrap();
    assert!(e.contains("other.h5ad") && e.contains("only 0 of the model's"), "{e}");
    let none: Vec<Option<String>> = vec![Some("X".into()); ds.n_cells()];
    let e = TestCells::prepare("nolabel.h5ad", ds.x.clone(), ds.genes.clone(), &none, false, &bundle).err().unwrap();
    assert!(e.contains("nolabel.h5ad: no cell has one of the model's classes") && e.contains("its labels: X"), "{e}");

    // Scoring on the core's solvers and the plot data fit together.
    let k = bundle.classes.len();
    let synth_rows: Vec<usize> = (2..ds.n_cells()).step_by(5).collect();
    let cells: Vec<f32> = synth_rows.iter().flat_map(|&r| t.x[(r - 2) * bundle.genes.len()..(r - 1) * bundle.genes.len()].to_vec()).collect();
    let synth_labels: Vec<u32> = synth_rows.iter().map(|&r| t.labels[r - 2]).collect();
    let mut heard = Vec::new();
    let e = pollster::block_on(evaluate(None, &cells, &synth_labels, &bundle.classes, &t, EvaluatorKind::Logistic, 0, &mut |f| heard.push(f))).unwrap();
    assert_eq!(heard, [1.0], "the L-BFGS reports at its end");
    assert_eq!((e.train_cells, e.test_cells, e.scores.confusion.len()), (synth_rows.len(), t.n_cells(), k));
    assert!(e.scores.accuracy > 0.7, "real cells teach real cells: {}", e.scores.accuracy);
    assert!(e.collapsed.is_none(), "{:?}", e.collapsed);
    // Test cells that are all one cell get one call: a degenerate fit, named for the page.
    let g = bundle.genes.len();
    let one = TestCells { x: t.x[..g].repeat(t.n_cells()), labels: t.labels.clone(), report: t.report.clone() };
    let e = pollster::block_on(evaluate(None, &cells, &synth_labels, &bundle.classes, &one, EvaluatorKind::Logistic, 0, &mut |_| {})).unwrap();
    let c = e.collapsed.expect("every test cell called the same class");
    let called = bundle.classes.iter().position(|x| *x == c.class).unwrap();
    let truth = t.labels.iter().filter(|&&l| l as usize == called).count() as f64 / t.n_cells() as f64;
    assert_eq!((c.share, c.truth), (1.0, truth));
    let x = explore(&cells, &synth_labels, &bundle, Some(&t), 3).unwrap();
    assert_eq!((x.synthetic.len(), x.test.len(), x.markers.len()), (synth_rows.len(), t.n_cells(), k));
    assert_eq!(x.fitted_on, "test cells");
}
