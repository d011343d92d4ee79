"""How faithful are the explanations? Perturbation AOPC, localization and a leaderboard (SPEC §4).

For the test pairs the model correctly predicts as related, every explanation method
explains the same pairs and the same target; then the explained image is perturbed region
by region (:mod:`lrprec.evaluate.perturbation`) in the method's MoRF and LRF orders and in
a random order, and the pair is re-scored after every step. From the curves:

* AOPC of P(related) per method and order, with a seeded 95% bootstrap interval (a better
  explanation has a larger MoRF AOPC and a larger MoRF − random gap);
* the paper's Figure 3 view: after k steps, the fraction of pairs still predicted related
  and which relation head the model now predicts (the trained head with the highest P
  above 0.5, or none) — per category of the perturbed item and averaged over categories;
* localization against ground-truth masks where the catalog has them
  (:mod:`lrprec.evaluate.localization`).

The other image, the relation and the user stay fixed while one image is perturbed, so
the other image's embedding is computed once per pair and every perturbed image costs a
single backbone pass; all relation heads are scored from that pass at once.

Explanation methods come from the registry :mod:`lrprec.explain.methods` (names: ``lrp`` for the default
composite, ``lrp-<composite>`` for the others, ``bilrp`` for BiLRP marginals when that
module offers them, and the baselines ``saliency``, ``gradxinput``,
``integrated_gradients``, ``random``). Callers and tests can pass their own ``explainers``.
"""
from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import torch

from lrprec.data.catalog import RELATIONS, Pairs
from lrprec.evaluate.agreement import ranking_agreement
from lrprec.evaluate.imputers import DEFAULT_IMPUTERS, IMPUTERS, make_imputer
from lrprec.evaluate.localization import mask_area_fraction, pointing_game, relevance_mass, resize_masks
from lrprec.evaluate.perturbation import ORDERS, aopc, bootstrap_ci, n_regions, perturbation_curves
from lrprec.evaluate.randomization import DEFAULT_THRESHOLD, randomization_check
from lrprec.evaluate.srg import srg, srg_curves
from lrprec.errors import UsageError
from lrprec.explain.methods import DEFAULT_METHOD, Explainer, _explain, default_explainers, resolve_methods
from lrprec.jsonable import plain
from lrprec.model.pair import PairModel

if TYPE_CHECKING:
    from lrprec.run import Run

IMAGES = ("a", "b", "both")

