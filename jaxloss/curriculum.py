"""Stage-based curricula compiled into optax schedules.

A curriculum is data: an ordered list of :class:`Stage` (a name, a start in epochs or
steps, and one value per knob). :meth:`Curriculum.compile` turns it into one optax
schedule per knob (``optax.join_schedules`` of the per-stage values) plus a stage-index
function, all pure functions of the global step. The jitted train step evaluates them on
``state.step``, so crossing a stage boundary changes *values*, never the traced program:
no Python ``if stage`` inside jit and no recompilation (DESIGN.md convention 8).

The knob names are free-form; the train step of the imbalance recipe reads
``class_weight_cap``, ``sampler_mix``, ``tau``, ``aug_strength`` and ``learning_rate``.
:func:`four_stage` reproduces the recipe's table and :func:`constant` gives a one-stage
curriculum (the ERM baseline).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Mapping, Sequence, Union

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

# A knob value is a number, or a callable of the time since its stage started (in the
# curriculum's unit: fractional epochs or steps), e.g. an LR decayed at milestones.
KnobValue = Union[float, int, Callable[[jax.Array], jax.Array]]

UNITS = ("epoch", "step")

# The sampler knob is a mix between the data distribution (0) and the class-balanced
# distribution (1); stages may name the two ends instead of giving the number.
SAMPLERS = {"random": 0.0, "class_balanced": 1.0}

_INTENTS = ("up", "down", "not_down", "not_up")


@dataclasses.dataclass(frozen=True)
class Stage:
  """One stage of a curriculum.

  Attributes:
    name: stage name used in logs, metrics and plots (e.g. ``"warm-up"``).
    start: first epoch (or step, per the curriculum's ``unit``) of the stage, >= 0.
      The first stage must start at 0.
    values: knob name -> value. A value is a float (for ``sampler_mix`` also the names
      ``"random"`` = 0 or ``"class_balanced"`` = 1), or a callable receiving the time
      since the stage started (fractional epochs for ``unit="epoch"``, steps for
      ``unit="step"``) and returning a scalar; optax schedules qualify.
    expect: what the stage is for, as test-metric intents checked by the
      ``stage_expectation`` monitor: metric (``"war"``, ``"uar"``) -> ``"up"``,
      ``"down"``, ``"not_down"`` or ``"not_up"`` over the stage.
  """
  name: str
  start: float
  values: Mapping[str, KnobValue]
  expect: Mapping[str, str] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    for metric, intent in dict(self.expect).items():
      if intent not in _INTENTS:
        raise ValueError(f"stage {self.name!r}: expect[{metric!r}] must be one of "
                         f"{_INTENTS}, got {intent!r}")


@flax.struct.dataclass
class CurriculumState:
  """Curriculum state carried in the TrainState.

  Attributes:
    stage: int32 scalar, index of the stage that the state's ``step`` belongs to (the
      stage of the next step to run). It is recomputed from the step by the train step;
      keeping it in the state makes checkpoints and metrics self-describing and is the
      slot where stateful (history-dependent) stages would keep their state, following
      optax's StatefulSchedule protocol.
  """
  stage: jax.Array

  @classmethod
  def create(cls) -> "CurriculumState":
    """The state at step 0 (stage 0)."""
    return cls(stage=jnp.zeros((), jnp.int32))


@dataclasses.dataclass(frozen=True)
class CompiledCurriculum:
  """A curriculum with boundaries in steps and one optax schedule per knob.

  Built by :meth:`Curriculum.compile`; hashable and static (safe to close over in jit).

  Attributes:
    names: stage names, in order.
    boundaries: first step of each stage; ``boundaries[0] == 0``, strictly increasing.
    schedules: knob name -> optax schedule (step -> scalar).
    steps_per_epoch: the conversion used.
  """
  names: tuple[str, ...]
  boundaries: tuple[int, ...]
  schedules: Mapping[str, optax.Schedule] = dataclasses.field(hash=False, compare=False)
  steps_per_epoch: int

  @property
  def knobs(self) -> tuple[str, ...]:
    """Knob names, in declaration order."""
    return tuple(self.schedules)

  def stage_index(self, step: jax.Array) -> jax.Array:
    """Index of the stage containing ``step`` (int32 scalar; traceable)."""
    bounds = jnp.asarray(self.boundaries[1:], jnp.int32)
    return jnp.sum(jnp.asarray(step) >= bounds).astype(jnp.int32)

  def values(self, step: jax.Array) -> dict[str, jax.Array]:
    """All knob values at ``step`` as float32 scalars (traceable)."""
    return {k: jnp.asarray(s(step), jnp.float32) for k, s in self.schedules.items()}

  def stage_of(self, step: int) -> int:
    """Host-side :meth:`stage_index` for logging (no device work)."""
    return int(np.searchsorted(np.asarray(self.boundaries), step, side="right") - 1)

  def host_values(self, step: int) -> dict[str, float]:
    """Host-side knob values at ``step`` (for progress lines and plots)."""
    return {k: float(v) for k, v in jax.device_get(self.values(step)).items()}


@dataclasses.dataclass(frozen=True)
class Curriculum:
  """A stage-based curriculum declared as data.

  Attributes:
    stages: the stages in order; every stage sets the same knobs.
    unit: ``"epoch"`` (stage starts and callable knob times in epochs) or ``"step"``.

  Raises:
    ValueError: no stages; a first start other than 0; an unknown sampler name; starts not strictly increasing;
      duplicate stage names; stages that set different knobs; an unknown unit.

  Examples:
    >>> c = Curriculum([Stage("a", 0, {"tau": 0.0}), Stage("b", 2, {"tau": 1.0})])
    >>> cc = c.compile(steps_per_epoch=10)
    >>> cc.boundaries, [float(cc.values(s)["tau"]) for s in (19, 20)]
    ((0, 20), [0.0, 1.0])
  """
  stages: Sequence[Stage]
  unit: str = "epoch"

  def __post_init__(self):
    object.__setattr__(self, "stages", tuple(self.stages))
    if self.unit not in UNITS:
      raise ValueError(f"unit must be one of {UNITS}, got {self.unit!r}")
    if not self.stages:
      raise ValueError("stages must hold at least one Stage, got an empty sequence")
    starts = [float(s.start) for s in self.stages]
    if starts[0] != 0:
      raise ValueError(f"stages[0].start must be 0, got {starts[0]}")
    for i in range(1, len(starts)):
      if not starts[i] > starts[i - 1]:
        raise ValueError(
            "stage starts must be strictly increasing, got "
            f"stages[{i}].start={starts[i]} after stages[{i - 1}].start={starts[i - 1]} "
            f"(starts: {starts})")
    names = [s.name for s in self.stages]
    if len(set(names)) != len(names):
      raise ValueError(f"stage names must be unique, got {names}")
    for s in self.stages:
      value = s.values.get("sampler_mix")
      if isinstance(value, str) and value not in SAMPLERS:
        raise ValueError(
            f"unknown sampler {value!r} in stage {s.name!r}; expected one of "
            f"{sorted(SAMPLERS)} or a mix in [0, 1]")
      if isinstance(value, (int, float)) and not 0.0 <= value <= 1.0:
        raise ValueError(
            f"sampler_mix in stage {s.name!r} must be in [0, 1], got {value}")
    knobs = set(self.stages[0].values)
    for s in self.stages[1:]:
      if set(s.values) != knobs:
        raise ValueError(
            f"every stage must set the same knobs: stage {s.name!r} sets "
            f"{sorted(s.values)}, stage {self.stages[0].name!r} sets {sorted(knobs)}")

  @property
  def names(self) -> tuple[str, ...]:
    """Stage names, in order."""
    return tuple(s.name for s in self.stages)

  @property
  def knobs(self) -> tuple[str, ...]:
    """Knob names (every stage sets the same ones)."""
    return tuple(self.stages[0].values)

  def compile(self, steps_per_epoch: int) -> CompiledCurriculum:
    """Converts stage starts to steps and builds one optax schedule per knob.

    Args:
      steps_per_epoch: optimisation steps in one epoch (> 0). Ignored for
        ``unit="step"``. Epoch starts are rounded to the nearest step.

    Returns:
      A :class:`CompiledCurriculum`.

    Raises:
      ValueError: ``steps_per_epoch < 1``, or two stages falling on the same step after
        rounding (a stage shorter than one step).
    """
    if int(steps_per_epoch) < 1:
      raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    scale = steps_per_epoch if self.unit == "epoch" else 1
    boundaries = tuple(int(round(float(s.start) * scale)) for s in self.stages)
    for i in range(1, len(boundaries)):
      if boundaries[i] <= boundaries[i - 1]:
        raise ValueError(
            f"stage {self.stages[i].name!r} starts at step {boundaries[i]}, not after "
            f"stage {self.stages[i - 1].name!r} (step {boundaries[i - 1]}): with "
            f"steps_per_epoch={steps_per_epoch} a stage would be shorter than one step")
    schedules = {}
    for knob in self.knobs:
      parts = [_as_schedule(s.values[knob], scale) for s in self.stages]
      schedules[knob] = optax.join_schedules(parts, list(boundaries[1:]))
    return CompiledCurriculum(names=self.names, boundaries=boundaries,
                              schedules=schedules, steps_per_epoch=int(steps_per_epoch))


def _as_schedule(value: KnobValue, scale: int) -> optax.Schedule:
  if isinstance(value, str):
    value = SAMPLERS[value]
  if callable(value):
    # join_schedules hands each stage the steps since its start; callables get the time
    # in the curriculum's unit so presets can be written in epochs.
    return lambda count: value(jnp.asarray(count, jnp.float32) / scale)
  if not math.isfinite(float(value)):
    raise ValueError(f"knob values must be finite numbers or callables, got {value!r}")
  return optax.constant_schedule(float(value))


def milestone_lr(learning_rate: float, milestones: Sequence[float],
                 decay: float) -> optax.Schedule:
  """``learning_rate`` multiplied by ``decay`` at each milestone (optax's
  ``piecewise_constant_schedule``); milestones in the caller's time unit.

  Examples:
    >>> lr = milestone_lr(0.1, (10, 20), 0.1)
    >>> [round(float(lr(t)), 6) for t in (9, 10, 20)]
    [0.1, 0.01, 0.001]
  """
  return optax.piecewise_constant_schedule(
      learning_rate, {round(float(m), 6): decay for m in milestones})


def constant(**values: KnobValue) -> Curriculum:
  """A one-stage curriculum (``"constant"``) holding ``values`` for the whole run.

  Examples:
    >>> constant(tau=0.0, sampler_mix=0.0).names
    ('constant',)
  """
  return Curriculum([Stage("constant", 0, dict(values))])


FOUR_STAGE_TABLE = (
    # name, start (share of epochs), class-weight cap, sampler, tau
    ("warm-up", 0.00, 1.5, "random", 0.0),
    ("margin", 0.15, 3.0, "class_balanced", 0.5),
    ("aggressive", 0.40, 10.0, "class_balanced", 1.2),
    ("cooldown", 0.75, 3.0, "class_balanced", 0.8),
)

# What each stage is for (checked by the stage_expectation monitor): the warm-up learns
# the frequent classes (WAR rises); margin and aggressive trade head accuracy for the
# tail (UAR rises, WAR may fall); the cooldown recovers accuracy without losing the tail.
FOUR_STAGE_EXPECT = {
    "warm-up": {"war": "up"},
    "margin": {"uar": "up"},
    "aggressive": {"uar": "up"},
    "cooldown": {"war": "up", "uar": "not_down"},
}


def four_stage(
    *,
    num_epochs: float = 100,
    learning_rate: float,
    aug_strength: float = 1.0,
    lr_milestones: Sequence[float] = (0.85, 0.95),
    lr_decay: float = 0.1,
    sampler_mix: float = 1.0,
) -> Curriculum:
  """The four-stage imbalance curriculum: warm-up, margin, aggressive, cooldown.

  ===========  ================  ========  ==============  =====  ===========
  stage        share of epochs   cw cap    sampler         tau    LR
  ===========  ================  ========  ==============  =====  ===========
  warm-up      0 - 15 %          1.5       data (mix 0)    0      base
  margin       15 - 40 %         3.0       balanced        0.5    base
  aggressive   40 - 75 %         10.0      balanced        1.2    base
  cooldown     75 - 100 %        3.0       balanced        0.8    milestones
  ===========  ================  ========  ==============  =====  ===========

  Boundaries scale with ``num_epochs``. "Strong" augmentation is ``aug_strength`` in
  every stage. In the cooldown the LR is multiplied by ``lr_decay`` at each milestone
  (given as shares of the whole run, via ``optax.piecewise_constant_schedule``).

  Args:
    num_epochs: total epochs of the run (> 0).
    learning_rate: the base LR.
    aug_strength: augmentation strength in [0, 1].
    lr_milestones: shares of the run in (0.75, 1) where the cooldown LR decays.
    lr_decay: factor applied at each milestone.
    sampler_mix: the mix used by the class-balanced stages (1 = fully balanced).

  Returns:
    A :class:`Curriculum` in epochs with knobs ``class_weight_cap``, ``sampler_mix``,
    ``tau``, ``aug_strength`` and ``learning_rate``.

  Raises:
    ValueError: ``num_epochs <= 0`` or a milestone outside the cooldown.

  Examples:
    >>> cc = four_stage(num_epochs=100, learning_rate=0.1).compile(steps_per_epoch=1)
    >>> cc.boundaries
    (0, 15, 40, 75)
    >>> [float(cc.values(s)["tau"]) for s in (14, 15, 40, 75)]
    [0.0, 0.5, 1.2, 0.8]
  """
  if not num_epochs > 0:
    raise ValueError(f"num_epochs must be > 0, got {num_epochs}")
  cooldown_start = FOUR_STAGE_TABLE[-1][1]
  for m in lr_milestones:
    if not cooldown_start < m < 1:
      raise ValueError(
          f"lr_milestones must lie in the cooldown ({cooldown_start}, 1), got {m}")
  lr_cooldown = milestone_lr(
      learning_rate, [(m - cooldown_start) * num_epochs for m in lr_milestones],
      lr_decay)
  stages = []
  for name, share, cap, sampler, tau in FOUR_STAGE_TABLE:
    stages.append(Stage(name, share * num_epochs, {
        "class_weight_cap": cap,
        "sampler_mix": SAMPLERS[sampler] * sampler_mix,
        "tau": tau,
        "aug_strength": aug_strength,
        "learning_rate": lr_cooldown if name == "cooldown" else learning_rate,
    }, expect=FOUR_STAGE_EXPECT[name]))
  return Curriculum(stages, unit="epoch")
