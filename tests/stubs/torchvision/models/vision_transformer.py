"""Names lxt's ``vit_torch`` patch map refers to (the oracle tests build their ViT themselves)."""
from torch import nn  # noqa: F401
