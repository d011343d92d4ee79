"""Load test of ``lrprec serve`` (issue 30): a mixed workload at rising concurrency, then 4× the saturation point.

The server (``python -m lrprec serve RUN``: one process, its explanation worker process(es), loopback,
``OMP_NUM_THREADS=1``) runs in a subprocess; an asyncio client drives virtual users, each request drawn from the mix:

* browse 70 %  — ``/api/items`` (search / category / page), ``/api/items/{id}``, ``/api/items/{id}/image.png``;
* recommend 25 % — ``/api/recommend`` (random item, user or none, k = 10);
* explain 5 %  — ``/api/explain`` (LRP) or ``/api/bilrp`` (grid 8), random pairs (cache misses).

**User model.** By default each virtual user *thinks* between requests — an exponential pause of mean
``--think`` seconds (1 s), as locust's users and people do: load then grows with the number of users, and the
question is whether explanations starve browsing. ``--think 0`` is the closed-loop stress mode (every user sends
its next request the moment the last is answered): the server is saturated by *any* traffic at a few users and
latency ≈ users / throughput, whatever explanations do. A user whose explanation is refused (503) thinks and
moves on (with ``--think 0``: waits 50 ms). ``--control`` runs the same users without explanations after the hold.

The client is a minimal HTTP/1.1 client on asyncio streams (one keep-alive connection per user, as a browser
holds), far cheaper per request than a general-purpose one: the client shares the cores with the server. Each
answer's ``Server-Timing`` header gives the time the app spent on it, reported beside the client's latency.

Stage 1 raises the concurrency (``--levels``) for ``--stage-seconds`` each and reports, per class, requests,
p50/p95 latency, 503s and other errors. Explanations *saturate* at the first level where the pool refuses work
(503) or their throughput grows < 10 %. Stage 2 holds 4× that concurrency for ``--hold-seconds`` and samples the
server's RSS (its own and with its worker processes) every 5 s.
Targets: browse/recommend p95 ≤ 100 ms at 4× saturation, no error other than 503 on explanations, RSS growth ≤ 10 %.

    python benchmarks/load_serve.py --run RUN                                  # think time 1 s
    python benchmarks/load_serve.py --run RUN --hold-seconds 600 --json out.json
    python benchmarks/load_serve.py --run RUN --think 0 --levels 1,2,4,8 --control   # closed-loop stress
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
from urllib.parse import quote, urlencode

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


def children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def rss_total_mb(pid: int) -> float:
    """RSS of the server and its worker processes (the spawn helper included)."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            total += rss_mb(p)
        except OSError:
            continue
        todo += children(p)
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def runqueue_seconds(pid: int) -> float:
    """Seconds the process's main thread (the event loop) spent runnable but waiting for a CPU (/proc/PID/schedstat)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9


def cpu_snapshot(server: int | None) -> dict:
    """CPU seconds used so far by this client, the server process and its worker processes, and the seconds the
    client's and the server's event loops waited for a CPU while runnable (``*_runqueue``)."""
    out = {"client": time.process_time(), "client_runqueue": runqueue_seconds(os.getpid())}
    if server is not None:
        out["server"] = cpu_seconds(server)
        out["server_runqueue"] = runqueue_seconds(server)
        out["workers"] = sum(cpu_seconds(c) for c in children(server) if Path(f"/proc/{c}").exists())
    return out


class Connection:
    """One keep-alive HTTP/1.1 connection: ``get`` sends a GET and reads the answer (Content-Length bodies)."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, target: str) -> tuple[int, dict, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(f"GET {target} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, headers, body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None


def server_ms(headers: dict) -> float | None:
    """The app's own time from ``Server-Timing: app;dur=X``."""
    for part in headers.get("server-timing", "").split(";"):
        if part.strip().startswith("dur="):
            return float(part.strip()[4:])
    return None


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
                return kind, f"/api/items/{quote(self._item(), safe='')}", {}
            return kind, f"/api/items/{quote(self._item(), safe='')}/image.png", {"size": 160}
        if kind == "recommend":
            user = rng.choice(self.users + [""])
            return kind, "/api/recommend", {"item": self._item(), "k": 10, **({"user": user} if user else {})}
        a, b = self._item(), self._item()
        if rng.random() < 0.5:
            return kind, "/api/explain", {"a": a, "b": b}
        return kind, "/api/bilrp", {"a": a, "b": b, "grid": 8}


