"""Text encoders trained from scratch, and the multi-aspect sentiment model.

:class:`BiLSTMEncoder` embeds token ids, runs ``num_layers`` bidirectional LSTMs that
respect each sequence's length (the backward direction starts at the last real token,
so padding never leaks in), and pools the valid positions by mean and max.
:class:`AspectSentimentModel` puts an ``[A, C]`` classifier (one softmax per aspect)
and a SupCon projection head on the pooled embedding; with ``aspect_attention`` each
aspect's classifier also reads its own :class:`AspectAttention` pooling of the states.

References:
  S. Hochreiter, J. Schmidhuber, *Long Short-Term Memory*, Neural Computation 1997.
  P. Khosla et al., *Supervised Contrastive Learning*, NeurIPS 2020 (projection head).
  D. Bahdanau, K. Cho, Y. Bengio, *Neural Machine Translation by Jointly Learning to
  Align and Translate*, ICLR 2015 (additive attention).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxloss.losses.masking import mask_invalid_logits


def varying_like(x: jax.Array, ref: jax.Array) -> jax.Array:
  """``x`` with the varying manual axes of ``ref`` (inside ``shard_map``; a no-op
  outside). A scan's zero initial carry must have the type of the carry it produces,
  which varies over the mesh axes when the inputs and parameters do."""
  aval = jax.typeof(ref)
  mat = getattr(aval, "manual_axis_type", None)  # JAX >= 0.9
  vma = mat.varying if mat is not None else getattr(aval, "vma", ())
  vma = tuple(sorted(vma or ()))
  return jax.lax.pcast(x, vma, to="varying") if vma else x


def masked_mean_max(x: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean and max of ``x [B, L, D]`` over the positions where ``mask [B, L]`` is True,
  concatenated: ``[B, 2 * D]``. The fill for the max is finite (not -inf), so a padded
  position never wins it and an all-padding row stays finite."""
  m = mask[..., None].astype(x.dtype)
  mean = jnp.sum(x * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0)
  maxed = jnp.max(jnp.where(m > 0, x, -1e9), axis=1)
  return jnp.concatenate([mean, maxed], axis=-1)


class BiLSTMEncoder(nn.Module):
  """Embedding, bidirectional LSTM layers, masked mean+max pooling.

  Attributes:
    vocab_size: ids are in ``[0, vocab_size)``; id 0 is padding.
    embed_dim: embedding width.
    hidden: LSTM units per direction.
    num_layers: stacked bidirectional layers (>= 1).
    dropout_rate: dropout on the embeddings and between layers (training only).

  Call: ``ids`` int ``[B, L]``, ``lengths`` int ``[B]`` (>= 1; positions ``>= length``
  are padding); returns float32 ``[B, 4 * hidden]`` (mean and max over valid positions
  of the concatenated forward/backward states), or with ``return_states`` the pair
  ``(pooled [B, 4 * hidden], states [B, L, 2 * hidden])`` (same parameters).
  """
  vocab_size: int
  embed_dim: int = 128
  hidden: int = 128
  num_layers: int = 1
  dropout_rate: float = 0.2
  return_states: bool = False

  @nn.compact
  def __call__(self, ids: jax.Array, lengths: jax.Array, *, train: bool):
    if self.num_layers < 1:
      raise ValueError(f"num_layers must be >= 1, got {self.num_layers}")
    mask = jnp.arange(ids.shape[1])[None, :] < lengths[:, None]
    x = nn.Embed(self.vocab_size, self.embed_dim)(ids)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    for layer in range(self.num_layers):
      if layer:
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
      zeros = varying_like(jnp.zeros((ids.shape[0], self.hidden), x.dtype), x)
      x = nn.Bidirectional(
          nn.RNN(nn.OptimizedLSTMCell(self.hidden)),
          nn.RNN(nn.OptimizedLSTMCell(self.hidden)),
      )(x, seq_lengths=lengths, initial_carry=((zeros, zeros), (zeros, zeros)))
    pooled = masked_mean_max(x, mask)
    return (pooled, x) if self.return_states else pooled


