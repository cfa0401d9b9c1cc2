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

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxloss.models.bert import BertEncoder, mean_pool
from jaxloss.models.dense import Dense
from jaxloss.models.text import aspect_logits, masked_mean_max, varying_like

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
  out = {"tags": Dense(num_tags, name="tags")(drop(words)).astype(jnp.float32)}
  pooled = drop(pooled)
  for name, k in sentence_classes:
    out[name] = Dense(k, name=name)(pooled).astype(jnp.float32)
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


def _aspect_heads(embedding, *, num_aspects: int, num_classes: int, dropout_rate: float,
                  projection_dim: int, train: bool, states=None, mask=None) -> dict:
  """The per-aspect classifier and the SupCon projection (Dense-ReLU-Dense) on a review
  vector ``[B, E]``, as layers named ``classifier``, ``projection_hidden`` and
  ``projection`` in the calling module's scope. With token ``states [B, S, H]`` and
  their ``mask``, each aspect also reads its own attention pooling of the states
  (:func:`jaxloss.models.text.aspect_logits`)."""
  embedding = embedding.astype(jnp.float32)
  logits = aspect_logits(embedding, states, mask, num_aspects=num_aspects,
                         num_classes=num_classes, dropout_rate=dropout_rate, train=train)
  hidden = nn.relu(Dense(embedding.shape[-1], name="projection_hidden")(embedding))
  projection = Dense(projection_dim, name="projection")(hidden)
  return {"logits": logits, "projection": projection, "embedding": embedding}


def _token_bilstm(states, mask, hidden: int, dropout_rate: float, train: bool):
  """A BiLSTM over token states ``[B, S, H]``: its masked mean+max pooling ``[B, 4 *
  hidden]`` and its states ``[B, S, 2 * hidden]`` (the from-scratch model's encoder on
  pretrained states)."""
  mask = mask.astype(bool)
  lengths = jnp.maximum(jnp.sum(mask, axis=-1), 1).astype(jnp.int32)
  x = nn.Dropout(dropout_rate, deterministic=not train)(states.astype(jnp.float32))
  zeros = varying_like(jnp.zeros((x.shape[0], hidden), x.dtype), x)
  x = nn.Bidirectional(nn.RNN(nn.OptimizedLSTMCell(hidden)),
                       nn.RNN(nn.OptimizedLSTMCell(hidden)), name="token_bilstm"
                       )(x, seq_lengths=lengths, initial_carry=((zeros, zeros),
                                                                (zeros, zeros)))
  return masked_mean_max(x, mask), x


class AspectSentimentHeads(nn.Module):
  """The multi-aspect heads on a frozen encoder's cached token states: a BiLSTM of
  ``token_hidden`` units a direction over the states, masked mean+max pooling, then
  the per-aspect classifier and the SupCon projection (the heads of
  :class:`EncoderAspectSentimentModel`).

  ``aspect_attention``: each aspect's classifier also reads its own attention pooling
  of the BiLSTM's states (:func:`jaxloss.models.text.aspect_logits`).

  Call: ``token_features [B, S, H]`` (any float dtype), ``subword_mask [B, S]`` (1 real,
  0 padding), ``train`` -> ``{"logits": [B, A, C], "projection": [B, projection_dim],
  "embedding": [B, 4 * token_hidden]}`` float32.
  """
  num_aspects: int = 10
  num_classes: int = 4
  token_hidden: int = 128
  dropout_rate: float = 0.1
  projection_dim: int = 128
  aspect_attention: bool = False

  @nn.compact
  def __call__(self, token_features, subword_mask, *, train: bool):
    embedding, states = _token_bilstm(token_features, subword_mask, self.token_hidden,
                                      self.dropout_rate, train)
    return _aspect_heads(embedding, num_aspects=self.num_aspects,
                         num_classes=self.num_classes, dropout_rate=self.dropout_rate,
                         projection_dim=self.projection_dim, train=train,
                         states=states if self.aspect_attention else None,
                         mask=subword_mask)


