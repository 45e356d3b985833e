#!/usr/bin/env bash
# In-browser unit tests of the kernels (wasm/tests/browser.rs): built for wasm32 with Debian's
# rustc-web, run by wasm-bindgen-test-runner in headless Chromium through chromedriver
# (options in wasm/webdriver.json: WebGPU on, SwiftShader without a GPU). Installs chromium-driver
# when missing; wasm-bindgen-cli (the runner) comes from scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
dpkg -s chromium-driver >/dev/null 2>&1 || { sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo; DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium-driver >/dev/null; }
export RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=wasm-ld-22
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER="$HOME/.cargo/bin/wasm-bindgen-test-runner"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR_WASM:-$PWD/target/wasm}   # absolute: the tests run from wasm/
export CHROMEDRIVER=/usr/bin/chromedriver WASM_BINDGEN_TEST_TIMEOUT=600
unset RUSTFLAGS
cd wasm   # webdriver.json is read from the current directory
cargo test --release --target wasm32-unknown-unknown -Zbuild-std=std,panic_abort -p scdd-wasm --test browser
