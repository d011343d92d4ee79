"""Embedding the catalog as a sharded, resumable job (``lrprec embed``; any number of processes).

The catalog's rows are cut into shards of ``shard_size`` consecutive rows; shard s goes to
rank s mod world. Each shard is embedded in batches that start at the shard's first row, so
its vectors do not depend on how many processes ran (bit-for-bit on the CPU), and written as
``shard-SSSSS.parquet`` (a temporary file, then a rename: a killed job leaves no partial
shard). A rerun skips the shards that exist, so only the missing ones are embedded again.
``embed.json`` records what the shards belong to (weights id, catalog fingerprint, shard size,
relations); shards made for other weights are refused.

Columns: ``row`` (int64, catalog row), ``item`` (the id), and per trained relation
``partner.REL`` (the indexed vectors, f(x) F_r, or f(x) E_r for a metric head) and
``query.REL`` (f(x) E_r), fixed-size lists of K float32.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lrprec.errors import LrprecError
from lrprec.recommend.recommender import embed_catalog, weights_identity
from lrprec.run import Run

MANIFEST = "embed.json"
DEFAULT_SHARD_SIZE = 65_536


class ShardError(LrprecError):
    """Shards missing, or made for other weights, another catalog or another shard size."""


def shard_path(out: Path, s: int) -> Path:
    return out / f"shard-{s:05d}.parquet"


def manifest(run: Run, shard_size: int) -> dict:
    n = len(run.catalog)
    return {"format": "lrprec-embed", "weights_id": weights_identity(run), "catalog_fingerprint": run.catalog.fingerprint,
            "items": n, "dim": int(run.model.dim), "relations": list(run.relations), "shard_size": int(shard_size),
            "shards": (n + shard_size - 1) // shard_size}


def _check_manifest(out: Path, want: dict) -> None:
    path = out / MANIFEST
    if not path.is_file():
        return
    have = json.loads(path.read_text())
    diff = [k for k in want if have.get(k) != want[k]]
    if diff:
        raise ShardError(f"{out} holds shards of another job ({', '.join(diff)} differ); use another --out or delete it")


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def embed_shards(run: Run, out: str | os.PathLike, *, shard_size: int = DEFAULT_SHARD_SIZE, rank: int = 0, world: int = 1,
                 batch_size: int | None = None, progress: bool = False, log: Callable[[str], None] | None = None) -> list[int]:
    """Embed this rank's missing shards into ``out``; returns the shard numbers it wrote."""
    if shard_size <= 0:
        raise ShardError(f"--shard-size must be positive, got {shard_size}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    want = manifest(run, shard_size)
    _check_manifest(out, want)
    if rank == 0 and not (out / MANIFEST).is_file():
        _atomic_write(out / MANIFEST, lambda p: p.write_text(json.dumps(want, indent=2)))
    n, done = want["items"], []
    for s in range(rank, want["shards"], world):
        path = shard_path(out, s)
        if path.is_file():
            continue
        rows = np.arange(s * shard_size, min(n, (s + 1) * shard_size))
        both = embed_catalog(run, batch_size=batch_size, progress=progress, side="both", rows=rows)
        table = _shard_table(run, rows, both)
        _atomic_write(path, lambda p: pq.write_table(table, p))
        done.append(s)
        if log:
            log(f"rank {rank}/{world}: shard {s} ({rows.size} items) -> {path}")
    return done


def _shard_table(run: Run, rows: np.ndarray, both: dict[str, dict[str, np.ndarray]]) -> pa.Table:
    cols: dict[str, pa.Array] = {"row": pa.array(rows, pa.int64()), "item": pa.array([str(run.catalog.item_ids[i]) for i in rows])}
    k = int(run.model.dim)
    for side in ("partner", "query"):
        for rel, a in both[side].items():
            cols[f"{side}.{rel}"] = pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(a, np.float32).ravel()), k)
    return pa.table(cols)


def read_shards(run: Run, out: str | os.PathLike) -> dict[str, dict[str, np.ndarray]]:
    """All shards of ``out`` as {"partner" | "query": {relation: float32 (N, K)}}, checked against the run."""
    out = Path(out)
    if not (out / MANIFEST).is_file():
        raise ShardError(f"{out} has no {MANIFEST}; run 'lrprec embed {run.path} --out {out}' first")
    have = json.loads((out / MANIFEST).read_text())
    want = manifest(run, int(have.get("shard_size", 0)) or 1)
    _check_manifest(out, want)
    missing = [s for s in range(want["shards"]) if not shard_path(out, s).is_file()]
    if missing:
        raise ShardError(f"{len(missing)} of {want['shards']} shards are missing in {out} (e.g. shard {missing[0]}); "
                         f"rerun 'lrprec embed {run.path} --out {out}' (it embeds only the missing ones)")
    n, k = want["items"], want["dim"]
    res: dict[str, dict[str, np.ndarray]] = {sd: {r: np.empty((n, k), np.float32) for r in want["relations"]} for sd in ("partner", "query")}
    for s in range(want["shards"]):
        t = pq.read_table(shard_path(out, s))
        rows = t.column("row").to_numpy()
        for sd in ("partner", "query"):
            for r in want["relations"]:
                flat = t.column(f"{sd}.{r}").combine_chunks().flatten().to_numpy(zero_copy_only=False)
                res[sd][r][rows] = flat.reshape(-1, k)
    return res
