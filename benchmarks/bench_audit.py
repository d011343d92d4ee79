"""``lrprec audit`` on a trained run vs scoring its validation pairs once (issue 26; target: audit ≤ 2 minutes on 2 cores).

In the same run: ``baseline`` = the model's logits of every validation pair (``predict_logits``, the backbone over
both images), then the whole audit (LRP of ``--pairs`` pairs, SpRAy, and each cluster's two removals scored on
every validation pair). Prints both wall times, the ratio, and whether the audit met the 120 s target.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_audit.py RUN [--pairs 256] [--threads 2]
"""
from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch

from lrprec.evaluate.audit import audit_run
from lrprec.run import Run, predict_logits


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--pairs", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    run = Run.load(args.run)
    pairs = run.catalog.pairs("validation")
    t0 = time.perf_counter()
    predict_logits(run.model, run.catalog, pairs, input_size=run.input_size)
    base = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        r = audit_run(args.run, pairs=args.pairs, out=Path(tmp) / "audit.json")
        audit = time.perf_counter() - t0
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads")
    print(f"baseline (logits of {len(pairs)} validation pairs): {base:.1f} s")
    print(f"audit ({r['heatmaps']} heatmaps, {r['n_clusters']} clusters): {audit:.1f} s = {audit / base:.1f}x the baseline; "
          f"target 120 s: {'met' if audit <= 120 else 'MISSED'}")


if __name__ == "__main__":
    main()
