"""Checked mode: the losses' value checks under ``jax.jit``, through
``jax.experimental.checkify`` (the standard tool for errors inside compiled code).

Outside this mode a loss validates values only on concrete (eager) arrays; under
``jit`` an out-of-range label gives NaN and a NaN logit propagates, silently. Wrapped
by :func:`checked`, the same function raises at the call, naming the argument.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
from jax.experimental import checkify

from jaxloss.losses._checks import checked_mode, in_checked_mode

__all__ = ("checked", "checked_mode", "in_checked_mode")


def checked(fn: Callable, *, jit: bool = True) -> Callable:
  """``fn`` with the losses' value checks on, raised as an error at the call.

  ``fn`` is traced under :func:`checked_mode`, so every jaxloss loss it calls adds
  ``checkify`` checks for what it can only check on concrete values otherwise:
  integer ``labels`` outside ``[0, C)`` in an included row, and NaN or +inf
  ``logits`` in an included row. The checked function is ``checkify.checkify(fn)``
  (jitted unless ``jit=False``); each call raises the first failed check.

  Args:
    fn: a function of arrays that calls jaxloss losses (a loss itself, a loss-and-
      gradient function, a train step's objective). Pass it un-jitted: a function
      jitted before keeps its unchecked trace.
    jit: compile the checked function with ``jax.jit``.

  Returns:
    A function with ``fn``'s signature and outputs.

  Raises (when called):
    jax.experimental.checkify.JaxRuntimeError: a failed check; its message names the
      argument (``labels`` or ``logits``), the range and the count of bad values.

  Examples:
    >>> import jax.numpy as jnp
    >>> from jaxloss import softmax_cross_entropy_with_integer_labels as ce
    >>> loss = checked(lambda x, y: ce(x, y).mean())
    >>> print(f"{float(loss(jnp.zeros((2, 3)), jnp.array([0, 2]))):.4f}")  # ln 3
    1.0986
    >>> try:
    ...   loss(jnp.zeros((2, 3)), jnp.array([0, 3]))
    ... except checkify.JaxRuntimeError as e:
    ...   print(str(e).splitlines()[0][:60])
    `labels` must be class indices in [0, 3) for logits with 3 c
  """
  def traced(*args, **kwargs):
    with checked_mode():
      return fn(*args, **kwargs)

  functionalized = checkify.checkify(traced, errors=checkify.user_checks)
  if jit:
    functionalized = jax.jit(functionalized)

  @functools.wraps(fn)
  def run(*args, **kwargs):
    err, out = functionalized(*args, **kwargs)
    err.throw()
    return out
  return run
