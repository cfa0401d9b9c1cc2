"""On-device monitor statistics: histograms, non-finite counts, period sums and their
summary, spec validation, and the jitted step's sums against an independent
recomputation (1 and 8 devices)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxloss import curriculum as curriculum_lib
from jaxloss.data.sampler import sample_indices, sampling_probabilities
from jaxloss.monitors import stats
from jaxloss.monitors.stats import (BASE_SUM_KEYS, HeadSpec, MonitorSpec, accumulate,
                                    check_loss_aux, nonfinite_count, period_summary,
                                    predicted_class_counts, zero_sums)
from jaxloss.parallel import DataParallel
from jaxloss.train_state import TrainState
from experiments.imbalance.objective import add_contrastive_term, make_imbalance_loss
from jaxloss.train_step import make_optimizer, make_train_step


# --- predicted_class_counts, nonfinite_count ----------------------------------------

def test_predicted_class_counts_matches_bincount():
  logits = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 5))
  expected = np.bincount(np.asarray(logits).argmax(-1).ravel(), minlength=5)
  got = predicted_class_counts(logits)
  assert got.dtype == jnp.float32 and got.shape == (5,)
  np.testing.assert_array_equal(got, expected)
  assert float(got.sum()) == 6.0


def test_predicted_class_counts_with_where():
  logits = jax.random.normal(jax.random.PRNGKey(1), (2, 3, 5))
  where = np.array([[True, False, True], [False, False, True]])
  pred = np.asarray(logits).argmax(-1)
  expected = np.bincount(pred[where], minlength=5)
  got = predicted_class_counts(logits, where)
  np.testing.assert_array_equal(got, expected)
  assert float(got.sum()) == 3.0  # the three True entries
  # Under jit with a traced mask: the same.
  np.testing.assert_array_equal(jax.jit(predicted_class_counts)(logits, where), expected)


def test_nonfinite_count_over_pytree():
  tree = {"a": jnp.array([1.0, jnp.nan, jnp.inf]),
          "b": {"c": jnp.array([[-jnp.inf, 2.0], [jnp.nan, 0.0]])},
          "d": jnp.arange(3),                   # integers are always finite
          "e": (jnp.zeros((2, 2)), jnp.array(jnp.inf, jnp.float16))}
  got = nonfinite_count(tree)
  assert got.dtype == jnp.float32 and got.shape == ()
  assert float(got) == 5.0  # NaN, +inf | -inf, NaN | f16 +inf
  assert float(nonfinite_count({})) == 0.0
  assert float(nonfinite_count({"x": jnp.ones(4)})) == 0.0


# --- zero_sums, MonitorSpec, HeadSpec -----------------------------------------------

def test_zero_sums_base():
  sums = zero_sums(None)
  assert tuple(sums) == BASE_SUM_KEYS
  assert set(sums) == {"loss", "steps", "grad_norm", "clipped", "skipped"}
  for v in sums.values():
    assert v.shape == () and v.dtype == jnp.float32 and float(v) == 0.0


def test_zero_sums_with_terms_and_tagger():
  spec = MonitorSpec(terms=("focal", "supcon"),
                     heads={"aspect": HeadSpec(4), "tags": HeadSpec(7, o_index=0)})
  sums = zero_sums(spec)
  shapes = {k: v.shape for k, v in sums.items()}
  assert shapes == {
      "loss": (), "steps": (), "grad_norm": (), "clipped": (), "skipped": (),
      "grad_norm_max": (), "nonfinite_grads": (), "term/focal": (), "term/supcon": (),
      "pred/aspect": (4,), "pred/tags": (7,), "tokens/tags": (), "non_o/tags": ()}
  assert all(v.dtype == jnp.float32 and not np.any(v) for v in sums.values())
  # The head without o_index has no token counters.
  assert "tokens/aspect" not in sums and "non_o/aspect" not in sums


def test_monitor_spec_normalises_heads():
  spec = MonitorSpec(terms=["a", "b"], heads={"h": HeadSpec(3)})
  assert spec.terms == ("a", "b")
  assert spec.heads == (("h", HeadSpec(3)),)
  assert spec.head_dict == {"h": HeadSpec(3)}
  hash(spec)  # static argument: must be hashable


@pytest.mark.parametrize("kwargs,error,match", [
    ({"terms": ("a", "a")}, ValueError, r"terms must be unique.*\('a', 'a'\)"),
    ({"terms": ("cls/aux",)}, ValueError, r"term names .*no '/'.*'cls/aux'"),
    ({"terms": ("",)}, ValueError, "term names must be non-empty"),
    ({"heads": {"h": 3}}, TypeError, r"heads\['h'\] must be a HeadSpec, got int"),
])
def test_monitor_spec_errors(kwargs, error, match):
  with pytest.raises(error, match=match):
    MonitorSpec(**kwargs)


@pytest.mark.parametrize("kwargs,match", [
    ({"num_classes": 3, "o_index": 3}, r"o_index must be in \[0, 3\) or None, got 3"),
    ({"num_classes": 3, "o_index": -1}, r"o_index must be in \[0, 3\).*-1"),
    ({"num_classes": 0}, "num_classes must be a positive int, got 0"),
    ({"num_classes": 2.0}, "num_classes must be a positive int, got 2.0"),
])
def test_head_spec_errors(kwargs, match):
  with pytest.raises(ValueError, match=match):
    HeadSpec(**kwargs)


def test_check_loss_aux():
  spec = MonitorSpec(terms=("classification", "contrastive"),
                     heads={"class": HeadSpec(4)})
  good = {"terms": {"classification": jnp.zeros(2), "contrastive": jnp.zeros(2)},
          "heads": {"class": jnp.zeros((2, 4))}}
  check_loss_aux(spec, good)  # no error
  check_loss_aux(spec, {**good, "heads": {"class": (jnp.zeros((2, 4)),
                                                    jnp.ones(2, bool))}})
  with pytest.raises(ValueError, match=r"lacks \['contrastive'\]"):
    check_loss_aux(spec, {**good, "terms": {"classification": jnp.zeros(2)}})
  with pytest.raises(ValueError, match=r"aux\['heads'\] lacks 'class'"):
    check_loss_aux(spec, {**good, "heads": {"other": jnp.zeros((2, 4))}})
  with pytest.raises(ValueError, match=r"head 'class': logits have 5 classes, the "
                     r"monitor spec says num_classes=4"):
    check_loss_aux(spec, {**good, "heads": {"class": jnp.zeros((2, 5))}})
  with pytest.raises(ValueError, match="lacks"):
    check_loss_aux(spec, {})  # a loss function that reports nothing


# --- accumulate ---------------------------------------------------------------------

SPEC = MonitorSpec(terms=("a",), heads={"tags": HeadSpec(3, o_index=0)})


def _step_stats(loss, grad_norm, *, clipped=0.0, skipped=0.0, nonfinite=0.0,
                pred=(1.0, 2.0, 0.0)):
  return {"loss": jnp.float32(loss), "steps": jnp.float32(1.0),
          "grad_norm": jnp.float32(grad_norm), "clipped": jnp.float32(clipped),
          "skipped": jnp.float32(skipped), "grad_norm_max": jnp.float32(grad_norm),
          "nonfinite_grads": jnp.float32(nonfinite), "term/a": jnp.float32(loss / 2),
          "pred/tags": jnp.array(pred, jnp.float32), "tokens/tags": jnp.float32(3.0),
          "non_o/tags": jnp.float32(2.0)}


def test_accumulate_sums_counters_and_max():
  sums = zero_sums(SPEC)
  sums = accumulate(sums, _step_stats(2.0, 3.0, clipped=1.0), jnp.bool_(True))
  sums = accumulate(sums, _step_stats(1.0, 5.0), jnp.bool_(True))
  sums = accumulate(sums, _step_stats(4.0, 2.0), jnp.bool_(True))
  got = jax.device_get(sums)
  assert float(got["loss"]) == 7.0 and float(got["term/a"]) == 3.5
  assert float(got["grad_norm"]) == 10.0
  assert float(got["grad_norm_max"]) == 5.0  # max(3, 5, 2), not the sum
  assert float(got["steps"]) == 3.0 and float(got["clipped"]) == 1.0
  np.testing.assert_array_equal(got["pred/tags"], [3.0, 6.0, 0.0])
  assert float(got["tokens/tags"]) == 9.0 and float(got["non_o/tags"]) == 6.0


def test_accumulate_non_finite_step_adds_only_counters():
  sums = accumulate(zero_sums(SPEC), _step_stats(2.0, 3.0), jnp.bool_(True))
  bad = _step_stats(jnp.nan, jnp.inf, skipped=1.0, nonfinite=17.0,
                    pred=(0.0, 0.0, 8.0))
  bad["term/a"] = jnp.float32(jnp.nan)
  after = jax.device_get(accumulate(sums, bad, jnp.bool_(False)))
  # Counters: steps, skipped, nonfinite_grads (and clipped) always count.
  assert float(after["steps"]) == 2.0 and float(after["skipped"]) == 1.0
  assert float(after["nonfinite_grads"]) == 17.0
  # Values undefined on the skipped step are left as they were (no NaN gets in).
  assert float(after["loss"]) == 2.0 and float(after["term/a"]) == 1.0
  assert float(after["grad_norm"]) == 3.0 and float(after["grad_norm_max"]) == 3.0
  np.testing.assert_array_equal(after["pred/tags"], [1.0, 2.0, 0.0])
  assert float(after["tokens/tags"]) == 3.0 and float(after["non_o/tags"]) == 2.0


def test_accumulate_under_jit_and_unknown_key():
  fn = jax.jit(accumulate)
  got = fn(zero_sums(SPEC), _step_stats(jnp.nan, 1.0, skipped=1.0), jnp.bool_(False))
  assert float(got["loss"]) == 0.0 and float(got["skipped"]) == 1.0
  with pytest.raises(KeyError, match="'term/b' has no slot"):
    accumulate(zero_sums(SPEC), {"term/b": jnp.float32(1.0)}, jnp.bool_(True))


# --- period_summary -----------------------------------------------------------------

def test_period_summary_means_over_finite_steps():
  # 8 steps, 2 skipped: means over the 6 finite steps.
  sums = {"loss": 12.0, "steps": 8.0, "grad_norm": 3.0, "clipped": 4.0, "skipped": 2.0,
          "grad_norm_max": 7.0, "nonfinite_grads": 300.0, "term/a": 6.0,
          "pred/class": np.array([2.0, 6.0, 0.0, 0.0]),
          "pred/tags": np.array([6.0, 3.0, 1.0]), "tokens/tags": 10.0,
          "non_o/tags": 4.0}
  got = period_summary({k: np.float32(v) if np.isscalar(v) else v.astype(np.float32)
                        for k, v in sums.items()})
  assert got == {
      "loss": 2.0,               # 12 / 6
      "grad_norm": 0.5,          # 3 / 6
      "clipped_share": 0.5,      # 4 / 8 (all steps)
      "skipped_steps": 2, "period_steps": 8,
      "grad_norm_max": 7.0, "nonfinite_grads": 300,
      "term/a": 1.0,             # 6 / 6
      "pred_share/class": [0.25, 0.75, 0.0, 0.0],
      "top_share/class": 0.75, "top_class/class": 1,
      "pred_share/tags": [0.6, 0.3, 0.1],
      "top_share/tags": 0.6, "top_class/tags": 0,
      "non_o_share/tags": 0.4,   # 4 / 10
  }
  assert isinstance(got["skipped_steps"], int) and isinstance(got["top_class/class"], int)


def test_period_summary_all_skipped_is_none():
  sums = {k: np.asarray(v, np.float32) for k, v in zero_sums(SPEC).items()}
  sums.update(steps=np.float32(4.0), skipped=np.float32(4.0),
              nonfinite_grads=np.float32(9.0), clipped=np.float32(0.0))
  got = period_summary(sums)
  assert got["loss"] is None and got["grad_norm"] is None
  assert got["grad_norm_max"] is None and got["term/a"] is None
  assert got["pred_share/tags"] is None and got["top_share/tags"] is None
  assert got["top_class/tags"] is None and got["non_o_share/tags"] is None
  assert got["clipped_share"] == 0.0 and got["skipped_steps"] == 4
  assert got["period_steps"] == 4 and got["nonfinite_grads"] == 9


def test_period_summary_base_sums_and_non_finite_values():
  # Monitors off: only the base fields. An infinite loss sum is reported as None.
  sums = {"loss": np.float32(np.inf), "steps": np.float32(2.0),
          "grad_norm": np.float32(4.0), "clipped": np.float32(1.0),
          "skipped": np.float32(0.0)}
  got = period_summary(sums)
  assert got == {"loss": None, "grad_norm": 2.0, "clipped_share": 0.5,
                 "skipped_steps": 0, "period_steps": 2}


def test_period_summary_of_fresh_sums():
  got = period_summary(jax.device_get(zero_sums(None)))
  assert got == {"loss": None, "grad_norm": None, "clipped_share": 0.0,
                 "skipped_steps": 0, "period_steps": 0}


# --- the jitted step ----------------------------------------------------------------

C, N, BATCH, STEPS = 4, 64, 16, 3
LAMBDA_CLS, LAMBDA_CON, TEMPERATURE = 0.8, 0.2, 0.1


class TinyNet(nn.Module):
  """Dense-tanh-Dense, no batch norm or dropout: outputs depend on params and inputs
  only, so they can be recomputed outside the step."""

  @nn.compact
  def __call__(self, x, *, train, dropout=None):
    del train, dropout
    h = nn.tanh(nn.Dense(8)(x.reshape((x.shape[0], -1))))
    return {"logits": nn.Dense(C)(h), "projection": nn.Dense(3)(h)}


def _data():
  rng = np.random.default_rng(0)
  labels = rng.permutation(np.repeat(np.arange(C), [28, 18, 12, 6])).astype(np.int32)
  images = rng.normal(size=(N, 3, 3, 1)).astype(np.float32)
  counts = np.bincount(labels, minlength=C)
  return images, labels, counts


def _tags(logits, labels):
  """A fake tagger head: 2 tokens an example, the second padding for odd labels."""
  tags = jnp.stack([logits, logits[:, ::-1]], axis=1)
  where = jnp.stack([jnp.ones(labels.shape, bool), labels % 2 == 0], axis=1)
  return tags, where


def _loss_fn(counts):
  """CE + SupCon through add_contrastive_term, plus the fake tagger head."""
  combined = add_contrastive_term(make_imbalance_loss(counts),
                                  classification_weight=LAMBDA_CLS,
                                  contrastive_weight=LAMBDA_CON,
                                  temperature=TEMPERATURE)

  def loss_fn(outputs, labels, knobs):
    total, weight, aux = combined(outputs, labels, knobs)
    heads = {**aux["heads"], "tags": _tags(outputs["logits"], labels)}
    return total, weight, {**aux, "heads": heads}

  return loss_fn


SPEC_E2E = MonitorSpec(terms=("classification", "contrastive"),
                       heads={"class": HeadSpec(C), "tags": HeadSpec(C, o_index=0)})
KNOBS = {"learning_rate": 0.05, "sampler_mix": 0.5, "class_weight_cap": 3.0, "tau": 0.5}


def _run_steps(kind, num_devices):
  """STEPS steps on ``num_devices``; returns the final sums, the params before each
  step and each step's metrics."""
  images, labels, counts = _data()
  cc = curriculum_lib.constant(**KNOBS).compile(4)
  model = TinyNet()
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 3, 3, 1)),
                      train=False)["params"]
  state = TrainState.create(apply_fn=model.apply, params=params,
                            tx=make_optimizer("sgd", learning_rate=0.05,
                                              max_grad_norm=1.0),
                            rng=jax.random.PRNGKey(1), train_sums=zero_sums(SPEC_E2E))
  body = make_train_step(curriculum=cc, loss_fn=_loss_fn(counts),
                         global_batch_size=BATCH, num_devices=num_devices,
                         class_counts=counts, max_grad_norm=1.0, monitor=SPEC_E2E)
  dp = DataParallel(kind, num_devices)
  step_fn = dp.launch_train_step(body)
  state = dp.replicate(state)
  data = dp.replicate({"image": images, "label": labels})
  params_before, step_metrics = [], []
  for _ in range(STEPS):
    params_before.append(jax.device_get(dp.unreplicate(state).params))
    state, metrics = step_fn(state, data)
    step_metrics.append(jax.device_get(dp.unreplicate(metrics)))
  sums = jax.device_get(dp.unreplicate(state).train_sums)
  return sums, params_before, step_metrics


