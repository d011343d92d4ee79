"""``items_source.parquet``: what an import kept of each item's source (raw title, image URL, placeholder flag).

The catalog holds cleaned titles and decoded images; this side file keeps what they came from,
for the web app and for checking an import. It is written only when there is something to keep.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

if TYPE_CHECKING:
    from lrprec.data.importing.builder import CatalogBuilder

SOURCES_FILE = "items_source.parquet"


def write_item_sources(builder: CatalogBuilder, rows: np.ndarray, path: Path) -> Path | None:
    """``items_source.parquet`` when the source had anything worth keeping: per item the raw title
    ("" when cleaning changed nothing), the metadata's image URL ("" when none) and whether the
    decoded image is a gray placeholder for a missing/corrupt file."""
    missing = builder.missing_images
    if not builder.raw_titles and not builder.image_urls and not missing:
        return None
    rl = rows.tolist()
    pq.write_table(pa.table({
        "item_id": pa.array([builder.item_ids[r] for r in rl], pa.string()),
        "title_raw": pa.array([builder.raw_titles.get(r, "") for r in rl], pa.string()),
        "image_url": pa.array([builder.image_urls.get(r, "") for r in rl], pa.string()),
        "image_missing": pa.array([r in missing for r in rl], pa.bool_()),
    }), path)
    return path


def read_item_sources(root: str | os.PathLike) -> dict[str, dict]:
    """What the import kept of each item's source, by item id ({} for a catalog without it).

    Only set values are returned: ``title_raw`` (the title before cleaning), ``image_url``
    (from the metadata) and ``image_missing`` (True: the catalog's image is a gray placeholder).
    """
    path = Path(root) / SOURCES_FILE
    if not path.is_file():
        return {}
    t = pq.read_table(path).to_pydict()
    out: dict[str, dict] = {}
    for k, iid in enumerate(t["item_id"]):
        d = {c: t[c][k] for c in ("title_raw", "image_url", "image_missing") if c in t and t[c][k]}
        if d:
            out[iid] = d
    return out