class EncoderAspectSentimentModel(nn.Module):
  """Multi-aspect sentiment on a pretrained encoder: the review vector (mean-pooled
  last hidden state for e5 / sentence-transformers, or the pooler / first token), a
  per-aspect classifier ``[A, C]`` and a SupCon projection (Dense-ReLU-Dense); the
  fine-tuning form of :class:`~jaxloss.models.text.AspectSentimentModel` (Khosla et
  al., *Supervised Contrastive Learning*, NeurIPS 2020, beside a focal classifier, as
  in the practitioners' recipe).

  Attributes:
    encoder: the :class:`~jaxloss.models.bert.BertEncoder` (its params: ``encoder``).
    num_aspects, num_classes: A and C (10 and 4 on UIT-ViSFD).
    dropout_rate: dropout on the review vector (and the token BiLSTM's input).
    projection_dim: the SupCon projection's width.
    pooling: one of :data:`POOLINGS`.
    token_hidden: None: the heads read the pooled vector. An int: a BiLSTM of that
      many units a direction over the last hidden states, mean+max pooled (the
      heads of the frozen per-token row; ``pooling`` is then unused).
    freeze_encoder: no gradient through the encoder (``stop_gradient`` on its output).
    aspect_attention: each aspect's classifier also reads its own attention pooling
      (:class:`~jaxloss.models.text.AspectAttention`) of the states the heads read:
      the last hidden states, or the token BiLSTM's with ``token_hidden``. The
      projection still reads the review vector.

  Call: ``subword_ids [B, S]`` int, ``subword_mask [B, S]``, ``train`` ->
  ``{"logits": [B, A, C], "projection": [B, P], "embedding": [B, E]}`` float32.

  Raises:
    ValueError: an unknown ``pooling``.
  """
  encoder: BertEncoder
  num_aspects: int = 10
  num_classes: int = 4
  dropout_rate: float = 0.1
  projection_dim: int = 128
  pooling: str = "mean"
  token_hidden: Optional[int] = None
  freeze_encoder: bool = False
  aspect_attention: bool = False

  @nn.compact
  def __call__(self, subword_ids, subword_mask, *, train: bool):
    if self.pooling not in POOLINGS:
      raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
    hidden = self.token_features(subword_ids, subword_mask, train=train)
    if self.token_hidden is not None:
      embedding, states = _token_bilstm(hidden, subword_mask, self.token_hidden,
                                        self.dropout_rate, train)
    else:
      embedding, states = sentence_vector(self.encoder, hidden, subword_mask,
                                          self.pooling), hidden
      if self.freeze_encoder:
        embedding = jax.lax.stop_gradient(embedding)
    attended = states if self.aspect_attention else None
    return _aspect_heads(embedding, num_aspects=self.num_aspects,
                         num_classes=self.num_classes, dropout_rate=self.dropout_rate,
                         projection_dim=self.projection_dim, train=train,
                         states=attended, mask=subword_mask)

  def token_features(self, subword_ids, subword_mask, *, train: bool = False):
    """The last hidden state ``[B, S, H]`` (the input of :class:`AspectSentimentHeads`;
    ``apply(..., method="token_features")``)."""
    hidden = self.encoder(subword_ids, subword_mask,
                          deterministic=not train or self.freeze_encoder)
    return jax.lax.stop_gradient(hidden) if self.freeze_encoder else hidden


class TokenStatesClassifier(nn.Module):
  """One softmax classifier on a frozen encoder's cached token states: a BiLSTM of
  ``token_hidden`` units a direction, masked mean+max pooling, dropout, Dense (small
  init, std 0.01, so an untrained model's cross-entropy is ≈ ln C).

  Call: ``token_features [B, S, H]``, ``subword_mask [B, S]``, ``train`` -> float32
  logits ``[B, C]``; ``dropout`` is accepted and ignored (the imbalance recipe's
  evaluation call).
  """
  num_classes: int
  token_hidden: int = 128
  dropout_rate: float = 0.1

  @nn.compact
  def __call__(self, token_features, subword_mask, *, train: bool, dropout=None):
    del dropout
    h, _ = _token_bilstm(token_features, subword_mask, self.token_hidden,
                         self.dropout_rate, train)
    h = nn.Dropout(self.dropout_rate, deterministic=not train)(h)
    return Dense(self.num_classes, kernel_init=nn.initializers.normal(0.01),
                    name="classifier")(h)


class EncoderClassifier(nn.Module):
  """Sentence classification on a pretrained encoder: the pooled sentence vector (or a
  BiLSTM over the token states), dropout and a softmax classifier (small init, std
  0.01), fine-tuned with the encoder (the usual BERT sequence classifier).

  Attributes:
    encoder: the :class:`~jaxloss.models.bert.BertEncoder` (its params: ``encoder``).
    num_classes: C.
    dropout_rate: dropout before the classifier.
    pooling: one of :data:`POOLINGS`.
    token_hidden: None, or a BiLSTM of that many units a direction over the states.
    freeze_encoder: no gradient through the encoder.

  Call: ``subword_ids [B, S]``, ``subword_mask [B, S]``, ``train`` -> float32 logits
  ``[B, C]``; ``dropout`` is accepted and ignored.

  Raises:
    ValueError: an unknown ``pooling``.
  """
  encoder: BertEncoder
  num_classes: int
  dropout_rate: float = 0.1
  pooling: str = "mean"
  token_hidden: Optional[int] = None
  freeze_encoder: bool = False

  @nn.compact
  def __call__(self, subword_ids, subword_mask, *, train: bool, dropout=None):
    del dropout
    if self.pooling not in POOLINGS:
      raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
    hidden = self.token_features(subword_ids, subword_mask, train=train)
    if self.token_hidden is not None:
      h, _ = _token_bilstm(hidden, subword_mask, self.token_hidden, self.dropout_rate,
                           train)
    else:
      h = sentence_vector(self.encoder, hidden, subword_mask, self.pooling)
      if self.freeze_encoder:
        h = jax.lax.stop_gradient(h)
    h = nn.Dropout(self.dropout_rate, deterministic=not train)(h.astype(jnp.float32))
    return Dense(self.num_classes, kernel_init=nn.initializers.normal(0.01),
                    name="classifier")(h)

  def token_features(self, subword_ids, subword_mask, *, train: bool = False):
    """The last hidden state ``[B, S, H]`` (``apply(..., method="token_features")``)."""
    hidden = self.encoder(subword_ids, subword_mask,
                          deterministic=not train or self.freeze_encoder)
    return jax.lax.stop_gradient(hidden) if self.freeze_encoder else hidden
