"""Reference preprocessing with scanpy, for scdd's parity test (tests/tests/preprocess_scanpy.rs).

Usage: scanpy_preprocess.py IN.h5ad OUT_DIR --min-counts N --min-cells N [--target-sum T]

Runs sc.pp.filter_cells(min_counts), sc.pp.filter_genes(min_cells), sc.pp.normalize_total
(target_sum) and sc.pp.log1p, and writes to OUT_DIR:
  meta.json       {"n_obs", "n_vars", "nnz", "cells_in", "genes_in", "obs_names", "var_names"}
  indptr.i64      CSR row pointers, little-endian int64
  indices.i32     column indices, little-endian int32
  data.f32        values, little-endian float32
The CSR arrays are canonical: sorted indices, explicit zeros removed.
"""
import argparse
import json
import os
import warnings

import numpy as np
import scipy.sparse as sp

warnings.filterwarnings("ignore")
import anndata as ad  # noqa: E402
import scanpy as sc  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("input")
    p.add_argument("out_dir")
    p.add_argument("--min-counts", type=float, required=True)
    p.add_argument("--min-cells", type=int, required=True)
    p.add_argument("--target-sum", type=float, default=1e4)
    args = p.parse_args()

    a = ad.read_h5ad(args.input)
    cells_in, genes_in = a.n_obs, a.n_vars
    if not sp.issparse(a.X):
        a.X = sp.csr_matrix(a.X)
    a.X = sp.csr_matrix(a.X, dtype=np.float32)
    sc.pp.filter_cells(a, min_counts=args.min_counts)
    sc.pp.filter_genes(a, min_cells=args.min_cells)
    sc.pp.normalize_total(a, target_sum=args.target_sum)
    sc.pp.log1p(a)

    x = sp.csr_matrix(a.X)
    x.eliminate_zeros()
    x.sort_indices()
    os.makedirs(args.out_dir, exist_ok=True)
    x.indptr.astype("<i8").tofile(os.path.join(args.out_dir, "indptr.i64"))
    x.indices.astype("<i4").tofile(os.path.join(args.out_dir, "indices.i32"))
    x.data.astype("<f4").tofile(os.path.join(args.out_dir, "data.f32"))
    meta = {
        "scanpy": sc.__version__ if hasattr(sc, "__version__") else "",
        "n_obs": int(a.n_obs),
        "n_vars": int(a.n_vars),
        "nnz": int(x.nnz),
        "cells_in": int(cells_in),
        "genes_in": int(genes_in),
        "obs_names": [str(s) for s in a.obs_names],
        "var_names": [str(s) for s in a.var_names],
    }
    with open(os.path.join(args.out_dir, "meta.json"), "w") as f:
        json.dump(meta, f)


if __name__ == "__main__":
    main()
