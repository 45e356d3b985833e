"""Write small .h5ad fixtures for scdd's reader tests, each storing the same cells in another
encoding, plus expected.json with what anndata / numpy say each file holds.

    make_h5ad_fixtures.py OUTDIR [--source data/pbmc3k_seurat_labels_clustifyr.h5ad]

All fixtures hold the same 200 cells x ~1500 genes of raw counts (a subset of pbmc3k):

    csr.h5ad            anndata: CSR float32 X; obs with categoricals (one with a missing value,
                        one ordered), a nullable integer with a missing value, floats, a bool and
                        a text column; var with a text column `gene_id`
    csc.h5ad            anndata: CSC float64 X
    dense.h5ad          anndata: dense float32 X
    int64.h5ad          anndata: CSR with int64 data, indices and indptr
    layer.h5ad          anndata: X log-normalised, the counts in layers/counts
    raw.h5ad            anndata: X normalised on a subset of genes, the counts in raw/X + raw/var
    legacy07.h5ad       h5py: the anndata 0.7 layout (X with h5sparse_format attributes, obs
                        categoricals as obs/__categories/<col> + integer codes)
    fixed_strings.h5ad  h5py: fixed-length ASCII strings (obs index, categories) and
                        variable-length ASCII strings (var index, a text column)

expected.json: {"canonical": summary of the counts with the CSR arrays,
                "fixtures": {file: {"matrix": "X" | "layers/counts" | "raw", "summary": ...}}}
where a summary is h5ad_summary.summarize() of the file as anndata reads it (for the h5py-written
files: of the in-memory object whose content they hold).
"""
import argparse
import json
import os
import sys
import warnings

import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import anndata as ad  # noqa: E402
from h5ad_summary import summarize  # noqa: E402

warnings.simplefilter("error")

N_CELLS = 200
N_GENES = 1500


def canonical(source):
    """The 200-cell subset with the extra obs/var columns the reader must handle."""
    full = ad.read_h5ad(source)
    rows = np.linspace(0, full.n_obs - 1, N_CELLS).astype(int)
    a = full[rows].copy()
    detected = np.asarray((a.X > 0).sum(axis=0)).ravel()
    genes = np.flatnonzero(detected >= 3)[:N_GENES]
    a = a[:, genes].copy()
    a.X = sp.csr_matrix(a.X, dtype=np.float32)
    a.X.sort_indices()
    obs = a.obs
    ct = obs["cell_type"].astype(object)
    ct.iloc[3] = np.nan  # a missing label: code -1
    obs["cell_type"] = pd.Categorical(ct, categories=obs["cell_type"].cat.categories)
    nf = obs["nFeature_RNA"].astype("Int32")
    nf.iloc[5] = pd.NA  # a masked nullable integer
    obs["nFeature_RNA"] = nf
    sizes = np.where(obs["nCount_RNA"] < 1500, "small", np.where(obs["nCount_RNA"] < 3000, "medium", "large"))
    obs["size"] = pd.Categorical(sizes, categories=["small", "medium", "large"], ordered=True)
    obs["is_t"] = obs["cell_type"].astype(str).str.contains(" T").to_numpy()
    obs["barcode"] = [f"bc-{x}" for x in obs.index]
    a.var["gene_id"] = [f"ID{i:05d}" for i in range(a.n_vars)]
    return a


def write_anndata(a, path):
    a.write_h5ad(path, convert_strings_to_categoricals=False)


def h5py_legacy07(a, path):
    """anndata 0.7 layout, written by hand."""
    x = a.X.tocsr()
    with h5py.File(path, "w") as f:
        g = f.create_group("X")
        g.attrs["h5sparse_format"] = "csr"
        g.attrs["h5sparse_shape"] = np.array(x.shape)
        g["data"] = x.data.astype(np.float32)
        g["indices"] = x.indices.astype(np.int32)
        g["indptr"] = x.indptr.astype(np.int64)
        obs = f.create_group("obs")
        obs.attrs["_index"] = "_index"
        obs.attrs["column-order"] = np.array(["cell_type", "nCount_RNA"], dtype=object)
        obs.create_dataset("_index", data=np.array(a.obs_names, dtype=object), dtype=h5py.string_dtype("utf-8"))
        cats = obs.create_group("__categories")
        cats.create_dataset(
            "cell_type", data=np.array(a.obs["cell_type"].cat.categories, dtype=object), dtype=h5py.string_dtype("utf-8")
        )
        obs["cell_type"] = a.obs["cell_type"].cat.codes.to_numpy().astype(np.int8)
        obs["nCount_RNA"] = a.obs["nCount_RNA"].to_numpy()
        var = f.create_group("var")
        var.attrs["_index"] = "_index"
        var.create_dataset("_index", data=np.array(a.var_names, dtype=object), dtype=h5py.string_dtype("utf-8"))
    b = ad.AnnData(X=a.X, obs=a.obs[["cell_type", "nCount_RNA"]].copy(), var=pd.DataFrame(index=a.var_names))
    return b


