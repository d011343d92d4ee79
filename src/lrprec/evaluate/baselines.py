"""The [M15] link-prediction baselines, scored on the same split and in the same report shape
as :func:`lrprec.evaluate.linkpred.link_prediction_report`.

* ``random``: seeded standard-normal logits, one per pair of the split (chance: 50%).
* ``popularity``: ranks items by their degree among the relation's training positives
  (a ranking baseline; for link prediction its logit is the partner's log degree ratio).
* ``category-tree`` (CT): the category pair alone. From the training positives of relation r
  it estimates T_r(C' | C), how often a partner of an item of category C lies in C', and
  scores a pair log T_r(c_j | c_i) − log U(c_j) (U: the catalog's share of category c_j,
  where a ``random`` negative lands). A catalog stores one category per item, so CT uses
  that one; Amazon imports keep the *top-level* category by default (``--category-level N``
  for deeper ones). Under ``category`` negatives (drawn from the positive partner's
  category) each negative has its positive's category pair, so any category-only predictor,
  CT included, scores 50%; under ``random`` negatives it is the baseline the model must beat.
* ``wnn`` (weighted nearest neighbour): d(i, j) = Σ_k w_k (x_ik − x_jk)² on the items'
  features with learned non-negative diagonal weights w (one vector per relation) and a
  shift c_r, P = σ(c_r − d), trained with the model's objective (BCE over train positives and
  |Q| = |R| negatives resampled every epoch, Adam), best validation epoch kept. Features mode
  only: it needs the catalog's precomputed features (``import amazon2014 --features``), or a
  trained run whose backbone gives features for an image catalog (``run=``).
* The low-rank model at K = 10 and 100 is a features-mode run
  (``lrprec train DATA --mode features --dim K``); :mod:`lrprec.evaluate.compare` lays runs
  and baselines side by side.

Feature rows are gathered per batch through :class:`LazyFeatures`, which reads them with
``os.preadv`` (no memory map), so resident memory stays at a batch whatever the size of the
feature file.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np
import torch

from lrprec.data.catalog import RELATIONS, Catalog, CatalogError, Pairs, relation_index
from lrprec.data.features import LazyFeatures
from lrprec.errors import UsageError

BASELINES: tuple[str, ...] = ("random", "popularity", "category-tree", "wnn")
ALIASES = {"ct": "category-tree", "category_tree": "category-tree", "categorytree": "category-tree", "rand": "random",
           "pop": "popularity"}
EVAL_SPLITS = ("validation", "test")


def baseline_name(name: str) -> str:
    """The canonical baseline name (accepts ``ct`` for ``category-tree``); a clear error otherwise."""
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key not in BASELINES:
        raise UsageError(f"unknown baseline {name!r}; choose one of {', '.join(BASELINES)} "
                         "(the low-rank model at K = 10/100 is 'lrprec train DATA --mode features --dim K')")
    return key


# ---------------------------------------------------------------------------------------------
# feature rows without keeping the file resident
# ---------------------------------------------------------------------------------------------
def catalog_features(catalog: Catalog) -> LazyFeatures:
    """The catalog's precomputed features as :class:`LazyFeatures`, or a clear error."""
    feats = catalog.features
    if feats is None:
        raise CatalogError(f"{catalog.root} has no precomputed features; WNN works in features mode: import with "
                           "'lrprec import amazon2014 --features FILE.b' (or give a trained run for its backbone's features)")
    if feats.shape[0] != len(catalog):
        raise CatalogError(f"{catalog.root}: features hold {feats.shape[0]} rows for {len(catalog)} items")
    return LazyFeatures(feats)


