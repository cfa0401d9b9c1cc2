"""``train_and_evaluate(config, workdir)`` for next-item candidate reranking.

The reranking recipe of ``experiments/configs/rerank.py``: a SASRec encoder (Kang &
McAuley, ICDM 2018) trained on every position of each user's interaction sequence to
place the true next item first among it and ``num_candidates - 1`` sampled negatives,
with the listwise softmax loss (``:listwise``, the recipe) or BPR (``:bpr``, the
baseline). Evaluation follows the SASRec protocol on the leave-one-out splits of the
``interactions`` TFDS builder: for every user, the true held-out item among the
``num_candidates - 1`` stored negatives (items the user never interacted with, fixed by
``config.data_seed``), ranked by the model; HR@1/5/10, NDCG@5/10 and MRR, beside the
random and popularity rankers scored on the same lists in the same run.

The sanity checks its authors ran by hand run with every experiment and are reported in
``summary.json["sanity"]`` (and printed):

* ``first_loss``: the first step's loss within ``config.first_loss_tolerance`` (0.05) of
  the loss of a model that knows nothing, ``ln(num_candidates)`` for the listwise loss
  (``ln 2`` for BPR);
* ``true_item_in_every_list``: the held-out item is among the candidates of every
  evaluated user, exactly once (a failure raises: the split is corrupt);
* ``position_uniform``: the true item's position is uniform over the list (chi-square
  p-value above ``config.position_p_min``), so the position leaks nothing;
* ``eval_deterministic``: evaluating the same parameters twice gives identical metrics
  (checked at the first and the last evaluation);
* ``loss_fell``: the last epoch's training loss is below the first step's.

Negatives for training are drawn on device for every user and step, uniformly over all
items, through ``make_train_step``'s ``augment_fn`` hook (keyed by the example's global
position in the batch, so 1 and 8 devices draw the same ones; the hook's ``aug_strength``
knob is a constant 1 and unused); a drawn item the user has in the window is masked out.

Model selection: Validation is evaluated every ``config.eval_every`` epochs and at the
end; the reported Test metrics are those of the evaluation with the best Validation
NDCG@10, and the last evaluation's are kept beside them.

Workdir: ``config.json``, ``metrics.jsonl``, ``diagnosis.json``, ``checkpoints/``,
``summary.json``, ``curves.png``.
"""

from __future__ import annotations

import json
import math
import os
import time
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from tqdm import tqdm

from jaxloss import curriculum as curriculum_lib
from jaxloss import metrics as metrics_lib
from jaxloss import monitors
from jaxloss.checkpoint import Checkpointer
from jaxloss.data.interactions import load_interactions, pad_left
from jaxloss.data.sampler import epoch_permutation_indices
from jaxloss.models.sequential import SASRec
from jaxloss.parallel import DataParallel, TraceCounter, pad_to_multiple
from jaxloss.train_state import TrainState
from jaxloss.train_step import (RERANK_LOSSES, make_optimizer, make_rerank_loss,
                                make_train_step)
from experiments.train import MetricsLog

EVAL_SPLITS = ("validation", "test")
KEYS = ("hr@1", "hr@5", "hr@10", "ndcg@5", "ndcg@10", "mrr")
ANCHORS = (
    {"model": "SASRec (Kang & McAuley, ICDM 2018, Table III, Games)",
     "num_candidates": 101, "hr@10": 0.7410, "ndcg@10": 0.5360},
)


