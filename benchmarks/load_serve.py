"""Load test of ``lrprec serve`` (issue 30): a mixed workload at rising concurrency, then 4× the saturation point.

The server (``python -m lrprec serve RUN``, one process, loopback, ``OMP_NUM_THREADS=1``) runs in a
subprocess; an asyncio ``httpx`` client drives closed-loop virtual users (no think time), each
request drawn from the mix:

* browse 70 %  — ``/api/items`` (search / category / page), ``/api/items/{id}``, ``/api/items/{id}/image.png``;
* recommend 25 % — ``/api/recommend`` (random item, user or none, k = 10);
* explain 5 %  — ``/api/explain`` (LRP) or ``/api/bilrp`` (grid 8), random pairs (cache misses).

Stage 1 raises the concurrency (1, 2, 4, ...) for ``--stage-seconds`` each and reports, per class,
requests, p50/p95 latency, 503s and other errors. Explanations *saturate* at the first level where
the pool refuses work (503) or their throughput stops growing (< 10 %). Stage 2 holds 4× that
concurrency for ``--hold-seconds`` and samples the server's RSS every few seconds.
Targets: browse/recommend p95 ≤ 100 ms at 4× saturation, no error other than 503 on explanations,
RSS growth ≤ 10 %.

    nice -n 10 python benchmarks/load_serve.py --run RUN                 # RUN: e.g. a default-size synthetic run
    nice -n 10 python benchmarks/load_serve.py --run RUN --hold-seconds 600 --json out.json
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MIX = (("browse", 0.70), ("recommend", 0.25), ("explain", 0.05))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: Path, port: int, workers: int, queue: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "lrprec", "serve", str(run), "--port", str(port), "--log-level", "warning",
                             "--explain-workers", str(workers), "--explain-queue", str(queue)], env=env)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Workload:
    """Draws requests of the mix from the served catalog's ids."""

    def __init__(self, items: list[dict], users: list[str], categories: list[str], seed: int, explain_share: float = MIX[2][1]):
        self.items, self.users, self.categories = items, users, categories
        self.rng = random.Random(seed)
        # browse : recommend stay 70 : 25 whatever share explanations get
        self.cut_browse = (1 - explain_share) * MIX[0][1] / (MIX[0][1] + MIX[1][1])
        self.cut_recommend = 1 - explain_share

    def _item(self) -> str:
        return self.rng.choice(self.items)["item_id"]

    def next(self) -> tuple[str, str, dict]:
        r = self.rng.random()
        kind = "browse" if r < self.cut_browse else "recommend" if r < self.cut_recommend else "explain"
        rng = self.rng
        if kind == "browse":
            pick = rng.random()
            if pick < 0.4:
                return kind, "/api/items", {"limit": 48, "offset": rng.randrange(0, 1000, 48),
                                            **({"category": rng.choice(self.categories)} if rng.random() < 0.5 else {})}
            if pick < 0.55:
                return kind, "/api/items", {"search": str(rng.randrange(100)), "limit": 20}
            if pick < 0.8:
                return kind, f"/api/items/{self._item()}", {}
            return kind, f"/api/items/{self._item()}/image.png", {"size": 160}
        if kind == "recommend":
            user = rng.choice(self.users + [""])
            return kind, "/api/recommend", {"item": self._item(), "k": 10, **({"user": user} if user else {})}
        a, b = self._item(), self._item()
        if rng.random() < 0.5:
            return kind, "/api/explain", {"a": a, "b": b}
        return kind, "/api/bilrp", {"a": a, "b": b, "grid": 8}


async def drive(base: str, load: Workload, users: int, seconds: float) -> dict:
    """``users`` closed-loop clients for ``seconds``; per class: latencies of 200s, counts of 503 and other errors."""
    import httpx

    lat: dict[str, list[float]] = defaultdict(list)
    busy: dict[str, int] = defaultdict(int)
    errors: dict[str, list] = defaultdict(list)
    end = time.perf_counter() + seconds
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=httpx.Limits(max_connections=users, max_keepalive_connections=users)) as c:
        async def user() -> None:
            while time.perf_counter() < end:
                kind, path, params = load.next()
                t0 = time.perf_counter()
                try:
                    r = await c.get(path, params=params)
                    code = r.status_code
                except httpx.HTTPError as exc:
                    code = repr(exc)[:80]
                dt = time.perf_counter() - t0
                if code == 200:
                    lat[kind].append(dt)
                elif code == 503 and kind == "explain":
                    busy[kind] += 1
                    await asyncio.sleep(0.05)  # a client backs off a little (Retry-After is whole seconds; keep the pressure on)
                elif code == 404 and "image.png" in path:
                    lat[kind].append(dt)  # an item without an image: a correct answer
                else:
                    errors[kind].append(code)

        await asyncio.gather(*(user() for _ in range(users)))
    out = {}
    for kind, _ in MIX:
        xs = np.array(lat[kind]) * 1000
        out[kind] = {"ok": int(xs.size), "per_s": round(xs.size / seconds, 2), "p50_ms": round(float(np.percentile(xs, 50)), 1) if xs.size else None,
                     "p95_ms": round(float(np.percentile(xs, 95)), 1) if xs.size else None, "busy_503": busy[kind],
                     "errors": len(errors[kind]), "error_kinds": sorted({str(e) for e in errors[kind]})[:5]}
    return out


