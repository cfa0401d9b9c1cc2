"""Sigmoid focal loss on imbalanced breast-cancer data (``experiments/tabular``).

  python -m experiments.run --config=experiments/tabular/configs/breast_cancer.py
  python -m experiments.run --config=experiments/tabular/configs/breast_cancer.py:smoke
"""

import ml_collections

from experiments.configs.runtime import add_runtime


def get_config(arg=None):
  variant = arg or "default"
  if variant not in ("default", "smoke"):
    raise ValueError(f"variant must be 'default' or 'smoke', got {variant!r}")
  c = ml_collections.ConfigDict()
  c.name = f"breast_cancer_{variant}"
  c.trainer = "tabular"
  c.seed = 0
  c.data_seed = 0
  c.keep_every = 6  # keep every 6th malignant training case (ρ ≈ 10)
  c.hidden = 32
  c.gamma = 2.0
  c.learning_rate = 0.01
  c.weight_decay = 1e-4
  c.batch_size = 32
  c.num_epochs = 40 if variant == "default" else 3
  return add_runtime(c, eval_batch_size=256, checkpoint_every_steps=50)
