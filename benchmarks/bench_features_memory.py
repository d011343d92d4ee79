"""Features mode ([M15]) on a 50,000-item ``.b`` file: resident memory against the file size.

1. writes, in chunks, a ``image_features_<Cat>.b`` of N items (10-byte ASIN + 4096 float32,
   16,394 bytes a record: 820 MB at N = 50,000) and a gzip meta file of Python-literal lines
   whose ``related`` lists have planted structure (items of one cluster share a feature
   centroid and relate to each other), into a scratch folder that is deleted at the end;
2. imports them with ``lrprec import amazon2014 --features`` in a child process;
3. trains ``lrprec train --mode features`` for ``--epochs`` in child processes, each reaped
   with ``os.wait4`` so its own ``ru_maxrss`` (peak resident set, file-backed pages of
   memory maps included) is read; variants:
   * ``current``: the trainer as it is;
   * ``streamed``: the same trainer, with ``embed_items`` replaced by
     :class:`lrprec.evaluate.baselines.LazyFeatures` (rows gathered per batch through a
     mapping that is dropped after each gather) -- the fix proposed for ``trainer.py``;
4. optionally evaluates the run (``evaluate_run``) and fits the WNN baseline for one epoch,
   each in its own child, and measures an idle child (interpreter + torch + lrprec) for
   reference.

    .venv/bin/python benchmarks/bench_features_memory.py [--items 50000] [--epochs 1]
        [--variants current,streamed] [--evaluate] [--wnn] [--tmp /tmp]
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lrprec.data.amazon_features import FEATURE_DIM, feature_dtype

MB = 1024 * 1024
SRC = str(Path(__file__).resolve().parents[1] / "src")
CATEGORIES = ["Clothing, Shoes & Jewelry", "Shoes", "Jewelry", "Watches", "Luggage"]


def asin(k: int) -> str:
    return f"B{k:09d}"


def write_inputs(folder: Path, n: int, clusters: int, related: int, seed: int = 0, chunk: int = 1024) -> tuple[Path, Path]:
    """meta_Bench.json.gz and image_features_Bench.b with planted cluster structure."""
    rng = np.random.default_rng(seed)
    cl = rng.integers(clusters, size=n)
    members = [np.flatnonzero(cl == c) for c in range(clusters)]
    meta = folder / "meta_Bench.json.gz"
    with gzip.open(meta, "wt", encoding="utf-8", compresslevel=1) as f:
        for k in range(n):
            mates = members[cl[k]]
            rel = {}
            for r in ("also_bought", "also_viewed"):
                pick = mates[rng.integers(len(mates), size=related)]
                rel[r] = [asin(int(j)) for j in pick if j != k]
            rec = {"asin": asin(k), "title": f"Item {k}'s \"bench\" – {cl[k]}", "imUrl": f"http://example.invalid/{k}.jpg",
                   "categories": [[CATEGORIES[cl[k] % len(CATEGORIES)], "Leaf"]], "related": rel}
            f.write(repr(rec) + "\n")
    cent = np.maximum(rng.standard_normal((clusters, FEATURE_DIM), dtype=np.float32), 0)
    b = folder / "image_features_Bench.b"
    dt = feature_dtype()
    with open(b, "wb") as f:
        for s in range(0, n, chunk):
            c = min(chunk, n - s)
            rec = np.zeros(c, dtype=dt)
            rec["asin"] = [asin(k).encode("ascii") for k in range(s, s + c)]
            x = cent[cl[s:s + c]] + 0.5 * rng.standard_normal((c, FEATURE_DIM), dtype=np.float32)
            rec["f"] = np.maximum(x, 0)
            f.write(rec.tobytes())
    return meta, b



SAMPLER = r"""
import threading, time as _t
_peak = {"RssAnon": 0, "RssFile": 0, "RssShmem": 0}
def _sample():
    while True:
        try:
            for line in open("/proc/self/status"):
                k = line.split(":")[0]
                if k in _peak:
                    _peak[k] = max(_peak[k], int(line.split()[1]) * 1024)
        except OSError:
            pass
        _t.sleep(0.05)
threading.Thread(target=_sample, daemon=True).start()
"""

TRAIN_CHILD = SAMPLER + r"""
import json, resource, sys, time
import torch
torch.set_num_threads(int(sys.argv[5]))
import lrprec.train.trainer as trainer
from lrprec.train import TrainConfig, train
variant, data, out, epochs, threads, dim, batch, cap = sys.argv[1:9]
if variant == "streamed":
    from lrprec.evaluate.baselines import LazyFeatures
    orig = trainer.embed_items
    def embed_items(model, catalog, input_size, batch_size=256, progress=False):
        if model.backbone.kind == "features":
            return LazyFeatures(catalog.features)
        return orig(model, catalog, input_size, batch_size, progress)
    trainer.embed_items = embed_items
