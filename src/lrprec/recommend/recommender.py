"""Recommendations from a trained run (SPEC §2, eq 5): embed the catalog, index it, query it.

``build_index`` embeds every catalog item once (the partner-side vectors q_j = f(x_j) F_r
of an asymmetric head, p_j = f(x_j) E_r of a metric one, for each trained relation),
builds one vector index per relation that serves every user, and stores it in
``RUN/index/``::

    index.json           format, the run's weights id, the catalog fingerprint, backend, sizes
    vectors-<REL>.npy    float32 (N, K) indexed (partner-side) item vectors of relation REL
    queries-<REL>.npy    float32 (N, K) query-side vectors x E_r (asymmetric heads only)
    ivf-<REL>.npz        IVF lists (centroids, item → list), for the ivf backend

For a substitute relation the per-category view (eq 5) lists the query's own category; for
a complement, every other category (what a shopper expects of "goes with").

``load_index`` refuses an index built for other weights or another catalog, with a message
to rerun ``lrprec index``. ``recommend`` answers "the top k items j ≠ i by P_u(r_ij)" per
relation, or the top k within each category (eq 5), with exact distances and probabilities.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from lrprec.data.catalog import COMPLEMENTS, RELATIONS, SUBSTITUTES, Catalog
from lrprec.recommend.index import (
    AUTO_IVF_MIN_ITEMS,
    VectorIndex,
    choose_backend,
    load_index_state,
    save_state,
)
from lrprec.errors import LrprecError, UsageError
from lrprec.recommend.category_prior import category_prior
from lrprec.recommend.duplicates import DEFAULT_POLICY, DEFAULT_THRESHOLD, arrange, check_policy, distance_scale
from lrprec.recommend.index import build_index as build_vector_index
from lrprec.run import Run, iter_item_features

INDEX_DIR = "index"
INDEX_FORMAT = "lrprec-index"
INDEX_FORMAT_VERSION = 1


class RecommendError(LrprecError):
    """Bad input to a recommendation (k out of range, ...)."""


class IndexMissingError(RecommendError):
    """The run has no index yet."""


class StaleIndexError(RecommendError):
    """The stored index does not belong to this run's weights or catalog."""


