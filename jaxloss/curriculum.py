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
from typing import Callable, Mapping, Optional, Sequence, Union

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


def warmup_milestone_lr(learning_rate: float, *, warmup: float,
                        milestones: Sequence[float], decay: float) -> optax.Schedule:
  """A linear warm-up from 0 to ``learning_rate`` over ``warmup``, then the LR multiplied
  by ``decay`` at each milestone; all times in the caller's unit, from 0. With
  ``warmup = 0`` this is :func:`milestone_lr`. (The CIFAR-LT schedule of Cao et al. and
  Menon et al.: 5 warm-up epochs, steps at 160 and 180 of 200.)

  Raises:
    ValueError: a negative ``warmup`` or a milestone not after it.

  Examples:
    >>> lr = warmup_milestone_lr(0.1, warmup=5, milestones=(160, 180), decay=0.1)
    >>> [round(float(lr(t)), 6) for t in (0, 2.5, 5, 159, 160, 180)]
    [0.0, 0.05, 0.1, 0.1, 0.01, 0.001]
  """
  if warmup < 0:
    raise ValueError(f"warmup must be >= 0, got {warmup}")
  if warmup == 0:
    return milestone_lr(learning_rate, milestones, decay)
  for m in milestones:
    if not m > warmup:
      raise ValueError(f"milestones must come after the warm-up ({warmup}), got {m}")
  return optax.join_schedules(
      [optax.linear_schedule(0.0, learning_rate, warmup),
       milestone_lr(learning_rate, [m - warmup for m in milestones], decay)], [warmup])


# A class-weight cap that caps nothing (knob values must be finite): head-normalised
# weights of any real data set stay far below it.
UNCAPPED = 1e6


def _shifted(schedule: Callable[[jax.Array], jax.Array], offset: float):
  """``schedule`` read ``offset`` later: a stage value (time since the stage's start)
  that continues a schedule of the whole run."""
  return lambda t: schedule(t + offset)


def deferred_reweighting(*, num_epochs: float, learning_rate: float,
                         drw_start: float = 0.8, warmup_epochs: float = 0.0,
                         lr_milestones: Sequence[float] = (0.8, 0.9),
                         lr_decay: float = 0.1, aug_strength: float = 0.0) -> Curriculum:
  """Deferred re-weighting (DRW, Cao et al., NeurIPS 2019): uniform class weights, then
  the loss re-weighted from ``drw_start`` of the run on.

  Two stages with knobs ``class_weight_cap`` (1 = uniform weights with
  ``normalize="head"``; :data:`UNCAPPED` = the weights as computed, since a knob must
  be finite), ``sampler_mix`` 0 (the data
  distribution), ``tau`` 0, ``aug_strength`` and ``learning_rate`` (linear warm-up, then
  ``lr_decay`` at each milestone, one schedule over the run):

  ======  ==================  ======
  stage   share of epochs     cap
  ======  ==================  ======
  erm     0 - drw_start       1
  drw     drw_start - 1       1e6
  ======  ==================  ======

  Args:
    num_epochs: total epochs (> 0).
    learning_rate: the base LR.
    drw_start: share of the run where re-weighting starts, in (0, 1) (160 / 200).
    warmup_epochs: linear LR warm-up at the start (epochs).
    lr_milestones: shares of the run where the LR decays.
    lr_decay: the factor at each milestone.
    aug_strength: the strong-augmentation knob, the same in both stages.

  Raises:
    ValueError: ``num_epochs <= 0`` or ``drw_start`` outside (0, 1).

  Examples:
    >>> cc = deferred_reweighting(num_epochs=200, learning_rate=0.1,
    ...                           warmup_epochs=5).compile(steps_per_epoch=1)
    >>> cc.names, cc.boundaries
    (('erm', 'drw'), (0, 160))
    >>> [(float(cc.values(s)["class_weight_cap"]), round(float(cc.values(s)[
    ...     "learning_rate"]), 6)) for s in (100, 159, 160, 180)]
    [(1.0, 0.1), (1.0, 0.1), (1000000.0, 0.01), (1000000.0, 0.001)]
  """
  if not num_epochs > 0:
    raise ValueError(f"num_epochs must be > 0, got {num_epochs}")
  if not 0 < drw_start < 1:
    raise ValueError(f"drw_start must be in (0, 1), got {drw_start}")
  lr = warmup_milestone_lr(learning_rate, warmup=warmup_epochs,
                           milestones=[m * num_epochs for m in lr_milestones],
                           decay=lr_decay)
  start = drw_start * num_epochs
  common = {"sampler_mix": 0.0, "tau": 0.0, "aug_strength": aug_strength}
  return Curriculum([
      Stage("erm", 0, {"class_weight_cap": 1.0, **common, "learning_rate": lr}),
      Stage("drw", start, {"class_weight_cap": UNCAPPED, **common,
                           "learning_rate": _shifted(lr, start)},
            expect={"uar": "up"}),
  ], unit="epoch")


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
    warmup_epochs: float = 0.0,
    aug_strengths: Optional[Sequence[float]] = None,
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
    warmup_epochs: a linear LR warm-up from 0 at the start of the warm-up stage
      (0 = none; shorter than the stage).
    aug_strengths: per-stage augmentation strengths (four values, warm-up to
      cooldown) instead of ``aug_strength`` in every stage, e.g. strong augmentation
      only where the tail is up-weighted.

  Returns:
    A :class:`Curriculum` in epochs with knobs ``class_weight_cap``, ``sampler_mix``,
    ``tau``, ``aug_strength`` and ``learning_rate``.

  Raises:
    ValueError: ``num_epochs <= 0``, a milestone outside the cooldown, a warm-up as
      long as the warm-up stage, or ``aug_strengths`` without four values.

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
  lr_warmup = learning_rate
  if warmup_epochs:
    if not 0 < warmup_epochs < FOUR_STAGE_TABLE[1][1] * num_epochs:
      raise ValueError(f"warmup_epochs must be in (0, {FOUR_STAGE_TABLE[1][1] * num_epochs})"
                       f" (shorter than the warm-up stage), got {warmup_epochs}")
    lr_warmup = warmup_milestone_lr(learning_rate, warmup=warmup_epochs, milestones=(),
                                    decay=1.0)
  if aug_strengths is None:
    aug_strengths = (aug_strength,) * len(FOUR_STAGE_TABLE)
  if len(aug_strengths) != len(FOUR_STAGE_TABLE):
    raise ValueError(f"aug_strengths must hold {len(FOUR_STAGE_TABLE)} values (warm-up, "
                     f"margin, aggressive, cooldown), got {tuple(aug_strengths)}")
  stages = []
  for (name, share, cap, sampler, tau), strength in zip(FOUR_STAGE_TABLE, aug_strengths):
    lr = {"warm-up": lr_warmup, "cooldown": lr_cooldown}.get(name, learning_rate)
    stages.append(Stage(name, share * num_epochs, {
        "class_weight_cap": cap,
        "sampler_mix": SAMPLERS[sampler] * sampler_mix,
        "tau": tau,
        "aug_strength": float(strength),
        "learning_rate": lr,
    }, expect=FOUR_STAGE_EXPECT[name]))
  return Curriculum(stages, unit="epoch")
