"""Flax models used by the experiments."""

from jaxloss.models.cnn import SmallCNN
from jaxloss.models.resnet import CifarResNet
from jaxloss.models.sequential import SASRec
from jaxloss.models.text import (AspectSentimentModel, BiLSTMEncoder, CharCNN,
                                 JointNluModel, TextClassifier)

__all__ = ["AspectSentimentModel", "BiLSTMEncoder", "CharCNN", "CifarResNet",
           "JointNluModel", "SASRec", "SmallCNN", "TextClassifier"]
