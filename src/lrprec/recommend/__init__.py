"""Recommendations (SPEC §2, eq 5): vector indexes over the projected items and the API on top.

``index`` holds the model-free search structures (``search``: the shared base and the exact
backend; ``ivf``: lists, probing, k-means; numpy + faiss);
``recommender`` embeds a run's catalog, stores the index in ``RUN/index/`` and answers queries.
"""
from lrprec.recommend.index import AUTO_IVF_MIN_ITEMS, DEFAULT_NPROBE, ExactIndex, IVFIndex, SearchResult, VectorIndex
from lrprec.recommend.recommender import (
    IndexMissingError,
    RecIndex,
    Recommender,
    RecommendError,
    StaleIndexError,
    build_index,
    embed_catalog,
    load_index,
    recommend,
)

__all__ = [
    "AUTO_IVF_MIN_ITEMS", "DEFAULT_NPROBE", "ExactIndex", "IVFIndex", "SearchResult", "VectorIndex",
    "IndexMissingError", "RecIndex", "Recommender", "RecommendError", "StaleIndexError",
    "build_index", "embed_catalog", "load_index", "recommend",
]