def _np_supcon(z, labels, temperature):
  """Khosla et al. L_out per anchor in float64 (anchors without positives: 0)."""
  z = np.asarray(z, np.float64)
  z = z / np.linalg.norm(z, axis=-1, keepdims=True)
  sim = z @ z.T / temperature
  n = len(labels)
  out = np.zeros(n)
  for i in range(n):
    others = [j for j in range(n) if j != i]
    log_denominator = np.log(np.sum(np.exp(sim[i, others])))
    positives = [j for j in others if labels[j] == labels[i]]
    if positives:
      out[i] = -np.mean([sim[i, p] - log_denominator for p in positives])
  return out


def _reference_sums(params_before):
  """The period sums recomputed on the host: the same global batches (the sampler is
  a pure function of the run key folded with the step), the model applied outside the
  step, histograms with numpy."""
  images, labels, counts = _data()
  model = TinyNet()
  cls_fn = make_imbalance_loss(counts)
  knobs = {k: jnp.float32(v) for k, v in KNOBS.items()}
  rng = jnp.asarray(jax.random.PRNGKey(1), jnp.uint32)
  probs = sampling_probabilities(jnp.asarray(labels), jnp.asarray(counts),
                                 knobs["sampler_mix"])
  ref = {"pred/class": np.zeros(C), "pred/tags": np.zeros(C), "tokens/tags": 0.0,
         "non_o/tags": 0.0, "term/classification": 0.0, "term/contrastive": 0.0}
  for step, params in enumerate(params_before):
    k_sample, _ = jax.random.split(jax.random.fold_in(rng, step))
    idx = np.asarray(sample_indices(k_sample, probs, BATCH))
    y = labels[idx]
    out = model.apply({"params": params}, jnp.asarray(images[idx]), train=True)
    logits = np.asarray(out["logits"])
    ref["pred/class"] += np.bincount(logits.argmax(-1), minlength=C)
    tags, where = (np.asarray(a) for a in _tags(out["logits"], jnp.asarray(y)))
    tag_pred = tags.argmax(-1)
    ref["pred/tags"] += np.bincount(tag_pred[where], minlength=C)
    ref["tokens/tags"] += where.sum()
    ref["non_o/tags"] += (where & (tag_pred != 0)).sum()
    cls, w, _ = cls_fn(out["logits"], jnp.asarray(y), knobs)
    cls, w = np.asarray(cls, np.float64), np.asarray(w, np.float64)
    con = _np_supcon(out["projection"], y, TEMPERATURE)
    ref["term/classification"] += np.sum(w * cls) / np.sum(w)
    ref["term/contrastive"] += np.sum(w * con) / np.sum(w)
  return ref


