"""Flax models used by the experiments."""

from jaxloss.models.cnn import SmallCNN
from jaxloss.models.sequential import SASRec
from jaxloss.models.text import (AspectSentimentModel, BiLSTMEncoder, CharCNN,
                                 JointNluModel)

__all__ = ["AspectSentimentModel", "BiLSTMEncoder", "CharCNN", "JointNluModel",
           "SASRec", "SmallCNN"]
