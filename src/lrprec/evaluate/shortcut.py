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
* counterfactual behaviour (issue 14): the same test pairs re-scored with the mark stamped
  on both images, removed from both, and on image a only. The shortcut says "related" for
  both/neither and "unrelated" for one, so the *shortcut sensitivity* ΔP = mean over pairs
  of (P_both + P_neither) / 2 − P_one is ≈ 0 for a model that ignores the mark and up to 1
  for one that decides by it — a measure no explanation can hide.
* the mark's relevance share under a second, independent explainer (integrated gradients),
  and an alarm when behaviour says "shortcut" while the explanation says "no mark" (a model
  that learned to hide its shortcut from the explainer that guided it).
"""
from __future__ import annotations


import numpy as np
import torch

from lrprec.data.catalog import CatalogError
from lrprec.data.watermark import Artifact, counterfactual_images
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


# Behaviour says "shortcut" above these; the explanation says "no mark" below ALARM_SHARE_FACTOR × the mark's area.
ALARM_SENSITIVITY = 0.10
ALARM_ACCURACY_GAP = 0.20
ALARM_SHARE_FACTOR = 2.0
VARIANTS = ("both", "neither", "one")


def counterfactual_probabilities(score, images_a: np.ndarray, images_b: np.ndarray, fill: np.ndarray | Artifact,
                                 rows: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """P per pair under each variant: ``both`` marked, ``neither``, ``one`` (a marked, b not).

    ``score(images_a, images_b) -> P`` takes uint8 image batches (the caller preprocesses and
    runs the model), so the measure works for any scorer. ``fill``: an unmarked image (the
    watermark) or the catalog's :class:`~lrprec.data.watermark.Artifact` (a mark or a tint; a
    tint needs the images' catalog ``rows`` (a, b) to know which already carry it)."""
    if isinstance(fill, Artifact):
        ra, rb = rows if rows is not None else (None, None)
        on_a, on_b = fill.stamp(images_a, ra), fill.stamp(images_b, rb)
        off_a, off_b = fill.remove(images_a, ra), fill.remove(images_b, rb)
    else:
        on_a, on_b = counterfactual_images(images_a, True), counterfactual_images(images_b, True)
        off_a, off_b = counterfactual_images(images_a, False, fill), counterfactual_images(images_b, False, fill)
    return {"both": np.asarray(score(on_a, on_b), np.float64), "neither": np.asarray(score(off_a, off_b), np.float64),
            "one": np.asarray(score(on_a, off_b), np.float64)}


def shortcut_sensitivity(p: dict[str, np.ndarray]) -> np.ndarray:
    """Per pair (P_both + P_neither) / 2 − P_one: how much "both or neither marked" raises P."""
    return (p["both"] + p["neither"]) / 2 - p["one"]


def alarm(sensitivity: float | None, acc_agree: float | None, acc_disagree: float | None, share: float | None,
          area: float | None) -> str | None:
    """A warning when behaviour shows the shortcut but the explanation puts (almost) nothing on the mark."""
    gap = None if acc_agree is None or acc_disagree is None else acc_agree - acc_disagree
    behaves = (sensitivity is not None and sensitivity > ALARM_SENSITIVITY) or (gap is not None and gap > ALARM_ACCURACY_GAP)
    hidden = share is not None and area is not None and share < ALARM_SHARE_FACTOR * area
    if behaves and hidden:
        return (f"ALARM: the model behaves as if it used the watermark (sensitivity {sensitivity:+.2f}, accuracy gap "
                f"{'n/a' if gap is None else f'{100 * gap:.0f} points'}) while the explanation puts {100 * share:.1f}% of its "
                f"relevance on it (the mark covers {100 * area:.1f}%): the shortcut is hidden from the explainer, not gone")
    return None


def shortcut_text(r: dict) -> str:
    """The report as a few terminal lines."""
    g = r["guide"]
    how = "unguided" if not g.get("guide") else f"guided: {g['guide']}, λ = {g['guide_weight']}, masks {g['guide_masks']}"
    pct = lambda v: "n/a" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    lo, hi = r["mark_share_ci"]
    split = r.get("split", "test")
    lines = [f"shortcut report for {r['run']} ({how})"]
    if r.get("kind", "mark") == "mark":
        lines.append(f"relevance on the watermark  {pct(r['mark_share'])}  [95% CI {pct(lo)}, {pct(hi)}] over {r['n_images']} watermarked "
                     f"validation images (the mark covers {pct(r['mark_area'])} of an image)")
    else:
        lines.append(f"artifact                    a global {r['kind']} (every pixel): no relevance share; the behaviour below applies/removes it")
    lines += [
        f"{split + ' accuracy':<28}{pct(r['test_accuracy'])}  (where the mark agrees with the label: {pct(r['test_accuracy_mark_agrees'])}, "
        f"{r['test_pairs_mark_agrees']} pairs; where it disagrees: {pct(r['test_accuracy_mark_disagrees'])})",
    ]
    cf = r.get("counterfactual")
    if cf:
        lo, hi = cf["sensitivity_ci"]
        lines += [f"shortcut sensitivity        {cf['sensitivity']:+.3f}  [95% CI {lo:+.3f}, {hi:+.3f}] over {cf['pairs']} {split} pairs "
                  f"(mean P: both marked {cf['mean_p']['both']:.2f}, neither {cf['mean_p']['neither']:.2f}, one {cf['mean_p']['one']:.2f}; "
                  "0 = the mark does not matter)"]
    ind = r.get("independent")
    if ind:
        lines.append(f"relevance on the watermark  {pct(ind['mark_share'])} under {ind['method']} (an explainer no training penalized; "
                     f"{ind['n_images']} images)")
    pr = r.get("probe")
    if pr:
        lines.append(f"linear probe of the tag     {pct(pr['accuracy'])} ± {pct(pr['accuracy_sd'])} ({pr['folds']}-fold logistic regression on the "
                     f"features the head reads, {pr['samples']} items; chance {pct(pr['chance'])})")
    if r.get("alarm"):
        lines.append(r["alarm"])
    return "\n".join(lines)
