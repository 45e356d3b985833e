"""The real CellTypist (1.7.1) on the matrices `scdd bench evaluate` wrote:
python celltypist_reference.py DIR [RUNS]  (DIR: meta.json, train.f32, test.f32; writes
DIR/out.json). Training is timed alone, the fastest of RUNS (default 1) calls of
celltypist.train with its defaults (L-BFGS one-vs-rest logistic regression, C = 1, scaler +
clip), check_expression off since the cells are given already log-normalised; prediction
through celltypist.annotate ("best match")."""
import json, os, sys, time
import numpy as np, pandas as pd, anndata as ad
import celltypist

d = sys.argv[1]
meta = json.load(open(os.path.join(d, "meta.json")))
g = len(meta["genes"])
X = np.fromfile(os.path.join(d, "train.f32"), dtype="<f4").reshape(meta["n_train"], g)
Xt = np.fromfile(os.path.join(d, "test.f32"), dtype="<f4").reshape(meta["n_test"], g)
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 1
train_s = float("inf")
for _ in range(max(runs, 1)):
    t = time.perf_counter()
    model = celltypist.train(X, labels=meta["train_labels"], genes=meta["genes"], check_expression=False)
    train_s = min(train_s, time.perf_counter() - t)
test = ad.AnnData(Xt, var=pd.DataFrame(index=meta["genes"]))
pred = celltypist.annotate(test, model=model).predicted_labels["predicted_labels"].astype(str).tolist()
json.dump({"predicted": pred, "train_seconds": train_s}, open(os.path.join(d, "out.json"), "w"))
