"""Training: the loop, negative sampling per epoch, checkpoints."""
from lrprec.train.trainer import TrainConfig, train

__all__ = ["TrainConfig", "train"]
