"""Finite masking of invalid classes before a softmax.

Structured heads often know that some classes are impossible for a given
position: a BIO tagger cannot emit ``I-LOC`` after ``O``, a command head only
accepts the commands of the detected intent, a reranker pads its candidate
list. The usual PyTorch idiom fills those logits with ``-inf``
(``logits.masked_fill(~valid, float("-inf"))``). That is exact as long as
every row keeps at least one valid class *and* the label is valid, and it
breaks as soon as one of those fails, which in practice means on padding
tokens and on noisy gold labels (each case below is a regression test in
``tests/losses/masking_test.py``):

* a row with every class invalid (a padding token) makes ``log_softmax``
  compute ``-inf - (-inf) = nan``, so that token's loss is NaN and the usual
  ``(loss * mask).sum() / mask.sum()`` is NaN too (``0 * nan = nan``);
* with an additive mask (``logits + log(valid)``) the NaN also reaches the
  gradient even when a NaN-safe masked mean drops the row from the value:
  the backward pass of ``log_softmax`` multiplies the row's zero cotangent by
  its NaN softmax and the addition passes the result to the logits;
* a gold label on an invalid class (an annotation error such as ``I-PER``
  after ``O``) has ``log p = -inf``: the loss is ``+inf``, and the focal
  factor ``(1 - p)^gamma`` has a NaN gradient there.

:func:`mask_invalid_logits` fills invalid classes with a *finite*,
dtype-aware large negative instead (:func:`large_negative`). Whenever the
``-inf`` version is finite, the finite fill gives the same loss and gradient
to the last bit, because ``exp(fill - max)`` underflows to exactly 0; where
the ``-inf`` version is NaN or inf, the finite fill stays finite: an
all-invalid row becomes a uniform distribution (and is then dropped by
``where=``), and an invalid label costs about ``|fill|`` nats with a bounded
gradient ``softmax - onehot``, a loud but harmless value.

The fill is ``-1e9`` for float32, bfloat16 and float64: the softmax of any
realistic logits (``|x| < 1e8``) gives the masked classes exactly zero weight,
and a sum of many masked losses (~1e9 each) cannot overflow float32. For
float16 ``-1e9`` *is* ``-inf`` (its range ends at 65504), so the fill there is
half of ``finfo(float16).min`` (``-32752``): halving leaves room to subtract
the row maximum without overflowing again. The same rule applies to any
other narrow float type (float8). The losses of :mod:`jaxloss.losses` compute
in float32 whatever the input dtype, where ``exp(-32752)`` is exactly 0 too.

Typical use in a tagging head, with the allowed tags of each token (e.g. the
legal successors of the previous gold tag) and the padding mask::

  logits = mask_invalid_logits(logits, allowed)          # [B, T, C]
  tag_loss = sequence_tagging_loss(logits, labels, where=token_mask)  # [B]

Keep the padding in ``where=`` as well: the fill makes a padding row finite
(uniform), and ``where`` then removes it from the loss and its gradient.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxloss.losses import _checks

ArrayLike = Any

# The fill of wide float types; see the module docstring for why this value.
_WIDE_FILL = -1e9
# A dtype is "wide" when -1e9 is representable with a large margin, so that
# subtracting the row maximum or adding a few masked values stays finite.
_WIDE_MIN_MAX = 1e12


def large_negative(dtype: Any) -> np.generic:
  """Returns the finite fill value for invalid logits of ``dtype``.

  ``-1e9`` when the dtype's range is wide (float32, bfloat16, float64), and
  ``finfo(dtype).min / 2`` for narrow floats (float16: ``-32752.0``; float8
  types), where ``-1e9`` would round to ``-inf``.

  Args:
    dtype: A floating dtype (anything ``jnp.dtype`` accepts, e.g.
      ``jnp.bfloat16`` or ``"float16"``).

  Returns:
    A NumPy scalar of ``dtype`` holding the (finite) fill value. It is the
    value :func:`mask_invalid_logits` writes, rounded to ``dtype`` (bfloat16
    rounds ``-1e9`` to ``-998244352``).

  Raises:
    TypeError: if ``dtype`` is not a floating dtype.

  Examples:
    >>> import jax.numpy as jnp
    >>> from jaxloss.losses import large_negative
    >>> print(float(large_negative(jnp.float32)),
    ...       float(large_negative(jnp.float16)))
    -1000000000.0 -32752.0

  References:
    Vaswani et al., `Attention Is All You Need
    <https://arxiv.org/abs/1706.03762>`_, NeurIPS 2017 (masking by a large
    negative before the softmax); the float16 limit is that of IEEE 754
    binary16 (``jnp.finfo(jnp.float16).max == 65504``).
  """
  try:
    dtype = jnp.dtype(dtype)
  except TypeError:
    raise TypeError(
        f"`dtype` must be a floating dtype (float32, bfloat16, float16, ...); "
        f"got {dtype!r}.") from None
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(
        "`dtype` must be a floating dtype (float32, bfloat16, float16, ...); "
        f"got {dtype}.")
  finfo = jnp.finfo(dtype)
  if float(finfo.max) >= _WIDE_MIN_MAX:
    value = _WIDE_FILL
  else:
    value = float(finfo.min) / 2
  return np.asarray(value, dtype=dtype)[()]


def _check_valid(valid: ArrayLike, shape: tuple[int, ...]) -> jax.Array:
  """Validates ``valid`` and returns it as a bool array."""
  valid = jnp.asarray(valid)
  if not (valid.dtype == jnp.bool_ or jnp.issubdtype(valid.dtype,
                                                     jnp.integer)):
    raise TypeError(
        "`valid` must be a boolean (or integer 0/1) mask, True = valid class; "
        f"got dtype {valid.dtype}.")
  try:
    out_shape = np.broadcast_shapes(tuple(valid.shape), shape)
  except ValueError:
    out_shape = None
  if out_shape != shape:
    raise ValueError(
        "`valid` must be broadcastable to the shape of `logits` "
        f"{shape} without enlarging it (e.g. [C] or [..., C]); got shape "
        f"{tuple(valid.shape)}.")
  if valid.dtype != jnp.bool_:
    values = _checks.concrete_value(valid)
    if values is not None and not np.isin(values, (0, 1)).all():
      bad = values[~np.isin(values, (0, 1))].reshape(-1)[0]
      raise ValueError(
          "`valid` must hold only 0 and 1 when it is an integer mask; got "
          f"{int(bad)}.")
  return valid.astype(bool)


@jax.jit
def _mask_core(logits, valid):
  # The fill is a trace-time constant: the dtype is static under jit.
  fill = large_negative(logits.dtype)
  return jnp.where(valid, logits, fill)


def mask_invalid_logits(logits: ArrayLike, valid: ArrayLike) -> jax.Array:
  r"""Replaces the logits of invalid classes by a finite large negative.

  .. math::
    x'_c = \begin{cases} x_c & \text{valid}_c \\
                         \text{large\_negative(dtype)} & \text{otherwise}
           \end{cases}

  Use it instead of filling with ``-inf``: wherever the ``-inf`` mask gives a
  finite loss, the result is identical (``exp(fill - max) == 0``), and where
  it gives NaN or inf (a row with no valid class, a label on an invalid
  class) this stays finite. The gradient with respect to an invalid logit is
  exactly 0.

  Args:
    logits: Unnormalised log-probabilities, floating, shape ``[..., C]`` (any
      shape; the mask is applied elementwise).
    valid: Bool (or integer 0/1) mask, True = the class is allowed,
      broadcastable to ``logits.shape`` without enlarging it: ``[C]`` for a
      static constraint, ``[..., C]`` for a per-position one (e.g. the
      allowed successors of the previous BIO tag).

  Returns:
    An array with the shape and dtype of ``logits``.

  Raises:
    TypeError: if ``logits`` is not floating or ``valid`` is not bool/int.
    ValueError: if ``valid`` does not broadcast to ``logits.shape``, or a
      concrete integer ``valid`` holds values other than 0 and 1.

  Examples:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from jaxloss.losses import mask_invalid_logits
    >>> logits = jnp.array([[1.0, 2.0, 3.0], [0.5, 0.5, 0.5]])
    >>> masked = mask_invalid_logits(logits, jnp.array([True, False, True]))
    >>> print(masked)
    [[ 1.e+00 -1.e+09  3.e+00]
     [ 5.e-01 -1.e+09  5.e-01]]
    >>> with jnp.printoptions(precision=4):
    ...   print(jax.nn.softmax(masked[1]))
    [0.5 0.  0.5]

  References:
    Vaswani et al., `Attention Is All You Need
    <https://arxiv.org/abs/1706.03762>`_, NeurIPS 2017 (additive masks before
    the softmax); PyTorch's ``Tensor.masked_fill(mask, -inf)`` idiom is what
    this replaces.
  """
  logits = jnp.asarray(logits)
  _checks.check_floating(logits, "logits")
  valid = _check_valid(valid, tuple(logits.shape))
  return _mask_core(logits, valid)
