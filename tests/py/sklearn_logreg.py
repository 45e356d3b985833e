"""scikit-learn's LogisticRegression() on log-normalised cells: the reference for scdd's `lr`
evaluator. Reads an .h5ad of raw counts, log-normalises (1e4, log1p), takes every other cell
as training and the rest as test, fits LogisticRegression(C=1, max_iter=2000) and prints JSON:
test predictions (class indices in sorted-name order), accuracy, the objective at the optimum."""
import json, sys, warnings
import numpy as np, anndata as ad
from sklearn.linear_model import LogisticRegression

warnings.filterwarnings("ignore")
path, label = sys.argv[1], sys.argv[2]
a = ad.read_h5ad(path)
x = a.X.toarray() if hasattr(a.X, "toarray") else np.asarray(a.X)
x = np.log1p(x / x.sum(1, keepdims=True) * 1e4).astype(np.float64)
names = np.asarray(a.obs[label].astype(str))
classes = sorted(set(names))
y = np.array([classes.index(n) for n in names])
tr, te = np.arange(0, len(y), 2), np.arange(1, len(y), 2)
m = LogisticRegression(C=1.0, max_iter=2000, tol=1e-6).fit(x[tr], y[tr])
pred = m.predict(x[te])
print(json.dumps({"classes": classes, "pred": pred.tolist(), "accuracy": float((pred == y[te]).mean())}))
