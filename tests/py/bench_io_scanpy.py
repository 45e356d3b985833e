"""The anndata + scanpy side of `scdd bench io`.

Usage: bench_io_scanpy.py IN.h5ad OUT.json --min-counts N --min-cells N --target-sum T
                          [--spawned-at EPOCH_SECONDS] [--sample-rows S]

Times read_h5ad + filter_cells + filter_genes + normalize_total + log1p on IN.h5ad and writes
OUT.json with the timings, peak RSS (resource.getrusage) and what scdd compares the result
with: shape, non-zeros per row, row sums (float64) of every row, the full contents of S evenly
spaced rows (row i * n_obs // S), and SHA-256 of the kept cell and gene names (each name
followed by a newline). Keys match scdd's `bench_io::SideResult`.
"""
import time

STARTED = time.time()
T_IMPORT0 = time.perf_counter()

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import warnings  # noqa: E402

warnings.filterwarnings("ignore")
import anndata as ad  # noqa: E402
import numpy as np  # noqa: E402
import scanpy as sc  # noqa: E402
import scipy.sparse as sp  # noqa: E402

IMPORT_S = time.perf_counter() - T_IMPORT0


def vm(key):
    """A /proc/self/status entry (VmRSS, VmHWM) in bytes, 0 where unavailable."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def names_sha256(names):
    h = hashlib.sha256()
    for n in names:
        h.update(str(n).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("input")
    p.add_argument("out")
    p.add_argument("--min-counts", type=float, required=True)
    p.add_argument("--min-cells", type=int, required=True)
    p.add_argument("--target-sum", type=float, required=True)
    p.add_argument("--spawned-at", type=float, default=None)
    p.add_argument("--sample-rows", type=int, default=200)
    args = p.parse_args()

    baseline = vm("VmRSS")
    t0 = time.perf_counter()
    a = ad.read_h5ad(args.input)
    t1 = time.perf_counter()
    x = a.X
    csr_bytes = int(x.data.nbytes + x.indices.nbytes + x.indptr.nbytes) if sp.issparse(x) else int(x.nbytes)
    sc.pp.filter_cells(a, min_counts=args.min_counts)
    sc.pp.filter_genes(a, min_cells=args.min_cells)
    t2 = time.perf_counter()
    sc.pp.normalize_total(a, target_sum=args.target_sum)
    t3 = time.perf_counter()
    sc.pp.log1p(a)
    t4 = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux

    x = sp.csr_matrix(a.X)
    n_obs, n_vars = x.shape
    s = min(args.sample_rows, n_obs)
    rows = [i * n_obs // s for i in range(s)] if s > 0 else []
    indptr = x.indptr
    out = {
        "tool": f"anndata {ad.__version__} + scanpy {sc.__version__}",
        "startup_s": (STARTED - args.spawned_at) + IMPORT_S if args.spawned_at is not None else IMPORT_S,
        "read_s": t1 - t0,
        "qc_s": t2 - t1,
        "normalize_s": t3 - t2,
        "log1p_s": t4 - t3,
        "total_s": t4 - t0,
        "peak_rss_bytes": int(peak),
        "baseline_rss_bytes": int(baseline),
        "csr_bytes": csr_bytes,
        "n_obs": int(n_obs),
        "n_vars": int(n_vars),
        "nnz": int(x.nnz),
        "cells_sha256": names_sha256(a.obs_names),
        "genes_sha256": names_sha256(a.var_names),
        "row_nnz": np.diff(indptr).astype(np.int64).tolist(),
        "row_sums": np.asarray(x.sum(axis=1, dtype=np.float64)).ravel().tolist(),
        "sample_rows": rows,
        "sample_indices": [x.indices[indptr[r] : indptr[r + 1]].astype(np.int64).tolist() for r in rows],
        "sample_data": [x.data[indptr[r] : indptr[r + 1]].astype(np.float64).tolist() for r in rows],
    }
    with open(args.out, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
