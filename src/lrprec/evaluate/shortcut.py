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


import numpy as np
import torch

from lrprec.data.catalog import CatalogError
from lrprec.evaluate.localization import resize_masks
from lrprec.evaluate.perturbation import pixel_relevance


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
