"""Loss benchmark (jaxloss, optax, PyTorch): ``python -m tools.bench.losses``.

Every row times one training-style call of a loss: the scalar ``loss.mean()``
and its gradient with respect to the logits / scores / embeddings, i.e.
``jax.jit(jax.value_and_grad(...))`` for jaxloss and optax, and
``fn(...).mean().backward()`` for PyTorch. Times are the median over
``--repeats`` timed repeats after a warm-up (compilation excluded), each
repeat a loop of calls lasting at least ``--min-repeat-ms`` and every call
finished with ``block_until_ready``, reported in milliseconds per call.

Like with like: each row also prints the largest absolute difference between
the per-example jaxloss values and those of the optax / PyTorch reference on
the very inputs that are timed (optax's ``ntxent`` returns one scalar, so that
row compares the batch means), and ``--json`` adds the relative gradient
difference. A reference that does not compute the same loss shows up there.
(The inputs are chosen where the libraries agree: optax's
``ranking_softmax_loss`` does not normalise graded labels by their sum, so
the listwise row has one positive per list.)

The PyTorch references are the straightforward implementations a practitioner
writes (torchvision's ``sigmoid_focal_loss``, the SupCon authors'
``SupConLoss``, ``kaidic/LDAM-DRW``'s ``LDAMLoss``, ...), in eager mode with
torch's default thread count. For SupCon (and NT-Xent, whose similarity
matrix is ``[2N, 2N]``) the output also gives the compiled temporary memory
of the jitted forward+backward (``compile().memory_analysis()
.temp_size_in_bytes``, the very executable that is timed) in units of one
``[B, B]`` float32 matrix; the design target is "within one [B, B] matrix".

Measured on one device: this tool does not set ``XLA_FLAGS`` (the root
``conftest.py`` that simulates 8 CPU devices applies to pytest only) and
places every input on ``jax.devices()[0]``; ``JAX_PLATFORMS`` defaults to
``cpu``. A loss whose module is not importable is reported as ``n/a``.

Example::

  python -m tools.bench.losses                          # full sizes
  python -m tools.bench.losses --only supervised --repeats 30
  python -m tools.bench.losses --small --json /tmp/bench.json   # smoke test
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import math
import os
import platform
import statistics
import time
from typing import Any, Callable, Optional

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

TORCH_INSTALL = ("pip install torch==2.13.0 --index-url "
                 "https://download.pytorch.org/whl/cpu  (or plain "
                 "`pip install torch==2.13.0`)")
# Ratios within this factor of 1 count as "no slower" (timing noise on CPU).
OPTAX_TARGET = 0.9
# Seconds of timed calls per implementation and row before repeats are cut.
BUDGET_S = 20.0
# Pause before each timed loop (lets other libraries' spinning threads idle).
_PAUSE_S = 0.01
TORCH_TARGET = 2.0


# ------------------------------------------------------------------ inputs


def _int_labels(rng, shape, num_classes):
  return rng.integers(0, num_classes, size=shape).astype(np.int32)


def _logits(rng, shape, scale=2.0):
  return (scale * rng.standard_normal(shape)).astype(np.float32)


def _focal_inputs(rng, d):
  shape = (d["B"], d["A"], d["C"])
  labels = _int_labels(rng, shape[:-1], d["C"])
  # Soft probability labels (label smoothing 0.1) for the probability form.
  probs = 0.9 * np.eye(d["C"], dtype=np.float32)[labels] + 0.1 / d["C"]
  return {"logits": _logits(rng, shape), "labels": labels, "probs": probs,
          "alpha": np.linspace(0.25, 1.0, d["C"]).astype(np.float32),
          "weights": np.linspace(2.0, 0.5, d["C"]).astype(np.float32)}


def _sigmoid_inputs(rng, d):
  shape = (d["B"], d["C"])
  return {"logits": _logits(rng, shape),
          "labels": (rng.random(shape) < 0.05).astype(np.float32)}


def _multi_hot(rng, n, k, per_example=3):
  labels = np.zeros((n, k), np.float32)
  for i in range(n):
    labels[i, rng.choice(k, size=min(per_example, k), replace=False)] = 1.0
  return labels


def _supcon_inputs(rng, d):
  emb = rng.standard_normal((d["N"], d["D"])).astype(np.float32)
  if d.get("K"):
    labels = _multi_hot(rng, d["N"], d["K"])
  else:
    labels = _int_labels(rng, (d["N"],), 4)
  return {"embeddings": emb, "labels": labels}


def _ntxent_inputs(rng, d):
  a = rng.standard_normal((d["N"], d["D"])).astype(np.float32)
  b = (a + 0.5 * rng.standard_normal(a.shape)).astype(np.float32)
  return {"a": a, "b": b}


def _list_inputs(rng, d):
  shape = (d["B"], d["L"])
  if d.get("graded"):
    labels = rng.integers(0, 5, size=shape).astype(np.float32)
  else:
    labels = np.eye(d["L"], dtype=np.float32)[
        rng.integers(0, d["L"], size=d["B"])]
  return {"scores": _logits(rng, shape), "labels": labels}


def _tagging_inputs(rng, d):
  b, t, c = d["B"], d["T"], d["C"]
  lengths = rng.integers(t // 5 + 1, t + 1, size=b)
  return {"logits": _logits(rng, (b, t, c)),
          "labels": _int_labels(rng, (b, t), c),
          "where": np.arange(t)[None, :] < lengths[:, None]}


def _long_tail_inputs(rng, d):
  c = d["C"]
  # Exponential profile with imbalance ratio 100 (CIFAR-100-LT style).
  counts = np.floor(500 * 0.01 ** (np.arange(c) / max(c - 1, 1))).astype(
      np.int32)
  p = counts / counts.sum()
  labels = rng.choice(c, size=d["B"], p=p).astype(np.int32)
  logits = _logits(rng, (d["B"], c))
  # LDAM's scale s = 30 is meant for cosine logits (a normalised last layer).
  return {"logits": logits, "cosines": np.tanh(logits / 2), "labels": labels,
          "counts": counts, "priors": p.astype(np.float32)}


# -------------------------------------------------------- torch references
# Written as a practitioner would in PyTorch; each returns per-example values.


def _t_focal(t, F, x):
  logp = F.log_softmax(x["logits"], dim=-1)
  p = logp.exp()
  return -(x["alpha"] * x["probs"] * (1 - p) ** 2.0 * logp).sum(-1)


def _t_focal_int(t, F, x):
  c = x["logits"].shape[-1]
  ce = F.cross_entropy(x["logits"].reshape(-1, c), x["labels"].reshape(-1),
                       reduction="none").view(x["labels"].shape)
  pt = t.exp(-ce)
  return x["alpha"][x["labels"]] * (1 - pt) ** 2.0 * ce


def _t_ce(t, F, x, weighted):
  c = x["logits"].shape[-1]
  w = x["weights"] if weighted else None
  return F.cross_entropy(x["logits"].reshape(-1, c), x["labels"].reshape(-1),
                         weight=w, reduction="none").view(x["labels"].shape)


def _t_sigmoid_focal(t, F, x, alpha=0.25, gamma=2.0):
  # torchvision.ops.sigmoid_focal_loss(reduction="none"), verbatim.
  inputs, targets = x["logits"], x["labels"]
  p = t.sigmoid(inputs)
  ce_loss = F.binary_cross_entropy_with_logits(inputs, targets,
                                               reduction="none")
  p_t = p * targets + (1 - p) * (1 - targets)
  loss = ce_loss * ((1 - p_t) ** gamma)
  alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
  return alpha_t * loss


def _t_supcon(t, F, x, temperature=0.1):
  # HobbitLong/SupContrast SupConLoss (one view, base_temperature = tau).
  features = F.normalize(x["embeddings"], dim=1)
  labels = x["labels"]
  n = features.shape[0]
  if labels.ndim == 1:
    mask = t.eq(labels[:, None], labels[None, :]).float()
  else:
    mask = (labels @ labels.T > 0).float()
  anchor_dot_contrast = t.matmul(features, features.T) / temperature
  logits_max, _ = t.max(anchor_dot_contrast, dim=1, keepdim=True)
  logits = anchor_dot_contrast - logits_max.detach()
  logits_mask = t.scatter(t.ones_like(mask), 1, t.arange(n).view(-1, 1), 0)
  mask = mask * logits_mask
  exp_logits = t.exp(logits) * logits_mask
  log_prob = logits - t.log(exp_logits.sum(1, keepdim=True))
  mask_pos_pairs = mask.sum(1)
  mask_pos_pairs = t.where(mask_pos_pairs < 1e-6, 1, mask_pos_pairs)
  return -(mask * log_prob).sum(1) / mask_pos_pairs


def _t_ntxent(t, F, x, temperature=0.1):
  n = x["a"].shape[0]
  z = F.normalize(t.cat([x["a"], x["b"]]), dim=1)
  sim = z @ z.T / temperature
  sim = sim.masked_fill(t.eye(2 * n, dtype=t.bool), float("-inf"))
  targets = t.cat([t.arange(n, 2 * n), t.arange(n)])
  per_view = F.cross_entropy(sim, targets, reduction="none")
  return 0.5 * (per_view[:n] + per_view[n:])


def _t_listwise(t, F, x):
  y = x["labels"]
  return -(y / y.sum(-1, keepdim=True) * F.log_softmax(x["scores"], -1)).sum(-1)


def _t_pairwise(t, F, x):
  s, y = x["scores"], x["labels"]
  pairs = (y[:, :, None] > y[:, None, :]).float()
  per_pair = F.softplus(-(s[:, :, None] - s[:, None, :]))
  return (per_pair * pairs).sum((1, 2)) / pairs.sum((1, 2)).clamp(min=1)


def _t_tagging(t, F, x):
  b, tt, c = x["logits"].shape
  ce = F.cross_entropy(x["logits"].reshape(-1, c), x["labels"].reshape(-1),
                       reduction="none").view(b, tt)
  mask = x["where"].float()
  return (ce * mask).sum(1) / mask.sum(1).clamp(min=1)


def _t_balanced(t, F, x):
  # jiawei-ren/BalancedMetaSoftmax balanced_softmax_loss.
  logits = x["logits"] + x["counts"].float().log()
  return F.cross_entropy(logits, x["labels"], reduction="none")


def _t_ldam(t, F, x, max_m=0.5, s=30.0):
  # kaidic/LDAM-DRW LDAMLoss.forward, with reduction="none".
  counts = x["counts"].double()
  m_list = 1.0 / t.sqrt(t.sqrt(counts))
  m_list = (m_list * (max_m / m_list.max())).float()
  logits, target = x["cosines"], x["labels"]
  index = t.zeros_like(logits, dtype=t.uint8)
  index.scatter_(1, target.view(-1, 1), 1)
  batch_m = t.matmul(m_list[None, :], index.float().transpose(0, 1))
  x_m = logits - batch_m.view((-1, 1))
  output = t.where(index.bool(), x_m, logits)
  return F.cross_entropy(s * output, target, reduction="none")


def _t_logit_adjusted(t, F, x, tau=1.0):
  return F.cross_entropy(x["logits"] + tau * x["priors"].log(), x["labels"],
                         reduction="none")


# -------------------------------------------------------------- the cases


@dataclasses.dataclass(frozen=True)
class Case:
  """One benchmark row."""
  loss: str                       # public jaxloss function name
  variant: str
  module: str                     # where it lives before jaxloss.losses has it
  make: Callable                  # (rng, dims) -> dict of numpy inputs
  full: dict
  small: dict
  size: Callable                  # dims -> size string
  grad_of: tuple                  # inputs differentiated
  call: Callable                  # (jaxloss fn, inputs) -> per-example
  optax: Optional[Callable] = None  # inputs -> per-example (or a scalar)
  torch: Optional[Callable] = None  # (torch, F, inputs) -> per-example
  # inputs -> B: report the compiled temp memory in units of a [B, B] f32.
  bb: Optional[Callable] = None


def _bracket(*keys):
  return lambda d: "[" + ",".join(str(d[k]) for k in keys) + "]"


_FOCAL = dict(full={"B": 4096, "A": 10, "C": 4},
              small={"B": 16, "A": 3, "C": 4},
              size=_bracket("B", "A", "C"), make=_focal_inputs,
              grad_of=("logits",), module="classification")
_LONG = dict(full={"B": 4096, "C": 100}, small={"B": 32, "C": 10},
             size=_bracket("B", "C"), make=_long_tail_inputs,
             grad_of=("logits",), module="long_tail")


def _supcon_case(variant, n, k):
  size = lambda d: f"{d['N']}x{d['D']}" + (f" K={d['K']}" if d.get("K") else "")
  return Case(
      "supervised_contrastive_loss", variant, "contrastive", _supcon_inputs,
      full={"N": n, "D": 128, "K": k},
      small={"N": n // 32, "D": 16, "K": k and 8},
      size=size, grad_of=("embeddings",),
      call=lambda f, x: f(x["embeddings"], x["labels"], temperature=0.1),
      torch=_t_supcon, bb=lambda x: x["embeddings"].shape[0])


CASES = (
    Case("softmax_focal_loss", "prob labels, alpha[C], gamma=2", **_FOCAL,
         call=lambda f, x: f(x["logits"], x["probs"], alpha=x["alpha"],
                             gamma=2.0),
         torch=_t_focal),
    Case("softmax_focal_loss_with_integer_labels", "alpha[C], gamma=2",
         **_FOCAL,
         call=lambda f, x: f(x["logits"], x["labels"], alpha=x["alpha"],
                             gamma=2.0),
         torch=_t_focal_int),
    Case("softmax_cross_entropy_with_integer_labels", "class_weights[C]",
         **_FOCAL,
         call=lambda f, x: f(x["logits"], x["labels"],
                             class_weights=x["weights"]),
         torch=lambda t, F, x: _t_ce(t, F, x, weighted=True)),
    Case("softmax_cross_entropy_with_integer_labels", "unweighted", **_FOCAL,
         call=lambda f, x: f(x["logits"], x["labels"]),
         optax=lambda x: optax.losses.softmax_cross_entropy_with_integer_labels(
             x["logits"], x["labels"]),
         torch=lambda t, F, x: _t_ce(t, F, x, weighted=False)),
    Case("sigmoid_focal_loss", "alpha=0.25, gamma=2", "classification",
         _sigmoid_inputs, full={"B": 4096, "C": 40}, small={"B": 16, "C": 8},
         size=_bracket("B", "C"), grad_of=("logits",),
         call=lambda f, x: f(x["logits"], x["labels"], alpha=0.25, gamma=2.0),
         optax=lambda x: optax.losses.sigmoid_focal_loss(
             x["logits"], x["labels"], alpha=0.25, gamma=2.0),
         torch=_t_sigmoid_focal),
    _supcon_case("int labels, 4 classes", 1024, 0),
    _supcon_case("int labels, 4 classes", 4096, 0),
    _supcon_case("multi-hot, 'any' positives", 1024, 40),
    _supcon_case("multi-hot, 'any' positives", 4096, 40),
    Case("ntxent_loss", "tau=0.1", "contrastive", _ntxent_inputs,
         full={"N": 1024, "D": 128}, small={"N": 16, "D": 8},
         size=lambda d: f"{d['N']}x{d['D']}", grad_of=("a", "b"),
         call=lambda f, x: f(x["a"], x["b"], temperature=0.1),
         optax=lambda x: optax.losses.ntxent(
             jnp.concatenate([x["a"], x["b"]]),
             jnp.tile(jnp.arange(x["a"].shape[0]), 2), temperature=0.1),
         torch=_t_ntxent, bb=lambda x: 2 * x["a"].shape[0]),
    Case("listwise_softmax_loss", "one positive per list", "ranking",
         _list_inputs, full={"B": 512, "L": 50}, small={"B": 8, "L": 10},
         size=_bracket("B", "L"), grad_of=("scores",),
         call=lambda f, x: f(x["scores"], x["labels"]),
         optax=lambda x: optax.losses.ranking_softmax_loss(
             x["scores"], x["labels"], reduce_fn=None),
         torch=_t_listwise),
    Case("pairwise_logistic_loss", "graded labels 0-4", "ranking",
         _list_inputs, full={"B": 512, "L": 50, "graded": True},
         small={"B": 8, "L": 10, "graded": True},
         size=_bracket("B", "L"), grad_of=("scores",),
         call=lambda f, x: f(x["scores"], x["labels"]),
         torch=_t_pairwise),
    Case("sequence_tagging_loss", "where=lengths, gamma=0", "sequence",
         _tagging_inputs, full={"B": 64, "T": 50, "C": 120},
         small={"B": 4, "T": 6, "C": 7}, size=_bracket("B", "T", "C"),
         grad_of=("logits",),
         call=lambda f, x: f(x["logits"], x["labels"], where=x["where"]),
         torch=_t_tagging),
    Case("balanced_softmax_cross_entropy", "class_counts, rho=100", **_LONG,
         call=lambda f, x: f(x["logits"], x["labels"],
                             class_counts=x["counts"]),
         torch=_t_balanced),
    Case("ldam_loss", "cosine logits, max_margin=0.5, s=30",
         **{**_LONG, "grad_of": ("cosines",)},
         call=lambda f, x: f(x["cosines"], x["labels"],
                             class_counts=x["counts"], max_margin=0.5,
                             scale=30.0),
         torch=_t_ldam),
    Case("logit_adjusted_softmax_cross_entropy", "tau=1", **_LONG,
         call=lambda f, x: f(x["logits"], x["labels"],
                             class_priors=x["priors"], tau=1.0),
         torch=_t_logit_adjusted),
)


# ----------------------------------------------------------- measurement


def _resolve(case: Case):
  """Returns (function, None) or (None, why it is missing)."""
  tried = []
  for path in (f"jaxloss.losses.{case.module}", "jaxloss.losses"):
    try:
      fn = getattr(importlib.import_module(path), case.loss, None)
    except ImportError as e:
      tried.append(f"{path} ({e.__class__.__name__})")
      continue
    if fn is not None:
      return fn, None
    tried.append(path)
  return None, f"{case.loss} not found in " + ", ".join(tried)


def _time_ms(calls: dict, repeats: int, min_repeat_s: float,
             budget_s: float = BUDGET_S) -> dict:
  """Median milliseconds per call of each callable, after warm-up.

  The implementations take turns within every repeat, so a burst of load
  from other processes on a shared machine slows all of them alike instead
  of biasing the ratios. The turn order rotates and each loop starts after a
  short pause, because torch's OpenMP workers keep spinning for a while
  after a call and would otherwise always slow down the same successor.
  Each repeat loops a callable for at least ``min_repeat_s`` so that
  sub-millisecond calls are not timer noise. A callable slower than
  ``budget_s / repeats`` gets fewer repeats (at least 3): optax's NT-Xent
  takes seconds per call at the full size.

  Returns:
    ``{name: (median ms, number of repeats)}``.
  """
  inner, count = {}, {}
  for name, call in calls.items():
    call()
    t0 = time.perf_counter()
    call()
    once = max(time.perf_counter() - t0, 1e-7)
    inner[name] = max(1, int(math.ceil(min_repeat_s / once)))
    count[name] = max(3, min(repeats, int(budget_s / (once * inner[name]))))
  times = {name: [] for name in calls}
  names = list(calls)
  for r in range(max(count.values())):
    for name in names[r % len(names):] + names[:r % len(names)]:
      if r >= count[name]:
        continue
      call = calls[name]
      time.sleep(_PAUSE_S)
      t0 = time.perf_counter()
      for _ in range(inner[name]):
        call()
      times[name].append((time.perf_counter() - t0) / inner[name])
  return {name: (1e3 * statistics.median(t), len(t))
          for name, t in times.items()}


def _prepare_jax(per_example: Callable, inputs: dict, grad_of: tuple,
                 memory: bool):
  """Compiles value_and_grad of mean(per_example) once (ahead of time).

  Returns the timed call and a dict with the per-example values, the mean,
  the gradients and, if ``memory``, the compiled temporary bytes. The same
  compiled executable is timed and memory-analysed.
  """
  device = jax.devices()[0]
  arrays = {k: jax.device_put(v, device) for k, v in inputs.items()}
  diff = tuple(arrays[k] for k in grad_of)
  rest = {k: v for k, v in arrays.items() if k not in grad_of}

  def objective(diff, rest):
    return jnp.mean(per_example({**rest, **dict(zip(grad_of, diff))}))

  compiled = jax.jit(jax.value_and_grad(objective)).lower(diff, rest).compile()
  value, grads = compiled(diff, rest)
  info = {"mean": float(value),
          "grads": [np.asarray(g, np.float64) for g in grads],
          "values": np.asarray(jax.jit(per_example)(arrays), np.float64)}
  if memory:
    stats = compiled.memory_analysis()
    info["temp_bytes"] = None if stats is None else int(
        stats.temp_size_in_bytes)
    stats = jax.jit(objective).lower(diff, rest).compile().memory_analysis()
    info["temp_bytes_forward"] = None if stats is None else int(
        stats.temp_size_in_bytes)
  return (lambda: jax.block_until_ready(compiled(diff, rest))), info


def _prepare_torch(torch, fn: Callable, inputs: dict, grad_of: tuple):
  """Returns the eager forward+backward call and its values and gradients."""
  F = torch.nn.functional
  tensors = {}
  for k, v in inputs.items():
    tensor = torch.from_numpy(np.array(v))
    if tensor.dtype == torch.int32:
      tensor = tensor.long()  # torch indexing and cross_entropy want int64
    tensors[k] = tensor
  for k in grad_of:
    tensors[k].requires_grad_(True)

  def step():
    for k in grad_of:
      tensors[k].grad = None
    loss = fn(torch, F, tensors).mean()
    loss.backward()
    return loss

  mean = step().item()
  info = {"mean": mean,
          "grads": [tensors[k].grad.double().numpy() for k in grad_of]}
  with torch.no_grad():
    info["values"] = fn(torch, F, tensors).double().numpy()
  return step, info


def _compare(mine: dict, ref: dict) -> dict:
  """Max |loss difference| and max gradient difference relative to max|grad|."""
  a, b = mine["values"], ref["values"]
  if np.ndim(b) == 0:  # a batch scalar (optax.ntxent): compare the means
    a = np.mean(a)
  scale = max(max(float(np.max(np.abs(g))) for g in mine["grads"]), 1e-30)
  grad_diff = max(float(np.max(np.abs(g - h)))
                  for g, h in zip(mine["grads"], ref["grads"]))
  return {"max_abs_diff": float(np.max(np.abs(a - b))),
          "grad_max_rel_diff": grad_diff / scale}


def _import_torch():
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  return torch


def _bench_case(case: Case, inputs: dict, fn: Callable, torch, repeats: int,
                min_repeat_s: float) -> dict:
  """Measures one row; returns the row's numeric fields."""
  row = {}
  calls, infos = {}, {}
  memory = case.bb is not None
  calls["jaxloss"], infos["jaxloss"] = _prepare_jax(
      lambda x: case.call(fn, x), inputs, case.grad_of, memory)
  if case.optax is not None:
    calls["optax"], infos["optax"] = _prepare_jax(
        case.optax, inputs, case.grad_of, memory)
  if case.torch is not None and torch is not None:
    calls["torch"], infos["torch"] = _prepare_torch(
        torch, case.torch, inputs, case.grad_of)
  timed = _time_ms(calls, repeats, min_repeat_s)
  ms = {name: t[0] for name, t in timed.items()}
  row["repeats"] = {name: t[1] for name, t in timed.items()}
  mine = infos["jaxloss"]
  row["jaxloss_ms"] = ms["jaxloss"]
  row["jaxloss_mean"] = mine["mean"]
  if memory:
    row["bb"] = case.bb(inputs)
    for name, info in infos.items():
      if info.get("temp_bytes") is not None:
        prefix = "" if name == "jaxloss" else f"{name}_"
        bb_bytes = 4 * row["bb"] ** 2
        row[f"{prefix}temp_bytes"] = info["temp_bytes"]
        row[f"{prefix}temp_in_bb"] = info["temp_bytes"] / bb_bytes
        row[f"{prefix}temp_in_bb_forward"] = (info["temp_bytes_forward"] /
                                              bb_bytes)
  for ref in ("optax", "torch"):
    if ref in ms:
      row[f"{ref}_ms"] = ms[ref]
      row[f"{ref}_ratio"] = ms[ref] / ms["jaxloss"]
      row[f"{ref}_mean"] = infos[ref]["mean"]
      for k, v in _compare(mine, infos[ref]).items():
        row[f"{ref}_{k}"] = v
  return row


