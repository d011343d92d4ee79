"""Writing a catalog directory atomically (importers and the synthetic generator share it).

Kept apart from :mod:`lrprec.data.catalog` (reading) because writing makes the splits, and
:mod:`lrprec.data.splits` builds on the reader: reader ← splits ← writer, no cycle.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lrprec.data.catalog import FORMAT, RELATIONS, Catalog, CatalogError
from lrprec.data.splits import make_splits
def write_catalog(
    out: str | os.PathLike,
    *,
    items: dict[str, list],
    relations: pa.Table,
    users: list[str],
    meta: dict,
    arrays: dict[str, np.ndarray] | None = None,
    files: dict[str, Path] | None = None,
    split_seed: int = 0,
    overwrite: bool = False,
    reject: Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None = None,
    split_assignment: np.ndarray | None = None,
) -> Path:
    """Write a complete catalog atomically: build it in a temporary sibling directory, then rename.

    ``items`` has the columns item_id, category, title, image; ``relations`` the columns
    item_a, item_b, relation, user. ``arrays`` are saved as ``<name>.npy`` (images, masks,
    features); ``files`` are moved into the catalog under their key. The splits are made
    here (seeded), so every importer gets the same protocol; ``reject`` vetoes negatives that
    the data's ground truth knows to be related; ``split_assignment`` (0/1/2 per relation row)
    fixes the split instead of the seeded cut. A failure leaves nothing behind.
    """
    out = Path(out)
    occupied = any(out.iterdir()) if out.is_dir() else out.exists()
    if occupied and not overwrite:
        raise CatalogError(f"{out} exists and is not empty; choose another --out or remove it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        n = len(items["item_id"])
        if len(set(items["item_id"])) != n:
            raise CatalogError("duplicate item ids in the items table")
        pq.write_table(pa.table({
            "item_id": pa.array(items["item_id"], pa.string()),
            "category": pa.array(items["category"], pa.string()),
            "title": pa.array(items.get("title", [""] * n), pa.string()),
            "image": pa.array(items.get("image", [""] * n), pa.string()),
        }), tmp / "items.parquet")
        pq.write_table(relations, tmp / "relations.parquet")
        pq.write_table(pa.table({"user_id": pa.array(users, pa.string())}), tmp / "users.parquet")
        for name, arr in (arrays or {}).items():
            np.save(tmp / f"{name}.npy", arr)
        for name, src in (files or {}).items():
            dst = tmp / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(src), dst)
        meta = {"format": FORMAT, "version": 1, **meta}
        meta.setdefault("relations", sorted(set(relations.column("relation").to_pylist()), key=RELATIONS.index))
        meta["fingerprint"] = meta.get("fingerprint") or os.urandom(8).hex()
        meta["split_seed"] = split_seed
        (tmp / "catalog.json").write_text(json.dumps(meta, indent=2))
        make_splits(Catalog(tmp), seed=split_seed, reject=reject, assignment=split_assignment)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
