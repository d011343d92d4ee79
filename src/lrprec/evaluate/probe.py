"""Linear probe (issue 26): can a label (the artifact's tag) be read from the features the head reads?

Cross-validated logistic regression (scikit-learn, standardized features, stratified folds with a
fixed seed). Chance is the majority class's share: a probe near chance means the label is gone
from what the model uses, not only from its output.
"""
from __future__ import annotations

import numpy as np

from lrprec.errors import UsageError


def linear_probe(features: np.ndarray, labels: np.ndarray, folds: int = 5, seed: int = 0, max_samples: int | None = 2000) -> dict:
    """{"accuracy", "accuracy_sd" (over folds), "chance", "folds", "samples"} of a logistic-regression probe."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(features, np.float64).reshape(len(features), -1)
    y = np.asarray(labels).ravel()
    if len(x) != len(y):
        raise UsageError(f"{len(x)} feature rows but {len(y)} labels")
    if max_samples is not None and len(x) > max_samples:
        keep = np.random.default_rng(seed).choice(len(x), max_samples, replace=False)
        x, y = x[keep], y[keep]
    classes, counts = np.unique(y, return_counts=True)
    if classes.size < 2 or counts.min() < folds:
        raise UsageError(f"the probe needs two classes with at least {folds} samples each, got counts {counts.tolist()}")
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    scores = cross_val_score(clf, x, y, cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
    return {"accuracy": float(scores.mean()), "accuracy_sd": float(scores.std()), "chance": float(counts.max() / counts.sum()),
            "folds": int(folds), "samples": int(len(y))}


def decision_features(model, feats):
    """What the pair head's distance reads of items with backbone features ``feats`` (n, F): the relation embeddings of
    both sides weighted by the global θ (d = Σ_k θ_k² (a_k − b_k)², so |θ_k| · a_k is what enters it), every relation,
    flattened to (n, 2·R·K). The backbone features also feed the appearance decoder (``--recon-weight``), which must
    read the artifact to redraw the image; these are the part only the recommendation's decisions read."""
    import torch

    with torch.inference_mode():
        th = model.theta_global.detach().abs()
        a = model.project_all(feats) * th
        b = model.project_partner_all(feats) * th
        return torch.cat([a.flatten(1), b.flatten(1)], 1)


def variance_share(features: np.ndarray, labels: np.ndarray) -> float:
    """The share of the features' total variance that the binary ``labels`` explain: p(1 − p)·‖μ₁ − μ₀‖² / Σ Var (the
    between-group part of the variance, 0 to 1). The probe says *whether* the label can be read (a tiny consistent
    offset reads at 100%); this says *how much* of what the features carry it is."""
    x = np.asarray(features, np.float64).reshape(len(features), -1)
    t = np.asarray(labels).ravel()
    if len(x) != len(t):
        raise UsageError(f"{len(x)} feature rows but {len(t)} labels")
    if not (t == 1).any() or not (t == 0).any():
        raise UsageError("the variance share needs both labels (0 and 1)")
    p = float((t == 1).mean())
    d = x[t == 1].mean(0) - x[t == 0].mean(0)
    total = float(x.var(0).sum())
    return float(p * (1 - p) * (d ** 2).sum() / total) if total > 0 else 0.0
