"""scikit-learn's LogisticRegression() on log-normalised cells: the reference for scdd's `lr`
evaluator. Reads an .h5ad of raw counts, log-normalises (1e4, log1p), takes every other cell
as training and the rest as test, fits LogisticRegression(C=1, max_iter=2000) and prints JSON:
test predictions (class indices in sorted-name order), accuracy, the objective at the optimum."""
import json, sys, warnings
import numpy as np
import halves
from sklearn.linear_model import LogisticRegression

warnings.filterwarnings("ignore")
x, y, classes, tr, te = halves.load(sys.argv[1], sys.argv[2])
m = LogisticRegression(C=1.0, max_iter=2000, tol=1e-6).fit(x[tr], y[tr])
pred = m.predict(x[te])
print(json.dumps({"classes": classes, "pred": pred.tolist(), "accuracy": float((pred == y[te]).mean())}))
