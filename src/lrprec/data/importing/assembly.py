"""The end of every import: :func:`assemble` filters the builder's items and relations, decodes images or
copies features, and writes the catalog atomically with :func:`~lrprec.data.writer.write_catalog`.

Relations with an endpoint that is not an imported item (never declared, or dropped by the
features/images filters) are dropped, as are exact duplicates; users with no kept pair are not
kept. Every drop is counted in the report.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa

from lrprec.data.catalog import RELATIONS
from lrprec.data.images import decode_images
from lrprec.data.importing.builder import CatalogBuilder
from lrprec.data.importing.report import ImportReport
from lrprec.data.importing.sources import SOURCES_FILE, write_item_sources
from lrprec.data.writer import write_catalog
from lrprec.errors import UsageError


@dataclass
class FeatureRows:
    """Precomputed features for builder items: the source record of each item row (-1: none),
    and a writer that copies records (ascending) into an ``.npy`` file, streaming."""

    record: np.ndarray
    dim: int
    write: Callable[[Path, np.ndarray], None]


def check_out(out: str | os.PathLike, overwrite: bool) -> Path:
    """Fail before any work when ``--out`` is taken (write_catalog checks again at the end)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UsageError(f"{out} exists and is not empty; choose another --out or remove it")
    return out


def assemble(
    builder: CatalogBuilder,
    out: str | os.PathLike,
    *,
    name: str,
    features: FeatureRows | None = None,
    locate_images: Callable[[np.ndarray], list[Path | None]] | None = None,
    image_size: int = 64,
    keep_missing_images: bool = False,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool | None = None,
) -> dict:
    """Filter the builder's items and relations, write images/features, and write the catalog.

    Order of the filters: items without features (features import) are dropped, then items
    without a usable image (unless ``keep_missing_images``). With features, items are
    ordered by their record in the feature file, so the copy streams through it once.
    Returns the import report (also stored as ``import_report`` in the catalog meta).
    """
    report = builder.report
    out = Path(out)
    n = len(builder)
    report.count("items_declared", n)
    if n == 0:
        raise UsageError("no items found in the input; nothing to import")
    rows = np.arange(n, dtype=np.int64)
    if features is not None:
        rec = features.record
        have = rec >= 0
        missing = int((~have).sum())
        if missing:
            first = builder.item_ids[int(np.flatnonzero(~have)[0])]
            report.skip("items_without_features", missing, f"e.g. item {first!r} has no feature record; features mode needs one, so it is dropped")
        rows = rows[have]
        rows = rows[np.argsort(rec[rows], kind="stable")]
    workdir = Path(tempfile.mkdtemp(prefix=f".{out.name}.import-", dir=_parent(out)))
    try:
        files: dict[str, Path] = {}
        if locate_images is not None and _relations(builder, rows, record=False)[0].num_rows == 0:
            raise UsageError(f"no relations between the {rows.size} items: {_nonzero(report.skipped)}")  # before decoding images
        if locate_images is not None:
            paths = locate_images(rows)
            img_path = workdir / "images.npy"
            stats = decode_images(paths, image_size, img_path, keep_missing=keep_missing_images,
                                  names=[builder.item_ids[r] for r in rows], progress=progress)
            report.skip("images_missing", stats.missing, f"e.g. no image file for item {stats.examples['missing'][0]!r}" if stats.examples["missing"] else None)
            report.skip("images_corrupt", stats.corrupt, f"e.g. item {stats.examples['corrupt'][0]!r}: the file cannot be decoded" if stats.examples["corrupt"] else None)
            report.extra["images"] = {**stats.report(keep_missing_images), "size": image_size}
            builder.missing_images = set(rows[~stats.ok].tolist())  # gray placeholders (kept items only)
            if not keep_missing_images:
                bad = int((~stats.ok).sum())
                report.skip("items_dropped_no_image", bad, "items without a usable image are dropped (use --keep-missing-images for gray placeholders)")
                rows = rows[stats.ok]
            files["images.npy"] = img_path
        if rows.size == 0:
            raise UsageError(f"no items left to import after filtering: {_nonzero(report.skipped)}")
        if features is not None:
            feat_path = workdir / "features.npy"
            features.write(feat_path, features.record[rows])
            files["features.npy"] = feat_path
        table, users = _relations(builder, rows)
        if table.num_rows == 0:
            raise UsageError(f"no relations left between the {rows.size} imported items: {_nonzero(report.skipped)}")
        rel_counts = {r: 0 for r in RELATIONS}
        for r in table.column("relation").to_pylist():
            rel_counts[r] += 1
        n_personal = sum(1 for u in table.column("user").to_pylist() if u)
        cats = np.bincount(np.frombuffer(builder.category, dtype=np.int32)[rows], minlength=len(builder.category_names))
        report.result = {
            "items": int(rows.size),
            "users": len(users),
            "categories": int((cats > 0).sum()),
            "relations": {r: c for r, c in rel_counts.items() if c},
            "personalized_relations": n_personal,
        }
        if features is not None:
            report.result["features_dim"] = features.dim
        if locate_images is not None:
            report.result["image_size"] = image_size
        cat_names = np.asarray(list(builder.category_names), dtype=object)
        cat_codes = np.frombuffer(builder.category, dtype=np.int32)
        items = {
            "item_id": [builder.item_ids[r] for r in rows],
            "category": cat_names[cat_codes[rows]].tolist(),
            "title": [builder.titles[r] for r in rows],
            "image": [""] * int(rows.size),
        }
        meta = {"name": name, "source": report.source, "import_report": report.to_dict()}
        if locate_images is not None:
            meta["image_size"] = image_size
        sources = write_item_sources(builder, rows, workdir / SOURCES_FILE)
        if sources is not None:
            files[SOURCES_FILE] = sources
        write_catalog(out, items=items, relations=table, users=users, meta=meta, files=files, split_seed=seed, overwrite=overwrite)
        return report.to_dict()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _parent(out: Path) -> Path:
    parent = out.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    return parent


