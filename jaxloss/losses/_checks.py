"""Private input validation shared by the loss families.

Every check here looks only at static information (shapes, dtypes) unless it
says otherwise, so it runs at trace time and costs nothing inside ``jax.jit``.
The few value checks (label ranges, NaN / +inf logits, negative counts, ...) run
when the array is concrete; under ``jit`` the array is a tracer and the check is
skipped unless :func:`checked_mode` is on (through :func:`jaxloss.losses.checked`),
where the label-range and logits checks become ``jax.experimental.checkify`` checks. Messages always name the argument, the expected and the actual
value, so the user can act on them without reading the source.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Optional, Sequence

import jax
from jax.experimental import checkify
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
  mask = None if where is None else concrete_value(where)
  if values is None or (where is not None and mask is None):
    if in_checked_mode():  # traced: a checkify check, raised by checked()
      bad = (labels < 0) | (labels >= num_classes)
      if where is not None:
        bad = bad & where
      flat = bad.reshape(-1)
      checkify.check(
          ~jnp.any(bad),
          f"`labels` must be class indices in [0, {num_classes}) for logits with "
          f"{num_classes} classes; got {{count}} out-of-range value(s), e.g. {{first}}. "
          "Mask padding rows with `where`.",
          count=jnp.sum(bad), first=labels.reshape(-1)[jnp.argmax(flat)])
    return
  bad = (values < 0) | (values >= num_classes)
  if mask is not None:
    bad = bad & mask
  if bad.any():
    first = values[bad].reshape(-1)[0]
    raise ValueError(
        f"`labels` must be class indices in [0, {num_classes}) for logits "
        f"with {num_classes} classes; got {int(bad.sum())} out-of-range "
        f"value(s), e.g. {int(first)}. Mask padding rows with `where`.")


def check_finite_logits(logits: jax.Array, where: Optional[jax.Array]) -> None:
  """Raises ValueError when a concrete ``logits`` has NaN or +inf in an included row
  (``where`` True or None), and, under :func:`checked_mode` while traced, adds the
  same check for ``checkify``. ``-inf`` is allowed: it is how invalid classes are
  masked (the loss is then finite unless the label's own logit is ``-inf``)."""
  values = concrete_value(logits)
  mask = None if where is None else concrete_value(where)
  if values is None or (where is not None and mask is None):
    if in_checked_mode():
      bad = jnp.isnan(logits) | (logits == jnp.inf)
      if where is not None:
        bad = bad & where[..., None]
      checkify.check(
          ~jnp.any(bad),
          "`logits` must not be NaN or +inf in an included row; got {nan} NaN and "
          "{inf} +inf value(s). Check the model's output (or mask the row with "
          "`where`).", nan=jnp.sum(jnp.isnan(logits) & bad),
          inf=jnp.sum((logits == jnp.inf) & bad))
    return
  bad = np.isnan(values) | (values == np.inf)
  if mask is not None:
    bad = bad & np.asarray(mask, bool)[..., None]
  if bad.any():
    raise ValueError(
        f"`logits` must not be NaN or +inf in an included row; got "
        f"{int(np.sum(np.isnan(values) & bad))} NaN and "
        f"{int(np.sum((values == np.inf) & bad))} +inf value(s). Check the model's "
        "output (or mask the row with `where`).")


# --- Checked mode: value checks under jit through jax.experimental.checkify ---------

_STATE = threading.local()


def in_checked_mode() -> bool:
  """Whether losses traced now add ``checkify`` value checks."""
  return getattr(_STATE, "depth", 0) > 0


@contextlib.contextmanager
def checked_mode():
  """While active, losses traced under ``jax.jit`` add ``checkify.check`` value checks
  (label ranges, NaN / +inf logits) where they would skip them otherwise. Use it
  through :func:`jaxloss.losses.checked`, which also functionalises and raises them."""
  _STATE.depth = getattr(_STATE, "depth", 0) + 1
  try:
    yield
  finally:
    _STATE.depth -= 1


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


def check_finite_scalar(x: Any, name: str) -> None:
  """Raises ValueError when a concrete scalar ``x`` is NaN or infinite."""
  value = concrete_value(x)
  if value is not None and value.ndim == 0 and not np.isfinite(float(value)):
    raise ValueError(f"`{name}` must be finite; got {float(value)}.")


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