t = time.perf_counter()
h = train(data, out, TrainConfig(backbone="features", dim=int(dim), epochs=int(epochs), batch_size=int(batch), steps_per_epoch=int(cap) or None), progress=False, log=lambda m: print(m, file=sys.stderr))
print(json.dumps({"seconds": time.perf_counter() - t, "history": h["epochs"], "best": h["best"],
                  "self_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "peaks": _peak}))
"""

EVAL_CHILD = SAMPLER + r"""
import json, resource, sys, time
import torch
torch.set_num_threads(int(sys.argv[2]))
import lrprec.evaluate.linkpred as linkpred
from lrprec.app.evaluation import evaluate_run
if sys.argv[3] == "streamed":  # the fix proposed for run.item_inputs: rows read with pread, no map
    from lrprec.evaluate.baselines import LazyFeatures
    orig, lazy = linkpred.item_inputs, {}
    def item_inputs(catalog, model, rows, input_size=None):
        if model.backbone.kind != "features":
            return orig(catalog, model, rows, input_size)
        key = id(catalog)
        if key not in lazy:
            lazy[key] = LazyFeatures(catalog.features)
        return torch.from_numpy(lazy[key].rows(rows))
    linkpred.item_inputs = item_inputs
t = time.perf_counter()
rep = evaluate_run(sys.argv[1])
print(json.dumps({"seconds": time.perf_counter() - t, "overall": rep["overall"], "self_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "peaks": _peak}))
"""

WNN_CHILD = SAMPLER + r"""
import json, resource, sys, time
import torch
torch.set_num_threads(int(sys.argv[2]))
from lrprec.evaluate.baselines import WNNConfig, evaluate_baseline
t = time.perf_counter()
rep = evaluate_baseline(sys.argv[1], "wnn", wnn=WNNConfig(epochs=int(sys.argv[3])))
w = rep["wnn"]
print(json.dumps({"seconds": time.perf_counter() - t, "overall": rep["overall"], "history": w["history"],
                  "self_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "peaks": _peak}))
"""

IDLE_CHILD = SAMPLER + r"""
import json, resource
import torch, numpy, pyarrow.parquet
import lrprec.train.trainer, lrprec.evaluate.baselines, lrprec.evaluate.linkpred
print(json.dumps({"self_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "peaks": _peak}))
"""


def child(args: list[str], label: str) -> dict:
    """Run a child python, reap it with wait4 and return its JSON line plus its own peak RSS."""
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t = time.perf_counter()
        proc = subprocess.Popen([sys.executable, *args], stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t
        out.seek(0)
        err.seek(0)
        text, log = out.read(), err.read()
    if proc.returncode != 0:
        raise SystemExit(f"{label} failed (exit {proc.returncode}):\n{log[-4000:]}")
    try:
        res = json.loads(text)  # a whole-stdout JSON document (``--json`` of the CLI)
    except json.JSONDecodeError:
        lines = [line for line in text.splitlines() if line.startswith("{")]
        res = json.loads(lines[-1]) if lines else {}
    res.update({"maxrss": usage.ru_maxrss * 1024, "wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "log": log})
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=50_000)
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--related", type=int, default=2, help="related ASINs per relation and item (also_bought, also_viewed)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--dim", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", default="current,streamed")
    ap.add_argument("--evaluate", action="store_true", help="also evaluate the last run on the test split (own child)")
    ap.add_argument("--wnn", action="store_true", help="also fit WNN for one epoch (own child)")
    ap.add_argument("--steps-per-epoch", type=int, default=0, help="cap on optimizer steps per epoch (0: whole epoch)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder (for a rerun with --reuse)")
    ap.add_argument("--reuse", default=None, help="a kept scratch folder: skip generation and import")
    ap.add_argument("--tmp", default=None, help="scratch folder (needs ~2 x 16 KB per item)")
    args = ap.parse_args()
    scratch = Path(args.reuse) if args.reuse else Path(tempfile.mkdtemp(prefix="lrprec-featmem-", dir=args.tmp))
    results: dict = {"items": args.items}
    try:
        cat = scratch / "cat"
        if args.reuse:
            b = scratch / "image_features_Bench.b"
            results["file_bytes"] = b.stat().st_size
            results["items"] = args.items = int(json.loads((cat / "catalog.json").read_text())["import_report"]["items"])
            results["import"] = {"maxrss": 0, "wall": 0.0, "cpu": 0.0}
        else:
            t = time.perf_counter()
            meta, b = write_inputs(scratch, args.items, args.clusters, args.related)
            results["generate_seconds"] = time.perf_counter() - t
            results["file_bytes"] = b.stat().st_size
            print(f"generated {b.name}: {results['file_bytes'] / MB:,.0f} MiB in {results['generate_seconds']:.0f} s", flush=True)
            imp = child(["-m", "lrprec", "import", "amazon2014", "--meta", str(meta), "--features", str(b), "--out", str(cat), "--json", "--no-progress"], "import")
            results["import"] = {k: imp[k] for k in ("maxrss", "wall", "cpu")}
            results["import"].update({k: imp.get(k) for k in ("items", "relations")})
            print(f"imported: {imp.get('items')} items, relations {imp.get('relations')}, {imp['wall']:.0f} s, peak RSS {imp['maxrss'] / MB:,.0f} MiB", flush=True)
        idle = child(["-c", IDLE_CHILD], "idle")
        results["idle_maxrss"] = idle["maxrss"]
        results["idle_peaks"] = idle.get("peaks")
        run = None
        for v in [v.strip() for v in args.variants.split(",") if v.strip()]:
            run = scratch / f"run-{v}"
            r = child(["-c", TRAIN_CHILD, v, str(cat), str(run), str(args.epochs), str(args.threads), str(args.dim), str(args.batch_size), str(args.steps_per_epoch)], f"train {v}")
            results[f"train_{v}"] = {k: r.get(k) for k in ("maxrss", "self_maxrss", "peaks", "wall", "cpu", "seconds", "history", "best")}
            pps = [e["pairs_per_second"] for e in r["history"]]
            print(f"train {v}: peak RSS {r['maxrss'] / MB:,.0f} MiB ({r['maxrss'] / results['file_bytes']:.2f} x file), "
                  f"{r['seconds']:.0f} s, pairs/s {pps}, val acc {r['best']['val_accuracy']:.3f}", flush=True)
        if args.evaluate and run is not None:
            for v in ("current", "streamed"):
                r = child(["-c", EVAL_CHILD, str(run), str(args.threads), v], f"evaluate {v}")
                results[f"evaluate_{v}"] = {k: r.get(k) for k in ("maxrss", "peaks", "wall", "seconds", "overall")}
                print(f"evaluate {v}: peak RSS {r['maxrss'] / MB:,.0f} MiB, {r['seconds']:.0f} s, test acc {r['overall']['accuracy']:.3f}", flush=True)
        if args.wnn:
            r = child(["-c", WNN_CHILD, str(cat), str(args.threads), "1"], "wnn")
            results["wnn"] = {k: r.get(k) for k in ("maxrss", "peaks", "wall", "seconds", "overall", "history")}
            print(f"wnn: peak RSS {r['maxrss'] / MB:,.0f} MiB, {r['seconds']:.0f} s, pairs/s {[e['pairs_per_second'] for e in r['history']]}, "
                  f"test acc {r['overall']['accuracy']:.3f}", flush=True)
    finally:
        if args.keep or args.reuse:
            print(f"scratch kept: {scratch} (delete it when done)")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    fb = results["file_bytes"]
    print()
    print(f"| measure ({args.items:,} items, .b file {fb / MB:,.0f} MiB, K={args.dim}, batch {args.batch_size}, {args.threads} threads) "
          "| peak RSS (MiB) | RSS / file | peak anon / file-backed (MiB) | time | pairs/s |")
    print("|---|---|---|---|---|---|")

    def row(what: str, r: dict, time_s: str = "", pps: str = "") -> None:
        pk = r.get("peaks") or {}
        split = f"{pk.get('RssAnon', 0) / MB:,.0f} / {pk.get('RssFile', 0) / MB:,.0f}" if pk else ""
        print(f"| {what} | {r['maxrss'] / MB:,.0f} | {r['maxrss'] / fb:.2f} | {split} | {time_s} | {pps} |")

    row("idle child: python + torch + lrprec imported", {"maxrss": results["idle_maxrss"], "peaks": results.get("idle_peaks")})
    if results["import"]["maxrss"]:
        row("import amazon2014 --features", results["import"], f"{results['import']['wall']:.0f} s")
    cap = f", {args.steps_per_epoch} steps" if args.steps_per_epoch else ""
    for key, what in (("train_current", "train --mode features, trainer as is"), ("train_streamed", "train --mode features, LazyFeatures gather")):
        if key in results:
            r = results[key]
            row(f"{what} ({args.epochs} epoch{cap})", r, f"{r['seconds']:.0f} s", ", ".join(f"{e['pairs_per_second']:,.0f}" for e in r["history"]))
    for v, what in (("current", "run.item_inputs as is"), ("streamed", "LazyFeatures rows")):
        if f"evaluate_{v}" in results:
            r = results[f"evaluate_{v}"]
            row(f"evaluate_run (test split), {what}", r, f"{r['seconds']:.0f} s")
    if "wnn" in results:
        r = results["wnn"]
        row("WNN baseline, 1 epoch + test", r, f"{r['seconds']:.0f} s", ", ".join(f"{e['pairs_per_second']:,.0f}" for e in r["history"]))
    print(f"\n{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} at the end (wall-clock timings; other processes share the cores).")
    print(json.dumps({k: v for k, v in results.items()}, default=str)[:4000])


if __name__ == "__main__":
    main()
