"""The import machinery every importer shares (SPEC §6).

Every importer streams its source once into a :class:`CatalogBuilder`, which keeps items and
relations as integer codes (not raw lines), counts every skipped input in an
:class:`ImportReport`, and finally :func:`assemble` filters, decodes images / copies features
and writes the catalog atomically with :func:`~lrprec.data.writer.write_catalog`.

Policy decisions (all counted in the report, none silent): duplicate item ids keep the first
row; items without a category get ``"unknown"``; relations with an endpoint that is not an
imported item are dropped, as are self-pairs and exact duplicates; text fields (title,
category) are cleaned by :func:`clean_text`, counted per field under ``cleaned``, with the raw
title and the image URL kept in ``items_source.parquet`` (:func:`read_item_sources`). Item ids
are never rewritten.
"""
from __future__ import annotations

import gzip
import html
import os
import re
import shutil
import tempfile
import zlib
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lrprec.data.catalog import RELATIONS
from lrprec.data.images import decode_images
from lrprec.data.writer import write_catalog
from lrprec.errors import UsageError

UNKNOWN_CATEGORY = "unknown"
RELATION_ALIASES: dict[str, str] = {"also_buy": "also_bought", "also_view": "also_viewed"}
_EXAMPLES = 5
SOURCES_FILE = "items_source.parquet"
CLEANED_FIELDS = ("title", "category")


# ---------------------------------------------------------------------------------------------
# text cleaning
# ---------------------------------------------------------------------------------------------
# A tag starts with a letter, "/" or "!" right after "<" ("size < 5" is text, not a tag).
_TAG = re.compile(r"<!--.*?(?:-->|$)|<[A-Za-z/!][^<>]*>", re.S)
_NEEDS_CLEANING = re.compile(r"[&<]|\s\s|[^\S ]|^\s|\s$|[\x00-\x1f\x7f]")
_SPACE = re.compile(r"\s+")
_ENTITY = re.compile(r"&(?:#\d+|#[xX][0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]*);")
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")


def clean_text(text: str) -> str:
    """Display text of a metadata field: HTML tags stripped, entities unescaped, whitespace collapsed.

    Tags are stripped before unescaping, so an escaped ``&lt;b&gt;`` stays visible text;
    doubly escaped entities (``&amp;quot;``, common in scraped metadata) are unescaped twice.
    Text that needs none of this is returned as is (the common case costs one regex search).
    """
    if not text or _NEEDS_CLEANING.search(text) is None:
        return text
    out = _TAG.sub(" ", text) if "<" in text else text
    if "&" in out:
        out = html.unescape(out)
        if "&" in out and _ENTITY.search(out):  # escaped twice
            out = html.unescape(out)
    out = _CONTROL.sub("", out)
    return _SPACE.sub(" ", out).strip()


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------
@dataclass
class ImportReport:
    """Counts of what an import read, kept and skipped, with where each kind of skip first occurred.

    ``skipped`` lists every kind an importer can skip, zeros included, so a reader sees
    what was checked; ``notes`` says where the first occurrence of each kind was.
    """

    source: str
    inputs: dict[str, str]
    skip_kinds: tuple[str, ...]
    skipped: dict[str, int] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    read: dict[str, int] = field(default_factory=dict)
    policies: dict[str, str] = field(default_factory=dict)
    result: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    cleaned: dict[str, int] = field(default_factory=lambda: {f: 0 for f in CLEANED_FIELDS})

    def __post_init__(self) -> None:
        for k in self.skip_kinds:
            self.skipped.setdefault(k, 0)

    def skip(self, kind: str, n: int = 1, note: str | None = None) -> None:
        """Count ``n`` skipped inputs of ``kind``; ``note`` describes the first one."""
        if n <= 0:
            return
        self.skipped[kind] = self.skipped.get(kind, 0) + n
        if note is not None and kind not in self.notes:
            self.notes[kind] = note

    def count(self, what: str, n: int = 1) -> None:
        self.read[what] = self.read.get(what, 0) + n

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "inputs": dict(self.inputs),
            **self.result,
            "read": dict(self.read),
            "skipped": dict(self.skipped),
            "skipped_total": int(sum(self.skipped.values())),
            "cleaned": dict(self.cleaned),
            "notes": dict(self.notes),
            "policies": dict(self.policies),
            **self.extra,
        }


