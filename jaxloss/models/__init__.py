"""Flax models used by the experiments."""

from jaxloss.models.cnn import SmallCNN
from jaxloss.models.text import (AspectSentimentModel, BiLSTMEncoder, CharCNN,
                                 JointNluModel)

__all__ = ["AspectSentimentModel", "BiLSTMEncoder", "CharCNN", "JointNluModel",
           "SmallCNN"]
