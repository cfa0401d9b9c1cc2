"""Tests for the linear-chain CRF loss and its Viterbi decoder against brute force.

The references enumerate every tag sequence of a short sentence in float64 NumPy: the
partition function, the gold score, the tag marginals (the gradient of the NLL with
respect to the emissions is marginals minus the gold one-hot) and the best sequence.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxloss import decoding
from jaxloss.losses import crf_sequence_loss
from jaxloss.losses import sequence_tagging_loss

NAMES = ["PAD", "O", "B-a", "I-a", "B-b", "I-b"]
C = len(NAMES)
ALLOWED, START_ALLOWED = decoding.bio_transitions(NAMES)
STATIC_VALID = decoding.tag_valid_mask(NAMES)
RNG = np.random.default_rng(0)
B, T = 4, 5
EMISSIONS = (RNG.normal(size=(B, T, C)) * 1.5).astype(np.float32)
TRANSITIONS = RNG.normal(size=(C, C)).astype(np.float32)
START = RNG.normal(size=C).astype(np.float32)
END = RNG.normal(size=C).astype(np.float32)
# Real tokens: a full sentence, a padded one, one with a hole (a masked sub-word) and
# a one-token sentence.
WHERE = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 1, 1, 0], [1, 0, 0, 0, 0]],
                 bool)


def _sequences(n, constrained):
  """All tag sequences of length n (valid ones only when constrained)."""
  for seq in itertools.product(range(C), repeat=n):
    if constrained:
      if not STATIC_VALID[list(seq)].all() or not START_ALLOWED[seq[0]]:
        continue
      if any(not ALLOWED[p, c] for p, c in zip(seq[:-1], seq[1:])):
        continue
    yield seq


def _score(e, seq):
  """s(y) in float64 over the real tokens' emissions e [n, C]."""
  a, b, trans = np.float64(START), np.float64(END), np.float64(TRANSITIONS)
  s = a[seq[0]] + b[seq[-1]] + sum(e[i, y] for i, y in enumerate(seq))
  return s + sum(trans[p, c] for p, c in zip(seq[:-1], seq[1:]))


def _brute(e, gold, constrained):
  """(NLL, marginals [n, C], best sequence) of one sentence's real tokens."""
  e = np.asarray(e, np.float64)
  seqs = list(_sequences(len(gold), constrained))
  scores = np.array([_score(e, s) for s in seqs])
  log_z = np.logaddexp.reduce(scores)
  p = np.exp(scores - log_z)
  marginals = np.zeros(e.shape)
  for prob, s in zip(p, seqs):
    marginals[np.arange(len(s)), list(s)] += prob
  return log_z - _score(e, gold), marginals, seqs[int(np.argmax(scores))]


def _gold(constrained):
  """Gold tags valid under the constraints, -100 at the skipped tokens."""
  rows = [[1, 2, 3, 1, 4], [4, 5, 1, 0, 0], [2, 0, 3, 1, 0], [1, 0, 0, 0, 0]]
  if not constrained:
    rows[0] = [0, 3, 3, 5, 2]  # anything goes, PAD and I-a after PAD included
  labels = np.array(rows, np.int32)
  return np.where(WHERE, labels, -100)


@pytest.mark.parametrize("constrained", [False, True])
def test_loss_and_gradient_equal_brute_force(constrained):
  labels = _gold(constrained)
  masks = (dict(allowed=ALLOWED, start_allowed=START_ALLOWED, static_valid=STATIC_VALID)
           if constrained else {})

  def total(e):
    return crf_sequence_loss(e, labels, where=WHERE, transitions=TRANSITIONS,
                             start_transitions=START, end_transitions=END,
                             per_token=False, **masks)

  loss = total(jnp.asarray(EMISSIONS))
  grads = jax.grad(lambda e: total(e).sum())(jnp.asarray(EMISSIONS))
  for b in range(B):
    real = WHERE[b]
    nll, marginals, _ = _brute(EMISSIONS[b][real], labels[b][real], constrained)
    # float32 forward recursion over <= 5 steps of logsumexp: a few ulps of ~10.
    np.testing.assert_allclose(loss[b], nll, rtol=2e-6, atol=2e-5)
    expected = marginals - np.eye(C)[labels[b][real]]
    np.testing.assert_allclose(grads[b][real], expected, atol=2e-6)
    np.testing.assert_array_equal(grads[b][~real], 0.0)


def test_per_token_divides_by_the_number_of_real_tokens():
  labels = _gold(False)
  kw = dict(where=WHERE, transitions=TRANSITIONS, start_transitions=START)
  summed = crf_sequence_loss(EMISSIONS, labels, per_token=False, **kw)
  mean = crf_sequence_loss(EMISSIONS, labels, **kw)
  np.testing.assert_allclose(mean, summed / WHERE.sum(-1), rtol=1e-6)


def test_zero_transitions_factorise_into_token_cross_entropy():
  labels = _gold(False)
  crf = crf_sequence_loss(EMISSIONS, labels, where=WHERE,
                          transitions=np.zeros((C, C), np.float32))
  ce = sequence_tagging_loss(EMISSIONS, labels, where=WHERE)
  np.testing.assert_allclose(crf, ce, rtol=1e-5)


