"""Issue 26's experiment: find and fix a Clever Hans without being told the artifact.

For each artifact kind (``mark``, ``tint``; ``clean`` = the default catalog without an artifact) and
seed: make the catalog, train the plain model (today's defaults) and, on artifact catalogs, the
oracle (``--mark-augment 0.5``: counterfactual augmentation with the *known* artifact); audit the
plain model (``lrprec audit``), correct it with each method (``lrprec correct``; where the audit
flags nothing, ``correct`` refuses and the model stays as it is), then measure every model: the shortcut report (test split, behaviour and
probe; validation split for choosing the method) or, on clean catalogs, test accuracy.

Every step is skipped when its output exists, so the script resumes and reuses runs made by hand
with the same layout: catalogs ``OUT/<kind>-<seed>``, runs ``OUT/runs/<kind>-<seed>-<variant>``.

    python experiments/audit_correct.py OUT --kinds mark tint clean --seeds 0 1 2 --epochs 10 --jobs 2 \\
        --json experiments/results/audit_correct.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # this worktree's lrprec, not an installed one
METHODS = ("p-clarc", "rr-clarc", "a-clarc", "augment", "auto")  # auto: the default `lrprec correct RUN --out RUN2`


def lrprec(*args: str, log: Path | None = None) -> float:
    """Run ``python -m lrprec ARGS`` on one thread; returns the wall seconds (raises on failure)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    t0 = time.perf_counter()
    with open(log or os.devnull, "w") as fh:
        subprocess.run([sys.executable, "-m", "lrprec", *args], check=True, env=env, stdout=fh, stderr=subprocess.STDOUT)
    return time.perf_counter() - t0


def run_parallel(jobs: list, n: int) -> list:
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda f: f(), jobs))


def catalog(out: Path, kind: str, seed: int) -> Path:
    path = out / f"{kind}-{seed}"
    if not (path / "catalog.json").exists():
        extra = [] if kind == "clean" else ["--spurious", "0.9", "--spurious-kind", kind]
        lrprec("synth", str(path), "--seed", str(seed), *extra)
    return path


def train_job(out: Path, kind: str, seed: int, variant: str, epochs: int, extra: list[str]):
    run = out / "runs" / f"{kind}-{seed}-{variant}"

    def job():
        if (run / "config.json").exists():
            return
        lrprec("train", str(out / f"{kind}-{seed}"), "--out", str(run), "--seed", str(seed), "--epochs", str(epochs), *extra,
               log=run.with_suffix(".log"))
    return job


def correct_job(out: Path, kind: str, seed: int, method: str, timings: dict):
    plain = out / "runs" / f"{kind}-{seed}-plain"
    run = out / "runs" / f"{kind}-{seed}-{method}"

    def job():
        if (run / "config.json").exists():
            return
        audit = json.loads((plain / "audit" / "audit.json").read_text())
        if audit["flagged"] is None:  # nothing flagged: correct refuses, the model stays as it is (a user's default path)
            return
        timings[f"{kind}-{seed}-{method}"] = lrprec("correct", str(plain), "--out", str(run), "--method", method,
                                                    log=run.with_suffix(".log"))
    return job


def measure(run: Path, kind: str, split: str) -> dict | None:
    """The shortcut report (artifact catalogs) or plain accuracy (clean ones) of a run on ``split``."""
    if not (run / "config.json").exists():
        return None
    if kind != "clean":
        from lrprec.app.evaluation import shortcut_report

        r = shortcut_report(run, split=split, independent_pairs=0)
        return {"accuracy": r["test_accuracy"], "agrees": r["test_accuracy_mark_agrees"], "disagrees": r["test_accuracy_mark_disagrees"],
                "sensitivity": r["counterfactual"]["sensitivity"], "mark_share": r["mark_share"], "mark_area": r["mark_area"],
                "probe": r["probe"], "probe_decision": decision_probe(run), "alarm": r["alarm"]}
    from lrprec.run import Run, predict_logits

    rr = Run.load(run)
    p = rr.catalog.pairs(split)
    return {"accuracy": float(((predict_logits(rr.model, rr.catalog, p, input_size=rr.input_size) > 0) == (p.label == 1)).mean())}


def decision_probe(run: Path) -> dict:
    """The probe on what the pair head's distance reads (θ-weighted relation embeddings, both sides) instead of the
    backbone features the shortcut report probes (which the appearance decoder also reads)."""
    from lrprec.evaluate.probe import decision_features, linear_probe, variance_share
    from lrprec.run import Run, embed_items

    rr = Run.load(run)
    feats = embed_items(rr.model, rr.catalog, rr.input_size)
    tags = np.load(rr.catalog.root / "shortcut_tags.npy")
    dec = decision_features(rr.model, feats).double().numpy()
    return {**linear_probe(dec, tags), "variance_share": variance_share(dec, tags),
            "backbone_variance_share": variance_share(feats.double().numpy(), tags)}