def row(users: int, res: dict) -> str:
    cells = [f"{users}"]
    for kind, _ in MIX:
        r = res[kind]
        cells.append(f"{r['ok']} ({r['per_s']}/s) p50 {r['p50_ms']} p95 {r['p95_ms']} ms, 503: {r['busy_503']}, errors: {r['errors']}")
    return "| " + " | ".join(cells) + " |"


def saturation(stages: list[tuple[int, dict]]) -> int:
    """The first concurrency where explanations are refused (503) or their throughput grows < 10 % over the level before."""
    prev = None
    for users, res in stages:
        e = res["explain"]
        if e["busy_503"] > 0 or (prev is not None and e["per_s"] < 1.10 * prev):
            return users
        prev = e["per_s"]
    return stages[-1][0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--levels", default="1,2,4,8,16", help="concurrency levels of stage 1")
    ap.add_argument("--stage-seconds", type=float, default=20)
    ap.add_argument("--hold-seconds", type=float, default=120, help="stage 2 at 4x the saturation concurrency (the issue asks 600)")
    ap.add_argument("--explain-workers", type=int, default=1)
    ap.add_argument("--explain-queue", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import httpx

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_server(args.run, port, args.explain_workers, args.explain_queue)
    try:
        deadline = time.time() + 300
        while True:
            if proc.poll() is not None or time.time() > deadline:
                raise SystemExit("the server did not start")
            try:
                if httpx.get(base + "/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        info = httpx.get(base + "/api/run").json()
        items = httpx.get(base + "/api/items", params={"limit": 500}).json()["items"]
        users = httpx.get(base + "/api/users").json()["users"]
        load = Workload(items, users, info["catalog"]["categories"], args.seed)
        print(f"load average (1 min) at the start: {os.getloadavg()[0]:.1f}")
        print(f"run {args.run} ({info['catalog']['items']} items, {info['catalog']['image_size']} px); pool "
              f"{args.explain_workers} worker(s) + {args.explain_queue} waiting; cores: {os.cpu_count()}")
        print("| users | browse (70 %) | recommend (25 %) | explain (5 %) |\n|---|---|---|---|")
        stages = []
        for n in (int(x) for x in args.levels.split(",")):
            res = asyncio.run(drive(base, load, n, args.stage_seconds))
            stages.append((n, res))
            print(row(n, res), flush=True)
        sat = saturation(stages)
        hold_users = 4 * sat
        print(f"explanations saturate at {sat} concurrent users; holding {hold_users} for {args.hold_seconds:.0f} s")
        rss: list[tuple[float, float]] = []

        async def hold() -> dict:
            task = asyncio.create_task(drive(base, load, hold_users, args.hold_seconds))
            t0 = time.perf_counter()
            while not task.done():
                rss.append((round(time.perf_counter() - t0, 1), round(rss_mb(proc.pid), 1)))
                await asyncio.sleep(5)
            return await task

        held = asyncio.run(hold())
        print(row(hold_users, held))
        control = asyncio.run(drive(base, Workload(items, users, info["catalog"]["categories"], args.seed + 1, explain_share=0.0), hold_users,
                                    args.stage_seconds))
        print("control, the same users without explanations (browse 74 %, recommend 26 %):")
        print(row(hold_users, control))
        print(f"load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        base_p95 = max(control["browse"]["p95_ms"] or 0, control["recommend"]["p95_ms"] or 0)
        mix_p95 = max(held["browse"]["p95_ms"] or 0, held["recommend"]["p95_ms"] or 0)
        print(f"ratio browse/recommend p95 with explanations / without (baseline, same users): {mix_p95 / max(base_p95, 1e-9):.2f}")
        first = rss[min(1, len(rss) - 1)][1]  # after the first 5 s (caches and connections set up)
        growth = (rss[-1][1] - first) / first
        print(f"server RSS: {first:.0f} MB at 5 s -> {rss[-1][1]:.0f} MB at {rss[-1][0]:.0f} s ({100 * growth:+.1f} %); max {max(r for _, r in rss):.0f} MB")
        cheap_p95 = max(held["browse"]["p95_ms"] or 0, held["recommend"]["p95_ms"] or 0)
        other_errors = sum(held[k]["errors"] for k, _ in MIX) + sum(r[k]["errors"] for _, r in stages for k, _ in MIX)
        print(f"at 4x saturation: browse/recommend p95 {cheap_p95} ms (target <= 100), errors other than 503: {other_errors} (target 0), "
              f"RSS growth {100 * growth:+.1f} % over {args.hold_seconds:.0f} s (target <= 10 % over 600 s)")
        if args.json:
            args.json.write_text(json.dumps({"stages": stages, "saturation_users": sat, "hold_users": hold_users, "hold": held, "control": control,
                                             "loadavg_end": os.getloadavg(), "rss_mb": rss,
                                             "rss_growth": growth, "args": {k: str(v) for k, v in vars(args).items()}}, indent=1))
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        return 0 if cheap_p95 <= 100 and other_errors == 0 and growth <= 0.10 else 1
    finally:
        if proc.poll() is None:
            proc.kill()


if __name__ == "__main__":
    sys.exit(main())
