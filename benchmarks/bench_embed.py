"""Benchmark ``lrprec embed`` (issue 27): 2 processes (torchrun, gloo) vs 1 on the same catalog and model.

A synthetic image catalog of ``--items`` items (64 px) and an untrained small-CNN run (the
weights do not change the cost). Three timed jobs, each into a fresh folder:

* 1 process, 1 thread (``OMP_NUM_THREADS=1``)
* 1 process, 2 threads (the fair single-process baseline on a 2-core machine)
* 2 processes × 1 thread (``torchrun --nproc-per-node 2``)

Reported: wall time of the command (includes Python/torch start-up, ~the same in each) and the
embedding time (slowest rank, from the command's JSON), the ratio 1-process ÷ 2-process, and
whether the shards are identical (bit for bit) to the 1-process ones.

    python benchmarks/bench_embed.py --items 20000

A catalog larger than ``--base-items`` is the base catalog's items tiled to ``--items`` (new
ids, same images and categories, written by the catalog writer): the embedding cost per item
does not depend on which image it is, and rendering 100 k synthetic images costs far more
than embedding them. ``--workdir DIR`` keeps the catalog and run there and reuses them on a
second call (prepare outside the timing lock, time under it); ``--jobs 1x1 2x1`` picks jobs.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402


def tile_catalog(base_dir: Path, out: Path, items: int) -> None:
    """Write a catalog of ``items`` items: the base catalog's items repeated (ids ``T000000``…, same images)."""
    import pyarrow as pa
    import pyarrow.parquet as pq_

    from lrprec.data.catalog import Catalog
    from lrprec.data.writer import write_catalog

    base = Catalog(base_dir)
    src = np.resize(np.arange(len(base)), items)
    ids = [f"T{k:06d}" for k in range(items)]
    arrays = {name: np.ascontiguousarray(np.asarray(arr)[src]) for name, arr in (("images", base.images), ("masks", base.masks))
              if arr is not None}
    meta = {k: v for k, v in base.meta.items() if k not in ("format", "version", "fingerprint", "split_seed")}
    meta["name"] = f"{base.name}-tiled-{items}"
    rel = pq_.read_table(base_dir / "relations.parquet")
    first = {str(b): ids[k] for k, b in enumerate(base.item_ids[: min(items, len(base))])}  # base item → its first copy
    keep = [k for k, (a, b) in enumerate(zip(rel.column("item_a").to_pylist(), rel.column("item_b").to_pylist())) if a in first and b in first]
    rel = rel.take(keep)
    for col in ("item_a", "item_b"):
        rel = rel.set_column(rel.column_names.index(col), col, pa.array([first[x] for x in rel.column(col).to_pylist()], pa.string()))
    write_catalog(out, items={"item_id": ids, "category": base.categories[src].tolist(), "title": base.titles[src].tolist(),
                              "image": [""] * items}, relations=rel, users=base.user_ids, meta=meta, arrays=arrays)


def make_run(root: Path, items: int, base_items: int) -> Path:
    from lrprec.data.catalog import Catalog
    from lrprec.data.synthetic import SynthConfig, generate
    from lrprec.run import build_model, save_weights

    cat_dir, run = root / "catalog", root / "run"
    if (run / "model.safetensors").is_file():
        return run
    if items <= base_items:
        generate(cat_dir, SynthConfig(items=items, seed=0), overwrite=True, progress=False)
    else:
        if not (root / "base" / "catalog.json").is_file():
            generate(root / "base", SynthConfig(items=base_items, seed=0), overwrite=True, progress=False)
        tile_catalog(root / "base", cat_dir, items)
    cat = Catalog(cat_dir)
    run.mkdir()
    config = {"backbone": "small", "dim": 32, "relations": ["also_viewed", "also_bought"], "catalog": str(cat_dir),
              "catalog_fingerprint": cat.fingerprint, "weights_id": "bench-embed", "personalize": True, "seed": 0}
    (run / "config.json").write_text(json.dumps(config))
    save_weights(build_model(config, n_users=len(cat.user_ids)), run / "model.safetensors")
    return run


def job(run: Path, out: Path, procs: int, threads: int, shard_size: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(procs),
           "-m", "lrprec", "embed", str(run), "--out", str(out), "--shard-size", str(shard_size), "--json", "--device", "cpu"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    res = json.loads(proc.stdout)
    return {"procs": procs, "threads": threads, "wall_s": wall, "embed_s": res["embed_seconds"], "shards": len(res["written"])}


def same(a: Path, b: Path) -> bool:
    fa, fb = sorted(a.glob("shard-*.parquet")), sorted(b.glob("shard-*.parquet"))
    return [f.name for f in fa] == [f.name for f in fb] and all(pq.read_table(x).equals(pq.read_table(y)) for x, y in zip(fa, fb))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=20000)
    ap.add_argument("--base-items", type=int, default=2000, help="render at most this many images; a larger catalog tiles them")
    ap.add_argument("--shard-size", type=int, default=2048)
    ap.add_argument("--workdir", default=None, help="keep (and reuse) the catalog, run and shards here")
    ap.add_argument("--prepare-only", action="store_true", help="make the catalog and run, time nothing")
    ap.add_argument("--jobs", nargs="+", default=["1x1", "2x1", "1x2"], help="PROCSxTHREADS jobs, in order")
    args = ap.parse_args()
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-embed-") as tmp:
        root = Path(args.workdir or tmp)
        root.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        run = make_run(root, args.items, args.base_items)
        print(f"catalog + run: {time.perf_counter() - t0:.0f} s", flush=True)
        if args.prepare_only:
            return
        rows = []
        for spec in args.jobs:
            procs, threads = (int(x) for x in spec.split("x"))
            out = root / f"out-{procs}x{threads}"
            if out.exists():
                shutil.rmtree(out)
            rows.append(job(run, out, procs, threads, args.shard_size))
            print(rows[-1], flush=True)
        outs = sorted(root.glob("out-*x*"))  # this call's jobs and any left by an earlier call in --workdir
        ident = all(same(outs[0], o) for o in outs[1:])
        print(f"compared shards of {', '.join(o.name for o in outs)}", flush=True)
    print(f"\n# bench_embed: {args.items} items, small CNN (K = 32, 2 relations), shard size {args.shard_size}; "
          f"{os.cpu_count()} CPUs, load average {load0:.2f} at the start, {os.getloadavg()[0]:.2f} at the end\n")
    print("| processes × threads | wall s | embedding s (slowest rank) | items/s |")
    print("|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['procs']} × {r['threads']} | {r['wall_s']:.1f} | {r['embed_s']:.1f} | {args.items / r['embed_s']:.0f} |")
    base = rows[0]
    for r in rows[1:]:
        print(f"{r['procs']} × {r['threads']} vs {base['procs']} × {base['threads']}: {base['embed_s'] / r['embed_s']:.2f}× (embedding), "
              f"{base['wall_s'] / r['wall_s']:.2f}× (wall)")
    print(f"shards identical bit for bit: {ident}")


if __name__ == "__main__":
    main()
