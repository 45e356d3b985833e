"""A Python evaluator for scdd: scdd evaluate ... --evaluators lr,plugins/examples/sklearn_evaluator.py

scdd calls fit(X, y, genes, seed[, config]) once and then predict(X) in a fresh process per
repeat; module globals carry the model between the two. X is float32 cells x genes
(log-normalised), y the class ids, genes the gene names. predict returns a class id per cell or
cells x classes probabilities. Config (--plugin-config sklearn_evaluator='{"n_estimators": 50}')
arrives as a dict."""
from sklearn.ensemble import RandomForestClassifier

model = None


def fit(X, y, genes, seed, config=None):
    global model
    config = dict(config or {})
    model = RandomForestClassifier(n_estimators=int(config.pop("n_estimators", 100)), random_state=seed, n_jobs=1)
    if config:
        raise ValueError(f"unknown config keys: {sorted(config)}")
    model.fit(X, y)


def predict(X):
    # Probabilities over every class of the training set, in class-id order.
    import numpy as np
    p = model.predict_proba(X)
    full = np.zeros((X.shape[0], int(model.classes_.max()) + 1))
    full[:, model.classes_] = p
    return full
