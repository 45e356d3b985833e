"""scdd's Python evaluator adapter (written into each job directory and run by the user's
interpreter): python scdd_runner.py JOB_DIR USER_FILE.py

USER_FILE.py defines fit(X, y, genes, seed) and predict(X); fit may also take config= (the
evaluator's JSON config as a dict). X: float32 cells x genes (log-normalised), y: int class ids,
genes: gene names. predict returns a class id per cell, or cells x classes probabilities.
Errors go to stderr (the last line is what scdd reports); the exit status says whether it worked."""
import importlib.util, inspect, json, os, sys


def main(job_dir, user_file):
    import numpy as np

    with open(os.path.join(job_dir, "job.json")) as f:
        job = json.load(f)
    g, n_train, n_test = len(job["genes"]), job["n_train"], job["n_test"]
    k = len(job["class_names"])
    X = np.fromfile(os.path.join(job_dir, "train.f32"), dtype="<f4").reshape(n_train, g)
    y = np.fromfile(os.path.join(job_dir, "labels.u32"), dtype="<u4").astype(np.int64)
    Xt = np.fromfile(os.path.join(job_dir, "test.f32"), dtype="<f4").reshape(n_test, g)
    spec = importlib.util.spec_from_file_location("scdd_user_evaluator", user_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name in ("fit", "predict"):
        if not callable(getattr(module, name, None)):
            raise SystemExit(f"{user_file}: defines no function {name}()")
    config = json.loads(job["config_json"] or "{}")
    kwargs = {"config": config} if "config" in inspect.signature(module.fit).parameters else {}
    if config and not kwargs:
        raise SystemExit(f"{user_file}: a config was given but fit() takes no config= argument")
    module.fit(X, y, list(job["genes"]), int(job["seed"]), **kwargs)
    out = np.asarray(module.predict(Xt))
    if out.ndim == 1:
        if out.shape[0] != n_test:
            raise SystemExit(f"predict returned {out.shape[0]} labels for {n_test} cells")
        labels = out.astype(np.int64)
        if labels.size and (labels.min() < 0 or labels.max() >= k):
            raise SystemExit(f"predict returned class id {int(labels.max() if labels.max() >= k else labels.min())}, out of range (0..{k})")
        probs = np.eye(k, dtype=np.float64)[labels]
    elif out.ndim == 2 and out.shape == (n_test, k):
        probs = out.astype(np.float64)
        if not np.all(np.isfinite(probs)):
            raise SystemExit("predict returned non-finite probabilities")
        labels = probs.argmax(1)
    else:
        raise SystemExit(f"predict returned shape {out.shape}; expected ({n_test},) labels or ({n_test}, {k}) probabilities")
    tmp = os.path.join(job_dir, "result.json.tmp")
    with open(tmp, "w") as f:
        json.dump({"labels": [int(v) for v in labels], "probs": [float(v) for v in probs.ravel()]}, f)
    os.replace(tmp, os.path.join(job_dir, "result.json"))


if __name__ == "__main__":
    try:
        main(sys.argv[1], sys.argv[2])
    except SystemExit as e:
        if e.code not in (None, 0):
            print(f"error: {e.code}", file=sys.stderr)
            sys.exit(1)
    except BaseException as e:  # the user's code: report its last words, one line
        print(f"error: {type(e).__name__}: {e}".replace("\n", " "), file=sys.stderr)
        sys.exit(1)