def run(small: bool = False, repeats: Optional[int] = None,
        only: Optional[str] = None, use_torch: bool = True,
        min_repeat_ms: Optional[float] = None, seed: int = 0) -> dict:
  """Runs the benchmark and returns ``{"header": ..., "rows": [...]}``.

  Args:
    small: Tiny sizes (a smoke test) instead of the issue's sizes.
    repeats: Timed repeats per measurement (default 15, 3 when ``small``).
    only: Case-insensitive substring of ``"loss variant"`` selecting rows.
    use_torch: Measure the PyTorch references when torch is importable.
    min_repeat_ms: Minimum duration of one timed repeat.
    seed: Seed of the NumPy generator that draws every input.

  Returns:
    ``header`` (versions, backend, devices, CPUs, settings) and one ``rows``
    entry per selected case: ``loss``, ``variant``, ``size``, ``notes`` and,
    when measured, ``jaxloss_ms``, ``{optax,torch}_ms``, ``_ratio``
    (reference ms / jaxloss ms), ``_max_abs_diff``, ``_grad_max_rel_diff``
    and, for SupCon, ``temp_in_bb``.
  """
  repeats = repeats or (3 if small else 15)
  min_repeat_s = 1e-3 * (min_repeat_ms if min_repeat_ms is not None else
                         (1.0 if small else 25.0))
  torch = _import_torch() if use_torch else None
  header = {
      "jax": jax.__version__, "optax": optax.__version__,
      "backend": jax.default_backend(), "device": str(jax.devices()[0]),
      "device_count": jax.device_count(), "cpu_count": os.cpu_count(),
      "python": platform.python_version(),
      # Other processes share the CPUs; the 1-minute load at the start says
      # how much the timings may have been disturbed.
      "load_avg_1min": os.getloadavg()[0],
      "torch": None if torch is None else torch.__version__,
      "torch_threads": None if torch is None else torch.get_num_threads(),
      "xla_flags": os.environ.get("XLA_FLAGS", ""), "small": small,
      "repeats": repeats, "min_repeat_ms": 1e3 * min_repeat_s}
  rows = []
  for case in CASES:
    if only and only.lower() not in f"{case.loss} {case.variant}".lower():
      continue
    dims = case.small if small else case.full
    row = {"loss": case.loss, "variant": case.variant,
           "size": case.size(dims), "notes": []}
    rows.append(row)
    fn, missing = _resolve(case)
    if fn is None:
      row["notes"].append(missing)
      continue
    inputs = case.make(np.random.default_rng(seed), dims)
    try:
      row.update(_bench_case(case, inputs, fn, torch, repeats, min_repeat_s))
    except Exception as e:  # pylint: disable=broad-except
      # One broken loss must not hide the other rows; the note says why.
      row["notes"].append(f"failed: {e.__class__.__name__}: {e}")
  header["load_avg_1min_end"] = os.getloadavg()[0]
  return {"header": header, "rows": rows}


