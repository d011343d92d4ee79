"""Shortcut report (issue 9): how much a model leans on a planted shortcut, and what it costs.

On a shortcut catalog (``lrprec synth --spurious P``) every image carries a corner
watermark whose tag agrees with the label on a fraction P of training pairs and carries no
signal in validation and test. The report gives

* ``mark_share`` — the share of absolute LRP relevance (the pair's logit, both images,
  channels summed per pixel) that falls on the watermark, mean over the watermarked images
  of evenly spaced validation pairs, with a bootstrap 95% interval. A map that ignores the
  mark puts about its area fraction (``mark_area``) there; a model that decides by the
  watermark puts much more.
* test accuracy overall and split by whether the watermark happens to agree with the
  label (positive pair with equal tags, negative pair with different tags): a model that
  relies on the shortcut is right where it agrees and wrong where it does not.
"""
from __future__ import annotations

import json
import os

import numpy as np
import torch

from lrprec.data.catalog import CatalogError
from lrprec.errors import UsageError
from lrprec.evaluate.localization import resize_masks
from lrprec.evaluate.perturbation import bootstrap_ci, pixel_relevance
from lrprec.explain.composites import DEFAULT_COMPOSITE
from lrprec.explain.targets import explain_catalog_pairs
from lrprec.run import predict_logits


def shortcut_arrays(catalog) -> tuple[np.ndarray, np.ndarray]:
    """(tags (N,), watermark masks (N, H, W)) of a shortcut catalog; CatalogError for any other."""
    tags, masks = catalog.root / "shortcut_tags.npy", catalog.root / "shortcut_masks.npy"
    if not (tags.exists() and masks.exists()):
        raise CatalogError(f"{catalog.root} has no planted shortcut; make one with 'lrprec synth OUT --spurious 0.9'")
    return np.load(tags), np.load(masks, mmap_mode="r")


def mark_share(relevance: torch.Tensor, mark: torch.Tensor) -> np.ndarray:
    """(N,) Σ_mark |r_p| / Σ_p |r_p| per image (r_p: channel-summed relevance); NaN for an all-zero map."""
    r = pixel_relevance(relevance.detach()).abs().to(torch.float64)
    m = resize_masks(mark, r.shape[-2], r.shape[-1])
    total = r.flatten(1).sum(1)
    share = (r * m).flatten(1).sum(1) / total.clamp_min(1e-300)
    return torch.where(total > 0, share, torch.full_like(share, float("nan"))).numpy()


def shortcut_report(run_path: str | os.PathLike, pairs: int = 256, composite: str = DEFAULT_COMPOSITE, batch_size: int = 64) -> dict:
    """Measure a run's reliance on its catalog's watermark; stored as ``RUN/shortcut.json``."""
    from lrprec.run import Run, atomic_write_text

    if pairs <= 0:
        raise UsageError("--pairs must be positive")
    run = Run.load(run_path)
    if run.model.backbone.kind == "features":
        raise UsageError("the shortcut report explains images; this run reads precomputed features")
    cat = run.catalog
    tags, marks = shortcut_arrays(cat)
    sel = cat.pairs("validation").spread(pairs)
    relevance = explain_catalog_pairs(run.model, cat, sel, run.input_size, "logit", composite, batch_size)
    rows = np.concatenate([sel.a, sel.b])
    marked = tags[rows] == 1  # only these images carry the watermark
    mark_px = torch.from_numpy(np.asarray(marks[rows[marked]]))
    shares = mark_share(relevance[torch.from_numpy(marked)], mark_px)
    shares = shares[np.isfinite(shares)]
    lo, hi = bootstrap_ci(shares) if shares.size > 1 else (float("nan"), float("nan"))

    test = cat.pairs("test")
    logits = predict_logits(run.model, cat, test, input_size=run.input_size)
    correct = (logits > 0) == (test.label == 1)
    agrees = (tags[test.a] == tags[test.b]) == (test.label == 1)

    def acc(sel_: np.ndarray) -> float | None:
        return float(correct[sel_].mean()) if sel_.any() else None

    report = {
        "run": str(run.path), "composite": composite, "n_images": int(shares.size),
        "mark_share": float(shares.mean()) if shares.size else None, "mark_share_ci": [lo, hi],
        "mark_area": float(mark_px.bool().float().mean()) if marked.any() else None,
        "test_accuracy": float(correct.mean()), "test_accuracy_mark_agrees": acc(agrees), "test_accuracy_mark_disagrees": acc(~agrees),
        "test_pairs_mark_agrees": int(agrees.sum()), "test_pairs": int(len(test)),
        "guide": {k: run.config.get(k) for k in ("guide", "guide_weight", "guide_masks")},
    }
    atomic_write_text(run.path / "shortcut.json", json.dumps(report, indent=2))
    return report


def shortcut_text(r: dict) -> str:
    """The report as a few terminal lines."""
    g = r["guide"]
    how = "unguided" if not g.get("guide") else f"guided: {g['guide']}, λ = {g['guide_weight']}, masks {g['guide_masks']}"
    pct = lambda v: "n/a" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    lo, hi = r["mark_share_ci"]
    return "\n".join([
        f"shortcut report for {r['run']} ({how})",
        f"relevance on the watermark  {pct(r['mark_share'])}  [95% CI {pct(lo)}, {pct(hi)}] over {r['n_images']} watermarked validation images "
        f"(the mark covers {pct(r['mark_area'])} of an image)",
        f"test accuracy               {pct(r['test_accuracy'])}  (where the mark agrees with the label: {pct(r['test_accuracy_mark_agrees'])}, "
        f"{r['test_pairs_mark_agrees']} pairs; where it disagrees: {pct(r['test_accuracy_mark_disagrees'])})",
    ])