def _nonzero(d: dict[str, int]) -> str:
    parts = [f"{k}={v}" for k, v in d.items() if v]
    return ", ".join(parts) if parts else "nothing was skipped"


def _relations(builder: CatalogBuilder, rows: np.ndarray, record: bool = True) -> tuple[pa.Table, list[str]]:
    """Deduplicate relations, keep those between the items ``rows``, and renumber users.

    ``record`` counts the dropped ones in the report (False for a dry run)."""
    report = builder.report if record else ImportReport("dry-run", {}, ())
    a, b, r, u = builder.relation_arrays()
    personal = u >= 0
    item_row = np.frombuffer(builder.item_row, dtype=np.int64)
    final = np.full(len(builder) + 1, -1, dtype=np.int64)  # last slot: "not an item"
    final[rows] = np.arange(rows.size)
    ra, rb = item_row[a], item_row[b]
    unknown = (ra < 0) | (rb < 0)
    fa, fb = final[ra], final[rb]  # ra == -1 indexes the "not an item" slot
    dropped = ~unknown & ((fa < 0) | (fb < 0))
    del ra, rb
    # exact duplicates (same a, b, relation, user) among the rest: the first occurrence is kept
    idx = np.flatnonzero(~unknown & ~dropped)
    dup = np.zeros(a.size, dtype=bool)
    if idx.size:
        key = (fa[idx] * max(rows.size, 1) + fb[idx]) * len(RELATIONS) + r[idx]
        order = np.lexsort((idx, u[idx], key))
        ks, us = key[order], u[idx][order]
        dup_sorted = np.zeros(idx.size, dtype=bool)
        dup_sorted[1:] = (ks[1:] == ks[:-1]) & (us[1:] == us[:-1])
        dup[idx[order[dup_sorted]]] = True
        del key, order, ks, us, dup_sorted
    for prefix, sel in (("relations", ~personal), ("personal_pairs", personal)):
        what = "relations" if prefix == "relations" else "personalized pairs"
        report.skip(f"{prefix}_unknown_item", int((unknown & sel).sum()), f"{what} with an endpoint that is not an imported item are dropped")
        report.skip(f"{prefix}_dropped_item", int((dropped & sel).sum()), f"{what} with an endpoint dropped by a filter (features/images) are dropped")
        report.skip(f"{prefix}_duplicate", int((dup & sel).sum()), f"repeated {what} are kept once")
    keep = ~unknown & ~dropped & ~dup
    ka, kb, kr, ku = fa[keep], fb[keep], r[keep], u[keep]
    # users: those with at least one kept pair, in order of first appearance in the source
    used = np.unique(ku[ku >= 0])
    report.skip("users_without_pairs", len(builder.users) - int(used.size), "users whose history gives no pair between imported items are not kept" if len(builder.users) > used.size else None)
    new_user = np.full(len(builder.users) + 1, -1, dtype=np.int64)
    new_user[used] = np.arange(used.size)
    user_names = list(builder.users)
    users = [user_names[k] for k in used.tolist()]
    ids = pa.array([builder.item_ids[k] for k in rows.tolist()], pa.string())
    user_col = pa.array([""] + users, pa.string()).take(pa.array(new_user[ku] + 1))
    table = pa.table({
        "item_a": ids.take(pa.array(ka)),
        "item_b": ids.take(pa.array(kb)),
        "relation": pa.array(np.asarray(RELATIONS, dtype=object)[kr].tolist(), pa.string()),
        "user": user_col,
    })
    return table, users
