"""The [M15 §4.1] protocol: 80/10/10 split of positives per relation, equal fixed negatives per protocol."""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

from lrprec.data.catalog import RELATIONS, SPLITS, Catalog, Pairs, pairs_table, split_file
from lrprec.data.sampling import EVAL_PROTOCOLS, NegativeSampler, RejectFn
from lrprec.errors import UsageError
from lrprec.files import atomic_write

RATIOS = (0.8, 0.1, 0.1)


def split_positives(pos: Pairs, seed: int, ratios: tuple[float, float, float] = RATIOS) -> dict[str, Pairs]:
    """Shuffle the positives of each relation (seeded) and cut them 80/10/10; a pair lands in one split only."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[Pairs]] = {"train": [], "validation": [], "test": []}
    for r in range(len(RELATIONS)):
        idx = np.flatnonzero(pos.relation == r)
        if idx.size == 0:
            continue
        idx = idx[rng.permutation(idx.size)]
        n_train = int(round(ratios[0] * idx.size))
        n_val = int(round(ratios[1] * idx.size))
        parts["train"].append(pos.take(idx[:n_train]))
        parts["validation"].append(pos.take(idx[n_train:n_train + n_val]))
        parts["test"].append(pos.take(idx[n_train + n_val:]))
    return {k: Pairs.concat(v) if v else Pairs.empty() for k, v in parts.items()}


def make_splits(catalog: Catalog, seed: int = 0, reject: RejectFn | None = None, assignment: np.ndarray | None = None) -> dict[str, Pairs]:
    """Create and store the splits of a catalog: train positives, and validation/test positives
    with one fixed negative per positive (|Q| = |R|) under each protocol of
    :data:`~lrprec.data.sampling.EVAL_PROTOCOLS` (``category``: from the positive partner's
    category, ``random``: uniform over the catalog), never a known positive for (i, r) nor a
    pair ``reject`` relates. Files: ``splits/train.parquet``, ``splits/{validation,test}.parquet``
    (category protocol) and ``splits/{validation,test}-random.parquet``. ``assignment``
    (0 train, 1 validation, 2 test per row of the relation table) replaces the seeded
    80/10/10 cut when the data comes with its own split.
    """
    pos = catalog.positives()
    if assignment is None:
        splits = split_positives(pos, seed)
    else:
        assignment = np.asarray(assignment)
        if assignment.shape != (len(pos),) or not np.isin(assignment, (0, 1, 2)).all():
            raise UsageError(f"split assignment needs one value in {{0, 1, 2}} per relation row ({len(pos)})")
        splits = {name: pos.take(np.flatnonzero(assignment == k)) for k, name in enumerate(SPLITS)}
    sampler = NegativeSampler(pos, catalog.category_codes)
    (catalog.root / "splits").mkdir(exist_ok=True)
    atomic_write(split_file(catalog.root, "train"), lambda t: pq.write_table(pairs_table(catalog.item_ids, splits["train"], catalog.user_ids), t))
    out: dict[str, Pairs] = {"train": splits["train"]}
    for k, protocol in enumerate(EVAL_PROTOCOLS):
        rng = np.random.default_rng(seed + 1 if k == 0 else [seed, 1 + k])  # category draws as before protocols existed
        for name in ("validation", "test"):
            pairs = Pairs.concat([splits[name], sampler.sample(splits[name], rng, reject, protocol=protocol)])
            atomic_write(split_file(catalog.root, name, protocol), lambda t, pairs=pairs: pq.write_table(pairs_table(catalog.item_ids, pairs, catalog.user_ids), t))
            out[name if protocol == "category" else f"{name}-{protocol}"] = pairs
    return out


def protocol_pairs(catalog: Catalog, split: str) -> Pairs:
    """A split's positives with the negatives of every stored protocol (category, and random where
    stored), positives repeated per protocol: accuracy on them is the mean of the protocols'
    accuracies. What picks a best epoch on validation pairs."""
    return Pairs.concat([catalog.pairs(split, p) for p in EVAL_PROTOCOLS if p == "category" or catalog.has_protocol(p)])
