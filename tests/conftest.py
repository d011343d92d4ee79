"""Shared fixtures: a tiny synthetic catalog and a tiny trained run, built once per session."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

# zennit (a test oracle, installed --no-deps) imports torchvision, which is never installed here; Quantus imports
# zennit when present. A minimal torchvision stub (tests/stubs) goes on the path when no real one is importable.
if importlib.util.find_spec("torchvision") is None:
    sys.path.append(str(Path(__file__).parent / "stubs"))


@pytest.fixture(scope="session")
def tiny_catalog(tmp_path_factory) -> Path:
    """A 160-item, 32 px synthetic catalog with 3 users (seconds to make)."""
    from lrprec.data.synthetic import SynthConfig, generate

    out = tmp_path_factory.mktemp("cat") / "tiny"
    generate(out, SynthConfig(items=160, users=3, image_size=32, pairs_per_relation=80, seed=3), progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_run(tiny_catalog, tmp_path_factory) -> Path:
    """A small model trained for 2 epochs on ``tiny_catalog``."""
    from lrprec.train import TrainConfig, train

    out = tmp_path_factory.mktemp("run") / "run"
    train(tiny_catalog, out, TrainConfig(epochs=2, batch_size=64, dim=8, seed=1), progress=False, log=lambda m: None)
    return out
