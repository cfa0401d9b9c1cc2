"""UIT-VSFC (Vietnamese students' feedback): the four-stage curriculum against ERM on
sentence sentiment (neutral is 4 % of Train) and topic (16 : 1).

Run (from the repository root):
  python -m experiments.run --config=experiments/imbalance/configs/vsfc.py                # four_stage,sentiment
  python -m experiments.run --config=experiments/imbalance/configs/vsfc.py:erm,sentiment
  python -m experiments.run --config=experiments/imbalance/configs/vsfc.py:four_stage,topic
  python -m tools.reports.cifar_table --vsfc     # the four README rows, one after the other

Variants are ``METHOD[,TASK]`` (or ``smoke``): METHOD ``four_stage`` (the curriculum of
jaxloss.curriculum.four_stage: class-weight caps, the class-balanced sampler and logit
adjustment by stage, LR milestones in the cooldown) or ``erm`` (plain cross-entropy, the
data distribution, the same LR schedule); TASK ``sentiment`` (the default) or ``topic``.
``smoke`` is ``four_stage,sentiment`` with a small model for 2 epochs (tests).

Model: a word-level BiLSTM trained from scratch (jaxloss.models.TextClassifier: 128-d
embeddings, 64 units a direction, masked mean + max pooling, dropout 0.3) with AdamW.
No augmentation. WAR is the Test accuracy (the test set keeps the natural imbalance) and
UAR the mean per-class recall, both at the last epoch.
"""

import ml_collections

from experiments.imbalance.configs import digits_lt, variants

METHODS = ("four_stage", "erm")
TASKS = ("sentiment", "topic")


def parse_variant(arg):
  """``"METHOD[,TASK]"`` or ``"smoke"`` -> (method, task, smoke).

  Raises:
    ValueError: an unknown method or task.
  """
  if arg == "smoke":
    return "four_stage", "sentiment", True
  return (*variants.parse_pair(arg, firsts=METHODS, seconds=TASKS,
                               names=("method", "task")), False)


def get_config(arg=None):
  method, task, smoke = parse_variant(arg)
  c = digits_lt.get_config("four_stage" if method == "four_stage" else "erm")
  c.name = "vsfc_smoke" if smoke else f"vsfc_{method}_{task}"

  # Data.
  c.dataset = "uit_vsfc"
  c.task = task
  c.vocab_min_count = 2  # tokens seen fewer times in Train map to UNK
  c.max_len = 48  # tokens a sentence (p99 of Train is 52)
  c.war_weights = "test"  # WAR = Test accuracy (the natural imbalance)

  # Model and optimisation.
  c.model = "bilstm"
  c.embed_dim = 128
  c.hidden = 64
  c.dropout_rate = 0.3
  c.augment = "none"
  c.aug_strength = 0.0
  c.optimizer = "adamw"
  c.learning_rate = 2e-3
  c.weight_decay = 1e-4
  c.max_grad_norm = 5.0
  c.batch_size = 64
  c.num_epochs = 20
  c.warmup_epochs = 1.0
  c.eval_batch_size = 1024
  c.checkpoint_every_steps = 500
  if smoke:
    c.subsample = 10
    c.embed_dim = 32
    c.hidden = 16
    c.num_epochs = 2
    c.warmup_epochs = 0.0
    c.checkpoint_every_steps = 10
  return c
