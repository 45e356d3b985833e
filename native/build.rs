// Bakes libtorch's library directory into the binary's rpath so `scdd` runs without
// LD_LIBRARY_PATH, and with the `cuda` feature forces libtorch_cuda to be linked (otherwise the
// linker drops it and CUDA is never available).
fn main() {
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
    }
    println!("cargo:rerun-if-env-changed=LIBTORCH");
}
