"""Multi-aspect sentiment on UIT-ViSFD: per-aspect focal loss + supervised contrastive.

Run (from the repository root):
  python -m experiments.run --config=experiments/absa/configs/visfd_absa.py          # 0.7/0.3
  python -m experiments.run --config=experiments/absa/configs/visfd_absa.py:ce
  python -m experiments.run --config=experiments/absa/configs/visfd_absa.py \\
      --config.focal_weight=0.8 --config.contrastive_weight=0.2
  python -m experiments.run --config=experiments/absa/configs/visfd_absa.py \\
      --config.ensemble_focal_weights=0.7,0.8      # two members, one vmapped step
  python -m experiments.run --config=experiments/absa/configs/visfd_absa.py:e5 \\
      --config.ensemble_member=1 --workdir=...     # member 1 alone, as its own job

Variants: ``focal_supcon`` (default: focal 0.7 + SupCon 0.3), ``focal`` (focal alone),
``ce`` (plain per-aspect cross-entropy, no contrastive term) and ``smoke`` (a few hundred
reviews, two epochs; used by the tests). Each aspect's classifier reads its own attention
pooling of the token states beside the review vector (``aspect_attention``; False gives
the practitioners' single head on the review vector).

On a pretrained encoder (``config.encoder``, a Hugging Face folder or a name under
``../shared/models``): ``e5`` fine-tunes ``multilingual-e5-small`` with the same loss,
as the two-member ensemble 0.7/0.3 and 0.8/0.2 (member 0 is the single recipe),
AdamW with linear warm-up and decay, the heads at 1e-3 and the encoder at 2e-4, 4
epochs, length-grouped batches;
``e5_frozen`` trains a BiLSTM head on the frozen encoder's cached per-token states;
``e5_smoke`` is one encoder layer and a few hundred reviews (the tests). The data are read from ``config.manual_dir``
(default ``../shared/data/uit_visfd`` beside the repository).
"""

import ml_collections

from experiments.configs.encoder import add_encoder, fine_tune_e5
from experiments.configs.runtime import add_runtime

VARIANTS = ("focal_supcon", "focal", "ce", "smoke", "e5", "e5_frozen", "e5_smoke")