class AspectAttention(nn.Module):
  """One attention pooling per aspect over token states (additive attention, Bahdanau
  et al., ICLR 2015; one query per aspect as in aspect-category sentiment models, e.g.
  Wang et al., *Attention-based LSTM for Aspect-level Sentiment Classification*, EMNLP
  2016): ``score[b, t, a] = q_a . tanh(W h[b, t] + c)``, softmax over the real
  positions ``t``, and each aspect's vector is its weighted mean of the states.

  A review vector shared by every aspect (a mean) dilutes an aspect named by two words
  of fifty; this lets each aspect read its own words.

  Attributes:
    num_aspects: A.
    attention_dim: width of ``tanh(W h + c)``; None: the states' width.

  Call: ``states [B, L, D]`` (any float dtype), ``mask [B, L]`` (True / 1 at real
  positions) -> ``(vectors [B, A, D], weights [B, L, A])`` float32; ``weights`` sum
  to 1 over ``L`` (uniform on a row with no real position). ``weights`` are also sown
  as ``intermediates/.../weights`` (see :func:`attended_positions`).
  """
  num_aspects: int
  attention_dim: int | None = None

  @nn.compact
  def __call__(self, states: jax.Array, mask: jax.Array):
    x = states.astype(jnp.float32)
    keys = jnp.tanh(nn.Dense(self.attention_dim or x.shape[-1], name="key")(x))
    scores = nn.Dense(self.num_aspects, use_bias=False, name="query")(keys)
    scores = mask_invalid_logits(scores, mask.astype(bool)[..., None])  # finite fill
    weights = jax.nn.softmax(scores, axis=1)
    # Kept when "intermediates" is mutable (apply(..., mutable=["intermediates"])), so a
    # caller can see what each aspect read; a no-op otherwise.
    self.sow("intermediates", "weights", weights)
    return jnp.einsum("bla,bld->bad", weights, x), weights


def attended_positions(intermediates) -> jax.Array:
  """``int32 [B, A]``: the position each aspect attended to most, from the
  ``intermediates`` collection of an ``apply(..., mutable=["intermediates"])`` of a
  model with one :class:`AspectAttention`.

  Raises:
    ValueError: no (or more than one) sown attention in ``intermediates``.
  """
  found = [v for path, v in jax.tree_util.tree_leaves_with_path(intermediates)
           if any(getattr(k, "key", None) == "weights" for k in path)]
  if len(found) != 1:
    raise ValueError(f"expected one AspectAttention's sown weights, found {len(found)}")
  return jnp.argmax(found[0], axis=1).astype(jnp.int32)


class AspectClassifier(nn.Module):
  """Per-aspect logits: one ``Dense(C)`` per aspect on that aspect's own features (a
  kernel ``[A, F, C]``, LeCun-normal per aspect, and a bias ``[A, C]``, float32), as
  the per-aspect heads of aspect-category sentiment models (Wang et al., EMNLP 2016).

  Call: ``features [..., A, F]`` float -> logits ``[..., A, C]`` float32 (tested equal
  to a loop of one dense layer per aspect in ``tests/models_text_test.py``).
  """
  num_classes: int

  @nn.compact
  def __call__(self, features: jax.Array) -> jax.Array:
    a, f = features.shape[-2:]
    kernel = self.param("kernel", nn.initializers.lecun_normal(batch_axis=(0,)),
                        (a, f, self.num_classes), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (a, self.num_classes), jnp.float32)
    return jnp.einsum("...af,afc->...ac", features, kernel) + bias


