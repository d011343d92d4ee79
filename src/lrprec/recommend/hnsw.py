"""The HNSW backend of the item index: a neighbour graph of the unweighted p searched under the user's weights.

The graph (faiss HNSW, L2) is built once on the unweighted item vectors p; its storage is then
replaced by the augmented vectors, so that the graph walk scores items by the *user's*
weighted distance. For the walk the inner-product form is turned into an L2 one (the usual
maximum-inner-product reduction): every item gets one more coordinate so that all stored
vectors have the same norm,

    v'_j = [p_j, p_j ∘ p_j, √(M − ‖[p_j, p_j²]‖²)],   q' = [w ∘ p_i, −w / 2, 0],

and ‖q' − v'_j‖² = Σ_k w_k (p_ik − p_jk)² + a constant of the query, ≥ 0 (faiss's HNSW walk
expects non-negative distances; its inner-product walk returned nothing on these vectors).
The candidates are re-ranked exactly in float64 like every backend's. The graph neighbours
are those of the unweighted distance; per-user weights θ² of order one reorder neighbours but
keep the graph navigable (measured in BENCHMARKS.md, issue 27).

Per-category search (eq 5): a category of at most :data:`EXACT_CATEGORY_MAX` items is scanned
exactly; a larger one is a filtered graph walk (a faiss ID selector over its members) with
``efSearch`` raised in proportion to how rare the category is.
"""
from __future__ import annotations

import time

import faiss
import numpy as np

from lrprec.recommend.search import IndexDataError, VectorIndex, faiss_threads, query_vectors

#: Graph degree (faiss M: 2·M neighbours on the bottom layer).
DEFAULT_M = 16
#: Candidate list while building (faiss efConstruction).
DEFAULT_EF_CONSTRUCTION = 40
#: Candidate list while searching (faiss efSearch), at least the number of candidates asked for.
DEFAULT_EF_SEARCH = 64
#: Categories up to this size are scanned exactly in per-category search.
EXACT_CATEGORY_MAX = 20_000
_MAX_EF = 4096


def l2_form(p: np.ndarray, max_sq: float | None = None) -> tuple[np.ndarray, float]:
    """(v', M): the item side of the L2 form, float32 (N, 2K + 1), and the squared norm M all rows get."""
    v = np.concatenate([p, p * p], axis=1).astype(np.float32)
    sq = np.einsum("ij,ij->i", v, v, dtype=np.float64)
    m = float(sq.max()) if max_sq is None else float(max_sq)
    if sq.size and sq.max() > m * (1 + 1e-6):
        raise IndexDataError("an added item lies outside the norm bound of the HNSW index; rebuild it")
    extra = np.sqrt(np.maximum(m - sq, 0.0)).astype(np.float32)[:, None]
    return np.ascontiguousarray(np.concatenate([v, extra], axis=1)), m


def l2_queries(pq: np.ndarray, ww: np.ndarray) -> np.ndarray:
    """q' = [w ∘ p_i, −w / 2, 0] (B, 2K + 1): half the inner-product query, a zero for the norm coordinate."""
    q = 0.5 * query_vectors(pq, ww)
    return np.ascontiguousarray(np.concatenate([q, np.zeros((q.shape[0], 1), np.float32)], axis=1))


def _graph_bytes(index: faiss.Index) -> np.ndarray:
    writer = faiss.VectorIOWriter()
    faiss.write_index(index, writer, faiss.IO_FLAG_SKIP_STORAGE)
    return faiss.vector_to_array(writer.data)


def _graph_from_bytes(data: np.ndarray) -> faiss.Index:
    reader = faiss.VectorIOReader()
    faiss.copy_array_to_vector(np.ascontiguousarray(data, dtype=np.uint8), reader.data)
    return faiss.read_index(reader, faiss.IO_FLAG_SKIP_STORAGE)


