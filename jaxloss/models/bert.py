"""BERT-family encoders (BERT, RoBERTa, XLM-R, PhoBERT, CamemBERT) in Flax linen, shaped
so that a Hugging Face checkpoint loads by renaming (:mod:`jaxloss.models.pretrained`).

:class:`BertEncoder` is the post-LN Transformer encoder of Devlin et al.: embeddings
(word + absolute position + token type, LayerNorm, dropout), then ``num_hidden_layers``
blocks of multi-head self-attention and a feed-forward network, each followed by
dropout, a residual connection and LayerNorm; an optional pooler ``tanh(dense(h[:, 0]))``.
RoBERTa-style checkpoints (``model_type`` ``roberta``, ``xlm-roberta``, ``camembert``)
differ only in their position ids, which start at ``pad_token_id + 1`` and skip padding
(``transformers``' ``create_position_ids_from_input_ids``), so ``pad_token_id + 1``
rows of their position table are never used by real tokens.

Parameter tree (names mirror the Hugging Face state dict; ``weight`` of a Linear layer
is ``kernel``, transposed to ``[in, out]``; of an Embedding, ``embedding``; of a
LayerNorm, ``scale``)::

  embeddings/word_embeddings/embedding          [vocab_size, H]
  embeddings/position_embeddings/embedding      [max_position_embeddings, H]
  embeddings/token_type_embeddings/embedding    [type_vocab_size, H]
  embeddings/LayerNorm/{scale, bias}            [H]
  encoder/layer_{i}/attention/self/{query, key, value}/{kernel [H, H], bias [H]}
  encoder/layer_{i}/attention/output/dense/{kernel [H, H], bias [H]}
  encoder/layer_{i}/attention/output/LayerNorm/{scale, bias}
  encoder/layer_{i}/intermediate/dense/{kernel [H, I], bias [I]}
  encoder/layer_{i}/output/dense/{kernel [I, H], bias [H]}
  encoder/layer_{i}/output/LayerNorm/{scale, bias}
  pooler/dense/{kernel [H, H], bias [H]}        (only with ``add_pooler``)

The layers are separate modules ``layer_0 .. layer_{L-1}`` (not a scan), so a
layer-wise learning-rate decay can label each parameter by its layer's name.

References:
  J. Devlin et al., *BERT: Pre-training of Deep Bidirectional Transformers for
  Language Understanding*, NAACL 2019.
  Y. Liu et al., *RoBERTa: A Robustly Optimized BERT Pretraining Approach*,
  arXiv:1907.11692, 2019.
  A. Conneau et al., *Unsupervised Cross-lingual Representation Learning at Scale*
  (XLM-R), ACL 2020.
  Hugging Face ``transformers``, ``models/bert/modeling_bert.py`` and
  ``models/roberta/modeling_roberta.py`` (the reference implementation).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxloss.models.dense import flat_dot_general

SUPPORTED_MODEL_TYPES = ("bert", "roberta", "xlm-roberta", "camembert")
# Model types whose position ids start at pad_token_id + 1 and skip padding.
ROBERTA_POSITION_TYPES = frozenset({"roberta", "xlm-roberta", "camembert"})
ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu")

# Defaults of transformers' BertConfig, for keys a config.json leaves out.
_HF_DEFAULTS = {
    "vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12,
    "num_attention_heads": 12, "intermediate_size": 3072, "hidden_act": "gelu",
    "max_position_embeddings": 512, "type_vocab_size": 2, "layer_norm_eps": 1e-12,
    "pad_token_id": 0, "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1, "initializer_range": 0.02,
}


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
  """The architecture of a BERT-family encoder, as a Hugging Face ``config.json``
  gives it (same field names and meanings).

  Attributes:
    model_type: one of :data:`SUPPORTED_MODEL_TYPES`.
    vocab_size, hidden_size (H), num_hidden_layers (L), num_attention_heads,
    intermediate_size (I): sizes; H must be a multiple of the head count.
    hidden_act: ``"gelu"`` (exact, erf), ``"gelu_new"`` / ``"gelu_pytorch_tanh"``
      (tanh approximation) or ``"relu"``.
    max_position_embeddings: rows of the position table.
    type_vocab_size: rows of the token-type table (1 for RoBERTa).
    layer_norm_eps: LayerNorm epsilon (1e-12 BERT, 1e-5 RoBERTa).
    pad_token_id: the padding id (RoBERTa position ids are computed from it).
    hidden_dropout_prob, attention_probs_dropout_prob: dropout rates.
    initializer_range: std of the normal initialisation (only for a fresh ``init``).

  Raises:
    ValueError: an unsupported ``model_type`` or ``hidden_act``, a non-positive size,
      or ``hidden_size`` not a multiple of ``num_attention_heads``.
  """
  model_type: str = "bert"
  vocab_size: int = 30522
  hidden_size: int = 768
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  intermediate_size: int = 3072
  hidden_act: str = "gelu"
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  pad_token_id: int = 0
  hidden_dropout_prob: float = 0.1
  attention_probs_dropout_prob: float = 0.1
  initializer_range: float = 0.02

  def __post_init__(self):
    if self.model_type not in SUPPORTED_MODEL_TYPES:
      raise ValueError(f"unsupported model_type {self.model_type!r}; supported: "
                       f"{', '.join(SUPPORTED_MODEL_TYPES)}")
    if self.hidden_act not in ACTIVATIONS:
      raise ValueError(f"unsupported hidden_act {self.hidden_act!r}; supported: "
                       f"{', '.join(ACTIVATIONS)}")
    for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                 "intermediate_size", "max_position_embeddings", "type_vocab_size"):
      if int(getattr(self, name)) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
    if self.hidden_size % self.num_attention_heads:
      raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of "
                       f"num_attention_heads {self.num_attention_heads}")
    if self.max_length < 1:
      raise ValueError(f"max_position_embeddings {self.max_position_embeddings} leaves "
                       f"no position after the offset {self.position_offset}")

  @classmethod
  def from_hf_dict(cls, d: Mapping[str, Any]) -> "EncoderConfig":
    """The config of a Hugging Face ``config.json`` (a dict); other keys are ignored,
    missing ones take ``BertConfig``'s defaults (``pad_token_id`` 1 for RoBERTa types).

    Raises:
      ValueError: no ``model_type``, a ``position_embedding_type`` other than
        ``"absolute"``, or an invalid config (see the class).
    """
    if "model_type" not in d:
      raise ValueError("config has no model_type; supported: "
                       f"{', '.join(SUPPORTED_MODEL_TYPES)}")
    kind = d.get("position_embedding_type", "absolute") or "absolute"
    if kind != "absolute":
      raise ValueError(f"position_embedding_type {kind!r} is not supported (only "
                       "'absolute')")
    model_type = str(d["model_type"])
    defaults = dict(_HF_DEFAULTS)
    if model_type in ROBERTA_POSITION_TYPES:
      defaults["pad_token_id"] = 1
    values = {k: (d[k] if d.get(k) is not None else v) for k, v in defaults.items()}
    ints = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
            "intermediate_size", "max_position_embeddings", "type_vocab_size",
            "pad_token_id")
    values = {k: (int(v) if k in ints else float(v) if k != "hidden_act" else str(v))
              for k, v in values.items()}
    return cls(model_type=model_type, **values)

  @property
  def roberta_positions(self) -> bool:
    """True when position ids start at ``pad_token_id + 1`` and skip padding."""
    return self.model_type in ROBERTA_POSITION_TYPES

  @property
  def position_offset(self) -> int:
    """The first position id of a sequence: ``pad_token_id + 1`` (RoBERTa) or 0."""
    return self.pad_token_id + 1 if self.roberta_positions else 0

  @property
  def max_length(self) -> int:
    """The longest sequence (tokens, special ones included) the position table fits."""
    return self.max_position_embeddings - self.position_offset

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_attention_heads


def position_ids(config: EncoderConfig, input_ids: jax.Array) -> jax.Array:
  """Position ids ``[B, T]`` int32 of ``input_ids [B, T]``: ``0 .. T-1`` for BERT; for
  RoBERTa types, ``pad_token_id + 1 + (index among non-pad tokens)`` at a non-pad token
  and ``pad_token_id`` at a pad token (``transformers``'
  ``create_position_ids_from_input_ids``: padding is recognised by its id, not by the
  attention mask)."""
  if config.roberta_positions:
    real = (input_ids != config.pad_token_id).astype(jnp.int32)
    return jnp.cumsum(real, axis=1) * real + config.pad_token_id
  return jnp.broadcast_to(jnp.arange(input_ids.shape[1], dtype=jnp.int32),
                          input_ids.shape)


def mean_pool(hidden: jax.Array, attention_mask: jax.Array) -> jax.Array:
  """Mean of ``hidden [B, T, H]`` over the positions where ``attention_mask [B, T]`` is
  nonzero: float32 ``[B, H]`` (sentence-transformers' mean pooling; the count is
  clamped at 1e-9, so an all-padding row gives zeros)."""
  m = (attention_mask != 0)[..., None].astype(jnp.float32)
  total = jnp.sum(hidden.astype(jnp.float32) * m, axis=1)
  return total / jnp.maximum(jnp.sum(m, axis=1), 1e-9)


def _activation(name: str):
  if name == "gelu":
    return lambda x: nn.gelu(x, approximate=False)
  if name in ("gelu_new", "gelu_pytorch_tanh"):
    return lambda x: nn.gelu(x, approximate=True)
  if name == "relu":
    return nn.relu
  raise ValueError(f"unsupported hidden_act {name!r}; supported: "
                   f"{', '.join(ACTIVATIONS)}")


class _Common(nn.Module):
  config: EncoderConfig
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  precision: Any = None
  flat_products: bool = True

  def _dense(self, features: int, name: str) -> nn.Dense:
    dot_general = flat_dot_general if self.flat_products else None  # None: flax's
    return nn.Dense(features, dtype=self.dtype, param_dtype=self.param_dtype,
                    precision=self.precision, dot_general=dot_general,
                    kernel_init=nn.initializers.normal(self.config.initializer_range),
                    name=name)

  def _norm(self) -> nn.LayerNorm:
    # Two-pass variance (the default single pass E[x²] − E[x]² loses digits).
    return nn.LayerNorm(epsilon=self.config.layer_norm_eps, dtype=self.dtype,
                        param_dtype=self.param_dtype, use_fast_variance=False,
                        name="LayerNorm")


class BertEmbeddings(_Common):
  """Word + position + token-type embeddings, LayerNorm, dropout -> ``[B, T, H]``."""

  @nn.compact
  def __call__(self, input_ids, token_type_ids, *, deterministic: bool):
    cfg = self.config
    embed = lambda n, name: nn.Embed(  # pylint: disable=g-long-lambda
        n, cfg.hidden_size, dtype=self.dtype, param_dtype=self.param_dtype,
        embedding_init=nn.initializers.normal(cfg.initializer_range), name=name)
    x = embed(cfg.vocab_size, "word_embeddings")(input_ids)
    x = x + embed(cfg.max_position_embeddings, "position_embeddings")(
        position_ids(cfg, input_ids))
    x = x + embed(cfg.type_vocab_size, "token_type_embeddings")(token_type_ids)
    x = self._norm()(x)
    return nn.Dropout(cfg.hidden_dropout_prob)(x, deterministic=deterministic)


class BertSelfAttention(_Common):
  """Multi-head scaled dot-product self-attention (``query``, ``key``, ``value``)."""

  @nn.compact
  def __call__(self, x, attention_mask, *, deterministic: bool):
    cfg = self.config
    b, t, _ = x.shape
    split = lambda y: y.reshape(b, t, cfg.num_attention_heads, cfg.head_dim)
    q = split(self._dense(cfg.hidden_size, "query")(x))
    k = split(self._dense(cfg.hidden_size, "key")(x))
    v = split(self._dense(cfg.hidden_size, "value")(x))
    scores = jnp.einsum("bqhd,bkhd->bhqk", q / math.sqrt(cfg.head_dim), k,
                        precision=self.precision).astype(jnp.float32)
    # The additive mask of transformers (0 for a real key, the float32 minimum for a
    # padded one), written as a `where` so it cannot overflow; softmax in float32.
    keep = (attention_mask != 0)[:, None, None, :]
    scores = jnp.where(keep, scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1)
    probs = nn.Dropout(cfg.attention_probs_dropout_prob)(probs,
                                                         deterministic=deterministic)
    out = jnp.einsum("bhqk,bkhd->bqhd", probs.astype(v.dtype), v,
                     precision=self.precision)
    return out.reshape(b, t, cfg.hidden_size)


class BertOutput(_Common):
  """``LayerNorm(residual + dropout(dense(x)))`` (names ``dense``, ``LayerNorm``)."""

  @nn.compact
  def __call__(self, x, residual, *, deterministic: bool):
    y = self._dense(self.config.hidden_size, "dense")(x)
    y = nn.Dropout(self.config.hidden_dropout_prob)(y, deterministic=deterministic)
    return self._norm()(y + residual)


class BertAttention(_Common):
  """Self-attention, then :class:`BertOutput` (``self``, ``output``)."""

  @nn.compact
  def __call__(self, x, attention_mask, *, deterministic: bool):
    kw = dict(config=self.config, dtype=self.dtype, param_dtype=self.param_dtype,
              precision=self.precision, flat_products=self.flat_products)
    y = BertSelfAttention(**kw, name="self")(x, attention_mask,
                                             deterministic=deterministic)
    return BertOutput(**kw, name="output")(y, x, deterministic=deterministic)


class BertLayer(_Common):
  """One post-LN block: ``attention``, ``intermediate`` (dense + activation),
  ``output``."""

  @nn.compact
  def __call__(self, x, attention_mask, deterministic: bool):
    kw = dict(config=self.config, dtype=self.dtype, param_dtype=self.param_dtype,
              precision=self.precision, flat_products=self.flat_products)
    x = BertAttention(**kw, name="attention")(x, attention_mask,
                                              deterministic=deterministic)
    h = _Intermediate(**kw, name="intermediate")(x)
    return BertOutput(**kw, name="output")(h, x, deterministic=deterministic)


class _Intermediate(_Common):

  @nn.compact
  def __call__(self, x):
    y = self._dense(self.config.intermediate_size, "dense")(x)
    return _activation(self.config.hidden_act)(y)


class _LayerStack(_Common):
  remat: bool = False

  @nn.compact
  def __call__(self, x, attention_mask, *, deterministic: bool):
    # remat: each layer's activations are recomputed in the backward pass instead of
    # kept (flax's nn.remat = jax.checkpoint); `deterministic` is static.
    layer = nn.remat(BertLayer, static_argnums=(3,)) if self.remat else BertLayer
    for i in range(self.config.num_hidden_layers):
      x = layer(self.config, self.dtype, self.param_dtype, self.precision,
                self.flat_products, name=f"layer_{i}")(x, attention_mask, deterministic)
    return x


class _Pooler(_Common):

  @nn.compact
  def __call__(self, hidden):
    return jnp.tanh(self._dense(self.config.hidden_size, "dense")(hidden[:, 0]))


class BertEncoder(nn.Module):
  """A BERT / RoBERTa / XLM-R encoder (post-LN Transformer, absolute positions).

  Attributes:
    config: the :class:`EncoderConfig`.
    dtype: computation dtype (e.g. ``jnp.bfloat16``); LayerNorm statistics and the
      attention softmax are computed in float32 whatever it is.
    param_dtype: dtype of freshly initialised parameters.
    add_pooler: give the module the pooler ``tanh(dense(h[:, 0]))`` (``pooler`` params).
    precision: matmul precision (``jax.lax.Precision``); None is JAX's default, which
      on GPU/TPU may use reduced-precision (TF32 / bf16) passes for float32.
    remat: recompute each layer's activations in the backward pass instead of keeping
      them (``nn.remat``): fine-tuning memory falls from ~all layers' attention maps
      and FFN activations to one layer's, for about one more forward pass of compute.
      Same parameters, same values.
    flat_products: on the CPU, compute each dense layer's products, forward and both
      gradients, as 2-D matrix products (:func:`jaxloss.models.dense.flat_dot_general`;
      other platforms keep XLA's own): the same parameters and values, and a faster
      training step on XLA:CPU (1.2x for all-MiniLM-L6-v2 at 1 thread, ``python -m
      tools.bench.encoder``). False gives ``flax.linen.Dense``'s own products (the
      benchmark's reference).

  Call: ``input_ids`` int ``[B, T]``, ``attention_mask`` ``[B, T]`` (1 = real token,
  0 = padding; None = all real), ``token_type_ids`` int ``[B, T]`` (None = zeros),
  ``deterministic`` (False applies dropout and needs a ``"dropout"`` rng) -> last hidden
  state ``[B, T, H]`` in ``dtype``. Padded positions get hidden states too (they attend
  to the real tokens, as in ``transformers``); ignore them. :meth:`pool` maps the
  hidden state to the pooler output ``[B, H]``; :meth:`encode` returns both from one
  ``apply``.

  Raises:
    ValueError (at trace time): ``input_ids`` not 2-D integers, a mask or token types
      of another shape, or ``T`` above ``config.max_length`` (the position table's
      ``max_position_embeddings`` minus the RoBERTa offset ``pad_token_id + 1``).

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> cfg = EncoderConfig(vocab_size=50, hidden_size=8, num_hidden_layers=2,
    ...                     num_attention_heads=2, intermediate_size=16,
    ...                     max_position_embeddings=16)
    >>> model = BertEncoder(cfg, add_pooler=True)
    >>> ids, mask = jnp.array([[2, 7, 9, 0]]), jnp.array([[1, 1, 1, 0]])
    >>> # Shapes only (jax.eval_shape); model.init / model.apply compute the values.
    >>> params = jax.eval_shape(model.init, jax.random.PRNGKey(0), ids, mask)["params"]
    >>> sorted(params), sorted(params["encoder"])
    (['embeddings', 'encoder', 'pooler'], ['layer_0', 'layer_1'])
    >>> params["encoder"]["layer_0"]["attention"]["self"]["query"]["kernel"].shape
    (8, 8)
    >>> hidden, pooled = jax.eval_shape(
    ...     lambda p: model.apply({"params": p}, ids, mask, method="encode"), params)
    >>> hidden.shape, pooled.shape
    ((1, 4, 8), (1, 8))
  """
  config: EncoderConfig
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  add_pooler: bool = False
  precision: Any = None
  remat: bool = False
  flat_products: bool = True

  def setup(self):
    kw = dict(config=self.config, dtype=self.dtype, param_dtype=self.param_dtype,
              precision=self.precision, flat_products=self.flat_products)
    self.embeddings = BertEmbeddings(**kw)
    self.encoder = _LayerStack(**kw, remat=self.remat)
    if self.add_pooler:
      self.pooler = _Pooler(**kw)

  def __call__(self, input_ids: jax.Array, attention_mask: Optional[jax.Array] = None,
               token_type_ids: Optional[jax.Array] = None, *,
               deterministic: bool = True) -> jax.Array:
    cfg = self.config
    if input_ids.ndim != 2 or not jnp.issubdtype(input_ids.dtype, jnp.integer):
      raise ValueError(f"input_ids must be int [B, T], got {input_ids.dtype} "
                       f"{tuple(input_ids.shape)}")
    t = input_ids.shape[1]
    if t > cfg.max_length:
      offset = (f" minus the RoBERTa offset {cfg.position_offset}"
                if cfg.roberta_positions else "")
      raise ValueError(f"sequence length {t} exceeds the model's maximum of "
                       f"{cfg.max_length} tokens (max_position_embeddings "
                       f"{cfg.max_position_embeddings}{offset})")
    if attention_mask is None:
      attention_mask = jnp.ones(input_ids.shape, jnp.int32)
    if token_type_ids is None:
      token_type_ids = jnp.zeros(input_ids.shape, jnp.int32)
    for name, arr in (("attention_mask", attention_mask),
                      ("token_type_ids", token_type_ids)):
      if tuple(arr.shape) != tuple(input_ids.shape):
        raise ValueError(f"{name} has shape {tuple(arr.shape)}, input_ids "
                         f"{tuple(input_ids.shape)}")
    x = self.embeddings(input_ids, token_type_ids, deterministic=deterministic)
    x = self.encoder(x, attention_mask, deterministic=deterministic)
    if self.add_pooler and self.is_initializing():
      self.pooler(x)  # create the pooler's parameters in `init`
    return x

  def pool(self, hidden: jax.Array) -> jax.Array:
    """The pooler output ``tanh(dense(hidden[:, 0]))`` ``[B, H]`` of a last hidden
    state ``[B, T, H]``. Raises ValueError without ``add_pooler``."""
    if not self.add_pooler:
      raise ValueError("this BertEncoder has no pooler (add_pooler=False)")
    return self.pooler(hidden)

  def encode(self, input_ids, attention_mask=None, token_type_ids=None, *,
             deterministic: bool = True):
    """``(last hidden state [B, T, H], pooler output [B, H] or None)`` in one call."""
    hidden = self(input_ids, attention_mask, token_type_ids, deterministic=deterministic)
    return hidden, (self.pooler(hidden) if self.add_pooler else None)
