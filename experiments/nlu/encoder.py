"""The NLU recipe on a pretrained encoder (JointBERT): sub-word inputs, the model, the
optimizer and the initial parameters, from ``config.encoder`` (a local Hugging Face
folder; see :func:`jaxloss.models.load_pretrained`).

Each sentence's words are tokenised as pre-split words (``tokenizers``,
``is_pretokenized``), padded to one length for the whole dataset (a bucket of
:func:`jaxloss.data.subword.bucket_length`); the tag of word j is read at its first
sub-word (``word_index``), so the tag logits, losses, BIO decoding and seqeval metrics
stay per word, as in JointBERT. Training batches are cut to the bucket of their own
longest sentence (``Recipe.sequence_buckets``): the step compiles once per bucket used.
With a frozen encoder and ``config.cache_features`` the encoder runs once over every
split and only the heads train, on its cached features.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxloss.data import subword
from jaxloss.models.encoder_heads import EncoderJointNluModel, JointNluHeads
from jaxloss.models.pretrained import Pretrained
from jaxloss.train_step import make_optimizer
from jaxloss.training.recipe import SequenceBuckets
from experiments import encoders

INPUTS = ("subword_ids", "subword_mask", "word_index", "lengths")
FEATURE_INPUTS = ("word_features", "sentence_features", "lengths")


load = encoders.load


def encode_splits(pre: Pretrained, raw: dict, max_words: int, *, max_length: int,
                  buckets: tuple) -> tuple[dict, dict]:
  """``({split: {"subword_ids", "subword_mask": [N, S], "word_index": [N, max_words],
  "subword_lengths": [N]}}, facts)``: every split padded to one S (the largest
  split's bucket), and the facts (S, sequences truncated and words lost per split).
  """
  encoded, facts = {}, {"truncated": {}, "words_lost": {}}
  for name, s in raw.items():
    enc = subword.encode_batch(pre.tokenizer, [list(t) for t in s["tokens"]],
                               buckets=buckets, max_length=max_length,
                               is_pretokenized=True)
    index, lost = subword.first_subword_index(enc, [len(t) for t in s["tokens"]],
                                              max_words)
    encoded[name] = (enc, index)
    facts["truncated"][name] = int(enc.num_truncated)
    facts["words_lost"][name] = int(lost)
  width = max(enc.length for enc, _ in encoded.values())
  pad_id = subword.resolve_pad_id(pre.tokenizer)
  out = {}
  for name, (enc, index) in encoded.items():
    extra = width - enc.length
    out[name] = {
        "subword_ids": np.pad(enc.input_ids, ((0, 0), (0, extra)), constant_values=pad_id),
        "subword_mask": np.pad(enc.attention_mask, ((0, 0), (0, extra))),
        "word_index": index, "subword_lengths": enc.lengths.astype(np.int32)}
  facts["subword_length"] = int(width)
  return out, facts


def make_model(config, pre: Pretrained, num_tags: int, sentence_classes: tuple
               ) -> EncoderJointNluModel:
  pooling = config.sentence_pooling
  if pooling == "auto":
    pooling = "pooler" if pre.module.add_pooler else "mean"
  return EncoderJointNluModel(pre.module, num_tags=num_tags,
                              sentence_classes=sentence_classes,
                              dropout_rate=config.head_dropout_rate, pooling=pooling,
                              freeze_encoder=bool(config.freeze_encoder))


def cache_features(model: EncoderJointNluModel, encoder_params, split: dict, *,
                   batch_size: int = 256) -> dict:
  """The frozen encoder's features of a split, computed once: ``{"word_features":
  float32 [N, T, H], "sentence_features": float32 [N, H]}`` (one jitted forward
  program, fixed-size batches, the last one padded)."""
  forward = jax.jit(lambda p, ids, mask, index: model.apply(
      {"params": {"encoder": p}}, ids, mask, index, method="features"))
  n = len(split["subword_ids"])
  words, pooled = [], []
  for start in range(0, n, batch_size):
    rows = np.arange(start, start + batch_size) % n  # pad the last batch by wrapping
    w, p = forward(encoder_params, split["subword_ids"][rows], split["subword_mask"][rows],
                   split["word_index"][rows])
    keep = min(batch_size, n - start)
    words.append(np.asarray(w, np.float32)[:keep])
    pooled.append(np.asarray(p, np.float32)[:keep])
  return {"word_features": np.concatenate(words), "sentence_features": np.concatenate(pooled)}


@dataclasses.dataclass(frozen=True)
class Setup:
  """What the recipe takes from the encoder: the model, its input fields, ``init``,
  the optimizer, the batch cutting and the facts for the summary."""
  model: Any
  inputs: tuple
  init: Callable
  tx: Any
  sequence_buckets: Optional[SequenceBuckets]
  facts: dict


def setup(config, raw: dict, splits: dict, max_words: int, num_tags: int,
          sentence_classes: tuple, monitor_sums, state_cls) -> Setup:
  """Loads ``config.encoder``, adds its inputs to ``splits`` (in place) and returns the
  :class:`Setup`: the encoder fine-tuned with the heads (``EncoderJointNluModel``,
  :func:`jaxloss.finetune.make_finetune_optimizer`, batches cut to their length
  bucket), or, with ``freeze_encoder`` and ``cache_features``, the heads alone
  (:class:`JointNluHeads`, AdamW) on features the frozen encoder computed once."""
  pre = load(config)
  sub, facts = encode_splits(pre, raw, max_words, max_length=config.encoder_max_length,
                             buckets=tuple(config.sequence_buckets))
  for name in splits:
    splits[name].update(sub[name])
  model = make_model(config, pre, num_tags, sentence_classes)
  width = splits["train"]["subword_ids"].shape[1]
  facts.update({"path": str(pre.path), "model_type": pre.config.model_type,
                "num_layers": pre.config.num_hidden_layers, "pooling": model.pooling,
                "freeze_encoder": bool(config.freeze_encoder),
                "cached_features": bool(config.freeze_encoder and config.cache_features)})
  if facts["cached_features"]:
    t0 = time.time()
    encoder_params = jax.tree.map(jnp.asarray, pre.params)
    for name in splits:
      splits[name].update(cache_features(model, encoder_params, splits[name]))
    facts["feature_seconds"] = round(time.time() - t0, 1)
    heads = JointNluHeads(num_tags=num_tags, sentence_classes=sentence_classes,
                          dropout_rate=config.head_dropout_rate)
    hidden = pre.config.hidden_size
    dummy = (jnp.zeros((1, max_words, hidden)), jnp.zeros((1, hidden)),
             jnp.ones((1,), jnp.int32))
    tx = make_optimizer("adamw", learning_rate=config.learning_rate,
                        weight_decay=config.weight_decay,
                        max_grad_norm=config.max_grad_norm)

    def init_heads(key):
      init_key, state_key = jax.random.split(key)
      params = heads.init(init_key, *dummy, train=False)["params"]
      return state_cls.create(apply_fn=heads.apply, params=params, tx=tx, rng=state_key,
                              train_sums=monitor_sums)
    return Setup(heads, FEATURE_INPUTS, init_heads, tx, None, facts)
  init, tx = make_init(config, pre, model, width, max_words, monitor_sums, state_cls)
  buckets = SequenceBuckets(keys=("subword_ids", "subword_mask"),
                            lengths=splits["train"]["subword_lengths"],
                            buckets=tuple(config.sequence_buckets),
                            eval_lengths={name: splits[name]["subword_lengths"]
                                          for name in splits if name != "train"})
  return Setup(model, INPUTS, init, tx, buckets, facts)


def make_init(config, pre: Pretrained, model: EncoderJointNluModel, width: int,
              max_words: int, monitor_sums, state_cls):
  """``(init(key) -> TrainState, tx)``: heads initialised from ``key``, the encoder's
  parameters the pretrained ones, and the fine-tuning AdamW over both."""
  dummy = (jnp.zeros((1, width), jnp.int32), jnp.ones((1, width), jnp.int32),
           jnp.zeros((1, max_words), jnp.int32), jnp.ones((1,), jnp.int32))
  return encoders.pretrained_init(config, pre, model, dummy, monitor_sums, state_cls)
