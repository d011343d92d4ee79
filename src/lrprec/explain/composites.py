"""Composites: which rule explains which layer, chosen by layer type and position (SPEC §3).

A composite maps the first parameterized layer of the backbone (the input layer), every
other convolution, and every dense layer (the backbone's classifier and the projection E)
to a rule. Names follow the LRP literature and zennit's composite names.
"""
from __future__ import annotations

from dataclasses import dataclass

from lrprec.errors import UsageError
from lrprec.explain import rules
from lrprec.explain.rules import Rule


@dataclass(frozen=True)
class Composite:
    """Rule per layer: ``first`` (input layer, if set), else ``conv`` for Conv2d and ``dense`` for Linear/E."""

    name: str
    conv: Rule
    dense: Rule
    first: Rule | None = None
    description: str = ""
    #: ε of residual sums (ResNet blocks): R_a = a·R/(z + ε·sign z); tiny by default, so they conserve
    sum_epsilon: float = rules.TINY

    def __post_init__(self) -> None:
        for role, rule in (("conv", self.conv), ("dense", self.dense)):
            if rule.input_layer_only:
                raise UsageError(f"composite {self.name!r}: rule {rule.name!r} is for the input layer only, not for {role}")

    def rule_for(self, kind: str, is_first: bool) -> Rule:
        """The rule for a layer of ``kind`` ('conv2d' or 'linear'); ``is_first``: the backbone's input layer."""
        if is_first and self.first is not None:
            return self.first
        return self.conv if kind == "conv2d" else self.dense


def _single(name: str, rule: Rule, text: str) -> Composite:
    return Composite(name, conv=rule, dense=rule, description=text)


COMPOSITES: dict[str, Composite] = {
    "lrp0": _single("lrp0", rules.lrp0(), "the paper's z-rule (eq 4, Bach et al. 2015) on every layer, each bias kept in z_k (it keeps its share)"),
    "epsilon": _single("epsilon", rules.epsilon(), "LRP-ε (ε=1e-6) on every layer, biases kept"),
    "gamma": _single("gamma", rules.gamma(), "LRP-γ (γ=0.25) on every layer"),
    "zplus": _single("zplus", rules.zplus(), "z⁺ (α1β0) on every layer"),
    "epsilon-plus-flat": Composite("epsilon-plus-flat", conv=rules.zplus(), dense=rules.epsilon(), first=rules.flat(),
                                   description="ε on dense layers, z⁺ on convolutions, flat on the input layer"),
    "epsilon-gamma-box": Composite("epsilon-gamma-box", conv=rules.gamma(), dense=rules.epsilon(), first=rules.zbox(),
                                   description="ε on dense layers, γ on convolutions, zᴮ (pixel box) on the input layer"),
}

# The default is chosen by measurement on validation pairs: lrprec.defaults says how.
from lrprec.defaults import DEFAULT_COMPOSITE  # noqa: E402,F401 (re-exported; one source, torch-free for the CLI)


def get_composite(name: str | Composite) -> Composite:
    """A composite by name (or the composite itself); ValueError naming the known ones otherwise."""
    if isinstance(name, Composite):
        return name
    try:
        return COMPOSITES[name]
    except (KeyError, TypeError):
        raise UsageError(f"unknown composite/rule {name!r}; known: {', '.join(COMPOSITES)}") from None
