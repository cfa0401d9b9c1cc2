"""On-device training statistics: what the jitted step measures for the monitors.

The step body computes, for every step and at the cost of a few reductions, the
statistics the host-side monitors (:mod:`jaxloss.monitors.checks`) read:

* the value of each term of a combined loss (weighted like the total loss);
* the global gradient norm (before clipping), its maximum over the log period, whether
  it was clipped, and the number of non-finite gradient elements;
* for each prediction head, the histogram of predicted classes (argmax), and for a
  tagger the number of tokens predicted as something other than ``O``.

They are accumulated as sums (and one max) in ``TrainState.train_sums`` between log
steps, so the host fetches them once per log period (DESIGN.md convention 11) and a
period split by a restart still reports the same numbers. :func:`period_summary` turns
the sums into the flat, JSON-ready fields of a ``metrics.jsonl`` train event.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

# Always accumulated (the foundation step's sums): a step with monitors "off" has these.
BASE_SUM_KEYS = ("loss", "steps", "grad_norm", "clipped", "skipped")


@dataclasses.dataclass(frozen=True)
class HeadSpec:
  """A prediction head whose predicted-class histogram is tracked.

  Attributes:
    num_classes: C, the head's last logits dimension (> 0).
    o_index: for a BIO tagger, the index of the ``O`` tag; then the share of tokens
      predicted non-``O`` is tracked too. None for sentence/image heads.
  """
  num_classes: int
  o_index: Optional[int] = None

  def __post_init__(self):
    if not (isinstance(self.num_classes, int) and self.num_classes > 0):
      raise ValueError(f"num_classes must be a positive int, got {self.num_classes!r}")
    if self.o_index is not None and not 0 <= self.o_index < self.num_classes:
      raise ValueError(f"o_index must be in [0, {self.num_classes}) or None, got "
                       f"{self.o_index!r}")


@dataclasses.dataclass(frozen=True)
class MonitorSpec:
  """What the train step measures besides the total loss.

  Attributes:
    terms: names of the terms of a combined loss, in the order the loss function
      reports them (``("classification", "contrastive")``); empty for a single loss.
    heads: head name -> :class:`HeadSpec`, as a tuple of pairs (hashable, static).

  Examples:
    >>> spec = MonitorSpec(terms=("focal", "supcon"), heads=(("aspect", HeadSpec(4)),))
    >>> sorted(zero_sums(spec))[:4]
    ['clipped', 'grad_norm', 'grad_norm_max', 'loss']
  """
  terms: tuple[str, ...] = ()
  heads: tuple[tuple[str, HeadSpec], ...] = ()

  def __post_init__(self):
    object.__setattr__(self, "terms", tuple(self.terms))
    heads = self.heads.items() if isinstance(self.heads, Mapping) else self.heads
    object.__setattr__(self, "heads", tuple((str(k), v) for k, v in heads))
    for name in self.terms:
      if not name or "/" in name:
        raise ValueError(f"term names must be non-empty and contain no '/', got {name!r}")
    if len(set(self.terms)) != len(self.terms):
      raise ValueError(f"terms must be unique, got {self.terms}")
    for name, head in self.heads:
      if not isinstance(head, HeadSpec):
        raise TypeError(f"heads[{name!r}] must be a HeadSpec, got {type(head).__name__}")

  @property
  def head_dict(self) -> dict[str, HeadSpec]:
    """``heads`` as a dict."""
    return dict(self.heads)


def zero_sums(spec: Optional[MonitorSpec] = None) -> dict[str, jax.Array]:
  """Fresh per-log-period sums for ``TrainState.train_sums``.

  Args:
    spec: what the step measures; None gives the base sums only (monitors off):
      ``loss``, ``steps``, ``grad_norm``, ``clipped``, ``skipped``.

  Returns:
    A dict of float32 arrays: scalars, plus ``pred/<head>`` of shape ``[C]`` (predicted
    class counts), and ``tokens/<head>`` and ``non_o/<head>`` for taggers.
  """
  sums = {k: jnp.zeros((), jnp.float32) for k in BASE_SUM_KEYS}
  if spec is None:
    return sums
  sums["grad_norm_max"] = jnp.zeros((), jnp.float32)
  sums["nonfinite_grads"] = jnp.zeros((), jnp.float32)
  for name in spec.terms:
    sums[f"term/{name}"] = jnp.zeros((), jnp.float32)
  for name, head in spec.heads:
    sums[f"pred/{name}"] = jnp.zeros((head.num_classes,), jnp.float32)
    if head.o_index is not None:
      sums[f"tokens/{name}"] = jnp.zeros((), jnp.float32)
      sums[f"non_o/{name}"] = jnp.zeros((), jnp.float32)
  return sums


def predicted_class_counts(logits: jax.Array, where: Optional[jax.Array] = None
                           ) -> jax.Array:
  """Histogram of ``argmax(logits, -1)`` over all leading axes.

  Args:
    logits: ``[..., C]`` float.
    where: optional bool ``[...]``; False entries (padding) are not counted.

  Returns:
    float32 ``[C]`` counts.

  Examples:
    >>> predicted_class_counts(jnp.array([[0., 2.], [1., 0.], [3., 1.]])).tolist()
    [2.0, 1.0]
  """
  num_classes = logits.shape[-1]
  one_hot = jax.nn.one_hot(jnp.argmax(logits, axis=-1), num_classes, dtype=jnp.float32)
  if where is not None:
    one_hot = one_hot * jnp.asarray(where, jnp.float32)[..., None]
  return jnp.sum(one_hot.reshape(-1, num_classes), axis=0)


def nonfinite_count(tree: Any) -> jax.Array:
  """Number of NaN or ±inf elements over all leaves of ``tree`` (float32 scalar)."""
  leaves = jax.tree.leaves(tree)
  if not leaves:
    return jnp.zeros((), jnp.float32)
  return sum(jnp.sum(~jnp.isfinite(x)).astype(jnp.float32) for x in leaves)


def normalize_heads(heads: Mapping[str, Any]) -> dict[str, tuple[jax.Array, Any]]:
  """``{name: logits}`` or ``{name: (logits, where)}`` -> ``{name: (logits, where)}``."""
  out = {}
  for name, value in heads.items():
    if isinstance(value, (tuple, list)):
      logits, where = value
    else:
      logits, where = value, None
    out[name] = (logits, where)
  return out


def check_loss_aux(spec: MonitorSpec, aux: Mapping[str, Any]) -> None:
  """Trace-time check that a loss function reports what ``spec`` asks for.

  Raises:
    ValueError: a term or head named in ``spec`` is missing from ``aux``, or a head's
      logits have the wrong number of classes.
  """
  terms = aux.get("terms", {})
  missing = [t for t in spec.terms if t not in terms]
  if missing:
    raise ValueError(f"the loss function's aux['terms'] lacks {missing} (monitor spec "
                     f"terms {list(spec.terms)}; got {sorted(terms)})")
  heads = normalize_heads(aux.get("heads", {}))
  for name, head in spec.heads:
    if name not in heads:
      raise ValueError(f"the loss function's aux['heads'] lacks {name!r} (got "
                       f"{sorted(heads)})")
    c = heads[name][0].shape[-1]
    if c != head.num_classes:
      raise ValueError(f"head {name!r}: logits have {c} classes, the monitor spec says "
                       f"num_classes={head.num_classes}")


def accumulate(sums: Mapping[str, jax.Array], stats: Mapping[str, jax.Array],
               finite: jax.Array) -> dict[str, jax.Array]:
  """Adds one step's statistics to the period sums (traceable).

  Values that are undefined on a non-finite step (loss, terms, gradient norm,
  predictions) are added only when ``finite``; the counters always are.
  """
  out = dict(sums)
  for key, value in stats.items():
    if key not in out:
      raise KeyError(f"statistic {key!r} has no slot in train_sums (have {sorted(out)})")
    if key == "grad_norm_max":
      out[key] = jnp.maximum(out[key], jnp.where(finite, value, 0.0))
    elif key in ("steps", "clipped", "skipped", "nonfinite_grads"):
      out[key] = out[key] + value
    else:
      out[key] = out[key] + jnp.where(finite, value, jnp.zeros_like(value))
  return out


def period_summary(sums: Mapping[str, Any]) -> dict[str, Any]:
  """Host-side: period sums -> the flat fields of a ``metrics.jsonl`` train event.

  Fields: ``loss`` and ``grad_norm`` (means over finite steps), ``clipped_share``,
  ``skipped_steps``, and with monitors on ``grad_norm_max``, ``nonfinite_grads``,
  ``term/<name>`` (means), ``pred_share/<head>`` (list, sums to 1), ``top_share/<head>``,
  ``top_class/<head>`` and for taggers ``non_o_share/<head>``. Undefined values (no
  finite step in the period) are None.
  """
  s = {k: np.asarray(v, np.float64) for k, v in sums.items()}
  steps = float(s["steps"])
  finite_steps = steps - float(s["skipped"])

  def mean(total):
    return float(total) / finite_steps if finite_steps > 0 else None

  out = {
      "loss": mean(s["loss"]), "grad_norm": mean(s["grad_norm"]),
      "clipped_share": float(s["clipped"]) / max(steps, 1.0),
      "skipped_steps": int(s["skipped"]), "period_steps": int(steps),
  }
  if "grad_norm_max" in s:
    out["grad_norm_max"] = float(s["grad_norm_max"]) if finite_steps > 0 else None
    out["nonfinite_grads"] = int(s["nonfinite_grads"])
  for key, value in s.items():
    kind, _, name = key.partition("/")
    if kind == "term":
      out[key] = mean(value)
    elif kind == "pred":
      total = float(value.sum())
      share = (value / total).tolist() if total > 0 else None
      out[f"pred_share/{name}"] = share
      out[f"top_share/{name}"] = max(share) if share else None
      out[f"top_class/{name}"] = int(np.argmax(value)) if share else None
    elif kind == "non_o":
      tokens = float(s[f"tokens/{name}"])
      out[f"non_o_share/{name}"] = float(value) / tokens if tokens > 0 else None
  for key, value in out.items():
    if isinstance(value, float) and not math.isfinite(value):
      out[key] = None
  return out
