"""Cost of explaining pairs with our LRP engine vs a plain forward+backward (issue 3, SPEC §3).

For a SmallCNN at 64 px and VGG-16 at 224 px (random weights, eval mode), on one batch of
pairs, all in the same run and interleaved (so machine load hits every method alike):

* ``baseline``: the pair model's forward on the stacked batch [x_a; x_b] and one backward
  to the input (input gradients only) — the cheapest gradient explanation;
* ``explain_pairs`` for the composites ``epsilon``, ``epsilon-plus-flat`` and
  ``epsilon-gamma-box`` (targets ≤ 2.0×, 3.0×, 5.0× the baseline);
* captum's ``LRP`` (ε rule on every conv/linear layer) on the same backbone and stacked
  batch (ours, which also explains the head, must be faster);
* BiLRP (``grid`` 8) at K = 10 and K = 100, recorded as a ratio to the baseline on the
  same batch.

Times are medians over ``--repeats`` interleaved runs (BiLRP: one run). Prints a markdown
table. ``--quick`` sizes the run for 2 CPU cores (VGG-16 on 1 pair, BiLRP on 8 small-CNN
pairs and at K = 10 only for VGG-16); the full run is meant for a bigger machine.

Full mode, VGG-16: 64 pairs at 224 px do not fit in memory as one batch (the stored
activations of a forward+backward take ~0.23 GB per pair, LRP's ~0.36 GB), so every method,
the baseline included, runs on ``--chunk`` pairs per call (default 8, ~3 GB); the chunks are
interleaved across methods and each method's time is its sum over the chunks.

    .venv/bin/python benchmarks/bench_explain.py [--quick]
    .venv/bin/python benchmarks/bench_explain.py --sections vgg --threads 1   # VGG-16 full mode only
"""
from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time
import warnings
from typing import Callable

import torch

from lrprec.explain import bilrp, explain_pairs
from lrprec.model.backbones import VGG16, Backbone, SmallCNN
from lrprec.model.pair import PairModel

COMPOSITE_TARGETS = {"epsilon": 2.0, "epsilon-plus-flat": 3.0, "epsilon-gamma-box": 5.0}
SECTIONS = ("small", "vgg", "bilrp-small", "bilrp-vgg")


def baseline_fn(model: PairModel, x_a: torch.Tensor, x_b: torch.Tensor, rel: torch.Tensor, user: torch.Tensor) -> Callable[[], object]:
    """Plain forward on the stacked batch plus input gradients of the logit."""
    def run() -> object:
        xa, xb = x_a.clone().requires_grad_(True), x_b.clone().requires_grad_(True)
        return torch.autograd.grad(model(xa, xb, rel, user).sum(), [xa, xb])
    return run


def captum_fn(backbone: Backbone, x: torch.Tensor, lrp: object | None = None) -> Callable[[], object]:
    """captum LRP with ε on every Conv2d/Linear, on a private copy of the backbone (it edits modules).

    ``lrp``: a captum ``LRP`` from an earlier call to reuse (chunks share one copy of the backbone).
    """
    if lrp is None:
        from captum.attr import LRP
        from captum.attr._utils.lrp_rules import EpsilonRule

        bb = copy.deepcopy(backbone).eval()
        for m in bb.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                m.rule = EpsilonRule(epsilon=1e-6)
        lrp = LRP(bb)

    def run() -> object:
        return lrp.attribute(x.clone().requires_grad_(True), target=0)
    run.lrp = lrp  # type: ignore[attr-defined]
    return run


def time_once(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _inputs(pairs: int, size: int, device: str) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(1)
    x_a, x_b = torch.randn(pairs, 3, size, size, generator=g), torch.randn(pairs, 3, size, size, generator=g)
    rel, user = torch.arange(pairs) % 4, torch.arange(pairs) % 5 - 1
    return tuple(t.to(device) for t in (x_a, x_b, rel, user))


def _interleaved_chunks(fns: dict[str, list[Callable[[], object]]], repeats: int,
                        warmup: bool) -> tuple[dict[str, float], dict[str, float]]:
    """Per method: median over repeats of the summed chunk times, and the median per-chunk ratio to ``baseline``.

    Each chunk runs every method in turn before the next chunk starts, so load spikes hit all
    methods alike; warm-up runs each method on its first chunk only.
    """
    if warmup:
        for chunks in fns.values():
            chunks[0]()
    totals: dict[str, list[float]] = {k: [] for k in fns}
    per_chunk: dict[str, list[float]] = {k: [] for k in fns}
    n_chunks = len(fns["baseline"])
    for _ in range(repeats):
        run = dict.fromkeys(fns, 0.0)
        for c in range(n_chunks):
            t = {k: time_once(chunks[c]) for k, chunks in fns.items()}
            for k in fns:
                run[k] += t[k]
                per_chunk[k].append(t[k] / t["baseline"])
        for k in fns:
            totals[k].append(run[k])
    return ({k: statistics.median(v) for k, v in totals.items()}, {k: statistics.median(v) for k, v in per_chunk.items()})


def _interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: bool) -> dict[str, float]:
    """Median seconds per function, the functions run in turn each repeat (shared load hits all alike)."""
    if warmup:
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            times[k].append(time_once(fn))
    return {k: statistics.median(v) for k, v in times.items()}


Row = tuple[str, str, float, float, float | None]


