//! `include/scdd_plugin.h` is generated from this crate by cbindgen and checked in, so C and
//! C++ authors need nothing but the header. This test fails when the crate and the header
//! disagree; `SCDD_BLESS=1 cargo test -p scdd-plugin-api --test header` rewrites it.

use std::path::Path;

fn generate() -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config {
        language: cbindgen::Language::C,
        include_guard: Some("SCDD_PLUGIN_H".into()),
        header: Some(
            "/* The scdd evaluator plugin ABI. Generated from plugins/api (crate scdd-plugin-api) by\n * cbindgen: do not edit; see the crate docs for the memory-ownership rules. */"
                .into(),
        ),
        sys_includes: vec!["stdint.h".into()],
        no_includes: true,
        documentation: true,
        style: cbindgen::Style::Both,
        cpp_compat: true,
        usize_is_size_t: true,
        export: cbindgen::ExportConfig {
            exclude: ["ffi_create", "ffi_fit", "ffi_predict", "ffi_free", "ffi_last_error"].map(String::from).to_vec(),
            // No function of the crate is exported, so name the types the header must define.
            include: ["ScddPluginDescriptor", "ScddDescriptorFn", "ScddFitInput", "ScddPredictInput", "ScddPredictOutput"]
                .map(String::from)
                .to_vec(),
            ..Default::default()
        },
        ..Default::default()
    };
    let mut out = Vec::new();
    cbindgen::Builder::new()
        .with_crate(dir)
        .with_config(config)
        .generate()
        .expect("cbindgen")
        .write(&mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn the_checked_in_header_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("include/scdd_plugin.h");
    let fresh = generate();
    for needed in ["SCDD_PLUGIN_MAGIC", "typedef struct ScddPluginDescriptor", "ScddFitInput", "ScddDescriptorFn"] {
        assert!(fresh.contains(needed), "the generated header lacks {needed}:\n{fresh}");
    }
    if std::env::var_os("SCDD_BLESS").is_some() {
        std::fs::write(&path, &fresh).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == fresh,
        "{} is out of date with the crate: run SCDD_BLESS=1 cargo test -p scdd-plugin-api --test header",
        path.display()
    );
}

#[test]
fn a_c_plugin_compiles_against_the_header_alone() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-std=c99", "-Wall", "-Wextra", "-Wpedantic", "-Werror", "-Wno-unused-const-variable", "-fsyntax-only", "-I"])
        .arg(dir.join("include"))
        .arg(dir.join("tests/c/syntax.c"))
        .output()
        .expect("a C compiler (cc) on PATH");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
