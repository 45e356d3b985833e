#!/usr/bin/env bash
# The browser benchmark: decoding throughput and evaluator training time in headless Chromium
# on WebGPU and on the CPU reference, first-load time and bytes, next to the native figures of
# `scdd bench decode` (libtorch CPU, the core's reference) on the same random default-size
# generators. Usage: scripts/browser-bench.sh [CASES]   (default 2000:1000,2000:10000,14000:1000,14000:10000)
set -euo pipefail
cd "$(dirname "$0")/.."
cases=${1:-2000:1000,2000:10000,14000:1000,14000:10000}
source scripts/env.sh
bash scripts/build-web.sh target/web >/dev/null
cargo build -q --release -p scdd
w=target/bench-decode
genes=$(echo "$cases" | tr ',' '\n' | cut -d: -f1 | sort -un | paste -sd,)
cells=$(echo "$cases" | tr ',' '\n' | cut -d: -f2 | sort -un | paste -sd,)
target/release/scdd bench decode --genes "$genes" --cells "$cells" --dir "$w" --json "$w/native-bench.json"
# Test cells for the training times: 1000 decoded cells per gene count.
for g in ${genes//,/ }; do
  n1=$(echo "$cells" | cut -d, -f1)
  [ -f "$w/test-$g.h5ad" ] || target/release/scdd decode "$w/codes-$g-$n1.scdd" -g "$w/bundle-$g.scddg" -o "$w/test-$g.h5ad" >/dev/null
done
port=$((20000 + RANDOM % 20000))
target/release/scdd serve target/web --port "$port" > /dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/" >/dev/null && break; sleep 0.1; done
node wasm/e2e/bench.mjs "http://127.0.0.1:$port/" "$w" "$cases"
