"""A concept's representation in a latent layer: activations, the pattern ("signal") CAV, more
directions until a linear probe no longer reads the concept, and the projection P-ClArC applies.

* :func:`layer_activations` — the activations of a backbone layer for model inputs: by default the
  backbone's output x (the features the pair head reads); a named module of the backbone (a
  forward hook; convolutional maps are max-pooled over space to one value per channel).
* :func:`signal_cav` — the pattern CAV of Pahde et al. (2022), v ∝ cov(a, t) / var(t), the
  direction along which the activations *carry* the concept. A filter CAV (the weights of a
  linear classifier or SVM separating t) is what best *detects* t; under noise correlated
  with the concept it tilts away from the concept's direction to cancel the noise, so removing
  it leaves the concept in place. The pattern CAV does not drift (tests/test_concepts.py).
* :func:`concept_directions` — one direction may leave the concept decodable (the concept can
  live in more than one direction); INLP-style iteration (Ravfogel et al. 2020): project the
  found directions out, fit a linear probe, and while it still decodes t (cross-validated
  balanced accuracy above chance + ``margin``) add the probe's own (filter) direction (the mean
  of the folds' probes: once the class means agree, a probe fitted to all samples is w = 0),
  orthogonalized; capped at ``max_dirs``. The first direction is always the pattern CAV.
* :func:`project_out` — the P-ClArC / A-ClArC algebra (Anders et al. 2022):
  a ← a − Vᵀ V (a − z) for orthonormal rows V. With z = z̄₀, the mean activation of samples
  *without* the concept, it removes the concept (P-ClArC: every sample is moved along V to
  where clean samples sit; orthogonal components untouched); with z = z̄₁, the mean of samples
  *with* it, it adds the concept (A-ClArC). It is idempotent, leaves z fixed, and its result
  minus z is orthogonal to V.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from lrprec.errors import UsageError


# ---- activations -------------------------------------------------------------------------------
@torch.no_grad()
def layer_activations(model: nn.Module, inputs: Tensor, layer: str | None = None, batch_size: int = 256) -> Tensor:
    """Activations (n, d) of ``model`` (a PairModel) on model inputs (n, ...), batched, in eval mode.

    ``layer`` None: the backbone's output (``model.embed``, after any concept projection the run
    carries). Otherwise the name of a backbone submodule (``model.backbone.get_submodule``), e.g.
    ``features.8``; 4-D outputs are max-pooled over space.
    """
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    out: list[Tensor] = []
    hook = None
    grabbed: list[Tensor] = []
    if layer is not None:
        try:
            module = model.backbone.get_submodule(layer)
        except AttributeError:
            names = [n for n, _ in model.backbone.named_modules() if n]
            raise UsageError(f"no backbone layer {layer!r}; known: {', '.join(names)}") from None
        hook = module.register_forward_hook(lambda m, i, o: grabbed.append(o))
    try:
        for s in range(0, len(inputs), batch_size):
            x = inputs[s:s + batch_size].to(dev)
            feats = model.embed(x)
            if layer is not None:
                feats = grabbed.pop()
                feats = feats.amax((2, 3)) if feats.dim() == 4 else feats.flatten(1)
            out.append(feats.float().cpu())
    finally:
        if hook is not None:
            hook.remove()
        model.train(was)
    return torch.cat(out) if out else torch.zeros(0, 0)


# ---- directions --------------------------------------------------------------------------------
def _check(acts: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    acts = torch.as_tensor(acts)
    t = torch.as_tensor(t).to(acts.dtype if acts.is_floating_point() else torch.float64).reshape(-1)
    if acts.dim() != 2 or t.shape[0] != acts.shape[0]:
        raise UsageError(f"activations must be (n, d) and labels (n,); got {tuple(acts.shape)} and {tuple(t.shape)}")
    if not bool(((t == 0) | (t == 1)).all()):
        raise UsageError("concept labels t must be 0 or 1")
    if t.min() == t.max():
        raise UsageError("concept labels t must contain both classes (samples with and without the concept)")
    return acts.double(), t.double()


def signal_cav(acts: Tensor, t: Tensor) -> Tensor:
    """The pattern CAV: cov(a, t) / var(t) over the samples, normalized to unit length, (d,).

    For binary t this is the difference of the class means, μ₁ − μ₀ (up to the norm).
    """
    a, t = _check(acts, t)
    tc = t - t.mean()
    v = (a - a.mean(0)).T @ tc / (tc @ tc)
    norm = v.norm()
    if norm == 0:
        raise UsageError("the concept does not change the activations (cov(a, t) = 0): no direction to find")
    return (v / norm).to(torch.float32 if acts.dtype != torch.float64 else torch.float64)


def probe_accuracy(acts: Tensor, t: Tensor, folds: int = 5, seed: int = 0, l2: float = 1e-3, steps: int = 100) -> float:
    """Cross-validated balanced accuracy of an L2-regularized logistic-regression probe reading t from ``acts``.

    Features are standardized on each training fold; 0.5 is chance. Deterministic for a seed.
    """
    return _cv_probe(acts, t, folds, seed, l2, steps)[0]


def _cv_probe(acts: Tensor, t: Tensor, folds: int = 5, seed: int = 0, l2: float = 1e-3, steps: int = 100) -> tuple[float, Tensor]:
    """(cross-validated balanced accuracy, the mean of the folds' unit probe directions in the original coordinates)."""
    a, t = _check(acts, t)
    n = a.shape[0]
    folds = max(2, min(folds, int(t.sum().item()), int((1 - t).sum().item())))
    order = np.random.default_rng(seed).permutation(n)
    # stratified folds: each class dealt round-robin
    fold_of = np.empty(n, np.int64)
    for cls in (0, 1):
        rows = order[t.numpy()[order] == cls]
        fold_of[rows] = np.arange(rows.size) % folds
    right = np.zeros(2)
    count = np.zeros(2)
    direction = torch.zeros(a.shape[1], dtype=a.dtype)
    for f in range(folds):
        test = torch.from_numpy(fold_of == f)
        w, b, mu, sd = _fit_probe(a[~test], t[~test], l2, steps)
        u = w / sd
        direction += u / u.norm().clamp_min(1e-300)
        pred = (((a[test] - mu) / sd) @ w + b > 0).double()
        for cls in (0, 1):
            sel = t[test] == cls
            right[cls] += float((pred[sel] == cls).sum())
            count[cls] += float(sel.sum())
    return float(np.mean(right / np.maximum(count, 1))), direction / folds


def _fit_probe(a: Tensor, t: Tensor, l2: float, steps: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Logistic regression (class-balanced, L-BFGS) on standardized features: (w, b, mean, std)."""
    mu, sd = a.mean(0), a.std(0).clamp_min(1e-8)
    z = (a - mu) / sd
    w = torch.zeros(a.shape[1], dtype=a.dtype, requires_grad=True)
    b = torch.zeros((), dtype=a.dtype, requires_grad=True)
    pos = t.mean()
    weight = torch.where(t == 1, 0.5 / pos, 0.5 / (1 - pos))
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = (weight * nn.functional.binary_cross_entropy_with_logits(z @ w + b, t, reduction="none")).mean() + l2 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach(), mu, sd


def iter_directions(acts: Tensor, t: Tensor, folds: int = 5, seed: int = 0):
    """Yields (V (k, d) orthonormal, the probe's cross-validated balanced accuracy once V is projected out) for
    k = 1, 2, …: the pattern CAV, then each probe's own (filter) direction, INLP-style; stops when none is left."""
    a, tt = _check(acts, t)
    V = signal_cav(a, tt).double().unsqueeze(0)
    while True:
        resid = a - (a @ V.T) @ V
        acc, u = _cv_probe(resid, tt, folds=folds, seed=seed)
        yield V, acc
        # the probe's (filter) direction: on the residual the class means agree, so a probe fitted to all of it is
        # w = 0; the folds' probes, which read the concept out of fold, are averaged instead
        u = u - (u @ V.T) @ V  # orthogonal to the directions so far
        if u.norm() < 1e-9:
            return
        V = torch.cat([V, (u / u.norm()).unsqueeze(0)])


def concept_directions(acts: Tensor, t: Tensor, max_dirs: int = 3, margin: float = 0.05, folds: int = 5, seed: int = 0,
                       return_probes: bool = False):
    """Orthonormal concept directions (k, d), k ≤ ``max_dirs``: the pattern CAV, then (INLP) the
    probe's direction while a probe still decodes t above chance + ``margin`` after projecting out
    the directions so far (:func:`iter_directions`). ``return_probes`` also returns the probe's
    accuracy after each projection (the last one is what a linear probe reads once all k are removed).
    """
    probes: list[float] = []
    for V, acc in iter_directions(acts, t, folds, seed):
        probes.append(acc)
        if acc <= 0.5 + margin or V.shape[0] >= max_dirs:
            break
    V = V.to(torch.float32 if acts.dtype != torch.float64 else torch.float64)
    return (V, probes) if return_probes else V


# ---- projection --------------------------------------------------------------------------------
def project_out(acts: Tensor, V: Tensor, ref: Tensor) -> Tensor:
    """a ← a − Vᵀ V (a − ref) row-wise, for orthonormal rows ``V`` (k, d) (or one direction (d,)) and ``ref`` (d,).

    ``ref`` = the mean activation of concept-free samples removes the concept (P-ClArC);
    ``ref`` = the mean of samples with the concept adds it (A-ClArC).
    """
    V = V.reshape(-1, V.shape[-1]).to(acts.dtype)
    return acts - ((acts - ref.to(acts.dtype)) @ V.T) @ V


def class_means(acts: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """(mean activation of samples without the concept z̄₀, mean of samples with it z̄₁)."""
    a, tt = _check(acts, t)
    return a[tt == 0].mean(0).to(acts.dtype), a[tt == 1].mean(0).to(acts.dtype)
