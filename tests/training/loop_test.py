"""The one training loop, on a tiny recipe (iris softmax regression, a second a run):
exact resume after an interruption and after a SIGKILL, halting, the resume guard and
the run's own facts, 1 vs 8 devices, host vs device input and ensemble members. 2
processes vs 1, ensemble members included, is tests/recipes_multiprocess_test.py (each
recipe and the tabular example; ABSA's smoke run is a two-member ensemble)."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jaxloss.checkpoint import Checkpointer
from jaxloss.training import ConfigChangedError, train_and_evaluate
from jaxloss.training import guard
from jaxloss.training.recipe import Selection, select
from jaxloss.training.run_files import RunFacts
from tests.training import tiny_recipe

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _config(**overrides):
  c = tiny_recipe.get_config()
  for k, v in overrides.items():
    c[k] = v
  return c


def _run(workdir, **overrides):
  return train_and_evaluate(_config(**overrides), str(workdir), tiny_recipe.build)


def _state(workdir):
  ckpt = Checkpointer(os.path.join(str(workdir), "checkpoints"))
  try:
    return ckpt.restore_host()
  finally:
    ckpt.close()


def _events(workdir):
  with open(os.path.join(str(workdir), "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _max_diff(a, b):
  return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _facts_free(summary):
  return {k: v for k, v in summary.items()
          if k not in ("wall_s", "train_step_compilations", "segments", "compilation")}


@pytest.mark.parametrize("sampler", ["class_mix", "permutation"])
def test_interrupted_run_resumes_exactly(tmp_path, sampler):
  """With the permutation sampler the resume starts mid-epoch with an empty cache of the
  epoch's permutation (checkpoints leave it out): the batches must not change."""
  straight = _run(tmp_path / "a", sampler=sampler)
  # Stopped at step 7 (checkpoints at 5): the resume redoes steps 6-7.
  assert _run(tmp_path / "b", interrupt_at_step=7, sampler=sampler) is None
  assert _state(tmp_path / "b")["sampler_cache"] is None  # not checkpointed
  resumed = _run(tmp_path / "b", sampler=sampler)
  jax.tree.map(np.testing.assert_array_equal, _state(tmp_path / "a"),
               _state(tmp_path / "b"))
  assert _events(tmp_path / "a") == _events(tmp_path / "b")
  assert _facts_free(straight) == _facts_free(resumed)
  assert resumed["segments"] == 2 and resumed["train_step_compilations"] == 2


def test_killed_run_resumes_exactly(tmp_path):
  """SIGKILL during the last evaluation, 10 steps after the last checkpoint and after
  epoch 3's events were written: the re-run drops those events, redoes the steps and
  ends exactly as an uninterrupted run."""
  _run(tmp_path / "straight")
  workdir = tmp_path / "killed"
  args = [sys.executable, "-m", "experiments.run", "--config=tests/training/tiny_recipe.py",
          f"--workdir={workdir}", "--config.sleep_at_epoch=4",
          "--config.checkpoint_every_steps=10"]
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}  # the session's XLA_FLAGS (8 devices)
  proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  try:
    deadline = time.monotonic() + 120
    # Asleep in epoch 4's evaluation, with the step-10 checkpoint finalized (orbax
    # finalizes it in the background, which under load can take longer).
    while not (os.path.exists(workdir / "sleeping")
               and os.path.isdir(workdir / "checkpoints" / "10")):
      assert proc.poll() is None, "the run ended before the kill"
      assert time.monotonic() < deadline, "the run did not reach epoch 4"
      time.sleep(0.1)
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  assert max(e["step"] for e in _events(workdir)) == 15  # written after checkpoint 10
  assert _state(workdir)["step"] == 10
  resumed = _run(workdir)
  jax.tree.map(np.testing.assert_array_equal, _state(tmp_path / "straight"),
               _state(workdir))
  assert _events(tmp_path / "straight") == _events(workdir)
  assert resumed["steps"] == 20


def test_halt_on_a_finding_saves_a_checkpoint_and_says_so(tmp_path, capsys):
  config = _config(nan_at_epoch=5.0, num_epochs=8)
  config.monitor.halt_on = ("non_finite",)
  summary = train_and_evaluate(config, str(tmp_path), tiny_recipe.build)
  assert summary["halted"]["code"] == "non_finite"
  assert summary["steps"] == 30 and summary["skipped_steps"] == 5  # epoch 6 all NaN
  state = _state(tmp_path)
  assert int(state["step"]) == 30  # of 40
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(state["params"]))
  assert "Halted at step 30: non_finite is in config.monitor.halt_on" in capsys.readouterr().out