def aspect_logits(embedding: jax.Array, states: jax.Array | None, mask: jax.Array | None,
                  *, num_aspects: int, num_classes: int, dropout_rate: float,
                  train: bool, name: str = "classifier") -> jax.Array:
  """The ``[B, A, C]`` logits of the multi-aspect models, in the calling module's scope.

  ``states is None``: one ``Dense(A * C)`` on the review vector ``embedding [B, E]``
  (the recipe's shared head). Otherwise :class:`AspectAttention` over ``states [B, L,
  D]`` (``mask [B, L]``) gives each aspect its own vector, and :class:`AspectClassifier`
  reads it concatenated with the review vector (``[B, A, D + E]``). Logits are
  float32; dropout (``dropout_rate``, when ``train``) is applied to the classifier's
  input. ``mask`` is required with ``states`` (True / 1 at real positions)."""
  drop = nn.Dropout(dropout_rate, deterministic=not train)
  embedding = embedding.astype(jnp.float32)
  if states is None:
    logits = nn.Dense(num_aspects * num_classes, name=name)(drop(embedding))
    return logits.reshape(logits.shape[:-1] + (num_aspects, num_classes))
  vectors, _ = AspectAttention(num_aspects, name="aspect_attention")(states, mask)
  shared = jnp.broadcast_to(embedding[:, None, :], vectors.shape[:2] + embedding.shape[-1:])
  features = drop(jnp.concatenate([vectors, shared], axis=-1))
  return AspectClassifier(num_classes, name=name)(features)


class AspectSentimentModel(nn.Module):
  """A text encoder with a per-aspect classifier and a contrastive projection head.

  Attributes:
    vocab_size, embed_dim, hidden, num_layers, dropout_rate: see
      :class:`BiLSTMEncoder`.
    num_aspects: A (10 for UIT-ViSFD).
    num_classes: C per aspect (4: absent, positive, negative, neutral).
    projection_dim: width of the SupCon projection (Dense-ReLU-Dense).
    aspect_attention: False: the classifier reads the pooled review vector (one
      ``Dense(A * C)``). True: each aspect reads its own :class:`AspectAttention`
      pooling of the BiLSTM states, concatenated with the review vector (see
      :func:`aspect_logits`). The projection reads the review vector either way.

  Call: ``ids [B, L]``, ``lengths [B]`` -> ``{"logits": [B, A, C], "projection":
  [B, projection_dim], "embedding": [B, 4 * hidden]}`` (float32; the projection is not
  normalised, the loss normalises it).
  """
  vocab_size: int
  num_aspects: int = 10
  num_classes: int = 4
  embed_dim: int = 128
  hidden: int = 128
  num_layers: int = 1
  dropout_rate: float = 0.2
  projection_dim: int = 64
  aspect_attention: bool = False

  @nn.compact
  def __call__(self, ids, lengths, *, train: bool):
    embedding, states = BiLSTMEncoder(self.vocab_size, self.embed_dim, self.hidden,
                                      self.num_layers, self.dropout_rate,
                                      return_states=True)(ids, lengths, train=train)
    mask = jnp.arange(ids.shape[1])[None, :] < lengths[:, None]
    logits = aspect_logits(embedding, states if self.aspect_attention else None, mask,
                           num_aspects=self.num_aspects, num_classes=self.num_classes,
                           dropout_rate=self.dropout_rate, train=train,
                           name="Dense_0")
    # The names of the layers before ``aspect_attention`` existed, so checkpoints load.
    hidden = nn.relu(nn.Dense(embedding.shape[-1], name="Dense_1")(embedding))
    projection = nn.Dense(self.projection_dim, name="Dense_2")(hidden)
    return {"logits": logits, "projection": projection, "embedding": embedding}


class TextClassifier(nn.Module):
  """A text encoder with one softmax classifier (sentence classification).

  Attributes:
    vocab_size, embed_dim, hidden, num_layers, dropout_rate: see
      :class:`BiLSTMEncoder`.
    num_classes: C.

  Call: ``ids [B, L]``, ``lengths [B]`` -> float32 logits ``[B, C]``. ``dropout`` is
  accepted and ignored (dropout follows ``train``), so the imbalance trainer's
  evaluation call fits. The classifier starts small (normal, std 0.01), so an untrained
  model's cross-entropy is ≈ ln C.
  """
  vocab_size: int
  num_classes: int
  embed_dim: int = 128
  hidden: int = 128
  num_layers: int = 1
  dropout_rate: float = 0.2

  @nn.compact
  def __call__(self, ids, lengths, *, train: bool, dropout=None):
    del dropout
    embedding = BiLSTMEncoder(self.vocab_size, self.embed_dim, self.hidden,
                              self.num_layers, self.dropout_rate)(ids, lengths,
                                                                  train=train)
    h = nn.Dropout(self.dropout_rate, deterministic=not train)(embedding)
    return nn.Dense(self.num_classes, kernel_init=nn.initializers.normal(0.01))(h)


