"""Incremental index updates (``lrprec index RUN --add ITEMS_DIR`` / ``--remove IDS``) without a rebuild.

Only the Milvus backend takes them: its collections accept inserts and deletes that the next
query sees (strong consistency). The exact, ivf and hnsw indexes are stored as arrays aligned
with the run's catalog rows (``RUN/index/vectors-REL.npy``), so an item outside the catalog has
no row there: those backends refuse with a message to rebuild (or to use Milvus).

``ITEMS_DIR`` is a catalog folder (``lrprec import`` / ``write_catalog`` layout) whose items are
embedded with the run's model; their categories must be among the run's catalog categories.
"""
from __future__ import annotations

import os
from typing import Callable

import numpy as np

from lrprec.data.catalog import Catalog
from lrprec.errors import UsageError
from lrprec.recommend.recommender import RecommendError, embed_catalog, load_index
from lrprec.run import Run


def _milvus_index(run: Run, what: str):
    index = load_index(run)
    if index.backend != "milvus":
        raise UsageError(f"{what} needs an index built with --backend milvus (this run's index is {index.backend!r}, "
                         "stored as arrays aligned with the catalog); rebuild it with 'lrprec index RUN' after changing the catalog, "
                         "or build a Milvus index with 'lrprec index RUN --backend milvus --uri URI'")
    return index


def add_items(run: Run, items_dir: str | os.PathLike, *, batch_size: int | None = None,
              log: Callable[[str], None] | None = None) -> dict:
    """Embed the items of a catalog folder and insert them into every relation's collection."""
    index = _milvus_index(run, "--add")
    new = Catalog(items_dir)
    if len(new) == 0:
        raise RecommendError(f"{items_dir} holds no items")
    known = {c: i for i, c in enumerate(run.catalog.category_names)}
    unknown = sorted({str(c) for c in new.categories} - set(known))
    if unknown:
        raise RecommendError(f"categories not in the run's catalog: {', '.join(unknown[:5])}; "
                             f"the run knows {', '.join(run.catalog.category_names)}")
    in_catalog = [str(i) for i in new.item_ids if str(i) in run.catalog._index]
    if in_catalog:
        raise RecommendError(f"{len(in_catalog)} item(s) are already in the run's catalog (e.g. {in_catalog[0]!r})")
    both = embed_catalog(run, batch_size=batch_size, progress=False, side="both", catalog=new)
    codes = np.array([known[str(c)] for c in new.categories], np.int64)
    items = [str(i) for i in new.item_ids]
    rows = None
    for rel in index.relations:
        rows = index.get(rel).add(items, codes, both["partner"][rel], both["query"][rel])  # type: ignore[attr-defined]
        if log:
            log(f"added {len(items)} items to {rel}")
    return {"added": len(items), "rows": [int(r) for r in rows] if rows is not None else [], "relations": index.relations}


def remove_items(run: Run, item_ids: list[str], log: Callable[[str], None] | None = None) -> dict:
    """Delete items (catalog items or added ones) from every relation's collection; all must be present."""
    index = _milvus_index(run, "--remove")
    ids = [i.strip() for i in item_ids if i.strip()]
    if not ids:
        raise UsageError("--remove needs item ids (comma-separated)")
    for rel in index.relations:  # check everywhere first: nothing is removed if one is missing
        found = index.get(rel).find(ids)  # type: ignore[attr-defined]
        missing = [i for i in ids if i not in found]
        if missing:
            raise RecommendError(f"{len(missing)} item(s) are not in the {rel} index: {', '.join(missing[:5])}")
    for rel in index.relations:
        index.get(rel).remove(ids)  # type: ignore[attr-defined]
        if log:
            log(f"removed {len(ids)} items from {rel}")
    return {"removed": len(ids), "relations": index.relations}
