"""Load check of the web app (issue 7): N concurrent clients on loopback against ``/api/recommend``.

The server (``lrprec.serve.app.create_app`` under uvicorn, one process) runs in a
subprocess so the clients do not share its interpreter. In one run, on the same server:

1. baseline: ``GET /api/health`` (routing, middleware, JSON: the HTTP stack's own cost);
2. the claim: ``GET /api/recommend`` for random items, users (or none) and relations, k = 10;
3. reference: direct Python calls of the same ``Recommender.recommend`` in this process.

Each phase runs for a bounded time with N client threads (keep-alive ``httpx.Client`` per
thread). Reports requests/s, p50/p99 latency and the error count (target: zero), and the
ratios recommend / health and HTTP / direct, as a markdown table.

    python benchmarks/bench_serve.py                      # builds a small synthetic run first
    python benchmarks/bench_serve.py --run RUN --clients 16 --seconds 20
"""
from __future__ import annotations

import argparse
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def make_run(work: Path, items: int) -> Path:
    """A small synthetic catalog, a model trained for one epoch, and its stored index."""
    import torch

    from lrprec.data.synthetic import SynthConfig, generate
    from lrprec.recommend.recommender import build_index
    from lrprec.run import Run
    from lrprec.train import TrainConfig, train

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    cat = generate(work / "catalog", SynthConfig(items=items, users=6, image_size=32, pairs_per_relation=400, seed=0), progress=False)
    run = work / "run"
    train(cat, run, TrainConfig(epochs=1, batch_size=128, dim=10, seed=0), progress=False, log=lambda m: None)
    build_index(Run.load(run), progress=False)
    return run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: Path, port: int) -> subprocess.Popen:
    code = ("import sys, uvicorn; from lrprec.serve.app import create_app; "
            "uvicorn.run(create_app(sys.argv[1]), host='127.0.0.1', port=int(sys.argv[2]), log_level='warning', access_log=False)")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-c", code, str(run), str(port)], env=env)


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with code {proc.returncode}")
        try:
            if httpx.get(url + "/api/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("the server did not become ready")


def load(url: str, paths: list[str], clients: int, seconds: float, warmup: float = 1.0) -> dict:
    """Hit ``paths`` (cycled, each client from its own offset) with ``clients`` threads for ``seconds``."""
    import httpx

    lat: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    statuses: dict[int, int] = {}
    start = threading.Barrier(clients + 1)
    t_begin = [0.0]

    def worker(w: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as c:
            k = w * 7919
            start.wait()
            t_warm = time.perf_counter() + warmup
            while time.perf_counter() < t_warm:  # connection set-up and caches, not measured
                c.get(paths[k % len(paths)])
                k += 1
            end = t_begin[0] + warmup + seconds
            while True:
                t0 = time.perf_counter()
                if t0 >= end:
                    break
                try:
                    r = c.get(paths[k % len(paths)])
                    ok = r.status_code == 200
                    if not ok:
                        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                except httpx.HTTPError:
                    ok = False
                lat[w].append(time.perf_counter() - t0)
                errors[w] += not ok
                k += 1

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(clients)]
    for t in threads:
        t.start()
    t_begin[0] = time.perf_counter()
    start.wait()
    for t in threads:
        t.join()
    all_lat = np.concatenate([np.asarray(x) for x in lat]) if any(lat) else np.zeros(0)
    return {"requests": int(all_lat.size), "rps": all_lat.size / seconds, "p50_ms": 1e3 * float(np.percentile(all_lat, 50)),
            "p99_ms": 1e3 * float(np.percentile(all_lat, 99)), "errors": int(sum(errors)), "statuses": statuses}


def direct_rate(run: Path, queries: list[tuple[str, str | None, str]], seconds: float) -> dict:
    """The same recommendations called in-process on one thread (no HTTP)."""
    from lrprec.recommend.recommender import Recommender
    from lrprec.run import Run

    rec = Recommender(Run.load(run))
    for rel in rec.index.relations:
        rec.index.get(rel)
    times = []
    end = time.perf_counter() + seconds
    k = 0
    while time.perf_counter() < end:
        item, user, rel = queries[k % len(queries)]
        t0 = time.perf_counter()
        rec.recommend(item, user=user, relations=[rel], k=10)
        times.append(time.perf_counter() - t0)
        k += 1
    t = np.asarray(times)
    return {"requests": int(t.size), "rps": t.size / seconds, "p50_ms": 1e3 * float(np.percentile(t, 50)),
            "p99_ms": 1e3 * float(np.percentile(t, 99)), "errors": 0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, help="a trained run (default: build a small synthetic one)")
    ap.add_argument("--items", type=int, default=2000, help="catalog size of the synthetic run")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0, help="measured seconds per phase")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2, help="health/recommend phase pairs, alternated")
    args = ap.parse_args()
    from urllib.parse import urlencode

    from lrprec.run import Run

    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        t0 = time.perf_counter()
        run = args.run or make_run(Path(tmp), args.items)
        setup_s = time.perf_counter() - t0
        r = Run.load(run)
        rng = np.random.default_rng(0)
        users = [None] + list(r.catalog.user_ids)
        queries = [(str(r.catalog.item_ids[i]), users[rng.integers(len(users))], r.relations[rng.integers(len(r.relations))])
                   for i in rng.integers(0, len(r.catalog), 2000)]
        paths = ["/api/recommend?" + urlencode({k: v for k, v in {"item": it, "user": u, "relation": rel, "k": args.k}.items() if v})
                 for it, u, rel in queries]
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = start_server(run, port)
        try:
            wait_ready(url, proc)
            rounds = []
            for _ in range(args.rounds):  # alternate, so a change in the machine's load hits both
                rounds.append((load(url, ["/api/health"], args.clients, args.seconds), load(url, paths, args.clients, args.seconds)))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        direct = direct_rate(run, queries, args.seconds)

    print("\n## Web app load check (`benchmarks/bench_serve.py`)\n")
    print(f"{args.clients} concurrent keep-alive clients on loopback, {args.seconds:.0f} s per phase, one uvicorn process; "
          f"catalog {len(r.catalog)} items, K = {r.config['dim']}, backbone {r.config['backbone']}, k = {args.k}, "
          f"random items/users/relations. Machine: {platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}; setup {setup_s:.0f} s.\n")
    print("| round | endpoint | requests | requests/s | p50 ms | p99 ms | errors |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for k, (health, recommend) in enumerate(rounds, 1):
        for name, m in (("`GET /api/health` (baseline)", health), ("`GET /api/recommend`", recommend)):
            print(f"| {k} | {name} | {m['requests']:,} | {m['rps']:,.0f} | {m['p50_ms']:.1f} | {m['p99_ms']:.1f} | {m['errors']} |")
    m = direct
    print(f"| – | `Recommender.recommend` in-process, 1 thread (reference) | {m['requests']:,} | {m['rps']:,.0f} | {m['p50_ms']:.1f} | {m['p99_ms']:.1f} | 0 |")
    errors = sum(h["errors"] + r["errors"] for h, r in rounds)
    ratios = ", ".join(f"{r['rps'] / h['rps']:.2f}" for h, r in rounds)
    statuses = {s: n for _, r in rounds for s, n in r["statuses"].items()}
    print(f"\nrecommend / health throughput per round: {ratios}; HTTP recommend / direct call rate: "
          f"{np.mean([r['rps'] for _, r in rounds]) / direct['rps']:.2f}; errors: {errors} (target 0)"
          + (f"; statuses {statuses}" if statuses else ""))
    if errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