async def drive(host: str, port: int, load: Workload, users: int, seconds: float, think: float, seed: int = 0,
                server: int | None = None) -> dict:
    """``users`` virtual users for ``seconds`` (thinking ``think`` s on average between requests, exponential; 0: closed loop);
    per class: latencies of the answers, the app's own times (Server-Timing), 503s and other errors."""
    lat: dict[str, list[float]] = defaultdict(list)
    app_ms: dict[str, list[float]] = defaultdict(list)
    busy: dict[str, int] = defaultdict(int)
    errors: dict[str, list] = defaultdict(list)
    sent = [0]
    cpu0 = cpu_snapshot(server)
    t_start = time.perf_counter()
    end = t_start + seconds

    async def user(k: int) -> None:
        rng = random.Random(seed * 100_003 + k)
        conn = Connection(host, port)
        if think:  # users arrive spread over one think time, not all at once
            await asyncio.sleep(rng.uniform(0, think))
        while time.perf_counter() < end:
            kind, path, params = load.next()
            target = path + ("?" + urlencode(params) if params else "")
            t0 = time.perf_counter()
            try:
                code, headers, _ = await conn.get(target)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
                code, headers = f"{type(exc).__name__}: {exc}"[:100], {}
                await conn.close()
            dt = time.perf_counter() - t0
            sent[0] += 1
            if code == 200 or (code == 404 and "image.png" in path):  # 404: an item without an image, a correct answer
                lat[kind].append(dt)
                ms = server_ms(headers)
                if ms is not None:
                    app_ms[kind].append(ms)
            elif code == 503 and kind == "explain":
                busy[kind] += 1
                if not think:
                    await asyncio.sleep(0.05)  # closed loop: back off a little (Retry-After is whole seconds; keep the pressure on)
            else:
                errors[kind].append(code)
            if think:
                await asyncio.sleep(rng.expovariate(1 / think))
        await conn.close()

    await asyncio.gather(*(user(k) for k in range(users)))
    took = time.perf_counter() - t_start
    cpu1 = cpu_snapshot(server)
    out: dict = {"seconds": round(took, 1), "requests_per_s": round(sent[0] / took, 1),
                 # cores each part kept busy, and its CPU per request: where a request's time goes besides the app
                 "cpu_cores": {k: round((cpu1[k] - cpu0[k]) / took, 2) for k in cpu1},
                 "cpu_ms_per_request": {k: round(1000 * (cpu1[k] - cpu0[k]) / max(sent[0], 1), 3) for k in cpu1}}
    for kind, _ in MIX:
        xs = np.array(lat[kind]) * 1000
        ys = np.array(app_ms[kind])
        out[kind] = {"ok": int(xs.size), "per_s": round(xs.size / took, 2),
                     "p50_ms": round(float(np.percentile(xs, 50)), 1) if xs.size else None,
                     "p95_ms": round(float(np.percentile(xs, 95)), 1) if xs.size else None,
                     "p99_ms": round(float(np.percentile(xs, 99)), 1) if xs.size else None,
                     "app_p50_ms": round(float(np.percentile(ys, 50)), 2) if ys.size else None,
                     "app_p95_ms": round(float(np.percentile(ys, 95)), 2) if ys.size else None,
                     "busy_503": busy[kind], "errors": len(errors[kind]), "error_kinds": sorted({str(e) for e in errors[kind]})[:5]}
    return out


def row(users: int, res: dict) -> str:
    cores = res.get("cpu_cores", {})
    cells = [f"{users}", f"{res['requests_per_s']}", " / ".join(f"{cores.get(k, '–')}" for k in ("server", "workers", "client"))]
    for kind, _ in MIX:
        r = res[kind]
        cells.append(f"{r['ok']} ({r['per_s']}/s) p50 {r['p50_ms']} p95 {r['p95_ms']} ms (app p95 {r['app_p95_ms']}), "
                     f"503: {r['busy_503']}, errors: {r['errors']}")
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