def _validate(config) -> None:
  for field in ("num_epochs", "batch_size", "eval_batch_size", "keep_checkpoints",
                "max_len", "hidden", "num_blocks", "num_heads", "eval_every"):
    if not config[field] >= 1:
      raise ValueError(f"config.{field} must be >= 1, got {config[field]}")
  if not config.num_candidates >= 2:
    raise ValueError(f"config.num_candidates must be >= 2 (the true item and at least "
                     f"one negative), got {config.num_candidates}")
  if config.hidden % config.num_heads:
    raise ValueError(f"config.hidden ({config.hidden}) must be divisible by "
                     f"config.num_heads ({config.num_heads})")
  if config.loss not in RERANK_LOSSES:
    raise ValueError(f"config.loss must be one of {RERANK_LOSSES}, got {config.loss!r}")
  if not 0 <= config.dropout_rate < 1:
    raise ValueError(f"config.dropout_rate must be in [0, 1), got {config.dropout_rate}")
  if not config.first_loss_tolerance > 0:
    raise ValueError(f"config.first_loss_tolerance must be > 0, got "
                     f"{config.first_loss_tolerance}")
  monitors.resolve_thresholds(config.monitor)
  monitors.validate_halt_on(config.monitor.halt_on)


# --- Data and sanity checks of the lists ---------------------------------------------------

def check_lists(split: dict, num_candidates: int, *, name: str) -> dict:
  """The data-side sanity checks of one evaluation split: the true item is at
  ``candidates[label_index]`` and nowhere else in every list, and its position is
  uniform (chi-square).

  Returns:
    ``{"true_item_in_every_list": bool, "position_chi2", "position_p_value"}``.

  Raises:
    RuntimeError: a list without its true item, or with it twice (a corrupt split;
      the message names the split and the first bad row).
  """
  candidates, label_index = split["candidates"], split["label_index"]
  rows = np.arange(len(candidates))
  at_label = candidates[rows, label_index] == split["target"]
  occurrences = np.sum(candidates == split["target"][:, None], axis=1)
  bad = np.flatnonzero(~at_label | (occurrences != 1))
  if bad.size:
    i = int(bad[0])
    raise RuntimeError(
        f"{name}: {bad.size} list(s) do not hold the true item exactly once at "
        f"label_index, e.g. row {i} (user {int(split['user'][i])}): target "
        f"{int(split['target'][i])}, candidates[{int(label_index[i])}] = "
        f"{int(candidates[i, label_index[i]])}, occurrences {int(occurrences[i])}")
  uniform = metrics_lib.position_uniformity(label_index, num_candidates)
  return {"true_item_in_every_list": True, "position_chi2": uniform["chi2"],
          "position_p_value": uniform["p_value"]}


