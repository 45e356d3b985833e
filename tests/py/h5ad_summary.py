"""Print a JSON summary of an .h5ad file as anndata sees it (the reference for scdd's reader
and writer tests).

    h5ad_summary.py FILE [--layer NAME | --raw] [--matrix] [--lenient]

Reads FILE with ``anndata.read_h5ad`` with every warning turned into an error, so a file that
makes anndata complain fails here (``--lenient``: warnings are ignored, for third-party files
in old layouts). The summary holds the shape, obs/var names, obs columns,
uns strings, per-row sums and, with ``--matrix``, the selected matrix as canonical CSR arrays.
"""
import argparse
import json
import sys
import warnings

warnings.simplefilter("error")

import anndata as ad  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scipy.sparse as sp  # noqa: E402


def to_csr(m):
    """Any matrix as float64 CSR with int64 indices, sorted, without explicit zeros."""
    m = sp.csr_matrix(m, dtype=np.float64)
    m = sp.csr_matrix((m.data, m.indices.astype(np.int64), m.indptr.astype(np.int64)), shape=m.shape)
    m.eliminate_zeros()
    m.sort_indices()
    return m


def column_summary(s: pd.Series):
    def clean(v):
        return None if pd.isna(v) else v

    if isinstance(s.dtype, pd.CategoricalDtype):
        return {
            "kind": "categorical",
            "categories": [str(c) for c in s.cat.categories],
            "ordered": bool(s.cat.ordered),
            "values": [None if pd.isna(v) else str(v) for v in s],
        }
    if pd.api.types.is_bool_dtype(s.dtype) or pd.api.types.is_numeric_dtype(s.dtype):
        vals = s.astype("float64").to_numpy(na_value=np.nan)
        return {"kind": "numeric", "values": [None if np.isnan(v) else float(v) for v in vals]}
    return {"kind": "text", "values": [clean(v) for v in s.astype(object)]}


def summarize(adata, matrix="X", with_matrix=False):
    """The summary dict of ``adata``; ``matrix`` is ``X``, ``raw`` or ``layers/NAME``."""
    if matrix == "X":
        m, var_names = adata.X, adata.var_names
    elif matrix == "raw":
        m, var_names = adata.raw.X, adata.raw.var_names
    elif matrix.startswith("layers/"):
        m, var_names = adata.layers[matrix[len("layers/"):]], adata.var_names
    else:
        raise ValueError(matrix)
    csr = to_csr(m)
    out = {
        "n_obs": int(csr.shape[0]),
        "n_vars": int(csr.shape[1]),
        "obs_names": [str(x) for x in adata.obs_names],
        "var_names": [str(x) for x in var_names],
        "nnz": int(csr.nnz),
        "row_sums": [float(x) for x in np.asarray(csr.sum(axis=1)).ravel()],
        "obs_columns": [str(c) for c in adata.obs.columns],
        "obs": {str(c): column_summary(adata.obs[c]) for c in adata.obs.columns},
        "var": {str(c): column_summary(adata.var[c]) for c in adata.var.columns},
        "uns": {str(k): v for k, v in adata.uns.items() if isinstance(v, str)},
    }
    if with_matrix:
        out["matrix"] = {
            "indptr": [int(x) for x in csr.indptr],
            "indices": [int(x) for x in csr.indices],
            "data": [float(x) for x in csr.data],
        }
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("file")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--layer")
    g.add_argument("--raw", action="store_true")
    p.add_argument("--matrix", action="store_true", help="include the CSR arrays")
    p.add_argument("--lenient", action="store_true", help="ignore anndata's warnings")
    a = p.parse_args()
    if a.lenient:
        warnings.simplefilter("ignore")
    adata = ad.read_h5ad(a.file)
    matrix = "raw" if a.raw else (f"layers/{a.layer}" if a.layer else "X")
    json.dump(summarize(adata, matrix, a.matrix), sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
