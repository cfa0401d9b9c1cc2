"""The one pytree train state (DESIGN.md convention 9)."""

from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax

from jaxloss.curriculum import CurriculumState

from jaxloss.monitors.stats import BASE_SUM_KEYS as TRAIN_SUM_KEYS
from jaxloss.monitors.stats import zero_sums


def zero_train_sums(monitor=None) -> dict[str, jax.Array]:
  """Fresh per-log-period sums, see :class:`TrainState` and
  :func:`jaxloss.monitors.zero_sums` (``monitor`` is a ``MonitorSpec`` or None)."""
  return zero_sums(monitor)


@flax.struct.dataclass
class TrainState:
  """Everything a run needs to continue exactly, as one pytree.

  Attributes:
    step: int32 scalar, the number of train steps taken (and the index of the next).
    params: model parameters.
    opt_state: optax state (the LR is injected from the curriculum each step).
    rng: a raw ``uint32[2]`` PRNG key, the run's base key. Each step folds in
      ``step``, so the randomness of step s does not depend on how the run got there
      (resume-exact) and the raw form round-trips through orbax.
    curriculum: :class:`~jaxloss.curriculum.CurriculumState`.
    model_state: non-trainable collections, e.g. ``{"batch_stats": ...}``.
    skipped_steps: int32 scalar, steps whose loss or gradient was non-finite and whose
      update was therefore skipped (params, opt_state and model_state unchanged).
    train_sums: float32 sums since the last log step (``loss``, ``steps``,
      ``grad_norm``, ``clipped``, ``skipped``, plus the monitors' statistics when a
      ``MonitorSpec`` is given, see :func:`jaxloss.monitors.zero_sums`); kept in the
      state so that a log period split by a restart still reports the same numbers.
    apply_fn, tx: static (not pytree nodes, not checkpointed).
    ema_params: None, or the exponential moving average of ``params`` (Polyak
      averaging) that evaluation uses when the loop runs with ``config.ema_decay``
      (:func:`jaxloss.train_step.make_train_step`'s ``ema_decay``).
    sampler_cache: None, or what the recipe's sampler carries from step to step (its
      ``init_cache()``, e.g. the epoch's permutation of
      :class:`~jaxloss.data.sampler.EpochPermutationSampler`). A cache never changes
      the batches, only what they cost: the loop adds it after restoring or
      initialising the state and leaves it out of checkpoints
      (:func:`jaxloss.training.loop.with_sampler_cache`).
  """
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array
  curriculum: CurriculumState
  model_state: Any
  skipped_steps: jax.Array
  train_sums: dict
  apply_fn: Callable = flax.struct.field(pytree_node=False)
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
  ema_params: Any = None
  sampler_cache: Any = None

  @classmethod
  def create(cls, *, apply_fn, params, tx, rng, model_state=None,
             train_sums=None) -> "TrainState":
    """A state at step 0. ``rng`` is a raw ``uint32[2]`` key (``jax.random.PRNGKey``);
    ``train_sums`` defaults to the base sums (monitors off)."""
    return cls(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        rng=jnp.asarray(rng, jnp.uint32),
        curriculum=CurriculumState.create(),
        model_state=model_state if model_state is not None else {},
        skipped_steps=jnp.zeros((), jnp.int32),
        train_sums=train_sums if train_sums is not None else zero_train_sums(),
        apply_fn=apply_fn,
        tx=tx,
    )
