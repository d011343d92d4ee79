"""The explainer registry: every explanation method by name, as one callable shape.

``lrp`` (the default composite), ``lrp-<composite>``, ``bilrp`` (BiLRP marginals) and the captum
baselines ``saliency``, ``gradxinput``, ``integrated_gradients`` plus a ``random`` map; each
explainer is ``explainer(model, x_a, x_b, relation, user) -> (relevance_a, relevance_b)``.
The faithfulness evaluation, the CLI and the web resolve method names here.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch

from lrprec.defaults import DEFAULT_COMPOSITE
from lrprec.errors import UsageError
from lrprec.model.pair import PairModel

DEFAULT_METHOD = "lrp"
BASELINE_METHODS: tuple[str, ...] = ("saliency", "gradxinput", "integrated_gradients", "random")

Explainer = Callable[[PairModel, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""``explainer(model, x_a, x_b, relation, user) -> (relevance_a, relevance_b)``, each shaped like its input."""


# ---- explanation methods ------------------------------------------------------------------
def default_explainers(target: str = "similarity", seed: int = 0, batch_size: int = 64) -> tuple[dict[str, Explainer], dict[str, str]]:
    """The methods :mod:`lrprec.explain` offers, as explainers, and why any are missing.

    Returns ``(explainers, unavailable)``; ``unavailable`` maps a method name to the reason
    (e.g. a module that cannot be imported), so a request for it gets a clear error.
    """
    found: dict[str, Explainer] = {}
    missing: dict[str, str] = {}
    try:
        from lrprec.explain.targets import explain_pairs
    except ImportError as exc:
        missing[DEFAULT_METHOD] = f"lrprec.explain.targets cannot be imported ({exc})"
    else:
        def lrp(composite: str) -> Explainer:
            def run(model: PairModel, x_a: torch.Tensor, x_b: torch.Tensor, relation: torch.Tensor, user: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                res = explain_pairs(model, x_a, x_b, relation, user, target=target, composite=composite, batch_size=batch_size)
                return torch.as_tensor(res.relevance_a), torch.as_tensor(res.relevance_b)
            return run

        found[DEFAULT_METHOD] = lrp(DEFAULT_COMPOSITE)
        try:
            from lrprec.explain.composites import COMPOSITES
        except ImportError as exc:
            missing["lrp-<composite>"] = f"lrprec.explain.composites cannot be imported ({exc})"
        else:
            for name in COMPOSITES:
                if name != DEFAULT_COMPOSITE:
                    found[f"lrp-{name}"] = lrp(name)
    bil = _bilrp_explainer(target, batch_size)
    if isinstance(bil, str):
        missing["bilrp"] = bil
    else:
        found["bilrp"] = bil
    try:
        from lrprec.explain.baselines import METHODS, attribute
    except ImportError as exc:
        for name in BASELINE_METHODS:
            missing[name] = f"lrprec.explain.baselines cannot be imported ({exc})"
    else:
        def baseline(method: str) -> Explainer:
            def run(model: PairModel, x_a: torch.Tensor, x_b: torch.Tensor, relation: torch.Tensor, user: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                ra, rb = attribute(model, x_a, x_b, relation, user, method, target=target, seed=seed)
                return torch.as_tensor(ra), torch.as_tensor(rb)
            return run

        for name in METHODS:
            found[name] = baseline(name)
    return found, missing


def _bilrp_explainer(target: str, batch_size: int) -> Explainer | str:
    """BiLRP marginals as a first-order map, or the reason they are unavailable.

    The marginal of R_pp' over the other image's pixels is what image a's pixels contribute
    to the similarity through their matches in b. The adapter uses ``marginals`` from
    :mod:`lrprec.explain.bilrp` when that module provides such a function.
    """
    if target != "similarity":
        return "BiLRP explains the similarity target only"
    try:
        import importlib

        bilrp_mod = importlib.import_module("lrprec.explain.bilrp")  # the package re-exports a function of that name
    except ImportError as exc:
        return f"lrprec.explain.bilrp cannot be imported ({exc})"
    marginals = getattr(bilrp_mod, "marginals", None)
    if marginals is None:
        return "lrprec.explain.bilrp offers no pixel marginals (function 'marginals')"

    def run(model: PairModel, x_a: torch.Tensor, x_b: torch.Tensor, relation: torch.Tensor, user: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ra, rb = marginals(model, x_a, x_b, relation, user, composite=DEFAULT_COMPOSITE, batch_size=batch_size)
        return torch.as_tensor(ra), torch.as_tensor(rb)

    return run


def resolve_methods(methods: Sequence[str] | str | None, explainers: Mapping[str, Explainer], unavailable: Mapping[str, str] | None = None) -> list[str]:
    """Requested method names, checked; ``None`` means every available method (``lrp`` first)."""
    unavailable = unavailable or {}
    if methods is None:
        names = list(explainers)
        if DEFAULT_METHOD in names:
            names.remove(DEFAULT_METHOD)
            names.insert(0, DEFAULT_METHOD)
        if not names:
            by_reason: dict[str, list[str]] = {}
            for k, v in unavailable.items():
                by_reason.setdefault(v, []).append(k)
            raise UsageError("no explanation method is available: " + "; ".join(f"{', '.join(ks)}: {v}" for v, ks in by_reason.items()))
        return names
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    if not methods:
        raise UsageError("no methods given")
    out: list[str] = []
    for m in methods:
        if m in explainers:
            if m not in out:
                out.append(m)
        elif m in unavailable:
            raise UsageError(f"method {m!r} is not available: {unavailable[m]}")
        else:
            raise UsageError(f"unknown method {m!r}; available methods: {', '.join(explainers) or '(none)'}")
    return out


def _explain(explainer: Explainer, model: PairModel, x_a: torch.Tensor, x_b: torch.Tensor, relation: torch.Tensor, user: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Run an explainer over the pairs in chunks (bounded memory for integrated gradients)."""
    ras, rbs = [], []
    for s in range(0, x_a.shape[0], batch_size):
        sl = slice(s, s + batch_size)
        ra, rb = explainer(model, x_a[sl].clone(), x_b[sl].clone(), relation[sl].clone(), user[sl].clone())
        if tuple(ra.shape[-2:]) != tuple(x_a.shape[-2:]) or tuple(rb.shape[-2:]) != tuple(x_b.shape[-2:]):
            raise UsageError(f"an explainer returned relevance of shape {tuple(ra.shape)} for inputs {tuple(x_a[sl].shape)}")
        ras.append(ra.detach().float().cpu())
        rbs.append(rb.detach().float().cpu())
    return torch.cat(ras), torch.cat(rbs)