class HNSWIndex(VectorIndex):
    """HNSW graph over the unweighted p, walked under each user's weighted distance (see the module).

    ``ef_search`` is a search-time setting (not stored). ``state()`` holds the serialized graph
    without its storage; the storage is rebuilt from p on load.
    """

    backend = "hnsw"

    def __init__(self, p: np.ndarray, categories: np.ndarray | None = None, *, m: int = DEFAULT_M,
                 ef_construction: int = DEFAULT_EF_CONSTRUCTION, ef_search: int = DEFAULT_EF_SEARCH, seed: int = 0,
                 state: dict[str, np.ndarray] | None = None):
        super().__init__(p, categories)
        t0 = time.perf_counter()
        self.ef_search = int(ef_search)
        if state is None:
            graph = faiss.IndexHNSWFlat(self.dim, int(m))
            graph.hnsw.efConstruction = int(ef_construction)
            graph.add(np.ascontiguousarray(self.p, dtype=np.float32))
            self.graph_state = _graph_bytes(graph)
            del graph
        else:
            self.graph_state = np.asarray(state["graph"], dtype=np.uint8)
        self.index = self._with_storage(self.graph_state)
        self.m = int(self.index.hnsw.nb_neighbors(1)) if self.n else int(m)
        self._selectors: dict[int, tuple] = {}
        self.build_seconds = time.perf_counter() - t0

    def _with_storage(self, graph_state: np.ndarray) -> faiss.Index:
        index = _graph_from_bytes(graph_state)
        if index.ntotal != self.n:
            raise IndexDataError(f"stored HNSW graph has {index.ntotal} items, the vectors {self.n}")
        v, self.max_sq = l2_form(np.asarray(self.p, dtype=np.float32))
        storage = faiss.IndexFlatL2(v.shape[1])
        storage.add(v)
        index.storage = storage
        index.own_fields = False
        index.d = storage.d
        self._storage = storage  # keep alive alongside the graph
        return index

    def nbytes(self) -> int:
        links = int(self.graph_state.nbytes)
        return int(self.n * (2 * self.dim + 1) * 4) + links

    def _walk(self, q: np.ndarray, kk: int, ef: int, sel: faiss.IDSelector | None = None) -> np.ndarray:
        params = faiss.SearchParametersHNSW()
        params.efSearch = int(min(max(ef, kk), _MAX_EF))
        if sel is not None:
            params.sel = sel
        dist = np.empty((q.shape[0], kk), np.float32)
        ids = np.empty((q.shape[0], kk), np.int64)
        with faiss_threads(q.shape[0] * params.efSearch * 20 * q.shape[1]):
            self.index.search_c(q.shape[0], faiss.swig_ptr(q), kk, faiss.swig_ptr(dist), faiss.swig_ptr(ids), params)
        return ids

    def _candidates(self, pq: np.ndarray, ww: np.ndarray, kk: int, k: int) -> np.ndarray:
        return self._walk(l2_queries(pq, ww), min(kk, self.n), self.ef_search)

    def _selector(self, c: int) -> tuple:
        if c not in self._selectors:
            members = np.ascontiguousarray(np.sort(self.cat_order[self.cat_offsets[c]:self.cat_offsets[c + 1]]))
            self._selectors[c] = (faiss.IDSelectorBatch(members.size, faiss.swig_ptr(members)), members)
        return self._selectors[c]

    def _candidates_per_category(self, pq: np.ndarray, ww: np.ndarray, kk: int, k: int) -> np.ndarray:
        q = l2_queries(pq, ww)
        n_cat = self.n_categories
        out = np.full((n_cat, kk), -1, np.int64)
        for c in range(n_cat):
            members = self.cat_order[self.cat_offsets[c]:self.cat_offsets[c + 1]]
            if members.size <= max(kk, EXACT_CATEGORY_MAX):
                out[c, : min(kk, members.size)] = _exact_top(self.p, members, pq[0], ww[0], kk)
            else:
                sel, _ = self._selector(c)
                ef = int(self.ef_search * self.n / members.size)
                out[c] = self._walk(q, kk, ef, sel)[0]
        return out

    def state(self) -> dict[str, np.ndarray]:
        return {"graph": self.graph_state}


def _exact_top(p: np.ndarray, members: np.ndarray, pq: np.ndarray, w: np.ndarray, kk: int) -> np.ndarray:
    """The kk members nearest to pq under weights w (float32 scan; the caller re-ranks exactly)."""
    x = np.asarray(p[members], dtype=np.float32) - pq[None, :]
    d = (x * x) @ w
    if members.size <= kk:
        return members[np.argsort(d, kind="stable")]
    top = np.argpartition(d, kk - 1)[:kk]
    return members[top]
