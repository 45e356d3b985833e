//! `scdd bench io` end to end on a small generated file: both sides run, agree to 1e-5, and
//! the JSON report carries timings and memory. Needs the Python with anndata + scanpy
//! (`$SCDD_PYTHON`, else `<workspace>/.venv/bin/python`); fails, never skips, without it.
use std::process::Command;

#[test]
fn bench_io_small_json() {
    let dir = tempfile::tempdir().unwrap();
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_scdd"))
            .args(["bench", "io", "--cells", "3000", "--genes", "800", "--density", "0.05", "--sample-rows", "50", "--json"])
            .arg("--dir")
            .arg(dir.path())
            .output()
            .unwrap()
    };
    let out = run();
    assert!(out.status.success(), "scdd bench io failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(r["generated"], true);
    let c = &r["comparison"];
    assert_eq!(c["equal"], true, "{c}");
    assert_eq!(c["same_cells"], true);
    assert_eq!(c["rows_sampled"], 50);
    assert!(c["max_abs_diff"].as_f64().unwrap() <= 1e-5);
    for side in ["scdd", "python"] {
        let s = &r[side];
        assert!(s["total_s"].as_f64().unwrap() > 0.0, "{side}");
        assert!(s["peak_rss_bytes"].as_u64().unwrap() > s["csr_bytes"].as_u64().unwrap(), "{side}");
        // QC dropped the generator's near-empty cells and rare genes
        assert!(s["n_obs"].as_u64().unwrap() < 3000 && s["n_vars"].as_u64().unwrap() < 800, "{side}");
    }
    assert!(r["speedup"].as_f64().unwrap() > 0.0);
    // the file is cached: a second run reuses it (and prints a table without --json)
    let again = Command::new(env!("CARGO_BIN_EXE_scdd"))
        .args(["bench", "io", "--cells", "3000", "--genes", "800", "--density", "0.05", "--no-python"])
        .arg("--dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    let table = String::from_utf8(again.stdout).unwrap();
    assert!(table.contains("reused") && table.contains("read_h5ad") && table.contains("peak RSS"), "{table}");
    // only the cached file is left in --dir
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn bench_io_refuses_bad_sizes() {
    let out = Command::new(env!("CARGO_BIN_EXE_scdd")).args(["bench", "io", "--density", "0", "--no-python"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--density"));
}
