#!/usr/bin/env bash
# Builds scdd-core and scdd-wasm for wasm32-unknown-unknown with Debian's rustc-web and its
# std source (rustup here has only the x86_64 std), as in ../shared/notes/toolchain.md.
# Uses its own target dir (target/wasm) so the native build is not clobbered.
# Usage: scripts/check-wasm.sh [extra cargo args]
set -euo pipefail
cd "$(dirname "$0")/.."
for p in rustc-web rust-web-src lld-22; do
  if ! dpkg -s "$p" >/dev/null 2>&1; then
    echo "check-wasm.sh: Debian package $p is missing; run scripts/setup.sh (it installs rustc-web, rust-web-src, lld-22)" >&2
    exit 1
  fi
done
command -v wasm-ld-22 >/dev/null || { echo "check-wasm.sh: wasm-ld-22 not on PATH (package lld-22)" >&2; exit 1; }
[ -x /usr/bin/rustc ] || { echo "check-wasm.sh: /usr/bin/rustc (rustc-web) not found" >&2; exit 1; }

export RUSTC=/usr/bin/rustc
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=wasm-ld-22
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR_WASM:-target/wasm}
# The native env (LIBTORCH etc.) is irrelevant here; keep RUSTFLAGS from leaking in.
unset RUSTFLAGS

echo "check-wasm.sh: $($RUSTC --version) -> wasm32-unknown-unknown (target dir $CARGO_TARGET_DIR)"
cargo build --release --target wasm32-unknown-unknown -Zbuild-std=std,panic_abort \
  -p scdd-core -p scdd-wasm "$@"

wasm=$CARGO_TARGET_DIR/wasm32-unknown-unknown/release/scdd_wasm.wasm
[ -f "$wasm" ] || { echo "check-wasm.sh: expected $wasm was not produced" >&2; exit 1; }

# The core must not use threads, the file system, clocks or OS entropy. On
# wasm32-unknown-unknown these still compile (std has stubs) but fail or panic at run time,
# so check the sources and the dependency tree instead of trusting the build.
bad=$(grep -rnE 'std::(fs|thread|net|process|env)\b|std::time::(Instant|SystemTime)|\b(thread_rng|OsRng|from_entropy)\b' core/src \
  | grep -vE '^[^:]+:[0-9]+:\s*//' || true)
if [ -n "$bad" ]; then
  echo "check-wasm.sh: scdd-core uses std APIs that do not work in the browser:" >&2
  echo "$bad" >&2
  exit 1
fi
if cargo tree -q -p scdd-core --target wasm32-unknown-unknown -e normal --prefix none 2>/dev/null | grep -qE '^getrandom '; then
  echo "check-wasm.sh: scdd-core depends on getrandom (OS entropy) for wasm32:" >&2
  cargo tree -p scdd-core --target wasm32-unknown-unknown -e normal,features -i getrandom >&2 || true
  exit 1
fi
echo "check-wasm.sh: ok ($(stat -c %s "$wasm") bytes: $wasm)"
