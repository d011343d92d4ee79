"""A category-compatibility prior learned from training pairs (issue 31; the category-tree baseline's T_r(c_j | c_i)).

T_r counts the training positives of relation r between each ordered pair of categories
(both directions). A candidate whose category pair has no training positive while the
query's category has at least :data:`MIN_EVIDENCE` of them is *ruled out* by the prior: the
list policy ``demote`` moves it below the others (never drops it). The prior is used for a
relation only where it helps on validation: no more than :data:`MAX_VALIDATION_MISS` of the
relation's validation positives fall into a ruled-out category pair. On a catalog whose
complements are always across categories it keeps the query's own category out of
"goes with" lists; where the data do pair a category with itself, it says nothing.
"""
from __future__ import annotations

import numpy as np

from lrprec.data.catalog import RELATIONS, Catalog, CatalogError, Pairs

MIN_EVIDENCE = 5  # training positives of the query's category before an unseen category pair is ruled out
MAX_VALIDATION_MISS = 0.01  # share of validation positives the prior may rule out and still be used


def category_counts(pairs: Pairs, codes: np.ndarray, relation: int, n_categories: int) -> np.ndarray:
    """(C, C) counts of positives of ``relation`` between category c_i (row) and c_j (column), both directions."""
    sel = (pairs.relation == relation) & (pairs.label == 1)
    ca, cb = codes[pairs.a[sel]], codes[pairs.b[sel]]
    t = np.zeros((n_categories, n_categories), np.int64)
    np.add.at(t, (ca, cb), 1)
    np.add.at(t, (cb, ca), 1)
    return t


def ruled_out(counts: np.ndarray) -> np.ndarray:
    """(C, C) bool: category pairs with no training positive where the row category has enough evidence."""
    return (counts == 0) & (counts.sum(1, keepdims=True) >= MIN_EVIDENCE)


def category_prior(catalog: Catalog, relation: str) -> np.ndarray | None:
    """The ruled-out (C, C) table of a relation, or None where it would rule out validation positives (or has no data)."""
    r = RELATIONS.index(relation)
    codes = np.asarray(catalog.category_codes, np.int64)
    n_cat = len(catalog.category_names)
    try:
        train, val = catalog.pairs("train"), catalog.pairs("validation")
    except (CatalogError, OSError):
        return None  # a catalog without stored splits: no prior
    out = ruled_out(category_counts(train, codes, r, n_cat))
    if not out.any():
        return None
    sel = (val.relation == r) & (val.label == 1)
    if not sel.any():
        return None
    miss = out[codes[val.a[sel]], codes[val.b[sel]]].mean()
    return out if miss <= MAX_VALIDATION_MISS else None
