"""The generic csv/parquet importer (SPEC §6), on the shared machinery of :mod:`lrprec.data.importing`.

The form::

    items.csv|.parquet      item_id, category[, title][, image]
    relations.csv|.parquet  item_i|item_a, item_j|item_b, relation[, user_id|user]

``image`` is a path relative to the items file's folder (or to ``--images`` when given), or
absolute; without an ``image`` column, ``--images DIR`` is searched for ``<item_id>.<ext>``.

Policy decisions (all counted in the report, none silent):

* duplicate item ids: the first row wins (``items_duplicate``);
* items without a category get the category ``"unknown"`` (``items_without_category``);
* relation names outside ``RELATIONS`` are an error by default, listing the unknown names
  and where they first occur (a typo should not quietly empty a relation); with
  ``skip_unknown_relations`` they are skipped and counted (``relations_unknown_name``).
  ``also_buy``/``also_view`` (the Amazon 2018 names) are accepted as aliases;
* relations with an endpoint that is not an imported item are dropped
  (``relations_unknown_item``), as are self-pairs and exact duplicates;
* text fields (title, category) are cleaned by :func:`~lrprec.data.importing.text.clean_text` (HTML tags stripped,
  entities unescaped, whitespace collapsed), counted per field under ``cleaned``; the raw
  title of each cleaned item and the image URL of the metadata are kept in
  ``items_source.parquet`` (see :func:`~lrprec.data.importing.sources.read_item_sources`). Item ids are never rewritten.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lrprec.data.catalog import RELATIONS
from lrprec.data.images import ImageFolder
from lrprec.data.importing.assembly import assemble, check_out
from lrprec.data.importing.builder import RELATION_ALIASES, CatalogBuilder
from lrprec.data.importing.lines import check_input
from lrprec.data.importing.report import IMAGE_SKIPS, ITEM_SKIPS, PERSONAL_SKIPS, RELATION_SKIPS, ImportReport
from lrprec.errors import UsageError


# ---------------------------------------------------------------------------------------------
# generic tables
# ---------------------------------------------------------------------------------------------
ITEM_ID_COLUMNS = ("item_id",)
REL_A_COLUMNS = ("item_i", "item_a")
REL_B_COLUMNS = ("item_j", "item_b")
USER_COLUMNS = ("user_id", "user")
_EXAMPLES = 5  # unknown relation names listed in the error
TABLE_SKIPS = ("items_missing_id", *ITEM_SKIPS, "relations_missing_field", "relations_unknown_name", *RELATION_SKIPS, *PERSONAL_SKIPS, *IMAGE_SKIPS)


def _batches(path: Path, what: str, columns_needed: tuple[tuple[str, ...], ...], batch_rows: int = 65536) -> Iterator[tuple[int, dict[str, list]]]:
    """Stream ``(first_row_number, columns)`` batches of a csv or parquet file as strings.

    ``columns_needed`` lists alternatives per required column; an error names what is missing.
    Row numbers are 1-based data rows (the csv header is not counted).
    """
    suffix = "".join(path.suffixes[-2:]).lower()
    if path.suffix.lower() == ".parquet":
        try:
            pf = pq.ParquetFile(path)
        except Exception as exc:  # pyarrow raises several types for non-parquet input
            raise UsageError(f"{what} {path} is not a readable parquet file: {exc}") from None
        names = pf.schema_arrow.names
        _require(path, what, names, columns_needed)
        batches = (pa.Table.from_batches([bt]) for bt in pf.iter_batches(batch_size=batch_rows))
    elif path.suffix.lower() in (".csv", ".tsv") or suffix in (".csv.gz", ".tsv.gz"):
        import pyarrow.csv as pacsv

        delimiter = "\t" if ".tsv" in suffix or path.suffix.lower() == ".tsv" else ","
        try:
            reader = pacsv.open_csv(path, parse_options=pacsv.ParseOptions(delimiter=delimiter),
                                    read_options=pacsv.ReadOptions(block_size=1 << 22),
                                    convert_options=pacsv.ConvertOptions(strings_can_be_null=True, auto_dict_encode=False))
        except pa.ArrowInvalid as exc:
            raise UsageError(f"{what} {path} is not a readable csv file: {exc}") from None
        names = reader.schema.names
        _require(path, what, names, columns_needed)
        # read every column as string (ids like 0001 must keep their zeros): re-open with types
        reader = pacsv.open_csv(path, parse_options=pacsv.ParseOptions(delimiter=delimiter),
                                read_options=pacsv.ReadOptions(block_size=1 << 22),
                                convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in names}, strings_can_be_null=True))
        batches = (pa.Table.from_batches([bt]) for bt in reader)
    else:
        raise UsageError(f"{what} must be a .csv, .tsv or .parquet file (optionally .csv.gz): {path}")
    start = 1
    try:
        for t in batches:
            cols = {c: t.column(c).cast(pa.string()).to_pylist() for c in t.column_names}
            yield start, cols
            start += t.num_rows
    except pa.ArrowInvalid as exc:
        raise UsageError(f"{what} {path}: cannot parse after data row {start - 1}: {exc}") from None


def _require(path: Path, what: str, names: list[str], needed: tuple[tuple[str, ...], ...]) -> None:
    for alts in needed:
        if not any(a in names for a in alts):
            raise UsageError(f"{what} {path} has no {' or '.join(repr(a) for a in alts)} column; columns: {', '.join(names) or '(none)'}")


def _pick(cols: dict[str, list], alts: tuple[str, ...]) -> list | None:
    for a in alts:
        if a in cols:
            return cols[a]
    return None


def import_table(
    items: str | os.PathLike,
    relations: str | os.PathLike,
    out: str | os.PathLike,
    *,
    images: str | os.PathLike | None = None,
    image_size: int = 64,
    keep_missing_images: bool = False,
    skip_unknown_relations: bool = False,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool | None = None,
) -> dict:
    """Import the generic form (module docstring) into a catalog at ``out``; returns the report.

    Images are decoded when the items table has an ``image`` column or ``images`` is given.
    """
    from tqdm import tqdm

    items_p = check_input(items, "--items")
    rel_p = check_input(relations, "--relations")
    out = check_out(out, overwrite)
    folder = ImageFolder(images) if images is not None else None
    report = ImportReport("table", {"items": str(items_p), "relations": str(rel_p), **({"images": str(images)} if images else {})}, TABLE_SKIPS)
    report.policies.update({
        "duplicate_items": "first row kept",
        "unknown_relation_names": "skipped and counted" if skip_unknown_relations else "error",
    })
    builder = CatalogBuilder(report, keep_hints=True)
    has_image_col = False
    bar = tqdm(desc="items", unit="row", disable=None if progress is None else not progress)
    for start, cols in _batches(items_p, "--items", (ITEM_ID_COLUMNS, ("category",))):
        ids, cats = cols["item_id"], cols["category"]
        titles = cols.get("title") or [None] * len(ids)
        imgs = cols.get("image")
        imgs = imgs or [None] * len(ids)
        has_image_col = has_image_col or any(imgs)  # an all-empty image column means "no images"
        for k, (iid, cat, title, img) in enumerate(zip(ids, cats, titles, imgs)):
            iid = (iid or "").strip()
            if not iid:
                report.skip("items_missing_id", 1, f"first at --items data row {start + k}: empty item_id")
                continue
            builder.add_item(iid, (cat or "").strip(), title or "", img or None)
        bar.update(len(ids))
    bar.close()
    if len(builder) == 0:
        raise UsageError(f"--items {items_p} holds no items")
    unknown_names: dict[str, tuple[int, int]] = {}
    bar = tqdm(desc="relations", unit="row", disable=None if progress is None else not progress)
    for start, cols in _batches(rel_p, "--relations", (REL_A_COLUMNS, REL_B_COLUMNS, ("relation",))):
        col_a, col_b, col_r = _pick(cols, REL_A_COLUMNS), _pick(cols, REL_B_COLUMNS), cols["relation"]
        col_u = _pick(cols, USER_COLUMNS) or [None] * len(col_a)
        for k, (ia, ib, rn, us) in enumerate(zip(col_a, col_b, col_r, col_u)):
            ia, ib, rn = (ia or "").strip(), (ib or "").strip(), (rn or "").strip()
            if not ia or not ib or not rn:
                report.skip("relations_missing_field", 1, f"first at --relations data row {start + k}: empty item or relation")
                continue
            rn = RELATION_ALIASES.get(rn, rn)
            if rn not in RELATIONS:
                first, cnt = unknown_names.get(rn, (start + k, 0))
                unknown_names[rn] = (first, cnt + 1)
                continue
            user = builder.user(us.strip()) if us and us.strip() else -1
            builder.add_relation(builder.code(ia), builder.code(ib), RELATIONS.index(rn), user)
        bar.update(len(col_a))
    bar.close()
    if unknown_names:
        listed = ", ".join(f"{n!r} ({c} rows, first at data row {f})" for n, (f, c) in sorted(unknown_names.items(), key=lambda kv: kv[1][0])[:_EXAMPLES])
        if not skip_unknown_relations:
            raise UsageError(f"--relations {rel_p}: unknown relation names {listed}; known: {', '.join(RELATIONS)} "
                             "(aliases also_buy, also_view); pass --skip-unknown-relations to skip them")
        report.skip("relations_unknown_name", sum(c for _, c in unknown_names.values()), f"unknown relation names skipped: {listed}")
    locate = None
    if folder is not None or has_image_col:
        report.policies["missing_images"] = "gray placeholder" if keep_missing_images else "item dropped"
        base = Path(images) if images is not None else items_p.parent
        hints = builder.hints or []

        def locate(rows: np.ndarray) -> list[Path | None]:
            if has_image_col:
                out_paths: list[Path | None] = []
                for r in rows.tolist():
                    h = hints[r]
                    out_paths.append(None if not h else (Path(h) if Path(h).is_absolute() else base / h))
                if folder is not None:  # fall back to <item_id>.<ext> where the column is empty
                    found = folder.locate([builder.item_ids[r] for r in rows.tolist()])
                    out_paths = [p if p is not None else f for p, f in zip(out_paths, found)]
                return out_paths
            assert folder is not None
            return folder.locate([builder.item_ids[r] for r in rows.tolist()])

    return assemble(builder, out, name=Path(out).name, locate_images=locate, image_size=image_size,
                    keep_missing_images=keep_missing_images, seed=seed, overwrite=overwrite, progress=progress)
