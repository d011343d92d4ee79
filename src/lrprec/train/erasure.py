"""Erasing a discovered artifact from the features the head reads (issue 26): after counterfactual augmentation.

Augmentation with the discovered artifact teaches the model not to *use* it, but the backbone
still *carries* it (a linear probe reads an augmented model's artifact tag at ~100%, as it
reads the oracle's: a tint or a mark is a real property of the pixels). What a probe can read,
a later fine-tuning or a user's own head can pick up again. The erasure removes it from the
features the head reads, judged on images the fit never saw:

1. **Fit.** The training images with the discovered artifact removed and stamped (``flip``: the
   input-space form ``lrprec correct`` found — the pasted region, or the colour transform): two
   groups that differ only by the artifact, so whatever separates them is the artifact's, not a
   product's. (A pasted region's artifact-free version takes the region from one of 64 clean
   training images, by row, so the fit sees what varies under it.)
2. **Directions.** :func:`lrprec.explain.concepts.iter_directions` on their features: the
   pattern CAV, then the INLP probes' directions, nested, grown along :data:`DIRECTION_GRID`.
3. **How many, on validation.** At each size of the grid: the run's validation accuracy with the
   directions projected out, and a linear probe — the shortcut report's own
   (:func:`lrprec.evaluate.probe.linear_probe`) — of the artifact on the *validation* images,
   read two ways, the worse counts: the images as they are, labelled by ``flip``'s detector (the
   colour transform's self-labelled carriers, or the region showing the discovered pixels), and
   each image in one counterfactual version (with or without, even odds; both versions of one
   image would let the probe's folds recognize the image, not the artifact). The erasure takes
   the fewest directions that bring the probe within :data:`PROBE_MARGIN` of chance; directions
   that cost more than :data:`MAX_ACCURACY_COST` of validation accuracy are never taken (then
   the size the probe reads least, or none).
4. The projection a ← a − VᵀV(a − z̄₀) (z̄₀ the mean feature of the artifact-free versions) is
   appended to the backbone (:mod:`lrprec.model.projection`) and kept at inference.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from lrprec.data.splits import protocol_pairs
from lrprec.evaluate.probe import linear_probe
from lrprec.explain.concepts import iter_directions

# (stamp, remove, carries): (uint8 images, catalog rows) -> images with / without the artifact, and (n,) bool: which carry it
Flip = tuple[Callable, Callable, Callable]

MAX_DIRECTIONS = 64
DIRECTION_GRID = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64)
PROBE_MARGIN = 0.02  # accuracy above chance (the majority share); set a priori, stricter than the 5 points (docs/guide/audit-and-correct.md)
MAX_ACCURACY_COST = 0.01  # directions that lower validation accuracy by more than this are not taken (the 1 point a correction may cost, issue 26)
BATCH = 256


def counterfactual_features(model, images: np.ndarray, rows: np.ndarray, flip: Flip, input_size, as_they_are: bool = True) -> tuple:
    """(features without the artifact, with it), each (n, F) float64, of the catalog's sorted ``rows`` (``images``: the
    catalog's images, read a batch at a time); with ``as_they_are`` also the images' own features and (n,) 0/1: which
    carry it."""
    from lrprec.model.backbones import preprocess

    stamp, remove, carries = flip
    versions = (remove, stamp, lambda x, r: x) if as_they_are else (remove, stamp)
    out: list[list[torch.Tensor]] = [[] for _ in versions]
    tags = []
    with torch.inference_mode():
        for s in range(0, len(rows), BATCH):
            r = rows[s:s + BATCH]
            x = np.asarray(images[r])
            for k, fn in enumerate(versions):
                out[k].append(model.embed(preprocess(fn(x, r), model.backbone, input_size)).double())
            if as_they_are:
                tags.append(np.asarray(carries(x, r), bool))
    feats = tuple(torch.cat(o) for o in out)
    return feats + (torch.from_numpy(np.concatenate(tags)).double(),) if as_they_are else feats


def validation_rows(run) -> np.ndarray:
    """Catalog rows of the images in the run's validation pairs (never in the fit)."""
    val = protocol_pairs(run.catalog, "validation")
    return np.unique(np.concatenate([val.a, val.b]))


