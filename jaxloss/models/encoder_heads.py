"""Task heads on a pretrained :class:`~jaxloss.models.bert.BertEncoder`.

:class:`EncoderJointNluModel` is JointBERT (Chen et al., *BERT for Joint Intent
Classification and Slot Filling*, arXiv:1902.10909, 2019): the sentence-level heads
(intent, command, ...) read the pooled sentence vector, the tag head reads the hidden
state of the **first sub-word of each word** (the word's label is predicted there; the
other sub-words carry no label). The tag logits come out per *word*, ``[B, T_words,
C]``, exactly the outputs of :class:`~jaxloss.models.text.JointNluModel`, so the NLU
recipe's objective, BIO decoding and word-level (seqeval) metrics are unchanged.

The encoder's parameters live under ``params["encoder"]`` (the tree
:func:`jaxloss.models.load_pretrained` returns), so they can be replaced by the
pretrained ones after ``init`` and labelled by :mod:`jaxloss.finetune`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxloss.models.bert import BertEncoder, mean_pool

POOLINGS = ("pooler", "cls", "mean")


def sentence_vector(encoder: BertEncoder, hidden: jax.Array, attention_mask: jax.Array,
                    pooling: str) -> jax.Array:
  """``[B, H]`` of a last hidden state ``[B, S, H]``: the encoder's pooler
  (``tanh(dense(h[:, 0]))``, BERT/JointBERT), the first token's state (``cls``) or the
  masked mean (``mean``, sentence-transformers and e5)."""
  if pooling == "pooler":
    return encoder.pool(hidden)
  if pooling == "cls":
    return hidden[:, 0]
  return mean_pool(hidden, attention_mask).astype(hidden.dtype)


def _joint_heads(words, pooled, *, num_tags: int, sentence_classes: tuple,
                 dropout_rate: float, train: bool) -> dict:
  """The tag head on word states ``[B, T, H]`` and one head per sentence field on the
  sentence vector ``[B, H]``, as Dense layers named ``tags`` and ``<field>`` in the
  calling module's scope (so both models below have the same head parameters)."""
  names = [name for name, _ in sentence_classes]
  if "tags" in names or len(set(names)) != len(names):
    raise ValueError(f"sentence_classes names must be unique and not 'tags', got "
                     f"{names}")
  drop = nn.Dropout(dropout_rate, deterministic=not train)
  out = {"tags": nn.Dense(num_tags, name="tags")(drop(words)).astype(jnp.float32)}
  pooled = drop(pooled)
  for name, k in sentence_classes:
    out[name] = nn.Dense(k, name=name)(pooled).astype(jnp.float32)
  return out


class JointNluHeads(nn.Module):
  """The heads of :class:`EncoderJointNluModel` alone, on cached encoder features (a
  frozen encoder run once over the data): the same parameters, without ``encoder``.

  Call: ``word_features [B, T, H]`` (each word's first sub-word state),
  ``sentence_features [B, H]`` (the pooled vector), ``lengths [B]`` (unused), ``train``
  -> ``{"tags": [B, T, C], field: [B, K_field]}`` float32 logits.
  """
  num_tags: int
  sentence_classes: tuple = (("intent", 7),)
  dropout_rate: float = 0.1

  @nn.compact
  def __call__(self, word_features, sentence_features, lengths, *, train: bool):
    del lengths
    return _joint_heads(word_features, sentence_features, num_tags=self.num_tags,
                        sentence_classes=self.sentence_classes,
                        dropout_rate=self.dropout_rate, train=train)


class EncoderJointNluModel(nn.Module):
  """Joint sentence labels + BIO tags on a pretrained encoder (JointBERT).

  Attributes:
    encoder: the :class:`~jaxloss.models.bert.BertEncoder` (its params: ``encoder``).
    num_tags: C, the tag vocabulary size.
    sentence_classes: ``((field, num_classes), ...)``, e.g. ``(("intent", 7),)``.
    dropout_rate: dropout on the sentence vector and the word states (JointBERT 0.1).
    pooling: the sentence vector, one of :data:`POOLINGS`; ``"pooler"`` needs an
      encoder with ``add_pooler``.
    freeze_encoder: no gradient through the encoder (``jax.lax.stop_gradient`` on its
      output, so the backward pass skips it); pair it with an optimizer that leaves
      the encoder's parameters alone (:func:`jaxloss.finetune.make_finetune_optimizer`
      with ``freeze_encoder``). The pooler, part of the encoder, is frozen too.

  Call: ``subword_ids [B, S]`` int, ``subword_mask [B, S]`` (1 real, 0 padding),
  ``word_index [B, T]`` int (position in ``0 .. S-1`` of each word's first sub-word;
  any value at padded words), ``lengths [B]`` (words; unused by the model, kept for the
  recipe's interface), ``train`` -> ``{"tags": [B, T, C], field: [B, K_field]}`` float32
  logits.

  Raises:
    ValueError: an unknown ``pooling``, or sentence fields that are not unique or are
      named ``tags``.
  """
  encoder: BertEncoder
  num_tags: int
  sentence_classes: tuple = (("intent", 7),)
  dropout_rate: float = 0.1
  pooling: str = "pooler"
  freeze_encoder: bool = False

  @nn.compact
  def __call__(self, subword_ids, subword_mask, word_index, lengths, *, train: bool):
    del lengths
    words, pooled = self.features(subword_ids, subword_mask, word_index, train=train)
    return _joint_heads(words, pooled, num_tags=self.num_tags,
                        sentence_classes=self.sentence_classes,
                        dropout_rate=self.dropout_rate, train=train)

  def features(self, subword_ids, subword_mask, word_index, *, train: bool = False):
    """``(word_features [B, T, H], sentence_features [B, H])``: what the heads read
    (the input of :class:`JointNluHeads`; ``apply(..., method="features")``)."""
    if self.pooling not in POOLINGS:
      raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
    hidden = self.encoder(subword_ids, subword_mask,
                          deterministic=not train or self.freeze_encoder)
    words = jnp.take_along_axis(hidden, word_index[..., None].astype(jnp.int32), axis=1)
    pooled = sentence_vector(self.encoder, hidden, subword_mask, self.pooling)
    if self.freeze_encoder:
      words, pooled = jax.lax.stop_gradient((words, pooled))
    return words, pooled
