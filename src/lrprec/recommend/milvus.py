"""The Milvus backend of the item index: one collection per run × relation, served by Milvus Lite or a server.

``URI`` is a file path ending in ``.db`` (embedded Milvus Lite, started in this process by
pymilvus) or ``http(s)://host:port`` (a Milvus standalone or cluster): the same code for both.
Each collection holds, per item, an ``id`` (the catalog row; added items get rows after the
catalog's), the ``item`` id string, the ``category`` code (a scalar field: eq 5's per-category
lists are one grouped query), the augmented vector ``v`` = [p, p ∘ p] under the inner-product
metric (the query q = [2 w ∘ p_i, −w] carries the user's weights, so one collection serves
every user), and ``q``, the item's query-side vector (x E_r; equal to p for a metric head).

The collection name is derived from the run's weights id and the relation, and the weights id
is stored as a collection property: opening a collection built for other weights is refused.
Candidates (k + a margin) are re-ranked in float64 by the direct form Σ w (p_i − p_j)², like
every backend, so distances are exact.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

from lrprec.errors import LrprecError, UsageError
from lrprec.recommend.search import SearchResult, augment, query_vectors

#: Milvus index on ``v``: FLAT (exact) in Milvus Lite — which supports little else — and on a server by default.
DEFAULT_INDEX_TYPE = "FLAT"
_PROP_WEIGHTS = "lrprec.weights_id"
_PROP_RELATION = "lrprec.relation"
_PROP_NEXT_ID = "lrprec.next_id"
_INSERT_BATCH = 2_000  # short RPCs: 20k-row inserts of 2K floats timed out (gRPC "too many pings") on a loaded machine
_CONNECT_TIMEOUT_S = 5.0
_CLIENTS: dict[str, object] = {}


class MilvusBackendError(LrprecError):
    """A Milvus URI that cannot be used, or a collection that does not belong to this run."""


def check_uri(uri: str | None) -> str:
    """The URI as pymilvus takes it: an existing folder's ``*.db`` file, or an http(s)/tcp address."""
    if not uri:
        raise UsageError("--backend milvus needs --uri: a file path ending in .db (Milvus Lite) or http://host:19530")
    if re.match(r"^(https?|tcp|grpc)://", uri):
        return uri
    path = Path(uri)
    if path.suffix != ".db":
        raise UsageError(f"--uri {uri!r}: a Milvus Lite file must end in .db (or give http://host:19530 for a server)")
    if not path.parent.is_dir():
        raise MilvusBackendError(f"--uri {uri!r}: the folder {path.parent} does not exist")
    return str(path.resolve())


