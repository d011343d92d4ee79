"""Negative sampling: uniform items of the partner's category that are not related to i by r."""
from __future__ import annotations

import numpy as np

from typing import Callable

from lrprec.data.catalog import Pairs

RejectFn = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


class NegativeSampler:
    """Draws one negative per positive, vectorized; rejects known positives and self-pairs.

    A negative for (i, j, r, u) is (i, j', r, u) with j' uniform over the category of j,
    j' != i, and (i, j', r) not a positive in either direction.
    """

    def __init__(self, positives: Pairs, category_codes: np.ndarray, max_rounds: int = 50):
        self.n_items = int(category_codes.shape[0])
        self.category_codes = category_codes
        order = np.argsort(category_codes, kind="stable")
        self._by_cat = order
        counts = np.bincount(category_codes, minlength=int(category_codes.max()) + 1 if category_codes.size else 0)
        self._start = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        self._count = counts.astype(np.int64)
        keys = np.concatenate([self._key(positives.a, positives.b, positives.relation), self._key(positives.b, positives.a, positives.relation)])
        self._known = np.unique(keys)
        self.max_rounds = max_rounds

    def _key(self, a: np.ndarray, b: np.ndarray, r: np.ndarray) -> np.ndarray:
        return (a.astype(np.int64) * self.n_items + b.astype(np.int64)) * 4 + r.astype(np.int64)

    def is_positive(self, a: np.ndarray, b: np.ndarray, r: np.ndarray) -> np.ndarray:
        keys = self._key(a, b, r)
        pos = np.searchsorted(self._known, keys)
        pos = np.minimum(pos, max(len(self._known) - 1, 0))
        return (self._known[pos] == keys) if len(self._known) else np.zeros(keys.shape, bool)

    def sample(self, pos: Pairs, rng: np.random.Generator, reject: RejectFn | None = None) -> Pairs:
        """One negative per positive in ``pos`` (label 0); pairs with no valid negative are dropped.

        ``reject(a, b, relation, user) -> bool mask`` vetoes candidates that are related by the
        data's own ground truth although unlisted (the synthetic catalog knows its rules).
        """
        n = len(pos)
        cats = self.category_codes[pos.b]
        neg_b = np.empty(n, np.int64)
        todo = np.arange(n)
        for _ in range(self.max_rounds):
            if todo.size == 0:
                break
            c = cats[todo]
            draw = self._by_cat[self._start[c] + (rng.random(todo.size) * self._count[c]).astype(np.int64)]
            neg_b[todo] = draw
            bad = (draw == pos.a[todo]) | self.is_positive(pos.a[todo], draw, pos.relation[todo])
            if reject is not None:
                bad |= reject(pos.a[todo], draw, pos.relation[todo], pos.user[todo])
            todo = todo[bad]
        keep = np.ones(n, bool)
        keep[todo] = False  # categories too small to hold a negative for these pairs
        return Pairs(pos.a[keep], neg_b[keep], pos.relation[keep], pos.user[keep], np.zeros(int(keep.sum()), np.int8))
