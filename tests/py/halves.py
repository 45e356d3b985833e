"""What the scikit-learn reference scripts share: an .h5ad of raw counts log-normalised (1e4,
log1p), class ids in sorted-name order, every other cell for training and the rest for test."""
import numpy as np, anndata as ad


def load(path, label):
    a = ad.read_h5ad(path)
    x = a.X.toarray() if hasattr(a.X, "toarray") else np.asarray(a.X)
    x = np.log1p(x / x.sum(1, keepdims=True) * 1e4).astype(np.float64)
    names = np.asarray(a.obs[label].astype(str))
    classes = sorted(set(names))
    y = np.array([classes.index(n) for n in names])
    return x, y, classes, np.arange(0, len(y), 2), np.arange(1, len(y), 2)
