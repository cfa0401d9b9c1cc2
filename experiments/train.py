"""``train_and_evaluate(config, workdir)``: the imbalance-curriculum training loop.

Linear and sectioned, as the flax examples' ``train.py``: data, model and state,
restore-or-init, compiled steps, the loop (log, evaluate, checkpoint), the summary.
Everything the run needs to continue exactly lives in the TrainState and the
checkpoint; re-running with the same workdir resumes.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from tqdm import tqdm

from jaxloss import curriculum as curriculum_lib
from jaxloss import metrics as metrics_lib
from jaxloss.checkpoint import Checkpointer, abstract_like
from jaxloss.data import augment
from jaxloss.data.digits_lt import load_digits_lt
from jaxloss.models import SmallCNN
from jaxloss.parallel import DATA_AXIS, DataParallel, TraceCounter, pad_to_multiple
from jaxloss.train_state import TrainState, zero_train_sums
from jaxloss.train_step import (make_eval_step, make_imbalance_loss, make_optimizer,
                                make_train_step)

CURRICULA = ("four_stage", "erm")
WAR_WEIGHTS = ("train", "test")


def build_curriculum(config: ml_collections.ConfigDict) -> curriculum_lib.Curriculum:
  """The curriculum named by ``config.curriculum``.

  ``erm`` is a single stage with class-weight cap 1, data-distribution sampling and
  τ = 0 (plain cross-entropy) and the same LR milestones as the cooldown of
  ``four_stage``, so the two differ only in what the recipe changes.

  Raises:
    ValueError: unknown ``config.curriculum``.
  """
  if config.curriculum == "four_stage":
    return curriculum_lib.four_stage(
        num_epochs=config.num_epochs, learning_rate=config.learning_rate,
        aug_strength=config.aug_strength, lr_milestones=tuple(config.lr_milestones),
        lr_decay=config.lr_decay)
  if config.curriculum == "erm":
    lr = curriculum_lib.milestone_lr(
        config.learning_rate, [m * config.num_epochs for m in config.lr_milestones],
        config.lr_decay)
    return curriculum_lib.constant(class_weight_cap=1.0, sampler_mix=0.0, tau=0.0,
                                   aug_strength=config.aug_strength, learning_rate=lr)
  raise ValueError(f"config.curriculum must be one of {CURRICULA}, got "
                   f"{config.curriculum!r}")


class MetricsLog:
  """Appends one JSON object per event to ``metrics.jsonl``.

  On resume, events after the restored step are dropped first: they were written by
  the interrupted run after its last finalized checkpoint and will be written again.
  """

  def __init__(self, path: str, resume_step: int):
    self.path = path
    if os.path.exists(path):
      with open(path) as f:
        kept = [line for line in f if line.strip()
                and json.loads(line)["step"] <= resume_step]
      tmp = path + ".tmp"
      with open(tmp, "w") as f:
        f.writelines(kept)
      os.replace(tmp, path)

  def write(self, event: dict) -> None:
    with open(self.path, "a") as f:
      f.write(json.dumps(event) + "\n")

  def read(self) -> list[dict]:
    with open(self.path) as f:
      return [json.loads(line) for line in f if line.strip()]


def _validate(config):
  if config.war_weights not in WAR_WEIGHTS:
    raise ValueError(f"config.war_weights must be one of {WAR_WEIGHTS}, got "
                     f"{config.war_weights!r}")
  for field in ("num_epochs", "batch_size", "eval_batch_size",
                "checkpoint_every_steps", "keep_checkpoints"):
    if not config[field] >= 1:
      raise ValueError(f"config.{field} must be >= 1, got {config[field]}")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict | None:
  """Trains and evaluates one run; returns the summary (also in ``summary.json``).

  Resumes from the latest checkpoint in ``workdir/checkpoints`` if there is one.
  Returns None if the run stopped at ``config.interrupt_at_step`` (a simulated
  preemption used by the resume tests).
  """
  _validate(config)
  t_start = time.time()
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2))

  # --- Data -----------------------------------------------------------------------
  data = load_digits_lt(imbalance_ratio=config.imbalance_ratio,
                        test_per_class=config.test_per_class, seed=config.data_seed,
                        data_dir=config.data_dir)
  train, test = data["train"], data["test"]
  class_counts = np.asarray(data["class_counts"])
  num_classes = int(data["num_classes"])
  num_train = len(train["label"])
  steps_per_epoch = math.ceil(num_train / config.batch_size)
  total_steps = int(config.num_epochs) * steps_per_epoch
  war_weights = class_counts if config.war_weights == "train" else None

  # --- Curriculum, model, optimizer, parallelism ------------------------------------
  curriculum = build_curriculum(config).compile(steps_per_epoch)
  dp = DataParallel(config.parallel, config.num_devices)
  model = SmallCNN(num_classes, widths=tuple(config.model_widths), axis_name=DATA_AXIS)
  tx = make_optimizer(config.optimizer, learning_rate=config.learning_rate,
                      momentum=config.momentum, weight_decay=config.weight_decay,
                      max_grad_norm=config.max_grad_norm)
  loss_fn = make_imbalance_loss(class_counts, loss=config.loss, gamma=config.focal_gamma,
                                weight_method=config.class_weight_method,
                                weight_normalize=config.class_weight_normalize)

  def init_state() -> TrainState:
    key = jax.random.PRNGKey(config.seed)
    init_key, state_key = jax.random.split(key)
    variables = model.init(init_key, jnp.zeros((1,) + train["image"].shape[1:]),
                           train=False)
    params = variables["params"]
    model_state = {k: v for k, v in variables.items() if k != "params"}
    return TrainState.create(apply_fn=model.apply, params=params, tx=tx,
                             rng=state_key, model_state=model_state)

  # --- Restore or initialise ----------------------------------------------------------
  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"),
                              max_to_keep=config.keep_checkpoints)
  if checkpointer.latest_step() is not None:
    sharding = (NamedSharding(dp.mesh, P()) if dp.kind == "shard_map"
                else jax.sharding.SingleDeviceSharding(dp.devices[0]))
    abstract = abstract_like(init_state, sharding)
    state = checkpointer.restore(abstract)
    print(f"Resumed from {checkpointer.directory} at step {int(state.step)}")
  else:
    state = init_state()
  step = int(state.step)
  log = MetricsLog(os.path.join(workdir, "metrics.jsonl"), resume_step=step)
  state = dp.replicate(state)

  counter = TraceCounter()
  train_step = dp.launch_train_step(
      make_train_step(curriculum=curriculum, loss_fn=loss_fn,
                      global_batch_size=config.batch_size, num_devices=dp.num_devices,
                      class_counts=class_counts, augment_fn=augment.augment_batch,
                      max_grad_norm=config.max_grad_norm),
      counter)
  eval_step = dp.launch_eval_step(make_eval_step(num_classes))
  train_data = dp.replicate({"image": train["image"], "label": train["label"]})
  eval_batch = -(-config.eval_batch_size // dp.num_devices) * dp.num_devices
  padded = pad_to_multiple({"image": test["image"], "label": test["label"]}, eval_batch)
  test_batches = [dp.shard_batch({k: v[i:i + eval_batch] for k, v in padded.items()})
                  for i in range(0, len(padded["mask"]), eval_batch)]

  def evaluate(state) -> dict:
    sums = None
    for batch in test_batches:
      out = eval_step(state, batch)
      sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
    sums = jax.device_get(sums)
    if int(sums["count"]) != len(test["label"]):
      raise RuntimeError(f"evaluation counted {int(sums['count'])} examples, expected "
                         f"{len(test['label'])}")
    report = metrics_lib.classification_report(sums["confusion"], war_weights)
    report["loss"] = float(sums["loss_sum"] / sums["count"])
    return report

  # --- Train ------------------------------------------------------------------------
  boundaries = set(curriculum.boundaries[1:])
  bar = tqdm(total=total_steps, initial=step, desc=config.name, unit="step",
             disable=not config.progress, dynamic_ncols=True, leave=False)
  while step < total_steps:
    if config.get("interrupt_at_step") is not None and step >= config.interrupt_at_step:
      # Simulated preemption (tests, tools.soak): stop with no final checkpoint.
      bar.close()
      checkpointer.close()
      print(f"Interrupted at step {step} (config.interrupt_at_step)")
      return None
    state, _ = train_step(state, train_data)
    step += 1
    bar.update(1)
    epoch_done = step % steps_per_epoch == 0 or step == total_steps
    if epoch_done:
      stage = curriculum.names[curriculum.stage_of(step - 1)]
      knobs = curriculum.host_values(step - 1)
      sums = {k: float(v) for k, v in
              jax.device_get(dp.unreplicate(state.train_sums)).items()}
      # Fresh arrays each time: the step donates the state, sums included.
      state = state.replace(train_sums=dp.replicate(zero_train_sums()))
      n = max(sums["steps"], 1.0)
      if sums["skipped"] < sums["steps"] and not math.isfinite(sums["loss"]):
        raise FloatingPointError(f"non-finite train loss sum at step {step}")
      epoch = step / steps_per_epoch
      train_event = {
          "step": step, "epoch": epoch, "stage": stage, "split": "train",
          "loss": sums["loss"] / max(n - sums["skipped"], 1.0),
          "grad_norm": sums["grad_norm"] / max(n - sums["skipped"], 1.0),
          "clipped_share": sums["clipped"] / n, "skipped_steps": int(sums["skipped"]),
          **knobs}
      log.write(train_event)
      report = evaluate(state)
      log.write({"step": step, "epoch": epoch, "stage": stage, "split": "test",
                 **report})
      line = (f"epoch {epoch:5.1f} | {stage:<10} | loss {train_event['loss']:.4f} | "
              f"test WAR {100 * report['war']:5.1f} UAR {100 * report['uar']:5.1f} | "
              f"cap {knobs.get('class_weight_cap', 0):4.1f} tau {knobs.get('tau', 0):.1f}"
              f" mix {knobs.get('sampler_mix', 0):.1f} lr {knobs['learning_rate']:.4g}")
      if config.progress:
        bar.write(line)
    if (step % config.checkpoint_every_steps == 0 or step in boundaries
        or step == total_steps):
      checkpointer.save(step, dp.unreplicate(state))
  bar.close()
  checkpointer.close()

  # --- Summary ------------------------------------------------------------------------
  final = evaluate(state)
  events = log.read()
  stage_end = {}
  for e in events:
    if e["split"] == "test":
      stage_end[e["stage"]] = {"epoch": e["epoch"], "war": e["war"], "uar": e["uar"]}
  summary = {
      "war": final["war"], "uar": final["uar"], "accuracy": final["accuracy"],
      "macro_f1": final["macro_f1"], "per_class_recall": final["per_class_recall"],
      "test_loss": final["loss"], "war_weights": config.war_weights,
      "steps": step, "steps_per_epoch": steps_per_epoch,
      "skipped_steps": int(jax.device_get(dp.unreplicate(state.skipped_steps))),
      "wall_s": round(time.time() - t_start, 2),
      "train_step_compilations": counter.count,
      "num_devices": dp.num_devices, "parallel": dp.kind,
      "class_counts": class_counts.tolist(),
      "stages": [{"name": n, "start_step": b} for n, b in
                 zip(curriculum.names, curriculum.boundaries)],
      "stage_end": stage_end,
  }
  with open(os.path.join(workdir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
  try:
    from tools.plots import plot_curves
    plot_curves(os.path.join(workdir, "metrics.jsonl"), os.path.join(workdir, "curves.png"),
                title=config.name)
  except ImportError as e:  # matplotlib missing: the run's numbers still stand
    print(f"curves.png not written: {e}")
  print(f"{config.name}: WAR {100 * summary['war']:.2f}  UAR {100 * summary['uar']:.2f}  "
        f"steps {step}  compilations {counter.count}  wall {summary['wall_s']:.1f}s  "
        f"-> {workdir}")
  return summary
