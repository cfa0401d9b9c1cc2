"""The reranking objective: listwise softmax or BPR over each position's candidate list."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxloss import losses
from jaxloss.train_step import LossFn


RERANK_LOSSES = ("listwise", "bpr")


def make_rerank_loss(loss: str = "listwise") -> LossFn:
  """The per-position loss of a next-item reranker trained over sampled candidates.

  The model's outputs (``jaxloss.models.SASRec.__call__``) hold, for every position
  ``t`` of a user's sequence, the scores of a candidate list whose index 0 is the true
  next item and whose other entries are sampled negatives: ``scores [b, L, 1+K]`` and
  ``where [b, L, 1+K]`` (False at padded positions and for invalid negatives).

  * ``"listwise"``: the sampled-softmax / listwise cross-entropy
    :func:`jaxloss.losses.listwise_softmax_loss` with the one-hot label on index 0,
    ``-log softmax(s)_0`` over the valid candidates; ``ln(1+K)`` for a model that knows
    nothing (all scores equal).
  * ``"bpr"``: BPR (Rendle et al., UAI 2009) with one positive,
    ``mean_j softplus(s_j - s_0)`` over the valid negatives ``j``; this equals
    :func:`jaxloss.losses.pairwise_logistic_loss` on the same list (tested) without its
    ``[L, L]`` pair matrix, and is ``ln 2`` at equal scores.

  Per example (user), the loss is the mean over its valid positions and its weight is
  the number of those positions, so the step's weighted mean is the mean over all
  positions of the global batch (SASRec's reduction). A user without a valid position
  has weight 0.

  Args:
    loss: ``"listwise"`` or ``"bpr"``.

  Returns:
    A :data:`LossFn` ``(outputs, labels, knobs) -> (loss [b], weight [b], aux)``;
    ``labels`` is unused (the positive is at index 0 by construction), ``aux["terms"]``
    has the per-example loss under the name ``loss``.

  Raises:
    ValueError: an unknown ``loss``.
  """
  if loss not in RERANK_LOSSES:
    raise ValueError(f"loss must be one of {RERANK_LOSSES}, got {loss!r}")

  def loss_fn(outputs, labels, knobs):
    del labels, knobs
    scores = jnp.asarray(outputs["scores"], jnp.float32)
    where = jnp.asarray(outputs["where"], bool)
    positions = where[..., 0]                                         # [b, L]
    if loss == "listwise":
      onehot = jnp.zeros(scores.shape, jnp.float32).at[..., 0].set(1.0)
      per_position = losses.listwise_softmax_loss(scores, onehot, where=where)
    else:
      negatives = where[..., 1:]
      pair = jax.nn.softplus(scores[..., 1:] - scores[..., :1])
      count = jnp.sum(negatives, axis=-1)
      per_position = (jnp.sum(jnp.where(negatives, pair, 0.0), axis=-1)
                      / jnp.maximum(count, 1))
    per_position = jnp.where(positions, per_position, 0.0)
    num_positions = jnp.sum(positions, axis=-1).astype(jnp.float32)  # [b]
    per_example = jnp.sum(per_position, axis=-1) / jnp.maximum(num_positions, 1.0)
    return per_example, num_positions, {"terms": {loss: per_example}}

  return loss_fn