@pytest.fixture(scope="module")
def one_device_run():
  return _run_steps("shard_map", 1)


def test_step_sums_match_independent_recomputation(one_device_run):
  sums, params_before, metrics = one_device_run
  ref = _reference_sums(params_before)
  np.testing.assert_array_equal(sums["pred/class"], ref["pred/class"])
  assert float(sums["pred/class"].sum()) == STEPS * BATCH
  np.testing.assert_array_equal(sums["pred/tags"], ref["pred/tags"])
  assert float(sums["tokens/tags"]) == ref["tokens/tags"]
  assert float(sums["non_o/tags"]) == ref["non_o/tags"]
  for name in ("classification", "contrastive"):
    np.testing.assert_allclose(sums[f"term/{name}"], ref[f"term/{name}"], rtol=1e-5,
                               err_msg=name)
  # The total is the λ-weighted sum of the terms, each weighted like the total.
  np.testing.assert_allclose(
      sums["loss"], LAMBDA_CLS * ref["term/classification"]
      + LAMBDA_CON * ref["term/contrastive"], rtol=1e-5)
  # Per-step term metrics add up to the sums.
  for name in ("classification", "contrastive"):
    np.testing.assert_allclose(sum(float(m[f"term/{name}"]) for m in metrics),
                               sums[f"term/{name}"], rtol=1e-6)
  norms = np.array([float(m["grad_norm"]) for m in metrics])
  assert float(sums["steps"]) == STEPS and float(sums["skipped"]) == 0.0
  np.testing.assert_allclose(sums["grad_norm"], norms.sum(), rtol=1e-6)
  np.testing.assert_allclose(sums["grad_norm_max"], norms.max(), rtol=1e-6)
  assert float(sums["clipped"]) == float(np.sum(norms > 1.0))
  assert float(sums["nonfinite_grads"]) == 0.0