def test_resume_guard_names_changed_fields_and_keeps_the_runs_facts(tmp_path):
  first = _run(tmp_path)
  with pytest.raises(ConfigChangedError, match=r"changed: seed \(0 -> 1\)"):
    _run(tmp_path, seed=1)
  with pytest.raises(ConfigChangedError,
                     match=r"learning_rate \(0.1 -> 0.01\), num_epochs \(4 -> 6\)"):
    _run(tmp_path, learning_rate=0.01, num_epochs=6)
  with open(tmp_path / "config.json") as f:
    assert json.load(f)["seed"] == 0  # the record is not rewritten by a refused run
  # Fields that only change how the run executes may change; a no-op re-run keeps
  # the run's own wall time and compilations.
  again = _run(tmp_path, eval_batch_size=8, num_devices=2, checkpoint_every_steps=3)
  assert again["wall_s"] == first["wall_s"]
  assert again["train_step_compilations"] == first["train_step_compilations"] == 1
  assert _facts_free(again) == {**_facts_free(first), "num_devices": 2}
  # Opting in continues the run with the new values and records the change.
  longer = train_and_evaluate(_config(num_epochs=6), str(tmp_path), tiny_recipe.build,
                              allow_config_change=True)
  assert longer["steps"] == 30 and longer["segments"] == 2
  with open(tmp_path / "config_changes.jsonl") as f:
    assert json.loads(f.readline())["changed"] == {"num_epochs": [4, 6]}


def test_changed_fields_flattens_and_skips_runtime_fields():
  old = {"seed": 0, "monitor": {"halt_on": [], "enabled": True}, "distributed": {"a": 1},
         "lambdas": {"entity": "0.3"}}
  new = {"seed": 0, "monitor": {"halt_on": ["non_finite"], "enabled": False},
         "distributed": {"a": 2}, "lambdas": {"entity": "0.3", "scenario": 0.2}}
  assert guard.changed_fields(old, new) == {"monitor.enabled": (True, False),
                                            "lambdas.scenario": ("<absent>", 0.2)}


def test_run_facts_add_segments_and_survive_a_lost_record(tmp_path):
  path = str(tmp_path / "facts.json")
  f = RunFacts(path, None)
  f.record(5, 1.0, 1)
  f.record(10, 2.0, 1)
  resumed = RunFacts(path, 10)
  assert resumed.totals(0.5, 1) == {"wall_s": 2.5, "train_step_compilations": 2,
                                    "segments": 2}
  # A checkpoint at 15 whose facts were never written: the newest before it count.
  assert RunFacts(path, 15).prior["wall_s"] == 2.0
  assert RunFacts(path, 5).totals(0.0, 0)["wall_s"] == 1.0


def test_eval_every_steps_evaluates_mid_epoch_and_trains_the_same(tmp_path):
  """config.eval_every_steps=3 with 5-step epochs and a stage boundary at step 10:
  evaluations at the multiples of 3, the boundary and the end; a train log period also
  ends there. Training is untouched: the same parameters, and the evaluations both
  runs make (steps 10, 15 and 20) agree."""
  _run(tmp_path / "epochs", dropout_rate=0.0)
  _run(tmp_path / "steps", dropout_rate=0.0, eval_every_steps=3)
  jax.tree.map(np.testing.assert_array_equal, _state(tmp_path / "epochs"),
               _state(tmp_path / "steps"))
  by_epoch, by_step = _events(tmp_path / "epochs"), _events(tmp_path / "steps")
  steps = lambda events, split: [e["step"] for e in events if e["split"] == split]
  assert steps(by_epoch, "test") == [5, 10, 15, 20]
  assert steps(by_step, "test") == [3, 6, 9, 10, 12, 15, 18, 20]
  assert steps(by_step, "train") == [3, 5, 6, 9, 10, 12, 15, 18, 20]
  assert sum(e["period_steps"] for e in by_step if e["split"] == "train") == 20
  for step in (10, 15, 20):
    a, b = ([{k: v for k, v in e.items() if k != "eval_repeat_max_diff"}
             for e in ev if e["split"] == "test" and e["step"] == step]
            for ev in (by_epoch, by_step))
    assert a == b
  with pytest.raises(ValueError, match="eval_every_steps"):
    _run(tmp_path / "bad", eval_every_steps=0)


def test_select_takes_the_best_and_the_earliest_of_ties():
  events = [{"step": 0, "split": "meta"}]
  for step, dev in ((1, 0.5), (2, 0.7), (3, 0.7), (4, 0.6)):
    events += [{"step": step, "split": "dev", "score": dev},
               {"step": step, "split": "test", "score": step}]
  best, last = select(events, Selection("dev", "score"))
  assert best["test"]["score"] == 2 and last["test"]["score"] == 4
  assert select(events, None)[0]["test"]["score"] == 4


@pytest.mark.parametrize("sampler", ["class_mix", "permutation"])
def test_one_and_eight_devices_and_host_input_agree(tmp_path, sampler):
  kw = dict(dropout_rate=0.0, sampler=sampler)
  _run(tmp_path / "one", num_devices=1, **kw)
  _run(tmp_path / "eight", num_devices=8, **kw)
  _run(tmp_path / "host", num_devices=8, train_input="host", **kw)
  one, eight, host = (_state(tmp_path / n) for n in ("one", "eight", "host"))
  # Sums of 16 float32 terms in another order: a few ulps of the O(1) parameters.
  assert _max_diff(one["params"], eight["params"]) < 1e-6
  jax.tree.map(np.testing.assert_array_equal, eight, host)  # the same computation


def test_members_train_like_single_runs(tmp_path):
  summary = _run(tmp_path / "ens", members="0.5,1.0", dropout_rate=0.0)
  assert summary["train_step_compilations"] == 1
  for k in (0, 1):
    assert os.path.exists(tmp_path / "ens" / f"member_{k}" / "metrics.jsonl")
  ens_events = _events(tmp_path / "ens")
  assert {e["split"] for e in ens_events} == {"meta", "test"}
  ens = _state(tmp_path / "ens")
  # Member 1: seed 1, loss scale 1 = the single run with seed 1.
  _run(tmp_path / "single", seed=1, dropout_rate=0.0)
  single = _state(tmp_path / "single")
  member_1 = jax.tree.map(lambda x: x[1], ens["params"])
  assert _max_diff(member_1, single["params"]) < 1e-6
  # Host input: every member draws its own batch, as on device.
  _run(tmp_path / "ens_host", members="0.5,1.0", dropout_rate=0.0, train_input="host")
  jax.tree.map(np.testing.assert_array_equal, ens, _state(tmp_path / "ens_host"))


def test_tiny_recipe_reads_iris_as_scikit_learn_does():
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  x, y = datasets.load_iris(return_X_y=True)
  x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
  train, test = tiny_recipe._iris()  # pylint: disable=protected-access
  rows = np.concatenate([np.flatnonzero(y == 0)[:40], np.flatnonzero(y == 1)[:20],
                         np.flatnonzero(y == 2)[:8]])
  np.testing.assert_array_equal(train["x"], x[rows])
  np.testing.assert_array_equal(train["label"], y[rows])
  rest = np.setdiff1d(np.arange(len(y)), rows)
  np.testing.assert_array_equal(test["x"], x[rest])
  np.testing.assert_array_equal(test["label"], y[rest])


def test_first_step_text_compares_each_term_with_its_own_reference():
  from jaxloss.training.loop import first_step_text  # pylint: disable=g-import-not-at-top
  meta = {"initial_reference": 0.6756,
          "initial_reference_text": "the focal loss at uniform logits",
          "terms": [{"name": "focal", "initial_reference": 0.6756,
                     "initial_reference_text": "the focal loss at uniform logits"},
                    {"name": "contrastive", "initial_reference": 3.4012,
                     "initial_reference_text": "the SupCon chance level"}]}
  values = {"loss": 1.5012, "term/focal": 0.6931, "term/contrastive": 3.3866}
  # The weighted total (0.7 · focal + 0.3 · SupCon) is not set beside the focal term's
  # reference, which would read as a first loss 2.2 times too high.
  assert first_step_text(meta, values, "member 1: ") == (
      "first step: member 1: loss 1.5012; focal 0.6931 (at uniform outputs 0.6756: the "
      "focal loss at uniform logits); contrastive 3.3866 (at uniform outputs 3.4012: the "
      "SupCon chance level)")
  one = {"initial_reference": 1.3863, "initial_reference_text": "ln 4",
         "terms": [{"name": "ce", "initial_reference": 1.3863}]}
  assert first_step_text(one, {"loss": 1.3927, "term/ce": 1.3927}) == (
      "first step: loss 1.3927 (at uniform outputs 1.3863: ln 4)")
  assert first_step_text({}, {"loss": 2.0}) is None


def test_eval_repeat_difference_treats_repeated_nan_as_equal():
  from jaxloss.training.loop import _max_diff  # pylint: disable=g-import-not-at-top
  nan, inf = float("nan"), float("inf")
  a = {"probs": np.array([[0.2, nan], [inf, 0.5]]), "ids": np.array([3, 4])}
  # The same outputs twice, NaN and inf included (a diverged model): deterministic.
  assert _max_diff(a, {k: v.copy() for k, v in a.items()}) == 0.0
  b = {"probs": np.array([[0.25, nan], [inf, 0.5]]), "ids": np.array([3, 4])}
  assert _max_diff(a, b) == pytest.approx(0.05)
  # NaN in one evaluation and a number in the other: as different as it gets.
  c = {"probs": np.array([[0.2, 0.1], [inf, 0.5]]), "ids": np.array([3, 4])}
  assert _max_diff(a, c) == inf
  d = {"probs": np.array([[0.2, nan], [-inf, 0.5]]), "ids": np.array([3, 5])}
  assert _max_diff(a, d) == inf


# --- Parameter averaging (config.ema_decay) ----------------------------------------------


def test_ema_follows_its_recurrence_and_skips_nothing_else(tmp_path):
  """Three steps by hand: ema_{t+1} = d_t·ema_t + (1 − d_t)·params_{t+1},
  d_t = min(decay, (1 + t) / (10 + t)), ema_0 = params_0."""
  from jaxloss.parallel import DataParallel
  from jaxloss.training import loop
  decay = 0.2  # below (1 + t)/(10 + t) = 0.1, 0.18, 0.25 from t = 2 on: both branches
  recipe = tiny_recipe.build(_config())
  dp = DataParallel("shard_map", 1)
  step = dp.launch_train_step(loop.step_body(recipe, 1, ema_decay=decay))
  plain = dp.launch_train_step(loop.step_body(recipe, 1))
  data = dp.replicate({k: recipe.train[k] for k in ("x", "label")})
  state = dp.replicate(loop.init_state(recipe, ema=True))
  other = dp.replicate(loop.init_state(recipe))
  expected = jax.device_get(state.params)
  for t in range(3):
    state, _ = step(state, data)
    other, _ = plain(other, data)
    params = jax.device_get(state.params)
    d = min(decay, (1 + t) / (10 + t))
    expected = jax.tree.map(lambda e, p: d * e + (1 - d) * p, expected, params)
    # The average does not change the training itself.
    assert _max_diff(params, jax.device_get(other.params)) == 0
  assert _max_diff(jax.device_get(state.ema_params), expected) < 1e-6
  assert _max_diff(jax.device_get(state.ema_params), jax.device_get(state.params)) > 1e-3
  # A skipped (non-finite) step leaves the average where it was, like the parameters.
  poisoned = dp.replicate({"x": np.full_like(recipe.train["x"], np.nan),
                           "label": recipe.train["label"]})
  before = jax.device_get(state.ema_params)
  state, metrics = step(state, poisoned)
  assert not bool(metrics["finite"])
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.ema_params), before)
  with pytest.raises(ValueError, match="ema_params is None"):
    step(dp.replicate(loop.init_state(recipe)), data)


def test_evaluation_reads_the_average_and_a_resume_keeps_it(tmp_path):
  import dataclasses
  seen = []

  def build(config, workdir=None):
    recipe = tiny_recipe.build(config, workdir)
    return dataclasses.replace(recipe, on_evaluation=lambda *a: seen.append(a[4][0]))

  train_and_evaluate(_config(ema_decay=0.9), str(tmp_path / "a"), build)
  final = _state(tmp_path / "a")
  x = tiny_recipe._iris()[1]["x"]  # pylint: disable=protected-access
  net = tiny_recipe._Net(8, 0.1)  # pylint: disable=protected-access
  from_ema = np.asarray(net.apply({"params": final["ema_params"]}, x))
  from_params = np.asarray(net.apply({"params": final["params"]}, x))
  np.testing.assert_allclose(seen[-1]["logits"], from_ema, atol=1e-5)
  assert np.max(np.abs(from_ema - from_params)) > 1e-2
  # Interrupted after step 7 and resumed: the same average, to the bit.
  assert train_and_evaluate(_config(ema_decay=0.9, interrupt_at_step=7),
                            str(tmp_path / "b"), tiny_recipe.build) is None
  train_and_evaluate(_config(ema_decay=0.9), str(tmp_path / "b"), tiny_recipe.build)
  jax.tree.map(np.testing.assert_array_equal, final, _state(tmp_path / "b"))
  # Another decay on the same workdir is another run.
  with pytest.raises(ConfigChangedError, match="ema_decay"):
    _run(tmp_path / "b", ema_decay=0.99)
  with pytest.raises(ValueError, match="config.ema_decay must be in"):
    _run(tmp_path / "c", ema_decay=1.0)
