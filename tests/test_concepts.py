"""Concept directions (lrprec.explain.concepts) against hand-built linear cases, and the projection's algebra."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lrprec.errors import UsageError
from lrprec.explain.concepts import (class_means, concept_directions, layer_activations, probe_accuracy, project_out,
                                     signal_cav)
from lrprec.model.projection import projection_layer


def _linear_case(n=4000, d=12, seed=0, rho=0.9, iso=0.3):
    """a = t·u + noise, the noise strongly correlated along a direction that overlaps u (a "distractor")."""
    g = np.random.default_rng(seed)
    u = g.normal(size=d)
    u /= np.linalg.norm(u)
    w = g.normal(size=d)
    w -= (w @ u) * u
    w /= np.linalg.norm(w)
    distractor = rho * u + np.sqrt(1 - rho ** 2) * w  # the noise's big axis leans on the concept
    t = (g.random(n) < 0.4).astype(np.float64)
    noise = iso * g.normal(size=(n, d)) + 3.0 * g.normal(size=(n, 1)) * distractor
    a = t[:, None] * u + noise
    return torch.from_numpy(a), torch.from_numpy(t), torch.from_numpy(u)


def test_signal_cav_recovers_the_concept_direction_where_a_filter_drifts():
    a, t, u = _linear_case()
    v = signal_cav(a, t)
    assert abs(float(v.norm()) - 1) < 1e-9
    assert float(v @ u) > 0.99
    # a filter CAV (the weights of a linear classifier, fitted by least squares = LDA direction Σ⁻¹(μ₁ − μ₀))
    # tilts away from u to cancel the correlated noise: the reason ClArC uses the pattern CAV
    X = torch.cat([a - a.mean(0), torch.ones(len(a), 1, dtype=a.dtype)], 1)
    w = torch.linalg.lstsq(X, (t - t.mean()).unsqueeze(1)).solution[:-1, 0]
    assert float((w / w.norm()) @ u) < 0.8


def test_signal_cav_is_the_class_mean_difference_and_checks_its_input():
    a, t, _ = _linear_case(n=300)
    z0, z1 = class_means(a, t)
    diff = (z1 - z0) / (z1 - z0).norm()
    assert torch.allclose(signal_cav(a, t), diff, atol=1e-10)
    with pytest.raises(UsageError, match="both classes"):
        signal_cav(a, torch.zeros(len(a)))
    with pytest.raises(UsageError, match="0 or 1"):
        signal_cav(a, t * 2)


def test_projection_algebra():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(50, 8, generator=g, dtype=torch.float64)
    V = torch.linalg.qr(torch.randn(8, 2, generator=g, dtype=torch.float64))[0].T  # (2, 8) orthonormal rows
    ref = torch.randn(8, generator=g, dtype=torch.float64)
    p = project_out(a, V, ref)
    assert torch.allclose(project_out(p, V, ref), p, atol=1e-12)  # idempotent
    assert torch.allclose((p - ref) @ V.T, torch.zeros(50, 2, dtype=torch.float64), atol=1e-12)  # nothing left along V
    assert torch.allclose(project_out(ref.unsqueeze(0), V, ref)[0], ref, atol=1e-12)  # the reference stays
    ortho = a - (a @ V.T) @ V
    assert torch.allclose(p - (p @ V.T) @ V, ortho, atol=1e-12)  # the orthogonal complement is untouched
    layer = projection_layer(V, ref).double()  # the same map as the model's linear layer
    assert torch.allclose(layer(a), p, atol=1e-6)
    assert not any(q.requires_grad for q in layer.parameters())


def test_one_pattern_direction_leaves_a_linear_probe_at_chance_where_an_inlp_filter_does_not():
    a, t, u = _linear_case(n=2000, rho=0.8, iso=0.1)
    assert probe_accuracy(a, t) > 0.95
    V, probes = concept_directions(a, t, max_dirs=3, return_probes=True)
    assert V.shape[0] == 1 and probes[-1] <= 0.55, probes
    assert torch.allclose(V[0], signal_cav(a, t))
    # INLP's own step removes the filter (a probe's weights): the concept stays readable
    X = torch.cat([a - a.mean(0), torch.ones(len(a), 1, dtype=a.dtype)], 1)
    w = torch.linalg.lstsq(X, (t - t.mean()).unsqueeze(1)).solution[:-1, 0]
    w = w / w.norm()
    assert probe_accuracy(a - (a @ w).unsqueeze(1) * w, t) > 0.56  # measured 0.586; the pattern's leaves 0.43
    V1 = concept_directions(a, t, max_dirs=1)  # the cap is honoured
    assert V1.shape == (1, a.shape[1]) and abs(float(V1.norm()) - 1) < 1e-9


def test_layer_activations_default_and_hooked_layer(tiny_run):
    from lrprec.run import Run

    run = Run.load(tiny_run)
    x = run.inputs(np.arange(10))
    acts = layer_activations(run.model, x)
    with torch.no_grad():
        assert torch.allclose(acts, run.model.embed(x), atol=1e-6)
    mid = layer_activations(run.model, x, layer="features.2")
    assert mid.shape[0] == 10 and mid.dim() == 2
    with pytest.raises(UsageError, match="no backbone layer"):
        layer_activations(run.model, x, layer="nope")
