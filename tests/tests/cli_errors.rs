//! Bad input to the `scdd` binary: every case exits non-zero with one line on stderr that
//! names the file, the field and the offending value, never panics, and leaves nothing in
//! `--out`.
mod common;

use scdd::io::h5ad::write_h5ad;
use scdd_core::dataset::Dataset;
use scdd_core::matrix::CsrMatrix;
use scdd_core::obs::{Column, ObsTable};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// 6 cells × 4 genes, two classes of three cells, every value >= 10.
fn toy() -> Dataset {
    let n = 6;
    let mut indptr = vec![0u64];
    let (mut indices, mut data) = (Vec::new(), Vec::new());
    for r in 0..n {
        for c in 0..4u32 {
            indices.push(c);
            data.push(10.0 + (r as f32) + c as f32);
        }
        indptr.push(indices.len() as u64);
    }
    let x = CsrMatrix::new(n, 4, indptr, indices, data, "toy").unwrap();
    let mut obs = ObsTable { index: (0..n).map(|i| format!("cell{i}")).collect(), columns: vec![] };
    obs.set("cell_type", Column::categorical_from_labels(&["a", "b", "a", "b", "a", "b"])).unwrap();
    obs.set("n_counts", Column::Numeric((0..n).map(|i| i as f64).collect())).unwrap();
    Dataset::new("toy", x, (0..4).map(|g| format!("G{g}")).collect(), obs).unwrap()
}

fn write(dir: &Path, name: &str, ds: &Dataset) -> PathBuf {
    let p = dir.join(name);
    write_h5ad(&p, ds, &BTreeMap::new()).unwrap();
    p
}

/// Opens for writing without HDF5's file lock (tests run in parallel threads that spawn
/// processes; an inherited locked descriptor would block their reads).
fn open_rw(path: &Path) -> hdf5::File {
    hdf5::File::with_options().with_fapl(|p| p.file_locking(false)).open_rw(path).unwrap()
}

/// Replaces dataset `name` of a file scdd wrote.
fn replace<T: hdf5::H5Type>(path: &Path, name: &str, values: &[T]) {
    let f = open_rw(path);
    f.unlink(name).unwrap();
    f.new_dataset_builder().with_data(values).create(name).unwrap();
}

/// Runs scdd and checks the failure contract; returns stderr.
fn fails(args: &[&str], out: Option<&Path>, must_contain: &[&str]) -> String {
    let o = common::scdd(args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "scdd {args:?} succeeded; stdout: {}", String::from_utf8_lossy(&o.stdout));
    assert!(!err.contains("panicked"), "scdd {args:?} panicked: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "scdd {args:?}: stderr is not one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    for m in must_contain {
        assert!(err.contains(m), "scdd {args:?}: stderr lacks {m:?}: {err}");
    }
    if let Some(out) = out {
        let left: Vec<_> =
            std::fs::read_dir(out).map(|d| d.map(|e| e.unwrap().file_name()).collect()).unwrap_or_default();
        assert!(left.is_empty(), "scdd {args:?} left {left:?} in {}", out.display());
    }
    err
}

/// `scdd split FILE --label LABEL --out DIR` must fail naming `must_contain`; `scdd inspect FILE`
/// too when `inspect_fails`.
fn split_fails(file: &Path, label: &str, must_contain: &[&str], inspect_fails: bool) {
    let out = file.with_extension("out");
    let (f, o) = (file.to_str().unwrap(), out.to_str().unwrap());
    let mut needles = vec![f];
    needles.extend_from_slice(must_contain);
    fails(&["split", f, "--label", label, "--out", o, "--min-counts", "0", "--min-cells", "0"], Some(&out), &needles);
    if inspect_fails {
        fails(&["inspect", f], None, &needles);
    }
}

#[test]
fn a_good_file_splits() {
    // Control: the toy data itself is fine.
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "good.h5ad", &toy());
    let out = dir.path().join("out");
    let o = common::scdd(&["split", p.to_str().unwrap(), "--label", "cell_type", "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.join("train.h5ad").exists() && out.join("test.h5ad").exists() && out.join("split.json").exists());
    let o = common::scdd(&["inspect", p.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["n_cells"], 6);
    assert_eq!(v["obs"][0]["top_classes"][0]["cells"], 3);
}

#[test]
fn missing_and_non_hdf5_files() {
    let dir = tempfile::tempdir().unwrap();
    split_fails(&dir.path().join("absent.h5ad"), "cell_type", &["no such file"], true);
    let txt = dir.path().join("text.h5ad");
    std::fs::write(&txt, "cell,gene\n1,2\n").unwrap();
    split_fails(&txt, "cell_type", &["not an HDF5 file"], true);
    let empty = dir.path().join("empty.h5ad");
    std::fs::write(&empty, "").unwrap();
    split_fails(&empty, "cell_type", &["not an HDF5 file"], true);
}

#[test]
fn hdf5_without_x() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "nox.h5ad", &toy());
    open_rw(&p).unlink("X").unwrap();
    split_fails(&p, "cell_type", &["not an AnnData file: no X", "obs", "var"], true);
}

#[test]
fn missing_and_numeric_label_columns() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "toy.h5ad", &toy());
    split_fails(
        &p,
        "celltype",
        &["obs/celltype", "no such column", "cell_type (categorical)", "n_counts (numeric)"],
        false,
    );
    split_fails(&p, "n_counts", &["obs/n_counts", "is numeric", "cell_type (categorical)"], false);
}

