"""Batched region perturbation ([S17], SPEC §4): the curves behind AOPC.

Model-agnostic: the model is reached only through ``score_fn(x_perturbed, rows)``, which
scores a batch of perturbed images and knows, through ``rows`` (the index of each image's
pair in the caller's batch), whatever else the model needs — for a pair model the other
image, the relation and the user. That keeps this module free of pair-model details and
lets the same code serve a plain classifier, a pair model or a hand-made test model.

Scheme. The image is cut into non-overlapping S×S squares in row-major order (squares at
the right/bottom border are smaller when S does not divide the size, as in quantus, which
pads). A region's relevance is the sum of the pixel relevance (summed over channels)
inside it. Regions are visited most relevant first (MoRF), least relevant first (LRF), or
in a seeded random permutation per image. Step k replaces the first k visited regions
(cumulatively: a replaced region keeps its replacement values) by uniform random values in
the input's valid range — drawn once per image, so every order and every explanation
method of the same image sees the same noise, which makes them directly comparable — or by
a constant, or by any imputer of :mod:`lrprec.evaluate.imputers` (which sees the mask of the
replaced pixels, as ROAD's linear imputation needs). A ``schedule`` replaces several regions
per step and an explicit ``visit`` order replaces MoRF/LRF/random (symmetric relevance gain,
:mod:`lrprec.evaluate.srg`, walks one ordering from both ends over the whole range).

Speed. Nothing loops over images in Python: every pixel gets the *rank* of its region in
the visiting order, and the perturbed copy for step k is ``where(rank < k, fill, x)``. All
(image, step) combinations are enumerated, built a batch at a time and sent through
``score_fn`` in batches of ``batch_size``.
"""
from __future__ import annotations

import math
from typing import Callable, Literal, Sequence

import numpy as np
import torch

from lrprec.errors import UsageError

ORDERS: tuple[str, ...] = ("morf", "lrf", "random")
Order = Literal["morf", "lrf", "random"]
ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``score_fn(x_batch (B, C, H, W), rows (B,) int64) -> scores (B, ...)``."""


# ---- regions ------------------------------------------------------------------------------
def region_grid(height: int, width: int, region: int) -> tuple[int, int]:
    """Regions per column and per row: ``ceil(H / S), ceil(W / S)``."""
    if region <= 0:
        raise UsageError(f"the region size must be a positive number of pixels, got {region}")
    return math.ceil(height / region), math.ceil(width / region)


def n_regions(height: int, width: int, region: int) -> int:
    """How many S×S regions an H×W image has (border regions may be smaller)."""
    gh, gw = region_grid(height, width, region)
    return gh * gw


def region_ids(height: int, width: int, region: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(H, W) int64 map: the row-major index of the region each pixel belongs to."""
    _, gw = region_grid(height, width, region)
    rows = torch.arange(height, device=device) // region
    cols = torch.arange(width, device=device) // region
    return rows[:, None] * gw + cols[None, :]


def pixel_relevance(relevance: torch.Tensor) -> torch.Tensor:
    """(N, H, W) relevance per pixel: (N, C, H, W) maps are summed over channels."""
    if relevance.dim() == 4:
        return relevance.sum(1)
    if relevance.dim() == 3:
        return relevance
    raise UsageError(f"relevance must be (N, H, W) or (N, C, H, W), got shape {tuple(relevance.shape)}")


def region_relevance(relevance: torch.Tensor, region: int) -> torch.Tensor:
    """(N, n_regions) sum of pixel relevance (over channels too) inside each S×S region."""
    r = pixel_relevance(relevance).to(torch.float64)
    n, h, w = r.shape
    gh, gw = region_grid(h, w, region)
    r = torch.nn.functional.pad(r, (0, gw * region - w, 0, gh * region - h))
    return r.view(n, gh, region, gw, region).sum((2, 4)).reshape(n, gh * gw)


def region_order(region_scores: torch.Tensor, order: str, seed: int = 0) -> torch.Tensor:
    """(N, n_regions) region indices in visiting order.

    MoRF sorts descending, LRF ascending; ties keep the row-major region order (stable
    sort), so the result is deterministic. ``random`` is a permutation per image drawn
    from a generator seeded with ``seed`` (independent of the relevance).
    """
    if order == "morf":
        return torch.sort(region_scores, dim=1, descending=True, stable=True).indices
    if order == "lrf":
        return torch.sort(region_scores, dim=1, descending=False, stable=True).indices
    if order == "random":
        g = torch.Generator().manual_seed(int(seed) + 7919)  # own stream: independent of the fill noise
        keys = torch.rand(region_scores.shape, generator=g, dtype=torch.float64)
        return keys.argsort(dim=1).to(region_scores.device)
    raise UsageError(f"unknown order {order!r}; choose one of {', '.join(ORDERS)}")


