"""Single-label classification on imbalanced data: digits-LT (the main job), CIFAR-10-LT
and UIT-VSFC, under the four-stage curriculum, ERM, logit adjustment or LDAM-DRW."""

from experiments.imbalance.recipe import build

__all__ = ["build"]
