"""Evaluation: link prediction (Table 1), explanation faithfulness, localization."""