def build(config: ml_collections.ConfigDict, workdir: str | None = None):
  """Data, model, optimizer, loss and step bodies of a run (no device placement).
  Returns a namespace (see the end of the function)."""
  del workdir  # nothing derived from the data is stored (ids are the file's)
  data = load_interactions(manual_dir=config.data_dir, data_dir=config.tfds_data_dir,
                           filename=config.filename, num_candidates=config.num_candidates,
                           seed=config.data_seed)
  num_items = int(data["num_items"])
  L = int(config.max_len)
  items = data["train"]["items"]
  if config.max_train_users is not None:
    items = items[:config.max_train_users]
  seq, _ = pad_left([s[:-1] for s in items], L)  # input: all but the last item
  pos, _ = pad_left([s[1:] for s in items], L)   # target: the next item at each position
  num_train = len(seq)
  if config.batch_size > num_train:
    raise ValueError(f"config.batch_size ({config.batch_size}) exceeds the number of "
                     f"training users ({num_train})")
  train = {"seq": seq, "pos": pos, "negatives": np.zeros((num_train, 1), np.int32)}

  evals, sanity = {}, {}
  for name in EVAL_SPLITS:
    s = data[name]
    n = len(s["target"])
    if config.max_eval_users is not None:
      n = min(n, config.max_eval_users)
    history, _ = pad_left(s["history"][:n], L)
    evals[name] = {"user": np.asarray(s["user"][:n]), "history": history,
                   "candidates": np.asarray(s["candidates"][:n], np.int32),
                   "label_index": np.asarray(s["label_index"][:n], np.int32),
                   "target": np.asarray(s["target"][:n], np.int32)}
    sanity[name] = check_lists(evals[name], config.num_candidates, name=name)

  # Baselines on the same lists: a random ranker and item popularity (training counts).
  baselines = {}
  for name in EVAL_SPLITS:
    e = evals[name]
    scores = {
        "random": metrics_lib.random_scores(len(e["target"]), config.num_candidates,
                                            seed=config.seed),
        "popularity": metrics_lib.popularity_scores(e["candidates"], data["item_counts"],
                                                    seed=config.seed)}
    baselines[name] = {k: metrics_lib.ranking_metrics(v, e["label_index"])
                       for k, v in scores.items()}

  steps_per_epoch = math.ceil(num_train / config.batch_size)
  total_steps = int(config.num_epochs) * steps_per_epoch
  warmup = min(float(config.warmup_epochs), float(config.num_epochs) / 2)
  lr = (optax.linear_schedule(0.0, config.learning_rate, warmup) if warmup > 0
        else config.learning_rate)
  if warmup > 0:
    lr = optax.join_schedules([lr, optax.constant_schedule(config.learning_rate)],
                              [warmup])
  curriculum_spec = curriculum_lib.constant(learning_rate=lr, aug_strength=1.0)
  curriculum = curriculum_spec.compile(steps_per_epoch)

  model = SASRec(num_items=num_items, max_len=L, hidden=config.hidden,
                 num_blocks=config.num_blocks, num_heads=config.num_heads,
                 dropout_rate=config.dropout_rate)
  tx = make_optimizer("adamw", learning_rate=config.learning_rate, b2=config.adam_b2,
                      weight_decay=config.weight_decay, max_grad_norm=config.max_grad_norm)
  loss_fn = make_rerank_loss(config.loss)
  num_negatives = config.num_candidates - 1
  monitor_spec = (monitors.MonitorSpec(terms=(config.loss,), heads={})
                  if config.monitor.enabled else None)
  # The loss of a model that scores every candidate alike.
  initial_reference = (math.log(config.num_candidates) if config.loss == "listwise"
                       else math.log(2.0))

  def init_state() -> TrainState:
    init_key, state_key = jax.random.split(jax.random.PRNGKey(config.seed))
    variables = model.init(init_key, jnp.ones((1, num_negatives), jnp.int32),
                           jnp.zeros((1, L), jnp.int32), jnp.zeros((1, L), jnp.int32),
                           train=False)
    return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                             rng=state_key, train_sums=monitors.zero_sums(monitor_spec))

  def sampler(rng, step, data, knobs):
    del data, knobs
    return epoch_permutation_indices(jax.random.fold_in(rng, 1), step, num_train,
                                     config.batch_size)

  def sample_negatives(key, placeholder, positions, strength):
    """``[b, K]`` item ids uniform over 1..num_items, keyed by global position."""
    del placeholder, strength
    keys = jax.vmap(lambda p: jax.random.fold_in(key, p))(positions)
    return jax.vmap(lambda k: jax.random.randint(
        k, (num_negatives,), 1, num_items + 1, dtype=jnp.int32))(keys)

  def train_step_body(num_devices: int):
    return make_train_step(curriculum=curriculum, loss_fn=loss_fn,
                           global_batch_size=config.batch_size, num_devices=num_devices,
                           class_counts=None, augment_fn=sample_negatives,
                           max_grad_norm=config.max_grad_norm, monitor=monitor_spec,
                           input_keys=("negatives", "seq", "pos"), sampler=sampler)

  def predict_body(state, batch):
    scores = model.apply({"params": state.params}, batch["history"],
                         batch["candidates"], method=SASRec.score_candidates)
    return {"scores": scores.astype(jnp.float32)}

  return types.SimpleNamespace(
      data=data, num_items=num_items, train=train, evals=evals, sanity=sanity,
      baselines=baselines, steps_per_epoch=steps_per_epoch, total_steps=total_steps,
      curriculum_spec=curriculum_spec, curriculum=curriculum, model=model, tx=tx,
      loss_fn=loss_fn, monitor_spec=monitor_spec, initial_reference=initial_reference,
      init_state=init_state, train_step_body=train_step_body, predict_body=predict_body,
      num_train=num_train)


