"""CellTypist's recipe in scikit-learn, the reference for scdd's `celltypist` plugin: log-normalise
(1e4, log1p), every other cell for training and the rest for test, drop genes not expressed in
the training cells, StandardScaler fit on them, clip above 10, one-vs-rest
LogisticRegression(C=1) (CellTypist's multi_class="ovr"), predict the largest decision value.
Prints JSON: test predictions (class indices in sorted-name order) and accuracy."""
import json, sys, warnings
import numpy as np
import halves
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.preprocessing import StandardScaler

warnings.filterwarnings("ignore")
x, y, classes, tr, te = halves.load(sys.argv[1], sys.argv[2])
keep = x[tr].sum(0) != 0
scaler = StandardScaler().fit(x[tr][:, keep])
z = lambda m: np.minimum(scaler.transform(m[:, keep]), 10)
clf = OneVsRestClassifier(LogisticRegression(C=1.0, max_iter=1000, tol=1e-6)).fit(z(x[tr]), y[tr])
pred = clf.decision_function(z(x[te])).argmax(1)
print(json.dumps({"classes": classes, "pred": pred.tolist(), "accuracy": float((pred == y[te]).mean())}))
