//! scdd's preprocessing against scanpy on real data: `filter_cells(min_counts)`,
//! `filter_genes(min_cells)`, `normalize_total(target_sum)`, `log1p` must keep the same cells
//! and genes, give the same sparsity pattern and values equal to 1e-5; count-type detection
//! must tell scaled, raw and log-normalised matrices apart on scanpy's pbmc68k_reduced.
//!
//! Needs the Python with anndata + scanpy: `$SCDD_PYTHON`, else `<workspace>/.venv/bin/python`.
//! The tests fail (never skip) when it is missing.
use scdd::io::h5ad::{read_h5ad, MatrixSource, ReadOptions};
use scdd_core::matrix::CsrMatrix;
use scdd_core::preprocess::{detect_count_type, log1p, normalize_total, qc_filter, CountType, QcParams};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests crate has a parent").to_path_buf()
}

fn data(name: &str) -> PathBuf {
    let p = workspace_root().join("data").join(name);
    assert!(p.exists(), "{} is missing", p.display());
    p
}

fn python() -> PathBuf {
    let py = match std::env::var_os("SCDD_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => workspace_root().join(".venv/bin/python"),
    };
    assert!(
        py.exists(),
        "Python interpreter {} not found; run scripts/setup.sh (it creates .venv with anndata + scanpy) or set SCDD_PYTHON",
        py.display()
    );
    py
}

/// scanpy's result, read back from what tests/py/scanpy_preprocess.py wrote.
struct Reference {
    cells_in: usize,
    genes_in: usize,
    obs_names: Vec<String>,
    var_names: Vec<String>,
    x: CsrMatrix,
}

