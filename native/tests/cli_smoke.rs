//! Smoke test of the `scdd` binary. Besides checking that it starts, having an integration
//! test here makes `cargo test` build `target/<profile>/scdd`, which the end-to-end tests in
//! the `scdd-tests` crate run.
use std::process::Command;

#[test]
fn binary_starts_and_reports_a_missing_file() {
    let bin = env!("CARGO_BIN_EXE_scdd");
    let help = Command::new(bin).arg("--help").output().unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("inspect"));
    let o = Command::new(bin).args(["inspect", "does-not-exist.h5ad"]).output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("does-not-exist.h5ad: no such file"), "{err}");
}
