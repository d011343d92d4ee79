"""Explanation cost against its floor on the new backbones (issue 28): ResNet-50 and the ViTs.

For each backbone (random weights, eval mode), on ``--pairs`` pairs, all in one run and
interleaved chunk by chunk (machine load hits every method alike):

* ``baseline``: the pair model's forward on the stacked batch [x_a; x_b] and one backward to
  the input only (``torch.autograd.grad`` w.r.t. the images) — the floor any gradient-based
  explanation pays;
* ``with parameter gradients``: the same forward and PyTorch's default ``loss.backward()``
  with the model's parameters requiring grad (input and all parameter gradients), the cost a
  training step's backward pays (reported beside, not used for the ratios' targets);
* ``forward alone``: the same forward without autograd; baseline + forward is the floor of a
  rule that needs a second forward per layer (z⁺: the real output and z⁺ = x⁺w⁺ are two
  convolutions, then one backward), printed as "z⁺ floor";
* ``explain_pairs`` under ε-z⁺-flat (the default composite; target ≤ 1.3× the baseline), and ε
  and ε-γ-box (recorded).

Prints a markdown table (seconds, ratio to the baseline, median per-chunk ratio). On this
2-core CPU 224 px at 64 pairs is out of reach for ResNet-50 and ViT-B/16 (minutes per
method and repeat), so ``--size`` defaults to 64 px; ``benchmarks/gpu_check.sh`` runs 224 px.

    .venv/bin/python benchmarks/bench_backbones.py [--backbones resnet50,vit-small,vit-b16] [--pairs 64] [--size 64]
"""
from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_explain import _inputs, _interleaved_chunks, baseline_fn  # noqa: E402

from lrprec.explain import explain_pairs  # noqa: E402
from lrprec.model.backbones import build_backbone  # noqa: E402
from lrprec.model.pair import PairModel  # noqa: E402

COMPOSITES = {"epsilon": None, "epsilon-plus-flat": 1.3, "epsilon-gamma-box": None}
PARAMS = "params"
FORWARD = "forward"


def bench(name: str, size: int, pairs: int, chunk: int, repeats: int, device: str) -> list[tuple]:
    torch.manual_seed(0)
    config = {"image_size": size} if name.startswith("vit") else {}
    model = PairModel(build_backbone(name, **config), dim=10, n_relations=4, n_users=4, seed=0).to(device).eval()
    x_a, x_b, rel, user = _inputs(pairs, size, device)
    fns: dict[str, list] = {"baseline": [], PARAMS: [], FORWARD: [], **{c: [] for c in COMPOSITES}}
    for s in range(0, pairs, chunk):
        xa, xb, r, u = x_a[s:s + chunk], x_b[s:s + chunk], rel[s:s + chunk], user[s:s + chunk]
        fns["baseline"].append(baseline_fn(model, xa, xb, r, u))
        fns[PARAMS].append(param_baseline_fn(model, xa, xb, r, u))
        fns[FORWARD].append(lambda xa=xa, xb=xb, r=r, u=u: _no_grad(model, xa, xb, r, u))
        for comp in COMPOSITES:
            fns[comp].append(lambda comp=comp, xa=xa, xb=xb, r=r, u=u: explain_pairs(model, xa, xb, r, u, composite=comp, batch_size=chunk))
    med, per_chunk = _interleaved_chunks(fns, repeats, warmup=True)
    label = f"{name} {size} px, {pairs} pairs"
    rows = [(label, "plain forward+backward (to the input)", med["baseline"], 1.0, None, None, None)]
    rows.append(("", "forward + loss.backward() (parameters require grad)", med[PARAMS], med[PARAMS] / med["baseline"],
                 per_chunk[PARAMS], 1.0, None))
    rows.append(("", "forward alone (no autograd)", med[FORWARD], med[FORWARD] / med["baseline"], per_chunk[FORWARD], None, None))
    zfloor = med["baseline"] + med[FORWARD]
    rows.append(("", "z⁺ floor: forward+backward + a second forward", zfloor, zfloor / med["baseline"], None, zfloor / med[PARAMS], None))
    for comp, target in COMPOSITES.items():
        rows.append(("", comp, med[comp], med[comp] / med["baseline"], per_chunk[comp], med[comp] / med[PARAMS], target))
    return rows


def _no_grad(model: PairModel, *args: torch.Tensor) -> object:
    with torch.no_grad():
        return model(*args)


def param_baseline_fn(model: PairModel, x_a: torch.Tensor, x_b: torch.Tensor, rel: torch.Tensor, user: torch.Tensor):
    """Forward on the stacked batch and ``loss.backward()`` with every parameter requiring grad (PyTorch's default)."""
    params = [p for p in model.parameters() if p.requires_grad]

    def run() -> object:
        for p in params:
            p.grad = None
        xa, xb = x_a.clone().requires_grad_(True), x_b.clone().requires_grad_(True)
        model(xa, xb, rel, user).sum().backward()
        return xa.grad, xb.grad
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backbones", default="resnet50,vit-small")
    ap.add_argument("--pairs", type=int, default=64)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--chunk", type=int, default=16, help="pairs per call (memory)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {platform.machine()}, {a.threads} thread(s), device {a.device}; medians of {a.repeats} interleaved repeats\n")
    print("| batch | method | seconds | × baseline (input only) | median per-chunk ratio | × forward + loss.backward() | target (× baseline) |\n"
          "|---|---|---:|---:|---:|---:|---:|")
    for name in a.backbones.split(","):
        for label, method, sec, ratio, chunk_ratio, vs_params, target in bench(name, a.size, a.pairs, min(a.chunk, a.pairs), a.repeats, a.device):
            verdict = "" if target is None else f"≤ {target} {'✓' if ratio <= target else '✗'}"
            cr = "" if chunk_ratio is None else f"{chunk_ratio:.2f}"
            vp = "" if vs_params is None else f"{vs_params:.2f}"
            print(f"| {label} | {method} | {sec:.3f} | {ratio:.2f} | {cr} | {vp} | {verdict} |", flush=True)


if __name__ == "__main__":
    main()
