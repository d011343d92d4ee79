"""Negative sampling under a named protocol (SPEC §1).

A negative for a positive (i, j, r, u) is (i, j', r, u), j' ≠ i, never a known positive of
(i, r) in either direction, and never a pair the data's own ground truth relates (``reject``).
Where j' comes from is the *protocol*:

``random``    j' uniform over the whole catalog (McAuley 2015). Category alone is informative.
``category``  j' uniform over the category of j (hard negatives: the model must use more
              than category). A model trained on these alone never sees a cross-category
              negative for a substitute relation.
``contrast``  j' drawn by category alone on the *wrong side* of the relation: from i's own
              category for a complement, from the other categories for a substitute.
``mixed``     each pair draws one of the above by :data:`DEFAULT_MIX` (the training default).
"""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from lrprec.data.catalog import NEGATIVE_PROTOCOLS, RELATIONS, SUBSTITUTES, Pairs
from lrprec.errors import UsageError

RejectFn = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]

PROTOCOLS = ("random", "category", "contrast", "mixed")
EVAL_PROTOCOLS = NEGATIVE_PROTOCOLS  # validation/test keep one fixed negative set of each
# Shares of the mixed protocol (chosen on validation pairs, see README "Negatives").
DEFAULT_MIX: dict[str, float] = {"random": 1 / 3, "category": 1 / 3, "contrast": 1 / 3}
_SUBSTITUTE = np.asarray([r in SUBSTITUTES for r in RELATIONS])


def check_protocol(name: str, *, evaluation: bool = False) -> str:
    """The protocol name, or a ValueError naming the known ones."""
    known = EVAL_PROTOCOLS if evaluation else PROTOCOLS
    if name not in known:
        raise UsageError(f"unknown negative protocol {name!r}; known: {', '.join(known)}")
    return name


def parse_mix(text: str | Mapping[str, float] | None) -> dict[str, float]:
    """``"random=1,category=1,contrast=1"`` (or a mapping) → shares that sum to 1."""
    if text is None or text == "":
        return dict(DEFAULT_MIX)
    items = dict(text) if isinstance(text, Mapping) else {}
    if not isinstance(text, Mapping):
        for part in str(text).split(","):
            name, sep, value = part.partition("=")
            if not sep:
                raise UsageError(f"--negative-mix takes name=weight pairs such as random=1,category=1, got {part!r}")
            try:
                items[name.strip()] = float(value)
            except ValueError:
                raise UsageError(f"--negative-mix weight of {name.strip()!r} is not a number: {value!r}") from None
    for name, w in items.items():
        if name not in ("random", "category", "contrast"):
            raise UsageError(f"unknown negative protocol {name!r} in the mix; known: random, category, contrast")
        if not np.isfinite(w) or w < 0:
            raise UsageError(f"--negative-mix weights must be >= 0, got {name}={w}")
    total = sum(items.values())
    if total <= 0:
        raise UsageError("--negative-mix needs at least one positive weight")
    return {k: items.get(k, 0.0) / total for k in ("random", "category", "contrast")}


class NegativeSampler:
    """Draws one negative per positive under a protocol, vectorized with rejection rounds."""

    def __init__(self, positives: Pairs, category_codes: np.ndarray, max_rounds: int = 50):
        self.n_items = int(category_codes.shape[0])
        self.category_codes = category_codes
        self._by_cat = np.argsort(category_codes, kind="stable")
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

    # ---- one draw per mode -----------------------------------------------------------------
    def _in_category(self, c: np.ndarray, u: np.ndarray) -> np.ndarray:
        return self._by_cat[self._start[c] + (u * self._count[c]).astype(np.int64)]

    def _outside_category(self, c: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Uniform over the items not in category c (c's block of the category order is skipped)."""
        k = (u * (self.n_items - self._count[c])).astype(np.int64)
        return self._by_cat[np.where(k < self._start[c], k, k + self._count[c])]

    def _draw(self, mode: np.ndarray, a: np.ndarray, b: np.ndarray, r: np.ndarray, u: np.ndarray) -> np.ndarray:
        """mode 0 random, 1 category of b, 2 contrast (i's category for complements, outside it for substitutes)."""
        out = (u * self.n_items).astype(np.int64)
        m = mode == 1
        out[m] = self._in_category(self.category_codes[b[m]], u[m])
        m = mode == 2
        if m.any():
            ca, sub = self.category_codes[a[m]], _SUBSTITUTE[r[m]]
            # a catalog of one category has no "outside": fall back to its own category
            sub &= self._count[ca] < self.n_items
            draw = self._in_category(ca, u[m])
            draw[sub] = self._outside_category(ca[sub], u[m][sub])
            out[m] = draw
        return out

    def sample(self, pos: Pairs, rng: np.random.Generator, reject: RejectFn | None = None, protocol: str = "category",
               mix: Mapping[str, float] | None = None) -> Pairs:
        """One negative per positive in ``pos`` (label 0) under ``protocol``; pairs with no valid negative are dropped.

        ``reject(a, b, relation, user) -> bool mask`` vetoes candidates that are related by the
        data's own ground truth although unlisted (the synthetic catalog knows its rules).
        ``mix`` gives the shares of the ``mixed`` protocol (default :data:`DEFAULT_MIX`).
        """
        check_protocol(protocol)
        n = len(pos)
        if protocol == "mixed":
            shares = parse_mix(mix)
            mode = np.searchsorted(np.cumsum([shares["random"], shares["category"], shares["contrast"]]), rng.random(n), side="right")
            mode = np.minimum(mode, 2)
        else:
            mode = np.full(n, ("random", "category", "contrast").index(protocol))
        neg_b = np.empty(n, np.int64)
        todo = np.arange(n)
        for _ in range(self.max_rounds):
            if todo.size == 0:
                break
            a, r = pos.a[todo], pos.relation[todo]
            draw = self._draw(mode[todo], a, pos.b[todo], r, rng.random(todo.size))
            neg_b[todo] = draw
            bad = (draw == a) | self.is_positive(a, draw, r)
            if reject is not None:
                bad |= reject(a, draw, r, pos.user[todo])
            todo = todo[bad]
        keep = np.ones(n, bool)
        keep[todo] = False  # no valid negative found for these pairs (tiny categories)
        return Pairs(pos.a[keep], neg_b[keep], pos.relation[keep], pos.user[keep], np.zeros(int(keep.sum()), np.int8))
