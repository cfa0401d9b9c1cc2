"""Store an activation once on the CPU instead of letting XLA:CPU recompute it.

XLA fuses element-wise producers into every consumer, duplicating them when an array
has several consumers. In a residual network each block's output is
``relu(bn(conv(...)) + shortcut)``, and its shortcut is the previous block's output: an
element-wise chain through the whole stage, broken only by the convolutions. So unless
something stores a block's output, each consumer of it recomputes the batch norms,
additions and ReLUs of every earlier block of the stage. The worst consumers are the
layout transposes XLA:CPU (jax 0.10.2) puts before each kernel-gradient convolution:
they read the chain's inputs in transposed order. In ResNet-32's training step (batch
128, 1 thread) those transposes took 744 of 1,671 profiled ms; with each block's output
and inner activation stored, 74 ms, and the step 965 ms against 1,762 ms, with
bit-identical gradients (``python -m tools.bench.profile --workloads resnet32`` on each
commit; ``docs/bench_vs_torch.md``).

``lax.optimization_barrier`` would say this, but XLA:CPU removes barriers before
fusion. A ``lax.cond`` is a fusion boundary the CPU compiler keeps: its operand and
result are buffers. Its predicate (the first element is NaN) is read at run time, and
both branches return ``x`` exactly, so the values never change. Only the CPU lowering
does this (``jax.lax.platform_dependent``); GPU and TPU keep XLA's own fusion.
"""

from __future__ import annotations

import jax
from jax import lax
import jax.numpy as jnp


def _stored_on_cpu(x: jax.Array) -> jax.Array:
  # Two branches that are the same function but not the same computation, so that
  # XLA's conditional simplifier keeps the conditional (identical branches are folded).
  return lax.cond(jnp.isnan(x.reshape(-1)[0]), lambda v: v, lambda v: v * 1, x)


def materialize(x: jax.Array) -> jax.Array:
  """``x`` unchanged, stored in its own buffer on the CPU backend.

  Args:
    x: a floating-point array with at least one element, any shape.

  Returns:
    ``x`` (the same values, shape and dtype). On the CPU the array is written once
    by a ``lax.cond`` whose consumers read it, instead of each consumer recomputing
    the element-wise ops that produced it (see the module docstring). On other
    platforms, ``x`` itself. Differentiable: the gradient passes through unchanged.

  Raises:
    ValueError: ``x`` is not a floating-point array or has no elements.

  Example:
    >>> import jax.numpy as jnp
    >>> x = jnp.arange(6.0).reshape(2, 3)
    >>> bool((materialize(x) == x).all())
    True
  """
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating) or x.size == 0:
    raise ValueError(f"materialize needs a non-empty floating-point array, got "
                     f"{x.dtype}{list(x.shape)}")
  return lax.platform_dependent(x, cpu=_stored_on_cpu, default=lambda v: v)
