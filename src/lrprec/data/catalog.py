"""The catalog: items, relations, users and splits on disk, and fast access to them.

A catalog directory holds::

    catalog.json          format marker, name, relation names, image size, import report
    items.parquet         item_id, category, title, image (path relative to the catalog or "")
    relations.parquet     item_a, item_b, relation, user ("" when not personalized)
    splits/train.parquet  positive pairs (negatives are resampled every epoch)
    splits/validation.parquet, splits/test.parquet   positives + fixed negatives (category protocol), with label
    splits/validation-random.parquet, splits/test-random.parquet   the same positives + random-protocol negatives
    images.npy            optional uint8 (N, H, W, 3) decode cache, opened as a memmap
    masks.npy             optional uint8 (N, H, W) ground truth of attribute pixels
    features.npy          optional float32 (N, F) precomputed features (features mode)

Everything downstream works with integer indices (item row, relation index in
``RELATIONS``, user row or -1) held in :class:`Pairs`.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lrprec.errors import LrprecError

RELATIONS: tuple[str, ...] = ("also_viewed", "buy_after_viewing", "also_bought", "bought_together")
SUBSTITUTES = ("also_viewed", "buy_after_viewing")
COMPLEMENTS = ("also_bought", "bought_together")
SPLITS = ("train", "validation", "test")
NEGATIVE_PROTOCOLS = ("category", "random")  # the fixed validation/test negative sets (see data.sampling)
FORMAT = "lrprec-catalog"


class CatalogError(LrprecError):
    """Raised for a missing, malformed or inconsistent catalog, or an unknown name in it."""


@dataclass
class Pairs:
    """Labelled item pairs as parallel integer arrays (item rows, relation index, user row or -1)."""

    a: np.ndarray
    b: np.ndarray
    relation: np.ndarray
    user: np.ndarray
    label: np.ndarray

    def __len__(self) -> int:
        return int(self.a.shape[0])

    def take(self, idx: np.ndarray | slice) -> "Pairs":
        """The pairs at ``idx`` (an index array, a boolean mask or a slice), as new ``Pairs``."""
        return Pairs(self.a[idx], self.b[idx], self.relation[idx], self.user[idx], self.label[idx])

    def spread(self, n: int) -> "Pairs":
        """At most ``n`` pairs taken at evenly spaced positions (a fixed, seed-free subset that spans the order)."""
        return self.take(np.unique(np.linspace(0, len(self) - 1, min(n, len(self))).round().astype(np.int64)))

    @staticmethod
    def concat(parts: Iterable["Pairs"]) -> "Pairs":
        """The pairs of ``parts`` one after the other."""
        parts = list(parts)
        return Pairs(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("a", "b", "relation", "user", "label")))

    @staticmethod
    def empty() -> "Pairs":
        """No pairs (int64 arrays of length 0, int8 labels)."""
        z = np.zeros(0, dtype=np.int64)
        return Pairs(z, z, z, z, z.astype(np.int8))


def relation_index(name: str) -> int:
    """Index of a relation name in ``RELATIONS``; a clear error for unknown names."""
    try:
        return RELATIONS.index(name)
    except ValueError:
        raise CatalogError(f"unknown relation {name!r}; known relations: {', '.join(RELATIONS)}") from None


class Catalog:
    """Read access to a catalog directory (see module docstring). Cheap to open: arrays are memmapped."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        meta_path = self.root / "catalog.json"
        if not self.root.is_dir():
            raise CatalogError(f"catalog directory not found: {self.root}")
        if not meta_path.is_file():
            raise CatalogError(f"{self.root} is not an lrprec catalog (no catalog.json); create one with 'lrprec synth' or 'lrprec import'")
        try:
            self.meta: dict = json.loads(meta_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CatalogError(f"{meta_path} is not valid JSON: {exc}") from None
        if not isinstance(self.meta, dict):
            raise CatalogError(f"{meta_path} is not an lrprec catalog (a JSON object was expected)")
        if self.meta.get("format") != FORMAT:
            raise CatalogError(f"{meta_path} is not an lrprec catalog (format={self.meta.get('format')!r})")
        items = _read_table(self.root / "items.parquet")
        missing = [c for c in ("item_id", "category") if c not in items.column_names]
        if missing:
            raise CatalogError(f"{self.root / 'items.parquet'} lacks the column(s) {', '.join(missing)}: not written by lrprec, or damaged")
        self.item_ids: np.ndarray = np.asarray(items.column("item_id").to_pylist(), dtype=object)
        self.categories: np.ndarray = np.asarray(items.column("category").to_pylist(), dtype=object)
        self.titles: np.ndarray = np.asarray(items.column("title").to_pylist(), dtype=object) if "title" in items.column_names else np.full(len(self.item_ids), "", dtype=object)
        self.image_paths: np.ndarray = np.asarray(items.column("image").to_pylist(), dtype=object) if "image" in items.column_names else np.full(len(self.item_ids), "", dtype=object)
        self._index = {iid: k for k, iid in enumerate(self.item_ids)}
        self.category_names: list[str] = sorted(set(self.categories.tolist()))
        self.category_codes: np.ndarray = np.searchsorted(np.asarray(self.category_names, dtype=object), self.categories).astype(np.int64) if len(self.categories) else np.zeros(0, np.int64)
        users_path = self.root / "users.parquet"
        self.user_ids: list[str] = _read_table(users_path).column("user_id").to_pylist() if users_path.exists() else []
        self._user_index = {u: k for k, u in enumerate(self.user_ids)}
        self.relations: list[str] = list(self.meta.get("relations", RELATIONS))
        self._cache: dict[str, object] = {}

    # ---- identity -------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The catalog's name from catalog.json (default: its folder's name)."""
        return str(self.meta.get("name", self.root.name))

    @property
    def fingerprint(self) -> str:
        """A string that changes whenever the catalog is regenerated or re-imported."""
        return str(self.meta.get("fingerprint", ""))

    def __len__(self) -> int:
        return len(self.item_ids)

    def index_of(self, item_id: str) -> int:
        """Row of ``item_id`` in the catalog's arrays. Raises ``CatalogError`` for an unknown id."""
        try:
            return self._index[item_id]
        except KeyError:
            raise CatalogError(f"unknown item id {item_id!r} (see 'lrprec items {self.root}')") from None

    def user_index(self, user_id: str | None, strict: bool = True) -> int:
        """Row of a user, -1 for none; unknown users raise unless ``strict`` is False (then -1)."""
        if user_id in (None, ""):
            return -1
        k = self._user_index.get(user_id)
        if k is None:
            if strict:
                raise CatalogError(f"unknown user id {user_id!r}")
            return -1
        return k

    def check_category(self, category: str) -> str:
        """``category`` unchanged if the catalog has it; raises ``CatalogError`` naming the categories otherwise."""
        if category not in self.category_names:
            raise CatalogError(f"unknown category {category!r}; categories: {', '.join(self.category_names)}")
        return category

    # ---- arrays ---------------------------------------------------------------------------
    def _npy(self, name: str) -> np.ndarray | None:
        if name not in self._cache:
            path = self.root / f"{name}.npy"
            if not path.exists():
                self._cache[name] = None
            else:
                try:
                    self._cache[name] = np.load(path, mmap_mode="r")
                except (ValueError, OSError) as exc:
                    raise CatalogError(f"cannot read {path}: {exc}") from None
        return self._cache[name]  # type: ignore[return-value]

    @property
    def images(self) -> np.ndarray | None:
        """uint8 (N, H, W, 3) memmap of decoded images, or None for a features-only catalog."""
        arr = self._npy("images")
        if arr is not None and (arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3):
            raise CatalogError(f"{self.root / 'images.npy'} holds {arr.dtype} {arr.shape}, expected uint8 (items, H, W, 3): damaged or not written by lrprec")
        if arr is not None and arr.shape[0] != len(self):
            raise CatalogError(f"{self.root / 'images.npy'} holds {arr.shape[0]} images for {len(self)} items")
        return arr

    @property
    def masks(self) -> np.ndarray | None:
        """uint8 (N, H, W) ground-truth masks of the attribute-carrying pixels, when known."""
        return self._npy("masks")

    @property
    def features(self) -> np.ndarray | None:
        """float32 (N, F) precomputed image features (features mode), when present."""
        arr = self._npy("features")
        if arr is not None and (arr.dtype != np.float32 or arr.ndim != 2 or arr.shape[0] != len(self)):
            raise CatalogError(f"{self.root / 'features.npy'} holds {arr.dtype} {arr.shape}, expected float32 ({len(self)}, F): "
                               "damaged or not written by lrprec")
        return arr

    def feature_rows(self, rows: np.ndarray) -> np.ndarray:
        """float32 feature rows, read per call (indexing the memmap would keep the file resident)."""
        if self.features is None:
            raise CatalogError(f"{self.root} has no precomputed features (features mode)")
        if "feature_reader" not in self._cache:
            from lrprec.data.features import LazyFeatures

            self._cache["feature_reader"] = LazyFeatures(self.features)
        return self._cache["feature_reader"].rows(rows)  # type: ignore[union-attr]

    @property
    def image_size(self) -> int | None:
        """Side in pixels of the decoded square images, or None for a features-only catalog."""
        imgs = self.images
        return None if imgs is None else int(imgs.shape[1])

    # ---- pairs ----------------------------------------------------------------------------
    def relation_table(self) -> pa.Table:
        """Every known relation as an Arrow table (``relations.parquet``: item_a, item_b, relation, user)."""
        return _read_table(self.root / "relations.parquet")

    def _pairs_from_table(self, table: pa.Table) -> Pairs:
        a = np.fromiter((self._index[x] for x in table.column("item_a").to_pylist()), dtype=np.int64, count=table.num_rows)
        b = np.fromiter((self._index[x] for x in table.column("item_b").to_pylist()), dtype=np.int64, count=table.num_rows)
        rel = np.fromiter((RELATIONS.index(x) for x in table.column("relation").to_pylist()), dtype=np.int64, count=table.num_rows)
        users = table.column("user").to_pylist() if "user" in table.column_names else [""] * table.num_rows
        user = np.fromiter((self._user_index.get(u, -1) if u else -1 for u in users), dtype=np.int64, count=table.num_rows)
        label = np.asarray(table.column("label").to_pylist(), dtype=np.int8) if "label" in table.column_names else np.ones(table.num_rows, np.int8)
        return Pairs(a, b, rel, user, label)

    def positives(self) -> Pairs:
        """All positive relations of the catalog."""
        if "positives" not in self._cache:
            self._cache["positives"] = self._pairs_from_table(self.relation_table())
        return self._cache["positives"]  # type: ignore[return-value]

    def pairs(self, split: str, negatives: str = "category") -> Pairs:
        """Labelled pairs of a split: train holds positives only; validation/test positives + the
        fixed negatives of protocol ``negatives`` (``category`` or ``random``, SPEC §1)."""
        if split not in SPLITS:
            raise CatalogError(f"unknown split {split!r}; splits: {', '.join(SPLITS)}")
        if negatives not in NEGATIVE_PROTOCOLS:
            raise CatalogError(f"unknown negative protocol {negatives!r}; stored protocols: {', '.join(NEGATIVE_PROTOCOLS)}")
        key = f"split:{split}:{negatives}"
        if key not in self._cache:
            path = split_file(self.root, split, negatives)
            if not path.exists():
                hint = " (the catalog predates negative protocols; re-create it with 'lrprec synth' or 'lrprec import')" if negatives != "category" else ""
                raise CatalogError(f"{self.root} has no {split} split for {negatives} negatives ({path} missing){hint}")
            self._cache[key] = self._pairs_from_table(_read_table(path))
        return self._cache[key]  # type: ignore[return-value]

    def has_protocol(self, negatives: str) -> bool:
        """Whether the validation/test negatives of a protocol are stored."""
        return split_file(self.root, "test", negatives).exists()

    def describe(self) -> dict:
        """Counts a person or a script wants first: items, users, categories, relations, splits."""
        pos = self.positives()
        out = {
            "name": self.name,
            "path": str(self.root),
            "items": len(self),
            "users": len(self.user_ids),
            "categories": {c: int(n) for c, n in zip(self.category_names, np.bincount(self.category_codes, minlength=len(self.category_names)))},
            "relations": {r: int((pos.relation == RELATIONS.index(r)).sum()) for r in self.relations},
            "personalized_relations": int((pos.user >= 0).sum()),
            "splits": {},
            "image_size": self.image_size,
            "has_masks": self.masks is not None,
            "features_dim": None if self.features is None else int(self.features.shape[1]),
        }
        for s in SPLITS:
            for neg in NEGATIVE_PROTOCOLS if s != "train" else ("category",):
                if split_file(self.root, s, neg).exists():
                    p = self.pairs(s, neg)
                    name = s if s == "train" or neg == "category" else f"{s}-{neg}"
                    out["splits"][name] = {"pairs": len(p), "positives": int(p.label.sum()), "negatives": int(len(p) - p.label.sum())}
        if "import_report" in self.meta:
            out["import_report"] = self.meta["import_report"]
        if "shortcut" in self.meta:
            out["shortcut"] = self.meta["shortcut"]
        return out


def split_file(root: Path, split: str, negatives: str = "category") -> Path:
    """Where a split's pairs are stored: ``splits/<split>.parquet``, ``splits/<split>-<protocol>.parquet``."""
    suffix = "" if split == "train" or negatives == "category" else f"-{negatives}"
    return Path(root) / "splits" / f"{split}{suffix}.parquet"


def _read_table(path: Path) -> pa.Table:
    if not path.exists():
        raise CatalogError(f"catalog file missing: {path}")
    try:
        return pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise CatalogError(f"cannot read {path}: {exc}") from None


def pairs_table(catalog_ids: np.ndarray, pairs: Pairs, user_ids: list[str], with_label: bool = True) -> pa.Table:
    """Turn index pairs back into an id table (item_a, item_b, relation, user[, label])."""
    users = np.asarray([""] + list(user_ids), dtype=object)
    cols = {
        "item_a": pa.array(catalog_ids[pairs.a].tolist(), pa.string()),
        "item_b": pa.array(catalog_ids[pairs.b].tolist(), pa.string()),
        "relation": pa.array([RELATIONS[r] for r in pairs.relation.tolist()], pa.string()),
        "user": pa.array(users[pairs.user + 1].tolist(), pa.string()),
    }
    if with_label:
        cols["label"] = pa.array(pairs.label.astype(np.int8))
    return pa.table(cols)


def search_items(cat: Catalog, category: str | None = None, search: str | None = None, limit: int = 20) -> list[dict]:
    """Items (id, category, title) filtered by category and a case-insensitive substring of id or title.

    The CLI's ``items`` and the web app's item search both use it. ``limit`` 0: all."""
    if limit < 0:
        raise CatalogError(f"limit must be >= 0, got {limit}")
    sel = np.ones(len(cat), bool)
    if category is not None:
        sel &= cat.categories == cat.check_category(category)
    if search:
        s = search.lower()
        sel &= np.asarray([s in i.lower() or s in (t or "").lower() for i, t in zip(cat.item_ids, cat.titles)], bool)
    idx = np.flatnonzero(sel)
    if limit:
        idx = idx[:limit]
    return [{"item_id": cat.item_ids[k], "category": cat.categories[k], "title": cat.titles[k]} for k in idx]
