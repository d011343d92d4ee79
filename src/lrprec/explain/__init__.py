"""Explanations of pair predictions: our own LRP engine (rules, composites, canonizers),
first-order pair explanations for the head's targets, BiLRP, and captum baselines (SPEC §3)."""
from lrprec.explain.baselines import METHODS, attribute
from lrprec.explain.bilrp import bilrp, grid_pool, top_links
from lrprec.explain.canonizers import canonize, fold_batchnorm
from lrprec.explain.composites import COMPOSITES, DEFAULT_COMPOSITE, Composite, get_composite
from lrprec.explain.engine import LRPNet, explain
from lrprec.explain.rules import RULES, Rule
from lrprec.explain.targets import TARGETS, PairExplanation, explain_pairs

__all__ = [
    "COMPOSITES", "DEFAULT_COMPOSITE", "METHODS", "RULES", "TARGETS", "Composite", "LRPNet", "PairExplanation",
    "Rule", "attribute", "bilrp", "canonize", "explain", "explain_pairs", "fold_batchnorm", "get_composite",
    "grid_pool", "top_links",
]
