#!/usr/bin/env bash
# Sets up everything (idempotent) and runs every test: the Rust workspace (unit, property,
# interop-with-Python, CLI and end-to-end tests), the wasm32 build, the kernels' in-browser unit
# tests (scripts/wasm-test.sh) and the page in headless Chromium (scripts/browser-test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
# One target dir, one (optimised dev) profile for everything native.
cargo build --workspace --all-targets
cargo test --workspace -- --test-threads=2
bash scripts/check-wasm.sh
bash scripts/wasm-test.sh
bash scripts/browser-test.sh target/debug/scdd
