"""The example recipe of ``docs/recipes.md``: an MLP with a class-balanced sigmoid focal
loss on an imbalanced tabular set that scikit-learn ships."""

from experiments.tabular.recipe import build

__all__ = ["build"]
