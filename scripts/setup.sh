#!/usr/bin/env bash
# Idempotent set-up for scdd on a fresh Debian 12 machine (root or sudo).
# Installs: system libraries (HDF5), the Python venv with libtorch (torch 2.11.0 wheel),
# anndata + scanpy (interop tests and benchmarks), and the wasm32 toolchain pieces.
# Usage: scripts/setup.sh [--no-wasm] [--no-python-extras]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WASM=1; PYEXTRAS=1
for a in "$@"; do
  case "$a" in
    --no-wasm) WASM=0 ;;
    --no-python-extras) PYEXTRAS=0 ;;
    *) echo "setup.sh: unknown option $a" >&2; exit 2 ;;
  esac
done
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
log() { printf '\033[1;34m[setup]\033[0m %s\n' "$*"; }

# --- apt packages -------------------------------------------------------------------------
# mesa-vulkan-drivers: lavapipe, the Vulkan driver on the CPU that runs the WGSL kernels in
# native tests (scdd-wasm) on a machine without a GPU.
PKGS=(libhdf5-dev pkg-config mesa-vulkan-drivers libvulkan1)
# The browser build and its tests: Debian's rustc-web with its std source (wasm32), Chromium
# (headless, WebGPU on SwiftShader) and Node.js / npm (h5wasm, playwright-core; Debian's only
# when the machine has no node and npm of its own).
[ "$WASM" = 1 ] && PKGS+=(rustc-web cargo-web rust-web-src lld-22 chromium chromium-driver)
[ "$WASM" = 1 ] && ! { command -v node && command -v npm; } >/dev/null && PKGS+=(nodejs npm)
missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
else
  log "apt packages present"
fi

# --- Python venv with libtorch (tch 0.24.0 <-> torch 2.11.0) ------------------------------
VENV=$ROOT/.venv
PY=$VENV/bin/python
[ -x "$PY" ] || { log "creating $VENV"; python3 -m venv "$VENV"; }
SITE=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# The full wheel set (torch + its CUDA runtime wheels, ~4.5 GB, about a minute from PyPI): tch
# links libtorch from it, and Python torch must import for the interop tests.
if ! "$PY" -c 'import torch' 2>/dev/null; then
  log "installing torch 2.11.0"
  $PY -m pip install -q --upgrade pip
  $PY -m pip install -q torch==2.11.0
fi
if [ "$PYEXTRAS" = 1 ] && ! $PY -c 'import anndata, scanpy' 2>/dev/null; then
  log "installing anndata + scanpy"
  $PY -m pip install -q "anndata>=0.10" "scanpy>=1.10" h5py
fi
TORCH_VER=$($PY - <<'PY'
import importlib.metadata as m; print(m.version("torch"))
PY
)
case "$TORCH_VER" in 2.11.0*) ;; *) echo "setup.sh: torch $TORCH_VER found, tch 0.24.0 needs 2.11.0" >&2; exit 1 ;; esac
log "torch $TORCH_VER at $SITE/torch"

# --- the browser build: wasm-bindgen-cli (pinned to the crate) and the npm packages ---------
if [ "$WASM" = 1 ]; then
  WB=0.2.130   # = the wasm-bindgen crate pinned in wasm/Cargo.toml
  if ! { [ -x "$HOME/.cargo/bin/wasm-bindgen" ] && "$HOME/.cargo/bin/wasm-bindgen" --version | grep -q " $WB"; }; then
    log "cargo install wasm-bindgen-cli $WB (once; ~12 min on 2 cores)"
    cargo install -q wasm-bindgen-cli --version "$WB"
  fi
  if [ ! -d "$ROOT/wasm/node_modules/h5wasm" ] || [ "$ROOT/wasm/package-lock.json" -nt "$ROOT/wasm/node_modules/.package-lock.json" ]; then
    log "npm ci (h5wasm, playwright-core)"
    (cd "$ROOT/wasm" && npm ci -s --no-audit --no-fund)
  fi
  log "wasm-bindgen $("$HOME/.cargo/bin/wasm-bindgen" --version | cut -d' ' -f2), chromium, npm packages present"
fi
log "done. Environment: source scripts/env.sh"
