"""One JSON encoder for every output (CLI ``--json``, the web API, run files).

Numpy scalars and arrays become Python numbers and lists, non-finite floats become ``null``
(strict JSON has no NaN), paths become strings; ``drop_private`` leaves out keys starting
with ``_`` (arrays kept in memory beside a result).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def plain(obj: Any, drop_private: bool = False) -> Any:
    """A JSON-ready copy of ``obj`` (see the module docstring)."""
    if isinstance(obj, Mapping):
        return {str(k): plain(v, drop_private) for k, v in obj.items() if not (drop_private and isinstance(k, str) and k.startswith("_"))}
    if isinstance(obj, (list, tuple)):
        return [plain(v, drop_private) for v in obj]
    if isinstance(obj, np.ndarray):
        return plain(obj.tolist(), drop_private)
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj
