"""A tiny recipe for testing the loop: softmax regression on scikit-learn's iris.

Everything is small enough that a whole run takes a second, and every knob the loop
treats generically is exercised: a class-mix or permutation sampler, a curriculum with
two stages, an on-device augmentation, members with their own knobs, a selection rule,
an eval split of its own, and a fault (``nan_at_step``) for the halting test.

``get_config`` makes it runnable by ``python -m experiments.run
--config=tests/training/tiny_recipe.py`` (``config.trainer`` names this module).
"""

from __future__ import annotations

import importlib.util
import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments.configs.runtime import add_runtime
from jaxloss import curriculum, losses, monitors
from jaxloss.data.sampler import epoch_permutation_sampler
from jaxloss.train_state import TrainState
from jaxloss.train_step import make_optimizer
from jaxloss.training import Member, Recipe, Selection


def get_config(arg=None):
  c = ml_collections.ConfigDict()
  c.name = f"tiny_{arg or 'default'}"
  c.trainer = "tests.training.tiny_recipe"
  c.seed = 0
  c.num_epochs = 4
  c.batch_size = 16
  c.learning_rate = 0.1
  c.sampler = "class_mix"  # or "permutation"
  c.members = ""  # e.g. "0.5,1.0": one member per loss scale (seeds seed, seed + 1 ...)
  c.nan_at_epoch = -1.0  # >= 0: the loss is NaN from this epoch on (a fault)
  c.hidden = 8
  c.dropout_rate = 0.1
  c.sleep_at_epoch = -1  # >= 0: sleep 600 s after this epoch's evaluation (kill tests)
  c.runtime_fields = ("sleep_at_epoch",)  # may change on resume (jaxloss.training.guard)
  add_runtime(c, eval_batch_size=64, checkpoint_every_steps=5)
  c.progress = False
  return c


class _Net(nn.Module):
  hidden: int
  dropout_rate: float

  @nn.compact
  def __call__(self, x, train: bool = False):
    h = nn.tanh(nn.Dense(self.hidden)(x))
    h = nn.Dropout(self.dropout_rate, deterministic=not train)(h)
    return nn.Dense(3)(h)


def _iris():
  # The iris CSV scikit-learn ships, read directly: importing sklearn.datasets takes
  # 1-2 s, in each of the many processes that run this recipe (equal to
  # sklearn.datasets.load_iris: tests/training/loop_test.py).
  spec = importlib.util.find_spec("sklearn")
  path = os.path.join(spec.submodule_search_locations[0], "datasets", "data", "iris.csv")
  table = np.loadtxt(path, delimiter=",", skiprows=1)
  x, y = table[:, :4], table[:, 4].astype(np.int64)
  x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
  keep = np.concatenate([np.flatnonzero(y == 0)[:40], np.flatnonzero(y == 1)[:20],
                         np.flatnonzero(y == 2)[:8]])  # 40 / 20 / 8: imbalanced
  test = np.setdiff1d(np.arange(len(y)), keep)
  return ({"x": x[keep], "label": y[keep].astype(np.int32)},
          {"x": x[test], "label": y[test].astype(np.int32)})


