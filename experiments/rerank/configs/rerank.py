"""Candidate reranking: SASRec over a user's sequence, listwise softmax over sampled lists.

Run (from the repository root):
  python -m experiments.run --config=experiments/rerank/configs/rerank.py             # listwise
  python -m experiments.run --config=experiments/rerank/configs/rerank.py:bpr         # baseline
  python -m experiments.run --config=experiments/rerank/configs/rerank.py \\
      --config.num_candidates=101      # the SASRec protocol: the true item + 100 negatives
  python -m experiments.run --config=experiments/rerank/configs/rerank.py \\
      --config.data_dir=path/to/folder --config.filename=Beauty.txt

Variants:
* ``listwise`` (default): SASRec (2 blocks, d = 50, 1 head, max_len 50, dropout 0.5:
  the paper's Games setting), trained at every position with the listwise softmax loss
  over the true next item and ``num_candidates - 1`` negatives drawn per user and step;
  Adam (β2 0.98), lr 1e-3 after a one-epoch warm-up, batch 128.
* ``bpr``: the same with BPR (mean over the negatives of softplus(s_neg - s_pos)).
* ``smoke``: 2,048 users, 512 evaluated, a small model, two epochs; used by the tests.

Data: ``config.data_dir`` is a folder holding ``config.filename`` in the ``user item``
per-line layout (chronological per user, ids from 1); default
``../shared/data/sasrec_games/Video.txt`` beside the repository. The evaluation
negatives are sampled once, with ``config.data_seed``, and stored with the split (the
TFDS config name carries the candidate count, the seed and the file's hash).
"""

import ml_collections

from experiments.configs.runtime import add_runtime

VARIANTS = ("listwise", "bpr", "smoke")


def get_config(arg=None):
  variant = arg or "listwise"
  if variant not in VARIANTS:
    raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
  c = ml_collections.ConfigDict()
  c.name = f"rerank_{variant}"
  c.trainer = "rerank"  # experiments/rerank
  c.seed = 0

  # Data (the interactions TFDS builder).
  c.data_dir = ml_collections.config_dict.placeholder(str)  # None: ../shared/data/sasrec_games
  c.filename = "Video.txt"
  c.tfds_data_dir = ml_collections.config_dict.placeholder(str)  # None: TFDS default
  c.num_candidates = 50  # the true item + 49 negatives; 101 is the SASRec protocol
  c.data_seed = 0  # the evaluation negatives and the true item's position
  c.max_train_users = ml_collections.config_dict.placeholder(int)
  c.max_eval_users = ml_collections.config_dict.placeholder(int)

  # Model: SASRec (Kang & McAuley, ICDM 2018), their Games setting.
  c.max_len = 50
  c.hidden = 50
  c.num_blocks = 2
  c.num_heads = 1
  c.dropout_rate = 0.5

  # Loss and optimisation.
  c.loss = "listwise"  # or "bpr"
  c.num_epochs = 20
  c.batch_size = 128
  c.learning_rate = 1e-3
  c.adam_b2 = 0.98
  c.warmup_epochs = 1.0
  c.weight_decay = 0.0
  c.max_grad_norm = 5.0

  # Sanity checks (summary.json["sanity"]).
  c.first_loss_tolerance = 0.05  # |first loss - ln(num_candidates)|
  c.position_p_min = 1e-3  # chi-square p-value of the true item's position

  c.eval_every = 2  # epochs between evaluations (and always the last)
  # A checkpoint is written at the end of every epoch.
  add_runtime(c, eval_batch_size=1024, keep_checkpoints=2, checkpoint_every_steps=10_000)

  if variant == "bpr":
    c.loss = "bpr"
  elif variant == "smoke":
    c.max_train_users = 2048
    c.max_eval_users = 512
    c.max_len = 20
    c.hidden = 16
    c.num_epochs = 2
    c.eval_every = 1
  return c
