"""Dense layers whose products are 2-D matrix products on the CPU, in the forward pass and
in both gradients.

``flax.linen.Dense`` on a ``[B, T, D]`` input contracts the last axis with the kernel's
first; JAX's transpose rule then writes the kernel gradient as a product that contracts
two axes (``B`` and ``T``) of the input and of the output gradient. XLA:CPU (jax 0.10.2)
lays that product out with a transposed copy of the output gradient and runs it on Eigen
at about half the speed of the forward product, which it gives to YNNPACK. Flattening the
leading axes first (a free reshape of a row-major array) makes every product of the layer
a 2-D one: the same parameters and values, and a faster step. Measured at 1 thread on an
Intel Xeon, the pretrained encoder's value-and-gradient step (all-MiniLM-L6-v2, batch
32 × 32 tokens) takes 787 ms against 954 ms with ``flax.linen.Dense`` (1.21×), with
bit-identical gradients (``python -m tools.bench.encoder``; ``docs/encoders.md``). Only
the CPU lowering flattens (``jax.lax.platform_dependent``): GPU and TPU, where this was
not measured, keep XLA's own products.
"""

from __future__ import annotations

import math
from typing import Any, Sequence, Tuple

import flax.linen as nn
import jax
from jax import lax


def _is_trailing(dims: Sequence[int], ndim: int) -> bool:
  return tuple(dims) == tuple(range(ndim - len(dims), ndim))


def flat_dot_general(lhs: jax.Array, rhs: jax.Array,
                     dimension_numbers: Tuple[Tuple[Sequence[int], Sequence[int]],
                                              Tuple[Sequence[int], Sequence[int]]],
                     precision: Any = None,
                     preferred_element_type: Any = None) -> jax.Array:
  """``jax.lax.dot_general``, computed on the CPU as one 2-D matrix product where it can.

  Dense layers contract the trailing axes of ``lhs`` (the input, ``[*lead, *contract]``)
  with the leading axes of ``rhs`` (the kernel, ``[*contract, *out]``), in the same order
  and with no batch axes. Lowered for the CPU, such a product is computed as
  ``[prod(lead), prod(contract)] · [prod(contract), prod(out)]`` and reshaped to
  ``[*lead, *out]``, so that its gradients are 2-D products too; lowered for any other
  platform it is ``lax.dot_general`` itself (``jax.lax.platform_dependent`` picks at
  lowering time). Any other ``dimension_numbers`` go to ``lax.dot_general`` unchanged.

  Args:
    lhs, rhs: the operands, any shapes and dtypes ``lax.dot_general`` accepts.
    dimension_numbers: ``((lhs_contracting, rhs_contracting), (lhs_batch, rhs_batch))``.
    precision, preferred_element_type: passed to ``lax.dot_general``.

  Returns:
    What ``lax.dot_general(lhs, rhs, dimension_numbers, ...)`` returns: the same shape
    and dtype, and the same products summed over the same axes (equal values up to the
    order of the float32 sums; bit-identical in the encoder measured above).

  Raises:
    What ``lax.dot_general`` raises for mismatched shapes.

  Examples:
    >>> import jax.numpy as jnp
    >>> x, kernel = jnp.ones((2, 3, 4)), jnp.ones((4, 5))  # [B, T, D], [D, F]
    >>> dims = (((2,), (0,)), ((), ()))  # what flax.linen.Dense passes
    >>> y = flat_dot_general(x, kernel, dims)
    >>> y.shape, bool((y == lax.dot_general(x, kernel, dims)).all())
    ((2, 3, 5), True)
  """
  (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
  k = len(lhs_contract)
  flat = (not lhs_batch and not rhs_batch and k == len(rhs_contract) and k > 0
          and lhs.ndim > k and _is_trailing(lhs_contract, lhs.ndim)
          and tuple(rhs_contract) == tuple(range(k))
          and lhs.shape[lhs.ndim - k:] == rhs.shape[:k])
  def plain(lhs, rhs):
    return lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                           preferred_element_type=preferred_element_type)

  if not flat or (lhs.ndim == 2 and rhs.ndim == 2 and k == 1):
    return plain(lhs, rhs)
  lead, out = lhs.shape[:lhs.ndim - k], rhs.shape[k:]
  inner = math.prod(rhs.shape[:k])

  def flattened(lhs, rhs):
    y = lax.dot_general(lhs.reshape(math.prod(lead), inner),
                        rhs.reshape(inner, math.prod(out)), (((1,), (0,)), ((), ())),
                        precision=precision,
                        preferred_element_type=preferred_element_type)
    return y.reshape(*lead, *out)

  return lax.platform_dependent(lhs, rhs, cpu=flattened, default=plain)


class Dense(nn.Dense):
  """``flax.linen.Dense`` with :func:`flat_dot_general`: the same parameters (``kernel``
  ``[in, features]``, ``bias``), names and values; on the CPU a 2-D product on any input
  rank."""
  dot_general: Any = flat_dot_general


def attention_kwargs() -> dict:
  """Keyword arguments that make ``flax.linen.MultiHeadDotProductAttention``'s query, key,
  value and output projections use :func:`flat_dot_general`."""
  return {"qkv_dot_general": flat_dot_general, "out_dot_general": flat_dot_general}
