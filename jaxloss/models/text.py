"""Text encoders trained from scratch, and the multi-aspect sentiment model.

:class:`BiLSTMEncoder` embeds token ids, runs ``num_layers`` bidirectional LSTMs that
respect each sequence's length (the backward direction starts at the last real token,
so padding never leaks in), and pools the valid positions by mean and max.
:class:`AspectSentimentModel` puts an ``[A, C]`` classifier (one softmax per aspect)
and a SupCon projection head on the pooled embedding.

References:
  S. Hochreiter, J. Schmidhuber, *Long Short-Term Memory*, Neural Computation 1997.
  P. Khosla et al., *Supervised Contrastive Learning*, NeurIPS 2020 (projection head).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


def _varying_like(x: jax.Array, ref: jax.Array) -> jax.Array:
  """``x`` with the varying manual axes of ``ref`` (inside ``shard_map``; a no-op
  outside). A scan's zero initial carry must have the type of the carry it produces,
  which varies over the mesh axes when the inputs and parameters do."""
  aval = jax.typeof(ref)
  mat = getattr(aval, "manual_axis_type", None)  # JAX >= 0.9
  vma = mat.varying if mat is not None else getattr(aval, "vma", ())
  vma = tuple(sorted(vma or ()))
  return jax.lax.pcast(x, vma, to="varying") if vma else x


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
  of the concatenated forward/backward states).
  """
  vocab_size: int
  embed_dim: int = 128
  hidden: int = 128
  num_layers: int = 1
  dropout_rate: float = 0.2

  @nn.compact
  def __call__(self, ids: jax.Array, lengths: jax.Array, *, train: bool) -> jax.Array:
    if self.num_layers < 1:
      raise ValueError(f"num_layers must be >= 1, got {self.num_layers}")
    mask = jnp.arange(ids.shape[1])[None, :] < lengths[:, None]
    x = nn.Embed(self.vocab_size, self.embed_dim)(ids)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    for layer in range(self.num_layers):
      if layer:
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
      zeros = _varying_like(jnp.zeros((ids.shape[0], self.hidden), x.dtype), x)
      x = nn.Bidirectional(
          nn.RNN(nn.OptimizedLSTMCell(self.hidden)),
          nn.RNN(nn.OptimizedLSTMCell(self.hidden)),
      )(x, seq_lengths=lengths, initial_carry=((zeros, zeros), (zeros, zeros)))
    m = mask[..., None].astype(x.dtype)
    mean = jnp.sum(x * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0)
    # Finite fill (not -inf): a padded position must never win the max.
    maxed = jnp.max(jnp.where(m > 0, x, -1e9), axis=1)
    return jnp.concatenate([mean, maxed], axis=-1)


class AspectSentimentModel(nn.Module):
  """A text encoder with a per-aspect classifier and a contrastive projection head.

  Attributes:
    vocab_size, embed_dim, hidden, num_layers, dropout_rate: see
      :class:`BiLSTMEncoder`.
    num_aspects: A (10 for UIT-ViSFD).
    num_classes: C per aspect (4: absent, positive, negative, neutral).
    projection_dim: width of the SupCon projection (Dense-ReLU-Dense).

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

  @nn.compact
  def __call__(self, ids, lengths, *, train: bool):
    embedding = BiLSTMEncoder(self.vocab_size, self.embed_dim, self.hidden,
                              self.num_layers, self.dropout_rate)(ids, lengths,
                                                                  train=train)
    h = nn.Dropout(self.dropout_rate, deterministic=not train)(embedding)
    logits = nn.Dense(self.num_aspects * self.num_classes)(h)
    logits = logits.reshape(logits.shape[:-1] + (self.num_aspects, self.num_classes))
    hidden = nn.relu(nn.Dense(embedding.shape[-1])(embedding))
    projection = nn.Dense(self.projection_dim)(hidden)
    return {"logits": logits, "projection": projection, "embedding": embedding}
