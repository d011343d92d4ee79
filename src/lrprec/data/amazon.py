"""Importers for the public Amazon product data (McAuley et al. 2014 and Ni et al. 2018).

* **2014** ``meta_<Cat>.json.gz``: one *Python literal* dict per line (not JSON). It is parsed
  by :func:`parse_literal`, which gives exactly what ``ast.literal_eval`` gives (never
  ``eval``) but is ~10x faster: lines are turned into JSON by a tokenizer that only touches
  string literals and ``True/False/None``, parsed by the C JSON parser, and anything it is
  not sure about falls back to ``ast.literal_eval`` itself.
  Fields: ``asin``, ``title``, ``imUrl``, ``categories`` (the top-level category is the first
  element of the first path; ``category_level`` picks a deeper one), ``related`` with
  ``also_bought``, ``also_viewed``, ``bought_together``, ``buy_after_viewing``.
* **2018** ``meta_<Cat>.json.gz``: strict JSON lines; ``category`` (list; else ``main_cat``),
  ``imageURL``/``imageURLHighRes``, ``also_buy`` -> also_bought, ``also_view`` -> also_viewed.
* **reviews** (both years): JSON lines with ``reviewerID``, ``asin``, ``unixReviewTime``. Each
  user's reviews, sorted by time (ties: file order), are read as a purchase sequence; every
  two consecutive purchases i then j give a *personalized pair* (u, i, j) with the relation
  ``personal_relation`` (default ``also_bought``: bought i, then also bought j [M15 §3.2]).
  A pair is kept only when both items are imported; users with no kept pair are not kept.
* **features** (2014) ``image_features_<Cat>.b``: read by :mod:`lrprec.data.amazon_features`
  (record layout, windowed memmaps, counted skips). Items with no record are dropped (features
  mode needs a vector for every item) and counted. The kept vectors are copied, in one
  sequential pass, into ``features.npy`` of the catalog (float32, catalog order).

Everything skipped is counted in the import report (see :mod:`lrprec.data.importing`). Titles and
category names are cleaned there (real 2018 metadata carries HTML entities and tags); the
report counts the cleaned values, and the raw title and the metadata's image URL are kept in
the catalog's ``items_source.parquet``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from lrprec.data.amazon_features import (
    ASIN_BYTES,
    B_SKIPS,
    FEATURE_DIM,
    check_features_file,
    feature_dtype,
    scan_features,
    write_features,
)
from lrprec.data.catalog import RELATIONS
from lrprec.data.images import ImageFolder
from lrprec.data.importing.assembly import assemble, check_out
from lrprec.data.importing.builder import RELATION_ALIASES, CatalogBuilder
from lrprec.data.importing.lines import check_input, iter_lines
from lrprec.data.importing.report import FEATURE_SKIPS, IMAGE_SKIPS, ITEM_SKIPS, PERSONAL_SKIPS, RELATION_SKIPS, ImportReport
from lrprec.data.pyliteral import parse_literal
from lrprec.errors import UsageError

# the .b features' names stay importable from here
__all__ = [
    "ASIN_BYTES", "B_SKIPS", "FEATURE_DIM", "META_SKIPS", "REVIEW_SKIPS", "check_features_file", "feature_dtype", "import_amazon",
    "import_amazon2014", "import_amazon2018", "scan_features", "write_features",
]

META2014_FIELDS = ("categories", "related", "imUrl", "salesRank")  # "title" is in both years
META2018_FIELDS = ("category", "also_buy", "also_view", "imageURL", "imageURLHighRes", "main_cat")
REVIEW_FIELDS = ("reviewerID", "asin", "unixReviewTime")
RELATED_2014 = {r: r for r in RELATIONS}
RELATED_2018 = RELATION_ALIASES  # Amazon 2018 field names → relations (one table, shared with the table importer)
_KIND_PROBE = 100  # records used to decide whether a file is of the expected kind

META_SKIPS = ("meta_malformed_lines", "meta_not_a_dict", "meta_missing_asin", "meta_truncated_gzip", *ITEM_SKIPS)
REVIEW_SKIPS = ("reviews_malformed_lines", "reviews_missing_field", "reviews_unknown_item", "reviews_truncated_gzip", "personal_pairs_same_item")


# ---------------------------------------------------------------------------------------------
# records
# ---------------------------------------------------------------------------------------------
_GIVE_UP_LINES = 1000  # lines without a single readable record before a file is refused


def _records(path: Path, report: ImportReport, kind: str, parse: Callable[[str], Any], progress: bool | None,
             unreadable: Callable[[], None]) -> Iterator[tuple[int, dict]]:
    """Parsed dict records of a line file; malformed lines and non-dicts are counted, not yielded.

    When the first ``_GIVE_UP_LINES`` lines hold no record at all, ``unreadable`` raises: a
    file of the wrong kind is refused early instead of after a multi-GB parse.
    """
    good = False
    not_a_dict = f"{kind}_not_a_dict" if f"{kind}_not_a_dict" in report.skipped else f"{kind}_malformed_lines"
    for lineno, line in iter_lines(path, report, kind, progress):
        try:
            rec = parse(line)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
            report.skip(f"{kind}_malformed_lines", 1, f"first at line {lineno}: {_short(exc)}")
            if not good and lineno >= _GIVE_UP_LINES:
                unreadable()
            continue
        if not isinstance(rec, dict):
            report.skip(not_a_dict, 1, f"first at line {lineno}: a {type(rec).__name__}, not a record")
            if not good and lineno >= _GIVE_UP_LINES:
                unreadable()
            continue
        good = True
        yield lineno, rec


def _short(exc: BaseException) -> str:
    msg = f"{type(exc).__name__}: {exc}"
    return msg if len(msg) <= 160 else msg[:157] + "..."


class _KindProbe:
    """Decides from the first records whether a file is of the expected kind (else a clear error)."""

    def __init__(self, path: Path, what: str, good: Callable[[dict], bool], hint: str, diagnose: Callable[[dict], str | None]):
        self.path, self.what, self.good, self.hint, self.diagnose = path, what, good, hint, diagnose
        self.seen = 0
        self.ok = False
        self.first_bad: str | None = None
        self.unreadable_hint = ""

    def check(self, rec: dict) -> None:
        if self.ok or self.seen >= _KIND_PROBE:
            return
        self.seen += 1
        if self.good(rec):
            self.ok = True
            return
        if self.first_bad is None:
            self.first_bad = self.diagnose(rec)
        if self.seen == _KIND_PROBE:
            self.fail()

    def fail(self) -> None:
        extra = f"; {self.first_bad}" if self.first_bad else ""
        raise UsageError(f"{self.path} does not look like {self.what}: none of its first {self.seen} records has {self.hint}{extra}")

    def finish(self, report: ImportReport, kind: str) -> None:
        if self.seen == 0:
            notes = report.notes.get(f"{kind}_malformed_lines", "")
            detail = f" (malformed lines, {notes})" if notes else ""
            raise UsageError(f"{self.path} holds no readable {self.what} records{detail}{self.unreadable_hint}")
        if not self.ok:
            self.fail()


def _diagnose(rec: dict) -> str | None:
    keys = set(rec)
    if "reviewerID" in keys:
        return "it looks like a reviews file (records have reviewerID); pass it as --reviews"
    if keys & {"also_buy", "also_view", "imageURL", "main_cat"} and not keys & {"related", "imUrl", "categories"}:
        return "it looks like Amazon 2018 metadata; use 'lrprec import amazon2018'"
    if keys & {"related", "imUrl", "categories"} and not keys & {"also_buy", "also_view", "category"}:
        return "it looks like Amazon 2014 metadata; use 'lrprec import amazon2014'"
    return f"keys found: {', '.join(sorted(map(str, keys))[:8])}"


def _category(paths: Any, level: int) -> str:
    """Category at ``level`` of a category path (the deepest one when the path is shorter)."""
    if isinstance(paths, list) and paths:
        first = paths[0]
        if isinstance(first, list):  # 2014: list of paths
            path = [c for c in first if isinstance(c, str) and c.strip()]
        else:  # 2018: one path
            path = [c for c in paths if isinstance(c, str) and c.strip()]
        if path:
            return path[min(level, len(path) - 1)].strip()
    return ""


def _str(v: Any) -> str:
    return v.strip() if isinstance(v, str) else ("" if v is None else str(v))


def _read_meta(path: Path, builder: CatalogBuilder, *, year: int, category_level: int, progress: bool | None) -> None:
    report = builder.report
    if year == 2014:
        parse: Callable[[str], Any] = parse_literal
        what, hint = "Amazon 2014 metadata (meta_<Cat>.json.gz)", "an 'asin' with any of " + ", ".join(META2014_FIELDS)
        fields, related_map = META2014_FIELDS, RELATED_2014
    else:
        parse = json.loads
        what, hint = "Amazon 2018 metadata (meta_<Cat>.json.gz)", "an 'asin' with any of " + ", ".join(META2018_FIELDS)
        fields, related_map = META2018_FIELDS, RELATED_2018
    probe = _KindProbe(path, what, lambda r: "asin" in r and any(f in r for f in fields) and "reviewerID" not in r, hint, _diagnose)
    if year == 2018:
        probe.unreadable_hint = "; Python-literal lines (single quotes) are the 2014 format: use 'lrprec import amazon2014'"
    for lineno, rec in _records(path, report, "meta", parse, progress, lambda: probe.finish(report, "meta")):
        probe.check(rec)
        asin = _str(rec.get("asin"))
        if not asin:
            report.skip("meta_missing_asin", 1, f"first at line {lineno}: no 'asin'")
            continue
        if year == 2014:
            category = _category(rec.get("categories"), category_level)
            image = rec.get("imUrl") if isinstance(rec.get("imUrl"), str) else None
            related = rec.get("related") if isinstance(rec.get("related"), dict) else {}
        else:
            category = _category(rec.get("category"), category_level)
            if not category:
                main = _str(rec.get("main_cat"))
                category = "" if main.startswith("<") else main  # some main_cat values are HTML
            image = [u[0] for u in (rec.get("imageURLHighRes"), rec.get("imageURL")) if isinstance(u, list) and u and isinstance(u[0], str)]
            related = rec
        url = image if isinstance(image, str) else (image[0] if image else None)
        code = builder.add_item(asin, category, _str(rec.get("title")), image, image_url=url)
        if code < 0:
            continue  # duplicate asin: counted by add_item; its relations are ignored too
        for key, rel in related_map.items():
            others = related.get(key)
            if others and isinstance(others, list):
                builder.add_relations(code, others, RELATIONS.index(rel))
    probe.finish(report, "meta")


def _read_reviews(path: Path, builder: CatalogBuilder, *, personal_relation: str, progress: bool | None) -> None:
    """Users and personalized pairs from a reviews file (see module docstring)."""
    from array import array

    report = builder.report
    rel = RELATIONS.index(personal_relation)
    users, items, times = array("q"), array("q"), array("q")
    probe = _KindProbe(path, "an Amazon reviews file", lambda r: all(f in r for f in REVIEW_FIELDS), "all of " + ", ".join(REVIEW_FIELDS), _diagnose)
    for lineno, rec in _records(path, report, "reviews", json.loads, progress, lambda: probe.finish(report, "reviews")):
        probe.check(rec)
        uid, asin, t = rec.get("reviewerID"), rec.get("asin"), rec.get("unixReviewTime")
        if (not isinstance(uid, str) or not uid or not isinstance(asin, str) or not asin
                or type(t) not in (int, float) or not -2**62 < t < 2**62):  # NaN fails the range test too
            report.skip("reviews_missing_field", 1, f"first at line {lineno}: needs reviewerID, asin and a numeric unixReviewTime")
            continue
        row = builder.row_of(asin.strip())
        if row < 0:
            report.skip("reviews_unknown_item", 1, f"first at line {lineno}: asin {asin!r} is not in the metadata")
            continue
        users.append(builder.user(uid))
        items.append(builder.item_code[row])
        times.append(int(t))
    probe.finish(report, "reviews")
    report.count("reviews_used", len(users))
    u = np.frombuffer(users, dtype=np.int64)
    it = np.frombuffer(items, dtype=np.int64)
    tm = np.frombuffer(times, dtype=np.int64)
    order = np.lexsort((np.arange(u.size), tm, u))  # by user, then time, then file order
    u, it = u[order], it[order]
    same_user = u[1:] == u[:-1]
    same_item = same_user & (it[1:] == it[:-1])
    report.skip("personal_pairs_same_item", int(same_item.sum()), "a user's consecutive reviews of the same item give no pair")
    for k in np.flatnonzero(same_user & ~same_item).tolist():
        builder.add_relation(int(it[k]), int(it[k + 1]), rel, int(u[k]))


# ---------------------------------------------------------------------------------------------
# importers
# ---------------------------------------------------------------------------------------------
def _image_locator(folder: ImageFolder, builder: CatalogBuilder) -> Callable[[np.ndarray], list[Path | None]]:
    hints = builder.hints or []

    def locate(rows: np.ndarray) -> list[Path | None]:
        rl = rows.tolist()
        return folder.locate([builder.item_ids[r] for r in rl], [hints[r] for r in rl] if hints else None)

    return locate


def _policies(report: ImportReport, *, images: bool, keep_missing_images: bool, features: bool, personal_relation: str | None) -> None:
    report.policies.update({"duplicate_items": "first record kept", "relations_outside_items": "dropped"})
    if images:
        report.policies["missing_images"] = "gray placeholder" if keep_missing_images else "item dropped"
    if features:
        report.policies["items_without_features"] = "dropped (features mode needs a vector per item)"
    if personal_relation:
        report.policies["personalized_pairs"] = f"a user's consecutive reviews (by time) i then j -> (user, i, j) as {personal_relation}"


def import_amazon(
    meta: str | os.PathLike,
    out: str | os.PathLike,
    *,
    year: int = 2014,
    reviews: str | os.PathLike | None = None,
    features: str | os.PathLike | None = None,
    images: str | os.PathLike | None = None,
    image_size: int = 64,
    keep_missing_images: bool = False,
    category_level: int = 0,
    personal_relation: str = "also_bought",
    feature_dim: int = FEATURE_DIM,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool | None = None,
) -> dict:
    """Import Amazon product data (``year`` 2014 or 2018) into a catalog at ``out``; returns the report.

    Every input is checked before the long parse (existence, emptiness, ``--out`` free), and
    the catalog appears at ``out`` only when complete.
    """
    if year not in (2014, 2018):
        raise UsageError(f"year must be 2014 or 2018, got {year}")
    if features is not None and year != 2014:
        raise UsageError("the 2018 data has no .b image features; --features is for amazon2014")
    if personal_relation not in RELATIONS:
        raise UsageError(f"unknown relation {personal_relation!r} for personalized pairs; known: {', '.join(RELATIONS)}")
    if category_level < 0:
        raise UsageError(f"--category-level must be >= 0, got {category_level}")
    meta_p = check_input(meta, "--meta")
    reviews_p = check_input(reviews, "--reviews") if reviews is not None else None
    features_p = check_input(features, "--features") if features is not None else None
    if features_p is not None:
        check_features_file(features_p, feature_dim)  # fail before the long meta parse
    folder = ImageFolder(images) if images is not None else None
    out = check_out(out, overwrite)
    inputs: dict = {"meta": str(meta_p), "category_level": category_level}  # the category level the protocols and CT use
    for k, v in (("reviews", reviews_p), ("features", features_p), ("images", images)):
        if v is not None:
            inputs[k] = str(v)
    kinds = [*META_SKIPS, *RELATION_SKIPS]
    if reviews_p is not None:
        kinds += [*REVIEW_SKIPS, *PERSONAL_SKIPS]
    if features_p is not None:
        kinds += [*B_SKIPS, *FEATURE_SKIPS]
    if folder is not None:
        kinds += list(IMAGE_SKIPS)
    report = ImportReport(f"amazon{year}", inputs, tuple(dict.fromkeys(kinds)))
    _policies(report, images=folder is not None, keep_missing_images=keep_missing_images, features=features_p is not None,
              personal_relation=personal_relation if reviews_p is not None else None)
    builder = CatalogBuilder(report, keep_hints=folder is not None)
    _read_meta(meta_p, builder, year=year, category_level=category_level, progress=progress)
    if reviews_p is not None:
        _read_reviews(reviews_p, builder, personal_relation=personal_relation, progress=progress)
    feats = scan_features(features_p, builder, dim=feature_dim, progress=progress) if features_p is not None else None
    name = f"amazon{year}-{_category_name(meta_p)}"
    return assemble(builder, out, name=name, features=feats, locate_images=_image_locator(folder, builder) if folder else None,
                    image_size=image_size, keep_missing_images=keep_missing_images, seed=seed, overwrite=overwrite, progress=progress)


def _category_name(meta: Path) -> str:
    """``meta_Clothing_Shoes_and_Jewelry.json.gz`` -> ``Clothing_Shoes_and_Jewelry``."""
    name = meta.name
    for suffix in (".gz", ".json", ".jsonl"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name[5:] if name.startswith("meta_") else name


def import_amazon2014(meta: str | os.PathLike, out: str | os.PathLike, **kwargs: Any) -> dict:
    """Amazon 2014 (Python-literal meta, optional reviews, ``.b`` features, image folder); see :func:`import_amazon`."""
    return import_amazon(meta, out, year=2014, **kwargs)


def import_amazon2018(meta: str | os.PathLike, out: str | os.PathLike, **kwargs: Any) -> dict:
    """Amazon 2018 (JSON meta, optional reviews, image folder); see :func:`import_amazon`."""
    return import_amazon(meta, out, year=2018, **kwargs)