def pixel_ranks(order: torch.Tensor, height: int, width: int, region: int) -> torch.Tensor:
    """(N, H, W) int64: at which step each pixel's region is replaced (0 = first step)."""
    n, r = order.shape
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(r, device=order.device).expand(n, r))
    return rank[:, region_ids(height, width, region, order.device)]


# ---- fill values --------------------------------------------------------------------------
def uniform_fill(x: torch.Tensor, bounds: tuple[torch.Tensor | float, torch.Tensor | float] | None = None, seed: int = 0) -> torch.Tensor:
    """Uniform noise shaped like ``x``, per channel within ``bounds = (lo, hi)``.

    ``lo``/``hi`` are scalars or broadcastable tensors such as ``backbone.input_bounds()``
    ((1, C, 1, 1) each: the normalized values of black and white). Without bounds the
    per-channel minimum and maximum of ``x`` over the whole batch are used. Drawn on the CPU
    from a generator seeded with ``seed``, so the noise is the same on every device.
    """
    if bounds is None:
        dims = [d for d in range(x.dim()) if d != 1]
        lo = x.amin(dim=dims, keepdim=True)
        hi = x.amax(dim=dims, keepdim=True)
    else:
        lo = torch.as_tensor(bounds[0], dtype=x.dtype)
        hi = torch.as_tensor(bounds[1], dtype=x.dtype)
    g = torch.Generator().manual_seed(int(seed))
    u = torch.rand(x.shape, generator=g, dtype=x.dtype).to(x.device)
    return lo.to(x.device) + (hi.to(x.device) - lo.to(x.device)) * u


def make_fill(x: torch.Tensor, fill: str | float, bounds: tuple[torch.Tensor | float, torch.Tensor | float] | None, seed: int) -> torch.Tensor:
    """The replacement image for every input: uniform noise (``"uniform"``) or a constant."""
    if isinstance(fill, str):
        if fill != "uniform":
            raise UsageError(f"unknown fill {fill!r}; use 'uniform' or a number")
        return uniform_fill(x, bounds, seed)
    return torch.full_like(x, float(fill))


