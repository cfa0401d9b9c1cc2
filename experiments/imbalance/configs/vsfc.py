"""UIT-VSFC (Vietnamese students' feedback): the four-stage curriculum against ERM on
sentence sentiment (neutral is 4 % of Train) and topic (16 : 1).

Run (from the repository root):
  python -m experiments.run --config=experiments/imbalance/configs/vsfc.py                # four_stage,sentiment
  python -m experiments.run --config=experiments/imbalance/configs/vsfc.py:erm,sentiment
  python -m experiments.run --config=experiments/imbalance/configs/vsfc.py:four_stage,topic
  python -m tools.reports.cifar_table --vsfc     # the four README rows, one after the other

Variants are ``[FORM,]METHOD[,TASK]`` (or ``smoke``): METHOD ``four_stage`` (the curriculum of
jaxloss.curriculum.four_stage: class-weight caps, the class-balanced sampler and logit
adjustment by stage, LR milestones in the cooldown) or ``erm`` (plain cross-entropy, the
data distribution, the same LR schedule); TASK ``sentiment`` (the default) or ``topic``.
``smoke`` is ``four_stage,sentiment`` with a small model for 2 epochs (tests).
FORM selects ``multilingual-e5-small`` instead of the BiLSTM: ``e5`` fine-tunes it with
a classifier on its mean-pooled states (AdamW 5e-5, 3 epochs), ``e5_frozen`` trains a
BiLSTM on its frozen, cached token states (the BiLSTM's optimisation), ``e5_smoke`` is
``e5_frozen`` on one encoder layer and every 10th sentence for 2 epochs (tests), e.g.
``vsfc.py:e5_frozen,erm,sentiment``.

Model: a word-level BiLSTM trained from scratch (jaxloss.models.TextClassifier: 128-d
embeddings, 64 units a direction, masked mean + max pooling, dropout 0.3) with AdamW.
No augmentation. WAR is the Test accuracy (the test set keeps the natural imbalance) and
UAR the mean per-class recall, both at the last epoch.
"""

from experiments.configs.encoder import add_encoder, fine_tune_e5
from experiments.imbalance.configs import digits_lt, variants

METHODS = ("four_stage", "erm")
TASKS = ("sentiment", "topic")
ENCODER_FORMS = ("e5", "e5_frozen", "e5_smoke")


def parse_variant(arg):
  """``"[FORM,]METHOD[,TASK]"`` or ``"smoke"`` -> (form, method, task, smoke); FORM
  (one of :data:`ENCODER_FORMS`) selects the pretrained encoder, None the BiLSTM.

  Raises:
    ValueError: an unknown method or task.
  """
  if arg == "smoke":
    return None, "four_stage", "sentiment", True
  form = None
  first, _, rest = (arg or "").partition(",")
  if first in ENCODER_FORMS:
    form, arg = first, rest or None
  return (form, *variants.parse_pair(arg, firsts=METHODS, seconds=TASKS,
                                     names=("method", "task")), False)


def get_config(arg=None):
  form, method, task, smoke = parse_variant(arg)
  c = digits_lt.get_config("four_stage" if method == "four_stage" else "erm")
  c.name = ("vsfc_smoke" if smoke else
            f"vsfc_{form + '_' if form else ''}{method}_{task}")

  # Data.
  c.dataset = "uit_vsfc"
  c.task = task
  c.vocab_min_count = 2  # tokens seen fewer times in Train map to UNK
  c.max_len = 48  # tokens a sentence (p99 of Train is 52)
  c.war_weights = "test"  # WAR = Test accuracy (the natural imbalance)

  # Model and optimisation.
  c.model = "bilstm"
  c.cpu_compiler_options = {}  # XLA's defaults for the text models (runtime.py)
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

  # A pretrained encoder instead of the BiLSTM (experiments/imbalance/encoder.py; None:
  # the BiLSTM above); sentences are at most 128 sub-words (p99 61).
  add_encoder(c, max_length=128, buckets=(16, 24, 32, 48, 64, 96, 128))
  if form is not None:
    c.encoder = "multilingual-e5-small"
    c.encoder_text_prefix = "query: "
  if form == "e5":  # fine-tuned: BERT's AdamW settings, 3 epochs
    fine_tune_e5(c)
    c.eval_batch_size = 256
    c.checkpoint_every_steps = 100
  elif form in ("e5_frozen", "e5_smoke"):  # a BiLSTM on the frozen states, cached
    c.freeze_encoder = True
    c.token_hidden = 128
    c.dropout_rate = 0.3
    c.head_dropout_rate = 0.3
    c.eval_batch_size = 256
  if form == "e5_smoke":
    c.encoder_num_layers = 1
    c.encoder_max_length = 64  # two widths to compile, not seven (truncates ~1 %)
    c.sequence_buckets = (32, 64)
    c.subsample = 10
    c.token_hidden = 16
    c.num_epochs = 2
    c.warmup_epochs = 0.0
    c.checkpoint_every_steps = 10
  if smoke:
    c.subsample = 10
    c.embed_dim = 32
    c.hidden = 16
    c.num_epochs = 2
    c.warmup_epochs = 0.0
    c.checkpoint_every_steps = 10
  return c