def build(config, workdir=None) -> Recipe:
  del workdir
  train, test = _iris()
  counts = np.bincount(train["label"], minlength=3)
  model = _Net(config.hidden, config.dropout_rate)
  tx = make_optimizer("sgd", learning_rate=config.learning_rate, momentum=0.9,
                      weight_decay=0.0, max_grad_norm=5.0)
  lr = config.learning_rate
  stage_list = [
      curriculum.Stage("warm", start=0, values={"learning_rate": lr, "sampler_mix": 0.0,
                                                "aug_strength": 0.0, "poison": 0.0}),
      curriculum.Stage("balanced", start=config.num_epochs / 2,
                       values={"learning_rate": lr / 2, "sampler_mix": 1.0,
                               "aug_strength": 0.1, "poison": 0.0})]
  if config.nan_at_epoch >= 0:
    stage_list.append(curriculum.Stage("poisoned", start=config.nan_at_epoch, values={
        "learning_rate": lr / 2, "sampler_mix": 1.0, "aug_strength": 0.1, "poison": 1.0}))
  stages = curriculum.Curriculum(stages=sorted(stage_list, key=lambda st: st.start))
  steps_per_epoch = -(-len(train["label"]) // config.batch_size)
  spec = monitors.MonitorSpec(heads={"class": monitors.HeadSpec(3)})
  scales = [float(s) for s in str(config.members).split(",") if s.strip()]

  def objective(logits, labels, knobs):
    loss = losses.softmax_cross_entropy_with_integer_labels(logits, labels)
    loss = loss * knobs.get("loss_scale", 1.0)
    loss = jnp.where(knobs["poison"] > 0, jnp.nan, loss)  # the fault, if configured
    return loss, jnp.ones_like(loss), {"heads": {"class": logits}}

  def augment(key, x, positions, strength):
    noise = jax.vmap(lambda p: jax.random.normal(jax.random.fold_in(key, p), x.shape[1:]))
    return x + strength * noise(positions)

  @jax.jit  # one program, not ~50 eager operations in each of the many runs
  def init(key):
    k1, k2 = jax.random.split(key)
    params = model.init(k1, jnp.zeros((1, 4)))["params"]
    return TrainState.create(apply_fn=model.apply, params=params, tx=tx, rng=k2,
                             train_sums=monitors.zero_sums(spec))

  def predict(state, batch):
    logits = state.apply_fn({"params": state.params}, batch["x"])
    return {"prediction": jnp.argmax(logits, -1), "logits": logits}

  def evaluate(split, out):
    y = test["label"]
    recall = [float(np.mean(out["prediction"][y == c] == c)) for c in range(3)]
    share = np.bincount(out["prediction"], minlength=3) / len(y)
    return {"accuracy": float(np.mean(out["prediction"] == y)),
            "uar": float(np.mean(recall)), "per_class_recall": recall,
            "pred_share/class": share.tolist(), "top_share/class": float(share.max()),
            "top_class/class": int(share.argmax())}

  def meta(k):
    return {"num_classes": 3, "class_counts": counts.tolist(), "learning_rate":
            config.learning_rate, "max_grad_norm": 5.0,
            "terms": [{"name": "ce", "weight": 1.0, "initial_reference": float(np.log(3)),
                       "initial_reference_text": "ln 3"}],
            "initial_reference": float(np.log(3)), "initial_reference_text": "ln 3",
            "heads": {"class": {"num_classes": 3, "o_index": None}}, "class_names": {},
            "stages": [{"name": s.name, "start_step": int(b), "expect": {}, "knobs": {}}
                       for s, b in zip(stages.stages, compiled.boundaries)],
            "config_fields": {"learning_rate": "config.learning_rate"}, "member": k}

  def summarize(record):
    out = {}
    for k, events in enumerate(record.streams):
      best, last = record.select(events)
      out[f"member_{k}"] = {"best_uar": best["test"]["uar"], "last_uar": last["test"]["uar"],
                            "best_epoch": best["test"]["epoch"]}
    return {**out["member_0"], "members": out}

  def on_evaluation(workdir, step, epoch, split, outputs, last):
    if config.sleep_at_epoch >= 0 and abs(epoch - config.sleep_at_epoch) < 1e-9:
      with open(f"{workdir}/sleeping", "w") as f:
        f.write(str(step))
      time.sleep(600)

  sampler = None
  if config.sampler == "permutation":  # with its cached form (the train step uses it)
    sampler = epoch_permutation_sampler(len(train["label"]), config.batch_size)

  compiled = stages.compile(steps_per_epoch)
  return Recipe(
      name=config.name, train=train, eval_splits={"test": test}, input_keys=("x",),
      eval_input_keys=("x",), init=init, objective=objective,
      curriculum=stages, compiled=compiled, batch_size=config.batch_size,
      num_epochs=config.num_epochs, predict=predict, evaluate=evaluate, meta=meta,
      summarize=summarize, seed=config.seed, sampler=sampler, class_counts=counts,
      augment_fn=augment, max_grad_norm=5.0, monitor=spec,
      members=tuple(Member(seed=config.seed + k, knobs={"loss_scale": s},
                           fields={"loss_scale": s}) for k, s in enumerate(scales)),
      ensemble=((lambda split, outs: evaluate(split, {"prediction": np.argmax(
          np.mean([o["logits"] for o in outs], 0), -1)})) if len(scales) > 1 else None),
      selection=Selection("test", "uar"), on_evaluation=on_evaluation)
