"""Failure modes provoked on purpose on real data (digits-LT), one per variant, each
caught by a training-health monitor (jaxloss.monitors) with its advice.

Run one (from the repository root) and read its diagnosis:
  python -m experiments.run --config=experiments/imbalance/configs/failures.py:lr_far_too_high \
      --workdir=workdirs/failures/lr_far_too_high
  python -m tools.ops.diagnose workdirs/failures/lr_far_too_high
or all of them, with the README table: ``python -m tools.reports.failure_modes``.

Every variant is the main job (``digits_lt.py``, four-stage curriculum, 100 epochs)
with one thing broken; ``EXPECTED[variant]`` is the code its monitor must report (as a
finding of its own, or folded into the one incident it belongs to: the exploding
gradients of a diverging run are reported inside ``loss_diverged``).
"""

import ml_collections

from experiments.imbalance.configs import digits_lt

# variant -> (code that must be reported, how the failure is provoked)
EXPECTED = {
    "lr_far_too_high": ("loss_diverged",
                        "learning rate 1000 (x20000), no gradient clipping"),
    "lr_too_high": ("loss_oscillating", "learning rate 2.0 (x40), no gradient clipping"),
    "grad_explosion": ("grad_explosion",
                       "learning rate 20 (x400), no gradient clipping"),
    "clip_too_tight": ("clipping_every_step", "max_grad_norm 0.01 (typical norm ~0.6)"),
    "labels_shuffled": ("not_learning", "training labels randomly permuted"),
    "logit_scale_too_low": ("grad_vanishing",
                            "logits x1e-5 before the loss (a temperature of 1e5)"),
    "focal_gamma_too_high": ("term_saturated", "focal loss with gamma 50 (not 2)"),
    "contrastive_weight_zero": ("term_stalled",
                                "CE + SupCon with contrastive_weight 0 (1.0/0.0)"),
    "classifier_saturated": ("term_saturated",
                             "CE + SupCon 0.8/0.2, no augmentation, AdamW lr 1e-2"),
    "logit_scale_too_high": ("initial_loss_off",
                             "logits x30 before the loss (an unnormalised cosine scale)"),
    "weight_decay_too_high": ("prediction_collapse", "weight decay 0.5 (not 5e-4)"),
    "eval_dropout": ("eval_nondeterministic",
                     "dropout 0.3 left on in evaluation with a fresh key per call"),
    "tau_too_high": ("stage_expectation",
                     "logit adjustment tau x5 in every stage (aggressive tau 6)"),
    "no_rebalancing": ("class_starved",
                       "ERM: one plain stage, no class weights, logit adjustment or "
                       "class-balanced sampling"),
}
VARIANTS = tuple(EXPECTED)


def get_config(arg=None):
  variant = arg or "lr_far_too_high"
  if variant not in VARIANTS:
    raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
  c = digits_lt.get_config("four_stage")
  c.name = f"failure_{variant}"
  c.progress = False
  if variant == "lr_far_too_high":
    c.learning_rate = 1000.0
    c.max_grad_norm = None
  elif variant == "lr_too_high":
    c.learning_rate = 2.0
    c.max_grad_norm = None
  elif variant == "clip_too_tight":
    c.max_grad_norm = 0.01
  elif variant == "labels_shuffled":
    c.shuffle_train_labels = True
  elif variant == "focal_gamma_too_high":
    c.loss = "focal"
    c.focal_gamma = 50.0
  elif variant == "contrastive_weight_zero":
    c.classification_weight = 1.0
    c.contrastive_weight = 0.0
  elif variant == "classifier_saturated":
    c.curriculum = "erm"
    c.optimizer = "adamw"
    c.learning_rate = 1e-2
    c.weight_decay = 1e-4
    c.aug_strength = 0.0
    c.classification_weight = 0.8
    c.contrastive_weight = 0.2
  elif variant == "logit_scale_too_high":
    c.logit_scale = 30.0
  elif variant == "weight_decay_too_high":
    c.weight_decay = 0.5
  elif variant == "eval_dropout":
    c.dropout_rate = 0.3
    c.eval_dropout = True
  elif variant == "tau_too_high":
    c.tau_scale = 5.0
  elif variant == "grad_explosion":
    c.learning_rate = 20.0
    c.max_grad_norm = None
  elif variant == "logit_scale_too_low":
    c.logit_scale = 1e-5
  elif variant == "no_rebalancing":
    c.curriculum = "erm"
  return c
