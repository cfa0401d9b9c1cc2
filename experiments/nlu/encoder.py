"""The NLU recipe on a pretrained encoder (JointBERT): sub-word inputs, the model, the
optimizer and the initial parameters, from ``config.encoder`` (a local Hugging Face
folder; see :func:`jaxloss.models.load_pretrained`).

Each sentence's words are tokenised as pre-split words (``tokenizers``,
``is_pretokenized``), padded to one length for the whole dataset (a bucket of
:func:`jaxloss.data.subword.bucket_length`); the tag of word j is read at its first
sub-word (``word_index``), so the tag logits, losses, BIO decoding and seqeval metrics
stay per word, as in JointBERT. Training batches are cut to the bucket of their own
longest sentence (``Recipe.sequence_buckets``): the step compiles once per bucket used.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxloss import finetune
from jaxloss.data import subword
from jaxloss.models.encoder_heads import EncoderJointNluModel
from jaxloss.models.pretrained import (Pretrained, load_pretrained, resolve_model_dir,
                                       truncate_layers)

INPUTS = ("subword_ids", "subword_mask", "word_index", "lengths")


def load(config) -> Pretrained:
  """The config's encoder, cut to ``config.encoder_num_layers`` bottom layers (None:
  all).

  Raises:
    FileNotFoundError / ValueError: as :func:`jaxloss.models.load_pretrained` (the
      folder must have a ``tokenizer.json``); a bad ``encoder_num_layers``.
  """
  pre = load_pretrained(resolve_model_dir(config.encoder), require_tokenizer=True)
  if config.get("encoder_num_layers") is not None:
    pre = truncate_layers(pre, int(config.encoder_num_layers))
  return pre


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


def make_init(config, pre: Pretrained, model: EncoderJointNluModel, width: int,
              max_words: int, monitor_sums, state_cls):
  """``(init(key) -> TrainState, tx)``: heads initialised from ``key``, the encoder's
  parameters the pretrained ones, and the fine-tuning AdamW over both."""
  dummy = (jnp.zeros((1, width), jnp.int32), jnp.ones((1, width), jnp.int32),
           jnp.zeros((1, max_words), jnp.int32), jnp.ones((1,), jnp.int32))
  shapes = jax.eval_shape(lambda k: model.init(k, *dummy, train=False)["params"],
                          jax.random.PRNGKey(0))
  tx = finetune.make_finetune_optimizer(
      shapes, learning_rate=config.learning_rate, weight_decay=config.weight_decay,
      layer_decay=config.layer_decay, freeze_encoder=config.freeze_encoder,
      max_grad_norm=config.max_grad_norm)
  pretrained = jax.tree.map(jnp.asarray, pre.params)
  # Jitted: one program instead of one per eager operation of a Transformer's init
  # (the encoder's random init is computed and then replaced by the checkpoint's).
  init_params = jax.jit(lambda k: model.init(k, *dummy, train=False)["params"])

  def init(key):
    init_key, state_key = jax.random.split(key)
    params = dict(init_params(init_key))
    params["encoder"] = pretrained
    return state_cls.create(apply_fn=model.apply, params=params, tx=tx, rng=state_key,
                            train_sums=monitor_sums)
  return init, tx


@dataclasses.dataclass(frozen=True)
class Facts:
  """What the summary reports of the encoder."""
  path: str
  model_type: str
  num_layers: int
  subword_length: int
  truncated: dict
  words_lost: dict
