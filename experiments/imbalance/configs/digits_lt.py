"""Four-stage imbalance curriculum vs ERM on digits-LT (scikit-learn's handwritten digits,
long-tailed to ρ = 25, balanced test split).

Run (from the repository root):
  python -m experiments.run                                   # four-stage (default)
  python -m experiments.run --config=experiments/imbalance/configs/digits_lt.py:erm
  python -m experiments.run --config=experiments/imbalance/configs/digits_lt.py:smoke
  python -m experiments.run --config.seed=1 --workdir=/tmp/ds1  # overrides

Variants: ``four_stage`` (default), ``erm`` (plain cross-entropy, data-distribution
sampler, no logit adjustment, same LR schedule), ``supcon`` (four-stage with a supervised
contrastive term on a projection head, weights 0.8 / 0.2), ``smoke``, ``erm_smoke`` and
``supcon_smoke`` (4 epochs, for tests).
"""

import ml_collections

from experiments.configs.runtime import CONV_CPU_COMPILER_OPTIONS, add_runtime

VARIANTS = ("four_stage", "erm", "supcon", "smoke", "erm_smoke", "supcon_smoke")


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

  # experiments/imbalance/configs/cifar10_lt.py sets these for CIFAR-10-LT.
  c.manual_dir = ml_collections.config_dict.placeholder(str)  # raw files (CIFAR archive)
  c.subsample = 1  # keep every k-th example of each class (smoke runs)
  c.shot_thresholds = ml_collections.config_dict.placeholder(tuple)  # (many, few)

  # Model and optimisation.
  c.model = "small_cnn"  # or "resnet" (CIFAR ResNet-(6n+2))
  c.resnet_depth = 32
  c.resnet_widths = (16, 32, 64)
  c.classifier = "linear"  # or "cosine" (LDAM's normalised layer); ResNet only
  c.nesterov = True
  c.model_widths = (32, 64)
  c.num_epochs = 100
  c.batch_size = 64
  c.optimizer = "sgd"
  c.learning_rate = 0.05
  c.momentum = 0.9
  c.weight_decay = 5e-4
  c.max_grad_norm = 5.0

  # Curriculum and loss.
  c.curriculum = "four_stage"  # or "erm", "la", "drw"
  c.sampler_mix = 1.0  # four_stage: the class-balanced stages' mix (0 = data sampler)
  c.loss = "ce"  # "ce" (logit-adjusted, class-weighted CE), "focal" or "ldam"
  c.focal_gamma = 2.0
  c.class_weight_method = "inverse_frequency"
  c.class_weight_normalize = "head"
  c.augment = "shift_and_noise"  # or "cifar" (crop + flip, Cutout at aug_strength)
  c.aug_strength = 1.0
  c.aug_strengths = ml_collections.config_dict.placeholder(tuple)  # four_stage, per stage
  c.lr_milestones = (0.85, 0.95)
  c.lr_decay = 0.1
  c.warmup_epochs = 0.0  # linear LR warm-up
  c.la_tau = 1.0  # curriculum "la": logit-adjusted loss
  c.drw_start = 0.8  # curriculum "drw": share of the run where re-weighting starts
  c.class_weight_beta = 0.999  # effective-number beta (class_weight_method)
  c.ldam_max_margin = 0.5  # loss "ldam"
  c.ldam_scale = 30.0
  # Logits are multiplied by this before the loss (1 = as the model gives them).
  c.logit_scale = 1.0
  # A supervised contrastive term on a projection head (None = no second term):
  # loss = classification_weight * classification + contrastive_weight * SupCon.
  c.contrastive_weight = ml_collections.config_dict.placeholder(float)
  c.classification_weight = 1.0
  c.contrastive_temperature = 0.1
  c.projection_dim = 32
  c.dropout_rate = 0.0
  # Data faults, only for the failure-mode configs (experiments/imbalance/configs/failures.py).
  c.shuffle_train_labels = False
  c.eval_dropout = False  # dropout left on in evaluation (a bug the monitors catch)
  # Multiplies the curriculum's logit-adjustment tau in the loss (-1: the sign bug).
  c.tau_scale = 1.0

  # Monitors, devices, processes, input path, checkpoints, progress.
  add_runtime(c, eval_batch_size=512, checkpoint_every_steps=200, keep_checkpoints=3,
              cpu_compiler_options=CONV_CPU_COMPILER_OPTIONS)

  if variant in ("erm", "erm_smoke"):
    c.curriculum = "erm"
  if variant in ("supcon", "supcon_smoke"):
    c.classification_weight = 0.8
    c.contrastive_weight = 0.2
  if variant in ("smoke", "erm_smoke", "supcon_smoke"):
    c.num_epochs = 4
    c.checkpoint_every_steps = 10
  return c
