"""The config block of a text recipe on a pretrained encoder, in one place (read by
``experiments/encoders.py``; the UIT-ViSFD and UIT-VSFC configs use it)."""

import ml_collections


def add_encoder(c: ml_collections.ConfigDict, *, max_length: int, buckets: tuple,
                length_grouped: bool = False) -> ml_collections.ConfigDict:
  """Adds the encoder fields to ``c`` (in place, ``encoder`` None: the recipe's own
  model) and returns it. ``max_length``: sub-words a text, special tokens included;
  ``buckets``: the padded widths of a batch; ``length_grouped``: batches of similar
  length (not with a class-mix sampler)."""
  # A Hugging Face folder, or a folder name under ../shared/models.
  c.encoder = ml_collections.config_dict.placeholder(str)
  c.encoder_num_layers = ml_collections.config_dict.placeholder(int)  # None: all
  c.encoder_max_length = max_length
  c.encoder_text_prefix = ""  # e5 expects "query: "
  c.sequence_buckets = tuple(buckets)
  if length_grouped:
    c.length_grouped = True  # one order for every ensemble member
    c.group_batches = 50  # batches per length-sorted group
  c.freeze_encoder = False
  # Keep only the word-embedding rows of the sub-words the data use
  # (jaxloss.models.pretrained.keep_vocabulary): the same training, a smaller table and
  # gradient all-reduce (over gloo on CPU processes the full e5 table, 2 x 27,703 x
  # 384 floats, took ~100 s a step); the checkpoint's encoder then reads remapped ids.
  c.encoder_data_vocabulary = False
  # Fine-tuning: recompute each layer's activations in the backward pass (nn.remat)
  # instead of keeping them. Equal gradients; on XLA:CPU it saved little (e5-small, 2
  # members x 32 x 64 sub-words: 2.84 -> 2.69 GB of temporaries), so it is off here.
  c.encoder_remat = False
  c.cache_features = True  # frozen: run the encoder once, train the heads on its states
  c.token_hidden = ml_collections.config_dict.placeholder(int)  # BiLSTM on token states
  c.layer_decay = 1.0  # LR factor per layer below the top (1: none)
  # The encoder's LR as a fraction of the heads' (config.learning_rate); 1: one LR.
  c.encoder_lr_scale = 1.0
  c.sentence_pooling = "auto"  # "pooler", "cls", "mean"; auto: pooler if it has one
  c.head_dropout_rate = 0.1
  return c


def fine_tune_e5(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """``multilingual-e5-small`` fine-tuned with BERT's AdamW settings (Devlin et al.
  2019): batch 32, LR 5e-5 with a 0.1-epoch warm-up, weight decay 0.01, clip 1, 3
  epochs; e5's ``"query: "`` prefix."""
  c.encoder = "multilingual-e5-small"
  c.encoder_text_prefix = "query: "
  c.batch_size = 32
  c.learning_rate = 5e-5
  c.weight_decay = 0.01
  c.max_grad_norm = 1.0
  c.warmup_epochs = 0.1
  c.num_epochs = 3
  return c
