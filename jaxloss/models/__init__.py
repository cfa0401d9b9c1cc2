"""Flax models used by the experiments."""

from jaxloss.models.bert import BertEncoder, EncoderConfig
from jaxloss.models.cnn import SmallCNN
from jaxloss.models.pretrained import Pretrained, load_pretrained
from jaxloss.models.resnet import CifarResNet
from jaxloss.models.sequential import SASRec
from jaxloss.models.text import (AspectSentimentModel, BiLSTMEncoder, CharCNN,
                                 JointNluModel, TextClassifier)

__all__ = ["AspectSentimentModel", "BertEncoder", "BiLSTMEncoder", "CharCNN",
           "CifarResNet", "EncoderConfig", "JointNluModel", "Pretrained", "SASRec",
           "SmallCNN", "TextClassifier", "load_pretrained"]
