"""Issue 31: the near-duplicate threshold of the list policies, chosen on validation catalogs.

For each kept run (``small_catalogs.py --keep-runs``) on a validation catalog (seeds >= 100)
with K variants per look: the distance Σ θ_r² (v_i − v_j)² between the indexed vectors of
every same-category pair, divided by the median item-pair distance (the unit of
:data:`lrprec.recommend.duplicates.DEFAULT_THRESHOLD`), for pairs of one look (variants)
and pairs of two looks. Chosen: the smallest grid threshold that catches >= 99% of the variant
pairs under every complement relation (the list policy demotes the query's near-duplicates
in complement lists; a demoted same-category item of another look is no complement anyway).

    PYTHONPATH=src python experiments/near_duplicate_threshold.py /tmp/i31-work/run-*-seed10[0-9] \
        --out experiments/results/near_duplicate_threshold.json
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import torch

from lrprec.data.catalog import COMPLEMENTS
from lrprec.recommend.duplicates import distance_scale
from lrprec.recommend.recommender import build_index
from lrprec.run import Run

GRID = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)


def ratios(run_dir: Path, variants: int) -> dict:
    run = Run.load(run_dir)
    index = build_index(run, "exact", progress=False, save=False)
    codes = np.asarray(run.catalog.category_codes)
    n = len(codes)
    i, j = np.triu_indices(n, 1)
    same = codes[i] == codes[j]
    i, j = i[same], j[same]
    look = (i // variants) == (j // variants)
    out = {}
    for rel, v in index.vectors.items():
        r = run.relations.index(rel)
        with torch.no_grad():
            w = run.model.theta_global[r].double().pow(2).numpy()
        scale = distance_scale(v, w)
        d = (w * (np.asarray(v[i], np.float64) - np.asarray(v[j], np.float64)) ** 2).sum(-1) / scale
        out[rel] = {"variants_max": float(d[look].max()), "variants_p99": float(np.quantile(d[look], 0.99)),
                    "others_min": float(d[~look].min()), "others_p01": float(np.quantile(d[~look], 0.01)),
                    "balanced_accuracy": {str(t): float(0.5 * ((d[look] < t).mean() + (d[~look] >= t).mean())) for t in GRID},
                    "variant_recall": {str(t): float((d[look] < t).mean()) for t in GRID}}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--out", default="experiments/results/near_duplicate_threshold.json")
    a = ap.parse_args()
    torch.set_num_threads(1)
    res = {}
    for rd in a.runs:
        m = re.search(r"-v(\d+)-", Path(rd).name)
        if not (Path(rd) / "config.json").exists() or not m:
            continue
        res[Path(rd).name] = ratios(Path(rd), int(m.group(1)))
    mean = {str(t): float(np.mean([e["balanced_accuracy"][str(t)] for r in res.values() for e in r.values()])) for t in GRID}
    # The policy demotes a complement list's near-duplicates of the query: a missed variant leads the list, a demoted
    # same-category item of another look is no complement anyway. So: the smallest threshold that catches >= 99% of
    # the variant pairs under every complement relation of every validation run.
    recall = {str(t): float(min(e["variant_recall"][str(t)] for r in res.values() for rel, e in r.items() if rel in COMPLEMENTS))
              for t in GRID}
    chosen = min((float(t) for t in GRID if recall[str(t)] >= 0.99), default=None)
    summary = {"mean_balanced_accuracy": mean, "min_complement_variant_recall": recall, "chosen": chosen, "runs": res}
    Path(a.out).write_text(json.dumps(summary, indent=2))
    print(json.dumps({"mean_balanced_accuracy": mean, "min_complement_variant_recall": recall, "chosen": chosen}, indent=1))


if __name__ == "__main__":
    main()
