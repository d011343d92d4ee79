"""The documentation site builds with ``mkdocs build --strict``, and every tutorial runs as written.

Each page under ``docs/tutorials/`` is executed block by block, in order, in an empty temporary
folder: ``bash`` blocks with ``bash -e -o pipefail``, ``python`` blocks as scripts, both with the
checkout under test first on ``PYTHONPATH`` and ``lrprec`` / ``python`` on ``PATH``. Other fences
(``text``, ``json``) are not run. A block is left out only behind a visible marker with its reason,
the line right above its fence::

    <!-- docs-test: skip — the reason -->
    <!-- docs-test: background — the reason -->

A ``background`` block (a server) is started in the background on a free port (``8000`` in the
block and in every later block of the page is replaced by that port); the test waits until
``/api/health`` answers, checks that ``/`` serves the catalog page, runs the following blocks
against it and stops it at the end.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = sorted((ROOT / "docs" / "tutorials").glob("*.md"))
RUNNABLE = ("bash", "python")
MARKER = re.compile(r"^<!-- docs-test: (skip|background) — (.+?) -->$")
FENCE = re.compile(r"^```(\w*)")
BLOCK_TIMEOUT_S = 600  # a hang, not a slow shared machine (blocks take seconds to a minute on 2 idle cores)


@dataclass
class Block:
    language: str
    code: str
    line: int  # 1-based line of the opening fence
    mode: str = "run"  # run, skip or background
    reason: str = ""


def parse_blocks(markdown: str) -> list[Block]:
    """The fenced blocks of a page, with the docs-test marker of the line above each (if any)."""
    lines = markdown.split("\n")
    blocks, k = [], 0
    while k < len(lines):
        fence = FENCE.match(lines[k])
        if not fence:
            k += 1
            continue
        end = next(j for j in range(k + 1, len(lines)) if lines[j].startswith("```"))
        marker = MARKER.match(lines[k - 1]) if k else None
        blocks.append(Block(fence.group(1), "\n".join(lines[k + 1:end]) + "\n", k + 1,
                            marker.group(1) if marker else "run", marker.group(2).strip() if marker else ""))
        k = end + 1
    return blocks


def test_parse_blocks_reads_markers_and_languages():
    page = "x\n<!-- docs-test: skip — needs a GPU -->\n```bash\nnvidia-smi\n```\n```python\nprint(1)\n```\n```text\nt\n```\n"
    blocks = parse_blocks(page)
    assert [(b.language, b.mode, b.reason, b.line) for b in blocks] == [
        ("bash", "skip", "needs a GPU", 3), ("python", "run", "", 6), ("text", "run", "", 9)]
    assert blocks[1].code == "print(1)\n"


def test_every_tutorial_marker_has_a_reason_and_every_page_runs_something():
    assert len(TUTORIALS) >= 4, TUTORIALS
    for page in TUTORIALS:
        text = page.read_text()
        # a marker that does not parse (a typo, no reason) would silently run or hide a block
        for line in text.split("\n"):
            if "docs-test" in line:
                assert MARKER.match(line), f"{page.name}: malformed marker {line!r}"
        blocks = parse_blocks(text)
        assert sum(b.language in RUNNABLE and b.mode == "run" for b in blocks) >= 3, page.name


def _api_modules() -> list[str]:
    """The modules the API reference renders (``::: module`` lines of docs/reference/api/*.md)."""
    pages = (ROOT / "docs" / "reference" / "api").glob("*.md")
    return [m for page in pages for m in re.findall(r"^::: (\S+)", page.read_text(), re.M)]


def test_public_api_in_the_reference_has_docstrings():
    """Every public function, class, method and property of the referenced modules says what it does."""
    import importlib
    import inspect

    modules = _api_modules()
    assert len(modules) >= 30, modules
    missing = []
    for name in modules:
        module = importlib.import_module(name)
        for attr, obj in vars(module).items():
            if attr.startswith("_") or getattr(obj, "__module__", None) != name:
                continue
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and not inspect.getdoc(obj):
                missing.append(f"{name}.{attr}")
            if inspect.isclass(obj):
                for member, value in vars(obj).items():
                    fn = value.fget if isinstance(value, property) else getattr(value, "__func__", value)
                    if not member.startswith("_") and inspect.isfunction(fn) and not inspect.getdoc(getattr(obj, member)):
                        missing.append(f"{name}.{attr}.{member}")
    assert not missing, f"public API without a docstring (the reference would show nothing): {missing}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _environment(bin_dir: Path, threads: int | None = None) -> dict:
    """PATH with ``lrprec`` and ``python`` of this interpreter first; the checkout's ``src`` first on PYTHONPATH."""
    bin_dir.mkdir()
    for name, body in (("lrprec", f'exec "{sys.executable}" -m lrprec "$@"'), ("python", f'exec "{sys.executable}" "$@"')):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    env = dict(os.environ)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH")) if p)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)  # torch's intra-op threads in every block's process
    return env


def _command(block: Block, workdir: Path, index: int) -> list[str]:
    if block.language == "bash":
        return ["bash", "-e", "-o", "pipefail", "-c", block.code]
    script = workdir / f".docs_block_{index}.py"
    script.write_text(block.code)
    return [sys.executable, str(script)]


def _wait_until_serving(proc: subprocess.Popen, port: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the background block exited with code {proc.returncode}: {proc.log_path.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    else:
        raise AssertionError(f"nothing answered on port {port} within {timeout_s} s")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as r:
        assert r.status == 200 and b"<html" in r.read().lower()


def run_tutorial(page: Path, workdir: Path, threads: int | None = None) -> list[str]:
    """Run every block of ``page`` in ``workdir`` (created); returns a line per block (what ran, how long)."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = _environment(workdir / ".bin", threads)
    port, background, log = None, [], []
    try:
        for k, block in enumerate(parse_blocks(page.read_text())):
            if block.language not in RUNNABLE:
                continue
            where = f"{page.name}:{block.line}"
            if block.mode == "skip":
                log.append(f"{where} skipped: {block.reason}")
                continue
            if port is not None or block.mode == "background":
                port = port or _free_port()
                block.code = block.code.replace("8000", str(port))
            start = time.monotonic()
            if block.mode == "background":
                server_log = open(workdir / f".docs_block_{k}.log", "w")  # a file: a full pipe would stall the server
                proc = subprocess.Popen(_command(block, workdir, k), cwd=workdir, env=env, stdout=server_log,
                                        stderr=subprocess.STDOUT, text=True, start_new_session=True)
                proc.log_path = Path(server_log.name)
                background.append((proc, server_log))
                _wait_until_serving(proc, port)
            else:
                done = subprocess.run(_command(block, workdir, k), cwd=workdir, env=env, capture_output=True, text=True,
                                      timeout=BLOCK_TIMEOUT_S)
                assert done.returncode == 0, (f"{where} ({block.language}) exited with {done.returncode}\n"
                                              f"--- block ---\n{block.code}--- stdout ---\n{done.stdout[-4000:]}"
                                              f"--- stderr ---\n{done.stderr[-4000:]}")
            log.append(f"{where} {block.mode} {time.monotonic() - start:.1f} s")
    finally:
        for proc, server_log in background:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
            server_log.close()
    return log


@pytest.mark.slow
def test_site_builds_strictly(tmp_path):
    """``mkdocs build --strict``: no broken link or anchor, no missing API reference, the CLI page generated."""
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1",
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p))
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    cli = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text()
    for command in ("lrprec import table", "lrprec serve", "lrprec train", "--rank-weight"):
        assert command in cli, command  # generated from the typer app, not a stale copy
    api = (tmp_path / "site" / "reference" / "api" / "recommend" / "index.html").read_text()
    assert "StaleIndexError" in api and "per_category" in api  # mkdocstrings rendered the docstrings
    assert ":func:<code>" not in api and ":class:<code>" not in api  # Sphinx roles dropped by the hook
    tutorial = (tmp_path / "site" / "tutorials" / "own-catalog" / "index.html").read_text()
    assert "Not run by the docs test: the docs test already runs inside an installed checkout" in tutorial
    bench = (tmp_path / "site" / "results" / "benchmarks" / "index.html").read_text()
    assert "Recommendation index (1,000,000 items" in bench  # BENCHMARKS.md included, not copied


@pytest.mark.slow
def test_every_tutorial_runs(tmp_path):
    """Every tutorial, block by block, each page in its own folder; two pages at a time, one torch thread
    each (most of a page's time is single-threaded: interpreter start-up, imports, data), so the two
    cores are both busy."""
    from concurrent.futures import ThreadPoolExecutor

    def run(page: Path) -> tuple[Path, list[str] | BaseException]:
        try:
            return page, run_tutorial(page, tmp_path / page.stem, threads=1)
        except BaseException as exc:  # noqa: BLE001 (reported below, per page)
            return page, exc

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(run, TUTORIALS))
    for page, outcome in results:
        print(f"--- {page.name}", *(outcome if isinstance(outcome, list) else [repr(outcome)]), sep="\n")
    failed = {page.name: outcome for page, outcome in results if not isinstance(outcome, list)}
    assert not failed, "\n\n".join(f"{name}: {exc}" for name, exc in failed.items())
    assert all(any(" run " in line for line in outcome) for _, outcome in results)