# ---------------------------------------------------------------- output


def _num(x, fmt):
  return "n/a" if x is None else format(x, fmt)


def _ratio(x):
  return "n/a" if x is None else f"{x:.2f}x"


COLUMNS = ("loss", "variant", "size", "jaxloss ms", "optax ms", "optax/jax",
           "max abs diff optax", "torch ms", "torch/jax", "max abs diff torch",
           "temp/[B,B]")


def format_table(results: dict) -> str:
  """Returns the header line, the aligned table and the target summary."""
  h = results["header"]
  lines = [
      f"jax {h['jax']} ({h['backend']}, {h['device_count']} device(s), "
      f"measured on {h['device']}) | optax {h['optax']} | CPUs "
      f"{h['cpu_count']} (load {h['load_avg_1min']:.1f} -> "
      f"{h.get('load_avg_1min_end', float('nan')):.1f}) | torch "
      + (f"{h['torch']} ({h['torch_threads']} threads)" if h["torch"]
         else "not installed") +
      f" | XLA_FLAGS={h['xla_flags'] or '(unset)'}",
      f"ms per call of jit(value_and_grad(mean loss)) (torch: eager "
      f"forward + backward); median of {h['repeats']} repeats of >= "
      f"{h['min_repeat_ms']:g} ms (at least 3 for calls over the "
      f"{BUDGET_S:g} s budget)", ""]
  table = [COLUMNS]
  for r in results["rows"]:
    g = r.get
    table.append((
        r["loss"], r["variant"], r["size"], _num(g("jaxloss_ms"), ".3f"),
        _num(g("optax_ms"), ".3f"), _ratio(g("optax_ratio")),
        _num(g("optax_max_abs_diff"), ".1e"), _num(g("torch_ms"), ".3f"),
        _ratio(g("torch_ratio")), _num(g("torch_max_abs_diff"), ".1e"),
        _num(g("temp_in_bb"), ".2f")))
  widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
  left = 3  # text columns are left-aligned, numbers right-aligned
  for k, row in enumerate(table):
    cells = [c.ljust(w) if i < left else c.rjust(w)
             for i, (c, w) in enumerate(zip(row, widths))]
    lines.append("  ".join(cells).rstrip())
    if k == 0:
      lines.append("  ".join("-" * w for w in widths))
  lines.append("")
  rows = results["rows"]
  for key, target, what in (
      ("optax_ratio", OPTAX_TARGET, "no slower than optax (optax/jax >= "
       f"{OPTAX_TARGET})"),
      ("torch_ratio", TORCH_TARGET, f">= {TORCH_TARGET:g}x faster than torch "
       "eager (torch/jax >= 2)")):
    have = [r for r in rows if r.get(key) is not None]
    miss = [f"{r['loss']} {r['size']} ({r[key]:.2f}x)" for r in have
            if r[key] < target]
    lines.append(f"target {what}: {len(have) - len(miss)}/{len(have)} rows"
                 + (f"; missed: {'; '.join(miss)}" if miss else ""))
  bb = [r for r in rows if r.get("temp_in_bb") is not None]
  if bb:
    lines.append("compiled temp memory, fwd+bwd (forward only), in units of "
                 "one [B,B] float32 matrix (target: <= 1):")
    for r in bb:
      line = (f"  {r['loss']} {r['size']} (B={r['bb']}): jaxloss "
              f"{r['temp_in_bb']:.2f} ({r['temp_in_bb_forward']:.2f})")
      if r.get("optax_temp_in_bb") is not None:
        line += (f", optax {r['optax_temp_in_bb']:.2f} "
                 f"({r['optax_temp_in_bb_forward']:.2f})")
      lines.append(line)
  for r in rows:
    cut = {k: v for k, v in r.get("repeats", {}).items() if v < h["repeats"]}
    if cut:
      lines.append(f"fewer repeats (time budget) for {r['loss']} {r['size']}: "
                   + ", ".join(f"{k} {v}" for k, v in cut.items()))
  if h["torch"] is None:
    lines.append(f"torch columns n/a: torch not installed; {TORCH_INSTALL}")
  for r in rows:
    for note in r["notes"]:
      lines.append(f"n/a {r['loss']} ({r['variant']}): {note}")
  return "\n".join(lines)


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(
      prog="python -m tools.bench.losses", description=__doc__.split("\n")[0])
  parser.add_argument("--repeats", type=int, default=None,
                      help="timed repeats per measurement (default 15, "
                      "3 with --small); the median is reported")
  parser.add_argument("--only", default=None, metavar="NAME",
                      help="only rows whose 'loss variant' contains NAME "
                      "(case-insensitive substring)")
  parser.add_argument("--json", default=None, metavar="PATH",
                      help="also write the results as JSON to PATH")
  parser.add_argument("--small", action="store_true",
                      help="tiny sizes: a smoke test that runs in seconds")
  parser.add_argument("--no-torch", dest="torch", action="store_false",
                      help="skip the PyTorch references")
  parser.add_argument("--min-repeat-ms", type=float, default=None,
                      help="each timed repeat loops calls for at least this "
                      "long (default 25 ms, 1 ms with --small)")
  args = parser.parse_args(argv)
  results = run(small=args.small, repeats=args.repeats, only=args.only,
                use_torch=args.torch, min_repeat_ms=args.min_repeat_ms)
  print(format_table(results))
  if args.json:
    with open(args.json, "w") as f:
      json.dump(results, f, indent=2)
  return results


if __name__ == "__main__":
  main()
