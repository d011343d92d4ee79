"""The loaded run behind the web app: model, catalog, index, caches, and the calls routes make.

:class:`ServeState` holds what ``create_app`` loads once and answers the routes through the
same Python API as the CLI; errors a client causes are :class:`NotFound` (404) and
:class:`BadParam` (422).
"""
from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any, Hashable
from urllib.parse import quote

import numpy as np
from cachetools import LRUCache

from lrprec.data.catalog import RELATIONS, CatalogError
from lrprec.data.importing.sources import read_item_sources
from lrprec.errors import LrprecError
from lrprec.jsonable import plain
from lrprec.run import Run
from lrprec.serve import compute, heatmap
from lrprec.serve.params import CACHE_BYTES, CACHE_ENTRIES, EXPLAIN_NICE, EXPLAIN_QUEUE, EXPLAIN_WORKERS, IMAGE_SUFFIXES, TARGETS, WARM_BATCH
from lrprec.serve.files import NotFound, safe_file
from lrprec.serve.pool import ComputePool
from lrprec.serve.urls import image_url

__all__ = ["BadParam", "NotFound", "ServeState", "safe_file"]

log = logging.getLogger("lrprec.serve")


class BadParam(LrprecError):
    """A parameter the model or catalog cannot take: answered with 422."""


def size_of(value: Any) -> int:
    """Approximate bytes a cached value holds (PNG bytes, arrays, and the dicts of explanation records)."""
    if isinstance(value, (bytes, bytearray)):
        return len(value) + 64
    if isinstance(value, np.ndarray):
        return value.nbytes + 128
    if isinstance(value, dict):
        return 512 + sum(size_of(v) for v in value.values())
    if isinstance(value, (tuple, list)):
        return 64 + sum(size_of(v) for v in value)
    return 64