# ---- identity of what an index was built from ---------------------------------------------------
def weights_identity(run: Run) -> str:
    """The run's ``weights_id``; for runs without one, a hash of the weights file (so retraining is still detected)."""
    if run.version:
        return run.version
    h = hashlib.sha256()
    with open(run.path / "model.safetensors", "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()[:32]


def index_dir(run: Run) -> Path:
    """Where the run's index lives: ``RUN/index/``."""
    return Path(run.path) / INDEX_DIR


def _rebuild_hint(run: Run) -> str:
    return f"rebuild it with 'lrprec index {run.path}'"


# ---- embedding ------------------------------------------------------------------------------------
def default_batch_size(run: Run) -> int:
    """Items per forward pass: large for precomputed features, moderate for the small CNN, small for VGG-16."""
    kind = run.config.get("backbone", "small")
    return {"features": 8192, "vgg16": 32}.get(kind, 256)


def embed_catalog(run: Run, relations: Iterable[str] | None = None, batch_size: int | None = None,
                  progress: bool = True, side: str = "query", catalog: Catalog | None = None,
                  rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Projected vectors of every catalog item for each relation: {relation: float32 (N, K)}.

    ``side="query"``: p_j = f(x_j) E_r; ``side="partner"``: f(x_j) F_r for asymmetric heads
    (equal to the query side for metric ones). Every item goes through the backbone exactly
    once (batched, no autograd); all relations' projections come from the same features.
    """
    if side not in ("query", "partner", "both"):
        raise UsageError(f"side must be query, partner or both, got {side!r}")
    rels = list(relations) if relations is not None else run.relations
    r_idx = [run.check_relation(r) for r in rels]
    model = run.model
    cat = catalog if catalog is not None else run.catalog
    sel = np.arange(len(cat)) if rows is None else np.asarray(rows, dtype=np.int64)
    pos = np.empty(len(cat), np.int64)
    pos[sel] = np.arange(sel.size)  # output row of each embedded catalog row
    bs = int(batch_size or default_batch_size(run))
    sides = ("query", "partner") if side == "both" else (side,)
    out = {sd: {r: np.empty((sel.size, model.dim), np.float32) for r in rels} for sd in sides}
    for batch, f in iter_item_features(model, cat, run.input_size, bs, progress, rows=sel):
        for sd in sides:
            a = (model.project_all(f) if sd == "query" else model.project_partner_all(f)).float().cpu().numpy()
            for r, ri in zip(rels, r_idx):
                out[sd][r][pos[batch]] = a[:, ri]
    return out if side == "both" else out[side]  # type: ignore[return-value]


# ---- the stored index -----------------------------------------------------------------------------
@dataclass
class RecIndex:
    """Per-relation item vectors and their vector indexes (built lazily per relation on first use)."""

    meta: dict
    vectors: dict[str, np.ndarray]
    categories: np.ndarray
    path: Path | None = None
    queries: dict[str, np.ndarray] = field(default_factory=dict)  # query-side vectors where they differ (asymmetric heads)
    _states: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    _indexes: dict[str, VectorIndex] = field(default_factory=dict)

    @property
    def backend(self) -> str:
        """``exact`` or ``ivf``: the backend the index was built with."""
        return str(self.meta["backend"])

    @property
    def relations(self) -> list[str]:
        """The relations indexed (those the run was trained on)."""
        return list(self.meta["relations"])

    def get(self, relation: str) -> VectorIndex:
        """The vector index of one relation (a :class:`~lrprec.recommend.milvus.MilvusIndex` for the milvus backend)."""
        if self.backend == "milvus" and relation in self._indexes:
            return self._indexes[relation]
        if relation not in self.vectors:
            raise StaleIndexError(f"the index has no vectors for relation {relation!r} (it holds {', '.join(self.relations)}); "
                                  "rebuild it with 'lrprec index RUN'")
        if relation not in self._indexes:
            stored = self.meta.get("nprobe")  # an int: probe count asked for at build; a dict: measured per relation (in the state)
            nprobe = int(stored) if isinstance(stored, int) else None
            self._indexes[relation] = load_index_state(self.backend, self.vectors[relation], self.categories,
                                                       self._states.get(relation, {}), nprobe=nprobe)
        return self._indexes[relation]

    def query_vector(self, relation: str, row: int) -> np.ndarray:
        """The query-side vector of item ``row``: x E_r (the indexed vector itself for a metric head)."""
        if self.backend == "milvus":
            return self.get(relation).query_vector(row)  # type: ignore[attr-defined]
        src = self.queries.get(relation)
        return np.asarray((src if src is not None else self.get(relation).p)[row], dtype=np.float32)

    def locate(self, catalog: Catalog, item_id: str) -> tuple[int, int]:
        """(row, category code) of an item: a catalog item, or one added to a Milvus index later."""
        if self.backend == "milvus" and item_id not in catalog._index:
            ix = self.get(self.relations[0])
            row = ix.find([item_id]).get(item_id)  # type: ignore[attr-defined]
            if row is not None:
                return row, int(ix.rows([row])[row]["category"])  # type: ignore[attr-defined]
        i = catalog.index_of(item_id)
        return i, int(catalog.category_codes[i])

    def describe(self, catalog: Catalog, relation: str, ids: list[int]) -> dict[int, tuple[str, str]]:
        """{row: (item id, category name)} for result rows, including items added after the build."""
        n = len(catalog)
        out = {j: (str(catalog.item_ids[j]), str(catalog.categories[j])) for j in ids if j < n}
        extra = [j for j in ids if j >= n]
        if extra:
            got = self.get(relation).rows(extra)  # type: ignore[attr-defined]
            names = catalog.category_names
            out.update({j: (str(r["item"]), names[int(r["category"])]) for j, r in got.items()})
        return out


def build_index(run: Run, backend: str = "auto", *, batch_size: int | None = None, progress: bool = True,
                seed: int = 0, nlist: int | None = None, nprobe: int | None = None, save: bool = True,
                log: Callable[[str], None] | None = None, uri: str | None = None,
                embedded: dict[str, dict[str, np.ndarray]] | None = None, source: str | None = None) -> RecIndex:
    """Embed the catalog (or take ``embedded``, e.g. ``lrprec embed``'s shards, read by
    :func:`lrprec.recommend.shards.read_shards`; ``source`` names them in the meta) and build one index per trained relation.

    ``backend``: ``exact``, ``ivf``, ``hnsw``, ``auto`` (exact below
    :data:`~lrprec.recommend.index.AUTO_IVF_MIN_ITEMS` items, else ivf) — stored in ``RUN/index/``
    unless ``save`` is False — or ``milvus``: one collection per relation at ``uri``, with only
    ``index.json`` in ``RUN/index/``.
    """
    n = len(run.catalog)
    if n < 2:
        raise RecommendError(f"the catalog has {n} item(s); recommendations need at least 2")
    if backend == "milvus":
        from lrprec.recommend.milvus import check_uri

        uri = check_uri(uri)  # a usage error before minutes of embedding
    kind = backend if backend == "milvus" else choose_backend(backend, n)
    t0 = time.perf_counter()
    if embedded is not None:
        both = embedded
    else:
        both = embed_catalog(run, batch_size=batch_size, progress=progress, side="both")
    vectors = both["partner"]
    asym = [r for r in vectors if run.model.asymmetric[RELATIONS.index(r)]]
    queries = {r: both["query"][r] for r in asym}
    embed_s = time.perf_counter() - t0
    codes = np.asarray(run.catalog.category_codes, dtype=np.int64)
    indexes: dict[str, VectorIndex] = {}
    t1 = time.perf_counter()
    extra: dict = {}
    if kind == "milvus":
        indexes, extra = _build_milvus(run, uri, vectors, both["query"], codes, log)  # type: ignore[arg-type]
    else:
        for rel, p in vectors.items():
            if log:
                log(f"building the {kind} index for {rel} ({n} items, K = {p.shape[1]})")
            indexes[rel] = build_vector_index(p, codes, kind, seed=seed, nlist=nlist, nprobe=nprobe,
                                              tune_weights=_users_weights(run, rel) if kind == "ivf" else None)
    meta = {
        "format": INDEX_FORMAT,
        "format_version": INDEX_FORMAT_VERSION,
        "weights_id": weights_identity(run),
        "catalog_fingerprint": run.catalog.fingerprint,
        "items": n,
        "dim": int(run.model.dim),
        "relations": list(vectors),
        "asymmetric": asym,
        "backend": kind,
        "requested_backend": backend,
        "auto_ivf_min_items": AUTO_IVF_MIN_ITEMS,
        "nprobe": int(nprobe) if nprobe is not None else ({r: int(ix.nprobe) for r, ix in indexes.items()} if kind == "ivf" else None),
        "nlist": {r: int(getattr(ix, "nlist", 0)) for r, ix in indexes.items()} if kind == "ivf" else None,
        "seed": int(seed),
        "embed_seconds": round(embed_s, 3),
        "build_seconds": round(time.perf_counter() - t1, 3),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "shards": source,
        **extra,
    }
    if kind == "milvus":
        index = RecIndex(meta=meta, vectors={}, categories=codes, _indexes=indexes)
        index.path = _write_index(run, index)
        return index
    index = RecIndex(meta=meta, vectors=vectors, categories=codes, queries=queries, _indexes=indexes)
    if save:
        index.path = _write_index(run, index)
    return index


def _users_weights(run: Run, relation: str) -> np.ndarray:
    """θ² of the global user and every user of the run for one relation, (U + 1, K) float32: the IVF's validation users."""
    r = RELATIONS.index(relation)
    users = torch.arange(-1, int(run.model.n_users))
    with torch.no_grad():
        theta = run.model.theta(torch.full_like(users, r), users).double().cpu().numpy()
    return (theta * theta).astype(np.float32)


def _build_milvus(run: Run, uri: str, vectors: dict[str, np.ndarray], query_side: dict[str, np.ndarray], codes: np.ndarray,
                  log: Callable[[str], None] | None) -> tuple[dict, dict]:
    """One Milvus collection per relation (recreated); returns the opened indexes and the meta entries."""
    from lrprec.recommend.milvus import MilvusIndex, collection_name, connect

    client = connect(uri)
    wid = weights_identity(run)
    items = [str(i) for i in run.catalog.item_ids]
    out, names = {}, {}
    for rel, p in vectors.items():
        names[rel] = collection_name(wid, rel)
        if log:
            log(f"loading {len(items)} items of {rel} into Milvus collection {names[rel]} at {uri}")
        out[rel] = MilvusIndex.create(client, names[rel], wid, rel, p, query_side[rel], codes, items, len(run.catalog.category_names))
    return out, {"uri": uri, "collections": names}


def open_milvus(run: Run, meta: dict) -> dict:
    """The Milvus collections an ``index.json`` names, opened (refused when built for other weights)."""
    from lrprec.recommend.milvus import MilvusIndex, connect

    client = connect(meta.get("uri"))
    wid = weights_identity(run)
    return {rel: MilvusIndex(client, name, wid, int(meta["dim"]), len(run.catalog.category_names))
            for rel, name in meta.get("collections", {}).items()}


def _write_index(run: Run, index: RecIndex) -> Path:
    """Write ``RUN/index/`` atomically: a temporary sibling directory, then a rename over the old one."""
    final = index_dir(run)
    tmp = Path(tempfile.mkdtemp(prefix=".index.partial-", dir=run.path))
    try:
        for rel, p in index.queries.items():
            np.save(tmp / f"queries-{rel}.npy", p)
        for rel, p in index.vectors.items():
            np.save(tmp / f"vectors-{rel}.npy", p)
            ix = index._indexes.get(rel)
            if ix is not None:
                save_state(tmp / f"{ix.backend}-{rel}.npz", ix)
        (tmp / "index.json").write_text(json.dumps(index.meta, indent=2))
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=".index.old-", dir=run.path))
            os.replace(final, old / "index")
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def load_index(run: Run, path: str | os.PathLike | None = None) -> RecIndex:
    """Open ``RUN/index/`` (vectors as memmaps) after checking it belongs to this run's weights and catalog."""
    root = Path(path) if path is not None else index_dir(run)
    meta_path = root / "index.json"
    if not meta_path.is_file():
        raise IndexMissingError(f"no recommendation index in {root}; build it with 'lrprec index {run.path}'")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StaleIndexError(f"{meta_path} is corrupt ({exc}); {_rebuild_hint(run)}") from None
    if meta.get("format") != INDEX_FORMAT or meta.get("format_version") != INDEX_FORMAT_VERSION:
        raise StaleIndexError(f"{root} holds an index of another format or version; {_rebuild_hint(run)}")
    want = weights_identity(run)
    if meta.get("weights_id") != want:
        raise StaleIndexError(f"the index in {root} was built for other model weights (weights id {meta.get('weights_id')!r}, "
                              f"this run has {want!r}): it belongs to another run or an older model; {_rebuild_hint(run)}")
    if meta.get("catalog_fingerprint") != run.catalog.fingerprint or meta.get("items") != len(run.catalog):
        raise StaleIndexError(f"the index in {root} was built for another catalog (fingerprint or item count differ); {_rebuild_hint(run)}")
    if meta.get("dim") != run.model.dim:
        raise StaleIndexError(f"the index in {root} has K = {meta.get('dim')}, the model K = {run.model.dim}; {_rebuild_hint(run)}")
    codes = np.asarray(run.catalog.category_codes, dtype=np.int64)
    if meta.get("backend") == "milvus":
        return RecIndex(meta=meta, vectors={}, categories=codes, path=root, _indexes=open_milvus(run, meta))
    vectors: dict[str, np.ndarray] = {}
    queries: dict[str, np.ndarray] = {}
    states: dict[str, dict[str, np.ndarray]] = {}

    def read(vpath: Path) -> np.ndarray:
        try:
            p = np.load(vpath, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise StaleIndexError(f"cannot read {vpath} ({exc}); {_rebuild_hint(run)}") from None
        if p.shape != (len(run.catalog), run.model.dim) or p.dtype != np.float32:
            raise StaleIndexError(f"{vpath} has shape {p.shape} {p.dtype}, expected ({len(run.catalog)}, {run.model.dim}) float32; {_rebuild_hint(run)}")
        return p

    for rel in meta["relations"]:
        vectors[rel] = read(root / f"vectors-{rel}.npy")
        if run.model.asymmetric[RELATIONS.index(rel)]:
            if rel not in meta.get("asymmetric", []):
                raise StaleIndexError(f"the index in {root} has no query-side vectors for the asymmetric head of {rel}; {_rebuild_hint(run)}")
            queries[rel] = read(root / f"queries-{rel}.npy")
        if meta["backend"] in ("ivf", "hnsw"):
            spath = root / f"{meta['backend']}-{rel}.npz"
            if not spath.is_file():
                raise StaleIndexError(f"{spath} is missing; {_rebuild_hint(run)}")
            with np.load(spath) as z:
                states[rel] = {k: z[k] for k in z.files}
    codes = np.asarray(run.catalog.category_codes, dtype=np.int64)
    return RecIndex(meta=meta, vectors=vectors, categories=codes, path=root, queries=queries, _states=states)


# ---- recommending -----------------------------------------------------------------------------------
def category_side(relation: str, same_category: bool) -> bool:
    """Whether a category belongs in a relation's per-category view: the query's own for a
    substitute, the others for a complement (relations of neither kind: every category)."""
    if relation in SUBSTITUTES:
        return same_category
    if relation in COMPLEMENTS:
        return not same_category
    return True


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


def resolve_relations(run: Run, relations: str | Iterable[str] | None) -> list[str]:
    """``None`` or ``"all"`` → every trained relation; a name or names → checked against the run."""
    if relations is None or relations == "all":
        return run.relations
    names = [relations] if isinstance(relations, str) else list(relations)
    if not names:
        raise RecommendError("no relation given")
    for r in names:
        run.check_relation(r)
    return names


class Recommender:
    """A run and its index, ready to answer many queries (the CLI makes one; a web app keeps one)."""

    def __init__(self, run: Run, index: RecIndex | None = None):
        self.run = run
        self.index = index if index is not None else load_index(run)
        self._dup: dict[str, tuple[np.ndarray, np.ndarray, float]] = {}
        self._pairs: dict[str, np.ndarray] = {}
        self._priors: dict[str, np.ndarray | None] = {}

    def user_weights(self, relation: str, user_row: int) -> tuple[np.ndarray, float]:
        """w = θ_{u,r}² (float32, (K,)) and the shift c_r for a user row (−1: global θ)."""
        r = RELATIONS.index(relation)
        with torch.no_grad():
            theta = self.run.model.theta(torch.tensor([r]), torch.tensor([user_row]))[0].double().cpu().numpy()
            c = float(self.run.model.c[r])
        return (theta * theta).astype(np.float32), c

    def resolve_user(self, user: str | None) -> tuple[int, list[str]]:
        """The user's row (−1 for the global θ) and notices for a fallback."""
        if user in (None, ""):
            return -1, []
        row = self.run.catalog.user_index(user, strict=False)
        if row < 0:
            return -1, [f"user {user!r} was not seen in training; using the global θ"]
        if self.run.model.n_users == 0:
            return -1, [f"this run was trained without personalization; user {user!r} gets the global θ"]
        return row, []

    def _duplicate_context(self, rel: str) -> tuple[np.ndarray, np.ndarray, float]:
        """(indexed vectors, global θ², near-duplicate distance limit) of a relation, computed once."""
        if rel not in self._dup:
            vectors = self.index.vectors[rel]
            w, _ = self.user_weights(rel, -1)
            self._dup[rel] = (vectors, w, DEFAULT_THRESHOLD * distance_scale(vectors, w))
        return self._dup[rel]

    def _known(self, rel: str) -> Callable[[int, np.ndarray], np.ndarray]:
        """``(i, cand) -> mask`` of the pairs the catalog lists as positives of ``rel`` (either direction)."""
        if rel not in self._pairs:
            pos = self.run.catalog.positives()
            sel = pos.relation == RELATIONS.index(rel)
            n = len(self.run.catalog)
            a, b = pos.a[sel].astype(np.int64), pos.b[sel].astype(np.int64)
            self._pairs[rel] = np.unique(np.concatenate([a * n + b, b * n + a]))
        keys, n = self._pairs[rel], len(self.run.catalog)
        return lambda i, cand: sorted_member(keys, i * n + np.asarray(cand, np.int64))

    def _arranged(self, rel: str, i: int, ids: np.ndarray, dist: np.ndarray, k: int, duplicates: str) -> tuple[np.ndarray, np.ndarray]:
        """The top k of the fetched candidates under the near-duplicate policy."""
        keep = ids >= 0
        ids, dist = ids[keep], dist[keep]
        if duplicates == "keep":
            return ids[:k], dist[:k]
        vectors, w, limit = self._duplicate_context(rel)
        if rel not in self._priors:
            self._priors[rel] = category_prior(self.run.catalog, rel)
        prior, codes = self._priors[rel], self.index.categories
        unlikely = prior[codes[i], codes[ids]] if prior is not None else None
        pos = arrange(i, ids, k, duplicates, rel in COMPLEMENTS, vectors, codes, w, limit, self._known(rel), unlikely)
        return ids[pos], dist[pos]

    def recommend(self, item_id: str, user: str | None = None, relations: str | Iterable[str] | None = None,
                  k: int = 10, per_category: bool = False, duplicates: str = DEFAULT_POLICY) -> dict:
        """See :func:`recommend`."""
        check_policy(duplicates)
        cat = self.run.catalog
        i, code_i = self.index.locate(cat, item_id)
        rels = resolve_relations(self.run, relations)
        n = len(cat)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise RecommendError(f"k must be an integer, got {k!r}")
        if k <= 0:
            raise RecommendError(f"k must be at least 1, got {k}")
        if k > n - 1:
            raise RecommendError(f"k = {k} exceeds the {n - 1} other items in the catalog")
        user_row, notices = self.resolve_user(user)
        if duplicates != "keep" and not self.index.vectors:  # a Milvus index keeps its vectors in the database
            notices = notices + [f"duplicates={duplicates!r} needs the vectors in process; the {self.index.backend} backend returns the plain top-k"]
            duplicates = "keep"
        results: dict[str, object] = {}
        # candidates beyond k leave room for demoted or collapsed near-duplicates
        fetch = int(k) if duplicates == "keep" else min(n - 1, 2 * int(k) + 20 if duplicates == "demote" else 4 * int(k) + 50)
        for rel in rels:
            vindex = self.index.get(rel)
            w, c = self.user_weights(rel, user_row)
            p_i = self.index.query_vector(rel, i)
            if per_category:
                found = vindex.search_per_category(p_i, w, fetch, exclude=i)
                results[rel] = {name: self._entries(rel, *self._arranged(rel, i, found.ids[code], found.distances[code], int(k), duplicates), c)
                                for code, name in enumerate(cat.category_names)
                                if code < found.ids.shape[0] and category_side(rel, code == code_i)}
            else:
                found = vindex.search(p_i, w, fetch, exclude=np.array([i]))
                results[rel] = self._entries(rel, *self._arranged(rel, i, found.ids[0], found.distances[0], int(k), duplicates), c)
        return {"item": item_id, "user": user, "results": results, "notices": notices, "backend": self.index.backend}

    def _entries(self, rel: str, ids: np.ndarray, dist: np.ndarray, c: float) -> list[dict]:
        keep = ids >= 0
        ids, dist = ids[keep], dist[keep]
        prob = _sigmoid(c - dist)
        names = self.index.describe(self.run.catalog, rel, ids.tolist())
        return [{"item": names[j][0], "category": names[j][1], "probability": float(pr),
                 "distance": float(d), "rank": r + 1} for r, (j, d, pr) in enumerate(zip(ids.tolist(), dist.tolist(), prob.tolist()))
                if j in names]


def sorted_member(keys: np.ndarray, query: np.ndarray) -> np.ndarray:
    """``np.isin(query, keys)`` for sorted unique ``keys``: a binary search per query, not a sort of both (a few candidates
    against every positive pair of the catalog, per request)."""
    if keys.size == 0:
        return np.zeros(np.shape(query), bool)
    pos = np.minimum(np.searchsorted(keys, query), keys.size - 1)
    return keys[pos] == query


def recommend(run: Run, item_id: str, user: str | None = None, relations: str | Iterable[str] | None = None,
              k: int = 10, per_category: bool = False, index: RecIndex | None = None, duplicates: str = DEFAULT_POLICY) -> dict:
    """Top-k items j ≠ ``item_id`` by P_u(r_ij) = σ(c_r − d_u(i, j)) for each relation (default: all trained).

    Returns ``{"item", "user", "results": {REL: [{"item", "category", "probability",
    "distance", "rank"}, ...]}, "notices": [...], "backend"}``; with ``per_category`` the
    results are ``{REL: {CATEGORY: [...]}}`` (eq 5: the best k of each category on the relation's
    side — the query's own category for a substitute, every other one for a complement). An unknown
    user gets the global θ and a notice. Raises ``ValueError`` subclasses for an unknown item
    or relation, k out of range, and a missing or stale index. ``duplicates`` is the near-duplicate
    policy (:mod:`lrprec.recommend.duplicates`): ``demote`` (default: a complement list is never led
    by the query's own near-duplicates), ``keep`` (the model's order) or ``collapse`` (one listing per look).
    """
    return Recommender(run, index).recommend(item_id, user=user, relations=relations, k=k, per_category=per_category, duplicates=duplicates)


__all__ = [
    "INDEX_DIR", "RecIndex", "Recommender", "RecommendError", "IndexMissingError", "StaleIndexError",
    "build_index", "load_index", "embed_catalog", "recommend", "resolve_relations", "weights_identity",
]
