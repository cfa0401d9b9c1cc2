"""CIFAR-10-LT (ρ = 100 by default): the four-stage curriculum against ERM, focal, the
logit-adjusted loss and LDAM-DRW.

Run (from the repository root):
  python -m experiments.run --config=experiments/imbalance/configs/cifar10_lt.py:four_stage,cpu
  python -m experiments.run --config=experiments/imbalance/configs/cifar10_lt.py:erm,cpu
  python -m experiments.run --config=experiments/imbalance/configs/cifar10_lt.py:ldam_drw   # full
  python -m experiments.run --config=experiments/imbalance/configs/cifar10_lt.py:la,cpu \\
      --config.imbalance_ratio=10 --config.manual_dir=path/to/folder
  python -m tools.reports.cifar_table            # the five cpu rows of the README, one series

Variants are ``METHOD[,SIZE]`` (or ``smoke``):

* METHOD: ``erm`` (cross-entropy), ``focal`` (softmax focal loss, γ = 1, Cao et al.'s
  baseline), ``la`` (the logit-adjusted loss, τ = 1; Menon et al., ICLR 2021),
  ``ldam_drw`` (LDAM with a normalised classifier, s = 30, m = 0.5, and deferred
  re-weighting by the effective number, β = 0.9999, from 80 % of training; Cao et al.,
  NeurIPS 2019) and ``four_stage`` (the recipe's curriculum: warm-up, margin,
  aggressive, cooldown, with Cutout as the strong augmentation of the up-weighting
  stages; jaxloss.curriculum.four_stage).
* SIZE: ``full`` (the default: the papers' schedule for an accelerator: ResNet-32,
  SGD momentum 0.9, LR 0.1 with 5 warm-up epochs and steps of 0.1 at epochs 160 and 180,
  weight decay 2e-4, batch 128, 200 epochs) or ``cpu`` (ResNet-8, the same optimiser,
  30 epochs with 2 warm-up epochs and the steps at 80 % and 90 %; under 30 minutes on a
  2-core CPU).
* ``smoke``: ``four_stage,cpu`` on every 25th image of each class for 3 epochs (tests).

Every run uses the standard augmentation (4-pixel pad, random crop, horizontal flip)
on device; ``config.aug_strength`` is the probability of Cutout (16×16) on top, which
the four-stage variant raises to 0.5 in its margin and aggressive stages.

Data: ``config.manual_dir`` holds ``cifar10_jpg.tar.gz`` (default
``../shared/data/cifar10``); the long-tailed train split keeps the first
``int(5000 · (1/ρ)^(c/9))`` images of class c. WAR weights per-class test recall by
the training distribution (the balanced test set's accuracy equals UAR = 100 − the
published balanced error); many / medium / few are the classes with > 1000, 200–1000 and
< 200 training images.
"""

import ml_collections

from experiments.imbalance.configs import digits_lt, variants

METHODS = ("four_stage", "erm", "focal", "la", "ldam_drw")  # the first is the default
SIZES = ("full", "cpu")


def parse_variant(arg):
  """``"METHOD[,SIZE]"`` or ``"smoke"`` -> (method, size, smoke).

  Raises:
    ValueError: an unknown method or size (the message lists the known ones).
  """
  if arg == "smoke":
    return "four_stage", "cpu", True
  return (*variants.parse_pair(arg, firsts=METHODS, seconds=SIZES), False)


def get_config(arg=None):
  method, size, smoke = parse_variant(arg)
  c = digits_lt.get_config("four_stage")
  c.name = "cifar10_lt_smoke" if smoke else f"cifar10_lt_{method}_{size}"

  # Data.
  c.dataset = "cifar10_lt"
  c.imbalance_ratio = 100.0
  c.shot_thresholds = (1000, 200)
  c.war_weights = "train"

  # Model and optimisation (Cao et al. 2019 / Menon et al. 2021 on CIFAR-10-LT).
  c.model = "resnet"
  c.resnet_depth = 32 if size == "full" else 8
  c.classifier = "cosine" if method == "ldam_drw" else "linear"
  c.optimizer = "sgd"
  c.nesterov = False
  c.momentum = 0.9
  c.learning_rate = 0.1
  c.weight_decay = 2e-4
  c.batch_size = 128
  c.max_grad_norm = 5.0  # a safety net; the monitors report how often it clips
  c.num_epochs = 200 if size == "full" else 30
  c.warmup_epochs = 5.0 if size == "full" else 2.0
  c.lr_milestones = (0.8, 0.9)  # epochs 160 and 180 of 200
  c.lr_decay = 0.1
  c.augment = "cifar"
  c.aug_strength = 0.0  # Cutout probability (the four-stage variant sets its own)

  # Method.
  c.loss = "ce"
  c.curriculum = "erm"
  if method == "focal":
    c.loss = "focal"
    c.focal_gamma = 1.0
  elif method == "la":
    c.curriculum = "la"
    c.la_tau = 1.0
  elif method == "ldam_drw":
    c.loss = "ldam"
    c.curriculum = "drw"
    c.drw_start = 0.8
    c.class_weight_method = "effective_number"
    c.class_weight_beta = 0.9999
  elif method == "four_stage":
    c.curriculum = "four_stage"
    c.aug_strengths = (0.0, 0.5, 0.5, 0.0)

  # Runtime.
  c.eval_batch_size = 1000
  c.checkpoint_every_steps = 500
  if smoke:
    c.subsample = 25
    c.num_epochs = 3
    c.warmup_epochs = 0.0
    c.batch_size = 64
    c.checkpoint_every_steps = 5
  return c
