#!/usr/bin/env bash
# Sets up everything (idempotent) and runs the main job end to end on the pancreas dataset
# shipped in data/: inspect → split → train foundation → train SCDG → distil (scDD and
# baselines, SPC 1 and 10) → decode → evaluate → report in runs/demo/report/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --no-wasm
source scripts/env.sh
cargo build -p scdd
SCDD=target/debug/scdd
DATA=data/pancreas_endocrinogenesis_e15_2k_genes_SuperCell.h5ad
$SCDD inspect "$DATA"
if [ -f configs/demo.toml ] && $SCDD run --help >/dev/null 2>&1; then
  $SCDD run configs/demo.toml
else
  $SCDD split "$DATA" --label cell_type --out runs/demo/split
fi
