"""Flax models used by the experiments."""

from jaxloss.models.bert import BertEncoder, EncoderConfig
from jaxloss.models.cnn import SmallCNN
from jaxloss.models.encoder_heads import (AspectSentimentHeads, EncoderAspectSentimentModel,
                                          EncoderClassifier, EncoderJointNluModel,
                                          JointNluHeads, TokenStatesClassifier)
from jaxloss.models.pretrained import Pretrained, load_pretrained
from jaxloss.models.resnet import CifarResNet
from jaxloss.models.sequential import SASRec
from jaxloss.models.text import (AspectAttention, AspectClassifier, AspectSentimentModel,
                                 BiLSTMEncoder, CharCNN, JointNluModel, LabelFeedbackLSTM,
                                 TextClassifier)

__all__ = ["AspectAttention", "AspectClassifier", "AspectSentimentHeads",
           "AspectSentimentModel", "BertEncoder", "BiLSTMEncoder",
           "CharCNN", "CifarResNet", "EncoderAspectSentimentModel", "EncoderClassifier",
           "EncoderConfig", "EncoderJointNluModel", "JointNluHeads", "JointNluModel",
           "LabelFeedbackLSTM", "Pretrained", "SASRec", "SmallCNN", "TextClassifier", "TokenStatesClassifier",
           "load_pretrained"]
