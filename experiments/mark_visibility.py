"""How much of the watermark's effect can a local explanation see? (issue 14's alarm, explained)

For a run on a shortcut catalog, stamps the watermark on test images and measures, in the
same units:

* ``shift`` — what the mark does: the θ-weighted squared move of each image's projected
  embedding, Σ_k θ_k² (a_k(x_marked) − a_k(x_removed))², mean over images. This is what
  changes the pair's distance, so the logit (behaviour, no explanation involved); also at
  points of the straight path between the two inputs (``shift at t``).
* for each explainer, the part of the same embedding it puts on the watermark's box:
  E_v[(Σ_box R_v)²] over random ±1 projections v of θ·a (explaining v·(θ ⊙ a) of the marked
  image). An additive explanation that is faithful to the removed image as reference gives
  the box the whole shift (the estimate ≈ ``shift``); one that is blind to it gives ~0.
  Explainers: LRP under the given composites, and the input gradient × (x_marked − x_removed)
  at either image (the first-order Taylor estimates of the shift from either end).
* the scale a share is taken against: Σ_p r_p² of the pair logit's LRP relevance on the
  marked image (first composite), the same on the box, and the mean |logit| — a guided
  model can shrink the mark's *share* by inflating the rest.

Usage: PYTHONPATH=src python experiments/mark_visibility.py RUN [RUN ...] [--pairs 64] [--draws 8]
       [--composites epsilon-gamma-box,epsilon,epsilon-plus-flat] [--json OUT.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from lrprec.data.watermark import counterfactual_images, unmarked_image, watermark_box
from lrprec.evaluate.perturbation import pixel_relevance
from lrprec.evaluate.shortcut import shortcut_arrays
from lrprec.explain.engine import LRPNet
from lrprec.explain.targets import explain_pairs
from lrprec.model.backbones import preprocess
from lrprec.run import Run


def visibility(run_path: str, pairs: int = 64, draws: int = 8, composites: tuple[str, ...] = ("epsilon-gamma-box",)) -> dict:
    """{"shift": float, "<explainer>": float, ...} for one run (see the module docstring)."""
    gen = torch.Generator().manual_seed(0)
    run = Run.load(run_path)
    model, cat = run.model.eval(), run.catalog
    tags, _ = shortcut_arrays(cat)
    sel = cat.pairs("test").spread(pairs)
    raw = np.asarray(cat.images[sel.a])
    o, m = watermark_box(raw.shape[1])
    fill = unmarked_image(cat.images, tags)
    x1 = preprocess(counterfactual_images(raw, True), model.backbone, run.input_size)
    x0 = preprocess(counterfactual_images(raw, False, fill), model.backbone, run.input_size)
    rel, usr = torch.from_numpy(sel.relation), torch.from_numpy(sel.user)
    n_rel, K = model.n_relations, model.dim
    theta = model.theta(rel, usr).detach()
    e_sel = model.E.detach().view(-1, n_rel, K)[:, rel, :].permute(1, 0, 2)  # (N, D, K): each image's E_r

    def embed(x: torch.Tensor) -> torch.Tensor:
        return model.project(model.embed(x), rel)

    with torch.no_grad():
        a0 = embed(x0)
        out = {"shift": float((theta * (embed(x1) - a0)).pow(2).sum(1).mean())}
        for t in (0.25, 0.5, 0.75):  # where along the path from removed to stamped the shift happens
            out[f"shift at {t:g}"] = float((theta * (embed(x0 + t * (x1 - x0)) - a0)).pow(2).sum(1).mean())
    vs = [torch.randint(0, 2, theta.shape, generator=gen).float() * 2 - 1 for _ in range(draws)]
    box = (slice(None), slice(o, o + m), slice(o, o + m))
    for comp in composites:
        net = LRPNet(model.backbone, comp)
        est = []
        for v in vs:
            trace = net.forward(x1.detach().requires_grad_(True))
            r = net.relevance(trace, trace.output, torch.einsum("ndk,nk->nd", e_sel, v * theta)).sum(1).detach()
            est.append(r[box].flatten(1).sum(1).pow(2))
        out[f"LRP {comp}"] = float(torch.stack(est).mean())
    for name, at in (("marked", x1), ("removed", x0)):  # first-order Taylor estimates of the shift from either end
        est = []
        for v in vs:
            x = at.detach().requires_grad_(True)
            (g,) = torch.autograd.grad((embed(x) * v * theta).sum(), x)
            est.append((g * (x1 - x0)).sum(1)[box].flatten(1).sum(1).pow(2))
        out[f"gradient at the {name} image x (marked - removed)"] = float(torch.stack(est).mean())
    # the scale the guidance share is measured against: squared LRP relevance of the pair's logit per image, and |logit|
    xb = preprocess(np.asarray(cat.images[sel.b]), model.backbone, run.input_size)
    e = explain_pairs(model, x1, xb, rel, usr, target="logit", composite=composites[0] if composites else "epsilon-gamma-box")
    r2 = pixel_relevance(e.relevance_a).pow(2)
    out["logit relevance: total r^2"] = float(r2.flatten(1).sum(1).mean())
    out["logit relevance: box r^2"] = float(r2[box].flatten(1).sum(1).mean())
    out["|logit|"] = float(e.logit.abs().mean())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--pairs", type=int, default=64)
    ap.add_argument("--draws", type=int, default=8)
    ap.add_argument("--composites", default="epsilon-gamma-box,epsilon,epsilon-plus-flat")
    ap.add_argument("--json", help="also write {run: results} to this file")
    args = ap.parse_args()
    comps = tuple(c for c in args.composites.split(",") if c)
    results = {}
    for r in args.runs:
        results[r] = res = visibility(r, args.pairs, args.draws, comps)
        print(r + ": " + ", ".join(f"{k} {v:.3f}" for k, v in res.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({"command": " ".join(sys.argv), "runs": results}, indent=1))


if __name__ == "__main__":
    main()
