"""Checks what the browser session (page.mjs) produced against the native CLI.

python check.py DIR: the .h5ad downloaded from the page opens in anndata and equals `scdd
decode`'s cells (values ≤ 1e-4, names, labels); the CSV holds the same cells; the page's
logistic regression (WGSL, and the core's solver in wasm) is within 2 accuracy points of
scikit-learn's on the same objective, cells and test split. Prints one line per check; exits 1 on any
failure.
"""
import json
import sys
from pathlib import Path

import anndata as ad
import numpy as np

d = Path(sys.argv[1])
failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


res = json.loads((d / "results.json").read_text())
native = ad.read_h5ad(d / "native.h5ad")
browser = ad.read_h5ad(d / "browser.h5ad")
nx = native.X.toarray() if hasattr(native.X, "toarray") else np.asarray(native.X)
bx = np.asarray(browser.X)
check(bx.shape == nx.shape, f"downloaded .h5ad has {bx.shape[0]} × {bx.shape[1]} cells × genes (native {nx.shape})")
if bx.shape == nx.shape:
    diff = float(np.abs(bx - nx).max())
    check(diff <= 1e-4, f"downloaded cells equal scdd decode's: largest difference {diff:.2e} (≤ 1e-4)")
check(list(browser.var_names) == list(native.var_names), "gene names match")
check(list(browser.obs_names) == list(native.obs_names), "cell names match")
label = native.obs.columns[0]
check(label in browser.obs and list(browser.obs[label].astype(str)) == list(native.obs[label].astype(str)), f"labels ({label}) match")
check(browser.uns.get("scdd_space") == native.uns.get("scdd_space"), f"uns/scdd_space marks the values ({browser.uns.get('scdd_space')})")

csv = np.genfromtxt(d / "browser.csv", delimiter=",", skip_header=1, dtype=None, encoding="utf-8")
values = np.array([list(r)[2:] for r in csv], dtype=np.float64)
check(values.shape == nx.shape and float(np.abs(values - nx).max()) <= 1e-4 * max(1.0, float(np.abs(nx).max())), "CSV holds the same cells (6 significant digits)")

ev = json.loads((d / "native-eval.json").read_text())
celltypist = next(r["accuracy_mean"] for r in ev["results"] if r["evaluator"] == "celltypist")

# The reference for the page's logistic regression: the same objective (multinomial, C = 1) on
# the same cells, prepared the same way (z-scaling fit on the synthetic cells, population
# standard deviation, constant genes unscaled, clip ±10), solved by scikit-learn.
from sklearn.linear_model import LogisticRegression

test = ad.read_h5ad(d / "split" / "test.h5ad")
tx = test[:, list(native.var_names)].X
tx = tx.toarray() if hasattr(tx, "toarray") else np.asarray(tx)
tx = np.log1p(tx / tx.sum(axis=1, keepdims=True) * 1e4)
mean, sd = nx.mean(axis=0), nx.std(axis=0)
sd[sd == 0] = 1
scale = lambda x: np.clip((x - mean) / sd, -10, 10)
ref = LogisticRegression(C=1.0, max_iter=2000).fit(scale(nx), native.obs[label].astype(str))
acc_ref = float((ref.predict(scale(tx)) == test.obs[label].astype(str).values).mean())
for key in ["logistic_webgpu", "logistic_cpu"]:
    acc = res[key]["accuracy"]
    check(abs(acc - acc_ref) <= 0.02, f"page's {key} {100 * acc:.2f} % vs scikit-learn's {100 * acc_ref:.2f} % on the same cells (within 2 points)")
print(f"page: decoded {res['decoded']['n_cells']} cells in {res['decoded']['ms']} ms on {res['bundle']['backend']}; "
      + "; ".join(f"{k} {100 * res[k]['accuracy']:.2f} % in {res[k]['ms'] / 1000:.1f} s ({res[k]['backend']})" for k in ["logistic_webgpu", "logistic_cpu", "mlp_auto"])
      + f"; native celltypist plugin (one-vs-rest) {100 * celltypist:.2f} %")
sys.exit(1 if failures else 0)
