"""Checked mode (``jaxloss.losses.checked``): the value checks a loss makes on concrete
arrays, made under ``jax.jit`` through ``checkify``, naming the argument."""

import jax
from jax.experimental import checkify
import jax.numpy as jnp
import numpy as np
import pytest

import jaxloss
from jaxloss import losses

LOGITS = np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32)
LABELS = np.array([0, 4, 2, 1], np.int32)


def _mean_ce(logits, labels, where=None):
  return losses.softmax_cross_entropy_with_integer_labels(logits, labels,
                                                          where=where).mean()


def test_unchecked_jit_is_silent_and_checked_names_labels():
  bad = LABELS.copy()
  bad[2] = 7
  # The failure checked mode exists for: under jit a bad label is a silent NaN.
  assert np.isnan(jax.jit(_mean_ce)(LOGITS, bad))
  with pytest.raises(checkify.JaxRuntimeError,
                     match=r"`labels` must be class indices in \[0, 5\).* 1 out-of-range "
                           r"value\(s\), e\.g\. 7"):
    losses.checked(_mean_ce)(LOGITS, bad)
  # Eagerly the loss raises the same sentence as a ValueError.
  with pytest.raises(ValueError, match=r"`labels` must be class indices in \[0, 5\)"):
    _mean_ce(LOGITS, bad)


def test_checked_passes_good_inputs_through_unchanged():
  want = jax.jit(_mean_ce)(LOGITS, LABELS)
  got = jaxloss.checked(_mean_ce)(LOGITS, LABELS)
  np.testing.assert_array_equal(got, want)
  # Gradients too: checked wraps any function of the losses.
  grad = losses.checked(jax.grad(_mean_ce))(LOGITS, LABELS)
  np.testing.assert_array_equal(grad, jax.jit(jax.grad(_mean_ce))(LOGITS, LABELS))


def test_masked_rows_may_hold_padding_labels_and_garbage_logits():
  labels = LABELS.copy()
  labels[3] = -100  # PyTorch's ignore_index, masked out
  logits = LOGITS.copy()
  logits[3] = np.nan
  where = np.array([True, True, True, False])
  value = losses.checked(_mean_ce)(logits, labels, where)
  assert np.isfinite(value)
  # Masked by a traced where (an argument of the jitted function) as well.
  with pytest.raises(checkify.JaxRuntimeError, match="`labels`"):
    losses.checked(_mean_ce)(logits, labels, np.ones(4, bool))


@pytest.mark.parametrize("value, name", [(np.nan, "NaN"), (np.inf, r"\+inf")])
def test_non_finite_logits_are_named(value, name):
  logits = LOGITS.copy()
  logits[1, 3] = value
  with pytest.raises(checkify.JaxRuntimeError, match="`logits` must not be NaN or "
                                                      r"\+inf in an included row"):
    losses.checked(_mean_ce)(logits, LABELS)
  with pytest.raises(ValueError, match=f"`logits` must not be NaN or \\+inf.*"):
    _mean_ce(logits, LABELS)
  del name


def test_minus_inf_masks_classes_and_stays_allowed():
  logits = LOGITS.copy()
  logits[:, 3] = -np.inf  # class 3 is invalid for every row; no label is 3
  value = losses.checked(_mean_ce)(logits, LABELS)
  assert np.isfinite(value)


def test_checked_covers_focal_and_the_tagging_loss():
  bad = LABELS.copy()
  bad[0] = -1
  with pytest.raises(checkify.JaxRuntimeError, match="`labels`"):
    losses.checked(lambda x, y: losses.softmax_focal_loss_with_integer_labels(
        x, y, gamma=2.0).sum())(LOGITS, bad)
  tags = np.array([[1, 2, 9]], np.int32)
  with pytest.raises(checkify.JaxRuntimeError, match=r"`labels`.*e\.g\. 9"):
    losses.checked(lambda x, y: losses.sequence_tagging_loss(
        x, y, where=jnp.ones(y.shape, bool)).sum())(
            np.zeros((1, 3, 4), np.float32), tags)
  # Not jitted: checkify sees concrete values, so the eager check raises first.
  with pytest.raises(ValueError, match="`labels`"):
    losses.checked(_mean_ce, jit=False)(LOGITS, bad)


@pytest.mark.parametrize("call, match", [
    (lambda: losses.softmax_focal_loss_with_integer_labels(
        LOGITS, LABELS, alpha=np.array([-1.0, 1, 1, 1, 1])), "`alpha` must be non-negative"),
    (lambda: losses.softmax_focal_loss(LOGITS, np.eye(5)[LABELS], alpha=-0.5),
     "`alpha` must be non-negative"),
    (lambda: losses.logit_adjusted_softmax_cross_entropy(
        LOGITS, LABELS, class_priors=np.full(5, 0.2), tau=float("nan")),
     "`tau` must be finite; got nan"),
    (lambda: losses.logit_adjust(LOGITS, class_priors=np.full(5, 0.2), tau=np.inf),
     "`tau` must be finite; got inf"),
    (lambda: losses.supervised_contrastive_loss(np.zeros((0, 4), np.float32),
                                                np.zeros((0,), np.int32)),
     r"`embeddings` holds an empty contrast set \(N = 0"),
    (lambda: losses.ntxent_loss(np.zeros((0, 4), np.float32), np.zeros((0, 4), np.float32)),
     "`embeddings_a` holds an empty contrast set"),
])
def test_eager_errors_name_the_argument(call, match):
  with pytest.raises(ValueError, match=match):
    call()
