#!/usr/bin/env bash
# The real CellTypist 1.7.1 for `scdd bench evaluate`, in its own venv (.venv-celltypist):
# CellTypist 1.7 needs scikit-learn < 1.7, which the main .venv (torch, scanpy) does not pin.
# Idempotent: does nothing when the venv already imports celltypist 1.7.1.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-celltypist
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import celltypist, sys; sys.exit(celltypist.__version__ != "1.7.1")' 2>/dev/null; then
  echo "$VENV: celltypist 1.7.1 present"
  exit 0
fi
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
"$VENV/bin/pip" install --quiet "celltypist==1.7.1" "scikit-learn>=1.3,<1.7"
"$VENV/bin/python" -c 'import celltypist, sklearn; print("celltypist", celltypist.__version__, "scikit-learn", sklearn.__version__)'