# --- Evaluation -------------------------------------------------------------------------------

def rerank_report(scores: np.ndarray, split: dict) -> dict:
  """HR@1/5/10, NDCG@5/10, MRR, mean rank and the listwise loss of the true item on
  one split's ``[N, C]`` scores (host)."""
  report = metrics_lib.ranking_metrics(scores, split["label_index"])
  z = scores.astype(np.float64)
  z = z - z.max(-1, keepdims=True)
  logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
  report["loss"] = float(-np.mean(logp[np.arange(len(z)), split["label_index"]]))
  return report


def _meta(config, b) -> dict:
  return {
      "step": 0, "split": "meta", "name": config.name, "total_steps": b.total_steps,
      "steps_per_epoch": b.steps_per_epoch, "num_classes": config.num_candidates,
      "class_counts": None, "learning_rate": float(config.learning_rate),
      "max_grad_norm": config.max_grad_norm,
      "terms": [{"name": config.loss, "weight": 1.0, "weight_field": None,
                 "initial_reference": b.initial_reference,
                 "initial_reference_text": "the loss at equal scores"}],
      "initial_reference": b.initial_reference,
      "initial_reference_text": (f"ln({config.num_candidates}), the loss at equal scores"
                                 if config.loss == "listwise" else
                                 "ln 2, the loss at equal scores"),
      "heads": {}, "class_names": {},
      "stages": [{"name": "constant", "start_step": 0, "expect": {}, "knobs": {}}],
      "thresholds": monitors.resolve_thresholds(config.monitor),
      "config_fields": {"learning_rate": "config.learning_rate"},
  }


def _fmt(x, spec=".4f") -> str:
  return "  nan" if x is None or not np.isfinite(x) else format(x, spec)


# --- The run --------------------------------------------------------------------------------

