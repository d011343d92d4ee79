"""Localization scores of explanations against ground-truth masks (SPEC §4).

Where the pixels that carry the decisive attributes are known (the synthetic catalog
stores them as ``masks.npy``), a heatmap can be scored against the truth:

* **relevance mass** — the share of the positive relevance that falls inside the mask.
  A map spread uniformly over the image scores the mask's area fraction, so that fraction
  is the chance level to beat.
* **pointing game** — whether the single most relevant pixel lies inside the mask.

Relevance is pooled over channels first (the pixel's relevance is the sum over its
channels), the same convention as the perturbation regions. All functions are batched:
(N, H, W) or (N, C, H, W) relevance with (N, H, W) masks gives (N,) scores. Images whose
score is undefined (no positive relevance, an empty mask) get NaN, so averages can skip
them with ``nanmean`` instead of counting them as failures.
"""
from __future__ import annotations

import numpy as np
import torch

from lrprec.errors import UsageError
from lrprec.evaluate.perturbation import pixel_relevance


def _relevance(relevance: torch.Tensor | np.ndarray) -> torch.Tensor:
    r = torch.as_tensor(np.asarray(relevance)) if not isinstance(relevance, torch.Tensor) else relevance.detach()
    if r.dim() == 2:
        r = r.unsqueeze(0)
    return pixel_relevance(r).to(torch.float64).cpu()


def _mask(mask: torch.Tensor | np.ndarray, shape: tuple[int, int, int]) -> torch.Tensor:
    m = torch.as_tensor(np.asarray(mask)) if not isinstance(mask, torch.Tensor) else mask.detach().cpu()
    if m.dim() == 2:
        m = m.unsqueeze(0)
    m = m.bool()
    if m.shape[0] != shape[0]:
        raise UsageError(f"{m.shape[0]} masks for {shape[0]} relevance maps")
    if tuple(m.shape[1:]) != tuple(shape[1:]):
        m = resize_masks(m, shape[1], shape[2])
    return m


def resize_masks(masks: torch.Tensor | np.ndarray, height: int, width: int) -> torch.Tensor:
    """(N, H', W') masks resized to (N, height, width) with nearest-neighbour sampling.

    Catalog masks live at the catalog's image size; a run may feed the model resized
    images, and the relevance then has the model's input size.
    """
    m = torch.as_tensor(np.asarray(masks)) if not isinstance(masks, torch.Tensor) else masks
    m = m.to(torch.float32)
    if m.dim() == 2:
        m = m.unsqueeze(0)
    if tuple(m.shape[1:]) == (height, width):
        return m > 0
    return torch.nn.functional.interpolate(m.unsqueeze(1), size=(height, width), mode="nearest").squeeze(1) > 0


def relevance_mass(relevance: torch.Tensor | np.ndarray, mask: torch.Tensor | np.ndarray) -> np.ndarray:
    """(N,) positive relevance inside the mask / total positive relevance (NaN when there is none)."""
    r = _relevance(relevance)
    m = _mask(mask, tuple(r.shape))
    pos = r.clamp(min=0)
    total = pos.sum((1, 2))
    inside = (pos * m).sum((1, 2))
    out = torch.where(total > 0, inside / torch.where(total > 0, total, torch.ones_like(total)), torch.full_like(total, float("nan")))
    return out.numpy()


def pointing_game(relevance: torch.Tensor | np.ndarray, mask: torch.Tensor | np.ndarray) -> np.ndarray:
    """(N,) 1.0 where the most relevant pixel lies inside the mask, else 0.0 (NaN for an empty mask).

    When several pixels share the maximum, the score is the fraction of them inside the
    mask — the expected hit of breaking the tie at random — so the scan order decides
    nothing and a constant map scores the mask's area fraction (chance), not 1 or 0.
    """
    r = _relevance(relevance)
    m = _mask(mask, tuple(r.shape))
    peak = r.flatten(1).amax(1)
    at_peak = (r == peak[:, None, None]).flatten(1)
    hit = (at_peak & m.flatten(1)).sum(1).to(torch.float64) / at_peak.sum(1).to(torch.float64)
    empty = ~m.flatten(1).any(1)
    return torch.where(empty, torch.full_like(hit, float("nan")), hit).numpy()


def mask_area_fraction(mask: torch.Tensor | np.ndarray) -> np.ndarray:
    """(N,) fraction of each image's pixels inside its mask: a uniform map's relevance mass."""
    m = torch.as_tensor(np.asarray(mask)) if not isinstance(mask, torch.Tensor) else mask.detach().cpu()
    if m.dim() == 2:
        m = m.unsqueeze(0)
    return (m > 0).flatten(1).to(torch.float64).mean(1).numpy()


def localization_scores(relevance: torch.Tensor | np.ndarray, mask: torch.Tensor | np.ndarray) -> dict[str, float]:
    """Means over the batch: ``relevance_mass``, ``pointing_game`` and ``mask_area_fraction``."""
    r = _relevance(relevance)
    m = _mask(mask, tuple(r.shape))

    def mean(a: np.ndarray) -> float:
        a = a[np.isfinite(a)]
        return float(a.mean()) if a.size else float("nan")

    return {
        "relevance_mass": mean(relevance_mass(r, m)),
        "pointing_game": mean(pointing_game(r, m)),
        "mask_area_fraction": mean(mask_area_fraction(m)),
    }