def audit_summary(run: Path, kind: str) -> dict:
    from lrprec.data.watermark import watermark_box

    a = json.loads((run / "audit" / "audit.json").read_text())
    top = max(a["clusters"], key=lambda c: c["score"])
    flagged = next((c for c in a["clusters"] if c["id"] == a["flagged"]), None)
    out = {"n_clusters": a["n_clusters"], "flagged": a["flagged"], "seconds": a["seconds"], "top_score": top["score"],
           "scores": [c["score"] for c in a["clusters"]], "sizes": [c["size"] for c in a["clusters"]],
           "tests": {c["id"]: c["tests"] for c in a["clusters"]}}
    if kind == "mark" and flagged is not None:
        region = np.load(run / "audit" / flagged["region"])
        o, m = watermark_box(region.shape[0])
        out["flagged_mass_in_mark_box"] = float(np.abs(region[o:o + m, o:o + m]).sum() / np.abs(region).sum())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--kinds", nargs="+", default=["mark", "tint", "clean"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=20, help="training epochs of new plain/oracle runs (existing runs are kept as they are)")
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--no-train", action="store_true", help="only audit/correct/measure the runs that exist")
    ap.add_argument("--no-correct", action="store_true", help="only measure the corrections that exist")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    out = args.out
    (out / "runs").mkdir(parents=True, exist_ok=True)
    cells = [(k, s) for k in args.kinds for s in args.seeds]
    for k, s in cells:
        catalog(out, k, s)
    if not args.no_train:
        jobs = [train_job(out, k, s, "plain", args.epochs, []) for k, s in cells]
        jobs += [train_job(out, k, s, "oracle", args.epochs, ["--mark-augment", "0.5"]) for k, s in cells if k != "clean"]
        run_parallel(jobs, args.jobs)
    timings: dict[str, float] = {}
    for k, s in cells:  # audits one at a time: they are short, and their time is a target
        plain = out / "runs" / f"{k}-{s}-plain"
        if (plain / "config.json").exists() and not (plain / "audit" / "audit.json").exists():
            timings[f"{k}-{s}-audit"] = lrprec("audit", str(plain), log=plain / "audit.log")
    if not args.no_correct:
        run_parallel([correct_job(out, k, s, m, timings) for k, s in cells for m in args.methods
                      if (out / "runs" / f"{k}-{s}-plain" / "audit" / "audit.json").exists()], args.jobs)
    results = []
    for k, s in cells:
        plain = out / "runs" / f"{k}-{s}-plain"
        row = {"kind": k, "seed": s, "audit": audit_summary(plain, k) if (plain / "audit" / "audit.json").exists() else None, "models": {}}
        for variant in ["plain", "oracle", *args.methods]:
            run = out / "runs" / f"{k}-{s}-{variant}"
            if (run / "config.json").exists():
                cfg = json.loads((run / "config.json").read_text())
                row["models"][variant] = {"epochs": cfg.get("epochs"), "test": measure(run, k, "test"),
                                          # the method is chosen on validation pairs; plain and oracle are only reported
                                          "validation": measure(run, k, "validation") if variant in METHODS else None}
        results.append(row)
        print(json.dumps({"kind": k, "seed": s, "flagged": (row["audit"] or {}).get("flagged"),
                          **{v: round(m["test"]["accuracy"], 3) for v, m in row["models"].items()}}), flush=True)
    doc = {"command": " ".join(sys.argv), "timings_s": timings, "results": results}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2))
    print(table(results))


def table(results: list[dict]) -> str:
    """Markdown: one row per (kind, seed, model) with the test figures and the audit's verdict."""
    pct = lambda v: "–" if v is None else f"{100 * v:.1f}"  # noqa: E731
    lines = ["| catalog | seed | model | epochs | test acc. | artifact agrees | disagrees | sensitivity | probe (chance) | decision probe | alarm |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for row in results:
        for variant, m in row["models"].items():
            t = m["test"] or {}
            probe = t.get("probe")
            sens = t.get("sensitivity")
            probe_s = "–" if not probe else f"{pct(probe['accuracy'])} ({pct(probe['chance'])})"
            sens_s = "–" if sens is None else f"{sens:+.3f}"
            dec = (t.get("probe_decision") or {}).get("accuracy")
            lines.append(f"| {row['kind']} | {row['seed']} | {variant} | {m['epochs']} | {pct(t.get('accuracy'))} | {pct(t.get('agrees'))} | "
                         f"{pct(t.get('disagrees'))} | {sens_s} | {probe_s} | {pct(dec)} | {'yes' if t.get('alarm') else 'no'} |")
    lines += ["", "| catalog | seed | clusters | flagged | top score | flagged cluster's mass in the mark's box | audit s |", "|---|---:|---:|---|---:|---:|---:|"]
    for row in results:
        a = row["audit"]
        if a:
            box = a.get("flagged_mass_in_mark_box")
            lines.append(f"| {row['kind']} | {row['seed']} | {a['n_clusters']} | {'none' if a['flagged'] is None else a['flagged']} | "
                         f"{a['top_score']:+.3f} | {'–' if box is None else pct(box)} | {a['seconds']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