class LRU:
    """A thread-safe least-recently-used cache of at most ``maxsize`` entries and, with ``max_bytes``, at most that
    many bytes (:func:`size_of`; each entry counts at least ``max_bytes / maxsize``, so both bounds hold) —
    cachetools' LRUCache behind a lock, counting hits and misses for the run page."""

    def __init__(self, maxsize: int, max_bytes: int | None = None):
        self.maxsize = max(1, int(maxsize))
        self.max_bytes = max_bytes
        if max_bytes:
            floor = max(1, int(max_bytes) // self.maxsize)
            self._data: LRUCache = LRUCache(int(max_bytes), getsizeof=lambda v: max(floor, size_of(v)))
        else:
            self._data = LRUCache(self.maxsize)
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> Any:
        with self._lock:
            value = self._data.get(key)  # a hit also marks the entry as most recently used
            if value is None:
                self.misses += 1
            else:
                self.hits += 1
            return value

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            try:
                self._data[key] = value
            except ValueError:  # larger than the whole budget: not cached
                pass

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    @property
    def nbytes(self) -> int:
        """Bytes held (by :func:`size_of`); the entry count without a byte budget."""
        return int(self._data.currsize)

    def __len__(self) -> int:
        return len(self._data)


class ServeState:
    """The run, its recommender and the caches, shared by all requests (loaded once at start)."""

    def __init__(self, run: Run, index: Any = None, cache_entries: int = CACHE_ENTRIES, cache_bytes: int = CACHE_BYTES,
                 explain_workers: int = EXPLAIN_WORKERS, explain_queue: int = EXPLAIN_QUEUE, explain_processes: bool = False,
                 explain_nice: int = EXPLAIN_NICE):
        self.run = run
        self.catalog = run.catalog
        # explanation requests: bounded, 503 past the queue; in worker processes (lrprec serve) or on threads here
        if explain_processes:
            self.pool = ComputePool(explain_workers, explain_queue, initializer=compute.init_worker, initargs=(str(run.path), explain_nice))
            self._work: Any = compute.call
        else:
            self.pool = ComputePool(explain_workers, explain_queue)
            self._work = compute.Explainer(run).call
        self.explanations = LRU(cache_entries, cache_bytes)
        self.bilrp_cache = LRU(max(8, cache_entries // 8), cache_bytes // 4)
        self.pngs = LRU(cache_entries, cache_bytes)
        self.json_pages = LRU(cache_entries, cache_bytes // 4)  # encoded catalog pages (the catalog does not change while serving)
        self.has_pixels = run.model.backbone.kind == "image"
        self.sources = read_item_sources(self.catalog.root)  # raw titles, image URLs, placeholder flags
        self._has_image: dict[int, bool] = {}
        self.recommender: Any = None
        self.index_note = ""
        self._open_recommender(index)

    # -- set-up --------------------------------------------------------------------------------------
    def _open_recommender(self, index: Any) -> None:
        """Load ``RUN/index`` (or build one in memory when it is missing or stale) and warm its vector indexes."""
        try:
            from lrprec.recommend.recommender import IndexMissingError, Recommender, StaleIndexError, build_index, load_index
        except ImportError as exc:  # pragma: no cover - the recommender ships with lrprec
            self.index_note = f"recommendations unavailable: {exc}"
            return
        if index is None:
            try:
                index = load_index(self.run)
                self.index_note = f"{index.backend} index loaded from {index.path}"
            except (IndexMissingError, StaleIndexError) as exc:
                log.warning("%s; building an in-memory index for this session", exc)
                index = build_index(self.run, progress=False, save=False)
                self.index_note = f"{exc}. Serving from an index ({index.backend}) built in memory at start."
        else:
            self.index_note = f"{index.backend} index given by the caller"
        for rel in index.relations:  # build the per-relation search structures now, not inside concurrent requests
            index.get(rel)
        self.recommender = Recommender(self.run, index)

    def warmup(self) -> None:
        """Start the explanation workers and run one explanation, so torch's lazy initialisation happens before the first request."""
        self.pool.start()
        if not self.pool.processes:
            self._work("warmup")

    @property
    def default_rule(self) -> str:
        from lrprec.explain.composites import DEFAULT_COMPOSITE

        return DEFAULT_COMPOSITE

    # -- checks ---------------------------------------------------------------------------------------
    def item_row(self, item_id: str) -> int:
        try:
            return self.catalog.index_of(item_id)
        except CatalogError:
            raise NotFound(f"unknown item id {item_id!r}") from None

    def user_row(self, user: str | None) -> int:
        if user in (None, ""):
            return -1
        row = self.catalog.user_index(user, strict=False)
        if row < 0:
            raise NotFound(f"unknown user id {user!r}")
        return row

    def relation(self, name: str) -> int:
        try:
            return self.run.check_relation(name)
        except CatalogError as exc:
            raise BadParam(str(exc)) from None

    def rule(self, name: str | None) -> str:
        from lrprec.explain.composites import get_composite

        name = name or self.default_rule
        try:
            get_composite(name)
        except LrprecError:
            from lrprec.explain.composites import COMPOSITES

            raise BadParam(f"unknown rule {name!r}; known rules: {', '.join(COMPOSITES)}") from None
        return name

    def rules(self) -> dict[str, str]:
        from lrprec.explain.composites import COMPOSITES

        return {k: c.description for k, c in COMPOSITES.items()}

    def need_pixels(self) -> None:
        if not self.has_pixels:
            raise BadParam("this run reads precomputed features: there are no pixels to draw heatmaps on")

    # -- images -----------------------------------------------------------------------------------------
    def item_image(self, row: int) -> np.ndarray | None:
        """uint8 (H, W, 3) image of an item: the catalog's decode cache, else its image file (inside the catalog)."""
        return compute.item_image(self.catalog, row)

    def has_image(self, row: int) -> bool:
        """Whether the item has a real image to show (not none, not the import's gray placeholder)."""
        known = self._has_image.get(row)
        if known is None:
            item_id = str(self.catalog.item_ids[row])
            if self.sources.get(item_id, {}).get("image_missing"):
                known = False
            elif self.catalog.images is not None:
                known = True
            else:
                try:
                    safe_file(self.catalog.root, str(self.catalog.image_paths[row] or ""), IMAGE_SUFFIXES)  # an image file inside the catalog
                    known = True
                except NotFound:
                    known = False
            self._has_image[row] = known
        return known

    def card(self, item_id: str) -> dict:
        """What a page shows of an item: id, title, category, its image URL (None: draw a placeholder card)
        and the image link of the source metadata, if any."""
        row = self.item_row(item_id)
        c = self.catalog
        link = str(self.sources.get(item_id, {}).get("image_url") or "")
        return {"item_id": item_id, "title": str(c.titles[row] or ""), "category": str(c.categories[row]),
                "image": image_url(item_id) if self.has_image(row) else None,
                "source_image": link if link.lower().startswith(("https://", "http://")) else None}  # never javascript: etc.

    def thumbnail(self, row: int, size: int) -> bytes:
        key = ("thumb", row, size)
        png = self.pngs.get(key)
        if png is None:
            img = self.item_image(row) if self.has_image(row) else None
            if img is None:
                raise NotFound(f"item {self.catalog.item_ids[row]!r} has no image")
            png = heatmap.item_png(img, size)
            self.pngs.put(key, png)
        return png

    # -- model calls -------------------------------------------------------------------------------------
    def pair_probabilities(self, a: int, b: int, user: int) -> dict[str, float]:
        from lrprec.app.explanations import pair_probabilities

        probs = pair_probabilities(self.run, np.array([a]), np.array([b]), np.array([user]))
        return {r: float(p[0]) for r, p in probs.items()}

    def _explanation_keys(self, pairs: list[tuple[int, int]], rel: int, user: int, rule: str, target: str) -> tuple[list, dict, list]:
        self.need_pixels()
        keys = [(a, b, rel, user, rule, target) for a, b in pairs]
        found = {k: self.explanations.get(k) for k in dict.fromkeys(keys)}
        return keys, found, [k for k, v in found.items() if v is None]

    def _keep_explanations(self, todo: list[tuple], records: list[dict], found: dict) -> None:
        for k, v in zip(todo, records):
            self.explanations.put(k, v)
            if k[2] < 0:  # asked for the most probable relation: also cached under the relation it resolved to
                self.explanations.put((*k[:2], RELATIONS.index(v["relation"]), *k[3:]), v)
            found[k] = v

    def explain(self, pairs: list[tuple[int, int]], rel: int, user: int, rule: str, target: str) -> list[dict]:
        """Explanation records (with both heatmap PNGs under ``_png``) for pairs of rows (``rel`` -1: each pair's most
        probable relation); the cache's misses go through the explanation pool (:class:`Busy` when it is full)."""
        keys, found, missing = self._explanation_keys(pairs, rel, user, rule, target)
        for todo in self._batches(missing):
            self._keep_explanations(todo, self._unwrap(lambda: self.pool.submit(self._work, "explanations", todo).result()), found)
        return [found[k] for k in keys]

    async def explain_async(self, pairs: list[tuple[int, int]], rel: int, user: int, rule: str, target: str) -> list[dict]:
        """:meth:`explain` for async routes: a cache hit answers at once, a miss awaits the pool without holding a thread."""
        keys, found, missing = self._explanation_keys(pairs, rel, user, rule, target)
        for todo in self._batches(missing):
            try:
                records = await self.pool.run(self._work, "explanations", todo)
            except compute.ComputeError as exc:
                raise BadParam(str(exc)) from None
            self._keep_explanations(todo, records, found)
        return [found[k] for k in keys]

    @staticmethod
    def _batches(keys: list[tuple]) -> list[list[tuple]]:
        """Keys in batches of one LRP pass each (same relation, user, rule and target; at most WARM_BATCH pairs)."""
        groups: dict[tuple, list] = {}
        for k in keys:
            groups.setdefault(k[2:] if k[2] >= 0 else k, []).append(k)  # an unresolved relation: one pair per pass
        return [g[s:s + WARM_BATCH] for g in groups.values() for s in range(0, len(g), WARM_BATCH)]

    @staticmethod
    def _unwrap(get: Any) -> Any:
        try:
            return get()
        except compute.ComputeError as exc:
            raise BadParam(str(exc)) from None

    def check_grid(self, grid: int) -> None:
        size = int(self.run.inputs(np.array([0])).shape[-1])
        if grid > size:
            raise BadParam(f"grid {grid} is larger than the {size}x{size} model input")

    async def bilrp_async(self, a: int, b: int, rel: int, user: int, rule: str, grid: int) -> tuple[np.ndarray, str]:
        """BiLRP patch-to-patch relevance (grid², grid²) of one pair (``rel`` -1: its most probable relation) and the
        relation explained; cached, a miss goes through the explanation pool."""
        self.need_pixels()
        key = (a, b, rel, user, rule, grid)
        hit = self.bilrp_cache.get(key)
        if hit is None:
            self.check_grid(grid)
            try:
                hit = await self.pool.run(self._work, "bilrp", a, b, rel, user, rule, grid)
            except compute.ComputeError as exc:
                raise BadParam(str(exc)) from None
            self.bilrp_cache.put(key, hit)
            if rel < 0:
                self.bilrp_cache.put((a, b, RELATIONS.index(hit[1]), user, rule, grid), hit)
        return hit

    def recommend(self, item: str, user: str | None, relation: str | None, k: int, per_category: bool) -> dict:
        if self.recommender is None:
            raise BadParam(self.index_note or "recommendations are unavailable")
        self.item_row(item)
        self.user_row(user)
        relations = None if relation in (None, "", "all") else [relation]
        if relations:
            self.relation(relation)  # type: ignore[arg-type]
        try:
            return self.recommender.recommend(item, user=user or None, relations=relations, k=k, per_category=per_category)
        except LrprecError as exc:
            raise BadParam(str(exc)) from None

    # -- run artifacts -------------------------------------------------------------------------------------
    def _json_file(self, path: Path) -> Any:
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            log.warning("cannot read %s: %s", path, exc)
            return None

    def figures(self, folder: str) -> list[str]:
        """URLs of the PNG figures in ``RUN/folder`` (sorted)."""
        root = self.run.path / folder
        if not root.is_dir():
            return []
        order = ("probability", "logit", "still_related", "predicted_relation", "training")

        def rank(p: Path) -> tuple[int, str]:
            return next((k for k, word in enumerate(order) if word in p.stem), len(order)), p.name

        return [f"/files/run/{quote(folder)}/{quote(p.name)}" for p in sorted(root.glob("*.png"), key=rank) if p.is_file()]

    def run_summary(self) -> dict:
        """Config, link-prediction metrics, faithfulness results and figures the run holds (read per request)."""
        run = self.run
        faith = self._json_file(run.path / "faithfulness" / "faithfulness.json")
        if isinstance(faith, dict):
            faith = {k: v for k, v in faith.items() if k not in ("files",)}
        index_meta = getattr(getattr(self.recommender, "index", None), "meta", None)
        return plain({
            "run": run.path.name,
            "version": run.version,
            "config": {k: v for k, v in run.config.items() if k != "catalog"},
            "catalog": {"name": self.catalog.name, "items": len(self.catalog), "users": len(self.catalog.user_ids),
                        "categories": self.catalog.category_names, "image_size": self.catalog.image_size},
            "relations": run.relations,
            "rules": self.rules(),
            "default_rule": self.default_rule,
            "targets": list(TARGETS),
            "heatmaps": self.has_pixels,
            "index": {"note": self.index_note, "meta": index_meta},
            "metrics": self._json_file(run.path / "metrics.json"),
            "history": self._json_file(run.path / "history.json"),
            "faithfulness": faith,
            "figures": {"training": self.figures("figures"), "faithfulness": self.figures("faithfulness")},
            "report": "/files/run/report.html" if (run.path / "report.html").is_file() else None,
        })
