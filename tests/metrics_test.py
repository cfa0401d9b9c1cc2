"""Metrics against scikit-learn, and evaluation that counts every example once."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import metrics as skm

from jaxloss import metrics
from jaxloss.models import SmallCNN
from jaxloss.parallel import DATA_AXIS, DataParallel, pad_to_multiple
from jaxloss.train_state import TrainState
from jaxloss.train_step import make_eval_step, make_optimizer


def _random_predictions(seed, n=500, c=6):
  rng = np.random.default_rng(seed)
  y = rng.integers(0, c, n)
  p = np.where(rng.random(n) < 0.6, y, rng.integers(0, c, n))
  return y, p, skm.confusion_matrix(y, p, labels=range(c))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_sklearn(seed):
  y, p, cm = _random_predictions(seed)
  np.testing.assert_allclose(metrics.per_class_recall(cm),
                             skm.recall_score(y, p, average=None))
  assert metrics.uar(cm) == pytest.approx(skm.balanced_accuracy_score(y, p))
  assert metrics.war(cm) == pytest.approx(skm.accuracy_score(y, p))
  assert metrics.accuracy(cm) == pytest.approx(skm.accuracy_score(y, p))
  assert metrics.macro_f1(cm) == pytest.approx(skm.f1_score(y, p, average="macro"))
  # WAR weighted by another distribution = accuracy on a test set resampled to it.
  w = np.arange(1, 7, dtype=float)
  sample_weight = w[y] / np.bincount(y, minlength=6)[y]
  assert metrics.war(cm, w) == pytest.approx(
      skm.accuracy_score(y, p, sample_weight=sample_weight))


def test_class_without_support_is_left_out():
  cm = np.array([[5, 0, 0], [0, 0, 0], [1, 0, 3]])
  r = metrics.per_class_recall(cm)
  assert np.isnan(r[1])
  assert metrics.uar(cm) == pytest.approx((1 + 0.75) / 2)
  report = metrics.classification_report(cm)
  assert report["per_class_recall"][1] is None


@pytest.mark.parametrize("bad,match", [
    (np.ones((2, 3)), "square"), (-np.eye(2), "non-negative"),
])
def test_bad_confusion_raises(bad, match):
  with pytest.raises(ValueError, match=match):
    metrics.per_class_recall(bad)
  with pytest.raises(ValueError, match="class_weights"):
    metrics.war(np.eye(3), [1, 2])


@pytest.mark.parametrize("kind,num_devices", [("shard_map", 8), ("pmap", 8),
                                              ("shard_map", 1)])
def test_eval_pads_and_counts_every_example_once(digits, kind, num_devices):
  test = digits["test"]
  n = 203  # not a multiple of the devices or the batch: padding is exercised
  images, labels = test["image"][:n], test["label"][:n]
  model = SmallCNN(10, widths=(8, 16), axis_name=DATA_AXIS)
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)), train=False)
  state = TrainState.create(apply_fn=model.apply, params=variables["params"],
                            tx=make_optimizer(learning_rate=0.1),
                            rng=jax.random.PRNGKey(0),
                            model_state={"batch_stats": variables["batch_stats"]})
  dp = DataParallel(kind, num_devices)
  eval_fn = dp.launch_eval_step(make_eval_step(10))
  padded = pad_to_multiple({"image": images, "label": labels}, 64)
  total = None
  for i in range(0, len(padded["mask"]), 64):
    out = eval_fn(dp.replicate(state), dp.shard_batch(
        {k: v[i:i + 64] for k, v in padded.items()}))
    total = out if total is None else jax.tree.map(jnp.add, total, out)
  total = jax.device_get(total)
  assert int(total["count"]) == n
  logits = model.apply(variables, images, train=False)
  expected = skm.confusion_matrix(labels, np.argmax(logits, -1), labels=range(10))
  np.testing.assert_array_equal(total["confusion"], expected)
  ce = -np.take_along_axis(np.asarray(jax.nn.log_softmax(logits)), labels[:, None], 1)
  assert float(total["loss_sum"]) == pytest.approx(float(ce.sum()), rel=1e-4)


def test_shot_groups_and_accuracy_by_hand():
  counts = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]  # CIFAR-10-LT, ρ = 100
  assert metrics.shot_groups(counts) == {"many": [0, 1, 2, 3], "medium": [4, 5, 6],
                                         "few": [7, 8, 9]}
  rng = np.random.default_rng(0)
  confusion = rng.integers(0, 20, (10, 10)).astype(float)
  out = metrics.shot_accuracy(confusion, counts)
  for name, classes in (("many", [0, 1, 2, 3]), ("medium", [4, 5, 6]), ("few", [7, 8, 9])):
    correct = sum(confusion[c, c] for c in classes)
    total = sum(confusion[c].sum() for c in classes)
    assert out[f"{name}_shot"] == pytest.approx(correct / total)
  # Boundaries: 1000 and 200 themselves are medium.
  assert metrics.shot_groups([1001, 1000, 200, 199]) == {"many": [0], "medium": [1, 2],
                                                         "few": [3]}
  assert metrics.shot_accuracy(np.eye(2), [10, 5])["many_shot"] is None
  with pytest.raises(ValueError, match="confusion must be"):
    metrics.shot_accuracy(np.eye(3), [10, 5])
  with pytest.raises(ValueError, match="few"):
    metrics.shot_groups([10, 5], many=100, few=200)