def get_config(arg=None):
  variant = arg or "focal_supcon"
  if variant not in VARIANTS:
    raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
  c = ml_collections.ConfigDict()
  c.name = f"visfd_absa_{variant}"
  c.trainer = "absa"  # experiments/absa
  c.seed = 0

  # Data: the released CSVs through the uit_visfd TFDS builder.
  c.data_dir = ml_collections.config_dict.placeholder(str)  # TFDS data_dir
  c.manual_dir = ml_collections.config_dict.placeholder(str)  # None: ../shared/data/uit_visfd
  # Keep only the first N reviews of each split (None: all); for smoke runs.
  c.max_train_examples = ml_collections.config_dict.placeholder(int)
  c.max_eval_examples = ml_collections.config_dict.placeholder(int)
  c.vocab_min_count = 2  # tokens seen fewer times in Train map to UNK
  c.max_len = 96  # tokens per review (p95 of Train is 89)

  # Model: BiLSTM encoder trained from scratch, per-aspect classifiers [10, 4], SupCon
  # projection.
  c.embed_dim = 128
  c.hidden = 64
  c.num_layers = 1
  c.dropout_rate = 0.3
  c.projection_dim = 64
  # True: each aspect's classifier also reads its own attention pooling of the token
  # states (jaxloss.models.text.AspectAttention) beside the shared review vector; False:
  # one classifier on the review vector alone (the practitioners' head).
  c.aspect_attention = True

  # Optimisation: AdamW, linear warm-up then cosine decay (in epochs).
  c.num_epochs = 20
  c.batch_size = 64
  c.optimizer = "adamw"
  c.learning_rate = 2e-3
  c.warmup_epochs = 1.0
  c.weight_decay = 1e-4
  c.max_grad_norm = 5.0

  # Loss: focal_weight * mean over aspects of focal(alpha[aspect, class]) +
  # contrastive_weight * SupCon (multi-label positives). contrastive_weight None or 0
  # (the command line's way): no contrastive term.
  c.loss = "focal"  # or "ce" (unweighted per-aspect cross-entropy)
  c.focal_gamma = 2.0
  c.alpha_method = "sqrt_inverse_frequency"  # per aspect, normalised to mean 1
  c.class_weight_cap = 10.0
  # Repeat-factor sampling (Gupta et al., LVIS 2019) over the ASPECT#polarity labels:
  # a review is repeated by max(1, sqrt(t / f)) of its rarest label's frequency f.
  # None: each review once an epoch.
  c.repeat_factor_threshold = ml_collections.config_dict.placeholder(float)
  c.focal_weight = 0.7
  c.contrastive_weight = ml_collections.config_dict.placeholder(float)
  c.contrastive_weight = 0.3
  c.contrastive_temperature = 0.1
  # Ensemble: member k has focal weight w_k, contrastive weight 1 - w_k and seed
  # seed + k, all trained in one vmapped step; e.g. "0.7,0.8". Empty: one model.
  c.ensemble_focal_weights = ""
  # Train only member k of that ensemble (its seed, weights and the ensemble's batch
  # order), to average separately trained members afterwards with
  # `python -m experiments.absa.combine`; -1: every member.
  c.ensemble_member = -1

  # A pretrained encoder instead of the BiLSTM (None: the BiLSTM above); reviews are
  # at most 256 sub-words (p99 149).
  add_encoder(c, max_length=256, buckets=(32, 48, 64, 96, 128, 192, 256),
              length_grouped=True)

  # Figures: 2-D projection of Test embeddings ("tsne" or "pca") after the first epoch,
  # half-way and at the end.
  c.embedding_projection = "tsne"

  # A checkpoint is written at the end of every epoch.
  add_runtime(c, eval_batch_size=512, keep_checkpoints=2, checkpoint_every_steps=10_000)

  if variant == "focal":
    c.focal_weight = 1.0
    c.contrastive_weight = None
  elif variant == "ce":
    c.loss = "ce"
    c.focal_weight = 1.0
    c.contrastive_weight = None
  elif variant.startswith("e5"):
    fine_tune_e5(c)
    c.projection_dim = 128
    c.eval_batch_size = 128
    c.ensemble_focal_weights = "0.7,0.8"
    c.embedding_projection = "pca"
    if variant == "e5_frozen":  # a BiLSTM head on the frozen encoder's token states
      c.freeze_encoder = True
      c.token_hidden = 128
      c.ensemble_focal_weights = ""
      c.batch_size = 64
      c.learning_rate = 2e-3
      c.weight_decay = 1e-4
      c.max_grad_norm = 5.0
      c.warmup_epochs = 1.0
      c.num_epochs = 15
      c.head_dropout_rate = 0.3
    elif variant == "e5":
      # Fine-tuning keeps every layer's activations: two members of 32 reviews at 256
      # sub-words needed ~18 GB (of this machine's 23); at 192 (p99 149) it fits.
      c.encoder_max_length = 192
      c.sequence_buckets = (32, 48, 64, 96, 128, 192)
      # The heads start from random weights: they learn at 1e-3, the pretrained
      # encoder at 0.2 x that (2e-4), over 4 epochs (docs/results/absa.md).
      c.learning_rate = 1e-3
      c.encoder_lr_scale = 0.2
      c.num_epochs = 4
      # Only the embedding rows of the sub-words these reviews use (the same model on
      # them): a smaller table for AdamW to update.
      c.encoder_data_vocabulary = True
    elif variant == "e5_smoke":
      c.encoder_num_layers = 1
      c.max_train_examples = 256
      c.max_eval_examples = 64
      c.encoder_max_length = 64
      c.sequence_buckets = (32, 64)
      c.encoder_data_vocabulary = True  # a small embedding table: a fast 2-process test
      c.batch_size = 16
      c.num_epochs = 1
  elif variant == "smoke":
    c.max_train_examples = 512
    c.max_eval_examples = 256
    c.max_len = 48
    c.embed_dim = 32
    c.hidden = 16
    c.projection_dim = 16
    c.num_epochs = 2
    c.embedding_projection = "pca"
  return c