def wait_for(base: str, proc: subprocess.Popen) -> None:
    import httpx

    deadline = time.time() + 300
    while True:
        if proc.poll() is not None or time.time() > deadline:
            raise SystemExit("the server did not start")
        try:
            if httpx.get(base + "/api/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.5)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--levels", default="8,16,32,64,128", help="concurrency levels of stage 1")
    ap.add_argument("--think", type=float, default=1.0, help="mean think time between a user's requests, s (exponential); 0: closed loop")
    ap.add_argument("--stage-seconds", type=float, default=20)
    ap.add_argument("--hold-seconds", type=float, default=120, help="stage 2 at 4x the saturation concurrency (the issue asks 600)")
    ap.add_argument("--hold-users", type=int, default=0, help="hold this many users instead of 4x the saturation found")
    ap.add_argument("--control", action="store_true", help="after the hold, the same users without explanations (stage-seconds)")
    ap.add_argument("--explain-workers", type=int, default=1)
    ap.add_argument("--explain-queue", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import httpx

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # killed: still stop the server (the finally below)
    port = free_port()
    host = "127.0.0.1"
    base = f"http://{host}:{port}"
    proc = start_server(args.run, port, args.explain_workers, args.explain_queue)
    try:
        wait_for(base, proc)
        info = httpx.get(base + "/api/run").json()
        items = httpx.get(base + "/api/items", params={"limit": 500}).json()["items"]
        users = httpx.get(base + "/api/users").json()["users"]
        load = Workload(items, users, info["catalog"]["categories"], args.seed)
        load_start = os.getloadavg()
        print(f"load average at the start: {' '.join(f'{x:.1f}' for x in load_start)}; nice {os.nice(0)}")
        print(f"run {args.run} ({info['catalog']['items']} items, {info['catalog']['image_size']} px); pool "
              f"{args.explain_workers} worker process(es) + {args.explain_queue} waiting; cores: {os.cpu_count()}; "
              f"think time {'closed loop (none)' if not args.think else f'exponential, mean {args.think} s'}")
        print("| users | req/s | cores: server / workers / client | browse (70 %) | recommend (25 %) | explain (5 %) |\n|---|---:|---|---|---|---|")
        stages = []
        for n in (int(x) for x in args.levels.split(",")):
            res = asyncio.run(drive(host, port, load, n, args.stage_seconds, args.think, args.seed + n, proc.pid))
            stages.append((n, res))
            print(row(n, res), flush=True)
        sat = saturation(stages)
        hold_users = args.hold_users or 4 * sat
        print(f"explanations saturate at {sat} concurrent users; holding {hold_users} for {args.hold_seconds:.0f} s")
        rss: list[tuple[float, float, float]] = []

        async def hold() -> dict:
            task = asyncio.create_task(drive(host, port, load, hold_users, args.hold_seconds, args.think, args.seed + 7, proc.pid))
            t0 = time.perf_counter()
            while not task.done():
                rss.append((round(time.perf_counter() - t0, 1), round(rss_mb(proc.pid), 1), round(rss_total_mb(proc.pid), 1)))
                await asyncio.sleep(5)
            return await task

        held = asyncio.run(hold())
        print(row(hold_users, held))
        control = None
        if args.control:
            control = asyncio.run(drive(host, port, Workload(items, users, info["catalog"]["categories"], args.seed + 1, explain_share=0.0),
                                        hold_users, args.stage_seconds, args.think, args.seed + 11, proc.pid))
            print("control, the same users without explanations (browse 74 %, recommend 26 %):")
            print(row(hold_users, control))
        load_end = os.getloadavg()
        print(f"load average at the end: {' '.join(f'{x:.1f}' for x in load_end)} on {os.cpu_count()} cores")
        first = rss[min(1, len(rss) - 1)]  # after the first 5 s (caches and connections set up)
        growth = (rss[-1][1] - first[1]) / first[1]
        growth_all = (rss[-1][2] - first[2]) / first[2]
        print(f"server RSS: {first[1]:.0f} MB at 5 s -> {rss[-1][1]:.0f} MB at {rss[-1][0]:.0f} s ({100 * growth:+.1f} %); "
              f"with its workers {first[2]:.0f} -> {rss[-1][2]:.0f} MB ({100 * growth_all:+.1f} %); max {max(r[2] for r in rss):.0f} MB")
        cheap_p95 = max(held["browse"]["p95_ms"] or 0, held["recommend"]["p95_ms"] or 0)
        other_errors = sum(held[k]["errors"] for k, _ in MIX) + sum(r[k]["errors"] for _, r in stages for k, _ in MIX)
        print(f"at {hold_users} users: browse/recommend p95 {cheap_p95} ms (target <= 100), errors other than 503: {other_errors} (target 0), "
              f"RSS growth {100 * max(growth, growth_all):+.1f} % over {args.hold_seconds:.0f} s (target <= 10 % over 600 s)")
        proc.send_signal(signal.SIGTERM)
        exit_code = proc.wait(60)
        if args.json:
            args.json.write_text(json.dumps({"think_s": args.think, "stages": stages, "saturation_users": sat, "hold_users": hold_users,
                                             "hold": held, "control": control, "loadavg_start": load_start, "loadavg_end": load_end,
                                             "rss_mb": {"columns": ["t_s", "server", "server_and_workers"], "samples": rss},
                                             "rss_growth": growth, "rss_growth_with_workers": growth_all, "server_exit": exit_code,
                                             "args": {k: str(v) for k, v in vars(args).items()}}, indent=1))
        return 0 if cheap_p95 <= 100 and other_errors == 0 and max(growth, growth_all) <= 0.10 else 1
    finally:
        if proc.poll() is None:
            proc.kill()


if __name__ == "__main__":
    sys.exit(main())
