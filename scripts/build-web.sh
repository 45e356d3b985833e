#!/usr/bin/env bash
# Builds the browser page into a folder of static files that work offline (default target/web):
# the wasm module (scdd-wasm for wasm32, post-processed by wasm-bindgen-cli), the page
# (wasm/www) and h5wasm (vendored from npm). Installs wasm-bindgen-cli and the npm packages when
# missing (idempotent). Serve it with `scdd serve target/web`.
# Usage: scripts/build-web.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/web}
WASM_BINDGEN_VERSION=0.2.130   # = the wasm-bindgen crate pinned in wasm/Cargo.toml
bindgen="$HOME/.cargo/bin/wasm-bindgen"
if ! { [ -x "$bindgen" ] && "$bindgen" --version | grep -q " $WASM_BINDGEN_VERSION"; }; then
  echo "build-web.sh: installing wasm-bindgen-cli $WASM_BINDGEN_VERSION (once; ~12 min on 2 cores)"
  cargo install -q wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION"
fi
# npm ci when node_modules is missing or older than the lock file.
if [ ! -d wasm/node_modules/h5wasm ] || [ wasm/package-lock.json -nt wasm/node_modules/.package-lock.json ]; then
  (cd wasm && npm ci -s --no-audit --no-fund)
fi
bash scripts/check-wasm.sh >/dev/null
rm -rf "$out.tmp" && mkdir -p "$out.tmp/vendor/h5wasm"
"$bindgen" --target web --out-dir "$out.tmp/pkg" target/wasm/wasm32-unknown-unknown/release/scdd_wasm.wasm
cp wasm/www/*.html wasm/www/*.js wasm/www/*.css "$out.tmp/"
cp wasm/node_modules/h5wasm/dist/esm/*.js wasm/node_modules/h5wasm/LICENSE.txt "$out.tmp/vendor/h5wasm/" 2>/dev/null \
  || cp wasm/node_modules/h5wasm/dist/esm/*.js "$out.tmp/vendor/h5wasm/"
rm -rf "$out" && mv "$out.tmp" "$out"
echo "build-web.sh: $out ($(du -sh "$out" | cut -f1); scdd_wasm_bg.wasm $(stat -c %s "$out/pkg/scdd_wasm_bg.wasm") bytes)"
