"""Property tests (hypothesis) of cheap invariants: LRP on random small networks, the index's
inner-product form, and the importers' line parsers.

* LRP-0 on a bias-free ReLU network conserves relevance (Σ R = f(x)), equals gradient × input
  (autograd, an independent computation), is linear in the output relevance and positively
  homogeneous in the input.
* The index's inner-product form Σ w p_i² − ⟨q, v_j⟩ equals the direct weighted distance, and the
  exact backend's nearest item is the brute-force nearest.
* ``parse_literal`` gives exactly ``ast.literal_eval``'s value on generated Python-literal lines
  (the 2014 metadata), and the same value as ``json.loads`` on lines that are both JSON and Python.
"""
from __future__ import annotations

import ast
import json

import numpy as np
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn

from lrprec.data.pyliteral import parse_literal
from lrprec.explain.engine import explain

FAST = settings(max_examples=20, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


# ---- LRP on random small networks --------------------------------------------------------------------
@st.composite
def relu_nets(draw) -> tuple[nn.Sequential, torch.Tensor]:
    widths = draw(st.lists(st.integers(1, 6), min_size=2, max_size=4))
    seed = draw(st.integers(0, 2**16))
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b, bias=False), nn.ReLU()]
    layers.append(nn.Linear(widths[-1], 1, bias=False))
    net = nn.Sequential(*layers).double()
    x = torch.randn(draw(st.integers(1, 3)), widths[0], dtype=torch.float64)
    # the rules' stabilizer (ε = 1e-9 for LRP-0) bends the identities only where a pre-activation is ~0: keep away from there
    h = x
    for layer in net:
        h = layer(h).detach()
        if isinstance(layer, nn.Linear):
            assume(bool((h.abs() > 1e-3).all()))
    return net, x


def _grad_x_input(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(net(x).sum(), x)
    return (x * g).detach()


@FAST
@given(relu_nets())
def test_lrp0_conserves_relevance_and_equals_gradient_times_input(case):
    net, x = case
    r = explain(net, x, "lrp0", torch.ones(x.shape[0], 1, dtype=torch.float64))
    out = net(x).detach()[:, 0]
    assert torch.allclose(r.sum(1), out, atol=1e-9, rtol=1e-5)
    assert torch.allclose(r, _grad_x_input(net, x), atol=1e-9, rtol=1e-5)


@FAST
@given(relu_nets(), st.floats(-3, 3), st.floats(-3, 3), st.floats(0.1, 10))
def test_lrp_is_linear_in_the_output_relevance_and_homogeneous_in_the_input(case, a, b, c):
    net, x = case
    torch.manual_seed(0)
    g1, g2 = torch.randn(x.shape[0], 1, dtype=torch.float64), torch.randn(x.shape[0], 1, dtype=torch.float64)
    for rule in ("lrp0", "epsilon"):
        r1, r2 = explain(net, x, rule, g1), explain(net, x, rule, g2)
        assert torch.allclose(explain(net, x, rule, a * g1 + b * g2), a * r1 + b * r2, atol=1e-9, rtol=1e-5)
    ones = torch.ones(x.shape[0], 1, dtype=torch.float64)
    assert torch.allclose(explain(net, c * x, "lrp0", ones), c * explain(net, x, "lrp0", ones), atol=1e-9, rtol=1e-5)


# ---- the index's inner-product form -------------------------------------------------------------------
@st.composite
def embeddings(draw) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n, k = draw(st.integers(2, 40)), draw(st.integers(1, 8))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([0.1, 1.0, 10.0]))
    p = (rng.standard_normal((n, k)) * scale).astype(np.float32)
    w = (rng.standard_normal(k) ** 2).astype(np.float32)  # θ_u²
    q = (rng.standard_normal((draw(st.integers(1, 4)), k)) * scale).astype(np.float32)
    return p, w, q


@settings(max_examples=60, deadline=None, derandomize=True)
@given(embeddings())
def test_the_inner_product_form_equals_the_weighted_distance(case):
    from lrprec.recommend.index import augment, query_constants, query_vectors, weighted_distance

    p, w, q = case
    ip = query_constants(q, w)[:, None] - query_vectors(q, w).astype(np.float64) @ augment(p).astype(np.float64).T
    direct = weighted_distance(q[:, None, :], p[None, :, :], w)
    scale = query_constants(q, w)[:, None] + (w * p.astype(np.float64) ** 2).sum(1)[None, :]  # the size of the cancelling terms
    assert np.all(np.abs(ip - direct) <= 1e-5 * scale + 1e-6)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(embeddings())
def test_the_exact_index_finds_the_brute_force_nearest(case):
    from lrprec.recommend.index import ExactIndex, weighted_distance

    p, w, q = case
    res = ExactIndex(p).search(q, w, k=1)
    direct = weighted_distance(q[:, None, :], p[None, :, :], w)
    assert np.allclose(res.distances[:, 0], direct.min(1), rtol=1e-9, atol=1e-12)
    assert np.allclose(direct[np.arange(len(q)), res.ids[:, 0]], direct.min(1), rtol=1e-9, atol=1e-12)


# ---- the importers' line parsers ---------------------------------------------------------------------
_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12) | st.sampled_from(
    ["", "'", '"', "\\", "it's", 'say "hi"', "a\\nb", "True", "None", "null", "é ü 漢字 🙂", "\t\n"])
_scalars = st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=False, allow_infinity=False) | _text
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4), max_leaves=12)
_records = st.dictionaries(_text, _values, max_size=5)


@settings(max_examples=80, deadline=None, derandomize=True)
@given(_records)
def test_parse_literal_equals_literal_eval_on_python_literal_lines(record):
    line = repr(record)  # what the 2014 metadata files hold: one Python dict literal per line
    assert parse_literal(line) == ast.literal_eval(line) == record


@settings(max_examples=80, deadline=None, derandomize=True)
@given(st.recursive(st.none() | st.integers(-10**6, 10**6) | _text, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
                    max_leaves=12))
def test_parse_literal_agrees_with_json_on_lines_that_are_both(value):
    line = json.dumps(value, ensure_ascii=False)
    try:
        expected = ast.literal_eval(line)
    except (ValueError, SyntaxError):  # null/true/false are JSON, not Python: parse_literal must refuse them too
        try:
            parse_literal(line)
        except (ValueError, SyntaxError):
            return
        raise AssertionError(f"parse_literal accepted what literal_eval refuses: {line!r}")
    assert parse_literal(line) == expected == json.loads(line)