@pytest.mark.parametrize("kind", ["shard_map", "pmap"])
def test_step_sums_one_vs_eight_devices(one_device_run, kind):
  # SupCon's contrast set is the global batch (all-gathered), so 8 devices with 2
  # examples each compute the same sums as 1 device with 16.
  assert jax.device_count() >= 8, "conftest.py sets 8 simulated CPU devices"
  sums1 = one_device_run[0]
  sums8 = _run_steps(kind, 8)[0]
  assert set(sums1) == set(sums8) == set(zero_sums(SPEC_E2E))
  for key in sums1:
    np.testing.assert_allclose(sums8[key], sums1[key], rtol=1e-6, atol=1e-6,
                               err_msg=key)


def test_step_summary_is_json_ready(one_device_run):
  summary = period_summary(one_device_run[0])
  assert summary["period_steps"] == STEPS and summary["skipped_steps"] == 0
  assert sum(summary["pred_share/class"]) == pytest.approx(1.0)
  assert summary["top_share/class"] == max(summary["pred_share/class"])
  assert 0.0 <= summary["non_o_share/tags"] <= 1.0
  assert summary["term/contrastive"] == pytest.approx(
      float(one_device_run[0]["term/contrastive"]) / STEPS)
  assert all(isinstance(v, (int, float, list, type(None))) for v in summary.values())
  assert stats.BASE_SUM_KEYS == BASE_SUM_KEYS