def bench_backbone(name: str, backbone: Backbone, size: int, pairs: int, repeats: int, warmup: bool,
                   device: str, chunk: int | None = None) -> list[Row]:
    """Rows (batch label, method, seconds, ratio to baseline, target ratio): composites and captum.

    With ``chunk`` < ``pairs`` every method runs on ``chunk`` pairs per call (see the module
    docstring) and the median per-chunk ratios are printed too.
    """
    torch.manual_seed(0)
    model = PairModel(backbone, dim=10, n_relations=4, n_users=4, seed=0).to(device).eval()
    x_a, x_b, rel, user = _inputs(pairs, size, device)
    chunk = min(chunk or pairs, pairs)
    captum_name = "captum LRP-ε (backbone only)"
    fns: dict[str, list[Callable[[], object]]] = {"baseline": [], **{c: [] for c in COMPOSITE_TARGETS}, captum_name: []}
    for s in range(0, pairs, chunk):
        xa, xb, r, u = x_a[s:s + chunk], x_b[s:s + chunk], rel[s:s + chunk], user[s:s + chunk]
        fns["baseline"].append(baseline_fn(model, xa, xb, r, u))
        for comp in COMPOSITE_TARGETS:
            fns[comp].append(lambda comp=comp, xa=xa, xb=xb, r=r, u=u:
                             explain_pairs(model, xa, xb, r, u, composite=comp, batch_size=chunk))
        prev = fns[captum_name][0].lrp if fns[captum_name] else None  # type: ignore[attr-defined]
        fns[captum_name].append(captum_fn(model.backbone, torch.cat([xa, xb]), prev))
    med, chunk_ratio = _interleaved_chunks(fns, repeats, warmup)
    label = f"{name} {size}px, {pairs} pairs" + (f" ({chunk} per call)" if chunk < pairs else "")
    if chunk < pairs:
        print(f"{label}: median per-chunk ratio to the baseline: "
              + ", ".join(f"{k} {v:.2f}" for k, v in chunk_ratio.items() if k != "baseline"), flush=True)
    return [(label, k, med[k], med[k] / med["baseline"], COMPOSITE_TARGETS.get(k)) for k in fns]


def bench_bilrp(name: str, backbone: Backbone, size: int, pairs: int, ks: list[int], repeats: int,
                device: str) -> list[Row]:
    """BiLRP (ε, 8×8 grid) at each K, once each, against the baseline on the same batch."""
    torch.manual_seed(0)
    x_a, x_b, rel, user = _inputs(pairs, size, device)
    base_model = PairModel(backbone, dim=10, n_relations=4, n_users=4, seed=0).to(device).eval()
    base = _interleaved({"baseline": baseline_fn(base_model, x_a, x_b, rel, user)}, repeats, warmup=True)["baseline"]
    label = f"{name} {size}px, {pairs} pairs"
    rows: list[Row] = [(label, "baseline", base, 1.0, None)]
    for k in ks:
        mk = PairModel(backbone, dim=k, n_relations=4, n_users=4, seed=0).to(device).eval()
        secs = time_once(lambda: bilrp(mk, x_a, x_b, rel, user, composite="epsilon", grid=8, batch_size=pairs))
        rows.append((label, f"BiLRP ε, K={k}", secs, secs / base, None))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="CPU-sized: VGG-16 on 1 pair with 2 repeats; BiLRP on 8 small-CNN pairs, VGG-16 at K=10 only")
    ap.add_argument("--pairs", type=int, default=64, help="pairs per batch (small CNN always; VGG-16 unless --quick)")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: on a shared CPU, idle OpenMP workers stall every op)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--chunk", type=int, default=8,
                    help="VGG-16 full mode: pairs per call for every method, baseline included (~0.36 GB per pair)")
    ap.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS,
                    help="parts to run (default all)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning)
    repeats = args.repeats or (3 if args.quick else 5)
    small, vgg = SmallCNN(), VGG16()
    rows: list[Row] = []
    if "small" in args.sections:
        rows += bench_backbone("SmallCNN", small, 64, args.pairs, repeats, True, args.device)
    if "vgg" in args.sections:  # full mode: chunks of --chunk pairs, interleaved; one repeat unless asked
        rows += bench_backbone("VGG-16", vgg, 224, 1 if args.quick else args.pairs,
                               2 if args.quick else args.repeats or 1, not args.quick, args.device,
                               chunk=None if args.quick else args.chunk)
    if "bilrp-small" in args.sections:
        rows += bench_bilrp("SmallCNN", small, 64, 8 if args.quick else args.pairs, [10, 100], repeats, args.device)
    if "bilrp-vgg" in args.sections:
        rows += bench_bilrp("VGG-16", vgg, 224, 1 if args.quick else args.pairs, [10] if args.quick else [10, 100],
                            2 if args.quick else repeats, args.device)

    print(f"\nbench_explain ({'quick' if args.quick else 'full'}): torch {torch.__version__}, device {args.device}, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}; "
          f"medians of interleaved repeats (BiLRP: one run)\n")
    print("| batch | method | seconds | × baseline | target | ok |")
    print("|---|---|---:|---:|---:|:-:|")
    ok_all = True
    for label, method, secs, ratio, target in rows:
        ok = ""
        if target is not None:
            ok = "yes" if ratio <= target else "NO"
            ok_all &= ratio <= target
        print(f"| {label} | {method} | {secs:.3f} | {ratio:.2f} | {'≤ %.1f' % target if target else ''} | {ok} |")
    print()
    for label in dict.fromkeys(r[0] for r in rows):
        ours = next((r[2] for r in rows if r[0] == label and r[1] == "epsilon"), None)
        theirs = next((r[2] for r in rows if r[0] == label and r[1].startswith("captum")), None)
        if ours is not None and theirs is not None:
            ok_all &= ours < theirs
            print(f"{label}: captum LRP-ε takes {theirs / ours:.2f}× the time of ours (epsilon, head included)"
                  f"{'' if ours < theirs else ' -- OURS SLOWER'}")
    print(f"\nall targets met: {'yes' if ok_all else 'NO'}")


if __name__ == "__main__":
    main()
