"""The train step: one trace across all stages, non-finite skipping, 1 vs 8 devices with
both launchers, optimizer and loss factories."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxloss import curriculum as curriculum_lib
from jaxloss.data import augment
from jaxloss.models import SmallCNN
from jaxloss import parallel
from jaxloss.parallel import DATA_AXIS, DataParallel
from jaxloss.train_state import TrainState
from experiments.configs.runtime import CONV_CPU_COMPILER_OPTIONS
from experiments.imbalance.objective import make_imbalance_loss
from jaxloss.train_step import make_optimizer, make_train_step

BATCH = 32


def _setup(digits, *, kind="shard_map", num_devices=1, num_epochs=10, steps_per_epoch=2,
           images=None, max_traces=None, cpu_compiler_options=None):
  counts = np.asarray(digits["class_counts"])
  train = digits["train"]
  cc = curriculum_lib.four_stage(num_epochs=num_epochs, learning_rate=0.05).compile(
      steps_per_epoch)
  model = SmallCNN(10, widths=(8, 16), axis_name=DATA_AXIS)
  tx = make_optimizer("sgd", learning_rate=0.05, weight_decay=5e-4, max_grad_norm=5.0)
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)), train=False)
  state = TrainState.create(
      apply_fn=model.apply, params=variables["params"], tx=tx,
      rng=jax.random.PRNGKey(1), model_state={"batch_stats": variables["batch_stats"]})
  body = make_train_step(curriculum=cc, loss_fn=make_imbalance_loss(counts),
                         global_batch_size=BATCH, num_devices=num_devices,
                         class_counts=counts, augment_fn=augment.augment_batch,
                         max_grad_norm=5.0)
  if max_traces:
    body = chex.assert_max_traces(body, n=max_traces)
  dp = DataParallel(kind, num_devices, cpu_compiler_options=cpu_compiler_options)
  data = {"image": train["image"] if images is None else images,
          "label": train["label"]}
  return dp, dp.replicate(state), dp.launch_train_step(body), dp.replicate(data), cc


def _run(dp, state, step_fn, data, n):
  for _ in range(n):
    state, metrics = step_fn(state, data)
  return dp.unreplicate(state), dp.unreplicate(metrics)


def test_one_trace_across_all_four_stages(digits):
  chex.clear_trace_counter()
  dp, state, step_fn, data, cc = _setup(digits, num_epochs=10, steps_per_epoch=2,
                                        max_traces=1)
  assert cc.boundaries == (0, 3, 8, 15)
  stages = []
  for _ in range(20):
    state, metrics = step_fn(state, data)
    stages.append(int(metrics["stage"]))
  assert stages == [0] * 3 + [1] * 5 + [2] * 7 + [3] * 5  # all four stages crossed
  assert int(state.step) == 20 and int(state.curriculum.stage) == 3
  assert step_fn._cache_size() == 1


def test_non_finite_updates_are_skipped_and_counted(digits):
  images = np.array(digits["train"]["image"])
  images[:] = np.nan  # every batch poisons the loss and the gradients
  dp, state0, step_fn, data, _ = _setup(digits, images=images)
  params0 = jax.device_get(dp.unreplicate(state0).params)
  state, metrics = _run(dp, state0, step_fn, data, 5)
  assert int(state.step) == 5 and int(state.skipped_steps) == 5
  assert not bool(metrics["finite"])
  assert float(state.train_sums["skipped"]) == 5.0
  chex.assert_trees_all_equal(jax.device_get(state.params), params0)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(jax.device_get(state)))


def test_finite_steps_update_and_report(digits):
  dp, state0, step_fn, data, _ = _setup(digits)
  params0 = jax.device_get(dp.unreplicate(state0).params)
  state, metrics = _run(dp, state0, step_fn, data, 3)
  assert int(state.skipped_steps) == 0 and bool(metrics["finite"])
  assert float(metrics["grad_norm"]) > 0
  diff = jax.tree.map(lambda a, b: np.abs(a - b).max(), jax.device_get(state.params),
                      params0)
  assert max(jax.tree.leaves(diff)) > 0
  # The first loss of an untrained 10-class model is near ln 10.
  assert float(state.train_sums["loss"]) / 3 == pytest.approx(np.log(10), rel=0.25)


@pytest.mark.parametrize("kind", ["shard_map", "pmap"])
def test_one_vs_eight_devices_same_parameters(digits, kind):
  assert jax.device_count() >= 8, "conftest.py sets 8 simulated CPU devices"
  reference = None
  results = {}
  for n in (1, 8):
    dp, state, step_fn, data, _ = _setup(digits, kind=kind, num_devices=n,
                                         num_epochs=10, steps_per_epoch=2)
    state, _ = _run(dp, state, step_fn, data, 20)  # crosses all four stages
    results[n] = jax.device_get((state.params, state.model_state))
  reference = results[1]
  chex.assert_trees_all_close(results[8], reference, atol=1e-6, rtol=1e-6)


def test_launchers_agree(digits):
  out = {}
  for kind in ("shard_map", "pmap"):
    dp, state, step_fn, data, _ = _setup(digits, kind=kind, num_devices=2)
    state, _ = _run(dp, state, step_fn, data, 5)
    out[kind] = jax.device_get(state.params)
  chex.assert_trees_all_close(out["shard_map"], out["pmap"], atol=1e-6, rtol=1e-6)


def test_image_recipes_xla_options_compile_the_same_step(digits):
  # The option the image recipes set changes how XLA:CPU compiles the step, not what
  # it computes: the same parameters, batch statistics and metrics as with the MLIR
  # fusion emitters (named explicitly: the suite's XLA_FLAGS turn them off, and a
  # program's options override XLA_FLAGS). At XLA's default optimisation level the two
  # agree to the bit (docs/bench_compile.md); the suite compiles at level 0, where
  # they are two programs that agree to float32 rounding (4e-9 after 5 steps).
  out = {}
  for options in ({"xla_cpu_use_fusion_emitters": True}, CONV_CPU_COMPILER_OPTIONS):
    dp, state, step_fn, data, _ = _setup(digits, num_devices=2,
                                         cpu_compiler_options=options)
    assert dp._jit_options == {"compiler_options": options}  # pylint: disable=protected-access
    state, metrics = _run(dp, state, step_fn, data, 5)
    out[options["xla_cpu_use_fusion_emitters"]] = jax.device_get(
        (state.params, state.model_state, metrics))
  chex.assert_trees_all_close(out[True], out[False], atol=1e-6, rtol=1e-6)


def test_launched_steps_hand_the_options_to_xla(monkeypatch):
  # Unfiltered, an option XLA does not know fails the launched step's compilation:
  # the options reach XLA. Filtered (the default), it is dropped with a warning.
  monkeypatch.setattr(parallel, "known_compiler_options", dict)
  dp = DataParallel(num_devices=2, cpu_compiler_options={"xla_no_such_option": True})
  step = dp.launch_eval_step(lambda state, batch: jax.lax.psum(jnp.sum(batch), DATA_AXIS))
  with pytest.raises(Exception, match="xla_no_such_option"):
    step(dp.replicate(jnp.float32(0)), dp.shard_batch(np.ones(4, np.float32)))
  monkeypatch.undo()
  parallel.known_compiler_options.cache_clear()
  with pytest.warns(RuntimeWarning, match="xla_no_such_option.*XLA's defaults"):
    dp = DataParallel(num_devices=2, cpu_compiler_options={"xla_no_such_option": True})
  step = dp.launch_eval_step(lambda state, batch: jax.lax.psum(jnp.sum(batch), DATA_AXIS))
  assert float(step(dp.replicate(jnp.float32(0)), dp.shard_batch(np.ones(4, np.float32)))) == 4
  # pmap takes no options.
  assert DataParallel("pmap", 2, cpu_compiler_options=CONV_CPU_COMPILER_OPTIONS
                      )._jit_options == {}  # pylint: disable=protected-access


def test_bad_batch_and_missing_knobs_raise(digits):
  counts = digits["class_counts"]
  cc = curriculum_lib.four_stage(num_epochs=10, learning_rate=0.1).compile(1)
  with pytest.raises(ValueError, match="batch_size must be divisible"):
    make_train_step(curriculum=cc, loss_fn=make_imbalance_loss(counts),
                    global_batch_size=30, num_devices=8, class_counts=counts)
  bare = curriculum_lib.constant(tau=0.0).compile(1)
  with pytest.raises(ValueError, match="missing knobs"):
    make_train_step(curriculum=bare, loss_fn=make_imbalance_loss(counts),
                    global_batch_size=8, num_devices=1, class_counts=counts)


@pytest.mark.parametrize("kwargs,match", [
    ({"name": "rmsprop", "learning_rate": 0.1}, "optimizer must be one of"),
    ({"learning_rate": 0.0}, "learning_rate must be > 0"),
    ({"learning_rate": 0.1, "max_grad_norm": -1.0}, "max_grad_norm"),
])
def test_make_optimizer_errors(kwargs, match):
  with pytest.raises(ValueError, match=match):
    make_optimizer(**kwargs)


def test_imbalance_loss_reduces_to_cross_entropy_for_erm_knobs():
  counts = np.array([50, 10, 2])
  loss_fn = make_imbalance_loss(counts)
  logits = jax.random.normal(jax.random.PRNGKey(0), (6, 3))
  labels = jnp.array([0, 1, 2, 0, 1, 2])
  per_example, weight, _ = loss_fn(logits, labels,
                                {"class_weight_cap": jnp.float32(1.0), "tau": 0.0})
  ref = -np.take_along_axis(np.asarray(jax.nn.log_softmax(logits)),
                            np.asarray(labels)[:, None], 1)[:, 0]
  np.testing.assert_allclose(per_example, ref, rtol=1e-5)
  np.testing.assert_array_equal(weight, np.ones(6))
  # Four-stage knobs: weights min(n_max / n_c, cap), logits shifted by tau * log prior.
  per_example, weight, _ = loss_fn(logits, labels,
                                {"class_weight_cap": jnp.float32(10.0), "tau": 1.0})
  np.testing.assert_allclose(weight, [1, 5, 10, 1, 5, 10], rtol=1e-6)
  adjusted = np.asarray(logits) + np.log(counts / counts.sum())
  ref = -np.take_along_axis(np.asarray(jax.nn.log_softmax(adjusted)),
                            np.asarray(labels)[:, None], 1)[:, 0]
  np.testing.assert_allclose(per_example, ref, rtol=1e-5)


def test_imbalance_loss_rejects_bad_inputs():
  with pytest.raises(ValueError, match="class_counts"):
    make_imbalance_loss(np.array([5, -1, 3]))
  with pytest.raises(ValueError, match="loss must be"):
    make_imbalance_loss(np.array([5, 1]), loss="hinge")


def test_imbalance_loss_ldam_against_numpy():
  counts = np.array([400, 25, 1])
  loss_fn = make_imbalance_loss(counts, loss="ldam", ldam_max_margin=0.5, ldam_scale=30.0,
                                weight_method="effective_number", beta=0.9999)
  cosine = np.tanh(np.asarray(jax.random.normal(jax.random.PRNGKey(1), (6, 3))))
  labels = np.array([0, 1, 2, 0, 1, 2])
  per_example, weight, _ = loss_fn(jnp.asarray(cosine), jnp.asarray(labels),
                                   {"class_weight_cap": jnp.float32(1.0), "tau": 0.0})
  margins = 0.5 * (counts.min() / counts) ** 0.25  # Cao et al., eq. 13
  z = cosine.astype(np.float64)
  z[np.arange(6), labels] -= margins[labels]
  z = 30.0 * z
  ref = -(z[np.arange(6), labels] - np.log(np.exp(z).sum(-1)))
  np.testing.assert_allclose(per_example, ref, rtol=1e-5, atol=2e-6)
  np.testing.assert_array_equal(weight, np.ones(6))  # cap 1: before DRW
  # After DRW (cap uncapped): effective-number weights relative to the head.
  _, weight, _ = loss_fn(jnp.asarray(cosine), jnp.asarray(labels),
                         {"class_weight_cap": jnp.float32(1e6), "tau": 0.0})
  w = (1 - 0.9999) / (1 - 0.9999 ** counts)
  np.testing.assert_allclose(weight, (w / w[0])[labels], rtol=1e-4)
  with pytest.raises(ValueError, match="ldam_scale"):
    make_imbalance_loss(counts, loss="ldam", ldam_scale=0.0)


def test_make_optimizer_plain_momentum():
  params = {"w": jnp.ones(3)}
  grads = {"w": jnp.full(3, 0.5)}
  for nesterov, expected in ((False, 1 - 0.1 * 0.5), (True, 1 - 0.1 * 0.5 * 1.9)):
    tx = make_optimizer("sgd", learning_rate=0.1, momentum=0.9, nesterov=nesterov)
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(params["w"] + updates["w"], expected, rtol=1e-6)