def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict | None:
  """Trains and evaluates one run; returns the summary (also in ``summary.json``), or
  None if stopped at ``config.interrupt_at_step``. Resumes from ``workdir/checkpoints``.

  Raises:
    ValueError: an invalid config field (named).
    RuntimeError: an evaluation list without its true item.
  """
  _validate(config)
  t_start = time.time()
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  b = build(config, workdir)
  steps_per_epoch, total_steps = b.steps_per_epoch, b.total_steps
  dp = DataParallel(config.parallel, config.num_devices)
  d = b.data
  print(f"{config.name}: {d['num_interactions']} interactions of {d['num_users']} users "
        f"on {d['num_items']} items from {d['path']}; {b.num_train} training users, "
        f"{len(b.evals['validation']['target'])} / {len(b.evals['test']['target'])} "
        f"validation / test lists of {config.num_candidates} candidates; "
        f"{steps_per_epoch} steps/epoch on {dp.num_devices} device(s)")
  for name in EVAL_SPLITS:
    s = b.sanity[name]
    pb = b.baselines[name]
    print(f"  {name}: true item in every list {s['true_item_in_every_list']}, its "
          f"position chi-square p = {s['position_p_value']:.3f}; random HR@10 "
          f"{pb['random']['hr@10']:.4f} (expected {min(10, config.num_candidates) / config.num_candidates:.4f})"
          f", popularity HR@10 {pb['popularity']['hr@10']:.4f} NDCG@10 "
          f"{pb['popularity']['ndcg@10']:.4f}")

  # --- Restore or initialise -----------------------------------------------------------
  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"),
                              max_to_keep=config.keep_checkpoints)
  state, restored = checkpointer.restore_or_init(b.init_state, dp.restore_sharding)
  if restored:
    print(f"Resumed from {checkpointer.directory} at step {int(state.step)}")
  step = int(state.step)
  log = MetricsLog(os.path.join(workdir, "metrics.jsonl"), resume_step=step)
  if not any(e["split"] == "meta" for e in log.read()):
    log.write(_meta(config, b))
  monitor = monitors.Monitor(config.monitor, halt_on=config.monitor.halt_on)
  monitor.update(log.read())
  state = dp.replicate(state)

  counter = TraceCounter()
  train_step = dp.launch_train_step(b.train_step_body(dp.num_devices), counter)
  predict_step = dp.launch_predict_step(b.predict_body)
  train_data = dp.replicate({**b.train, "label": b.train["pos"]})
  eval_batch = -(-config.eval_batch_size // dp.num_devices) * dp.num_devices
  inputs = ("history", "candidates")

  def predict(state, split: str) -> np.ndarray:
    s = b.evals[split]
    n = len(s["target"])
    padded = pad_to_multiple({k: s[k] for k in inputs}, eval_batch)
    outs = []
    for i in range(0, len(padded["mask"]), eval_batch):
      batch = dp.shard_batch({k: padded[k][i:i + eval_batch] for k in inputs})
      outs.append(np.asarray(jax.device_get(predict_step(state, batch))["scores"]))
    scores = np.concatenate(outs)[:n]
    if len(scores) != n:
      raise RuntimeError(f"evaluation of {split} returned {len(scores)} lists, "
                         f"expected {n}")
    return scores

  def evaluate(state, split: str, repeat: bool = False) -> dict:
    report = rerank_report(predict(state, split), b.evals[split])
    if repeat:
      again = rerank_report(predict(state, split), b.evals[split])
      report["eval_repeat_max_diff"] = metrics_lib.max_metric_difference(report, again)
    return report

  # --- Train -----------------------------------------------------------------------------
  bar = tqdm(total=total_steps, initial=step, desc=config.name, unit="step",
             disable=not config.progress, dynamic_ncols=True, leave=False)
  halted = None
  zero_sums = monitors.zero_sums(b.monitor_spec)
  say = bar.write if config.progress else print
  while step < total_steps:
    if config.get("interrupt_at_step") is not None and step >= config.interrupt_at_step:
      bar.close()
      checkpointer.close()
      print(f"Interrupted at step {step} (config.interrupt_at_step)")
      return None
    state, step_metrics = train_step(state, train_data)
    step += 1
    bar.update(1)
    if step == 1:
      first = float(jax.device_get(dp.unreplicate(step_metrics))["loss"])
      log.write({"step": 1, "split": "init", "stage": "constant", "loss": first,
                 f"term/{config.loss}": first})
      ok = abs(first - b.initial_reference) <= config.first_loss_tolerance
      say(f"first step: loss {_fmt(first)} vs {b.initial_reference:.4f} "
          f"({'ln ' + str(config.num_candidates) if config.loss == 'listwise' else 'ln 2'}"
          f"): {'ok' if ok else 'OFF'} (|diff| {abs(first - b.initial_reference):.4f}, "
          f"tolerance {config.first_loss_tolerance})")
    epoch_end = step % steps_per_epoch == 0 or step == total_steps
    if not epoch_end:
      continue
    epoch = step / steps_per_epoch
    epoch_index = math.ceil(epoch - 1e-9)
    knobs = b.curriculum.host_values(step - 1)
    raw_sums = jax.device_get(dp.unreplicate(state.train_sums))
    # Fresh host copies: the replicated buffers are donated to the next step.
    state = state.replace(train_sums=dp.replicate(jax.tree.map(np.array, zero_sums)))
    train_event = {"step": step, "epoch": epoch, "stage": "constant", "split": "train",
                   **monitors.period_summary(raw_sums),
                   **{k: v for k, v in knobs.items() if k != "aug_strength"}}
    log.write(train_event)
    last = step == total_steps
    line = (f"epoch {epoch:5.1f} | loss {_fmt(train_event['loss'])} "
            f"(ln {config.num_candidates} = {math.log(config.num_candidates):.3f})")
    if last or epoch_index % config.eval_every == 0:
      first_eval = not any(e["split"] == "test" for e in log.events)
      val = evaluate(state, "validation")
      test = evaluate(state, "test", repeat=first_eval or last)
      for split, rep in (("validation", val), ("test", test)):
        log.write({"step": step, "epoch": epoch, "stage": "constant", "split": split,
                   **rep})
      line += (f" | validation HR@10 {val['hr@10']:.4f} NDCG@10 {val['ndcg@10']:.4f}"
               f" | test HR@10 {test['hr@10']:.4f} NDCG@10 {test['ndcg@10']:.4f}")
    if train_event.get("skipped_steps"):
      line += (f" | {train_event['skipped_steps']}/{train_event['period_steps']} steps "
               f"skipped (non-finite loss)")
    found = monitor.update(log.read())
    if halted is None:
      halted = monitor.halting(found)
    monitors.write_diagnosis(os.path.join(workdir, "diagnosis.json"), monitor.findings,
                             thresholds=monitor.thresholds, halted=halted,
                             source=os.path.join(workdir, "metrics.jsonl"))
    say(line)
    for finding in found:
      say(monitors.format_live(finding))
    checkpointer.save(step, dp.unreplicate(state))
    if halted is not None:
      say(f"Halted at step {step}: {halted.code} is in config.monitor.halt_on "
          f"(checkpoint saved; re-running the workdir resumes from it)")
      break
  bar.close()
  checkpointer.close()

  # --- Summary ------------------------------------------------------------------------------
  events = log.read()
  val_events = [e for e in events if e["split"] == "validation"]
  test_events = {e["step"]: e for e in events if e["split"] == "test"}
  best = max(val_events, key=lambda e: (e["ndcg@10"], -e["step"]))
  best_test, last_test = test_events[best["step"]], test_events[max(test_events)]
  init = next((e for e in events if e["split"] == "init"), {})
  train_events = [e for e in events if e["split"] == "train"]
  initial_loss = init.get("loss")
  repeat_diffs = [e["eval_repeat_max_diff"] for e in test_events.values()
                  if "eval_repeat_max_diff" in e]
  sanity = {
      "first_loss": {
          "value": initial_loss, "reference": b.initial_reference,
          "tolerance": config.first_loss_tolerance,
          "ok": (initial_loss is not None
                 and abs(initial_loss - b.initial_reference)
                 <= config.first_loss_tolerance)},
      "true_item_in_every_list": all(s["true_item_in_every_list"]
                                     for s in b.sanity.values()),
      "position_uniform": {
          name: {"chi2": s["position_chi2"], "p_value": s["position_p_value"],
                 "ok": s["position_p_value"] > config.position_p_min}
          for name, s in b.sanity.items()},
      "eval_deterministic": {"max_diff": max(repeat_diffs) if repeat_diffs else None,
                             "evaluations_repeated": len(repeat_diffs),
                             "ok": bool(repeat_diffs) and max(repeat_diffs) == 0.0},
      "loss_fell": {"first": initial_loss,
                    "last_epoch": train_events[-1]["loss"] if train_events else None,
                    "ok": bool(train_events) and initial_loss is not None
                          and train_events[-1]["loss"] < initial_loss},
  }
  sanity["all_ok"] = bool(
      sanity["first_loss"]["ok"] and sanity["true_item_in_every_list"]
      and all(v["ok"] for v in sanity["position_uniform"].values())
      and sanity["eval_deterministic"]["ok"] and sanity["loss_fell"]["ok"])
  summary = {key: best_test[key] for key in KEYS}
  summary.update({
      "name": config.name, "loss": config.loss, "num_candidates": config.num_candidates,
      "selected_epoch": best["epoch"],
      "validation": {key: best[key] for key in KEYS},
      "last_epoch": {key: last_test[key] for key in KEYS + ("epoch",)},
      "baselines": {name: {k: {key: v[key] for key in KEYS} for k, v in bl.items()}
                    for name, bl in b.baselines.items()},
      "initial_loss": initial_loss, "initial_reference": b.initial_reference,
      "sanity": sanity,
      "skipped_steps": int(jax.device_get(dp.unreplicate(state.skipped_steps))),
      "steps": step, "steps_per_epoch": steps_per_epoch, "epochs": step / steps_per_epoch,
      "final_train_loss": train_events[-1]["loss"] if train_events else None,
      "diagnosis": monitors.counts(monitor.findings),
      "findings": sorted({f.code for f in monitor.findings}),
      "halted": halted.to_dict() if halted else None,
      "wall_s": round(time.time() - t_start, 2),
      "train_step_compilations": counter.count, "num_devices": dp.num_devices,
      "parallel": dp.kind,
      "dataset": {"path": d["path"], "config_name": d["config_name"],
                  "num_users": d["num_users"], "num_items": d["num_items"],
                  "num_interactions": d["num_interactions"],
                  "train_users": b.num_train,
                  "evaluated_users": len(b.evals["test"]["target"]),
                  "data_seed": config.data_seed},
      "anchors": list(ANCHORS),
  })
  with open(os.path.join(workdir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
  _figures(config, b, workdir, events)
  _print_summary(config, summary, workdir)
  return summary


def _figures(config, b, workdir, events) -> None:
  try:
    from tools import plots
  except ImportError as e:  # matplotlib missing: the numbers still stand
    print(f"figures not written: {e}")
    return
  plots.plot_rerank_curves(events, os.path.join(workdir, "curves.png"),
                           reference=b.initial_reference,
                           baselines=b.baselines["validation"], title=config.name)


def _print_summary(config, summary, workdir) -> None:
  row = "  ".join(f"{k.upper()} {summary[k]:.4f}" for k in KEYS)
  print(f"{config.name}: Test ({config.num_candidates} candidates, validation-selected "
        f"epoch {summary['selected_epoch']:g}) {row}  wall {summary['wall_s']:.1f}s -> "
        f"{workdir}")
  for name, m in summary["baselines"]["test"].items():
    print(f"  {name:10s} " + "  ".join(f"{k.upper()} {m[k]:.4f}" for k in KEYS))
  if config.num_candidates == ANCHORS[0]["num_candidates"]:
    a = ANCHORS[0]
    print(f"  {a['model']}: HR@10 {a['hr@10']:.4f}  NDCG@10 {a['ndcg@10']:.4f}")
  s = summary["sanity"]
  print(f"sanity: first loss {_fmt(s['first_loss']['value'])} vs "
        f"{s['first_loss']['reference']:.4f} {'ok' if s['first_loss']['ok'] else 'FAIL'}"
        f"; true item in every list {'ok' if s['true_item_in_every_list'] else 'FAIL'}"
        f"; position chi-square p " + ", ".join(
            f"{k} {v['p_value']:.3f}" for k, v in s["position_uniform"].items())
        + f"; evaluation repeated x{s['eval_deterministic']['evaluations_repeated']} max "
        f"diff {s['eval_deterministic']['max_diff']} "
        f"{'ok' if s['eval_deterministic']['ok'] else 'FAIL'}; loss fell "
        f"{'ok' if s['loss_fell']['ok'] else 'FAIL'} -> "
        f"{'all ok' if s['all_ok'] else 'SOME CHECKS FAILED'}")
  dg = summary["diagnosis"]
  print(f"diagnosis: {dg['error']} error, {dg['warning']} warning, {dg['info']} info "
        f"{summary['findings']} (python -m tools.diagnose {workdir})")
