"""SASRec: a causal self-attention encoder of interaction sequences that scores items.

:class:`SASRec` follows Kang & McAuley (ICDM 2018) and their reference code
(kang205/SASRec; the PyTorch port pmixer/SASRec.pytorch): item embeddings (shared
between the input and the output, id 0 = padding) scaled by ``sqrt(d)`` plus learned
position embeddings, dropout, ``num_blocks`` pre-norm blocks of causal multi-head
self-attention and a point-wise feed-forward network (both with residuals), and a final
layer norm. The hidden state at position ``t`` summarises items ``0..t`` and scores a
candidate item ``i`` by the dot product with its embedding, ``r_{t,i} = h_t · E_i``.

Sequences are *left*-padded with 0 and right-aligned (the most recent item last), as in
the reference code, so the last position is always the newest item. Padded positions
are masked as attention keys and their outputs zeroed.

Item embeddings start small (Glorot normal over the ``[num_items + 1, d]`` table, std
≈ ``sqrt(2 / num_items)``, the PyTorch port's ``xavier_normal_``), so an untrained
model scores every candidate ≈ 0 and the listwise loss starts at ≈ ln(num_candidates).

References:
  W.-C. Kang, J. McAuley, *Self-Attentive Sequential Recommendation*, ICDM 2018.
  A. Vaswani et al., *Attention Is All You Need*, NeurIPS 2017.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxloss.models.dense import Dense, attention_kwargs


class _Block(nn.Module):
  """Pre-norm causal self-attention + point-wise feed-forward, with residuals."""
  hidden: int
  num_heads: int
  dropout_rate: float

  @nn.compact
  def __call__(self, x, attention_mask, valid, *, train: bool):
    q = nn.LayerNorm(epsilon=1e-8, name="attention_norm")(x)
    attended = nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads, qkv_features=self.hidden, out_features=self.hidden,
        dropout_rate=self.dropout_rate, deterministic=not train,
        kernel_init=nn.initializers.xavier_normal(), name="attention",
        **attention_kwargs())(
            q, x, mask=attention_mask)
    x = q + attended  # the reference code adds the attention to the normed query
    y = nn.LayerNorm(epsilon=1e-8, name="ffn_norm")(x)
    h = Dense(self.hidden, kernel_init=nn.initializers.xavier_normal(),
              name="ffn_in")(y)
    h = nn.Dropout(self.dropout_rate, deterministic=not train)(nn.relu(h))
    h = Dense(self.hidden, kernel_init=nn.initializers.xavier_normal(),
              name="ffn_out")(h)
    h = nn.Dropout(self.dropout_rate, deterministic=not train)(h)
    return (y + h) * valid[..., None]


class SASRec(nn.Module):
  """Self-attentive sequential recommender (Kang & McAuley, ICDM 2018).

  Attributes:
    num_items: item ids are ``1..num_items``; 0 is padding.
    max_len: L, the sequence length the position embeddings cover.
    hidden: d, the embedding and hidden size (50 in the paper).
    num_blocks: self-attention blocks (2 in the paper).
    num_heads: attention heads (1 in the paper); must divide ``hidden``.
    dropout_rate: on embeddings, attention weights and the feed-forward network (0.5
      for the sparse Amazon sets in the paper).

  Methods (all take ``train``; dropout needs the ``"dropout"`` rng when training):

  * ``__call__(negatives, seq, pos, *, train)`` -- the training scores: for every
    position ``t`` of ``seq [B, L]`` the candidates are the next item ``pos[:, t]``
    (index 0 of the list) and the user's sampled ``negatives [B, K]`` (indices 1..K,
    shared by the positions of a sequence). Returns ``{"scores": float32 [B, L, 1+K],
    "where": bool [B, L, 1+K]}``; ``where`` is False at padded positions (``pos == 0``)
    and for a negative that is padding (id 0) or one of the user's own items in
    ``seq``/``pos`` (a sampled "negative" the user did interact with).
  * ``score_candidates(history, candidates, *, train=False)`` -- ``[B, C]`` scores of
    ``candidates [B, C]`` from the last position of ``history [B, L]``.
  * ``encode(seq, *, train)`` -- the hidden states ``[B, L, d]`` (0 at padding).

  Raises:
    ValueError: (at trace time) a sequence longer than ``max_len``, or ``hidden`` not
      divisible by ``num_heads``.
  """
  num_items: int
  max_len: int
  hidden: int = 50
  num_blocks: int = 2
  num_heads: int = 1
  dropout_rate: float = 0.5

  def setup(self):
    if self.hidden % self.num_heads:
      raise ValueError(f"hidden ({self.hidden}) must be divisible by num_heads "
                       f"({self.num_heads})")
    self.item_embedding = nn.Embed(self.num_items + 1, self.hidden,
                                   embedding_init=nn.initializers.xavier_normal())
    self.position_embedding = nn.Embed(self.max_len, self.hidden,
                                       embedding_init=nn.initializers.xavier_normal())
    self.embedding_dropout = nn.Dropout(self.dropout_rate)
    self.blocks = [_Block(self.hidden, self.num_heads, self.dropout_rate,
                          name=f"block_{i}") for i in range(self.num_blocks)]
    self.final_norm = nn.LayerNorm(epsilon=1e-8)

  def encode(self, seq: jax.Array, *, train: bool) -> jax.Array:
    seq = jnp.asarray(seq, jnp.int32)
    length = seq.shape[-1]
    if length > self.max_len:
      raise ValueError(f"seq has length {length}, more than max_len={self.max_len}")
    valid = seq > 0
    x = self.item_embedding(seq) * jnp.sqrt(float(self.hidden))
    # Right-aligned: the newest item sits at the last position embedding.
    x = x + self.position_embedding(jnp.arange(self.max_len - length, self.max_len))
    x = self.embedding_dropout(x, deterministic=not train)
    x = x * valid[..., None]
    causal = jnp.tril(jnp.ones((length, length), bool))
    attention_mask = (causal[None, :, :] & valid[:, None, :])[:, None, :, :]
    for block in self.blocks:
      x = block(x, attention_mask, valid, train=train)
    return self.final_norm(x) * valid[..., None]

  def __call__(self, negatives: jax.Array, seq: jax.Array, pos: jax.Array, *,
               train: bool) -> dict[str, jax.Array]:
    negatives = jnp.asarray(negatives, jnp.int32)
    pos = jnp.asarray(pos, jnp.int32)
    h = self.encode(seq, train=train)                                  # [B, L, d]
    pos_scores = jnp.sum(h * self.item_embedding(pos), axis=-1)        # [B, L]
    neg_scores = jnp.einsum("bld,bkd->blk", h, self.item_embedding(negatives))
    scores = jnp.concatenate([pos_scores[..., None], neg_scores], axis=-1)
    own = jnp.concatenate([jnp.asarray(seq, jnp.int32), pos], axis=-1)  # [B, 2L]
    collides = jnp.any(negatives[:, :, None] == own[:, None, :], axis=-1)  # [B, K]
    neg_ok = (negatives > 0) & ~collides
    position_ok = pos > 0
    where = jnp.concatenate(
        [position_ok[..., None],
         position_ok[..., None] & neg_ok[:, None, :]], axis=-1)
    return {"scores": scores, "where": where}

  def score_candidates(self, history: jax.Array, candidates: jax.Array, *,
                       train: bool = False) -> jax.Array:
    h = self.encode(history, train=train)[:, -1]                       # [B, d]
    return jnp.einsum("bd,bcd->bc", h, self.item_embedding(
        jnp.asarray(candidates, jnp.int32)))
