"""Directional derivatives of a scalar loss: autograd against float64 central finite differences."""
from __future__ import annotations

from typing import Callable

import torch


def relative_errors(loss: Callable[[], torch.Tensor], groups: dict[str, list[torch.nn.Parameter]], g: torch.Generator,
                    h: float = 1e-7) -> dict[str, float]:
    """|analytic − numeric| / max(|analytic|, |numeric|) per parameter group, along one random direction each.

    ``h``: the step; ε = 1e-6 rules put near-zero denominators in reach, so curvature needs a small one.
    """
    params = [p for ps in groups.values() for p in ps]
    grads = dict(zip(map(id, params), torch.autograd.grad(loss(), params, allow_unused=True, materialize_grads=True)))
    errors = {}
    for name, ps in groups.items():
        dirs = [torch.randn(p.shape, generator=g, dtype=torch.float64) * p.detach().abs().mean() for p in ps]
        analytic = sum(float((grads[id(p)] * v).sum()) for p, v in zip(ps, dirs))
        values = []
        for step in (h, -2 * h, h):  # +h, then -h, then back
            with torch.no_grad():
                for p, v in zip(ps, dirs):
                    p.add_(step * v)
            values.append(float(loss().detach()))
        numeric = (values[0] - values[1]) / (2 * h)
        assert abs(numeric) > 1e-8, f"{name}: the loss does not depend on this group"
        errors[name] = abs(analytic - numeric) / max(abs(analytic), abs(numeric))
    return errors
