"""Defaults chosen by measurement and shared by the library, the CLI and the web app.

Kept free of heavy imports so the CLI can show them without loading torch. Where each value
comes from is in the README (chosen on validation pairs).
"""
from __future__ import annotations

# The LRP composite of explanations and of the faithfulness report's ``lrp`` row. Chosen on
# validation pairs of the default run (BENCHMARKS.md, "Faithfulness leaderboard"): the LRP
# composite with the highest SRG under both imputers among those passing the randomization
# check (the only one that passes), and the one composite besides z⁺ whose relevance is
# conserved (Σ R within [0.8, 1.25] of the target) on ≥ 90% of the default model's pairs.
DEFAULT_COMPOSITE = "epsilon-plus-flat"
# The composite whose relevance guided training penalizes (``--guide lrp``): the setting the
# guidance experiments were measured in (README, "Explanation-guided training").
GUIDE_COMPOSITE = "epsilon-gamma-box"
