"""The recipe protocol: what a recipe gives the one training loop.

A recipe is data + model + objective + curriculum + evaluation + selection rule +
anchors (DESIGN.md, "Layout"). Everything else — distribution, input, checkpoints,
resume, monitors, logging, the summary's run facts — is the loop's
(:func:`jaxloss.training.train_and_evaluate`). A recipe module exposes
``build(config, workdir) -> Recipe``; ``docs/recipes.md`` walks through writing one.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from jaxloss.curriculum import CompiledCurriculum, Curriculum
from jaxloss.monitors.stats import MonitorSpec

# (outputs, labels, knobs) -> (per_example, weight[, aux]); see jaxloss.train_step.
LossFn = Callable[..., tuple]


@dataclasses.dataclass(frozen=True)
class Member:
  """One member of a vmapped ensemble: its seed, the knob values it overrides (merged
  over the curriculum's inside the step, e.g. loss weights) and fields it adds to its
  train events."""
  seed: int
  knobs: Mapping[str, float] = dataclasses.field(default_factory=dict)
  fields: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class SequenceBuckets:
  """Cut each host-input training batch to the bucket of its longest sequence.

  The step then runs on ``[B, T_bucket]`` instead of the dataset's full width and
  compiles once per bucket used (counted in ``summary.json``'s
  ``train_step_compilations``). The bucket is chosen from the *global* batch, so
  every process of a multi-process run cuts to the same width. With the training set
  on the device (``config.train_input="device"``) batches keep the full width.

  Attributes:
    keys: the input fields whose axis 1 is the sequence axis (e.g. sub-word ids and
      their mask).
    lengths: int ``[N]``, each training example's real length along that axis.
    buckets: increasing widths (:func:`jaxloss.data.subword.bucket_length`); a width
      is capped at the fields' full width.
    eval_lengths: optional ``{split: int [N_split]}``, the real lengths of each
      evaluation split's examples. Given, a split is evaluated in order of length and
      each evaluation batch is cut to its own bucket (one predict compilation per
      bucket); the outputs come back in the split's order. None: full width.
    label_keys: entries of a dict ``train["label"]`` cut with the inputs (per-token
      labels such as BIO tags, ``[N, T]``).
  """
  keys: tuple[str, ...]
  lengths: np.ndarray
  buckets: tuple[int, ...]
  eval_lengths: Optional[Mapping[str, np.ndarray]] = None
  label_keys: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Selection:
  """Model selection: the evaluation whose ``split`` metric ``key`` is highest (ties:
  the earliest). The reported numbers of every split are those of that evaluation."""
  split: str
  key: str


@dataclasses.dataclass(frozen=True)
class Recipe:
  """What one run trains and how it is judged.

  Attributes:
    name: the run's name (progress bar, summary).
    train: the training set, ``{input field: [N, ...], "label": [N, ...] or a dict of
      such arrays}`` (NumPy).
    eval_splits: ``{split: {field: [n, ...]}}`` in evaluation order; each holds at least
      ``eval_input_keys``. The last split is the one reported (and evaluated twice at
      the first and last evaluation to check determinism).
    input_keys: the model's positional inputs in training, fields of ``train``.
    init: ``key -> TrainState`` of one member (a raw PRNG key from ``Member.seed``).
    objective: the loss function ``(outputs, labels, knobs) -> (per_example, weight,
      aux)`` (see :func:`jaxloss.train_step.make_train_step`).
    curriculum: the curriculum (its stages, for the monitors) and ``compiled``, the
      same compiled with the run's steps per epoch.
    batch_size: global examples per step; ``num_epochs``: epochs of ``train``.
    predict: the per-device eval body ``(state, batch) -> {name: [b, ...]}`` (inference
      mode; per-example outputs, no reduction); ``batch`` holds ``eval_input_keys``.
    evaluate: host ``(split, outputs) -> {metric: value}`` on a split's whole
      ``outputs`` (``[n, ...]`` NumPy, in split order, padding removed).
    meta: ``member index -> dict``, the fields of the ``meta`` event the monitors read
      (terms, heads, class names and counts, the first-loss reference, stages, ...).
    sampler: ``(rng, step, data, knobs) -> int32 [batch_size]`` batch indices, a pure
      function of the step; None: the curriculum's class-mix sampler over
      ``class_counts``. A sampler with a cached form (``init_cache`` and ``cached``,
      e.g. :class:`jaxloss.data.sampler.EpochPermutationSampler`) gets its cache in
      the train state (:func:`jaxloss.training.loop.with_sampler_cache`).
    augment_fn: on-device augmentation of the first input (see ``make_train_step``).
    members: the ensemble (empty: one member with ``seed``); ``seed``: its seed.
    ensemble: host ``(split, [outputs of each member]) -> metrics`` of the combined
      prediction; None: no ensemble events.
    selection: the model-selection rule; None: the last evaluation.
    eval_every_epochs: evaluate every k-th epoch (and at the end).
    checkpoint_every_epoch: also checkpoint at the end of every epoch (besides every
      ``config.checkpoint_every_steps``, at stage boundaries and at the end).
    summarize: host ``RunRecord -> dict``: the recipe's part of ``summary.json``.
    progress: host ``(train_event, {split: report}) -> str``, the per-epoch line after
      ``epoch E | member k``; None: loss and the reported split's first metric.
    on_evaluation: host ``(workdir, step, epoch, split, outputs, last)`` called after
      each evaluation on process 0 (files such as predictions or embeddings).
    figures: host ``(workdir, RunRecord)`` at the end on process 0.
    report: host ``(summary) -> [lines]`` printed at the end.
    anchors: published numbers that apply to *this* dataset (empty if none do).
    describe: a line printed at the start (data sizes, vocabulary ...).
    eval_call_counter: pass ``batch["eval_call"]`` (the evaluation's ordinal) to
      ``predict`` (reproduces dropout left on in evaluation; failure-mode configs).
    sequence_buckets: cut host-input training batches to the bucket of their longest
      sequence (:class:`SequenceBuckets`); None: full width. With it, the loop's
      ``train_input="auto"`` picks host input.
  """
  name: str
  train: Mapping[str, Any]
  eval_splits: Mapping[str, Mapping[str, np.ndarray]]
  input_keys: tuple[str, ...]
  eval_input_keys: tuple[str, ...]
  init: Callable[[Any], Any]
  objective: LossFn
  curriculum: Curriculum
  compiled: CompiledCurriculum
  batch_size: int
  num_epochs: int
  predict: Callable[[Any, Mapping[str, Any]], Mapping[str, Any]]
  evaluate: Callable[[str, Mapping[str, np.ndarray]], dict]
  meta: Callable[[int], dict]
  summarize: Callable[["RunRecord"], dict]
  seed: int = 0
  sampler: Optional[Callable] = None
  class_counts: Optional[np.ndarray] = None
  augment_fn: Optional[Callable] = None
  max_grad_norm: Optional[float] = None
  monitor: Optional[MonitorSpec] = None
  members: tuple[Member, ...] = ()
  ensemble: Optional[Callable[[str, Sequence[Mapping[str, np.ndarray]]], dict]] = None
  selection: Optional[Selection] = None
  eval_every_epochs: int = 1
  checkpoint_every_epoch: bool = False
  progress: Optional[Callable[[dict, dict], str]] = None
  on_evaluation: Optional[Callable] = None
  figures: Optional[Callable[[str, "RunRecord"], None]] = None
  report: Optional[Callable[[dict], list]] = None
  anchors: tuple = ()
  describe: Optional[str] = None
  eval_call_counter: bool = False
  sequence_buckets: Optional[SequenceBuckets] = None

  def __post_init__(self):
    for field in ("batch_size", "num_epochs", "eval_every_epochs"):
      if not int(getattr(self, field)) >= 1:
        raise ValueError(f"{field} must be >= 1, got {getattr(self, field)}")
    n = self.num_train
    if self.batch_size > n:
      raise ValueError(f"config.batch_size ({self.batch_size}) exceeds the training set "
                       f"({n} examples)")
    missing = [k for k in self.input_keys if k not in self.train]
    if missing or "label" not in self.train:
      raise ValueError(f"recipe {self.name!r}: train needs fields {list(self.input_keys)}"
                       f" and 'label', has {sorted(self.train)}")
    if not self.eval_splits:
      raise ValueError(f"recipe {self.name!r}: no eval_splits")
    for split, fields in self.eval_splits.items():
      absent = [k for k in self.eval_input_keys if k not in fields]
      if absent:
        raise ValueError(f"recipe {self.name!r}: eval split {split!r} lacks {absent}")
    if self.sampler is None and self.class_counts is None:
      raise ValueError(f"recipe {self.name!r}: give a sampler or class_counts")
    sb = self.sequence_buckets
    if sb is not None:
      absent = [k for k in sb.keys if k not in self.input_keys]
      labels = self.train["label"]
      absent += [f"label.{k}" for k in sb.label_keys
                 if not isinstance(labels, Mapping) or k not in labels]
      if absent or len(sb.lengths) != n:
        raise ValueError(f"recipe {self.name!r}: sequence_buckets needs input and label "
                         f"fields "
                         f"(not {absent}) and one length per training example "
                         f"({len(sb.lengths)} for {n})")
    if self.selection is not None and self.selection.split not in self.eval_splits:
      raise ValueError(f"recipe {self.name!r}: selection split "
                       f"{self.selection.split!r} is not one of {list(self.eval_splits)}")

  @property
  def num_train(self) -> int:
    return len(self.train[self.input_keys[0]])

  @property
  def steps_per_epoch(self) -> int:
    return -(-self.num_train // self.batch_size)

  @property
  def total_steps(self) -> int:
    return int(self.num_epochs) * self.steps_per_epoch

  @property
  def all_members(self) -> tuple[Member, ...]:
    return self.members or (Member(seed=int(self.seed)),)

  @property
  def report_split(self) -> str:
    return list(self.eval_splits)[-1]


@dataclasses.dataclass
class RunRecord:
  """What a finished (or halted) run hands to the recipe's ``summarize`` and
  ``figures``: each member's event stream, the ensemble's, and their selection."""
  streams: list          # [member] -> events
  ensemble_events: Optional[list]
  findings: list         # [member] -> findings
  member_dirs: list
  selection: Optional[Selection]

  def select(self, events: list) -> tuple[dict, dict]:
    """``({split: event at the selected evaluation}, {split: the last evaluation})``."""
    return select(events, self.selection)


def select(events: list, selection: Optional[Selection]) -> tuple[dict, dict]:
  """The selected and the last evaluation of an event stream, by split (see
  :class:`Selection`; None selects the last)."""
  by_step: dict[int, dict] = {}
  for e in events:
    if e["split"] not in ("meta", "init", "train"):
      by_step.setdefault(e["step"], {})[e["split"]] = e
  if not by_step:
    return {}, {}
  last = by_step[max(by_step)]
  if selection is None:
    return last, last
  candidates = [(s, evs) for s, evs in by_step.items() if selection.split in evs]
  step, best = max(candidates,
                   key=lambda item: (item[1][selection.split][selection.key], -item[0]))
  del step
  return best, last
