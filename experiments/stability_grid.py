"""Training-stability grid (issue 19): several training settings × several seeds, in parallel.

Each run trains on the default synthetic catalog of its seed and is scored on the
**validation** split (pair accuracy under both negative protocols, precision@10 against the
catalog's rules), so a default chosen from this grid is chosen on validation pairs.

Usage:
  python experiments/stability_grid.py OUT --seeds 0 1 2 3 --jobs 8 \
      --config default='{}' --config warmup='{"warmup_epochs": 1}' [--device cpu|cuda] [--budget SECONDS]
Writes OUT/<config>-<seed>.json per run and OUT/grid.json, prints one table row per config.
A run whose validation accuracy never reaches 0.9 counts as stalled.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, wait, FIRST_COMPLETED
from pathlib import Path

RELS = ("also_viewed", "buy_after_viewing", "also_bought", "bought_together")


def make_catalog(out: Path, seed: int) -> Path:
    from lrprec.data.synthetic import SynthConfig, generate

    path = out / f"data-{seed}"
    if not (path / "items.parquet").exists():
        generate(path, SynthConfig(seed=seed), progress=False)
    return path


def one_run(out: str, name: str, overrides: dict, seed: int, device: str, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    from lrprec.app.evaluation import evaluate_run
    from lrprec.train.trainer import TrainConfig, train

    out_p = Path(out)
    data = out_p / f"data-{seed}"
    run = out_p / f"run-{name}-{seed}"
    t0 = time.time()
    try:
        with open(out_p / f"run-{name}-{seed}.log", "w") as log:
            hist = train(data, run, TrainConfig(seed=seed, device=device, **overrides), progress=False,
                         log=lambda m: (log.write(m + "\n"), log.flush()))
        rep = evaluate_run(run, split="validation")
        truth = rep["truth"]["relations"]
        res = {
            "config": name, "overrides": overrides, "seed": seed, "seconds": round(time.time() - t0, 1),
            "val_curve": [round(e["val_accuracy"], 4) for e in hist["epochs"]],
            "best": hist["best"],
            "acc_category": {r: rep["protocols"]["category"]["relations"][r]["accuracy"] for r in RELS},
            "acc_random": {r: rep["protocols"]["random"]["relations"][r]["accuracy"] for r in RELS},
            "precision": {r: truth[r]["precision"] for r in RELS},
            "users": {r: truth[r].get("users_precision") for r in RELS if truth[r].get("users_precision") is not None},
            "users_min": {r: truth[r].get("users_min_precision") for r in RELS if truth[r].get("users_min_precision") is not None},
            "users_each": {r: {u: v["precision"] for u, v in truth[r]["users"].items()} for r in RELS if "users" in truth[r]},
        }
    except Exception:  # one failed run must not lose the others
        res = {"config": name, "seed": seed, "error": traceback.format_exc()}
    (out_p / f"{name}-{seed}.json").write_text(json.dumps(res, indent=1))
    return res


def summarize(results: list[dict]) -> str:
    rows = ["| config | runs | stalled (best val < 0.9) | best val acc mean / min | min relation acc (random neg.) mean / min | "
            "min precision@10 mean / min | users mean | users min | seconds |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    by: dict[str, list[dict]] = {}
    for r in results:
        by.setdefault(r["config"], []).append(r)
    for name, rs in by.items():
        ok = [r for r in rs if "error" not in r]
        if not ok:
            rows.append(f"| {name} | 0 (errors: {len(rs)}) |")
            continue
        best = [r["best"]["val_accuracy"] for r in ok]
        minacc = [min(r["acc_random"].values()) for r in ok]
        minp = [min(r["precision"].values()) for r in ok]
        users = [statistics.mean(r["users"].values()) for r in ok if r["users"]]
        users_min = [min(r["users_min"].values()) for r in ok if r.get("users_min")]
        rows.append(f"| {name} | {len(ok)} | {sum(b < 0.9 for b in best)} | {statistics.mean(best):.3f} / {min(best):.3f} | "
                    f"{statistics.mean(minacc):.3f} / {min(minacc):.3f} | {statistics.mean(minp):.3f} / {min(minp):.3f} | "
                    f"{statistics.mean(users) if users else float('nan'):.2f} | {min(users_min) if users_min else float('nan'):.2f} | "
                    f"{statistics.mean(r['seconds'] for r in ok):.0f} |")
    return "\n".join(rows)


def run_grid(args: argparse.Namespace, make_catalog, one_run, line) -> list[dict]:
    """Make every seed's catalog, run every (config, seed) on ``args.jobs`` processes, print a line per run
    (``line(result)``), stop waiting after ``args.budget`` seconds; writes OUT/grid.json, returns the results."""
    args.out.mkdir(parents=True, exist_ok=True)
    configs = {}
    for c in args.config:
        name, _, js = c.partition("=")
        configs[name] = json.loads(js or "{}")
    t0 = time.time()
    with ProcessPoolExecutor(max_workers=min(args.jobs, len(args.seeds))) as ex:
        list(ex.map(make_catalog, [args.out] * len(args.seeds), args.seeds))
    print(f"catalogs ready in {time.time() - t0:.0f} s", flush=True)
    results = []
    ex = ProcessPoolExecutor(max_workers=args.jobs)
    # seeds outermost within a config round-robin: a budget cut leaves every config with some seeds
    futs = [ex.submit(one_run, str(args.out), n, ov, s, args.device, args.threads) for s in args.seeds for n, ov in configs.items()]
    pending = set(futs)
    while pending:
        left = None if args.budget is None else max(0.0, args.budget - (time.time() - t0))
        done, pending = wait(pending, timeout=left, return_when=FIRST_COMPLETED)
        for f in done:
            r = f.result()
            results.append(r)
            print(f"[{time.time() - t0:.0f} s] {r['config']} seed {r['seed']}: "
                  + ("ERROR " + r["error"].splitlines()[-1] if "error" in r else line(r)), flush=True)
        if not done and args.budget is not None:
            print(f"budget of {args.budget} s spent; {len(pending)} runs unfinished", flush=True)
            break
    (args.out / "grid.json").write_text(json.dumps(results, indent=1))
    if pending:  # runs cut by the budget: end them and leave without waiting
        for proc in list(getattr(ex, "_processes", {}).values()):
            proc.kill()
    else:
        ex.shutdown(wait=True)
    return results


def grid_args(doc: str | None) -> argparse.Namespace:
    """The command line every grid script takes (OUT, seeds, configs, parallelism, device, time budget)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--config", action="append", required=True, help="NAME=JSON overrides of TrainConfig")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--budget", type=float, default=None, help="stop waiting after this many seconds")
    return ap.parse_args()


def main() -> None:
    args = grid_args(__doc__)
    results = run_grid(args, make_catalog, one_run,
                       lambda r: f"best val {r['best']['val_accuracy']:.3f} (epoch {r['best']['epoch']}), "
                                 f"min precision {min(r['precision'].values()):.3f}, {r['seconds']} s")
    print(summarize(results), flush=True)
    os._exit(0)  # runs cut by the budget may still hold the pool


if __name__ == "__main__":
    sys.exit(main())
