"""Shortcut-removal grid (issue 14): training settings × seeds on the default shortcut catalog, in parallel.

Each run trains with the library's default training settings plus the given overrides (e.g.
``{"guide": "lrp"}``, ``{"guide": "gradient"}``, ``{"mark_augment": 0.5}``) on the default
synthetic catalog of its seed with a planted shortcut (``--spurious 0.9``), then measures the
shortcut twice — behaviour on **validation** pairs (to choose settings) and on **test** pairs
(to report): accuracy where the mark agrees / disagrees with the label, the counterfactual
shortcut sensitivity, and the mark's relevance share under the guidance composite and under
integrated gradients (an explainer no training penalized).

Usage:
  python experiments/guidance_grid.py OUT --seeds 0 1 2 --jobs 8 \\
      --config unguided='{}' --config lrp='{"guide": "lrp"}' [--device cpu|cuda] [--budget SECONDS]
Writes OUT/<config>-<seed>.json per run and OUT/grid.json; prints one table row per config.
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stability_grid import grid_args, run_grid  # noqa: E402


def make_catalog(out: Path, seed: int) -> Path:
    from lrprec.data.synthetic import SynthConfig, generate

    path = out / f"sc-{seed}"
    if not (path / "items.parquet").exists():
        generate(path, SynthConfig(seed=seed, spurious=0.9), progress=False)
    return path


def _behaviour(rep: dict) -> dict:
    ind = rep.get("independent") or {}
    return {"accuracy": rep["test_accuracy"], "agrees": rep["test_accuracy_mark_agrees"], "disagrees": rep["test_accuracy_mark_disagrees"],
            "sensitivity": rep["counterfactual"]["sensitivity"], "share_guide": rep["mark_share"], "share_ig": ind.get("mark_share"),
            "alarm": rep["alarm"]}


def one_run(out: str, name: str, overrides: dict, seed: int, device: str, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    from lrprec.app.evaluation import shortcut_report
    from lrprec.train.trainer import TrainConfig, train

    out_p = Path(out)
    run = out_p / f"run-{name}-{seed}"
    t0 = time.time()
    try:
        with open(out_p / f"run-{name}-{seed}.log", "w") as log:
            hist = train(out_p / f"sc-{seed}", run, TrainConfig(seed=seed, device=device, **overrides), progress=False,
                         log=lambda m: (log.write(m + "\n"), log.flush()))
        res = {"config": name, "overrides": overrides, "seed": seed, "train_seconds": round(time.time() - t0, 1), "best": hist["best"],
               "val_curve": [round(e["val_accuracy"], 4) for e in hist["epochs"]]}
        for split in ("validation", "test"):
            try:
                rep = shortcut_report(run, split=split)
            except Exception as exc:  # e.g. no captum on this machine: the independent explainer runs later
                res["independent_error"] = repr(exc)
                rep = shortcut_report(run, split=split, independent_pairs=0)
            res[split] = _behaviour(rep)
        res["seconds"] = round(time.time() - t0, 1)
    except Exception:  # one failed run must not lose the others
        res = {"config": name, "seed": seed, "error": traceback.format_exc()}
    (out_p / f"{name}-{seed}.json").write_text(json.dumps(res, indent=1))
    return res


def _fmt(values: list, pct: bool = True) -> str:
    v = [x for x in values if x is not None]
    if not v:
        return "-"
    f = 100.0 if pct else 1.0
    sd = statistics.stdev(v) * f if len(v) > 1 else 0.0
    return f"{statistics.mean(v) * f:.1f} ± {sd:.1f}" if pct else f"{statistics.mean(v):+.3f} ± {sd:.3f}"


def summarize(results: list[dict], split: str = "test") -> str:
    rows = [f"| config ({split}) | runs | accuracy % | mark agrees % | mark disagrees % (min) | sensitivity | "
            "mark share, guide composite % | mark share, IG % | alarms |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    by: dict[str, list[dict]] = {}
    for r in results:
        by.setdefault(r["config"], []).append(r)
    for name, rs in by.items():
        ok = [r[split] for r in rs if split in r]
        if not ok:
            rows.append(f"| {name} | 0 |")
            continue
        dis = [b["disagrees"] for b in ok]
        rows.append(f"| {name} | {len(ok)} | {_fmt([b['accuracy'] for b in ok])} | {_fmt([b['agrees'] for b in ok])} | "
                    f"{_fmt(dis)} ({100 * min(dis):.1f}) | {_fmt([b['sensitivity'] for b in ok], pct=False)} | "
                    f"{_fmt([b['share_guide'] for b in ok])} | {_fmt([b['share_ig'] for b in ok])} | {sum(b['alarm'] is not None for b in ok)} |")
    return "\n".join(rows)


def main() -> None:
    args = grid_args(__doc__)
    results = run_grid(args, make_catalog, one_run,
                       lambda r: f"val acc {r['best']['val_accuracy']:.3f}, test disagrees {r['test']['disagrees']:.3f}, "
                                 f"sensitivity {r['test']['sensitivity']:+.3f}, {r['seconds']} s")
    print(summarize(results, "validation"), flush=True)
    print(summarize(results, "test"), flush=True)
    os._exit(0)  # runs cut by the budget may still hold the pool


if __name__ == "__main__":
    sys.exit(main())