class CharCNN(nn.Module):
  """Character features of each word: embedding, a 1-D convolution over the word's
  characters, ReLU and a max over its real characters (Ma & Hovy, ACL 2016).

  Attributes:
    char_vocab_size: character ids are in ``[0, char_vocab_size)``; id 0 is padding.
    embed_dim: character embedding width.
    features: convolution filters (the output width).
    kernel_size: characters per filter window.

  Call: ``chars`` int ``[B, T, W]`` (W characters a word, 0 = padding) -> float32
  ``[B, T, features]`` (zeros for a word with no characters).
  """
  char_vocab_size: int
  embed_dim: int = 32
  features: int = 64
  kernel_size: int = 3

  @nn.compact
  def __call__(self, chars: jax.Array) -> jax.Array:
    x = nn.Embed(self.char_vocab_size, self.embed_dim)(chars)  # [B, T, W, E]
    x = nn.relu(nn.Conv(self.features, (self.kernel_size,), padding="SAME")(x))
    real = (chars > 0)[..., None]
    # Finite fill: a padded character never wins the max; an empty word gives 0.
    pooled = jnp.max(jnp.where(real, x, -1e9), axis=-2)
    return jnp.where(jnp.any(real, axis=-2), pooled, 0.0)


class JointNluModel(nn.Module):
  """Joint intent (+ any sentence-level labels) and BIO tagging model from scratch.

  Words are embedded (with *word dropout*: in training a word id is replaced by UNK = 1
  with probability ``word_dropout_rate``, so the tagger learns to label unseen words from
  their characters and context), concatenated with :class:`CharCNN` features, and run
  through ``num_layers`` bidirectional LSTMs that respect each sentence's length. The
  sentence vector is the masked mean and max of the token states; each sentence-level
  label (``intent``, ``command``, ...) has a Dense head on it, and the tag head reads each
  token state concatenated with the sentence vector (the sentence's intent context, as
  the slot-gated model of Goo et al. feeds the intent to the slots).

  Attributes:
    vocab_size: word ids in ``[0, vocab_size)``; 0 PAD, 1 UNK.
    char_vocab_size: character ids; 0 PAD.
    num_tags: C, the tag vocabulary size.
    sentence_classes: ``((field, num_classes), ...)``, e.g. ``(("intent", 8),)``.
    embed_dim, char_embed_dim, char_features, hidden, num_layers, dropout_rate,
    word_dropout_rate: sizes and rates.
    crf: add linear-chain CRF transition scores (BiLSTM-CNN-CRF, Ma & Hovy).
    attention_heads: 0, or the heads of a self-attention layer over the BiLSTM states
      whose output is concatenated to each token's state before the tag head, as the
      Stack-Propagation encoder concatenates BiLSTM and self-attention (Qin et al.).
    token_level: Stack-Propagation's token-level intent detection (Qin et al.) for
      every sentence field: each token state gets its own ``[K_field]`` logits
      (``"<field>_tokens" [B, T, K]``, trained per token), the sentence's logits are
      the mean over its real tokens of their log-probabilities (a soft vote), and the
      tag head also reads each token's field probabilities (the stack-propagation
      link from intent to slots, in its differentiable form).

  Call: ``ids [B, T]``, ``chars [B, T, W]``, ``lengths [B]`` (>= 1) -> ``{"tags":
  [B, T, C], field: [B, K_field] for each sentence field}`` float32 logits (unmasked;
  with ``token_level`` also ``"<field>_tokens" [B, T, K_field]``).
  With ``crf=True`` the output also holds the CRF's learned tag scores
  ``"tag_transitions" [C, C]``, ``"tag_start" [C]`` and ``"tag_end" [C]`` (parameters,
  initialised at 0) for :func:`jaxloss.losses.crf_sequence_loss` and
  :func:`jaxloss.decoding.crf_decode`.

  References:
    C.-W. Goo et al., *Slot-Gated Modeling for Joint Slot Filling and Intent
    Prediction*, NAACL 2018. X. Ma, E. Hovy, *End-to-end Sequence Labeling via
    Bi-directional LSTM-CNNs-CRF*, ACL 2016. L. Qin et al., *A Stack-Propagation
    Framework with Token-Level Intent Detection for Spoken Language Understanding*,
    EMNLP 2019.
  """
  vocab_size: int
  char_vocab_size: int
  num_tags: int
  sentence_classes: tuple = (("intent", 8),)
  embed_dim: int = 128
  char_embed_dim: int = 32
  char_features: int = 64
  hidden: int = 128
  num_layers: int = 1
  dropout_rate: float = 0.3
  word_dropout_rate: float = 0.0
  crf: bool = False
  attention_heads: int = 0
  token_level: bool = False

  @nn.compact
  def __call__(self, ids, chars, lengths, *, train: bool):
    if self.num_layers < 1:
      raise ValueError(f"num_layers must be >= 1, got {self.num_layers}")
    names = [name for name, _ in self.sentence_classes]
    if "tags" in names or len(set(names)) != len(names):
      raise ValueError(f"sentence_classes names must be unique and not 'tags', got "
                       f"{names}")
    mask = jnp.arange(ids.shape[1])[None, :] < lengths[:, None]
    if train and self.word_dropout_rate > 0:
      drop = jax.random.bernoulli(self.make_rng("dropout"), self.word_dropout_rate,
                                  ids.shape)
      ids = jnp.where(drop & mask, 1, ids)
    words = nn.Embed(self.vocab_size, self.embed_dim)(ids)
    x = jnp.concatenate([words, CharCNN(self.char_vocab_size, self.char_embed_dim,
                                        self.char_features)(chars)], axis=-1)
    for _ in range(self.num_layers):
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
      zeros = varying_like(jnp.zeros((ids.shape[0], self.hidden), x.dtype), x)
      x = nn.Bidirectional(
          nn.RNN(nn.OptimizedLSTMCell(self.hidden)),
          nn.RNN(nn.OptimizedLSTMCell(self.hidden)),
      )(x, seq_lengths=lengths, initial_carry=((zeros, zeros), (zeros, zeros)))
    sentence = nn.Dropout(self.dropout_rate, deterministic=not train)(
        masked_mean_max(x, mask))
    context = jnp.broadcast_to(nn.Dense(self.hidden, name="context")(sentence)[:, None],
                               x.shape[:2] + (self.hidden,))
    parts = [x, nn.relu(context)]
    if self.token_level:
      states = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
      out = {}
      for name, k in self.sentence_classes:
        per_token = nn.Dense(k, name=f"{name}_token_head")(states)  # [B, T, K]
        out[f"{name}_tokens"] = per_token
        log_p = jax.nn.log_softmax(per_token, axis=-1)
        m = mask[..., None].astype(log_p.dtype)
        out[name] = jnp.sum(log_p * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0)
        parts.append(jnp.exp(log_p))
    else:
      out = {name: nn.Dense(k, name=f"{name}_head")(sentence)
             for name, k in self.sentence_classes}
    if self.attention_heads:
      parts.append(nn.MultiHeadDotProductAttention(
          num_heads=self.attention_heads, qkv_features=2 * self.hidden,
          dropout_rate=self.dropout_rate, deterministic=not train, name="self_attention")(
              x, mask=nn.make_attention_mask(mask, mask)))
    tokens = nn.Dropout(self.dropout_rate, deterministic=not train)(
        jnp.concatenate(parts, axis=-1))
    out["tags"] = nn.Dense(self.num_tags, name="tag_head")(tokens)
    if self.crf:
      zeros = nn.initializers.zeros
      out["tag_transitions"] = self.param("crf_transitions", zeros,
                                          (self.num_tags, self.num_tags))
      out["tag_start"] = self.param("crf_start", zeros, (self.num_tags,))
      out["tag_end"] = self.param("crf_end", zeros, (self.num_tags,))
    return out