@torch.inference_mode()
def run_features(run_path: str | os.PathLike, catalog: Catalog | None = None, batch_size: int = 128) -> LazyFeatures:
    """Backbone features (N, F) of every catalog item under a trained run's (frozen) backbone.

    Held in memory, so meant for image catalogs of moderate size (N × F float32)."""
    from lrprec.run import Run, embed_items

    run = Run.load(run_path, catalog=catalog.root if catalog is not None else None)
    return LazyFeatures(embed_items(run.model, run.catalog, run.input_size, batch_size).float().cpu().numpy())


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def _relations(catalog: Catalog, relations: list[str] | tuple[str, ...] | None) -> list[str]:
    rels = list(relations) if relations else list(catalog.relations)
    for r in rels:
        relation_index(r)
        if r not in catalog.relations:
            raise CatalogError(f"relation {r!r} has no pairs in {catalog.root} (relations: {', '.join(catalog.relations)})")
    return rels


def _filter(pairs: Pairs, relations: list[str]) -> Pairs:
    keep = np.isin(pairs.relation, [RELATIONS.index(r) for r in relations])
    return pairs.take(np.flatnonzero(keep))


def random_logits(pairs: Pairs, seed: int = 0) -> np.ndarray:
    """Seeded standard-normal logits, one per pair in split order (independent of any filter)."""
    return np.random.default_rng(seed).standard_normal(len(pairs)).astype(np.float32)


def random_scorer(n_items: int, seed: int = 0):
    """Scores for ranking: a fixed standard-normal row per query item (seeded by the item)."""
    def score(a: np.ndarray, relation: np.ndarray, user: np.ndarray) -> np.ndarray:
        return np.stack([np.random.default_rng([seed, int(i), int(r)]).standard_normal(n_items) for i, r in zip(a, relation)])
    return score


def _train_positives(catalog: Catalog) -> Pairs:
    return catalog.pairs("train")


def popularity_table(catalog: Catalog) -> np.ndarray:
    """(R, N) degree of each item among each relation's training positives (both ends count)."""
    pos = _train_positives(catalog)
    deg = np.zeros((len(RELATIONS), len(catalog)), np.float64)
    np.add.at(deg, (pos.relation, pos.a), 1.0)
    np.add.at(deg, (pos.relation, pos.b), 1.0)
    return deg


def popularity_scorer(catalog: Catalog):
    """Scorer ``(a, relation, user) -> (N,)`` of the popularity baseline: each candidate's training degree under the relation."""
    deg = popularity_table(catalog)
    return lambda a, relation, user: deg[relation]


def popularity_logits(catalog: Catalog, pairs: Pairs) -> np.ndarray:
    """log (1 + degree of the partner) − mean log (1 + degree): above 0 for more popular partners."""
    lg = np.log1p(popularity_table(catalog))
    return (lg[pairs.relation, pairs.b] - lg.mean(1)[pairs.relation]).astype(np.float32)


def category_tree_table(catalog: Catalog) -> np.ndarray:
    """(R, C, C) log T_r(c' | c) − log U(c') from the training positives (add-½ smoothing)."""
    pos = _train_positives(catalog)
    codes = catalog.category_codes
    n_cat = len(catalog.category_names)
    counts = np.full((len(RELATIONS), n_cat, n_cat), 0.5)
    np.add.at(counts, (pos.relation, codes[pos.a], codes[pos.b]), 1.0)
    trans = counts / counts.sum(2, keepdims=True)
    share = np.bincount(codes, minlength=n_cat) / max(len(codes), 1)
    return np.log(trans) - np.log(np.maximum(share, 1e-12))[None, None, :]


def category_tree_logits(catalog: Catalog, pairs: Pairs) -> np.ndarray:
    """CT's logit for each pair: log T_r(c_b | c_a) − log U(c_b) (see the module docstring)."""
    t = category_tree_table(catalog)
    codes = catalog.category_codes
    return t[pairs.relation, codes[pairs.a], codes[pairs.b]].astype(np.float32)


def category_tree_scorer(catalog: Catalog):
    """Scorer ``(a, relation, user) -> (len(a), N)`` of the category-tree baseline: log T_r(c_j | c_i) − log U(c_j) from training positives."""
    t = category_tree_table(catalog)
    codes = catalog.category_codes
    return lambda a, relation, user: t[relation, codes[a]][:, codes]