# ---------------------------------------------------------------------------------------------
# streaming text input
# ---------------------------------------------------------------------------------------------
def check_input(path: str | os.PathLike, what: str) -> Path:
    """A readable, non-empty regular file, or a clear error naming the option."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what} file not found: {p}")
    if p.is_dir():
        raise IsADirectoryError(f"{what} must be a file, got a folder: {p}")
    if p.stat().st_size == 0:
        raise UsageError(f"{what} file is empty: {p}")
    return p


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


MAX_LINE_BYTES = 16 << 20  # far above any real record; bounds memory on a file of the wrong kind


def iter_lines(path: Path, report: ImportReport, kind: str, progress: bool | None = None) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` for each non-blank line of a plain or gzip file.

    gzip is detected by its magic bytes, not the name. One line is in memory at a time, and
    at most ``MAX_LINE_BYTES`` of it (longer lines are skipped and counted as malformed).
    A line that is not UTF-8 is counted as ``<kind>_malformed_lines``; a binary file (NUL
    bytes in its first line) is an error; a gzip stream that ends early (an interrupted
    download) is counted as ``<kind>_truncated_gzip`` and the lines before it are kept; a
    corrupt gzip stream is an error.
    """
    from tqdm import tqdm

    size = path.stat().st_size
    raw = open(path, "rb")
    stream = gzip.GzipFile(fileobj=raw, mode="rb") if is_gzip(path) else raw
    lineno = 0
    malformed = f"{kind}_malformed_lines"
    try:
        with tqdm(total=size, desc=f"{kind} {path.name}", unit="B", unit_scale=True, disable=None if progress is None else not progress) as bar:
            last = 0
            try:
                while True:
                    bline = stream.readline(MAX_LINE_BYTES)
                    if not bline:
                        break
                    lineno += 1
                    if lineno == 1 and b"\0" in bline:
                        raise UsageError(f"{path} is a binary file, not text lines (is it the wrong file for this option?)")
                    if lineno % 4096 == 0:
                        pos = raw.tell()
                        bar.update(pos - last)
                        last = pos
                    if len(bline) == MAX_LINE_BYTES and not bline.endswith(b"\n"):
                        while True:  # drop the rest of the over-long line, a piece at a time
                            more = stream.readline(MAX_LINE_BYTES)
                            if not more or more.endswith(b"\n"):
                                break
                        report.skip(malformed, 1, f"first at line {lineno}: longer than {MAX_LINE_BYTES >> 20} MiB")
                        continue
                    try:
                        text = bline.decode("utf-8").strip()
                    except UnicodeDecodeError as exc:
                        report.skip(malformed, 1, f"first at line {lineno}: not UTF-8 ({exc.reason})")
                        continue
                    if text:
                        yield lineno, text
            except EOFError:
                report.skip(f"{kind}_truncated_gzip", 1, f"{path}: gzip stream ends early after line {lineno} (incomplete download?); earlier lines kept")
            except (gzip.BadGzipFile, zlib.error) as exc:
                raise UsageError(f"{path}: corrupt gzip data after line {lineno}: {exc}") from None
            bar.update(size - last)
    finally:
        stream.close()
        raw.close()
    report.count(f"{kind}_lines", lineno)


