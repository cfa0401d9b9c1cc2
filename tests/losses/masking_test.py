"""Tests for jaxloss.losses.masking, including the -inf NaN regression."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxloss.losses import masked_mean
from jaxloss.losses import softmax_cross_entropy_with_integer_labels
from jaxloss.losses import softmax_focal_loss_with_integer_labels
from jaxloss.losses.masking import large_negative
from jaxloss.losses.masking import mask_invalid_logits
from jaxloss.losses.sequence import sequence_tagging_loss

RNG = np.random.default_rng(0)

# --------------------------------------------------- the joint-NLU tagging case
# Tags: O, B-PER, I-PER, B-LOC, I-LOC. The recipe restricts each token's tags
# to the legal successors of the previous gold tag (I-X only after B-X/I-X)
# and gives padding tokens no legal tag at all.
O, BP, IP, BL, IL = range(5)
C = 5
SENTENCES = [
    [O, BP, IP, O, BL],  # clean
    [BL, IL, O],  # padded to 5
    [O, IP, O, O],  # annotation error: I-PER after O
]
T = 5
TOKEN_MASK = np.zeros((3, T), bool)
LABELS = np.full((3, T), -100, np.int32)
for _b, _tags in enumerate(SENTENCES):
  TOKEN_MASK[_b, :len(_tags)] = True
  LABELS[_b, :len(_tags)] = _tags
# What the recipe feeds the gather at padding tokens.
SAFE_LABELS = np.where(TOKEN_MASK, LABELS, 0)


def _allowed_after(prev):
  allowed = np.ones(C, bool)
  if prev not in (BP, IP):
    allowed[IP] = False
  if prev not in (BL, IL):
    allowed[IL] = False
  return allowed


VALID = np.zeros((3, T, C), bool)
for _b, _tags in enumerate(SENTENCES):
  for _t in range(len(_tags)):
    VALID[_b, _t] = _allowed_after(_tags[_t - 1] if _t else O)
LABEL_VALID = np.take_along_axis(VALID, SAFE_LABELS[..., None], -1)[..., 0]
# Real tokens whose gold tag is legal: where the -inf recipe is well defined.
GOOD = TOKEN_MASK & LABEL_VALID
LOGITS = (RNG.normal(size=(3, T, C)) * 2.0).astype(np.float32)


def test_case_has_the_failing_rows():
  assert not VALID[~TOKEN_MASK].any()  # padding: every tag invalid
  assert (TOKEN_MASK & ~LABEL_VALID).sum() == 1  # the I-PER after O
  assert GOOD.sum() == 11


def select_inf(x):
  return jnp.where(VALID, x, -jnp.inf)  # logits.masked_fill(~valid, -inf)


def additive_inf(x):
  return x + jnp.log(VALID.astype(x.dtype))  # logits + valid.log()


def finite(x):
  return mask_invalid_logits(x, VALID)


def ce_times_mask_mean(z, mask=TOKEN_MASK):
  # The recipe's reduction: (loss * mask).sum() / mask.sum().
  tok = optax.softmax_cross_entropy_with_integer_labels(z, SAFE_LABELS)
  return (tok * mask).sum() / mask.sum()


def focal_masked_mean(z, mask=TOKEN_MASK):
  tok = softmax_focal_loss_with_integer_labels(z, SAFE_LABELS, gamma=2.0)
  return masked_mean(tok, mask)


def _value_and_grad(fill, reduce, mask):
  return jax.jit(jax.value_and_grad(lambda x: reduce(fill(x), mask)))(LOGITS)


def test_regression_minus_inf_gives_nan_loss_or_nan_grad():
  # 1. -inf fill + multiplicative masked mean: the all-invalid padding rows
  #    give NaN token losses, and 0 * NaN = NaN.
  value, _ = _value_and_grad(select_inf, ce_times_mask_mean, TOKEN_MASK)
  assert np.isnan(value)
  value, _ = _value_and_grad(select_inf, ce_times_mask_mean, GOOD)
  assert np.isnan(value)
  # 2. Additive -inf mask, even with a NaN-safe masked mean over the good
  #    tokens only: the value is fine but log_softmax's backward multiplies
  #    the zero cotangent of the padding rows by NaN, and the add passes it on.
  value, grads = _value_and_grad(additive_inf, focal_masked_mean, GOOD)
  assert np.isfinite(value)
  assert np.isnan(grads).any()
  # 3. A real token whose gold tag is invalid: loss inf, and the focal
  #    factor's gradient at log p = -inf is NaN.
  value, grads = _value_and_grad(select_inf, focal_masked_mean, TOKEN_MASK)
  assert np.isinf(value)
  assert np.isnan(grads).any()


@pytest.mark.parametrize("reduce", [ce_times_mask_mean, focal_masked_mean])
@pytest.mark.parametrize("mask", [TOKEN_MASK, GOOD], ids=["tokens", "good"])
def test_finite_fill_gives_finite_loss_and_grads(reduce, mask):
  value, grads = _value_and_grad(finite, reduce, mask)
  assert np.isfinite(value) and np.all(np.isfinite(grads))
  # Invalid tags and padding tokens get exactly zero gradient.
  np.testing.assert_array_equal(np.asarray(grads)[~VALID], 0.0)


@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_finite_fill_matches_minus_inf_where_that_is_finite(gamma):
  def tok_loss(z):
    return softmax_focal_loss_with_integer_labels(z, SAFE_LABELS, gamma=gamma)

  inf_tok = np.asarray(tok_loss(select_inf(LOGITS)))
  fin_tok = np.asarray(tok_loss(finite(LOGITS)))
  assert np.all(np.isfinite(inf_tok[GOOD]))
  assert not np.any(np.isfinite(inf_tok[~GOOD]))
  assert np.all(np.isfinite(fin_tok))
  # Bit-identical: exp(-1e9 - max) and exp(-inf) are both exactly 0.
  np.testing.assert_array_equal(fin_tok[GOOD], inf_tok[GOOD])

  # Gradients: the -inf version restricted to the good tokens (sliced, so it
  # is finite) against the finite fill on the full padded batch.
  def inf_sliced(x):
    z = jnp.where(VALID[GOOD], x[GOOD], -jnp.inf)
    return softmax_focal_loss_with_integer_labels(
        z, SAFE_LABELS[GOOD], gamma=gamma).mean()

  inf_value, inf_grads = jax.jit(jax.value_and_grad(inf_sliced))(LOGITS)
  fin_value, fin_grads = jax.jit(jax.value_and_grad(
      lambda x: masked_mean(tok_loss(finite(x)), GOOD)))(LOGITS)
  np.testing.assert_allclose(fin_value, inf_value, rtol=1e-6)
  np.testing.assert_allclose(fin_grads, inf_grads, rtol=1e-6, atol=1e-8)
  # The finite fill of the bad-label token: a huge but finite loss and a
  # bounded gradient (softmax - one_hot restricted to the valid tags).
  bad = TOKEN_MASK & ~LABEL_VALID
  # -log p = 1e9 + logsumexp of the valid tags; the focal factor is 1.
  assert 1e8 < fin_tok[bad][0] < 2e9
  _, bad_grads = jax.jit(jax.value_and_grad(
      lambda x: masked_mean(tok_loss(finite(x)), bad)))(LOGITS)
  assert np.all(np.isfinite(bad_grads))
  assert np.abs(bad_grads).max() <= 1.0 + 1e-6


def test_with_sequence_tagging_loss():
  # The recommended pipeline: finite fill + per-sequence tagging loss.
  value, grads = jax.jit(jax.value_and_grad(lambda x: sequence_tagging_loss(
      finite(x), LABELS, where=TOKEN_MASK, gamma=2.0).sum()))(LOGITS)
  assert np.isfinite(value) and np.all(np.isfinite(grads))
  # Dropping the bad token with `where` recovers the -inf values exactly.
  got = sequence_tagging_loss(finite(LOGITS), LABELS, where=GOOD, gamma=2.0)
  ref = softmax_focal_loss_with_integer_labels(
      select_inf(LOGITS), SAFE_LABELS, gamma=2.0)
  ref = np.where(GOOD, ref, 0.0).sum(-1) / GOOD.sum(-1)
  np.testing.assert_allclose(got, ref, rtol=1e-6)


# --------------------------------------------------------- dtypes and fills


def test_large_negative_values():
  assert large_negative(jnp.float32) == np.float32(-1e9)
  assert large_negative(np.float64) == -1e9
  assert large_negative("bfloat16") == jnp.bfloat16(-1e9)
  assert large_negative(jnp.float16) == np.float16(-32752.0)
  for dtype in (jnp.float32, jnp.bfloat16, jnp.float16, jnp.float64,
                jnp.float8_e4m3fn, jnp.float8_e5m2):
    fill = large_negative(dtype)
    assert fill.dtype == jnp.dtype(dtype)
    assert np.isfinite(float(fill)) and float(fill) < -100
  # Why float16 is special: -1e9 does not exist there, and the full finfo.min
  # overflows as soon as the row maximum is subtracted.
  with np.errstate(over="ignore"):
    assert np.isneginf(np.float16(-1e9))
    f16_min = jnp.asarray(np.finfo(np.float16).min, jnp.float16)
    assert np.isneginf(f16_min - jnp.float16(100.0))
  assert np.isfinite(jnp.asarray(large_negative(jnp.float16)) -
                     jnp.float16(1000.0))


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_half_precision_fills_stay_finite_and_match_float32(dtype):
  x = jnp.asarray(LOGITS, dtype)
  masked = mask_invalid_logits(x, VALID)
  assert masked.dtype == dtype
  assert np.all(np.isfinite(np.asarray(masked, np.float32)))
  np.testing.assert_array_equal(np.asarray(masked, np.float32)[~VALID],
                                float(large_negative(dtype)))
  # Even in pure half-precision arithmetic (no upcast), the all-invalid rows
  # stay finite and invalid tags get exactly zero probability.
  probs = np.asarray(jax.nn.softmax(masked, axis=-1), np.float32)
  assert np.all(np.isfinite(probs))
  np.testing.assert_array_equal(probs[VALID.any(-1)][~VALID[VALID.any(-1)]],
                                0.0)
  # Through a jaxloss loss (computed in float32, cast back).
  loss, grads = jax.jit(jax.value_and_grad(lambda x: masked_mean(
      softmax_cross_entropy_with_integer_labels(
          mask_invalid_logits(x, VALID), SAFE_LABELS), TOKEN_MASK).astype(
              jnp.float32)))(x)
  assert np.isfinite(loss) and np.all(np.isfinite(np.asarray(grads,
                                                             np.float32)))
  got = softmax_cross_entropy_with_integer_labels(masked, SAFE_LABELS)
  assert got.dtype == dtype
  ref = softmax_cross_entropy_with_integer_labels(
      select_inf(x.astype(jnp.float32)), SAFE_LABELS)
  np.testing.assert_allclose(np.asarray(got, np.float32)[GOOD],
                             np.asarray(ref)[GOOD], rtol=1e-2)


# ------------------------------------------------- values, shapes, tracing


def test_mask_values_broadcasting_and_grads():
  x = RNG.normal(size=(2, 3, 4)).astype(np.float32)
  static = np.array([True, False, True, True])
  got = np.asarray(mask_invalid_logits(x, static))
  np.testing.assert_array_equal(got[..., static], x[..., static])
  np.testing.assert_array_equal(got[..., ~static], np.float32(-1e9))
  per_pos = RNG.random((2, 3, 4)) > 0.5
  got = np.asarray(mask_invalid_logits(x, per_pos.astype(np.int32)))
  np.testing.assert_array_equal(got, np.where(per_pos, x, np.float32(-1e9)))
  assert mask_invalid_logits(x, per_pos[:, :1]).shape == x.shape
  grads = jax.grad(lambda x: (mask_invalid_logits(x, per_pos) * 3.0).sum())(x)
  np.testing.assert_array_equal(grads, np.where(per_pos, 3.0, 0.0))
  # NaN at an invalid position is replaced too.
  x_nan = np.where(per_pos, x, np.nan)
  assert np.all(np.isfinite(mask_invalid_logits(x_nan, per_pos)))


def test_traced_once_under_jit():

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(x, valid):
    return mask_invalid_logits(x, valid)

  for k in range(2):
    valid = RNG.random((3, T, C)) > 0.5
    np.testing.assert_array_equal(
        step(LOGITS + k, valid), np.where(valid, LOGITS + k, np.float32(-1e9)))


def test_errors_name_the_argument():
  with pytest.raises(TypeError, match="valid"):
    mask_invalid_logits(LOGITS, VALID.astype(np.float32))
  with pytest.raises(ValueError, match=r"valid.*\(3, 5, 5\).*\(4,\)"):
    mask_invalid_logits(LOGITS, np.ones(4, bool))
  with pytest.raises(ValueError, match=r"valid.*\(2, 3, 5, 5\)"):
    mask_invalid_logits(LOGITS, np.ones((2, 3, T, C), bool))
  with pytest.raises(ValueError, match=r"valid.*0 and 1.*2"):
    mask_invalid_logits(LOGITS, np.full(C, 2))
  with pytest.raises(TypeError, match="logits"):
    mask_invalid_logits(LABELS, np.ones(T, bool))
  with pytest.raises(TypeError, match="dtype.*int32"):
    large_negative(jnp.int32)
  with pytest.raises(TypeError, match="dtype"):
    large_negative("not a dtype")
