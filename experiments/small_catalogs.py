"""Issue 31: the learning curve over catalog size, and the candidates for defaults that hold on small catalogs.

For each size and seed: a synthetic catalog (``lrprec synth``) with near-duplicate variants
(``--variants K --variant-noise σ``: K listings share one drawing, each with its own pixel
noise), one training with the given options (1 thread), then per relation

* precision@10 against the catalog's rules (``precision``) and over the ideal list
  (``precision_of_ideal``: a query with 5 related items scores 5/5),
* the share of a list in the query's own category (``own_category``; complements: should be 0),
* ``dup_lead``: the share of lists led by one of the query's own variants,

each for the lists ``lrprec recommend`` shows under the near-duplicate policies keep / demote / collapse,
* pair accuracy on the test (``test``) and validation (``val``) pairs under both protocols.

Usage (one JSON line per run appended to --out; existing (tag, size, seed) rows are skipped):

    OMP_NUM_THREADS=1 nice -n 10 python experiments/small_catalogs.py --sizes 60,200,500 --seeds 0,1,2 \
        --variants 3 --noise 4 --tag defaults --out experiments/results/small_catalogs.jsonl

``--set key=value`` (repeatable) overrides a TrainConfig field (JSON values), e.g.
``--set init_partner='"random"'``. Catalogs are cached under --work.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from lrprec.data.catalog import NEGATIVE_PROTOCOLS, RELATIONS, Catalog
from lrprec.data.synthetic import SynthConfig, generate
from lrprec.evaluate.linkpred import link_prediction_report
from lrprec.data.rules import synthetic_rules
from lrprec.evaluate.ranking import ModelScorer
from lrprec.evaluate.truth import _grade
from lrprec.recommend.recommender import Recommender, build_index
from lrprec.run import Run
from lrprec.train import TrainConfig, train
from lrprec.train.config import DEFAULT_MIN_STEPS


def pairs_for(items: int) -> int:
    """Positive pairs per relation: two per item up to the default catalog's 2,000."""
    return int(min(2000, max(10, 2 * items)))


def catalog_for(work: Path, items: int, seed: int, variants: int, noise: float, users: int) -> Path:
    path = work / f"cat-n{items}-v{variants}-s{noise:g}-u{users}-seed{seed}"
    if not (path / "meta.json").exists():
        generate(path, SynthConfig(items=items, users=users, pairs_per_relation=pairs_for(items), seed=seed,
                                   variants=variants, variant_noise=noise), overwrite=True, progress=False)
    return path


def policy_lists(rec: Recommender, catalog: Catalog, q: np.ndarray, relation: str, policy: str, k: int = 10) -> np.ndarray:
    """(len(q), k) item rows of the lists ``lrprec recommend`` shows (global θ) under a near-duplicate policy."""
    row = {str(x): n for n, x in enumerate(catalog.item_ids)}
    out = np.empty((q.size, k), np.int64)
    for n, i in enumerate(q):
        res = rec.recommend(str(catalog.item_ids[i]), relations=relation, k=k, duplicates=policy)["results"][relation]
        out[n] = [row[e["item"]] for e in res]
    return out


def evaluate(run_dir: Path, variants: int, policies=("keep", "demote", "collapse"), max_queries: int = 1000) -> dict:
    run = Run.load(run_dir)
    cat = run.catalog
    scorer = ModelScorer.from_catalog(run.model, cat, run.input_size)
    rec = Recommender(run, build_index(run, "exact", progress=False, save=False))
    attrs, user_attr = synthetic_rules(cat)
    n = len(cat)
    q = np.unique(np.linspace(0, n - 1, min(n, max_queries)).round().astype(np.int64))
    acc = {}
    for split in ("validation", "test"):
        for neg in NEGATIVE_PROTOCOLS:
            if neg == "category" or cat.has_protocol(neg):
                pairs = cat.pairs(split, neg)
                acc[(split, neg)] = link_prediction_report(cat, pairs, scorer.pair_logits(pairs), run.relations)
    out = {"relations": {}}
    for r in run.relations:
        ri = RELATIONS.index(r)
        e = {}
        for policy in policies:
            top = policy_lists(rec, cat, q, r, policy)
            g = _grade(attrs, user_attr, q, top, ri, -1)
            e[policy] = {key: g[key] for key in ("precision", "precision_of_ideal", "own_category", "ideal")}
            if variants > 1:
                e[policy]["dup_lead"] = float((top[:, 0] // variants == q // variants).mean())
        for (split, neg), rep in acc.items():
            e[f"{'val' if split == 'validation' else 'test'}_{neg}"] = rep["relations"][r]["accuracy"] if r in rep.get("relations", {}) else None
        out["relations"][r] = e
    return out


def parse_sets(items: list[str]) -> dict:
    out = {}
    for it in items:
        k, _, v = it.partition("=")
        out[k] = json.loads(v)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="60,200,500")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--variants", type=int, default=3)
    ap.add_argument("--noise", type=float, default=4.0)
    ap.add_argument("--users", type=int, default=0)
    ap.add_argument("--tag", default="defaults")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--work", default="/tmp/i31-work")
    ap.add_argument("--out", default="experiments/results/small_catalogs.jsonl")
    ap.add_argument("--keep-runs", action="store_true")
    ap.add_argument("--eval-only", action="store_true", help="re-evaluate kept runs (--keep-runs) without training")
    ap.add_argument("--policies", default="keep,demote,collapse",
                    help="list policies to grade (collapse can return fewer than k items on larger catalogs: leave it out there)")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if out.exists():
        for line in out.read_text().splitlines():
            d = json.loads(line)
            done.add((d["tag"], d["items"], d["seed"], d["variants"], d["noise"], d["users"]))
    overrides = parse_sets(a.set)
    for items in [int(x) for x in a.sizes.split(",")]:
        for seed in [int(x) for x in a.seeds.split(",")]:
            key = (a.tag, items, seed, a.variants, a.noise, a.users)
            if key in done:
                continue
            cat = catalog_for(work, items, seed, a.variants, a.noise, a.users)
            cfg = TrainConfig(seed=seed, **{"min_steps": DEFAULT_MIN_STEPS, **overrides})  # what `lrprec train` uses
            run_dir = work / f"run-{a.tag}-n{items}-v{a.variants}-seed{seed}"
            t0 = time.perf_counter()
            if a.eval_only and (run_dir / "history.json").exists():
                res = json.loads((run_dir / "history.json").read_text())
            else:
                res = train(cat, run_dir, cfg, progress=False, log=lambda m: None)
            secs = time.perf_counter() - t0
            ev = evaluate(run_dir, a.variants, policies=tuple(a.policies.split(",")))
            row = {"tag": a.tag, "items": items, "seed": seed, "variants": a.variants, "noise": a.noise, "users": a.users,
                   "set": overrides, "best_epoch": res["best"]["epoch"], "epochs_run": len(res["epochs"]),
                   "train_seconds": round(secs, 1), **ev}
            with out.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            summary = " ".join(f"{r[:6]}:{e[p]['precision_of_ideal']:.2f}/{e[p]['own_category']:.2f}/{e[p].get('dup_lead', 0):.2f}"
                               for p in ("keep", "demote") for r, e in ev["relations"].items())
            print(f"{a.tag} n={items} seed={seed} {secs:.0f}s best {res['best']['epoch']}/{len(res['epochs'])}  {summary}", flush=True)
            if not a.keep_runs:
                shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
