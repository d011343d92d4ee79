"""Independent reference implementations for the explanation tests: zennit (ResNet) and lxt (AttnLRP).

Both are test-only dependencies installed with ``--no-deps`` (Makefile, ``test-deps``): zennit
imports torchvision, which is never installed here, so ``tests/stubs`` (a minimal torchvision
with the class names zennit's canonizer matches) goes on ``sys.path`` first. lxt's package
``__init__`` imports huggingface ``transformers``; only its rule and patch modules are loaded.
"""
from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

STUBS = str(Path(__file__).parent / "stubs")


def zennit():
    """The zennit package, imported with the torchvision stub on the path (skips if zennit is absent)."""
    if STUBS not in sys.path:
        sys.path.insert(0, STUBS)
    return pytest.importorskip("zennit")


def stub_torchvision_resnet():
    zennit()
    from torchvision.models import resnet
    return resnet


def lxt_efficient():
    """(rules, patches) of lxt.efficient, without the package __init__ (which imports transformers)."""
    lxt = pytest.importorskip("lxt")
    if "lxt.efficient" not in sys.modules:
        pkg = types.ModuleType("lxt.efficient")
        pkg.__path__ = [str(Path(lxt.__file__).parent / "efficient")]
        sys.modules["lxt.efficient"] = pkg
    from lxt.efficient import patches, rules
    return rules, patches
