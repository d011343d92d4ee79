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
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import pyarrow.parquet as pq  # noqa: E402


def make_run(root: Path, items: int) -> Path:
    from lrprec.data.catalog import Catalog
    from lrprec.data.synthetic import SynthConfig, generate
    from lrprec.run import build_model, save_weights

    cat_dir, run = root / "catalog", root / "run"
    generate(cat_dir, SynthConfig(items=items, seed=0), overwrite=True, progress=False)
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
    ap.add_argument("--shard-size", type=int, default=2048)
    args = ap.parse_args()
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-embed-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        run = make_run(root, args.items)
        print(f"catalog + run: {time.perf_counter() - t0:.0f} s", flush=True)
        rows = []
        for procs, threads in [(1, 1), (2, 1), (1, 2)]:
            rows.append(job(run, root / f"out-{procs}x{threads}", procs, threads, args.shard_size))
            print(rows[-1], flush=True)
        ident = same(root / "out-1x1", root / "out-2x1") and same(root / "out-1x1", root / "out-1x2")
    base1, base2, two = rows[0], rows[2], rows[1]
    print(f"\n# bench_embed: {args.items} items, small CNN (K = 32, 2 relations), shard size {args.shard_size}; "
          f"{os.cpu_count()} CPUs, load average {load0:.2f} at the start, {os.getloadavg()[0]:.2f} at the end\n")
    print("| processes × threads | wall s | embedding s (slowest rank) | items/s |")
    print("|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['procs']} × {r['threads']} | {r['wall_s']:.1f} | {r['embed_s']:.1f} | {args.items / r['embed_s']:.0f} |")
    print(f"\n2 processes vs 1 process × 1 thread: {base1['embed_s'] / two['embed_s']:.2f}× (embedding), {base1['wall_s'] / two['wall_s']:.2f}× (wall); "
          f"vs 1 process × 2 threads: {base2['embed_s'] / two['embed_s']:.2f}× (embedding); shards identical bit for bit: {ident}")


if __name__ == "__main__":
    main()
