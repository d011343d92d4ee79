"""What the data already says is related: the vetoes negative sampling must respect.

Negatives (training, validation, test, the ranking loss's candidates) must never be a
known positive or a pair the data's own rules relate. For the embedded synthetic catalog
the rules are the attribute table below (:func:`related`); a shortcut catalog adds a tag
veto that sets how often a training negative's watermark disagrees (:func:`shortcut_veto`).
:func:`train_reject` and :func:`catalog_truth_reject` pick the right veto for any catalog
(None where the data has no rules), so the trainer and the baselines never consult the generator.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from lrprec.data.catalog import RELATIONS

if TYPE_CHECKING:
    from lrprec.data.catalog import Catalog

# Which attribute decides each relation (column of the synthetic attribute table:
# category, colour, pattern, brand). Colour decides no relation by itself: a shared backbone
# trained on colour-keyed relations learns colour (which random features already see) and
# starves pattern and brand.
RELATION_ATTRIBUTE = {"also_viewed": 2, "buy_after_viewing": 3, "also_bought": 2, "bought_together": 3}
SAME_CATEGORY = {"also_viewed": True, "buy_after_viewing": True, "also_bought": False, "bought_together": False}
SHORTCUT_TAGS = 2  # tag 1: the item carries the watermark; tag 0: it does not


def related(attributes: np.ndarray, user_attribute: np.ndarray, a: np.ndarray, b: np.ndarray, r: np.ndarray, u: np.ndarray) -> np.ndarray:
    """True where item b is related to item a by relation r (for user u, or -1) under the catalog's rules.

    Exactly the table above: the relation's category condition (same category for a
    substitute, another category for a complement) *and* equal key attribute — the
    relation's own, or the user's attribute where the pair carries a user. Arrays broadcast.
    """
    a, b, r, u = np.broadcast_arrays(*(np.asarray(x, np.int64) for x in (a, b, r, u)))
    rel_attr = np.asarray([RELATION_ATTRIBUTE[x] for x in RELATIONS])
    same_cat_rule = np.asarray([SAME_CATEGORY[x] for x in RELATIONS])
    col = rel_attr[r]
    if user_attribute.size:
        col = np.where(u >= 0, user_attribute[np.clip(u, 0, user_attribute.size - 1)], col)
    same_cat = attributes[a, 0] == attributes[b, 0]
    return (same_cat == same_cat_rule[r]) & (attributes[a, col] == attributes[b, col]) & (a != b)


def truth_reject(attributes: np.ndarray, user_attribute: np.ndarray):
    """A negative-sampling veto: True where (a, b) are related by the catalog's own rules (:func:`related`)."""

    def reject(a: np.ndarray, b: np.ndarray, r: np.ndarray, u: np.ndarray) -> np.ndarray:
        return related(attributes, user_attribute, a, b, r, u)

    return reject


def synthetic_rules(catalog: Catalog) -> tuple[np.ndarray, np.ndarray] | None:
    """(attributes, user attribute per user row) of a catalog made by :func:`generate`, else None."""
    if catalog.meta.get("source") != "synthetic" or not (catalog.root / "attributes.npy").exists():
        return None
    return np.load(catalog.root / "attributes.npy"), np.asarray(catalog.meta["user_attribute"], np.int64)


def catalog_truth_reject(catalog: Catalog):
    """The veto for a catalog made by :func:`generate`, or None for any other catalog."""
    rules = synthetic_rules(catalog)
    return None if rules is None else truth_reject(*rules)


def _pair_uniform(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A fixed pseudo-random number in [0, 1) per ordered pair (a splitmix64-style hash)."""
    z = (a.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ (b.astype(np.uint64) + np.uint64(0xBF58476D1CE4E5B9))
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def shortcut_veto(tags: np.ndarray, p: float):
    """A negative-sampling veto under which a negative's tags differ with probability ``p``.

    Uniform tags differ w.p. b = 1 − 1/T. To reach p ≥ b, equal-tag candidates are vetoed
    w.p. 1 − (1 − p)(T − 1)/p; to reach p < b, different-tag ones w.p. 1 − p/((T − 1)(1 − p)).
    The coin of each candidate pair is fixed (a hash), so sampling stays deterministic.
    """
    t = SHORTCUT_TAGS
    base = 1 - 1 / t
    if p >= base:
        veto_equal, veto_differ = (1 - (1 - p) * (t - 1) / p) if p > 0 else 0.0, 0.0
    else:
        veto_equal, veto_differ = 0.0, 1 - p / ((t - 1) * (1 - p))

    def reject(a: np.ndarray, b: np.ndarray, r: np.ndarray, u: np.ndarray) -> np.ndarray:
        equal = tags[a] == tags[b]
        return _pair_uniform(a, b) < np.where(equal, veto_equal, veto_differ)

    return reject


def train_reject(catalog: Catalog):
    """The veto for *training* negatives: the truth veto, plus the shortcut's tag veto on a shortcut catalog."""
    truth = catalog_truth_reject(catalog)
    p = float(catalog.meta.get("config", {}).get("spurious", 0.0)) if truth is not None else 0.0
    if p <= 0:
        return truth
    veto = shortcut_veto(np.load(catalog.root / "shortcut_tags.npy"), p)
    return lambda a, b, r, u: truth(a, b, r, u) | veto(a, b, r, u)
