"""End-to-end training throughput, and how close VGG-16 training gets to the machine's matmul rate.

All figures come from one run on one machine:

* **matmul**: the best of several ``torch.matmul`` of two ``--matmul-n`` square float32
  matrices (2n³ FLOP each), sampled before, between and after the training runs, the best
  sample kept — the practical peak that convolutions are held against;
* **small CNN, 64 px**: :func:`lrprec.train.train` on a synthetic 64 px catalog, the warm
  (last) epoch's pairs/s and data-loading wait (time blocked on the next batch, as a fraction
  of the epoch's training time; target < 10%), for each ``--workers`` value;
* **VGG-16, 224 px**: the same trainer with ``--backbone vgg16`` (random init unless the
  torch hub cache holds the ImageNet weights), a small batch and a few steps per epoch, the
  warm epoch again; plus the model alone (forward + backward of the stacked batch, no
  data, no optimizer) for reference.

FLOP per pair are counted with ``torch.utils.flop_counter.FlopCounterMode`` over one forward
+ backward of the pair model (the backbone runs once on the stacked ``[x_a; x_b]``);
achieved FLOP/s = FLOP per pair × pairs/s, reported as a fraction of the matmul rate (target
≥ 30% for VGG-16). Prints a markdown table.

    .venv/bin/python benchmarks/bench_train.py [--threads 2] [--workers 0,1] [--vgg-batch 4] [--vgg-steps 2]
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from lrprec.data.synthetic import SynthConfig, generate
from lrprec.run import build_model
from lrprec.train import TrainConfig, train


def matmul_flops(n: int, repeats: int) -> float:
    """Best observed float32 matmul rate (FLOP/s) for n×n @ n×n."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def pair_flops(config: dict, size: int, batch: int) -> float:
    """FLOP of one training forward + backward of the pair model, per pair."""
    model = build_model(config, n_users=2)
    x = torch.randn(2 * batch, 3, size, size)
    rel, usr = torch.zeros(batch, dtype=torch.long), torch.zeros(batch, dtype=torch.long)
    with FlopCounterMode(display=False) as fc:
        model(x[:batch], x[batch:], rel, usr).sum().backward()
    return fc.get_total_flops() / batch


def model_only_rate(config: dict, size: int, batch: int, repeats: int) -> float:
    """Pairs/s of forward + backward on random inputs (no data pipeline, no optimizer step)."""
    model = build_model(config, n_users=2)
    model.train()
    x = torch.randn(2 * batch, 3, size, size)
    rel, usr = torch.zeros(batch, dtype=torch.long), torch.zeros(batch, dtype=torch.long)
    best = float("inf")
    for k in range(repeats + 1):
        t = time.perf_counter()
        model.zero_grad(set_to_none=True)
        model(x[:batch], x[batch:], rel, usr).sum().backward()
        if k:  # the first call warms up (allocations, kernel selection)
            best = min(best, time.perf_counter() - t)
    return batch / best


def run_train(catalog: Path, work: Path, name: str, cfg: TrainConfig) -> dict:
    """Train and return the warm (last) epoch's record."""
    h = train(catalog, work / name, cfg, progress=False, log=lambda m: None)
    return h["epochs"][-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    ap.add_argument("--workers", default="0,1", help="DataLoader workers to try for the small CNN (comma-separated)")
    ap.add_argument("--small-epochs", type=int, default=2)
    ap.add_argument("--small-batch", type=int, default=128)
    ap.add_argument("--vgg-batch", type=int, default=4, help="pairs per step (the backbone sees twice as many images)")
    ap.add_argument("--vgg-steps", type=int, default=2, help="steps per epoch; two epochs, the second is reported")
    ap.add_argument("--matmul-n", type=int, default=2048)
    ap.add_argument("--no-vgg", action="store_true")
    ap.add_argument("--tmp", default=None, help="scratch folder (deleted at the end)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    work = Path(tempfile.mkdtemp(prefix="bench_train-", dir=args.tmp))
    rows: list[tuple] = []
    try:
        # The matmul rate is taken before, between and after the training runs and the best is
        # the reference: on a shared machine a single sample can land in a busy moment.
        peaks = [matmul_flops(args.matmul_n, 5)]
        peak_row = len(rows)
        rows.append(("", "—", "—", "", "100%", "—"))

        small_cat = work / "small64"
        generate(small_cat, SynthConfig(items=400, users=3, image_size=64, pairs_per_relation=200, seed=0), progress=False)
        small_cfg = {"backbone": "small", "dim": 10, "seed": 0}
        f_small = pair_flops(small_cfg, 64, 32)
        for w in [int(x) for x in args.workers.split(",") if x.strip()]:
            rec = run_train(small_cat, work, f"small_w{w}", TrainConfig(epochs=args.small_epochs, batch_size=args.small_batch, workers=w))
            achieved = f_small * rec["pairs_per_second"]
            rows.append((f"small CNN 64 px, trainer, batch {args.small_batch}, workers {w}", f"{rec['pairs_per_second']:.0f}",
                         f"{100 * rec['data_wait_fraction']:.1f}%", f"{achieved / 1e9:.1f}", achieved, f"{f_small / 1e9:.3f}"))
        r = model_only_rate(small_cfg, 64, args.small_batch, 3)
        rows.append((f"small CNN 64 px, model fwd+bwd only, batch {args.small_batch}", f"{r:.0f}", "—", f"{f_small * r / 1e9:.1f}",
                     f_small * r, f"{f_small / 1e9:.3f}"))

        peaks.append(matmul_flops(args.matmul_n, 5))
        if not args.no_vgg:
            vgg_cat = work / "vgg"
            generate(vgg_cat, SynthConfig(items=60, users=2, image_size=64, pairs_per_relation=10, seed=0), progress=False)
            vgg_cfg = {"backbone": "vgg16", "dim": 10, "seed": 0}
            f_vgg = pair_flops(vgg_cfg, 224, 1)
            rec = run_train(vgg_cat, work, "vgg", TrainConfig(backbone="vgg16", epochs=2, steps_per_epoch=args.vgg_steps, batch_size=args.vgg_batch))
            achieved = f_vgg * rec["pairs_per_second"]
            rows.append((f"VGG-16 224 px, trainer, batch {args.vgg_batch}, workers 0", f"{rec['pairs_per_second']:.2f}",
                         f"{100 * rec['data_wait_fraction']:.1f}%", f"{achieved / 1e9:.1f}", achieved, f"{f_vgg / 1e9:.1f}"))
            r = model_only_rate(vgg_cfg, 224, args.vgg_batch, 2)
            rows.append((f"VGG-16 224 px, model fwd+bwd only, batch {args.vgg_batch}", f"{r:.2f}", "—", f"{f_vgg * r / 1e9:.1f}",
                         f_vgg * r, f"{f_vgg / 1e9:.1f}"))
        peaks.append(matmul_flops(args.matmul_n, 5))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    peak = max(peaks)
    rows[peak_row] = (f"matmul {args.matmul_n}² float32 (best of before/between/after: {' / '.join(f'{p / 1e9:.0f}' for p in peaks)})",
                      "—", "—", f"{peak / 1e9:.1f}", "100%", "—")
    rows = [r if isinstance(r[4], str) else (*r[:4], f"{100 * r[4] / peak:.0f}%", r[5]) for r in rows]

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{args.threads} thread(s), load average {load:.1f} at the end\n")
    print("| what | pairs/s | data wait | GFLOP/s | of matmul | GFLOP/pair |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
