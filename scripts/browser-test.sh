#!/usr/bin/env bash
# The browser end-to-end test: the native CLI makes a generator, latent codes and a test split
# from the pancreas data in data/; headless Chromium (Debian's, WebGPU on SwiftShader without a
# GPU) loads the page from `scdd serve`, opens the recipient bundle, decodes, reads the test
# .h5ad with h5wasm, trains the CellTypist-style logistic regression (WGSL and the CPU solver)
# and the MLP, downloads the cells as .h5ad and CSV, and meets bad files. Checks (wasm/e2e/check.py): the downloaded .h5ad
# opens in Python anndata and equals `scdd decode` to 1e-4; the page's accuracy is within 2
# points of scikit-learn's on the same cells and objective; every bad file got its message.
# Artifacts (screenshots, results) in target/browser-test/. Installs what it needs (Chromium,
# npm packages, wasm-bindgen-cli) when missing.
# Usage: scripts/browser-test.sh [SCDD_BINARY]   (default target/debug/scdd, built if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
dpkg -s chromium >/dev/null 2>&1 || { sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo; DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null; }
bash scripts/build-web.sh target/web
scdd=${1:-target/debug/scdd}
[ -x "$scdd" ] || cargo build -q -p scdd
cargo build -q -p scdd-plugin-celltypist
w=target/browser-test
rm -rf "$w" && mkdir -p "$w"
data=data/pancreas_endocrinogenesis_e15_2k_genes_SuperCell.h5ad
q="--quiet --device cpu --threads 2"
"$scdd" split "$data" --label cell_type --out "$w/split" >/dev/null
"$scdd" train-foundation "$w/split/train.h5ad" -o "$w/foundation.scddg" --hidden 256 --latent-dim 32 --epochs 10 --seed 1 $q
for s in 1 2; do
  "$scdd" train-generator "$w/split/train.h5ad" --foundation "$w/foundation.scddg" -o "$w/generator$s.scddg" --label cell_type --hidden 64,32 --emb-dim 64 --steps 300 --holdout 0 --seed $s $q
done
"$scdd" distill "$w/split/train.h5ad" -g "$w/generator1.scddg" -o "$w/codes.scdd" --spc 10 --steps 30 --seed 1 --device cpu --quiet
"$scdd" distill "$w/split/train.h5ad" -g "$w/generator2.scddg" -o "$w/other.scdd" --spc 1 --steps 2 --seed 1 --device cpu --quiet
"$scdd" recipient-bundle "$w/generator1.scddg" -o "$w/recipient.scddg"
"$scdd" decode "$w/codes.scdd" -g "$w/generator1.scddg" -o "$w/native.h5ad" >/dev/null
"$scdd" evaluate "$w/codes.scdd" --test "$w/split/test.h5ad" -m "$w/generator1.scddg" --evaluators celltypist --repeats 1 --json "$w/native-eval.json" >/dev/null
# Bad files: a flipped byte, a cut-off file, a test set with other gene names.
python3 -c "import sys; b = bytearray(open(sys.argv[1], 'rb').read()); b[len(b) // 2] ^= 0xFF; open(sys.argv[2], 'wb').write(b)" "$w/recipient.scddg" "$w/corrupted.scddg"
head -c 100000 "$w/recipient.scddg" > "$w/truncated.scddg"
.venv/bin/python -c "import anndata as ad, sys; a = ad.read_h5ad(sys.argv[1]); a.var_names = ['ENSG%08d' % i for i in range(a.n_vars)]; a.write_h5ad(sys.argv[2])" "$w/split/test.h5ad" "$w/othergenes.h5ad"
# Every test cell the same cell (labels kept): a fit can only call one class, which the page flags.
.venv/bin/python -c "import anndata as ad, sys; a = ad.read_h5ad(sys.argv[1]); a.X = a.X[[0] * a.n_obs]; a.write_h5ad(sys.argv[2])" "$w/split/test.h5ad" "$w/onecell.h5ad"
port=$((20000 + RANDOM % 20000))
"$scdd" serve target/web --port "$port" > "$w/serve.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/" >/dev/null && break; sleep 0.1; done
node wasm/e2e/page.mjs "http://127.0.0.1:$port/" "$w"
.venv/bin/python wasm/e2e/check.py "$w"
