"""``train_and_evaluate(config, workdir, build)``: the one training loop.

Linear and sectioned, as the flax examples' ``train.py``: start-up (processes, resume
guard), restore-or-init, the compiled step under :class:`~jaxloss.parallel.DataParallel`
with the training set on every device or each process' rows assembled on the host, the
loop (log, evaluate, monitor, checkpoint, halt), the summary. A recipe
(:class:`~jaxloss.training.recipe.Recipe`) says *what* is trained and how it is judged;
everything here is written once for all of them.

Config fields the loop reads (all recipes' configs have them):
``seed``, ``eval_batch_size``, ``eval_every_steps``, ``checkpoint_every_steps``,
``keep_checkpoints``, ``progress``, ``interrupt_at_step``, ``parallel``, ``num_devices``,
``train_input``, ``distributed``, ``monitor`` (thresholds, ``enabled``, ``halt_on``,
``fail_on_error``: a diagnosis with an error sets ``summary["exit_status"]`` to
:data:`EXIT_DIAGNOSIS`, which ``python -m experiments.run`` exits with).

Workdir: ``config.json`` (the run's config; see :mod:`jaxloss.training.guard`),
``metrics.jsonl`` (per member under ``member_<k>/`` for an ensemble, with the ensemble's
evaluations at the top), ``diagnosis.json``, ``checkpoints/``, ``facts.json`` (the run's
wall time and compilations over restarts), ``summary.json`` and the recipe's figures.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from jaxloss import distributed
from jaxloss import monitors
from jaxloss.checkpoint import Checkpointer
from jaxloss.data.subword import bucket_length
from jaxloss.parallel import DataParallel, TraceCounter, pad_to_multiple
from jaxloss.train_step import class_mix_indices, make_train_step
from jaxloss.training import compile_cache, guard, host_memory
from jaxloss.training.recipe import Recipe, RunRecord
from jaxloss.training.run_files import MetricsLog, RunFacts, read_json, write_json

TRAIN_INPUTS = ("auto", "device", "host")

# The exit status of ``python -m experiments.run`` when the run's diagnosis has an error
# (1 is a crash, 2 a config or data error); config.monitor.fail_on_error=False: 0.
EXIT_DIAGNOSIS = 3


def first_step_text(meta: Mapping, values: Mapping[str, float], who: str = ""
                    ) -> Optional[str]:
  """The line printed after the first step: its loss beside the loss of a model that
  knows nothing (``meta["initial_reference"]``). A combined loss is shown term by term
  (``term/<name>`` against each term's ``initial_reference``), because the weighted total
  has no reference of its own. None when the recipe gives no reference."""
  terms = [t for t in meta.get("terms") or []
           if t.get("initial_reference") is not None and f"term/{t['name']}" in values]
  if len(terms) > 1:
    parts = [f"{t['name']} {_fmt(values['term/' + t['name']])} (at uniform outputs "
             f"{t['initial_reference']:.4f}: {t.get('initial_reference_text', '')})"
             for t in terms]
    return f"first step: {who}loss {_fmt(values['loss'])}; " + "; ".join(parts)
  ref = meta.get("initial_reference")
  if ref is None:
    return None
  return (f"first step: {who}loss {_fmt(values['loss'])} (at uniform outputs {ref:.4f}: "
          f"{meta.get('initial_reference_text', '')})")


def _fmt(x, spec=".4f") -> str:
  return "nan" if x is None or not np.isfinite(x) else format(x, spec)


def validate_runtime(config) -> None:
  """Checks the fields the loop reads.

  Raises:
    ValueError: a field out of range, named.
  """
  for field in ("eval_batch_size", "checkpoint_every_steps", "keep_checkpoints"):
    value = config.get(field, 1)
    if value is None or not value >= 1:
      raise ValueError(f"config.{field} must be >= 1, got {value}")
  value = config.get("eval_every_steps")
  if value is not None and not value >= 1:
    raise ValueError(f"config.eval_every_steps must be >= 1 or None, got {value}")
  value = config.get("ema_decay")
  if value is not None and not 0 < value < 1:
    raise ValueError(f"config.ema_decay must be in (0, 1) or None, got {value}")
  if config.get("train_input", "auto") not in TRAIN_INPUTS:
    raise ValueError(f"config.train_input must be one of {TRAIN_INPUTS}, got "
                     f"{config.train_input!r}")
  monitors.resolve_thresholds(config.monitor)
  monitors.validate_halt_on(config.monitor.halt_on)


def init_state(recipe: Recipe, ema: bool = False):
  """The recipe's state at step 0: one member's, or every member's stacked on a leading
  member axis (member k initialised from its own seed). With ``ema`` the state's
  ``ema_params`` start as a copy of the parameters (``config.ema_decay``)."""
  members = recipe.all_members
  if len(members) == 1:
    state = recipe.init(jax.random.PRNGKey(members[0].seed))
  else:
    keys = jnp.stack([jax.random.PRNGKey(m.seed) for m in members])
    state = jax.vmap(recipe.init)(keys)
  if ema:
    state = state.replace(ema_params=jax.tree.map(jnp.array, state.params))
  return state


def with_sampler_cache(recipe: Recipe, state):
  """``state`` with an empty ``sampler_cache`` from the recipe's sampler, when it has a
  cached form (``init_cache``, e.g.
  :class:`~jaxloss.data.sampler.EpochPermutationSampler`), stacked over an ensemble's
  members; otherwise ``state`` unchanged.

  The cache changes what a step costs, never its batch, so it is not checkpointed: the
  loop saves the state without it (``sampler_cache=None``, the layout of a checkpoint
  written before caches existed) and adds an empty one after a restore.
  """
  if recipe.sampler is None or not hasattr(recipe.sampler, "init_cache"):
    return state
  cache = recipe.sampler.init_cache()
  members = len(recipe.all_members)
  if members > 1:
    cache = jax.tree.map(lambda x: jnp.broadcast_to(x, (members, *jnp.shape(x))), cache)
  return state.replace(sampler_cache=cache)


def step_body(recipe: Recipe, num_devices: int, *, host: bool = False,
              ema_decay: Optional[float] = None) -> Callable:
  """The per-device train step body ``(state, data) -> (state, metrics)`` of the recipe
  (:func:`jaxloss.train_step.make_train_step`), for ``data`` the whole training set
  (``host=False``) or the step's batch assembled on the host (``host=True``).

  An ensemble is one ``jax.vmap`` of the body over the members' leading state axis
  (one compilation), each member with its own knob values; its host batch carries the
  member axis second (``[B, M, ...]``, split over devices along B), as each member
  draws its own batch. ``ema_decay``: see :func:`jaxloss.train_step.make_train_step`.
  """
  members = recipe.all_members
  body = make_train_step(
      curriculum=recipe.compiled, loss_fn=recipe.objective,
      global_batch_size=recipe.batch_size, num_devices=num_devices,
      class_counts=recipe.class_counts, augment_fn=recipe.augment_fn,
      max_grad_norm=recipe.max_grad_norm, monitor=recipe.monitor,
      input_keys=recipe.input_keys, sampler=recipe.sampler,
      data_layout="batch" if host else "dataset", ema_decay=ema_decay)
  if len(members) == 1:
    if not members[0].knobs:
      return body
    knobs1 = {k: jnp.float32(v) for k, v in members[0].knobs.items()}
    return lambda state, data: body(state, data, knobs1)
  knobs = {k: jnp.asarray([m.knobs[k] for m in members], jnp.float32)
           for k in members[0].knobs}

  def ensemble_body(state, data):
    return jax.vmap(body, in_axes=(0, 1 if host else None, 0))(state, data, knobs)
  return ensemble_body


def data_parallel(config) -> DataParallel:
  """The launcher a config asks for: its ``parallel``, ``num_devices`` and
  ``cpu_compiler_options`` (each optional; see :class:`jaxloss.parallel.DataParallel`)."""
  options = config.get("cpu_compiler_options")
  if hasattr(options, "to_dict"):
    options = options.to_dict()
  return DataParallel(config.get("parallel", "shard_map"), config.get("num_devices"),
                      cpu_compiler_options=options)


def _host_sampler(recipe: Recipe):
  """``(rng, step) -> [batch_size]`` indices, the same draw as the on-device sampler
  (the recipe's, or the class mix over ``class_counts``), jitted on the host."""
  compiled, b = recipe.compiled, recipe.batch_size
  if recipe.sampler is None:
    labels = jnp.asarray(recipe.train["label"])
    counts = jnp.asarray(recipe.class_counts, jnp.float32)

    def draw(rng, step):
      mix = compiled.values(step)["sampler_mix"]
      return class_mix_indices(rng, step, labels, counts, mix, b)
  else:
    data = {"label": recipe.train["label"]}

    def draw(rng, step):
      return recipe.sampler(rng, step, data, compiled.values(step))
  return jax.jit(draw)


def cut_to_bucket(part: dict, buckets, drawn: np.ndarray, *, ensemble: bool = False
                  ) -> dict:
  """``part`` (a host batch ``{field: [b, ...]}``, ``[b, M, ...]`` for an ensemble)
  with ``buckets.keys`` and the per-token ``buckets.label_keys`` of ``part["label"]``
  cut along the sequence axis to the bucket of the longest of the *global* batch's
  examples ``drawn`` (indices into the training set), so that every process cuts to
  the same width (:class:`~jaxloss.training.recipe.SequenceBuckets`)."""
  longest = int(np.max(np.asarray(buckets.lengths)[np.asarray(drawn)]))
  axis = 2 if ensemble else 1  # an ensemble's rows are [b, M, ...]

  def cut(x):
    width = min(bucket_length(longest, buckets.buckets), x.shape[axis])
    return x[:, :, :width] if ensemble else x[:, :width]
  out = dict(part)
  for k in buckets.keys:
    out[k] = cut(part[k])
  if buckets.label_keys:
    out["label"] = {k: cut(v) if k in buckets.label_keys else v
                    for k, v in part["label"].items()}
  return out


def _gather(tree):
  """A tree of global arrays as host NumPy arrays (all processes' rows)."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  return multihost_utils.process_allgather(tree, tiled=True)


def _max_diff(a: dict, b: dict) -> float:
  """The largest ``|a - b|`` between two evaluations of the same parameters, over every
  output. A value repeated exactly counts 0, NaN at the same place included (a diverged
  model's NaN outputs, twice, are deterministic); a place finite in one and not in the
  other, or two different non-finite values, counts inf."""
  worst = 0.0
  for k in a:
    x, y = np.asarray(a[k], np.float64), np.asarray(b[k], np.float64)
    differs = ~((x == y) | (np.isnan(x) & np.isnan(y)))
    if differs.any():
      with np.errstate(invalid="ignore"):  # inf - inf
        d = np.abs(x - y)[differs]
      worst = max(worst, float(np.max(np.where(np.isfinite(d), d, np.inf))))
  return worst


def train_and_evaluate(config, workdir: str, build: Callable[..., Recipe], *,
                       allow_config_change: bool = False) -> Optional[dict]:
  """Trains and evaluates one run of the recipe ``build(config, workdir)``; returns the
  summary (also in ``workdir/summary.json``), or None if the run stopped at
  ``config.interrupt_at_step`` (a simulated preemption for the resume tests).

  Re-running a workdir resumes from its latest checkpoint, exactly; with a config that
  changes training it stops first (:class:`jaxloss.training.guard.ConfigChangedError`)
  unless ``allow_config_change``.

  Raises:
    ValueError: a config field out of range (named); ConfigChangedError (a ValueError).
    FloatingPointError: a non-finite training loss sum although no step was skipped.
    RuntimeError: an evaluation that did not return one output per example.
  """
  validate_runtime(config)
  # Before anything touches a device: join the other processes, if there are any.
  distributed.initialize(config.get("distributed"))
  main = distributed.is_main_process()
  t_start = time.time()
  xla_work = compile_cache.XlaWork()
  os.makedirs(workdir, exist_ok=True)
  ckpt_dir = os.path.join(workdir, "checkpoints")
  started = (os.path.exists(os.path.join(workdir, "metrics.jsonl"))
             or (os.path.isdir(ckpt_dir) and bool(os.listdir(ckpt_dir))))
  guard.check_resume(workdir, config, started=started,
                     allow_change=allow_config_change, write=main)

  with distributed.main_process_first("data"):
    recipe = build(config, workdir)
  members = recipe.all_members
  num_members = len(members)
  ensemble = num_members > 1
  steps_per_epoch, total_steps = recipe.steps_per_epoch, recipe.total_steps
  compiled = recipe.compiled
  dp = data_parallel(config)
  train_input = config.get("train_input", "auto")
  if train_input == "auto":
    train_input = ("host" if jax.process_count() > 1 or recipe.sequence_buckets
                   else "device")
  host = train_input == "host"
  progress = bool(config.get("progress", True)) and main

  def say(text: str) -> None:
    if main:
      (bar.write if progress else print)(text)

  bar = tqdm(total=total_steps, desc=recipe.name, unit="step", disable=not progress,
             dynamic_ncols=True, leave=False)
  if recipe.describe:
    say(f"{recipe.name}: {recipe.describe}; {steps_per_epoch} steps/epoch on "
        f"{dp.num_devices} device(s), {jax.process_count()} process(es)")

  # --- Restore or initialise -----------------------------------------------------------
  checkpointer = Checkpointer(ckpt_dir, max_to_keep=config.keep_checkpoints,
                              async_save=distributed.async_checkpoints_safe())
  ema_decay = config.get("ema_decay")
  state, restored = checkpointer.restore_or_init(
      lambda: init_state(recipe, ema=ema_decay is not None), dp.restore_sharding)
  step = int(np.ravel(jax.device_get(state.step))[0])
  if restored:
    say(f"Resumed from {checkpointer.directory} at step {step}")
  bar.update(step)
  facts = RunFacts(os.path.join(workdir, "facts.json"), step if restored else None,
                   write=main)

  member_dirs = ([workdir] if not ensemble else
                 [os.path.join(workdir, f"member_{k}") for k in range(num_members)])
  logs, member_monitors = [], []
  for k, d in enumerate(member_dirs):
    os.makedirs(d, exist_ok=True)
    log = MetricsLog(os.path.join(d, "metrics.jsonl"), resume_step=step, write=main)
    if not log.has("meta"):
      log.write({"step": 0, "split": "meta", "name": recipe.name,
                 "total_steps": total_steps, "steps_per_epoch": steps_per_epoch,
                 "thresholds": monitors.resolve_thresholds(config.monitor),
                 **({"selection": {"split": recipe.selection.split,
                                   "key": recipe.selection.key}}
                    if recipe.selection is not None else {}),
                 **recipe.meta(k)})
    mon = monitors.Monitor(config.monitor, halt_on=config.monitor.halt_on)
    mon.update(log.read())  # findings already reported before a restart stay quiet
    logs.append(log)
    member_monitors.append(mon)
  ens_log = None
  if ensemble and recipe.ensemble is not None:
    ens_log = MetricsLog(os.path.join(workdir, "metrics.jsonl"), resume_step=step,
                         write=main)
    if not ens_log.has("meta"):
      ens_log.write({"step": 0, "split": "meta", "name": recipe.name, "ensemble": True,
                     "members": [{"seed": m.seed, **m.fields} for m in members],
                     "member_dirs": member_dirs})
  # The sampler runs in the step only when it draws from the data on the device.
  state = dp.replicate(state if host else with_sampler_cache(recipe, state))

  # --- Compiled steps -----------------------------------------------------------------
  counter = TraceCounter()
  train_step = dp.launch_train_step(
      step_body(recipe, dp.num_devices, host=host, ema_decay=ema_decay), counter,
      batch_sharded=host)

  fields = (*recipe.input_keys, "label")
  buckets = recipe.sequence_buckets
  if host:
    draw = _host_sampler(recipe)
    rows = dp.process_rows(recipe.batch_size)
    rngs = np.asarray(jax.device_get(dp.unreplicate(state).rng))  # [2] or [M, 2]

    def next_batch(step: int):
      if not ensemble:
        drawn = np.asarray(draw(rngs, np.int32(step)))
      else:  # [B, M]: each member draws its own batch
        drawn = np.stack([np.asarray(draw(r, np.int32(step))) for r in rngs], 1)
      local = drawn[rows]
      part = {k: jax.tree.map(lambda x: x[local], recipe.train[k]) for k in fields}
      if buckets is not None:  # the global batch's bucket: the same on every process
        part = cut_to_bucket(part, buckets, drawn, ensemble=ensemble)
      return dp.assemble_batch(part, recipe.batch_size)
  else:
    train_data = dp.replicate({k: recipe.train[k] for k in fields})

  def predict_one(state, batch):
    if not ensemble:
      return recipe.predict(state, batch)
    out = jax.vmap(recipe.predict, in_axes=(0, None))(state, batch)
    return jax.tree.map(lambda x: jnp.moveaxis(x, 0, 1), out)  # [b, M, ...]

  predict_step = dp.launch_predict_step(predict_one)
  # One evaluation batch shape for every split (one compilation), no larger than the
  # largest split: a 200-example test set is not padded to 1,000 rows.
  largest = max(len(s[recipe.eval_input_keys[0]]) for s in recipe.eval_splits.values())
  eval_batch = min(config.eval_batch_size, largest)
  eval_batch = -(-eval_batch // dp.num_devices) * dp.num_devices
  eval_calls = [0]
  eval_orders = {}

  def eval_order(split: str):
    """``(lengths, order)`` of a split with ``eval_lengths`` (the argsort computed
    once), else ``(None, None)``."""
    known = buckets is not None and buckets.eval_lengths is not None
    if not known or split not in buckets.eval_lengths:
      return None, None
    if split not in eval_orders:
      lengths = np.asarray(buckets.eval_lengths[split])
      eval_orders[split] = (lengths, np.argsort(lengths, kind="stable"))
    return eval_orders[split]

  def predict(state, split: str) -> list[dict]:
    """Each member's outputs on a whole split (host NumPy, padding removed)."""
    s = recipe.eval_splits[split]
    keys = recipe.eval_input_keys
    n = len(s[keys[0]])
    lengths, order = eval_order(split)
    # With sequence buckets, the split is evaluated in order of length, each batch
    # gathered by index and cut to its own bucket (outputs put back in the split's
    # order below); padding rows repeat row 0 under a False mask.
    padded = pad_to_multiple({k: s[k] for k in keys} if order is None
                             else {"index": order}, eval_batch)
    eval_calls[0] += 1
    outs = []
    for i in range(0, len(padded["mask"]), eval_batch):
      if order is None:
        batch = {k: padded[k][i:i + eval_batch] for k in keys}
      else:
        index = padded["index"][i:i + eval_batch]
        batch = {k: s[k][index] for k in keys}
      batch["mask"] = padded["mask"][i:i + eval_batch]
      if order is not None:
        longest = int(lengths[index].max())
        for k in buckets.keys:
          if k in batch:
            width = min(bucket_length(longest, buckets.buckets), batch[k].shape[1])
            batch[k] = batch[k][:, :width]
      if recipe.eval_call_counter:
        batch["eval_call"] = np.full((eval_batch,), eval_calls[0], np.int32)
      outs.append(_gather(predict_step(state, dp.shard_batch(batch))))
    out = {k: np.concatenate([o[k] for o in outs])[:n] for k in outs[0]}
    if order is not None:
      inverse = np.empty_like(order)
      inverse[order] = np.arange(n)
      out = {k: v[inverse] for k, v in out.items()}
    if any(len(v) != n for v in out.values()):
      raise RuntimeError(f"evaluation of {split} returned "
                         f"{[len(v) for v in out.values()]} outputs, expected {n}")
    if not ensemble:
      return [out]
    return [{k: v[:, m] for k, v in out.items()} for m in range(num_members)]

  def evaluate(state, repeat: bool) -> tuple[list[dict], Optional[dict]]:
    """``([member] -> {split: report}, {split: ensemble report} or None)``; with
    ``config.ema_decay``, of the averaged parameters."""
    if ema_decay is not None:
      state = state.replace(params=state.ema_params)
    reports = [{} for _ in members]
    ens = {} if ens_log is not None else None
    for split in recipe.eval_splits:
      outs = predict(state, split)
      again = predict(state, split) if repeat and split == recipe.report_split else None
      for k, out in enumerate(outs):
        rep = recipe.evaluate(split, out)
        if again is not None:
          rep["eval_repeat_max_diff"] = _max_diff(out, again[k])
        reports[k][split] = rep
      if ens is not None:
        ens[split] = recipe.ensemble(split, outs)
        if again is not None:
          ens[split]["eval_repeat_max_diff"] = max(_max_diff(o, a)
                                                   for o, a in zip(outs, again))
      if recipe.on_evaluation is not None and main:
        recipe.on_evaluation(workdir, step, step / steps_per_epoch, split, outs,
                             step == total_steps)
    return reports, ens

  # --- Train ------------------------------------------------------------------------
  boundaries = set(compiled.boundaries[1:])
  # config.eval_every_steps: evaluate at its multiples, at the curriculum's stage
  # boundaries and at the end (a log period also ends there); None: at the end of every
  # recipe.eval_every_epochs-th epoch.
  eval_every = config.get("eval_every_steps")
  halted = None
  zero = monitors.zero_sums(recipe.monitor)
  if ensemble:
    zero = jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (num_members,)
                                                  + np.shape(x)), zero)
  interrupt = config.get("interrupt_at_step")
  trained = 0
  totals = None

  def checkpoint(step):
    nonlocal totals
    saved = dp.unreplicate(state).replace(sampler_cache=None)  # with_sampler_cache
    if checkpointer.save(step, saved) or totals is None:
      totals = facts.record(step, time.time() - t_start, counter.count)

  while step < total_steps:
    if interrupt is not None and step >= interrupt:
      bar.close()
      checkpointer.close()
      distributed.finish()
      say(f"Interrupted at step {step} (config.interrupt_at_step)")
      return None
    state, step_metrics = train_step(state, next_batch(step) if host else train_data)
    step += 1
    trained += 1
    bar.update(1)
    if step == 1:
      # The first step's loss (computed before its update): the initial_loss monitor
      # compares it with the loss of a model that knows nothing.
      first = jax.device_get(dp.unreplicate(step_metrics))
      for k, log in enumerate(logs):
        values = {key: float(np.ravel(v)[k] if ensemble else v)
                  for key, v in first.items() if key == "loss" or key.startswith("term/")}
        log.write({"step": 1, "split": "init",
                   "stage": compiled.names[compiled.stage_of(0)], **values})
        text = first_step_text(log.events[0], values,
                               f"member {k}: " if ensemble else "")
        if text:
          say(text)
    epoch_end = step % steps_per_epoch == 0 or step == total_steps
    eval_point = eval_every is not None and (step % eval_every == 0 or step in boundaries)
    if epoch_end or eval_point:
      epoch = step / steps_per_epoch
      stage = compiled.names[compiled.stage_of(step - 1)]
      knobs = compiled.host_values(step - 1)
      raw = jax.device_get(dp.unreplicate(state.train_sums))
      # Fresh arrays each time: the step donates the state, sums included.
      state = state.replace(train_sums=dp.replicate(jax.tree.map(np.array, zero)))
      last = step == total_steps
      epoch_index = round(epoch) if abs(epoch - round(epoch)) < 1e-9 else int(epoch) + 1
      if eval_every is None:
        evaluating = last or epoch_index % recipe.eval_every_epochs == 0
      else:
        evaluating = last or eval_point
      reports, ens = [{} for _ in members], None
      if evaluating:
        first_eval = not logs[0].has(recipe.report_split)
        reports, ens = evaluate(state, repeat=first_eval or last)
      lines = []
      for k, log in enumerate(logs):
        sums = jax.tree.map(lambda x: x[k], raw) if ensemble else raw
        if float(sums["skipped"]) < float(sums["steps"]) and not np.isfinite(sums["loss"]):
          raise FloatingPointError(f"non-finite train loss sum at step {step}")
        train_event = {"step": step, "epoch": epoch, "stage": stage, "split": "train",
                       **monitors.period_summary(sums), **knobs, **members[k].knobs,
                       **members[k].fields}
        log.write(train_event)
        for split, rep in reports[k].items():
          log.write({"step": step, "epoch": epoch, "stage": stage, "split": split, **rep})
        text = (recipe.progress(train_event, reports[k]) if recipe.progress else
                f"loss {_fmt(train_event['loss'])}")
        who = f"member {k} | " if ensemble else ""
        lines.append(f"epoch {epoch:5.1f} | {stage:<10} | {who}{text}")
        if train_event.get("skipped_steps"):
          lines[-1] += (f" | {train_event['skipped_steps']}/"
                        f"{train_event['period_steps']} steps skipped (non-finite loss)")
      if ens is not None:
        for split, rep in ens.items():
          ens_log.write({"step": step, "epoch": epoch, "split": split, **rep})
        if recipe.progress:
          lines.append(f"epoch {epoch:5.1f} | ensemble | "
                       f"{recipe.progress({}, ens)}")
      for line in lines:
        say(line)
      for k, (log, mon) in enumerate(zip(logs, member_monitors)):
        found = mon.update(log.read())
        for finding in found:
          say((f"[member {k}] " if ensemble else "") + monitors.format_live(finding))
        if halted is None:
          halted = mon.halting(found)
        if main:
          monitors.write_diagnosis(os.path.join(member_dirs[k], "diagnosis.json"),
                                   mon.findings, thresholds=mon.thresholds,
                                   halted=halted,
                                   source=os.path.join(member_dirs[k], "metrics.jsonl"))
    if (step % config.checkpoint_every_steps == 0 or step in boundaries
        or step == total_steps or halted is not None
        or (epoch_end and recipe.checkpoint_every_epoch)):
      checkpoint(step)
    if halted is not None:
      codes = [halted.code] + [r["code"] for r in halted.related]
      matched = next(c for c in codes if c in config.monitor.halt_on)
      say(f"Halted at step {step}: {matched}"
          + (f" (folded into {halted.code})" if matched != halted.code else "")
          + " is in config.monitor.halt_on "
          f"(checkpoint saved; re-running the workdir resumes from it)")
      break
  bar.close()
  checkpointer.close()

  # --- Summary ------------------------------------------------------------------------
  record = RunRecord(streams=[log.read() for log in logs],
                     ensemble_events=ens_log.read() if ens_log is not None else None,
                     findings=[mon.findings for mon in member_monitors],
                     member_dirs=member_dirs, selection=recipe.selection)
  summary = dict(recipe.summarize(record))
  previous = read_json(os.path.join(workdir, "summary.json"))
  if trained == 0 and previous is not None and restored:
    # A no-op re-run of a finished workdir: the run's own facts stand.
    totals = {k: previous.get(k) for k in ("wall_s", "train_step_compilations",
                                           "segments")}
  elif totals is None or trained:
    totals = facts.totals(time.time() - t_start, counter.count)
  all_findings = [f for fs in record.findings for f in fs]
  diagnosis = monitors.counts(all_findings)
  summary.update({
      "steps": step, "steps_per_epoch": steps_per_epoch,
      "skipped_steps": (np.ravel(jax.device_get(dp.unreplicate(state.skipped_steps)))
                        .astype(int).tolist()),
      **totals,
      "num_devices": dp.num_devices, "parallel": dp.kind,
      "num_processes": jax.process_count(), "train_input": train_input,
      "halted": halted.to_dict() if halted else None,
      "diagnosis": diagnosis,
      "findings": sorted({f.code for f in all_findings}),
      "anchors": list(recipe.anchors),
      # This process' XLA work in this segment (not summed over restarts): 0
      # xla_compilations on a rerun with a warm persistent cache.
      "compilation": xla_work.read(),
      # Whether glibc's malloc keeps freed memory for XLA:CPU's next call
      # (jaxloss.training.host_memory; experiments.run's --reuse_host_memory).
      "host_memory_reused": host_memory.applied(),
  })
  if not ensemble:
    summary["skipped_steps"] = summary["skipped_steps"][0]
  failing = diagnosis["error"] > 0 and bool(config.monitor.get("fail_on_error", True))
  summary["exit_status"] = EXIT_DIAGNOSIS if failing else 0
  distributed.finish()
  if not main:  # process 0 writes the run's files and prints its report
    return summary
  write_json(os.path.join(workdir, "summary.json"), summary, indent=2)
  if recipe.figures is not None:
    try:
      recipe.figures(workdir, record)
    except ImportError as e:  # matplotlib missing: the run's numbers still stand
      print(f"figures not written: {e}")
  for line in (recipe.report(summary) if recipe.report else []):
    print(line)
  work = summary["compilation"]
  print(f"{recipe.name}: steps {step}  compilations {summary['train_step_compilations']}"
        f"  wall {summary['wall_s']:.1f}s -> {workdir}")
  print(f"XLA: {work['programs']} programs in {work['compile_s']:.1f}s: "
        f"{work['xla_compilations']} compiled, {work['compile_cache_hits']} loaded from "
        f"the compilation cache ({work['compile_cache'] or 'off'})")
  print(f"diagnosis: {diagnosis['error']} error, {diagnosis['warning']} warning, "
        f"{diagnosis['info']} info {summary['findings']} "
        f"(python -m tools.ops.diagnose {member_dirs[0]})")
  if failing:
    print(f"exit status {EXIT_DIAGNOSIS}: the diagnosis has {diagnosis['error']} "
          "error(s); --config.monitor.fail_on_error=False exits 0 anyway")
  return summary
