"""Artifacts under corruption and concurrency (issue 30): the table of cases, each through the CLI.

Every case copies the tiny run, its index and its catalog, damages one file (or holds the run's
lock), runs a command that reads it, and asserts what the user sees: a one-line error naming
the file, exit code 2, no traceback — or, for the lock cases, that readers are not blocked and
a lock left by a dead process does not block anybody. The table is docs/howto/reliability.md's.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from typer.testing import CliRunner

from lrprec.cli import load_commands


@pytest.fixture(scope="module")
def base(tiny_run, tiny_catalog, tmp_path_factory) -> Path:
    """A run with its own catalog copy and a stored index (built once; each case copies it)."""
    root = tmp_path_factory.mktemp("corrupt")
    shutil.copytree(tiny_catalog, root / "cat")
    shutil.copytree(tiny_run, root / "run")
    cfg = json.loads((root / "run" / "config.json").read_text())
    cfg["catalog"] = str(root / "cat")
    (root / "run" / "config.json").write_text(json.dumps(cfg))
    r = _cli("index", str(root / "run"))
    assert r.exit_code == 0, r.output
    return root


def _cli(*args: str):
    return CliRunner().invoke(load_commands(), list(args))


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _resave_weights(run: Path, change: Callable) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(str(run / "model.safetensors"))
    save_file(change(state), str(run / "model.safetensors"))


def _edit_config(run: Path, **changes) -> None:
    cfg = json.loads((run / "config.json").read_text())
    cfg.update(changes)
    (run / "config.json").write_text(json.dumps(cfg))


def _first(d: dict) -> str:
    return next(k for k, v in d.items() if v.ndim >= 1 and v.shape[-1] > 1)


def _vectors(run: Path) -> Path:
    return sorted((run / "index").glob("vectors-*.npy"))[0]


def _hold_lock(run: Path):
    """Another process holding RUN/.lock (a real flock, in a child process) until the returned process is killed."""
    code = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); fcntl.flock(fd, fcntl.LOCK_EX); "
            "os.pwrite(fd, b'process %d (lrprec train)' % os.getpid(), 0); print('held', flush=True); time.sleep(120)")
    p = subprocess.Popen([sys.executable, "-c", code, str(run / ".lock")], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


# (case, damage(run, cat), command(run, cat, item), exit code, words the message must hold)
INDEX = lambda run, cat, item: ["index", str(run)]  # noqa: E731  (reads config, weights, catalog, images; writes RUN/index)
RECOMMEND = lambda run, cat, item: ["recommend", str(run), item, "-k", "3"]  # noqa: E731  (reads the index)
CASES = [
    ("weights truncated", lambda run, cat: _truncate(run / "model.safetensors"), INDEX, 2, ["model.safetensors", "truncated"]),
    ("weights garbage", lambda run, cat: (run / "model.safetensors").write_bytes(os.urandom(4096)), INDEX, 2, ["model.safetensors"]),
    ("weights missing", lambda run, cat: (run / "model.safetensors").unlink(), INDEX, 2, ["model.safetensors", "missing"]),
    ("weights of another dtype", lambda run, cat: _resave_weights(run, lambda s: {k: v.double() if v.is_floating_point() else v for k, v in s.items()}),
     INDEX, 2, ["model.safetensors", "float64"]),
    ("weights of another shape", lambda run, cat: _resave_weights(run, lambda s: {**s, _first(s): s[_first(s)][..., :1].contiguous()}),
     INDEX, 2, ["model.safetensors", "expects"]),
    ("config.json truncated", lambda run, cat: _truncate(run / "config.json"), INDEX, 2, ["config.json", "not valid JSON"]),
    ("config.json from a newer lrprec", lambda run, cat: _edit_config(run, lrprec_version="99.0.0"), INDEX, 2, ["config.json", "newer", "99.0.0"]),
    ("config.json without its keys", lambda run, cat: (run / "config.json").write_text('{"seed": 1}'), INDEX, 2, ["config.json", "lacks"]),
    ("catalog.json garbage", lambda run, cat: (cat / "catalog.json").write_bytes(b"\x00\xff{{"), INDEX, 2, ["catalog.json"]),
    ("items.parquet truncated", lambda run, cat: _truncate(cat / "items.parquet"), INDEX, 2, ["items.parquet"]),
    ("images.npy of another dtype", lambda run, cat: np.save(cat / "images.npy", np.load(cat / "images.npy").astype(np.float32)),
     INDEX, 2, ["images.npy", "float32", "uint8"]),
    ("images.npy of another shape", lambda run, cat: np.save(cat / "images.npy", np.load(cat / "images.npy")[:10]), INDEX, 2, ["images.npy", "10 images"]),
    ("images.npy truncated", lambda run, cat: _truncate(cat / "images.npy"), INDEX, 2, ["images.npy"]),
    ("a split's parquet truncated", lambda run, cat: _truncate(cat / "splits" / "test.parquet"),
     lambda run, cat, item: ["pairs", str(cat)], 2, ["test.parquet"]),
    ("index.json truncated", lambda run, cat: _truncate(run / "index" / "index.json"), RECOMMEND, 2, ["index.json", "corrupt"]),
    ("index vectors of another dtype", lambda run, cat: np.save(_vectors(run), np.load(_vectors(run)).astype(np.float64)), RECOMMEND, 2, ["vectors-", "float64"]),
    ("index vectors truncated", lambda run, cat: _truncate(_vectors(run)), RECOMMEND, 2, ["vectors-"]),
    ("index vectors of another shape", lambda run, cat: np.save(_vectors(run), np.load(_vectors(run))[:5]), RECOMMEND, 2, ["vectors-", "shape"]),
    ("checkpoint truncated (train --resume)", lambda run, cat: _truncate(run / "checkpoint.ckpt"),
     lambda run, cat, item: ["train", str(cat), "--out", str(run), "--epochs", "3", "--dim", "8", "--batch-size", "64", "--seed", "1", "--resume"],
     2, ["checkpoint", "truncated"]),
]


@pytest.mark.parametrize("case,damage,command,code,words", CASES, ids=[c[0] for c in CASES])
def test_a_damaged_file_is_a_clear_error(base, tmp_path, case, damage, command, code, words):
    run, cat = tmp_path / "run", tmp_path / "cat"
    shutil.copytree(base / "cat", cat)
    shutil.copytree(base / "run", run)
    _edit_config(run, catalog=str(cat))
    item = json.loads((run / "index" / "index.json").read_text()).get("first_item") or _an_item(cat)
    damage(run, cat)
    r = _cli(*command(run, cat, item))
    assert r.exit_code == code, (case, r.output)
    errors = [line for line in r.output.replace("\r", "\n").splitlines() if "error: " in line]  # after any progress bar
    assert len(errors) == 1 and "Traceback" not in r.output and "internal error" not in r.output, r.output
    for w in words:
        assert w in errors[0], (case, w, r.output)


def _an_item(cat: Path) -> str:
    from lrprec.data.catalog import Catalog

    return str(Catalog(cat).item_ids[0])


def test_a_second_writer_is_refused_readers_are_not_and_the_run_stays_readable(base, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(base / "run", run)
    holder = _hold_lock(run)
    try:
        r = _cli("index", str(run))
        assert r.exit_code == 2 and "being written by process" in r.output and "lrprec train" in r.output and str(run) in r.output, r.output
        r = _cli("evaluate", str(run), "--split", "validation")
        assert r.exit_code == 2 and "being written" in r.output, r.output
        r = _cli("recommend", str(run), _an_item(base / "cat"), "-k", "2", "--json")  # a reader takes no lock
        assert r.exit_code == 0 and json.loads(r.output)["results"], r.output
    finally:
        holder.kill()
        holder.wait()
    r = _cli("index", str(run))  # the holder died: its lock went with it (the .lock file stays)
    assert r.exit_code == 0 and (run / ".lock").exists(), r.output


def test_a_lock_file_left_by_a_dead_process_does_not_block(base, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(base / "run", run)
    (run / ".lock").write_text("process 999999 (lrprec train)")  # kill -9 leaves the file, never the flock
    r = _cli("index", str(run))
    assert r.exit_code == 0, r.output


def test_concurrent_atomic_writers_leave_one_whole_file_and_no_temporaries(tmp_path):
    from lrprec.files import atomic_write_text

    target = tmp_path / "metrics.json"
    bodies = [json.dumps({"writer": w, "pad": "x" * (10_000 + w)}) for w in range(4)]

    def write(w: int) -> None:
        for _ in range(50):
            atomic_write_text(target, bodies[w])

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    seen = set()
    while any(t.is_alive() for t in threads):
        if target.exists():
            seen.add(target.read_text())  # every read is one writer's whole body
    for t in threads:
        t.join()
    assert seen <= set(bodies) and target.read_text() in bodies
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    from lrprec.files import atomic_write

    target = tmp_path / "vectors.npy"
    np.save(target, np.arange(3))

    def crash(tmp: Path) -> None:
        np.save(tmp, np.arange(1000))
        raise KeyboardInterrupt  # killed mid-write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, crash)
    assert np.load(target).tolist() == [0, 1, 2] and [p.name for p in tmp_path.iterdir()] == ["vectors.npy"]
