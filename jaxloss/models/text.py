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
from jaxloss.models.dense import Dense, attention_kwargs


def varying_like(x: jax.Array, ref: jax.Array) -> jax.Array:
  """``x`` with the varying manual axes of ``ref`` that it lacks (inside
  ``shard_map``; a no-op outside). A scan's initial carry must have the type of the
  carry it produces, which varies over the mesh axes when the inputs and parameters
  do."""
  def axes(a):
    aval = jax.typeof(a)
    mat = getattr(aval, "manual_axis_type", None)  # JAX >= 0.9
    return set((mat.varying if mat is not None else getattr(aval, "vma", ())) or ())

  vma = tuple(sorted(axes(ref) - axes(x)))
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
    keys = jnp.tanh(Dense(self.attention_dim or x.shape[-1], name="key")(x))
    scores = Dense(self.num_aspects, use_bias=False, name="query")(keys)
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
    logits = Dense(num_aspects * num_classes, name=name)(drop(embedding))
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
    hidden = nn.relu(Dense(embedding.shape[-1], name="Dense_1")(embedding))
    projection = Dense(self.projection_dim, name="Dense_2")(hidden)
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
    return Dense(self.num_classes, kernel_init=nn.initializers.normal(0.01))(h)


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


def _token_vote(per_token: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Stack-Propagation's sentence label from token-level logits ``[B, T, K]``: the mean
  over the real tokens (``mask [B, T]``) of their log-probabilities ``[B, K]``, and the
  tokens' probabilities ``[B, T, K]`` that the tag head reads."""
  log_p = jax.nn.log_softmax(per_token, axis=-1)
  m = mask[..., None].astype(log_p.dtype)
  return (jnp.sum(log_p * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0),
          jnp.exp(log_p))


class _FeedbackStep(nn.Module):
  """One token of :class:`LabelFeedbackLSTM` (scanned over the time axis)."""
  num_classes: int
  hidden: int
  label_embed_dim: int
  valid: tuple | None
  allowed: tuple | None

  @nn.compact
  def __call__(self, carry, xs):
    lstm_carry, previous, force = carry
    x_t, gold_previous = xs
    chosen_previous = jnp.where(force, gold_previous, previous)
    # Row K of the table is the learned start symbol (Stack-Propagation's init tensor).
    label = nn.Embed(self.num_classes + 1, self.label_embed_dim,
                     name="label_embedding")(chosen_previous)
    lstm_carry, h = nn.OptimizedLSTMCell(self.hidden, name="lstm")(
        lstm_carry, jnp.concatenate([x_t, label], axis=-1))
    logits = Dense(self.num_classes, name="out")(h)
    ok = jnp.ones((self.num_classes,), bool)
    if self.valid is not None:
      ok = ok & jnp.asarray(self.valid, bool)
    if self.allowed is not None:  # [K + 1, K]: the row of the previous label
      ok = ok & jnp.asarray(self.allowed, bool)[chosen_previous]
    # -inf feeds an argmax only (no softmax, no gradient). BIO always allows O, so a row
    # is never all False under the recipe's masks (all False would choose label 0).
    choice = jnp.argmax(jnp.where(ok, logits, -jnp.inf), axis=-1).astype(jnp.int32)
    return (lstm_carry, choice, force), (logits, choice)


class LabelFeedbackLSTM(nn.Module):
  """Stack-Propagation's label decoder: a unidirectional LSTM over token features whose
  input at token t also holds an embedding of the label at token t - 1 (a learned start
  symbol at t = 0). Under teacher forcing that label is the gold one; otherwise it is
  the decoder's own greedy choice, the argmax of its logits over the labels allowed
  (``valid``, and the row of ``allowed`` for the previous label). Decoding runs left to
  right, so tokens after a sentence's length change nothing before it.

  Attributes:
    num_classes: K, the labels.
    hidden: LSTM width (Stack-Propagation: 64).
    label_embed_dim: width of the previous label's embedding (Stack-Propagation: 32
      for slots, 8 for intents).
    valid: None, or K bools: labels that may be chosen.
    allowed: None, or ``K + 1`` rows of K bools: the labels allowed after label i
      (row K: at the first token), e.g. BIO's transitions.

  Call: ``x [B, T, D]`` float, ``forced`` int ``[B, T]`` gold labels (negative ones, the
  padding, are read as label 0) or None (greedy),
  ``force`` bool scalar (use ``forced``; ignored when it is None) -> ``(logits [B, T, K]
  float32, choices [B, T] int32)``: the choices are the decoder's greedy label at each
  token (what it feeds forward when not forced; with ``forced=None`` they are its
  decoding). Raises ValueError if ``forced`` is not ``[B, T]``.

  Reference: L. Qin et al., *A Stack-Propagation Framework with Token-Level Intent
  Detection for Spoken Language Understanding*, EMNLP 2019 (its ``LSTMDecoder``,
  teacher-forced with probability 0.9 a batch in training).

  Examples:
    >>> dec = LabelFeedbackLSTM(num_classes=4, hidden=8)
    >>> x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 3))
    >>> variables = dec.init(jax.random.PRNGKey(1), x)
    >>> logits, choices = dec.apply(variables, x)  # greedy
    >>> logits.shape, choices.shape
    ((2, 5, 4), (2, 5))
    >>> # Fed its own choices as gold labels, it computes the same logits.
    >>> forced, _ = dec.apply(variables, x, choices, True)
    >>> bool(jnp.all(forced == logits))
    True
  """
  num_classes: int
  hidden: int = 64
  label_embed_dim: int = 32
  valid: tuple | None = None
  allowed: tuple | None = None

  @nn.compact
  def __call__(self, x, forced=None, force=False):
    b, t = x.shape[:2]
    if forced is None:
      forced, force = jnp.zeros((b, t), jnp.int32), False
    if forced.shape != (b, t):
      raise ValueError(f"forced must be [B, T] = {(b, t)}, got {forced.shape}")
    start = jnp.full((b, 1), self.num_classes, jnp.int32)
    # Padding labels (-1) are clipped: only later tokens read them, and those are padding.
    forced = jnp.clip(forced.astype(jnp.int32), 0, self.num_classes - 1)
    gold_previous = jnp.concatenate([start, forced[:, :-1]], axis=1)
    zeros = varying_like(jnp.zeros((b, self.hidden), x.dtype), x)
    carry = ((zeros, zeros), varying_like(start[:, 0], x),
             varying_like(jnp.asarray(force, bool), x))
    scan = nn.scan(_FeedbackStep, variable_broadcast="params",
                   split_rngs={"params": False}, in_axes=1, out_axes=1)
    _, (logits, choices) = scan(self.num_classes, self.hidden, self.label_embed_dim,
                                self.valid, self.allowed, name="step")(
                                    carry, (x, gold_previous))
    return logits, choices


class JointNluModel(nn.Module):
  """Joint intent (+ any sentence-level labels) and BIO tagging model from scratch.

  Words are embedded (with *word dropout*: in training a word id is replaced by UNK = 1
  with probability ``word_dropout_rate``, and a word seen once in training with
  probability ``singleton_unk_rate`` as well, so the tagger learns to label unseen words
  from their characters and context), concatenated with :class:`CharCNN` features, and run
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
    singleton_unk_rate, singleton_start: the rate at which, in training, words seen
      only once in the training data become UNK (Lample et al.'s singleton
      replacement; they use 0.5), and the first id of those words: the vocabulary
      lists words most frequent first (:meth:`jaxloss.data.Vocabulary.build`), so the
      singletons are the ids ``>= singleton_start`` (None: there are none).
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
    decoder_hidden: 0, or Stack-Propagation's decoders of this width: the tag head (and,
      with ``token_level``, each field's token head) becomes a
      :class:`LabelFeedbackLSTM` over the BiLSTM (+ self-attention) states that reads
      the previous token's label. In training it is fed the gold labels
      (``teacher_tags``, ``teacher_labels``) with probability ``teacher_forcing`` a
      batch (one draw per decoder), else its own greedy choices; in evaluation always
      its own. Not with ``crf``.
    teacher_forcing: that probability (Stack-Propagation: 0.9).
    tag_valid, tag_allowed: the tag decoder's ``valid`` and ``allowed`` masks (tuples
      of bools; None: every tag, every transition).

  Call: ``ids [B, T]``, ``chars [B, T, W]``, ``lengths [B]`` (>= 1), and with
  ``decoder_hidden`` optionally the gold ``teacher_tags [B, T]`` and one ``[B]`` int
  array per sentence field (teacher forcing; used only with ``train=True``) ->
  ``{"tags": [B, T, C], field: [B, K_field] for each sentence field}`` float32 logits
  (unmasked; with ``token_level`` also ``"<field>_tokens" [B, T, K_field]``; with
  ``decoder_hidden`` also the tag decoder's greedy ``"tag_choices" [B, T]`` int32, the
  tags it predicts).
  With ``crf=True`` the output also holds the CRF's learned tag scores
  ``"tag_transitions" [C, C]``, ``"tag_start" [C]`` and ``"tag_end" [C]`` (parameters,
  initialised at 0) for :func:`jaxloss.losses.crf_sequence_loss` and
  :func:`jaxloss.decoding.crf_decode`.

  References:
    C.-W. Goo et al., *Slot-Gated Modeling for Joint Slot Filling and Intent
    Prediction*, NAACL 2018. G. Lample et al., *Neural Architectures for Named Entity
    Recognition*, NAACL 2016 (singleton replacement). X. Ma, E. Hovy, *End-to-end
    Sequence Labeling via Bi-directional LSTM-CNNs-CRF*, ACL 2016. L. Qin et al., *A
    Stack-Propagation Framework with Token-Level Intent Detection for Spoken Language
    Understanding*, EMNLP 2019.
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
  singleton_unk_rate: float = 0.0
  singleton_start: int | None = None
  crf: bool = False
  attention_heads: int = 0
  token_level: bool = False
  decoder_hidden: int = 0
  teacher_forcing: float = 0.9
  tag_valid: tuple | None = None
  tag_allowed: tuple | None = None

  @nn.compact
  def __call__(self, ids, chars, lengths, teacher_tags=None, *teacher_labels,
               train: bool):
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
    if train and self.singleton_unk_rate > 0 and self.singleton_start is not None:
      drop = jax.random.bernoulli(self.make_rng("dropout"), self.singleton_unk_rate,
                                  ids.shape)
      ids = jnp.where(drop & mask & (ids >= self.singleton_start), 1, ids)
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
    context = jnp.broadcast_to(Dense(self.hidden, name="context")(sentence)[:, None],
                               x.shape[:2] + (self.hidden,))

    def attend():
      return nn.MultiHeadDotProductAttention(
          num_heads=self.attention_heads, qkv_features=2 * self.hidden,
          dropout_rate=self.dropout_rate, deterministic=not train, name="self_attention",
          **attention_kwargs())(
              x, mask=nn.make_attention_mask(mask, mask))

    if self.decoder_hidden:
      return self._decoders(x, mask, sentence, context, attend, teacher_tags,
                            teacher_labels, train=train)
    parts = [x, nn.relu(context)]
    if self.token_level:
      states = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
      out = {}
      for name, k in self.sentence_classes:
        per_token = Dense(k, name=f"{name}_token_head")(states)  # [B, T, K]
        out[f"{name}_tokens"] = per_token
        out[name], probs = _token_vote(per_token, mask)
        parts.append(probs)
    else:
      out = {name: Dense(k, name=f"{name}_head")(sentence)
             for name, k in self.sentence_classes}
    if self.attention_heads:
      parts.append(attend())
    tokens = nn.Dropout(self.dropout_rate, deterministic=not train)(
        jnp.concatenate(parts, axis=-1))
    out["tags"] = Dense(self.num_tags, name="tag_head")(tokens)
    if self.crf:
      zeros = nn.initializers.zeros
      out["tag_transitions"] = self.param("crf_transitions", zeros,
                                          (self.num_tags, self.num_tags))
      out["tag_start"] = self.param("crf_start", zeros, (self.num_tags,))
      out["tag_end"] = self.param("crf_end", zeros, (self.num_tags,))
    return out

  def _decoders(self, x, mask, sentence, context, attend, teacher_tags, teacher_labels,
                *, train: bool):
    """Stack-Propagation's decoders (``decoder_hidden > 0``): the token-level label
    decoders (with ``token_level``) and the tag decoder, each a
    :class:`LabelFeedbackLSTM` over the BiLSTM (+ self-attention) states."""
    if self.crf:
      raise ValueError("decoder_hidden > 0 decodes tags greedily in the model; it "
                       "cannot be combined with crf=True")
    if teacher_labels and len(teacher_labels) != len(self.sentence_classes):
      raise ValueError(f"teacher_labels: one [B] array per sentence field "
                       f"{[n for n, _ in self.sentence_classes]}, got "
                       f"{len(teacher_labels)}")
    dropout = nn.Dropout(self.dropout_rate, deterministic=not train)

    def forcing(gold):
      if not train or gold is None:
        return None, False
      return gold, jax.random.bernoulli(self.make_rng("dropout"), self.teacher_forcing)

    states = x if not self.attention_heads else jnp.concatenate([x, attend()], -1)
    parts, out = [states, nn.relu(context)], {}
    if self.token_level:
      for i, (name, k) in enumerate(self.sentence_classes):
        gold = (jnp.broadcast_to(teacher_labels[i][:, None], mask.shape)
                if teacher_labels else None)
        per_token, _ = LabelFeedbackLSTM(k, self.decoder_hidden, label_embed_dim=8,
                                         name=f"{name}_token_decoder")(
                                             dropout(states), *forcing(gold))
        out[f"{name}_tokens"] = per_token
        out[name], probs = _token_vote(per_token, mask)
        parts.append(probs)
    else:
      out = {name: Dense(k, name=f"{name}_head")(sentence)
             for name, k in self.sentence_classes}
    out["tags"], out["tag_choices"] = LabelFeedbackLSTM(
        self.num_tags, self.decoder_hidden, label_embed_dim=32, valid=self.tag_valid,
        allowed=self.tag_allowed, name="tag_decoder")(
            dropout(jnp.concatenate(parts, axis=-1)), *forcing(teacher_tags))
    return out
