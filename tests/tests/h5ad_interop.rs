//! `.h5ad` interop with real anndata: scdd reads fixtures written by anndata and h5py in every
//! supported encoding and gets what anndata gets; files scdd writes open in
//! `anndata.read_h5ad` with warnings as errors and hold the same values.
mod common;

use scdd::io::h5ad::{read_h5ad, write_h5ad, H5adReader, MatrixFormat, MatrixSource, ReadOptions};
use scdd_core::dataset::Dataset;
use scdd_core::matrix::CsrMatrix;
use scdd_core::obs::Column;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

fn expected() -> Value {
    let p = common::h5ad_fixtures().join("expected.json");
    serde_json::from_str(&std::fs::read_to_string(&p).expect("expected.json")).expect("valid JSON")
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().expect("array").iter().map(|s| s.as_str().expect("string").to_string()).collect()
}

/// The CSR arrays of a summary made with `--matrix` / `with_matrix=True`.
fn csr_from(summary: &Value) -> CsrMatrix {
    let m = &summary["matrix"];
    let n_rows = summary["n_obs"].as_u64().unwrap() as usize;
    let n_cols = summary["n_vars"].as_u64().unwrap() as usize;
    let indptr = m["indptr"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    let indices = m["indices"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    let data = m["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    CsrMatrix::new(n_rows, n_cols, indptr, indices, data, "expected").unwrap()
}

/// Explicitly stored zeros are legal in a file but absent from the canonical arrays.
fn without_zeros(m: &CsrMatrix) -> CsrMatrix {
    let mut indptr = vec![0u64];
    let (mut indices, mut data) = (Vec::new(), Vec::new());
    for r in 0..m.n_rows() {
        let (i, v) = m.row(r);
        for (&c, &x) in i.iter().zip(v) {
            if x != 0.0 {
                indices.push(c);
                data.push(x);
            }
        }
        indptr.push(data.len() as u64);
    }
    CsrMatrix::new(m.n_rows(), m.n_cols(), indptr, indices, data, "nz").unwrap()
}

fn assert_close(a: f64, b: f64, what: &str) {
    assert!((a - b).abs() <= 1e-5 * (1.0 + a.abs().max(b.abs())), "{what}: {a} vs {b}");
}

/// Compares a Rust column with anndata's view of it (`h5ad_summary.column_summary`).
fn assert_column(name: &str, col: &Column, exp: &Value) {
    let values = exp["values"].as_array().unwrap();
    assert_eq!(col.len(), values.len(), "{name}: length");
    match (exp["kind"].as_str().unwrap(), col) {
        ("categorical", Column::Categorical { codes, categories, ordered }) => {
            assert_eq!(categories, &strings(&exp["categories"]), "{name}: categories");
            assert_eq!(*ordered, exp["ordered"].as_bool().unwrap(), "{name}: ordered");
            for (i, (&c, v)) in codes.iter().zip(values).enumerate() {
                let got = (c >= 0).then(|| categories[c as usize].as_str());
                assert_eq!(got, v.as_str(), "{name}: row {i}");
            }
        }
        ("numeric", Column::Numeric(x)) => {
            for (i, (a, v)) in x.iter().zip(values).enumerate() {
                match v.as_f64() {
                    None => assert!(a.is_nan(), "{name}: row {i}: {a} should be missing"),
                    Some(b) => assert_close(*a, b, &format!("{name}: row {i}")),
                }
            }
        }
        ("text", Column::Text(x)) => assert_eq!(x, &strings(&exp["values"]), "{name}"),
        (kind, other) => panic!("{name}: anndata sees {kind}, scdd read {}", other.kind()),
    }
}

/// Checks a dataset read by scdd against anndata's summary of the same file.
fn assert_matches_summary(file: &str, ds: &scdd_core::dataset::Dataset, s: &Value) {
    assert_eq!(ds.n_cells() as u64, s["n_obs"].as_u64().unwrap(), "{file}: n_obs");
    assert_eq!(ds.n_genes() as u64, s["n_vars"].as_u64().unwrap(), "{file}: n_vars");
    assert_eq!(ds.genes, strings(&s["var_names"]), "{file}: var names");
    assert_eq!(ds.obs.index, strings(&s["obs_names"]), "{file}: obs names");
    for (r, (a, b)) in ds.x.row_sums().iter().zip(s["row_sums"].as_array().unwrap()).enumerate() {
        assert_close(*a, b.as_f64().unwrap(), &format!("{file}: row sum {r}"));
    }
    assert_eq!(ds.obs.column_names(), strings(&s["obs_columns"]), "{file}: obs columns");
    for (name, exp) in s["obs"].as_object().unwrap() {
        assert_column(&format!("{file}: obs/{name}"), ds.obs.get(name).unwrap(), exp);
    }
}

fn options(matrix: &str) -> ReadOptions {
    ReadOptions::matrix(match matrix {
        "X" => MatrixSource::X,
        "raw" => MatrixSource::Raw,
        m => MatrixSource::Layer(m.strip_prefix("layers/").expect("layers/NAME").to_string()),
    })
}

#[test]
fn reads_every_fixture_like_anndata() {
    let exp = expected();
    let canonical = csr_from(&exp["canonical"]);
    let fixtures = exp["fixtures"].as_object().unwrap();
    assert!(fixtures.len() >= 8, "fixtures: {:?}", fixtures.keys());
    for (file, f) in fixtures {
        let path = common::h5ad_fixtures().join(file);
        let ds = read_h5ad(&path, &options(f["matrix"].as_str().unwrap())).unwrap_or_else(|e| panic!("{file}: {e:#}"));
        assert_matches_summary(file, &ds, &f["summary"]);
        // Every fixture stores the same counts, whatever the encoding and dtype.
        assert_eq!(without_zeros(&ds.x), canonical, "{file}: matrix differs from the canonical counts");
        assert_eq!(ds.genes, strings(&exp["canonical"]["var_names"]), "{file}: genes");
    }
}

#[test]
fn reads_x_next_to_a_layer_and_gene_symbols() {
    let exp = expected();
    let dir = common::h5ad_fixtures();
    let ds = read_h5ad(&dir.join("layer.h5ad"), &ReadOptions::default()).unwrap();
    assert_matches_summary("layer.h5ad (X)", &ds, &exp["fixtures"]["layer.h5ad"]["x_summary"]);

    let opts = ReadOptions { gene_symbols: Some("gene_id".into()), ..Default::default() };
    let ds = read_h5ad(&dir.join("csr.h5ad"), &opts).unwrap();
    let ids = &exp["fixtures"]["csr.h5ad"]["summary"]["var"]["gene_id"];
    assert_eq!(ds.genes, strings(&ids["values"]));
}

#[test]
fn partial_reads_match_the_full_matrix() {
    let dir = common::h5ad_fixtures();
    for (file, format) in [
        ("csr.h5ad", MatrixFormat::Csr),
        ("int64.h5ad", MatrixFormat::Csr),
        ("dense.h5ad", MatrixFormat::Dense),
        ("csc.h5ad", MatrixFormat::Csc),
    ] {
        let path = dir.join(file);
        let r = H5adReader::open(&path, &ReadOptions::default()).unwrap();
        assert_eq!(r.format(), format, "{file}");
        let full = without_zeros(&r.read_matrix().unwrap());
        let n = r.n_rows();
        assert_eq!(
            without_zeros(&r.read_rows(17..63).unwrap()),
            full.select_rows(&(17..63).collect::<Vec<_>>()),
            "{file}"
        );
        assert_eq!(r.read_rows(n..n).unwrap().n_rows(), 0, "{file}");
        let rows = [199, 0, 5, 6, 7, 150, 5, 42, 43, 199];
        assert_eq!(without_zeros(&r.read_row_indices(&rows).unwrap()), full.select_rows(&rows), "{file}");
        let same = scdd::io::h5ad::read_rows(&path, &ReadOptions::default(), 100..101).unwrap();
        assert_eq!(without_zeros(&same), full.select_rows(&[100]), "{file}");
        let e = format!("{:#}", r.read_row_indices(&[3, n]).unwrap_err());
        assert!(e.contains(file) && e.contains(&format!("row index {n} is out of range")), "{e}");
    }
}

/// Runs `h5ad_summary.py` (anndata, warnings as errors) on a file scdd wrote.
fn anndata_summary(path: &Path, with_matrix: bool) -> Value {
    let mut args = vec![path.to_str().unwrap()];
    if with_matrix {
        args.push("--matrix");
    }
    serde_json::from_str(&common::run_py("h5ad_summary.py", &args)).unwrap()
}

#[test]
fn files_written_by_scdd_open_in_anndata() {
    let dir = tempfile::tempdir().unwrap();
    let src = read_h5ad(&common::h5ad_fixtures().join("csr.h5ad"), &ReadOptions::default()).unwrap();
    let rows: Vec<usize> = (0..src.n_cells()).step_by(3).collect();
    let mut ds = src.select_cells(&rows);
    let n = ds.n_cells();
    ds.obs.set("note", Column::Text((0..n).map(|i| format!("zelle-{i}-ü")).collect())).unwrap();
    let many: Vec<String> = (0..n).map(|i| format!("c{:03}", i % 200)).collect();
    ds.obs.set("many_classes", Column::categorical_from_labels(&many)).unwrap();
    let uns = BTreeMap::from([("scdd_version".to_string(), "0.1.0".to_string()), ("note".into(), "ü".into())]);
    let out = dir.path().join("sub dir/written.h5ad");
    write_h5ad(&out, &ds, &uns).unwrap();

    let s = anndata_summary(&out, true);
    assert_eq!(csr_from(&s), without_zeros(&ds.x), "matrix as anndata reads it");
    assert_matches_summary("written.h5ad", &ds, &s);
    assert_eq!(s["uns"]["scdd_version"], "0.1.0");
    assert_eq!(s["uns"]["note"], "ü");
    // And scdd reads back exactly what it wrote.
    assert_eq!(read_h5ad(&out, &ReadOptions::default()).unwrap(), Dataset { name: "written".into(), ..ds });
    // Only the final file is left in the directory.
    let names: Vec<_> = std::fs::read_dir(out.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from("written.h5ad")]);
}

#[test]
fn split_writes_train_and_test_that_anndata_reads() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("split");
    let input = common::h5ad_fixtures().join("csr.h5ad");
    let o = common::scdd(&[
        "split",
        input.to_str().unwrap(),
        "--label",
        "cell_type",
        "--out",
        out.to_str().unwrap(),
        "--seed",
        "7",
        "--min-counts",
        "800",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut names: Vec<_> =
        std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["split.json", "test.h5ad", "train.h5ad"]);

    let split: Value = serde_json::from_str(&std::fs::read_to_string(out.join("split.json")).unwrap()).unwrap();
    let train = anndata_summary(&out.join("train.h5ad"), true);
    let test = anndata_summary(&out.join("test.h5ad"), true);
    let src = read_h5ad(&input, &ReadOptions::default()).unwrap();

    // QC: cells with < 800 counts are gone, genes agree between the parts.
    let qc = &split["qc"];
    let kept_cells = src.x.row_sums().iter().filter(|&&s| s >= 800.0).count();
    assert_eq!(qc["cells_kept"].as_u64().unwrap() as usize, kept_cells);
    assert!(qc["genes_kept"].as_u64().unwrap() < src.n_genes() as u64);
    assert_eq!(train["var_names"], test["var_names"]);
    assert_eq!(train["n_vars"], qc["genes_kept"]);
    // Per-class counts in split.json are what the files hold.
    let count = |s: &Value, class: &str| {
        s["obs"]["cell_type"]["values"].as_array().unwrap().iter().filter(|v| *v == class).count()
    };
    let mut total = 0;
    for c in split["classes"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        assert_eq!(count(&train, name), c["train"].as_u64().unwrap() as usize, "{name}");
        assert_eq!(count(&test, name), c["test"].as_u64().unwrap() as usize, "{name}");
        assert!(c["test"].as_u64().unwrap() >= 1 && c["train"].as_u64().unwrap() >= 1, "{name}");
        total += count(&train, name) + count(&test, name);
    }
    assert_eq!(total, split["n_train"].as_u64().unwrap() as usize + split["n_test"].as_u64().unwrap() as usize);
    assert_eq!(split["seed"], 7);
    assert_eq!(split["label"], "cell_type");
    // Raw values are kept: each written cell equals the source cell on the kept genes.
    let genes = strings(&train["var_names"]);
    let col: std::collections::HashMap<&str, usize> =
        src.genes.iter().enumerate().map(|(i, g)| (g.as_str(), i)).collect();
    let keep: Vec<bool> = src.genes.iter().map(|g| genes.contains(g)).collect();
    let src_kept = src.select_genes(&keep);
    assert!(genes.iter().all(|g| col.contains_key(g.as_str())));
    let pos: std::collections::HashMap<&str, usize> =
        src.obs.index.iter().enumerate().map(|(i, c)| (c.as_str(), i)).collect();
    for part in [&train, &test] {
        let rows: Vec<usize> = strings(&part["obs_names"]).iter().map(|c| pos[c.as_str()]).collect();
        assert_eq!(csr_from(part), without_zeros(&src_kept.x.select_rows(&rows)));
        assert_eq!(part["uns"]["scdd_label"], "cell_type");
    }
}

#[test]
fn reads_the_bundled_data_files_like_anndata() {
    // The repository's real data sets, including pbmc68k_reduced in the pre-0.7 layout
    // (compound obs/var, categories in uns, raw.X / raw.var).
    let data = common::workspace_root().join("data");
    for (file, matrix) in [
        ("pbmc3k_seurat_labels_clustifyr.h5ad", "X"),
        ("pancreas_endocrinogenesis_e15_2k_genes_SuperCell.h5ad", "layers/unspliced"),
        ("pbmc68k_reduced_scanpy.h5ad", "X"),
        ("pbmc68k_reduced_scanpy.h5ad", "raw"),
    ] {
        let path = data.join(file);
        let mut args = vec![path.to_str().unwrap(), "--lenient"];
        match matrix {
            "raw" => args.push("--raw"),
            "X" => {}
            layer => args.extend(["--layer", layer.strip_prefix("layers/").unwrap()]),
        }
        let s: Value = serde_json::from_str(&common::run_py("h5ad_summary.py", &args)).unwrap();
        let ds = read_h5ad(&path, &options(matrix)).unwrap_or_else(|e| panic!("{file}: {e:#}"));
        assert_matches_summary(&format!("{file} ({matrix})"), &ds, &s);
    }
}
