"""Private input validation shared by the loss families.

Every check here looks only at static information (shapes, dtypes) unless it
says otherwise, so it runs at trace time and costs nothing inside ``jax.jit``.
The few value checks (label ranges, negative counts, ...) run only when the
array is concrete; under ``jit`` the array is a tracer and the check is
skipped, because a value check there would need a host round trip or
``checkify``. Messages always name the argument, the expected and the actual
value, so the user can act on them without reading the source.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def compute_dtype(dtype: Any) -> np.dtype:
  """Returns the dtype a loss computes in: at least float32.

  Half-precision inputs (bf16, f16) are upcast because ``log_softmax`` and the
  focal factor lose most of their digits in 8 mantissa bits; float64 inputs
  (under ``jax_enable_x64``) stay float64 so gradient checks can be precise.
  """
  return jnp.promote_types(dtype, jnp.float32)


def concrete_value(x: Any) -> Optional[np.ndarray]:
  """Returns ``x`` as a NumPy array, or None when ``x`` is traced."""
  if isinstance(x, jax.core.Tracer):
    return None
  try:
    return np.asarray(x)
  except (jax.errors.TracerArrayConversionError,
          jax.errors.ConcretizationTypeError):
    return None


def check_floating(x: jax.Array, name: str) -> None:
  """Raises TypeError unless ``x`` has a floating dtype."""
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(
        f"`{name}` must have a floating dtype (float32, bfloat16, ...); "
        f"got dtype {x.dtype}.")


def check_integer(x: jax.Array, name: str) -> None:
  """Raises TypeError unless ``x`` has an integer dtype (bool is rejected)."""
  if not jnp.issubdtype(x.dtype, jnp.integer):
    raise TypeError(
        f"`{name}` must have an integer dtype (class indices); got dtype "
        f"{x.dtype}. For probability or one-hot labels use the sibling "
        "loss that takes `[..., C]` labels.")


def check_shape(x: jax.Array, expected: Sequence[int], name: str,
                what: str) -> None:
  """Raises ValueError unless ``x.shape == expected``."""
  if tuple(x.shape) != tuple(expected):
    raise ValueError(
        f"`{name}` must have shape {tuple(expected)} ({what}); got shape "
        f"{tuple(x.shape)}.")


def check_logits_rank(logits: jax.Array) -> None:
  if logits.ndim < 1:
    raise ValueError(
        "`logits` must have at least one axis (the class axis); got a scalar "
        f"with shape {tuple(logits.shape)}.")


def canonical_axis(axis: int, ndim: int, name: str = "axis") -> int:
  """Maps a possibly negative axis into ``[0, ndim)``."""
  try:
    axis = int(axis)
  except TypeError:
    raise TypeError(
        f"`{name}` must be a single int; got {axis!r}.") from None
  if not -ndim <= axis < ndim:
    raise ValueError(
        f"`{name}` must be in [-{ndim}, {ndim}) for logits of rank {ndim}; "
        f"got {axis}.")
  return axis % ndim


def as_mask(where: Any, batch_shape: Sequence[int]) -> Optional[jax.Array]:
  """Validates ``where`` and returns it as a bool array (or None).

  Integer 0/1 masks are accepted because data pipelines often produce them;
  float masks are rejected, since a float there is usually a per-example
  weight that belongs in ``weights=``/``class_weights=`` instead.
  """
  if where is None:
    return None
  where = jnp.asarray(where)
  if jnp.issubdtype(where.dtype, jnp.floating) or jnp.issubdtype(
      where.dtype, jnp.complexfloating):
    raise TypeError(
        "`where` must be a boolean (or integer 0/1) mask, True = include; got "
        f"dtype {where.dtype}. Pass importance weights separately.")
  check_shape(where, batch_shape, "where", "the batch shape of the loss")
  return where.astype(bool)


def class_vector(x: Any, num_classes: int, name: str, *,
                 allow_scalar: bool) -> jax.Array:
  """Validates a per-class vector (or scalar); returns it as an array."""
  x = jnp.asarray(x)
  if allow_scalar and x.ndim == 0:
    return x
  if tuple(x.shape) != (num_classes,):
    expected = f"a scalar or shape ({num_classes},)" if allow_scalar else (
        f"shape ({num_classes},)")
    raise ValueError(
        f"`{name}` must be {expected}, one entry per class of `logits`; got "
        f"shape {tuple(x.shape)}.")
  return x


def check_label_range(labels: jax.Array, num_classes: int,
                      where: Optional[jax.Array]) -> None:
  """Raises ValueError for out-of-range integer labels, when concrete.

  Masked-out rows are ignored so that padding values such as -100 (PyTorch's
  ``ignore_index``) are allowed under a mask.
  """
  values = concrete_value(labels)
  if values is None:
    return
  bad = (values < 0) | (values >= num_classes)
  if where is not None:
    mask = concrete_value(where)
    if mask is None:
      return
    bad = bad & mask
  if bad.any():
    first = values[bad].reshape(-1)[0]
    raise ValueError(
        f"`labels` must be class indices in [0, {num_classes}) for logits "
        f"with {num_classes} classes; got {int(bad.sum())} out-of-range "
        f"value(s), e.g. {int(first)}. Mask padding rows with `where`.")


def check_nonnegative(x: Any, name: str) -> None:
  """Raises ValueError when a concrete ``x`` has negative or non-finite values."""
  values = concrete_value(x)
  if values is None:
    return
  values = values.astype(np.float64)
  if not np.all(np.isfinite(values)):
    raise ValueError(f"`{name}` must be finite; got {values.tolist()}.")
  if np.any(values < 0):
    raise ValueError(
        f"`{name}` must be non-negative; got {values.tolist()}.")


def check_scalar_range(x: Any, name: str, low: float, high: float, *,
                       low_closed: bool = True,
                       high_closed: bool = True) -> None:
  """Raises ValueError when a concrete scalar ``x`` is outside the interval."""
  if x is None:
    return
  value = concrete_value(x)
  if value is None:
    return
  if value.ndim != 0:
    raise ValueError(f"`{name}` must be a scalar; got shape {value.shape}.")
  v = float(value)
  ok_low = v >= low if low_closed else v > low
  ok_high = v <= high if high_closed else v < high
  if np.isnan(v) or not (ok_low and ok_high):
    interval = (("[" if low_closed else "(") + f"{low}, {high}" +
                ("]" if high_closed else ")"))
    raise ValueError(f"`{name}` must be in {interval}; got {v}.")
