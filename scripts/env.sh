# Source this: sets LIBTORCH and the wasm toolchain variables for the repo's venv.
_scdd_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
_scdd_site=$("$_scdd_root/.venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' 2>/dev/null)
if [ -z "${LIBTORCH:-}" ] && [ -n "$_scdd_site" ]; then export LIBTORCH="$_scdd_site/torch"; fi
export SCDD_PYTHON="$_scdd_root/.venv/bin/python"
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
unset _scdd_root _scdd_site