#[test]
fn nan_and_negative_values() {
    let dir = tempfile::tempdir().unwrap();
    let mut ds = toy();
    ds.x.data_mut()[5] = f32::NAN; // row 1, column 1
    let p = write(dir.path(), "nan.h5ad", &ds);
    split_fails(&p, "cell_type", &["X/data", "non-finite value NaN at row 1, column 1"], true);

    let mut ds = toy();
    ds.x.data_mut()[10] = -3.0; // row 2, column 2
    let p = write(dir.path(), "neg.h5ad", &ds);
    // inspect reports negative values (scaled data is legitimate to look at); split refuses them.
    split_fails(&p, "cell_type", &["X", "negative value -3 at row 2, column 2"], false);
}

#[test]
fn inconsistent_csr_arrays() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "indptr.h5ad", &toy());
    replace(&p, "X/indptr", &[0i64, 4, 8, 12]);
    split_fails(&p, "cell_type", &["X/indptr", "has 4 entries, expected n_rows + 1 = 7"], true);

    let p = write(dir.path(), "index.h5ad", &toy());
    let mut idx: Vec<i32> = (0..24).map(|k| k % 4).collect();
    idx[6] = 99; // row 1
    replace(&p, "X/indices", &idx);
    split_fails(&p, "cell_type", &["X/indices", "column index 99 in row 1 is out of range (n_cols = 4)"], true);

    let p = write(dir.path(), "negindex.h5ad", &toy());
    idx[6] = -2;
    replace(&p, "X/indices", &idx);
    split_fails(&p, "cell_type", &["X/indices", "index -2 at position 6"], true);

    let p = write(dir.path(), "decreasing.h5ad", &toy());
    replace(&p, "X/indptr", &[0i64, 4, 8, 6, 16, 20, 24]);
    split_fails(&p, "cell_type", &["X/indptr", "decreases at entry 2 (8 -> 6)"], true);
}

#[test]
fn duplicate_gene_names() {
    let dir = tempfile::tempdir().unwrap();
    let mut ds = toy();
    ds.genes[3] = "G1".into();
    let p = write(dir.path(), "dup.h5ad", &ds);
    split_fails(&p, "cell_type", &["var", "duplicate gene name \"G1\""], true);
}

#[test]
fn unknown_layer_and_missing_raw() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "toy.h5ad", &toy());
    let f = p.to_str().unwrap();
    fails(&["inspect", f, "--layer", "counts"], None, &[f, "layers/counts: no such layer; layers: (none)"]);
    fails(&["inspect", f, "--raw"], None, &[f, "raw/X", "no raw matrix"]);
    let out = dir.path().join("out");
    fails(
        &["split", f, "--label", "cell_type", "--out", out.to_str().unwrap(), "--test-fraction", "1.5"],
        Some(&out),
        &["--test-fraction 1.5"],
    );
}

#[test]
fn duplicate_category_names() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "dupcat.h5ad", &toy());
    let f = open_rw(&p);
    let cats = f.group("obs/cell_type").unwrap();
    cats.unlink("categories").unwrap();
    let names: Vec<hdf5::types::VarLenUnicode> = ["a", "a"].iter().map(|s| s.parse().unwrap()).collect();
    cats.new_dataset_builder().with_data(&names).create("categories").unwrap();
    drop(cats);
    drop(f);
    split_fails(&p, "cell_type", &["obs/cell_type", "category \"a\" appears twice"], false);
}

#[test]
fn float16_values() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "f16.h5ad", &toy());
    let script = "import sys, h5py, numpy as np\nf = h5py.File(sys.argv[1], 'r+')\nd = f['X/data'][:]\ndel f['X/data']\nf['X/data'] = d.astype(np.float16)\n";
    let o = std::process::Command::new(common::python()).args(["-c", script, p.to_str().unwrap()]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    split_fails(&p, "cell_type", &["X/data", "float16 values are not supported", "float32"], false);
}

#[test]
fn damaged_scdd_headers_get_their_own_format_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.scdd");
    std::fs::write(&p, b"\x00\x1b[31mNOTCODES and more bytes after the magic").unwrap();
    let e = fails(&["inspect", p.to_str().unwrap()], None, &["bad.scdd", "latent-code (.scdd) file", "\\x00\\x1b[31mNO"]);
    assert!(!e.contains('\u{1b}'), "raw control bytes reached the terminal: {e:?}");
    assert!(!e.contains("h5ad"), "{e}");
}
