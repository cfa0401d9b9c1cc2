"""Combining named loss terms with (possibly scheduled) weights.

A multi-task or multi-objective recipe (focal + supervised contrastive, or
intent + entity + command heads) is a weighted sum of plain per-example
losses, not a loss with flags. :func:`weighted_sum` does that sum in one place
and hands back each weighted term, so a training step can log every term
without recomputing it and a monitor can see which term stalls.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

import jax
import jax.numpy as jnp

from jaxloss.losses import _checks

ArrayLike = Any
Weight = Union[ArrayLike, Callable[[ArrayLike], ArrayLike]]


def weighted_sum(
    terms: Mapping[str, ArrayLike],
    weights: Mapping[str, Weight],
    *,
    step: Optional[ArrayLike] = None,
) -> Tuple[jax.Array, Dict[str, jax.Array]]:
  r"""Combines named loss terms: :math:`L = \sum_k \lambda_k \, \ell_k`.

  Each weight is a number, a (possibly traced) scalar array such as a
  curriculum knob, or an optax schedule ``step -> value`` evaluated at
  ``step`` -- e.g. the joint-NLU warm-up of the entity weight,
  ``optax.piecewise_constant_schedule(0.3, {e1: 4/3, e2: 5/4})`` for
  0.3 → 0.4 → 0.5. Weights change nothing about tracing: a new value does not
  recompile a jitted step.

  Args:
    terms: Mapping from a term's name to its loss: per-example arrays that all
      have the same shape (e.g. ``[B]`` for an intent head and the per-sentence
      :func:`jaxloss.losses.sequence_tagging_loss`), or scalars that have
      already been reduced. Floating dtypes.
    weights: Mapping with exactly the same names, to a non-negative scalar or
      a callable ``step -> scalar`` (an optax schedule).
    step: The step at which to evaluate callable weights (an int or a traced
      int32, usually ``state.step``). Required when a weight is callable.

  Returns:
    ``(total, weighted)``: ``total`` has the terms' common shape and their
    promoted dtype; ``weighted[name] = weights[name] * terms[name]``, so the
    values of ``weighted`` sum to ``total``. Log the raw terms (the inputs) to
    see each task's learning, and the weighted ones to see what drives the
    gradient.

  Raises:
    ValueError: if ``terms`` is empty, the names of ``terms`` and ``weights``
      differ, the terms' shapes differ, a weight is not a scalar, a concrete
      weight is negative or non-finite, or a callable weight is given without
      ``step``.
    TypeError: if a term is not floating.

  Examples:
    >>> import jax.numpy as jnp
    >>> import optax
    >>> from jaxloss.losses import weighted_sum
    >>> terms = {"focal": jnp.array([0.5, 1.0]),
    ...          "supcon": jnp.array([2.0, 4.0])}
    >>> total, weighted = weighted_sum(terms, {"focal": 0.7, "supcon": 0.3})
    >>> with jnp.printoptions(precision=4):
    ...   print(total, weighted["supcon"])
    [0.95 1.9 ] [0.6 1.2]
    >>> warmup = optax.piecewise_constant_schedule(0.3, {100: 4 / 3, 200: 1.25})
    >>> total, _ = weighted_sum({"entity": jnp.array(1.0)}, {"entity": warmup},
    ...                         step=150)
    >>> print(f"{float(total):.2f}")
    0.40

  References:
    Kendall et al., `Multi-Task Learning Using Uncertainty to Weigh Losses
    <https://arxiv.org/abs/1705.07115>`_, CVPR 2018 (the fixed-weight sum it
    starts from, eq. 1).
  """
  if not terms:
    raise ValueError("`terms` must hold at least one named loss; got {}.")
  if set(terms) != set(weights):
    missing = sorted(set(terms) - set(weights))
    extra = sorted(set(weights) - set(terms))
    raise ValueError(
        "`weights` must have exactly the names of `terms`; missing weights "
        f"for {missing}, weights without a term: {extra}.")
  arrays = {}
  for name, term in terms.items():
    term = jnp.asarray(term)
    _checks.check_floating(term, f"terms[{name!r}]")
    arrays[name] = term
  shapes = {name: tuple(a.shape) for name, a in arrays.items()}
  if len(set(shapes.values())) != 1:
    raise ValueError(
        "every term must have the same shape (per-example losses of one batch, "
        f"or all scalars); got shapes {shapes}. Reduce token- or pair-level "
        "losses to one value per example first.")

  total = None
  weighted = {}
  for name in terms:  # insertion order, so the sum order is the user's
    weight = weights[name]
    if callable(weight):
      if step is None:
        raise ValueError(
            f"`weights[{name!r}]` is a schedule; pass `step=` to evaluate it.")
      weight = weight(step)
    weight = jnp.asarray(weight)
    if weight.ndim != 0:
      raise ValueError(
          f"`weights[{name!r}]` must be a scalar; got shape {weight.shape}.")
    _checks.check_nonnegative(weight, f"weights[{name!r}]")
    term = arrays[name]
    # The weight is cast to the term's dtype so a bf16 loss stays bf16.
    contribution = weight.astype(term.dtype) * term
    weighted[name] = contribution
    total = contribution if total is None else total + contribution
  return total, weighted
