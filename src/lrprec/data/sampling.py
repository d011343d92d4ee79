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

Apart from the protocol, ``user_share`` of the *user-carrying* positives (i, j, r, u) draw
j' from i's partners under r in pairs of *other* users or of no user — what others pair
with i and u did not (issue 19): negatives that contrast u's taste with everyone else's.
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
        # i's partners under r in either direction with their users (user negatives), sorted by (i, r)
        a2, b2 = np.concatenate([positives.a, positives.b]), np.concatenate([positives.b, positives.a])
        r2, u2 = np.concatenate([positives.relation, positives.relation]), np.concatenate([positives.user, positives.user])
        order = np.argsort(a2.astype(np.int64) * 4 + r2, kind="stable")
        self._pkey, self._pb, self._pu = (a2.astype(np.int64) * 4 + r2)[order], b2[order].astype(np.int64), u2[order].astype(np.int64)
        self._n_users = int(u2.max()) + 2 if u2.size else 1
        self._user_ok = 4.0 * (self.n_items + 1) ** 2 * self._n_users < 2.0 ** 62  # the (a, b, r, u) key fits in int64
        self._known_user = np.unique(self._key(a2, b2, r2) * self._n_users + (u2 + 1)) if self._user_ok else None

    def _key(self, a: np.ndarray, b: np.ndarray, r: np.ndarray) -> np.ndarray:
        return (a.astype(np.int64) * self.n_items + b.astype(np.int64)) * 4 + r.astype(np.int64)

    def is_positive(self, a: np.ndarray, b: np.ndarray, r: np.ndarray) -> np.ndarray:
        """Boolean (N,): whether each (a[n], b[n], r[n]) (item rows, relation index) is a known positive."""
        keys = self._key(a, b, r)
        pos = np.searchsorted(self._known, keys)
        pos = np.minimum(pos, max(len(self._known) - 1, 0))
        return (self._known[pos] == keys) if len(self._known) else np.zeros(keys.shape, bool)

    def is_positive_for_user(self, a: np.ndarray, b: np.ndarray, r: np.ndarray, u: np.ndarray) -> np.ndarray:
        """True where (a, b, r) is a known positive carrying user u (either direction)."""
        keys = self._key(a, b, r) * self._n_users + (u.astype(np.int64) + 1)
        pos = np.minimum(np.searchsorted(self._known_user, keys), max(len(self._known_user) - 1, 0))
        return (self._known_user[pos] == keys) if len(self._known_user) else np.zeros(keys.shape, bool)

    def _others_partner(self, a: np.ndarray, r: np.ndarray, u: np.ndarray, draw: np.ndarray) -> np.ndarray:
        """A uniform draw among a's partners under r (either direction); -1 where a has none or it carries user u."""
        key = a.astype(np.int64) * 4 + r
        lo, hi = np.searchsorted(self._pkey, key, "left"), np.searchsorted(self._pkey, key, "right")
        k = np.minimum(lo + (draw * (hi - lo)).astype(np.int64), max(len(self._pb) - 1, 0))
        ok = (hi > lo) & (self._pu[k] != u)
        return np.where(ok, self._pb[k], -1)

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
               mix: Mapping[str, float] | None = None, user_share: float = 0.0) -> Pairs:
        """One negative per positive in ``pos`` (label 0) under ``protocol``; pairs with no valid negative are dropped.

        ``reject(a, b, relation, user) -> bool mask`` vetoes candidates that are related by the
        data's own ground truth although unlisted (the synthetic catalog knows its rules).
        ``mix`` gives the shares of the ``mixed`` protocol (default :data:`DEFAULT_MIX`).
        ``user_share``: share of user-carrying positives whose negative is another user's partner
        of i (module docstring); such a draw falls back to the protocol after a few failed rounds.
        """
        check_protocol(protocol)
        n = len(pos)
        if protocol == "mixed":
            shares = parse_mix(mix)
            mode = np.searchsorted(np.cumsum([shares["random"], shares["category"], shares["contrast"]]), rng.random(n), side="right")
            mode = np.minimum(mode, 2)
        else:
            mode = np.full(n, ("random", "category", "contrast").index(protocol))
        others = np.zeros(n, bool)
        if user_share > 0:
            if not self._user_ok:
                raise UsageError("user negatives need (items + 1)² · 4 · (users + 2) < 2^62; this catalog is too large")
            others = (pos.user >= 0) & (rng.random(n) < user_share)
        neg_b = np.empty(n, np.int64)
        todo = np.arange(n)
        for round_ in range(self.max_rounds):
            if todo.size == 0:
                break
            if round_ == 5:
                others[todo] = False  # no other user's partner of i fits: fall back to the protocol
            a, r, u = pos.a[todo], pos.relation[todo], pos.user[todo]
            draw = self._draw(mode[todo], a, pos.b[todo], r, rng.random(todo.size))
            known = self.is_positive(a, draw, r)
            o = others[todo]
            if o.any():
                # another user's partner is a positive of (i, r), but not of u: only u's own pairs are vetoed
                cand = self._others_partner(a[o], r[o], u[o], rng.random(int(o.sum())))
                draw[o] = np.where(cand >= 0, cand, a[o])  # none: draw = i, rejected below
                known[o] = self.is_positive_for_user(a[o], draw[o], r[o], u[o])
            neg_b[todo] = draw
            bad = (draw == a) | known
            if reject is not None:
                bad |= reject(a, draw, r, u)
            todo = todo[bad]
        keep = np.ones(n, bool)
        keep[todo] = False  # no valid negative found for these pairs (tiny categories)
        return Pairs(pos.a[keep], neg_b[keep], pos.relation[keep], pos.user[keep], np.zeros(int(keep.sum()), np.int8))