def _probe_sets(g0: torch.Tensor, g1: torch.Tensor, gx: torch.Tensor, tx: torch.Tensor) -> list[tuple[torch.Tensor, np.ndarray]]:
    """What the validation probe reads: each image in one counterfactual version (even odds, seeded), and the images as
    they are with the detector's labels (where both groups hold ≥ 5 images)."""
    t = torch.from_numpy(np.random.default_rng(0).permutation(np.arange(len(g0)) % 2)).double()
    sets = [(torch.where(t[:, None] == 1, g1, g0), t.numpy())]
    if min(int(tx.sum()), int((1 - tx).sum())) >= 5:
        sets.append((gx, tx.numpy()))
    return sets


def _read(sets, z0: torch.Tensor, V: torch.Tensor | None) -> float:
    """The validation probe's accuracy above chance, the worse of its sets, after projecting out ``V``."""
    worst = -1.0
    for acts, t in sets:
        x = acts if V is None else acts - ((acts - z0) @ V.T) @ V
        p = linear_probe(x.numpy(), t)
        worst = max(worst, p["accuracy"] - p["chance"])
    return worst


def _validation_accuracy(run, rows: np.ndarray, feats: torch.Tensor):
    """acc(V, z0): the run's accuracy on its validation pairs with ``V`` projected out of the features (``feats``: of
    the catalog ``rows`` every validation pair uses, as they are), the backbone run once."""
    from lrprec.run import predict_logits
    from lrprec.train.trainer import _filter_pairs

    pairs = _filter_pairs(run.catalog, protocol_pairs(run.catalog, "validation"), run.relations, run.config.get("category"))
    full = torch.zeros(len(run.catalog), feats.shape[1])

    def acc(V: torch.Tensor | None, z0: torch.Tensor) -> float:
        full[torch.from_numpy(rows)] = (feats if V is None else feats - ((feats - z0) @ V.T) @ V).float()
        logits = predict_logits(run.model, run.catalog, pairs, features=full)
        return float(((logits > 0) == (pairs.label == 1)).mean())

    return acc


def fit_erasure(run, flip: Flip, train_rows: np.ndarray, log=print) -> dict:
    """The artifact's directions in ``run``'s features: {"V" (k, F), "z0" (F,), "z1" (F,), "directions", "probes" (k ->
    the validation probe's accuracy above chance), "accuracy" (k -> validation accuracy)}. k: the fewest of
    :data:`DIRECTION_GRID` that bring the validation probe within :data:`PROBE_MARGIN` of chance, among those that cost at
    most :data:`MAX_ACCURACY_COST` of validation accuracy (else the size the probe reads least; 0: none)."""
    model, images = run.model.eval(), run.catalog.images
    f0, f1 = counterfactual_features(model, images, np.unique(train_rows), flip, run.input_size, as_they_are=False)
    acts = torch.cat([f0, f1])
    t = torch.cat([torch.zeros(len(f0), dtype=torch.float64), torch.ones(len(f1), dtype=torch.float64)])
    vrows = validation_rows(run)
    g0, g1, gx, gt = counterfactual_features(model, images, vrows, flip, run.input_size)
    sets, accuracy = _probe_sets(g0, g1, gx, gt), _validation_accuracy(run, vrows, gx)
    z0 = f0.mean(0)
    probes, accs = {0: _read(sets, z0, None)}, {0: accuracy(None, z0)}
    for V, _ in iter_directions(acts, t):  # grown only as far as the validation needs
        k = V.shape[0]
        if k > min(MAX_DIRECTIONS, acts.shape[1]):
            break
        if k not in DIRECTION_GRID:
            continue
        accs[k] = accuracy(V, z0)
        if accs[k] < accs[0] - MAX_ACCURACY_COST:
            break
        probes[k] = _read(sets, z0, V)
        if probes[k] <= PROBE_MARGIN:
            break
    met = [j for j in probes if probes[j] <= PROBE_MARGIN]
    k = met[0] if met else min(probes, key=lambda j: probes[j])
    log(f"erasure: {k} direction(s) (validation: probe of the artifact above chance / accuracy after "
        + ", ".join(f"{j}: {100 * probes[j]:+.1f} / {100 * accs[j]:.1f}%" if j in probes else f"{j}: – / {100 * accs[j]:.1f}%" for j in accs)
        + f"; stop at {100 * PROBE_MARGIN:+.0f} points, or at a cost over {100 * MAX_ACCURACY_COST:.1f} points)")
    return {"V": (V[:k] if k else z0.new_zeros(0, z0.shape[0])).float(), "z0": z0.float(), "z1": f1.mean(0).float(), "directions": int(k),
            "probes": {str(j): round(p, 4) for j, p in probes.items()}, "accuracy": {str(j): round(a, 4) for j, a in accs.items()}}
