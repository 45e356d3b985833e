//! Large sparse reads of contiguous, uncompressed `indices`/`data` (as scdd writes them)
//! bypass HDF5 (positioned reads on two threads); small, chunked or compressed ones go
//! through HDF5. Both must give the same matrix.
use scdd::bench::io::generate_matrix;
use scdd::io::h5ad::{write_h5ad, H5adReader, ReadOptions};
use scdd_core::dataset::Dataset;
use scdd_core::matrix::CsrMatrix;
use scdd_core::obs::ObsTable;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn python() -> PathBuf {
    let py = match std::env::var_os("SCDD_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().join(".venv/bin/python"),
    };
    assert!(py.exists(), "Python {} not found; run scripts/setup.sh or set SCDD_PYTHON", py.display());
    py
}

fn check(path: &Path, want: &CsrMatrix, direct: bool) {
    let r = H5adReader::open(path, &ReadOptions::default()).unwrap();
    assert_eq!(r.direct_reads(), direct, "{}", path.display());
    let whole = r.read_matrix().unwrap(); // > 1M values: direct
    assert_eq!(&whole, want, "{}", path.display());
    // 100-row pieces hold far fewer than 1M values: HDF5
    let n = r.n_rows();
    let pieces: Vec<CsrMatrix> = (0..n).step_by(100).map(|a| r.read_rows(a..(a + 100).min(n)).unwrap()).collect();
    assert_eq!(&CsrMatrix::vstack(&pieces.iter().collect::<Vec<_>>()).unwrap(), want, "{}", path.display());
    // a direct read that starts and ends mid-file
    let (a, b) = (n / 7, n - n / 9);
    let mid = r.read_rows(a..b).unwrap();
    assert!(mid.nnz() >= 1 << 20);
    assert_eq!(mid, want.select_rows(&(a..b).collect::<Vec<_>>()), "{}", path.display());
}

#[test]
fn direct_and_hdf5_reads_agree() {
    let dir = tempfile::tempdir().unwrap();
    let x = generate_matrix(30_000, 1_500, 0.05, 5).unwrap();
    assert!(x.nnz() > 2 << 20);
    let obs = ObsTable { index: (0..x.n_rows()).map(|i| format!("c{i}")).collect(), columns: vec![] };
    let genes = (0..x.n_cols()).map(|g| format!("g{g}")).collect();
    let ds = Dataset::new("t", x.clone(), genes, obs).unwrap();
    let ours = dir.path().join("scdd.h5ad");
    write_h5ad(&ours, &ds, &BTreeMap::new()).unwrap();
    check(&ours, &x, true);

    // the same data written by anndata, uncompressed (its default) and gzip-compressed: both
    // chunked (anndata makes sparse arrays resizable), so both read through HDF5
    for (name, compression, direct) in [("anndata.h5ad", "None", false), ("anndata_gzip.h5ad", "'gzip'", false)] {
        let out = dir.path().join(name);
        let status = Command::new(python())
            .arg("-c")
            .arg(format!(
                "import sys, anndata as ad; a = ad.read_h5ad(sys.argv[1]); a.write_h5ad(sys.argv[2], compression={compression})"
            ))
            .arg(&ours)
            .arg(&out)
            .status()
            .unwrap();
        assert!(status.success());
        check(&out, &x, direct);
    }
}

#[test]
fn real_compressed_files_read_the_same_whole_and_in_pieces() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let path = root.join("data/pbmc3k_seurat_labels_clustifyr.h5ad");
    let whole = H5adReader::open(&path, &ReadOptions::default()).unwrap().read_matrix().unwrap();
    check(&path, &whole, false);
}
