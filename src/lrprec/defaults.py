"""Defaults chosen by measurement and shared by the library, the CLI and the web app.

Kept free of heavy imports so the CLI can show them without loading torch. Where each value
comes from is in the README (chosen on validation pairs).
"""
from __future__ import annotations

# The LRP composite of explanations, guidance and the faithfulness report's LRP row.
DEFAULT_COMPOSITE = "epsilon-gamma-box"
