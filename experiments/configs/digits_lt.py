"""Four-stage imbalance curriculum vs ERM on digits-LT (scikit-learn's handwritten digits,
long-tailed to ρ = 25, balanced test split).

Run (from the repository root):
  python -m experiments.run                                   # four-stage (default)
  python -m experiments.run --config=experiments/configs/digits_lt.py:erm
  python -m experiments.run --config=experiments/configs/digits_lt.py:smoke
  python -m experiments.run --config.seed=1 --workdir=/tmp/ds1  # overrides

Variants: ``four_stage`` (default), ``erm`` (plain cross-entropy, data-distribution
sampler, no logit adjustment, same LR schedule), ``smoke`` (4 epochs, for tests).
"""

import ml_collections

VARIANTS = ("four_stage", "erm", "smoke", "erm_smoke")


def get_config(arg=None):
  variant = arg or "four_stage"
  if variant not in VARIANTS:
    raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
  c = ml_collections.ConfigDict()
  c.name = f"digits_lt_{variant}"
  c.seed = 0

  # Data: long-tailed digits; the split itself uses data_seed so that training seeds
  # vary the run, not the data.
  c.dataset = "digits_lt"
  c.data_dir = ml_collections.config_dict.placeholder(str)  # TFDS data_dir
  c.data_seed = 0
  c.imbalance_ratio = 25.0
  c.test_per_class = 30
  c.war_weights = "train"  # "train": weight recall by the training distribution; "test"

  # Model and optimisation.
  c.model_widths = (32, 64)
  c.num_epochs = 100
  c.batch_size = 64
  c.optimizer = "sgd"
  c.learning_rate = 0.05
  c.momentum = 0.9
  c.weight_decay = 5e-4
  c.max_grad_norm = 5.0

  # Curriculum and loss.
  c.curriculum = "four_stage"  # or "erm"
  c.loss = "ce"  # "ce" (logit-adjusted, class-weighted CE) or "focal"
  c.focal_gamma = 2.0
  c.class_weight_method = "inverse_frequency"
  c.class_weight_normalize = "head"
  c.aug_strength = 1.0
  c.lr_milestones = (0.85, 0.95)
  c.lr_decay = 0.1

  # Runtime.
  c.parallel = "shard_map"  # or "pmap"
  c.num_devices = ml_collections.config_dict.placeholder(int)  # None: all devices
  c.eval_batch_size = 512
  c.checkpoint_every_steps = 200
  c.keep_checkpoints = 3
  c.progress = True
  # Stop (as if killed) before this step, leaving only the checkpoints saved so far.
  c.interrupt_at_step = ml_collections.config_dict.placeholder(int)

  if variant in ("erm", "erm_smoke"):
    c.curriculum = "erm"
  if variant in ("smoke", "erm_smoke"):
    c.num_epochs = 4
    c.checkpoint_every_steps = 10
  return c