def connect(uri: str | None):
    """A ``MilvusClient`` for the URI (Milvus Lite for a .db path); a clear error when it cannot be reached."""
    uri = check_uri(uri)
    try:
        from pymilvus import MilvusClient
    except ImportError:  # pragma: no cover - the extra is not installed
        raise UsageError("the Milvus backend needs pymilvus and milvus-lite: pip install 'lrprec[milvus]'") from None
    if uri in _CLIENTS:
        return _CLIENTS[uri]
    try:
        client = MilvusClient(uri=uri, timeout=_CONNECT_TIMEOUT_S)
        _CLIENTS[uri] = client  # one connection (one embedded Milvus Lite) per URI and process
        return client
    except Exception as exc:  # pymilvus raises MilvusException and plain connection errors
        raise MilvusBackendError(f"cannot reach Milvus at {uri}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


def collection_name(weights_id: str, relation: str) -> str:
    """``lrprec_<hash of the weights id>_<relation>``: another run's weights give another name."""
    h = hashlib.sha256(weights_id.encode()).hexdigest()[:16]
    return f"lrprec_{h}_{re.sub(r'[^A-Za-z0-9_]', '_', relation)}"


def _schema(dim: int):
    from pymilvus import DataType, MilvusClient

    schema = MilvusClient.create_schema(auto_id=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("item", DataType.VARCHAR, max_length=1024)
    schema.add_field("category", DataType.INT64)
    schema.add_field("v", DataType.FLOAT_VECTOR, dim=2 * dim)
    schema.add_field("q", DataType.ARRAY, element_type=DataType.FLOAT, max_capacity=dim)
    return schema


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


class MilvusIndex:
    """One relation's collection: search, per-category search, add and remove (same results API as the faiss backends)."""

    backend = "milvus"

    def __init__(self, client, name: str, weights_id: str, dim: int, n_categories: int):
        self.client, self.name, self.dim, self.n_categories = client, name, int(dim), int(n_categories)
        if not client.has_collection(name):
            raise MilvusBackendError(f"Milvus has no collection {name!r}; rebuild it with 'lrprec index RUN --backend milvus --uri URI'")
        props = client.describe_collection(name).get("properties", {}) or {}
        if props.get(_PROP_WEIGHTS) != weights_id:
            raise MilvusBackendError(f"collection {name!r} was built for other model weights (weights id {props.get(_PROP_WEIGHTS)!r}, "
                                     f"this run has {weights_id!r}); it is not mixed with this run's: rebuild with 'lrprec index RUN --backend milvus'")
        client.load_collection(name)

    # ---- building and updating ------------------------------------------------------------------
    @classmethod
    def create(cls, client, name: str, weights_id: str, relation: str, p: np.ndarray, q: np.ndarray, categories: np.ndarray,
               items: list[str], n_categories: int, index_type: str = DEFAULT_INDEX_TYPE) -> "MilvusIndex":
        """(Re)create the collection with rows 0..N−1 and return it opened."""
        if client.has_collection(name):
            client.drop_collection(name)
        params = client.prepare_index_params()
        params.add_index(field_name="v", index_type=index_type, metric_type="IP",
                         params={"nlist": 1024} if index_type == "IVF_FLAT" else {})
        client.create_collection(name, schema=_schema(p.shape[1]), index_params=params, consistency_level="Strong",
                                 properties={_PROP_WEIGHTS: weights_id, _PROP_RELATION: relation, _PROP_NEXT_ID: str(p.shape[0])})
        ix = cls(client, name, weights_id, p.shape[1], n_categories)
        ix._insert(np.arange(p.shape[0], dtype=np.int64), items, categories, p, q)
        return ix

    def _insert(self, ids: np.ndarray, items: list[str], categories: np.ndarray, p: np.ndarray, q: np.ndarray) -> None:
        for s in range(0, ids.size, _INSERT_BATCH):
            e = min(ids.size, s + _INSERT_BATCH)
            v = augment(p[s:e]).tolist()
            qq = np.asarray(q[s:e], np.float32).tolist()
            rows = [{"id": int(i), "item": str(it), "category": int(c), "v": vv, "q": qv}
                    for i, it, c, vv, qv in zip(ids[s:e].tolist(), items[s:e], categories[s:e].tolist(), v, qq)]
            self.client.insert(self.name, rows)
        self.client.flush(self.name)  # sealed: Strong-consistency searches then wait for nothing (2 s → 0.1 s each in Milvus Lite)

    def count(self) -> int:
        res = self.client.query(self.name, filter="", output_fields=["count(*)"])
        return int(res[0]["count(*)"])

    def find(self, items: list[str]) -> dict[str, int]:
        """{item id: row} of those items present in the collection."""
        if not items:
            return {}
        res = self.client.query(self.name, filter=f"item in [{', '.join(_quote(i) for i in items)}]", output_fields=["id", "item"])
        return {r["item"]: int(r["id"]) for r in res}

    def add(self, items: list[str], categories: np.ndarray, p: np.ndarray, q: np.ndarray) -> np.ndarray:
        """Insert new items (ids after every id used so far); refuses items already present. Returns their rows."""
        dup = self.find(list(items))
        if dup:
            raise MilvusBackendError(f"{len(dup)} item(s) are already in the index (e.g. {next(iter(dup))!r}); remove them first")
        props = self.client.describe_collection(self.name).get("properties", {}) or {}
        start = int(props.get(_PROP_NEXT_ID, 0))
        ids = np.arange(start, start + len(items), dtype=np.int64)
        self.client.alter_collection_properties(self.name, properties={_PROP_NEXT_ID: str(start + len(items))})
        self._insert(ids, list(items), np.asarray(categories, np.int64), p, q)
        return ids

    def remove(self, items: list[str]) -> int:
        """Delete items by id string; all must be present (nothing is deleted otherwise)."""
        found = self.find(list(items))
        missing = [i for i in items if i not in found]
        if missing:
            raise MilvusBackendError(f"{len(missing)} item(s) are not in the index: {', '.join(missing[:5])}")
        self.client.delete(self.name, ids=sorted(found.values()))
        self.client.flush(self.name)
        return len(found)

    # ---- reading -------------------------------------------------------------------------------
    def rows(self, ids: list[int]) -> dict[int, dict]:
        """{row: {"item", "category", "q"}} for the given rows (absent rows are left out)."""
        if not ids:
            return {}
        res = self.client.get(self.name, ids=[int(i) for i in ids], output_fields=["item", "category", "q"])
        return {int(r["id"]): r for r in res}

    def query_vector(self, row: int) -> np.ndarray:
        got = self.rows([row]).get(int(row))
        if got is None:
            raise MilvusBackendError(f"item row {row} is not in collection {self.name!r} (removed?)")
        return np.asarray(got["q"], np.float32)

    def _hits_to_result(self, hits_per_query: list[list[dict]], pq: np.ndarray, w: np.ndarray, k: int, exclude: int) -> SearchResult:
        b = len(hits_per_query)
        ids = np.full((b, k), -1, np.int64)
        dist = np.full((b, k), np.inf, np.float64)
        for r, hits in enumerate(hits_per_query):
            cand = [(int(h["id"]), h["entity"]["v"]) for h in hits if int(h["id"]) != exclude]
            if not cand:
                continue
            cid = np.array([c[0] for c in cand], np.int64)
            pc = np.asarray([c[1][: self.dim] for c in cand], np.float64)
            diff = pc - pq.astype(np.float64)
            d = (diff * diff) @ w.astype(np.float64)
            order = np.lexsort((cid, d))[:k]
            ids[r, : order.size], dist[r, : order.size] = cid[order], d[order]
        return SearchResult(ids, dist)

    def search(self, p_query: np.ndarray, w: np.ndarray, k: int, exclude: np.ndarray | None = None) -> SearchResult:
        """The k items with the smallest Σ w (p_q − p_j)², one query (the Recommender's path)."""
        pq = np.asarray(p_query, np.float32).reshape(-1)
        ww = np.asarray(w, np.float32).reshape(-1)
        excl = -1 if exclude is None else int(np.asarray(exclude).reshape(-1)[0])
        kk = k + 1 + max(8, k // 2)
        q = query_vectors(pq, ww)[0]
        hits = self.client.search(self.name, [q.tolist()], limit=kk, output_fields=["v"], search_params={"metric_type": "IP"})
        return self._hits_to_result(list(hits), pq, ww, k, excl)

    def search_per_category(self, p_query: np.ndarray, w: np.ndarray, k: int, exclude: int = -1) -> SearchResult:
        """Eq 5 in one grouped query: the k nearest items of every category (row c = category code c)."""
        pq = np.asarray(p_query, np.float32).reshape(-1)
        ww = np.asarray(w, np.float32).reshape(-1)
        kk = k + 1 + max(8, k // 2)
        q = query_vectors(pq, ww)[0]
        hits = self.client.search(self.name, [q.tolist()], limit=max(self.n_categories, 1), group_by_field="category",
                                  group_size=kk, output_fields=["v", "category"], search_params={"metric_type": "IP"})
        per_cat: list[list[dict]] = [[] for _ in range(self.n_categories)]
        for h in hits[0]:
            c = int(h["entity"]["category"])
            if 0 <= c < self.n_categories:
                per_cat[c].append(h)
        return self._hits_to_result(per_cat, pq, ww, k, int(exclude))
