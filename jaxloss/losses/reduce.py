"""Reductions from per-example losses to the scalar that is differentiated.

The losses in :mod:`jaxloss.losses` never reduce; these helpers do, in one
place, with the two properties a training step needs:

* masked (or zero-weight) entries contribute nothing, even when they hold NaN
  or inf, because they are replaced before the sum rather than multiplied by
  zero (``0 * nan`` is ``nan``, in the value and in the gradient);
* an empty denominator (every entry masked, e.g. the last padded eval batch
  on one device) gives 0 with zero gradients instead of ``0 / 0 = nan``.

Sums are accumulated in at least float32 whatever the input dtype, since a
bf16 accumulator loses integers above 256 and hence most of a batch.
"""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxloss.losses import _checks

ArrayLike = Any


def _check_broadcastable(x: jax.Array, shape: tuple[int, ...],
                         name: str) -> jax.Array:
  try:
    out_shape = np.broadcast_shapes(tuple(x.shape), shape)
  except ValueError:
    out_shape = None
  if out_shape != shape:
    raise ValueError(
        f"`{name}` must be broadcastable to the shape of `values` {shape} "
        f"without enlarging it; got shape {tuple(x.shape)}.")
  return x


def weighted_mean(
    values: ArrayLike,
    weights: Optional[ArrayLike] = None,
    where: Optional[ArrayLike] = None,
) -> jax.Array:
  r"""Computes the weighted mean of ``values`` over all axes, 0 when empty.

  .. math::
    \frac{\sum_i m_i w_i v_i}{\sum_i m_i w_i},

  with :math:`m` the mask ``where`` (1 = include) and :math:`w` the weights,
  and 0 (with zero gradients) when the denominator is 0.

  With ``values`` the *unweighted* per-example cross-entropy and ``weights =
  class_weights[labels]`` this is PyTorch's ``CrossEntropyLoss(weight=...,
  reduction="mean")`` normalisation: a batch of rare classes is not scaled up
  as a whole, only relative to the other examples in the batch.

  Args:
    values: Per-example values (e.g. losses), any shape, numeric.
    weights: Optional non-negative weights broadcastable to ``values.shape``
      (e.g. ``[B, 1]`` for ``[B, A]`` values); default all ones.
    where: Optional bool (or 0/1 int) mask broadcastable to ``values.shape``,
      True = include. Excluded entries may hold NaN or inf.

  Returns:
    A scalar with the dtype of ``values`` (float32 for integer values).

  Raises:
    TypeError: if ``where`` is floating.
    ValueError: if ``weights`` or ``where`` does not broadcast to
      ``values.shape``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from jaxloss.losses import weighted_mean
    >>> values = jnp.array([1.0, 2.0, 3.0, jnp.nan])
    >>> weights = jnp.array([1.0, 1.0, 2.0, 1.0])
    >>> where = jnp.array([True, True, True, False])
    >>> print(weighted_mean(values, weights, where))
    2.25
    >>> print(weighted_mean(values, where=jnp.zeros(4, bool)))
    0.0

  References:
    PyTorch ``torch.nn.CrossEntropyLoss`` (``reduction="mean"`` with
    ``weight``); clu ``metrics.Average`` (sums and counts).
  """
  values = jnp.asarray(values)
  shape = tuple(values.shape)
  if weights is not None:
    weights = _check_broadcastable(jnp.asarray(weights), shape, "weights")
  if where is not None:
    where = jnp.asarray(where)
    if jnp.issubdtype(where.dtype, jnp.floating):
      raise TypeError(
          "`where` must be a boolean (or integer 0/1) mask, True = include; "
          f"got dtype {where.dtype}. Pass importance as `weights`.")
    where = _check_broadcastable(where, shape, "where")
  return _weighted_mean_core(values, weights, where)


# Jitted so an eager call compiles one program rather than one per op; inside
# a user's jit it is inlined.
@jax.jit
def _weighted_mean_core(values, weights, where):
  out_dtype = (values.dtype if jnp.issubdtype(values.dtype, jnp.floating)
               else jnp.float32)
  dtype = _checks.compute_dtype(out_dtype)
  v = values.astype(dtype)
  # Broadcast before summing: the denominator counts every element of values.
  w = (jnp.ones(values.shape, dtype) if weights is None
       else jnp.broadcast_to(weights.astype(dtype), values.shape))
  if where is not None:
    mask = jnp.broadcast_to(where.astype(bool), values.shape)
    w = jnp.where(mask, w, 0.0)
    v = jnp.where(mask, v, 0.0)
  # Zero-weight entries are excluded like masked ones, so a NaN there cannot
  # leak through 0 * nan.
  v = jnp.where(w != 0, v, 0.0)
  total = jnp.sum(w * v)
  denom = jnp.sum(w)
  empty = denom == 0
  # Divide by a safe 1 where empty: the where on the output alone would still
  # send 0 * inf gradients back through total / 0.
  mean = jnp.where(empty, 0.0, total / jnp.where(empty, 1.0, denom))
  return mean.astype(out_dtype)


def masked_mean(values: ArrayLike,
                where: Optional[ArrayLike] = None) -> jax.Array:
  """Computes the mean of ``values`` over the included entries, 0 when none.

  Equal to :func:`weighted_mean` with ``weights=None``: the sum of the
  included values divided by their number.

  Args:
    values: Per-example values, any shape, numeric.
    where: Optional bool (or 0/1 int) mask broadcastable to ``values.shape``,
      True = include. Excluded entries may hold NaN or inf.

  Returns:
    A scalar with the dtype of ``values`` (float32 for integer values).

  Raises:
    TypeError: if ``where`` is floating.
    ValueError: if ``where`` does not broadcast to ``values.shape``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from jaxloss.losses import masked_mean
    >>> loss = jnp.array([[1.0, 3.0], [5.0, 100.0]])
    >>> where = jnp.array([[True, True], [True, False]])
    >>> print(masked_mean(loss, where))
    3.0

  References:
    optax and rax ``where=`` convention; flax lm1b example (masked mean over
    non-padding tokens).
  """
  return weighted_mean(values, None, where)