# ---------------------------------------------------------------------------------------------
# builder
# ---------------------------------------------------------------------------------------------
class CatalogBuilder:
    """Items, users and relations as integer codes while a source streams by (bounded memory).

    Any id mentioned (as an item or as a relation endpoint) gets a code; items are the codes
    that were declared with :meth:`add_item`. Relation endpoints may be declared later than
    they are mentioned (Amazon lists related items before their own line), so filtering
    happens once, in :func:`assemble`.
    """

    def __init__(self, report: ImportReport, keep_hints: bool = False):
        self.report = report
        self.codes: dict[str, int] = {}
        self.item_row = array("q")  # per code: item row, or -1 (mentioned, never declared)
        self.item_code = array("q")  # per item row: its code
        self.item_ids: list[str] = []
        self.titles: list[str] = []
        self.category = array("i")
        self.category_names: dict[str, int] = {}
        self.hints: list[str | list[str] | None] | None = [] if keep_hints else None
        self.raw_titles: dict[int, str] = {}  # item row -> title before cleaning (only rows that changed)
        self.image_urls: dict[int, str] = {}  # item row -> image URL given by the metadata
        self.missing_images: set[int] = set()  # item rows whose image is a gray placeholder
        self._clean_categories: dict[str, str] = {}
        self.users: dict[str, int] = {}
        # relations as groups "these ids relate to a by r (user u)": one group per related list,
        # so a meta line costs one extend, and memory is 8 bytes per related id
        self.rel_b = array("q")
        self.grp_a, self.grp_u, self.grp_n = array("q"), array("q"), array("q")
        self.grp_r = array("b")

    def __len__(self) -> int:
        return len(self.item_ids)

    def code(self, item_id: str) -> int:
        c = self.codes.get(item_id)
        if c is None:
            c = self.codes[item_id] = len(self.item_row)
            self.item_row.append(-1)
        return c

    def row_of(self, item_id: str) -> int:
        """Item row of an id, -1 when it is not (yet) an item."""
        c = self.codes.get(item_id)
        return -1 if c is None else self.item_row[c]

    def add_item(self, item_id: str, category: str | None, title: str = "", hint: str | list[str] | None = None,
                 image_url: str | None = None) -> int:
        """Declare an item; returns its code, or -1 for a duplicate id (counted, first kept).

        Title and category are cleaned (:func:`clean_text`) and counted when that changed them;
        the raw title and ``image_url`` are kept for ``items_source.parquet``.
        """
        c = self.code(item_id)
        if self.item_row[c] >= 0:
            self.report.skip("items_duplicate", 1, f"duplicate item id {item_id!r} (the first one is kept)")
            return -1
        row = len(self.item_ids)
        if category:
            clean = self._clean_categories.get(category)
            if clean is None:
                clean = self._clean_categories[category] = clean_text(category)
            if clean != category:
                self.report.cleaned["category"] += 1
                category = clean
        if title:
            clean = clean_text(title)
            if clean != title:
                self.report.cleaned["title"] += 1
                self.raw_titles[row] = title
                title = clean
        if image_url:
            self.image_urls[row] = image_url
        if not category:
            self.report.skip("items_without_category", 1, f"item {item_id!r} has no category; kept as {UNKNOWN_CATEGORY!r}")
            category = UNKNOWN_CATEGORY
        cat = self.category_names.get(category)
        if cat is None:
            cat = self.category_names[category] = len(self.category_names)
        self.item_row[c] = row
        self.item_code.append(c)
        self.item_ids.append(item_id)
        self.titles.append(title or "")
        self.category.append(cat)
        if self.hints is not None:
            self.hints.append(hint)
        return c

    def user(self, user_id: str) -> int:
        u = self.users.get(user_id)
        if u is None:
            u = self.users[user_id] = len(self.users)
        return u

    def add_relations(self, a: int, others: list, relation: int) -> None:
        """Record that each id in ``others`` is related to code ``a`` (non-personalized); batched
        because a meta line lists dozens of related ids. Entries that are not strings are ignored."""
        try:
            cs = list(map(self.codes.get, others))  # all known ids: the common case, at C speed
        except TypeError:  # an unhashable entry
            cs = [None]
        if None in cs:  # new ids, or entries that are not ids (validated here)
            codes, before = self.codes, len(self.codes)
            for o in others:
                if type(o) is str and o and o not in codes:
                    codes[o] = len(codes)
            if len(codes) > before:
                self.item_row.extend(array("q", [-1]) * (len(codes) - before))
            cs = [codes[o] for o in others if type(o) is str and o]
        if a in cs:
            n_self = cs.count(a)
            self.report.skip("relations_self", n_self, "an item related to itself")
            cs = [c for c in cs if c != a]
        if cs:
            self._group(a, relation, -1, len(cs))
            self.rel_b.extend(cs)

    def _group(self, a: int, relation: int, user: int, n: int) -> None:
        self.grp_a.append(a)
        self.grp_r.append(relation)
        self.grp_u.append(user)
        self.grp_n.append(n)

    def add_relation(self, a: int, b: int, relation: int, user: int = -1) -> None:
        """Record that code ``b`` is related to code ``a`` by ``RELATIONS[relation]`` (user -1: none)."""
        if a == b:
            prefix = "personal_pairs" if user >= 0 else "relations"
            self.report.skip(f"{prefix}_self", 1, "an item related to itself")
            return
        self._group(a, relation, user, 1)
        self.rel_b.append(b)

    def relation_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """All recorded relations as parallel int64 arrays (a code, b code, relation, user)."""
        n = np.frombuffer(self.grp_n, dtype=np.int64)
        a = np.repeat(np.frombuffer(self.grp_a, dtype=np.int64), n)
        r = np.repeat(np.frombuffer(self.grp_r, dtype=np.int8).astype(np.int64), n)
        u = np.repeat(np.frombuffer(self.grp_u, dtype=np.int64), n)
        return a, np.frombuffer(self.rel_b, dtype=np.int64), r, u


RELATION_SKIPS = (
    "relations_self", "relations_duplicate", "relations_unknown_item", "relations_dropped_item",
)
PERSONAL_SKIPS = (
    "personal_pairs_self", "personal_pairs_duplicate", "personal_pairs_unknown_item", "personal_pairs_dropped_item",
    "users_without_pairs",
)
ITEM_SKIPS = ("items_duplicate", "items_without_category")
IMAGE_SKIPS = ("images_missing", "images_corrupt", "items_dropped_no_image")
FEATURE_SKIPS = ("items_without_features",)


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
        sources = _write_sources(builder, rows, workdir / SOURCES_FILE)
        if sources is not None:
            files[SOURCES_FILE] = sources
        write_catalog(out, items=items, relations=table, users=users, meta=meta, files=files, split_seed=seed, overwrite=overwrite)
        return report.to_dict()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _write_sources(builder: CatalogBuilder, rows: np.ndarray, path: Path) -> Path | None:
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