# ---------------------------------------------------------------------------------------------
# weighted nearest neighbour
# ---------------------------------------------------------------------------------------------
@dataclass
class WNNConfig:
    epochs: int = 10
    batch_size: int = 256
    lr: float = 0.05
    seed: int = 0
    scale_pairs: int = 4096  # pairs used to measure each dimension's mean squared difference


class WNN(torch.nn.Module):
    """d_r(i, j) = Σ_k w_rk (x_ik − x_jk)², w = exp(v) / s ≥ 0; logit c_r − d.

    ``s_k`` is the mean squared difference of dimension k over a sample of training pairs,
    fixed before training, so the learned ``u = exp(v)`` is each dimension's share of the
    typical distance (``importance``) and ``w = u / s`` is the weight in feature units.
    """

    def __init__(self, n_features: int, scale: np.ndarray, n_relations: int = len(RELATIONS)):
        super().__init__()
        self.register_buffer("scale", torch.as_tensor(np.maximum(scale, 1e-12), dtype=torch.float32))
        # u starts at 1/F: with normalized squared differences the initial distance is ~1 ≈ c
        self.v = torch.nn.Parameter(torch.full((n_relations, n_features), -float(np.log(n_features))))
        self.c = torch.nn.Parameter(torch.ones(n_relations))

    def importance(self) -> torch.Tensor:
        """Per-relation feature weights exp(v), (R, F) (v clamped at 30 against overflow)."""
        return self.v.clamp(max=30.0).exp()

    def weights(self) -> torch.Tensor:
        """w (R, F) in feature units: d = Σ_k w_k (x_ik − x_jk)²."""
        return self.importance() / self.scale

    def forward(self, xa: torch.Tensor, xb: torch.Tensor, relation: torch.Tensor) -> torch.Tensor:
        """Logits c_r − Σ_f w_rf (x_af − x_bf)² / scale_f, (B,), for features ``xa``, ``xb`` (B, F) and ``relation`` (B,)."""
        z = (xa - xb).pow(2) / self.scale
        d = (z * self.importance()[relation]).sum(-1)
        return self.c[relation] - d


def _scale(feats: LazyFeatures, pairs: Pairs, rng: np.random.Generator, n: int, chunk: int = 256) -> np.ndarray:
    take = rng.choice(len(pairs), size=min(n, len(pairs)), replace=False)
    acc = np.zeros(feats.dim, np.float64)
    for s0 in range(0, take.size, chunk):  # in chunks: memory stays at a batch of rows
        t = take[s0:s0 + chunk]
        diff = feats.rows(pairs.a[t]) - feats.rows(pairs.b[t])
        acc += np.einsum("ij,ij->j", diff, diff, dtype=np.float64)
    s = acc / max(take.size, 1)
    positive = s[s > 0]
    floor = positive.mean() * 1e-6 if positive.size else 1.0
    return np.maximum(s, floor)  # a constant dimension gets a tiny scale, and no say in d


@torch.inference_mode()
def wnn_logits(model: WNN, feats: LazyFeatures, pairs: Pairs, batch_size: int = 256) -> np.ndarray:
    """WNN logits of every pair, float32 (len(pairs),), batched, in eval mode."""
    model.eval()
    out = np.empty(len(pairs), np.float32)
    for s in range(0, len(pairs), batch_size):
        sl = slice(s, s + batch_size)
        out[sl] = model(torch.from_numpy(feats.rows(pairs.a[sl])), torch.from_numpy(feats.rows(pairs.b[sl])),
                        torch.from_numpy(pairs.relation[sl])).numpy()
    return out


