#!/usr/bin/env bash
# Decodes a code file in headless Chromium through the wasm build (WebGPU; SwiftShader on a
# machine without a GPU) and checks the cells against `scdd decode` (≤ 1e-4), and that a code
# file given as a bundle gets a readable error. A first step towards issue 11's browser tests:
# not yet part of scripts/test.sh (it needs chromium, playwright-core and wasm-bindgen-cli
# 0.2.130, which takes ~12 min to build; this script installs what is missing).
# Usage: scripts/browser-smoke.sh BUNDLE.scddg CODES.scdd
set -euo pipefail
cd "$(dirname "$0")/.."
bundle=$1; codes=$2
dpkg -s chromium >/dev/null 2>&1 || { sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo; DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null; }
[ -x "$HOME/.cargo/bin/wasm-bindgen" ] && "$HOME/.cargo/bin/wasm-bindgen" --version | grep -q 0.2.130 || cargo install wasm-bindgen-cli --version 0.2.130
work=target/browser-smoke
mkdir -p "$work"
[ -d "$work/node_modules/playwright-core" ] || (cd "$work" && npm init -y >/dev/null && npm install -s playwright-core@1 >/dev/null)
bash scripts/check-wasm.sh >/dev/null
rm -rf "$work/site" && mkdir -p "$work/site"
"$HOME/.cargo/bin/wasm-bindgen" --target web --out-dir "$work/site/pkg" target/wasm/wasm32-unknown-unknown/release/scdd_wasm.wasm
cp wasm/smoke/index.html "$work/site/" && cp "$bundle" "$work/site/bundle.scddg" && cp "$codes" "$work/site/codes.scdd"
cp wasm/smoke/smoke.mjs "$work/"
source scripts/env.sh
cargo build -q --release -p scdd
rm -f "$work/native.h5ad"
target/release/scdd decode "$codes" -g "$bundle" -o "$work/native.h5ad" >/dev/null
.venv/bin/python -c "import anndata as ad, numpy as np, sys; a = ad.read_h5ad(sys.argv[1]); X = a.X.toarray() if hasattr(a.X, 'toarray') else a.X; np.asarray(X, dtype='<f4').tofile(sys.argv[2])" "$work/native.h5ad" "$work/native.f32"
port=$((20000 + RANDOM % 20000))
(cd "$work/site" && exec python3 -m http.server "$port" --bind 127.0.0.1 >/dev/null 2>&1) &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
sleep 1
(cd "$work" && node smoke.mjs "http://127.0.0.1:$port/index.html" "$PWD")
