// The test executables link the `scdd` library and with it libtorch: bake libtorch's library
// directory into their rpath (as native/build.rs does for the `scdd` binary) so they run
// without LD_LIBRARY_PATH. LIBTORCH is what torch-sys builds against (scripts/env.sh sets it).
fn main() {
    if let Some(libtorch) = std::env::var_os("LIBTORCH") {
        let lib = std::path::Path::new(&libtorch).join("lib");
        println!("cargo:rustc-link-arg-tests=-Wl,-rpath,{}", lib.display());
    }
    println!("cargo:rerun-if-env-changed=LIBTORCH");
}