# ---- curves -------------------------------------------------------------------------------
def _check_inputs(x: torch.Tensor, relevance: torch.Tensor | None, steps: int, region: int) -> int:
    if x.dim() != 4:
        raise UsageError(f"x must be a batch of images (N, C, H, W), got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise UsageError("no pairs to perturb (the batch is empty)")
    h, w = x.shape[-2:]
    total = n_regions(h, w, region)
    if steps < 0:
        raise UsageError(f"steps must be >= 0, got {steps}")
    if steps > total:
        raise UsageError(f"{steps} steps exceed the {total} regions of {region}x{region} pixels in a {h}x{w} image; use at most {total} steps or smaller regions")
    if relevance is not None:
        r = pixel_relevance(relevance)
        if tuple(r.shape) != (x.shape[0], h, w):
            raise UsageError(f"relevance of shape {tuple(relevance.shape)} does not match inputs of shape {tuple(x.shape)}")
    return total


def perturbation_curves(
    score_fn: ScoreFn,
    x: torch.Tensor,
    relevance: torch.Tensor | None,
    steps: int,
    region: int,
    order: str = "morf",
    fill: str | float = "uniform",
    bounds: tuple[torch.Tensor | float, torch.Tensor | float] | None = None,
    seed: int = 0,
    batch_size: int = 256,
    fill_values: torch.Tensor | None = None,
    imputer: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    visit: torch.Tensor | None = None,
    schedule: Sequence[int] | None = None,
) -> torch.Tensor:
    """Scores of each image after 0..``steps`` region replacements: (N, steps + 1, ...).

    ``x`` (N, C, H, W) are the images to perturb and ``relevance`` their explanations
    ((N, H, W) or (N, C, H, W); unused and may be None for ``order="random"``).
    ``score_fn(x_batch, rows)`` returns scores (B, ...) for a batch of perturbed images,
    ``rows`` being each image's index into ``x``; whatever shape it returns per image
    follows the step axis in the result. Column 0 is the unperturbed score. ``fill`` is
    ``"uniform"`` (noise in ``bounds``, see :func:`uniform_fill`, seeded by ``seed``) or a
    constant; ``fill_values`` (shaped like ``x``) overrides both. The random order is
    seeded by ``seed`` too. ``imputer(x, replaced, rows)`` (see
    :mod:`lrprec.evaluate.imputers`) overrides every fill: it is given the images and the
    (B, 1, H, W) mask of replaced pixels and returns the filled images. ``visit`` (N,
    n_regions) overrides ``order`` with an explicit visiting order of the regions (e.g. a
    reversed MoRF order for symmetric relevance gain). ``schedule`` (length ``steps + 1``,
    non-decreasing region counts starting at 0) says how many regions are replaced at each
    column instead of 0, 1, ..., steps. Inputs are never modified. Raises ValueError for an
    empty batch or more steps than regions.
    """
    total_regions = n_regions(x.shape[-2], x.shape[-1], region) if x.dim() == 4 else 0
    if schedule is not None:
        counts = torch.as_tensor(list(schedule), dtype=torch.int64)
        if counts.numel() == 0 or int(counts[0]) != 0 or bool((counts[1:] < counts[:-1]).any()) or int(counts[-1]) > total_regions:
            raise UsageError(f"a schedule must start at 0, never decrease and end at most at the {total_regions} regions")
        steps = counts.numel() - 1
        _check_inputs(x, relevance, 0, region)
    else:
        _check_inputs(x, relevance, steps, region)
        counts = torch.arange(steps + 1)
    if order not in ORDERS:
        raise UsageError(f"unknown order {order!r}; choose one of {', '.join(ORDERS)}")
    if batch_size <= 0:
        raise UsageError(f"batch_size must be positive, got {batch_size}")
    n, _, h, w = x.shape
    if visit is not None:
        if tuple(visit.shape) != (n, total_regions):
            raise UsageError(f"visit must be (pairs, regions) = ({n}, {total_regions}), got {tuple(visit.shape)}")
        ranks = pixel_ranks(visit.to(x.device), h, w, region)
    else:
        if relevance is None:
            if order != "random":
                raise UsageError(f"order {order!r} needs a relevance map")
            scores = torch.zeros(n, total_regions, dtype=torch.float64, device=x.device)
        else:
            scores = region_relevance(relevance.detach().to(x.device), region)
        ranks = pixel_ranks(region_order(scores, order, seed), h, w, region)  # (N, H, W)
    if imputer is None:
        if fill_values is None:
            fill_values = make_fill(x, fill, bounds, seed)
        elif fill_values.shape != x.shape:
            raise UsageError(f"fill_values of shape {tuple(fill_values.shape)} do not match inputs of shape {tuple(x.shape)}")
        fv = fill_values.to(device=x.device, dtype=x.dtype)

        def imputer(xb: torch.Tensor, replaced: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            return torch.where(replaced, fv[rows], xb)
    xd = x.detach()
    counts = counts.to(x.device)

    total = n * (steps + 1)
    out: torch.Tensor | None = None
    with torch.no_grad():
        for start in range(0, total, batch_size):
            flat = torch.arange(start, min(start + batch_size, total), device=x.device)
            rows, k = flat // (steps + 1), counts[flat % (steps + 1)]
            replaced = (ranks[rows] < k[:, None, None]).unsqueeze(1)  # (B, 1, H, W)
            xb = imputer(xd[rows], replaced, rows)
            s = score_fn(xb, rows)
            if s.shape[0] != flat.shape[0]:
                raise UsageError(f"score_fn returned {s.shape[0]} scores for a batch of {flat.shape[0]} images")
            if out is None:
                out = torch.empty((total, *s.shape[1:]), dtype=s.dtype, device=s.device)
            out[start:start + flat.shape[0]] = s.detach()
    assert out is not None
    return out.view(n, steps + 1, *out.shape[1:])


# ---- summaries ----------------------------------------------------------------------------
def _as_numpy(a: torch.Tensor | np.ndarray | Sequence) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().to(torch.float64).numpy()
    return np.asarray(a, dtype=np.float64)


def aopc(curves: torch.Tensor | np.ndarray) -> np.ndarray:
    """Per-curve AOPC = 1/(L+1) Σ_{k=0..L} (f(x⁽⁰⁾) − f(x⁽ᵏ⁾)) for curves (N, L+1) -> (N,).

    The k = 0 term is zero but counted, as in [S17]'s definition. Larger means the score
    fell faster, i.e. the order found what the model relies on.
    """
    c = _as_numpy(curves)
    if c.ndim != 2 or c.shape[1] == 0:
        raise UsageError(f"curves must be (pairs, steps + 1), got shape {c.shape}")
    return (c[:, :1] - c).mean(axis=1)


def bootstrap_ci(values: torch.Tensor | np.ndarray | Sequence[float], level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of ``values`` (seeded, so repeatable)."""
    v = _as_numpy(values).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise UsageError("no values to bootstrap")
    if not 0 < level < 1:
        raise UsageError(f"level must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)