fn scanpy(input: &Path, qc: &QcParams, target_sum: f32) -> Reference {
    let dir = tempfile::tempdir().unwrap();
    let script = workspace_root().join("tests/py/scanpy_preprocess.py");
    let out = Command::new(python())
        .arg(&script)
        .arg(input)
        .arg(dir.path())
        .args(["--min-counts", &qc.min_counts.to_string(), "--min-cells", &qc.min_cells.to_string()])
        .args(["--target-sum", &target_sum.to_string()])
        .output()
        .expect("running python");
    assert!(
        out.status.success(),
        "{} failed ({}):\n{}",
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let read = |name: &str| std::fs::read(dir.path().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let meta: Value = serde_json::from_slice(&read("meta.json")).unwrap();
    let strings = |k: &str| -> Vec<String> {
        meta[k].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
    };
    let n = |k: &str| meta[k].as_u64().unwrap() as usize;
    let indptr: Vec<u64> = read("indptr.i64").chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u64).collect();
    let indices: Vec<u32> =
        read("indices.i32").chunks_exact(4).map(|b| i32::from_le_bytes(b.try_into().unwrap()) as u32).collect();
    let values: Vec<f32> = read("data.f32").chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    assert_eq!(values.len(), n("nnz"));
    let x = CsrMatrix::new(n("n_obs"), n("n_vars"), indptr, indices, values, "scanpy").unwrap();
    Reference {
        cells_in: n("cells_in"),
        genes_in: n("genes_in"),
        obs_names: strings("obs_names"),
        var_names: strings("var_names"),
        x,
    }
}

/// Runs scdd's pipeline and scanpy's on `file` and compares everything. Returns
/// (cells dropped, genes dropped).
fn compare(file: &str, qc: QcParams) -> (usize, usize) {
    let path = data(file);
    let target_sum = 1e4f32;
    let reference = scanpy(&path, &qc, target_sum);

    let ds = read_h5ad(&path, &ReadOptions::default()).unwrap();
    assert_eq!((ds.n_cells(), ds.n_genes()), (reference.cells_in, reference.genes_in), "{file}: input shape");
    let (mut out, rows, report) = qc_filter(&ds, &qc);
    normalize_total(&mut out.x, target_sum);
    log1p(&mut out.x);

    let ctx = format!("{file} with min_counts={} min_cells={}", qc.min_counts, qc.min_cells);
    assert_eq!(out.obs.index, reference.obs_names, "{ctx}: kept cells differ");
    assert_eq!(out.genes, reference.var_names, "{ctx}: kept genes differ");
    assert_eq!(rows.len(), out.n_cells());
    assert_eq!((report.cells_kept, report.genes_kept), (out.n_cells(), out.n_genes()));
    let (x, r) = (&out.x, &reference.x);
    assert_eq!((x.n_rows(), x.n_cols()), (r.n_rows(), r.n_cols()), "{ctx}: shape");
    assert_eq!(x.indptr(), r.indptr(), "{ctx}: row pointers (non-zeros per cell) differ");
    assert_eq!(x.indices(), r.indices(), "{ctx}: sparsity pattern differs");
    let (mut max_diff, mut at) = (0f32, 0usize);
    for (k, (a, b)) in x.data().iter().zip(r.data()).enumerate() {
        let d = (a - b).abs();
        if d > max_diff || d.is_nan() {
            max_diff = d;
            at = k;
        }
    }
    let row = x.indptr().partition_point(|&p| p <= at as u64) - 1;
    assert!(
        max_diff <= 1e-5,
        "{ctx}: max |scdd - scanpy| = {max_diff:e} at cell {row}, gene {} (scdd {}, scanpy {})",
        x.indices()[at],
        x.data()[at],
        r.data()[at]
    );
    (ds.n_cells() - out.n_cells(), ds.n_genes() - out.n_genes())
}

#[test]
fn pbmc3k_matches_scanpy_default_qc() {
    let (_, genes_dropped) = compare("pbmc3k_seurat_labels_clustifyr.h5ad", QcParams { min_counts: 10.0, min_cells: 3 });
    assert!(genes_dropped > 0, "min_cells=3 should drop some genes of pbmc3k");
}

#[test]
fn pbmc3k_matches_scanpy_strict_qc() {
    let (cells, genes) = compare("pbmc3k_seurat_labels_clustifyr.h5ad", QcParams { min_counts: 1000.0, min_cells: 10 });
    assert!(cells > 0 && genes > 0, "strict QC should drop cells and genes (dropped {cells} cells, {genes} genes)");
}

#[test]
fn pancreas_matches_scanpy_default_qc() {
    compare("pancreas_endocrinogenesis_e15_2k_genes_SuperCell.h5ad", QcParams { min_counts: 10.0, min_cells: 3 });
}

#[test]
fn pancreas_matches_scanpy_strict_qc() {
    let (cells, genes) =
        compare("pancreas_endocrinogenesis_e15_2k_genes_SuperCell.h5ad", QcParams { min_counts: 1500.0, min_cells: 200 });
    assert!(cells > 0 && genes > 0, "strict QC should drop cells and genes (dropped {cells} cells, {genes} genes)");
}

#[test]
fn count_types_of_real_files() {
    let pbmc68k = data("pbmc68k_reduced_scanpy.h5ad");
    // X holds z-scored values (sc.pp.scale): negative entries.
    let x = read_h5ad(&pbmc68k, &ReadOptions::default()).unwrap();
    assert_eq!(detect_count_type(&x.x), CountType::Scaled);
    // raw/X holds log1p of normalised counts, but only for the 765 genes kept, so the
    // per-cell totals vary.
    let raw = read_h5ad(&pbmc68k, &ReadOptions::matrix(MatrixSource::Raw)).unwrap();
    let t = detect_count_type(&raw.x);
    assert!(matches!(t, CountType::LogNormalized { .. }), "pbmc68k raw/X: {t:?}");
    // Raw counts.
    for f in ["pbmc3k_seurat_labels_clustifyr.h5ad", "pancreas_endocrinogenesis_e15_2k_genes_SuperCell.h5ad"] {
        let ds = read_h5ad(&data(f), &ReadOptions::default()).unwrap();
        assert_eq!(detect_count_type(&ds.x), CountType::RawCounts, "{f}");
        // ... and what scdd makes of them is log-normalised to 1e4.
        let (mut out, _, _) = qc_filter(&ds, &QcParams::default());
        normalize_total(&mut out.x, 1e4);
        assert!(matches!(detect_count_type(&out.x), CountType::Normalized { target_sum } if (target_sum - 1e4).abs() < 1.0));
        log1p(&mut out.x);
        assert!(matches!(detect_count_type(&out.x), CountType::LogNormalized { target_sum } if (target_sum - 1e4).abs() < 1.0));
    }
}
