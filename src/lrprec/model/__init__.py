"""Models: image backbones and the Siamese personalized pair model."""
from lrprec.model.backbones import SmallCNN, VGG16, FeatureBackbone, build_backbone, preprocess
from lrprec.model.pair import PairModel

__all__ = ["SmallCNN", "VGG16", "FeatureBackbone", "build_backbone", "preprocess", "PairModel"]
