"""The :class:`CatalogBuilder`: items, users and relations as integer codes while a source streams by.

Policy decisions (counted in the report): duplicate item ids keep the first row; items without a
category get ``"unknown"``; self-pairs are dropped; title and category are cleaned by
:func:`~lrprec.data.importing.text.clean_text`, the raw title and the image URL kept for
``items_source.parquet``. Item ids are never rewritten.
"""
from __future__ import annotations

from array import array

import numpy as np

from lrprec.data.importing.report import ImportReport
from lrprec.data.importing.text import clean_text

UNKNOWN_CATEGORY = "unknown"
RELATION_ALIASES: dict[str, str] = {"also_buy": "also_bought", "also_view": "also_viewed"}  # Amazon 2018 names


class CatalogBuilder:
    """Items, users and relations as integer codes while a source streams by (bounded memory).

    Any id mentioned (as an item or as a relation endpoint) gets a code; items are the codes
    that were declared with :meth:`add_item`. Relation endpoints may be declared later than
    they are mentioned (Amazon lists related items before their own line), so filtering
    happens once, in :func:`~lrprec.data.importing.assembly.assemble`.
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
