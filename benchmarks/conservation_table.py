"""Measured conservation per composite on a trained run (issue 13): Σ R / target on correctly predicted test pairs.

For each composite and target: median, 5th and 95th percentile of ``explain_pairs(...).conservation``
(similarity: each image's sum / S, both images pooled; logit: (sum_a + sum_b) / (−d)) and the
share inside [0.8, 1.25]. Writes RUN.cons.json beside the run directory.

    .venv/bin/python benchmarks/conservation_table.py RUN [similarity,logit] [MAX_PAIRS]

``MAX_PAIRS``: only the first that many correctly predicted test pairs (all by default).
"""
from __future__ import annotations

import json
import sys

import numpy as np
import torch

from lrprec.run import predict_logits
from lrprec.explain.composites import COMPOSITES
from lrprec.explain.targets import explain_pairs
from lrprec.run import Run


def main() -> None:
    torch.set_num_threads(1)
    run = Run.load(sys.argv[1])
    targets = sys.argv[2].split(",") if len(sys.argv) > 2 else ["similarity", "logit"]
    cat = run.catalog
    p = cat.pairs("test")
    logits = predict_logits(run.model, cat, p, input_size=run.input_size)
    correct = (logits > 0) == (p.label == 1)
    idx = np.flatnonzero(correct)
    if len(sys.argv) > 3:
        idx = idx[:int(sys.argv[3])]
    print(f"{sys.argv[1]}: accuracy {correct.mean():.4f}; {len(idx)} correctly predicted test pairs")
    xa, xb = run.inputs(p.a[idx]), run.inputs(p.b[idx])
    rel, user = torch.from_numpy(p.relation[idx]), torch.from_numpy(p.user[idx])
    rows = {}
    for target in targets:
        print(f"\ntarget {target}\n| composite | median | 5th pct | 95th pct | in [0.8, 1.25] |\n|---|---:|---:|---:|---:|")
        for name in COMPOSITES:
            e = explain_pairs(run.model, xa, xb, rel, user, target=target, composite=name, batch_size=128)
            c = e.conservation.numpy()
            if target == "similarity":  # per image: sum / S
                c = np.concatenate([(e.relevance_sum_a / e.target_value).numpy(), (e.relevance_sum_b / e.target_value).numpy()])
            q = np.percentile(c, [50, 5, 95])
            inside = float(((c >= 0.8) & (c <= 1.25)).mean())
            rows[f"{target}/{name}"] = [float(x) for x in q] + [inside]
            print(f"| {name} | {q[0]:.3f} | {q[1]:.3f} | {q[2]:.3f} | {100 * inside:.1f}% |", flush=True)
    with open(sys.argv[1].rstrip("/") + ".cons.json", "w") as f:
        json.dump({"accuracy": float(correct.mean()), "rows": rows}, f)


if __name__ == "__main__":
    main()