def train_wnn(catalog: Catalog, feats: LazyFeatures, relations: list[str], cfg: WNNConfig = WNNConfig(), log=None) -> tuple[WNN, dict]:
    """Fit WNN on the train split (negatives resampled per epoch), keep the best validation epoch."""
    from lrprec.data.sampling import NegativeSampler
    from lrprec.data.rules import catalog_truth_reject
    from lrprec.data.splits import protocol_pairs

    if cfg.epochs <= 0 or cfg.batch_size <= 0 or cfg.lr <= 0:
        raise UsageError("WNN epochs, batch size and learning rate must be positive")
    if len(feats) != len(catalog):
        raise CatalogError(f"features hold {len(feats)} rows for {len(catalog)} items")
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    train_pos = _filter(catalog.pairs("train"), relations)
    if len(train_pos) == 0:
        raise CatalogError("no training pairs for the chosen relations")
    val = _filter(protocol_pairs(catalog, "validation"), relations)
    sampler = NegativeSampler(catalog.positives(), catalog.category_codes)
    reject = catalog_truth_reject(catalog)
    first = Pairs.concat([train_pos, sampler.sample(train_pos, rng, reject, protocol="mixed")])
    model = WNN(feats.dim, _scale(feats, first, rng, cfg.scale_pairs))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    best_state, best = None, {"epoch": 0, "val_accuracy": -1.0}
    history = []
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        pairs = first if epoch == 0 else Pairs.concat([train_pos, sampler.sample(train_pos, rng, reject, protocol="mixed")])
        pairs = pairs.take(rng.permutation(len(pairs)))
        model.train()
        total = 0.0
        for s in range(0, len(pairs), cfg.batch_size):
            b = pairs.take(slice(s, s + cfg.batch_size))
            logit = model(torch.from_numpy(feats.rows(b.a)), torch.from_numpy(feats.rows(b.b)), torch.from_numpy(b.relation))
            loss = loss_fn(logit, torch.from_numpy(b.label).float())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(b)
        seconds = time.perf_counter() - t0
        logits = wnn_logits(model, feats, val) if len(val) else np.zeros(0, np.float32)
        acc = float(((logits > 0) == (val.label == 1)).mean()) if len(val) else float("nan")
        history.append({"epoch": epoch + 1, "loss": total / len(pairs), "val_accuracy": acc, "pairs_per_second": round(len(pairs) / max(seconds, 1e-9), 1)})
        if log:
            log(f"wnn epoch {epoch + 1}/{cfg.epochs}  loss {total / len(pairs):.4f}  val acc {100 * acc:.1f}%")
        if not len(val) or acc > best["val_accuracy"]:
            best = {"epoch": epoch + 1, "val_accuracy": acc}
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if best_state is not None:
        model.load_state_dict(best_state)
    return model, {"epochs": history, "best": best}


def wnn_scorer(model: WNN, feats: LazyFeatures, max_bytes: int = 1 << 30):
    """Scores c_r − d_r(i, j) of every item for ranking; None when the features exceed ``max_bytes`` in memory."""
    if len(feats) * feats.dim * 4 > max_bytes:
        return None
    x = torch.from_numpy(np.asarray(feats.rows(np.arange(len(feats))), np.float32))
    w = model.weights().detach()
    c = model.c.detach()

    @torch.inference_mode()
    def score(a: np.ndarray, relation: np.ndarray, user: np.ndarray) -> np.ndarray:
        wr = w[torch.from_numpy(relation)]                     # (n, F)
        xa = x[torch.from_numpy(a)]
        d = (wr * xa * xa).sum(1, keepdim=True) - 2 * (wr * xa) @ x.T + wr @ (x * x).T
        return (c[torch.from_numpy(relation)].unsqueeze(1) - d).double().numpy()

    return score


def _wnn_summary(model: WNN, relations: list[str], top: int = 10) -> dict:
    w = model.weights().detach().numpy()
    u = model.importance().detach().numpy()
    out: dict = {"shift": {}, "top_dimensions": {}}
    for r in relations:
        k = RELATIONS.index(r)
        share = u[k] / u[k].sum()
        order = np.argsort(-u[k], kind="stable")[:top]
        out["shift"][r] = float(model.c[k].detach())
        out["top_dimensions"][r] = [{"dim": int(j), "weight": float(w[k, j]), "share": float(share[j])} for j in order]
    return out