def h5py_fixed_strings(a, path):
    """anndata 0.8 layout with fixed-length and variable-length ASCII strings."""
    x = a.X.tocsr()

    def enc(node, t, v):
        node.attrs["encoding-type"] = t
        node.attrs["encoding-version"] = v

    def fixed(values):
        return np.array([s.encode("ascii") for s in values], dtype="S")

    with h5py.File(path, "w") as f:
        enc(f, "anndata", "0.1.0")
        g = f.create_group("X")
        enc(g, "csr_matrix", "0.1.0")
        g.attrs["shape"] = np.array(x.shape)
        g["data"] = x.data.astype(np.float32)
        g["indices"] = x.indices.astype(np.int32)
        g["indptr"] = x.indptr.astype(np.int32)
        obs = f.create_group("obs")
        enc(obs, "dataframe", "0.2.0")
        obs.attrs["_index"] = np.bytes_("_index")  # a fixed-length attribute string
        obs.attrs["column-order"] = np.array([b"cell_type", b"barcode"])
        obs["_index"] = fixed(a.obs_names)
        ct = obs.create_group("cell_type")
        enc(ct, "categorical", "0.2.0")
        ct.attrs["ordered"] = False
        ct["codes"] = a.obs["cell_type"].cat.codes.to_numpy().astype(np.int8)
        ct["categories"] = fixed(a.obs["cell_type"].cat.categories)
        obs.create_dataset("barcode", data=np.array(a.obs["barcode"], dtype=object), dtype=h5py.string_dtype("ascii"))
        var = f.create_group("var")
        enc(var, "dataframe", "0.2.0")
        var.attrs["_index"] = "_index"
        var.attrs["column-order"] = np.array([], dtype=np.float64)
        var.create_dataset("_index", data=np.array(a.var_names, dtype=object), dtype=h5py.string_dtype("ascii"))
    b = ad.AnnData(X=a.X, obs=a.obs[["cell_type", "barcode"]].copy(), var=pd.DataFrame(index=a.var_names))
    return b


def main():
    p = argparse.ArgumentParser()
    p.add_argument("outdir")
    here = os.path.dirname(os.path.abspath(__file__))
    p.add_argument("--source", default=os.path.join(here, "..", "..", "data", "pbmc3k_seurat_labels_clustifyr.h5ad"))
    args = p.parse_args()
    os.makedirs(args.outdir, exist_ok=True)
    out = lambda name: os.path.join(args.outdir, name)  # noqa: E731

    a = canonical(args.source)
    fixtures = {}

    def via_anndata(name, obj, matrix="X"):
        write_anndata(obj, out(name))
        back = ad.read_h5ad(out(name))
        fixtures[name] = {"matrix": matrix, "summary": summarize(back, matrix)}

    via_anndata("csr.h5ad", a)
    b = a.copy()
    b.X = sp.csc_matrix(a.X, dtype=np.float64)
    via_anndata("csc.h5ad", b)
    b = a.copy()
    b.X = a.X.toarray()
    via_anndata("dense.h5ad", b)
    b = a.copy()
    m = sp.csr_matrix(a.X, dtype=np.int64)
    m.indices = m.indices.astype(np.int64)
    m.indptr = m.indptr.astype(np.int64)
    b.X = m
    via_anndata("int64.h5ad", b)

    # X log-normalised, counts in a layer.
    b = a.copy()
    b.layers["counts"] = a.X.copy()
    sums = np.asarray(a.X.sum(axis=1)).ravel()
    b.X = sp.csr_matrix(sp.diags(1e4 / sums) @ a.X).log1p().astype(np.float32)
    via_anndata("layer.h5ad", b, "layers/counts")
    fixtures["layer.h5ad"]["x_summary"] = summarize(ad.read_h5ad(out("layer.h5ad")), "X")

    # Counts in raw; X is a normalised subset of the genes.
    b = a.copy()
    b.raw = a
    b = b[:, : a.n_vars // 3].copy()
    b.X = sp.csr_matrix(b.X * 0.5, dtype=np.float32)
    via_anndata("raw.h5ad", b, "raw")

    legacy = h5py_legacy07(a, out("legacy07.h5ad"))
    fixtures["legacy07.h5ad"] = {"matrix": "X", "summary": summarize(legacy, "X")}
    fixed = h5py_fixed_strings(a, out("fixed_strings.h5ad"))
    fixtures["fixed_strings.h5ad"] = {"matrix": "X", "summary": summarize(fixed, "X")}

    expected = {"canonical": summarize(a, "X", with_matrix=True), "fixtures": fixtures}
    with open(out("expected.json"), "w") as f:
        json.dump(expected, f)


if __name__ == "__main__":
    main()
