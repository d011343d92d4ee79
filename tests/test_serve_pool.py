"""The web app's cheap and expensive paths under load (issue 30).

Explanations run in a worker *process* for ``lrprec serve``: the same records as on a thread, computed in another
process at a lower CPU priority, bounded (Busy past the queue), and a dead worker is replaced. Browsing answers
from cached encoded pages with the same content as the listing, and every answer carries ``Server-Timing``.
The recommender's known-pair check (binary search) agrees with ``np.isin``.
"""
from __future__ import annotations

import json
import os
import signal
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient


def _flat(record: dict) -> dict:
    """An explanation record without its PNGs, nested values flattened (``relevance_sum.a``)."""
    out = {}
    for k, v in record.items():
        if isinstance(v, dict):
            out.update({f"{k}.{kk}": vv for kk, vv in v.items()} if k != "_png" else {})
        else:
            out[k] = v
    return out


@pytest.fixture(scope="module")
def process_pool(tiny_run):
    from lrprec.serve import compute
    from lrprec.serve.pool import ComputePool

    pool = ComputePool(1, 1, initializer=compute.init_worker, initargs=(str(tiny_run), 5))
    pool.start()
    yield pool
    pool.drain(30)
    pool.close()


def test_a_worker_process_explains_like_a_thread_at_a_lower_priority(process_pool, tiny_run):
    from lrprec.run import Run
    from lrprec.serve import compute

    pid = process_pool.submit(compute.worker_pid).result(60)
    assert pid != os.getpid()
    assert os.getpriority(os.PRIO_PROCESS, pid) == os.getpriority(os.PRIO_PROCESS, 0) + 5
    run = Run.load(tiny_run)
    user = 0 if len(run.catalog.user_ids) else -1
    keys = [(0, 3, -1, -1, "epsilon-plus-flat", "similarity"), (2, 5, run.check_relation(run.relations[-1]), user, "lrp0", "logit")]
    local = compute.Explainer(run)
    for key in keys:
        got = process_pool.submit(compute.call, "explanations", [key]).result(60)[0]
        want = local.call("explanations", [key])[0]
        assert got["_png"] == want["_png"]
        assert _flat(got) == pytest.approx(_flat(want))
    m, rel = process_pool.submit(compute.call, "bilrp", 1, 4, -1, -1, "epsilon-plus-flat", 2).result(60)
    m2, rel2 = local.call("bilrp", 1, 4, -1, -1, "epsilon-plus-flat", 2)
    assert rel == rel2 and np.allclose(m, m2)


def test_a_full_process_pool_refuses_and_a_dead_worker_is_replaced(process_pool):
    from concurrent.futures.process import BrokenProcessPool

    from lrprec.serve import compute
    from lrprec.serve.pool import Busy

    held = [process_pool.submit(time.sleep, 1.5) for _ in range(process_pool.capacity)]
    with pytest.raises(Busy) as busy:
        process_pool.submit(compute.worker_pid)
    assert busy.value.retry_after >= 1
    for f in held:
        f.result(30)
    assert process_pool.drain(10) and process_pool.admitted == 0
    old = process_pool.submit(compute.worker_pid).result(60)
    os.kill(old, signal.SIGKILL)
    new = None
    for _ in range(20):  # the job the dead worker held fails; a later one runs in a fresh worker
        try:
            new = process_pool.submit(compute.worker_pid).result(60)
            break
        except BrokenProcessPool:
            time.sleep(0.2)
    assert new is not None and new != old
    assert process_pool.drain(10) and process_pool.admitted == 0


def test_browse_answers_from_cached_encoded_pages_with_the_listing_content(tiny_run):
    from lrprec.serve.api import item_listing
    from lrprec.serve.app import create_app

    app = create_app(tiny_run)
    state = app.state.lrprec
    client = TestClient(app)
    cat = state.catalog.category_names[0]
    params = {"category": cat, "limit": 7, "offset": 3}
    first = client.get("/api/items", params=params)
    hits = state.json_pages.hits
    second = client.get("/api/items", params=params)
    assert first.status_code == second.status_code == 200 and first.headers["content-type"] == "application/json"
    assert state.json_pages.hits == hits + 1 and second.content == first.content
    assert json.loads(first.content) == item_listing(state, None, cat, 7, 3)
    other = client.get("/api/items", params={**params, "offset": 4}).json()  # another page is another entry
    assert other["items"][0] == first.json()["items"][1]
    timing = first.headers["server-timing"]
    assert timing.startswith("app;dur=") and float(timing.split("=")[1]) >= 0
    row = state.item_row(first.json()["items"][0]["item_id"])
    png = client.get(first.json()["items"][0]["image"])
    assert png.status_code == 200 and png.content == state.thumbnail(row, 192)


def test_known_pair_lookup_agrees_with_isin():
    from lrprec.recommend.recommender import sorted_member

    rng = np.random.default_rng(0)
    for _ in range(300):
        keys = np.unique(rng.integers(0, 500, rng.integers(0, 40)))
        query = rng.integers(-3, 503, rng.integers(0, 25))
        assert np.array_equal(sorted_member(keys, query), np.isin(query, keys))


def _load_script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "load_serve.py"
    spec = importlib.util.spec_from_file_location("load_serve", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def test_the_load_client_reads_keep_alive_answers_and_counts_a_dropped_connection_as_an_error():
    """benchmarks/load_serve.py's raw client against a tiny server: two answers on one connection, then the server
    closes without answering — an error, not a silent retry; the saturation rule and Server-Timing parsing."""
    import asyncio

    load = _load_script()
    answered = []

    async def handler(reader, writer):
        for k in range(2):
            await reader.readuntil(b"\r\n\r\n")
            body = b'{"k": %d}' % k
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nServer-Timing: app;dur=1.50\r\n\r\n%s" % (len(body), body))
            answered.append(k)
        await reader.readuntil(b"\r\n\r\n")
        writer.close()  # a third request: dropped without an answer

    async def main():
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        conn = load.Connection("127.0.0.1", port)
        got = [await conn.get("/a"), await conn.get("/b")]
        with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
            await conn.get("/c")
        server.close()
        return got

    got = asyncio.run(main())
    assert [g[0] for g in got] == [200, 200] and [json.loads(g[2]) for g in got] == [{"k": 0}, {"k": 1}]
    assert load.server_ms(got[0][1]) == 1.5 and answered == [0, 1]
    stage = lambda per_s, busy=0: {"explain": {"per_s": per_s, "busy_503": busy}}  # noqa: E731
    assert load.saturation([(1, stage(1.0)), (2, stage(2.0)), (4, stage(2.1)), (8, stage(2.2))]) == 4  # grew < 10 %
    assert load.saturation([(1, stage(1.0)), (2, stage(2.0, busy=1)), (4, stage(4.0))]) == 2  # the pool refused work