def test_skipped_tokens_equal_slicing_them_out_even_as_nan():
  labels = _gold(True)
  garbage = np.where(WHERE[..., None], EMISSIONS, np.nan).astype(np.float32)
  kw = dict(transitions=TRANSITIONS, start_transitions=START, end_transitions=END,
            allowed=ALLOWED, start_allowed=START_ALLOWED, static_valid=STATIC_VALID)
  masked = crf_sequence_loss(garbage, labels, where=WHERE, **kw)
  for b in range(B):
    real = WHERE[b]
    alone = crf_sequence_loss(EMISSIONS[b][real][None], labels[b][real][None],
                              where=np.ones((1, real.sum()), bool), **kw)
    np.testing.assert_allclose(masked[b], alone[0], rtol=1e-6)


def test_transition_gradient_counts_expected_minus_gold_transitions():
  # d NLL / d A[p, c] = E[#(p -> c)] - #(p -> c in gold): check on one full sentence.
  labels = _gold(False)[:1]
  e = EMISSIONS[:1]
  grad = jax.grad(lambda a: crf_sequence_loss(
      e, labels, where=WHERE[:1], transitions=a, per_token=False).sum())(
          jnp.asarray(TRANSITIONS))
  e64, a64 = np.float64(e), np.float64(TRANSITIONS)
  scores, seqs = [], list(_sequences(T, False))
  for s in seqs:
    scores.append(sum(e64[0, i, y] for i, y in enumerate(s))
                  + sum(a64[p, c] for p, c in zip(s[:-1], s[1:])))
  p = np.exp(np.array(scores) - np.logaddexp.reduce(scores))
  expected = np.zeros((C, C))
  for prob, s in zip(p, seqs):
    for a, b in zip(s[:-1], s[1:]):
      expected[a, b] += prob
  gold = labels[0]
  for a, b in zip(gold[:-1], gold[1:]):
    expected[a, b] -= 1.0
  np.testing.assert_allclose(grad, expected, atol=2e-6)


def test_a_gold_sequence_the_constraints_forbid_raises():
  labels = np.array([[1, 3, 1]], np.int32)  # I-a after O
  kw = dict(where=np.ones((1, 3), bool), transitions=np.zeros((C, C), np.float32))
  with pytest.raises(ValueError, match=r"`labels` of sequence 0 have tag 3 after 1"):
    crf_sequence_loss(EMISSIONS[:1, :3], labels, allowed=ALLOWED, **kw)
  with pytest.raises(ValueError, match="start with tag 3"):
    crf_sequence_loss(EMISSIONS[:1, :3], np.array([[3, 3, 1]], np.int32),
                      start_allowed=START_ALLOWED, **kw)
  with pytest.raises(ValueError, match="static_valid"):
    crf_sequence_loss(EMISSIONS[:1, :3], np.array([[1, 0, 1]], np.int32),
                      static_valid=STATIC_VALID, **kw)
  with pytest.raises(ValueError, match="transitions"):
    crf_sequence_loss(EMISSIONS[:1, :3], np.array([[1, 1, 1]], np.int32),
                      where=np.ones((1, 3), bool), transitions=np.zeros((C, C + 1)))
  with pytest.raises(TypeError, match="allowed"):
    crf_sequence_loss(EMISSIONS[:1, :3], np.array([[1, 1, 1]], np.int32),
                      allowed=ALLOWED.astype(np.int32), **kw)


@pytest.mark.parametrize("constrained", [False, True])
def test_crf_decode_equals_brute_force_argmax(constrained):
  masks = (dict(allowed=ALLOWED, start_allowed=START_ALLOWED, static_valid=STATIC_VALID)
           if constrained else {})
  rng = np.random.default_rng(1)
  emissions = (rng.normal(size=(8, T, C)) * 2).astype(np.float32)
  lengths = np.array([5, 4, 3, 1, 2, 5, 0, 4], np.int32)
  garbage = np.where(np.arange(T)[None, :, None] < lengths[:, None, None], emissions,
                     np.nan).astype(np.float32)
  path = np.asarray(jax.jit(lambda e, n: decoding.crf_decode(
      e, n, transitions=TRANSITIONS, start_transitions=START, end_transitions=END,
      **masks))(garbage, lengths))
  for b, n in enumerate(lengths):
    np.testing.assert_array_equal(path[b, n:], 0)
    if n:
      _, _, best = _brute(emissions[b, :n], [1] * n, constrained)
      np.testing.assert_array_equal(path[b, :n], best)


def test_crf_decode_with_zero_transitions_is_the_token_argmax():
  lengths = np.full((B,), T, np.int32)
  path = decoding.crf_decode(EMISSIONS, lengths, transitions=np.zeros((C, C)))
  np.testing.assert_array_equal(path, EMISSIONS.argmax(-1))


def test_crf_decode_errors_name_the_argument():
  with pytest.raises(ValueError, match="lengths"):
    decoding.crf_decode(EMISSIONS, np.array([6, 1, 1, 1]), transitions=TRANSITIONS)
  with pytest.raises(ValueError, match="emissions"):
    decoding.crf_decode(EMISSIONS[0], np.array([5]), transitions=TRANSITIONS)
  with pytest.raises(TypeError, match="lengths"):
    decoding.crf_decode(EMISSIONS, np.ones(B, np.float32), transitions=TRANSITIONS)
