"""Flax models used by the experiments."""

from jaxloss.models.cnn import SmallCNN

__all__ = ["SmallCNN"]