# ---------------------------------------------------------------------------------------------
# public entry point
# ---------------------------------------------------------------------------------------------
def evaluate_baseline(
    catalog_path: str | os.PathLike | Catalog,
    name: str,
    split: str = "test",
    seed: int = 0,
    relations: list[str] | None = None,
    *,
    run: str | os.PathLike | None = None,
    wnn: WNNConfig | None = None,
    log=None,
) -> dict:
    """Score a baseline on a split: ``link_prediction_report``'s dict plus ``method``, ``split``.

    ``run`` (WNN only) takes the features from that run's backbone instead of the catalog's
    precomputed ones; ``wnn`` overrides WNN's training settings (its seed defaults to ``seed``).
    """
    from lrprec.evaluate.linkpred import link_prediction_report
    from lrprec.evaluate.ranking import ranking_report
    from lrprec.evaluate.truth import truth_report

    method = baseline_name(name)
    if split not in EVAL_SPLITS:
        raise UsageError(f"split must be validation or test, got {split!r}")
    catalog = catalog_path if isinstance(catalog_path, Catalog) else Catalog(catalog_path)
    rels = _relations(catalog, relations)
    if run is not None and method != "wnn":
        raise UsageError("a run's features apply to the wnn baseline only")
    extra: dict = {}
    t0 = time.perf_counter()
    if method == "random":
        logits_of = lambda pairs: random_logits(pairs, seed)  # noqa: E731
        scorer = random_scorer(len(catalog), seed)
    elif method == "popularity":
        logits_of = lambda pairs: popularity_logits(catalog, pairs)  # noqa: E731
        scorer = popularity_scorer(catalog)
    elif method == "category-tree":
        logits_of = lambda pairs: category_tree_logits(catalog, pairs)  # noqa: E731
        scorer = category_tree_scorer(catalog)
        extra["category_tree"] = {"categories": len(catalog.category_names),
                                  "note": "one category per item (the imported level; use --category-level at import for deeper categories)"}
    else:
        feats = run_features(run, catalog) if run is not None else catalog_features(catalog)
        cfg = wnn or WNNConfig(seed=seed)
        model, history = train_wnn(catalog, feats, rels, cfg, log=log)

        def logits_of(pairs: Pairs) -> np.ndarray:
            out = np.zeros(len(pairs), np.float32)
            sel = np.flatnonzero(np.isin(pairs.relation, [RELATIONS.index(r) for r in rels]))
            out[sel] = wnn_logits(model, feats, pairs.take(sel))
            return out

        scorer = wnn_scorer(model, feats)
        extra["wnn"] = {"features": f"run {run}" if run is not None else "catalog", "features_dim": feats.dim,
                        "epochs": cfg.epochs, "best_epoch": history["best"]["epoch"],
                        "val_accuracy": history["best"]["val_accuracy"], "history": history["epochs"],
                        **_wnn_summary(model, rels)}
    protocols = {neg: link_prediction_report(catalog, catalog.pairs(split, neg), logits_of(catalog.pairs(split, neg)), rels)
                 for neg in ("category", "random") if neg == "category" or catalog.has_protocol(neg)}
    report = dict(protocols["category"])
    report.update({"split": split, "method": method, "dim": None, "backbone": None, "seed": seed, "negatives": "category",
                   "protocols": protocols,
                   "ranking": ranking_report(catalog, catalog.pairs(split), scorer, rels) if scorer is not None else None,
                   "truth": truth_report(catalog, scorer, rels) if scorer is not None else None,
                   "catalog": str(catalog.root), "seconds": round(time.perf_counter() - t0, 2), **extra})
    return report
