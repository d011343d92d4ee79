"""A minimal stand-in for torchvision, for the oracle tests only (zennit and lxt import it).

torchvision itself is never installed here (it pulls a CUDA build of torch). This package holds
just what zennit's and lxt's imports name; ``models.resnet`` is a plain re-statement of
torchvision's ResNet layout so the oracle model is built independently of lrprec's.
"""
from torchvision import models  # noqa: F401