# ---- scoring ------------------------------------------------------------------------------
def pair_scorer(model: PairModel, x_other: torch.Tensor, user: torch.Tensor, batch_size: int = 256,
                side: torch.Tensor | None = None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``score_fn`` for :func:`perturbation_curves`: logits of all relation heads, (B, R).

    Row n of a batch is paired with ``x_other[n]`` and ``user[n]``; the other image's
    projections and the θs are computed once here, so each perturbed image costs one
    backbone pass. ``side[n]`` says which image of the pair row n perturbs: 0 the query
    (projected by E_r), 1 the partner (by F_r under an asymmetric head); default 0. For a
    metric head both sides project alike and the side does not matter.
    """
    side_t = torch.zeros(x_other.shape[0], dtype=torch.bool) if side is None else torch.as_tensor(side).bool()
    with torch.no_grad():
        feats = torch.cat([model.embed(x_other[s:s + batch_size]) for s in range(0, x_other.shape[0], batch_size)])
        as_query, as_partner = model.project_all(feats), model.project_partner_all(feats)
        other = torch.where(side_t.view(-1, 1, 1), as_query, as_partner)  # the unperturbed image takes the other role
        theta = model.theta_all(user)

    def score(xb: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        f = model.embed(xb)
        a = torch.where(side_t[rows].view(-1, 1, 1), model.project_partner_all(f), model.project_all(f))
        return model.logits_all(a, other[rows], theta[rows])  # (a − b)² is symmetric: the order of the two is free

    return score


def correct_positive_pairs(run: "Run", n: int, seed: int = 0, batch_size: int = 256, split: str = "test") -> tuple[Pairs, np.ndarray]:
    """The first ``n`` positives of ``split`` (of trained relations) predicted related, after a seeded shuffle.

    Returns the pairs and their P(related). Scores the shuffled positives a batch at a
    time and stops once ``n`` correct ones are found. Raises ValueError when there are none.
    """
    if n <= 0:
        raise UsageError(f"--pairs must be positive, got {n}")
    test = run.catalog.pairs(split)
    trained = [RELATIONS.index(r) for r in run.relations]
    pos = test.take(np.flatnonzero((test.label == 1) & np.isin(test.relation, trained)))
    pos = pos.take(np.random.default_rng(seed).permutation(len(pos)))
    model: PairModel = run.model
    model.eval()
    chosen: list[np.ndarray] = []
    probs: list[np.ndarray] = []
    found = 0
    with torch.no_grad():
        for s in range(0, len(pos), batch_size):
            part = pos.take(slice(s, s + batch_size))
            logit = model(run.inputs(part.a), run.inputs(part.b), torch.from_numpy(part.relation), torch.from_numpy(part.user))
            p = torch.sigmoid(logit).double().numpy()
            ok = np.flatnonzero(p > 0.5)[: n - found]
            chosen.append(s + ok)
            probs.append(p[ok])
            found += ok.size
            if found >= n:
                break
    idx = np.concatenate(chosen) if chosen else np.zeros(0, np.int64)
    if idx.size == 0:
        raise UsageError(f"no correctly predicted positive {split} pairs to evaluate ({len(pos)} positive {split} pairs of the trained relations, none with P > 0.5)")
    return pos.take(idx), np.concatenate(probs)


def default_region(size: int) -> int:
    """Region side S for an input size: 4 px at 64 px (size / 16), 9 px from 224 px on (SPEC §4)."""
    return 9 if size >= 224 else max(1, round(size / 16))


# ---- curve summaries ----------------------------------------------------------------------
def _by_category(indicator: np.ndarray, cats: np.ndarray, names: list[str]) -> dict[str, list[float]]:
    """Per-category mean of an (M, L+1) indicator, plus ``mean`` = average over the categories."""
    out: dict[str, list[float]] = {}
    for c in np.unique(cats):
        out[names[c]] = indicator[cats == c].mean(0).tolist()
    out["mean"] = np.mean([out[names[c]] for c in np.unique(cats)], axis=0).tolist()
    return out


def _predicted_relation(p_all: np.ndarray, heads: list[int]) -> np.ndarray:
    """(M, L+1) index into ``heads`` of the predicted relation, or -1 for none (no P above 0.5)."""
    sub = p_all[..., heads]
    best = sub.argmax(-1)
    return np.where(np.take_along_axis(sub, best[..., None], -1)[..., 0] > 0.5, best, -1)


def _paper_view(p_all: np.ndarray, own: np.ndarray, relation: np.ndarray, cats: np.ndarray, cat_names: list[str], heads: list[int]) -> dict[str, Any]:
    pred = _predicted_relation(p_all, heads)
    still = (own > 0.5).astype(np.float64)
    same = (np.asarray(heads)[np.clip(pred, 0, None)] == relation[:, None]) & (pred >= 0)
    predicted: dict[str, dict[str, list[float]]] = {}
    labels = [RELATIONS[h] for h in heads] + ["none"]
    per_label = {lab: _by_category((pred == (k if lab != "none" else -1)).astype(np.float64), cats, cat_names) for k, lab in enumerate(labels)}
    for cat in per_label[labels[0]]:
        predicted[cat] = {lab: per_label[lab][cat] for lab in labels}
    return {
        "still_related": _by_category(still, cats, cat_names),
        "still_original_relation": _by_category(same.astype(np.float64), cats, cat_names),
        "predicted_relation": predicted,
    }


def _finite(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


# ---- orchestration ------------------------------------------------------------------------
def _checked_options(run: "Run", image: str, orders: Sequence[str], imputers: Sequence[str], srg_steps: int,
                     randomization_pairs: int, region: int | None, steps: int) -> tuple[list[str], list[str], int, int, int]:
    """(orders, imputers, input size, region side, number of regions), checked before any model work (UsageError)."""
    if image not in IMAGES:
        raise UsageError(f"unknown image {image!r}; choose a, b or both")
    orders = list(dict.fromkeys(orders))
    for o in orders:
        if o not in ORDERS:
            raise UsageError(f"unknown order {o!r}; choose from {', '.join(ORDERS)}")
    if not orders:
        raise UsageError("no orders given")
    imputers = list(dict.fromkeys(imputers))
    if not imputers:
        raise UsageError("no imputers given")
    for name in imputers:
        if name not in IMPUTERS:
            raise UsageError(f"unknown imputer {name!r}; choose from {', '.join(IMPUTERS)}")
    if srg_steps <= 0:
        raise UsageError(f"--srg-steps must be positive, got {srg_steps}")
    if randomization_pairs < 0:
        raise UsageError(f"--randomization-pairs must be >= 0, got {randomization_pairs}")
    if run.model.backbone.kind != "image":
        raise UsageError("pixel perturbation needs an image model; this run reads precomputed features")
    size = run.input_size or run.catalog.image_size
    if size is None:
        raise UsageError("the run's catalog has no images")
    region = default_region(int(size)) if region is None else int(region)
    total_regions = n_regions(int(size), int(size), region)
    if region <= 0 or steps < 0 or steps > total_regions:
        raise UsageError(f"--steps {steps} must be between 0 and the {total_regions} regions of {region}x{region} pixels in a {size}x{size} image")
    return orders, imputers, int(size), region, total_regions


class _Bench:
    """The perturbed side(s) of the selected pairs, their scorer and imputers, and what every method's metrics share.

    Curves and SRG are checked against the scores the pairs were selected with (an explainer must not change the
    model); the random order's curves ignore the relevance and are computed once per imputer."""

    def __init__(self, run: "Run", sel: Pairs, p_sel: np.ndarray, image: str, imputers: list[str], steps: int, region: int,
                 srg_steps: int, seed: int, batch_size: int):
        model: PairModel = run.model
        self.model, self.steps, self.region, self.srg_steps, self.seed, self.batch_size = model, steps, region, srg_steps, seed, batch_size
        self.x_a, self.x_b = run.inputs(sel.a), run.inputs(sel.b)
        self.relation, self.user = torch.from_numpy(sel.relation), torch.from_numpy(sel.user)
        self.sides = ("a", "b") if image == "both" else (image,)
        self.x = self.on_sides(self.x_a, self.x_b)
        x_other = torch.cat([self.x_b if s == "a" else self.x_a for s in self.sides])
        usr_all = torch.cat([self.user] * len(self.sides))
        self.items = np.concatenate([sel.a if s == "a" else sel.b for s in self.sides])
        self.cats = np.asarray(run.catalog.category_codes)[self.items]
        self.cat_names = list(run.catalog.category_names)
        self.heads = [RELATIONS.index(r) for r in run.relations]
        self.rel_np = torch.cat([self.relation] * len(self.sides)).numpy()
        self.m = self.x.shape[0]
        self.p0_expected = np.concatenate([p_sel] * len(self.sides))
        bounds = model.backbone.input_bounds()
        self.imps = {name: make_imputer(name, self.x, bounds, seed) for name in imputers}  # the same noise for every method and order
        side_all = torch.cat([torch.full((len(sel),), s == "b", dtype=torch.bool) for s in self.sides])
        self.score = pair_scorer(model, x_other, usr_all, batch_size, side=side_all)
        self.masks = self._masks(run)
        self.evaluated, self.t_perturb = 0, 0.0
        self.random_curves: dict[str, np.ndarray] = {}

    def _masks(self, run: "Run") -> torch.Tensor | None:
        """Ground-truth masks of the perturbed images, at the input size (None without masks)."""
        if run.catalog.masks is None:
            return None
        uniq = np.sort(np.unique(self.items))
        masks = resize_masks(np.asarray(run.catalog.masks[uniq]), self.x.shape[-2], self.x.shape[-1])
        return masks[torch.from_numpy(np.searchsorted(uniq, self.items))]

    def on_sides(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Side a's and/or side b's tensor, stacked in the order of the perturbed sides."""
        return torch.cat([a if s == "a" else b for s in self.sides])

    def check(self, c: torch.Tensor) -> np.ndarray:
        """(M, L+1, R) logits of every head, after checking the unperturbed column against the selection's scores."""
        self.evaluated += c.shape[0] * c.shape[1]
        arr = c.double().numpy()
        p0 = 1 / (1 + np.exp(-arr[np.arange(self.m), 0, self.rel_np]))
        if not np.allclose(p0, self.p0_expected, atol=1e-4):
            raise RuntimeError("the unperturbed scores differ from those the pairs were selected with: an explainer changed the model")
        return arr

    def curves(self, rel_map: torch.Tensor, order: str, imputer: str) -> np.ndarray:
        """Perturbation curves (logits) of one order and imputer; the random order's are shared by all methods."""
        if order == "random":
            if imputer not in self.random_curves:
                self.random_curves[imputer] = self._timed_curves(None, "random", imputer)
            return self.random_curves[imputer]
        return self._timed_curves(rel_map, order, imputer)

    def _timed_curves(self, rel_map: torch.Tensor | None, order: str, imputer: str) -> np.ndarray:
        t0 = time.perf_counter()
        c = perturbation_curves(self.score, self.x, rel_map, self.steps, self.region, order=order, seed=self.seed,
                                batch_size=self.batch_size, imputer=self.imps[imputer])
        self.t_perturb += time.perf_counter() - t0
        return self.check(c)

    def srg(self, rel_map: torch.Tensor, imputer: str) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """(MIF logits, LIF logits, regions removed per step) for symmetric relevance gain."""
        t0 = time.perf_counter()
        mif, lif, counts = srg_curves(self.score, self.x, rel_map, self.region, self.srg_steps, self.imps[imputer], self.batch_size)
        self.t_perturb += time.perf_counter() - t0
        return self.check(mif), self.check(lif), counts

    def own(self, logits: np.ndarray) -> np.ndarray:
        """(M, L+1) logit of each pair's own relation."""
        return logits[np.arange(self.m), :, self.rel_np]


def _new_entry() -> dict[str, Any]:
    return {"aopc": {}, "aopc_ci95": {}, "aopc_logit": {}, "still_related_mean": {},
            "srg": {}, "srg_ci95": {}, "srg_logit": {}, "srg_by_relation": {}, "aopc_by_imputer": {}}


def _aopc_entries(bench: _Bench, name: str, rel_map: torch.Tensor, orders: list[str], imp: str, primary: bool, entry: dict,
                  curves_mean: dict, arrays: dict, is_ref: bool, paper: dict | None, say: Callable[[str], None]) -> dict | None:
    """AOPC per order under one imputer (and, for the first imputer, its intervals, curves and the paper's view);
    returns the paper's view (the reference method's MoRF order, else its first order)."""
    entry["aopc_by_imputer"][imp] = {}
    for order in orders:
        say(f"perturbing: {name}, {order}, {imp} fill")
        logits = bench.curves(rel_map, order, imp)
        own_logit = bench.own(logits)
        own_p = 1 / (1 + np.exp(-own_logit))
        per_pair = aopc(own_p)
        entry["aopc_by_imputer"][imp][order] = float(per_pair.mean())
        arrays[f"{name}/{imp}/{order}/probability"] = own_p.astype(np.float32)
        if not primary:
            continue
        entry["aopc"][order] = float(per_pair.mean())
        entry["aopc_ci95"][order] = list(bootstrap_ci(per_pair, seed=bench.seed))
        entry["aopc_logit"][order] = float(aopc(own_logit).mean())
        view = _paper_view(1 / (1 + np.exp(-logits)), own_p, bench.rel_np, bench.cats, bench.cat_names, bench.heads)
        entry["still_related_mean"][order] = view["still_related"]["mean"]
        if is_ref and (order == "morf" or paper is None):
            paper = {"method": name, "order": order, **view}
        curves_mean[name][order] = {"probability": own_p.mean(0).tolist(), "logit": own_logit.mean(0).tolist()}
        arrays[f"{name}/{order}/probability"] = own_p.astype(np.float32)
        arrays[f"{name}/{order}/aopc"] = per_pair
    return paper


def _srg_entries(bench: _Bench, name: str, rel_map: torch.Tensor, imp: str, entry: dict, srg_mean: dict, arrays: dict) -> list[int]:
    """Symmetric relevance gain under one imputer; returns the regions removed per step."""
    mif, lif, counts = bench.srg(rel_map, imp)
    total = n_regions(bench.x.shape[-2], bench.x.shape[-1], bench.region)
    mif_p, lif_p = 1 / (1 + np.exp(-bench.own(mif))), 1 / (1 + np.exp(-bench.own(lif)))
    per_pair = srg(mif_p, lif_p, counts, total)
    entry["srg"][imp] = float(per_pair.mean())
    entry["srg_ci95"][imp] = list(bootstrap_ci(per_pair, seed=bench.seed))
    entry["srg_logit"][imp] = float(srg(bench.own(mif), bench.own(lif), counts, total).mean())
    entry["srg_by_relation"][imp] = {RELATIONS[r]: float(per_pair[bench.rel_np == r].mean()) for r in np.unique(bench.rel_np)}
    srg_mean[name][imp] = {"mif": mif_p.mean(0).tolist(), "lif": lif_p.mean(0).tolist()}
    arrays[f"{name}/{imp}/srg"] = per_pair
    return counts


def _randomization_entry(bench: _Bench, explainer: Explainer, n_rand: int, explain_batch_size: int, threshold: float) -> dict | None:
    """The cascading randomization check on the first ``n_rand`` pairs (None when 0)."""
    if n_rand <= 0:
        return None
    rsub = slice(0, n_rand)

    def explain_with(mdl: torch.nn.Module) -> torch.Tensor:
        ra_, rb_ = _explain(explainer, mdl, bench.x_a[rsub], bench.x_b[rsub], bench.relation[rsub], bench.user[rsub], explain_batch_size)  # type: ignore[arg-type]
        return bench.on_sides(ra_, rb_)

    return randomization_check(bench.model, explain_with, seed=bench.seed, threshold=threshold)


def faithfulness(
    run: "Run",
    pairs: int = 100,
    steps: int = 50,
    region: int | None = None,
    orders: Sequence[str] = ORDERS,
    methods: Sequence[str] | str | None = None,
    image: str = "a",
    seed: int = 0,
    batch_size: int = 256,
    target: str = "similarity",
    explain_batch_size: int = 32,
    explainers: Mapping[str, Explainer] | None = None,
    progress: Callable[[str], None] | None = None,
    split: str = "validation",
    imputers: Sequence[str] = DEFAULT_IMPUTERS,
    srg_steps: int = 16,
    randomization_pairs: int = 8,
    randomization_threshold: float = DEFAULT_THRESHOLD,
) -> dict[str, Any]:
    """Perturbation AOPC, the paper's Figure 3 view and localization for each method on one run.

    ``run`` is a :class:`lrprec.run.Run` (anything with ``model``, ``catalog``,
    ``relations`` and ``inputs(rows)``). ``image`` picks the perturbed side: ``a``, ``b``,
    or ``both`` (each pair contributes one curve per side; the other side stays intact).
    ``explainers`` replaces the methods of :mod:`lrprec.explain` (name -> explainer).
    ``split`` picks the pairs: ``validation`` (the default, for choosing methods and
    composites) or ``test`` (for reporting). Every metric is computed under each of
    ``imputers`` (:mod:`lrprec.evaluate.imputers`); today's ``aopc`` keys hold the first.
    Per method: ``srg`` / ``srg_ci95`` / ``srg_logit`` / ``srg_by_relation`` keyed by imputer
    (symmetric relevance gain over ``srg_steps`` fractions, :mod:`lrprec.evaluate.srg`),
    ``aopc_by_imputer`` and ``randomization`` (cascading backbone randomization on the first
    ``randomization_pairs`` pairs, 0 to skip; ``passed`` says whether the maps changed,
    :mod:`lrprec.evaluate.randomization`). At the top: ``imputers`` and ``ranking_tau``
    (Kendall τ of the SRG method ranking between imputers, averaged over imputer pairs;
    ``ranking_tau_pairs`` lists each). Also ``curves`` (mean P(related) and logit per step
    for each method and order), ``srg_curves``, ``aopc_logit``, ``still_original_relation``
    and run details; per-pair arrays are under the private key ``_arrays`` (dropped by
    :func:`to_json`). Since the distance is c_r − logit, its curves and SRG are the logit's
    with the sign flipped (``srg_logit``).
    Raises ValueError for bad arguments, steps beyond the number of regions, unknown
    methods and runs with no correct positive pairs.
    """
    t_start = time.perf_counter()
    say = progress or (lambda msg: None)
    orders, imputers, size, region, total_regions = _checked_options(run, image, orders, imputers, srg_steps, randomization_pairs,
                                                                     region, steps)
    if explainers is None:
        explainers, unavailable = default_explainers(target=target, seed=seed, batch_size=explain_batch_size)
    else:
        unavailable = {}
    names = resolve_methods(methods, explainers, unavailable)
    if hasattr(say, "start"):  # a progress display with an estimate of the time left (lrprec.evaluate.progress)
        say.start(1 + len(names) * (1 + len(imputers) * (len(orders) + 1) + (randomization_pairs > 0)))

    run.model.eval()
    say(f"selecting correctly predicted positive {split} pairs")
    sel, p_sel = correct_positive_pairs(run, pairs, seed=seed, batch_size=batch_size, split=split)
    bench = _Bench(run, sel, p_sel, image, imputers, steps, region, srg_steps, seed, batch_size)
    n_pairs = bench.m // len(bench.sides)
    n_rand = min(randomization_pairs, n_pairs)
    srg_counts: list[int] = []
    result_methods: dict[str, Any] = {}
    curves_mean: dict[str, Any] = {}
    srg_mean: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}
    paper: dict[str, Any] | None = None
    ref = DEFAULT_METHOD if DEFAULT_METHOD in names else names[0]
    for name in names:
        say(f"explaining {n_pairs} pairs with {name}")
        rel_map = bench.on_sides(*_explain(explainers[name], bench.model, bench.x_a, bench.x_b, bench.relation, bench.user, explain_batch_size))
        entry = _new_entry()
        curves_mean[name], srg_mean[name] = {}, {}
        for imp in imputers:
            paper = _aopc_entries(bench, name, rel_map, orders, imp, imp == imputers[0], entry, curves_mean, arrays, name == ref, paper, say)
            say(f"symmetric relevance gain: {name}, {imp} fill")
            srg_counts = _srg_entries(bench, name, rel_map, imp, entry, srg_mean, arrays)
        if "morf" in entry["aopc"] and "random" in entry["aopc"]:
            entry["gap"] = entry["aopc"]["morf"] - entry["aopc"]["random"]
        if n_rand > 0:
            say(f"randomization check: {name} ({n_rand} pairs)")
        entry["randomization"] = _randomization_entry(bench, explainers[name], n_rand, explain_batch_size, randomization_threshold)
        masks = bench.masks
        entry["relevance_mass"] = None if masks is None else _finite(float(np.nanmean(relevance_mass(rel_map, masks))))
        entry["pointing_game"] = None if masks is None else _finite(float(np.nanmean(pointing_game(rel_map, masks))))
        result_methods[name] = entry
    assert paper is not None
    taus = ranking_agreement({imp: {k: e["srg"][imp] for k, e in result_methods.items()} for imp in imputers})
    finite_taus = [t for t in taus.values() if math.isfinite(t)]
    total = n_regions(bench.x.shape[-2], bench.x.shape[-1], region)
    return {
        "pairs": n_pairs,
        "split": split,
        "imputers": imputers,
        "ranking_tau": float(np.mean(finite_taus)) if finite_taus else None,
        "ranking_tau_pairs": taus,
        "srg_steps": len(srg_counts) - 1,
        "srg_fractions": [c / total for c in srg_counts],
        "srg_curves": srg_mean,
        "randomization": {"pairs": n_rand, "threshold": randomization_threshold},
        "steps": steps,
        "region": region,
        "image": image,
        "orders": orders,
        "target": target,
        "seed": seed,
        "input_size": size,
        "regions": total_regions,
        "mask_area_fraction": None if bench.masks is None else float(mask_area_fraction(bench.masks).mean()),
        "methods": result_methods,
        "reference": {"method": paper["method"], "order": paper["order"]},
        "still_related": paper["still_related"],
        "still_original_relation": paper["still_original_relation"],
        "predicted_relation": paper["predicted_relation"],
        "curves": curves_mean,
        "timing": {
            "seconds": time.perf_counter() - t_start,
            "perturbation_seconds": bench.t_perturb,
            "images_scored": bench.evaluated,
            "images_per_second": bench.evaluated / bench.t_perturb if bench.t_perturb > 0 else None,
        },
        "unavailable_methods": dict(unavailable),
        "_arrays": arrays,
    }


def to_json(result: Mapping[str, Any]) -> dict[str, Any]:
    """The result without private keys and with NaN/inf as null, ready for ``json.dumps``."""
    return plain(result, drop_private=True)
