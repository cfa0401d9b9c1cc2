"""BIO constraints and constrained decoding (jaxloss.decoding).

The Viterbi decoder is checked against a brute-force search over every tag sequence;
the constraint matrices against hand-written ones.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxloss import decoding

# PAD and UNK are specials (never valid); O, B-a, I-a, B-b, I-b the real tags.
NAMES = ["PAD", "UNK", "O", "B-a", "I-a", "B-b", "I-b"]
PAD, UNK, O, BA, IA, BB, IB = range(7)
C = len(NAMES)
ALLOWED, START = decoding.bio_transitions(NAMES)
STATIC = decoding.tag_valid_mask(NAMES)


# ----------------------------------------------------------------- bio_transitions


def test_bio_transitions_by_hand():
  # Columns: PAD UNK O B-a I-a B-b I-b. O and B-* (columns 2, 3, 5) after anything;
  # I-a (4) only after B-a / I-a, I-b (6) only after B-b / I-b; specials never.
  expected = np.array([
      # PAD UNK O  B-a I-a B-b I-b
      [0, 0, 1, 1, 0, 1, 0],  # after PAD: as after O
      [0, 0, 1, 1, 0, 1, 0],  # after UNK: as after O
      [0, 0, 1, 1, 0, 1, 0],  # after O
      [0, 0, 1, 1, 1, 1, 0],  # after B-a
      [0, 0, 1, 1, 1, 1, 0],  # after I-a
      [0, 0, 1, 1, 0, 1, 1],  # after B-b
      [0, 0, 1, 1, 0, 1, 1],  # after I-b
  ], bool)
  np.testing.assert_array_equal(ALLOWED, expected)
  np.testing.assert_array_equal(START, [0, 0, 1, 1, 0, 1, 0])
  assert ALLOWED.dtype == bool and START.dtype == bool


def test_bio_transitions_types_with_dashes_and_other_specials():
  names = ["[CLS]", "O", "B-object-type", "I-object-type", "I-object"]
  allowed, start = decoding.bio_transitions(names)
  # I-object-type continues B-object-type; I-object has no B- and follows only itself.
  assert allowed[2, 3] and allowed[3, 3] and not allowed[2, 4]
  assert allowed[4, 4] and not allowed[0, 4]
  np.testing.assert_array_equal(start, [0, 1, 1, 0, 0])
  assert not allowed[:, 0].any()  # [CLS] is special


@pytest.mark.parametrize("bad", ["I-", "B-", "B- ", "X-foo", "E-loc", "S-loc", "B",
                                 "I", "b-loc"])
def test_malformed_tags_raise_naming_them(bad):
  with pytest.raises(ValueError, match=repr(bad).replace("[", r"\[")):
    decoding.bio_transitions(["PAD", "O", bad])


def test_repeated_or_empty_vocab_raises():
  with pytest.raises(ValueError, match="distinct"):
    decoding.bio_transitions(["O", "B-a", "O"])
  with pytest.raises(ValueError, match="at least one"):
    decoding.bio_transitions([])
  with pytest.raises(TypeError):
    decoding.bio_transitions("O")


# ------------------------------------------------------------------ tag_valid_mask


def test_tag_valid_mask():
  np.testing.assert_array_equal(STATIC, [0, 0, 1, 1, 1, 1, 1])
  # I-b never seen in training (b is a one-token slot type): masked; PAD/UNK counts are
  # irrelevant, they stay invalid.
  counts = np.array([10, 3, 500, 40, 25, 12, 0])
  np.testing.assert_array_equal(decoding.tag_valid_mask(NAMES, counts),
                                [0, 0, 1, 1, 1, 1, 0])
  np.testing.assert_array_equal(
      decoding.tag_valid_mask(NAMES, {"O": 500, "B-a": 40, "B-b": 12, "I-b": 2}),
      [0, 0, 1, 1, 0, 1, 1])
  with pytest.raises(ValueError, match=r"shape \(7,\)"):
    decoding.tag_valid_mask(NAMES, counts[:-1])
  with pytest.raises(ValueError, match="not in tag_names"):
    decoding.tag_valid_mask(NAMES, {"B-c": 3})
  with pytest.raises(ValueError, match="non-negative"):
    decoding.tag_valid_mask(NAMES, -counts)


# ----------------------------------------------------------- transition_valid_mask


def test_transition_valid_mask_by_hand():
  tags = np.array([[BA, IA, O, BB],  # B-a I-a O B-b
                   [O, BB, -100, -100]])  # O B-b <pad> <pad>
  mask = tags >= 0
  static = decoding.tag_valid_mask(NAMES, np.array([0, 0, 9, 9, 9, 9, 0]))  # no I-b
  got = np.asarray(decoding.transition_valid_mask(tags, mask, ALLOWED, START, static))
  assert got.shape == (2, 4, C) and got.dtype == bool
  # Columns: PAD UNK O B-a I-a B-b I-b.
  start = [0, 0, 1, 1, 0, 1, 0]
  after_a = [0, 0, 1, 1, 1, 1, 0]  # after B-a or I-a
  after_o = [0, 0, 1, 1, 0, 1, 0]
  after_b = [0, 0, 1, 1, 0, 1, 0]  # I-b would follow B-b, but I-b is statically invalid
  np.testing.assert_array_equal(got[0], [start, after_a, after_a, after_o])
  np.testing.assert_array_equal(got[1, :2], [start, after_o])
  assert not got[1, 2:].any()  # padding rows: no valid tag at all
  # Unconstrained: only static validity and padding.
  free = np.asarray(decoding.transition_valid_mask(tags, mask, None, None, static,
                                                   constrained=False))
  np.testing.assert_array_equal(free, mask[..., None] & static)


def test_transition_valid_mask_skips_interior_masked_tokens():
  # B-a <subword> I-a: the subword position is masked out (label ignored); the I-a
  # after it follows the B-a of the previous real token, so it stays valid.
  tags = np.array([[BA, -100, IA, -100]])
  mask = tags >= 0
  got = np.asarray(decoding.transition_valid_mask(tags, mask, ALLOWED, START, STATIC))
  assert got[0, 2, IA]
  assert not got[0, 1].any() and not got[0, 3].any()
  # A leading masked position: the first real token still uses start_allowed.
  tags = np.array([[-100, IA, IA]])
  got = np.asarray(decoding.transition_valid_mask(tags, tags >= 0, ALLOWED, START,
                                                  STATIC))
  assert not got[0, 1, IA] and got[0, 2, IA]


def test_transition_valid_mask_jit_and_errors():
  tags = jnp.array([[O, BA, IA]])
  mask = jnp.ones((1, 3), bool)
  fn = jax.jit(lambda t, m: decoding.transition_valid_mask(t, m, ALLOWED, START, STATIC))
  np.testing.assert_array_equal(
      fn(tags, mask), decoding.transition_valid_mask(tags, mask, ALLOWED, START, STATIC))
  with pytest.raises(ValueError, match=r"must be in \[0, 7\), got 9"):
    decoding.transition_valid_mask(jnp.array([[O, 9]]), jnp.ones((1, 2), bool),
                                   ALLOWED, START, STATIC)
  with pytest.raises(ValueError, match="needs `allowed`"):
    decoding.transition_valid_mask(tags, mask, None, None, STATIC)
  with pytest.raises(ValueError, match="allowed"):
    decoding.transition_valid_mask(tags, mask, ALLOWED[:-1], START, STATIC)
  with pytest.raises(TypeError, match="tags"):
    decoding.transition_valid_mask(tags.astype(float), mask, ALLOWED, START, STATIC)


# ----------------------------------------------------------- constrained_decode


def _valid_sequence(seq, static=STATIC):
  """Independent BIO check on the tag strings (not via ALLOWED)."""
  prev = "O"
  for tag_id in seq:
    name = NAMES[tag_id]
    if not static[tag_id]:
      return False
    if name.startswith("I-") and prev[2:] != name[2:]:
      return False
    prev = name
  return True


def _score(x, seq, static=STATIC):
  """MEMM log-probability of ``seq`` under logits ``x [L, C]`` (float64 NumPy)."""
  total, prev = 0.0, None
  for t, tag_id in enumerate(seq):
    valid = static & (START if prev is None else ALLOWED[prev])
    row = np.where(valid, x[t], -np.inf)
    total += x[t, tag_id] - np.logaddexp.reduce(row[valid])
    prev = tag_id
  return total


def _brute_force(x, length, static=STATIC):
  best, best_seq = -np.inf, None
  for seq in itertools.product(range(C), repeat=length):
    if _valid_sequence(seq, static):
      s = _score(x, seq, static)
      if s > best:
        best, best_seq = s, seq
  return best, best_seq


def _decode(logits, lengths, static=STATIC):
  return np.asarray(decoding.constrained_decode(
      jnp.asarray(logits), jnp.asarray(lengths), allowed=ALLOWED, start_allowed=START,
      static_valid=static))


@pytest.mark.parametrize("static_name", ["all", "no_i_b"])
def test_constrained_decode_matches_brute_force(static_name):
  static = STATIC if static_name == "all" else decoding.tag_valid_mask(
      NAMES, np.array([0, 0, 9, 9, 9, 9, 0]))
  rng = np.random.default_rng(0 if static_name == "all" else 1)
  t_max = 4
  lengths = np.array([1, 2, 3, 4, 4, 4, 3, 2, 1, 4, 4, 4, 0])
  # Scale 2: close calls between valid and invalid paths are common.
  logits = (rng.normal(size=(len(lengths), t_max, C)) * 2.0).astype(np.float32)
  out = _decode(logits, lengths, static)
  assert out.dtype == np.int32 and out.shape == (len(lengths), t_max)
  x64 = logits.astype(np.float64)
  for b, length in enumerate(lengths):
    assert (out[b, length:] == 0).all()
    if length == 0:
      continue
    best, best_seq = _brute_force(x64[b], length, static)
    got = tuple(int(v) for v in out[b, :length])
    assert _valid_sequence(got, static), (b, got)
    assert _score(x64[b], got, static) == pytest.approx(best, abs=1e-5)
    assert got == best_seq, (b, got, best_seq)


def test_decoded_sequences_are_valid_bio():
  rng = np.random.default_rng(2)
  batch, t_max = 64, 12
  logits = (rng.normal(size=(batch, t_max, C)) * 3.0).astype(np.float32)
  # Bias towards I- tags so that greedy decoding produces many invalid sequences.
  logits[..., [IA, IB]] += 1.5
  lengths = rng.integers(0, t_max + 1, batch)
  out = _decode(logits, lengths)
  greedy = np.asarray(decoding.greedy_decode(jnp.asarray(logits), STATIC))
  greedy_invalid = 0
  for b, length in enumerate(lengths):
    assert _valid_sequence(out[b, :length]), out[b, :length]
    greedy_invalid += not _valid_sequence(greedy[b, :length])
  assert greedy_invalid > 10  # the constraint matters on this input


def test_decode_equals_argmax_when_argmax_is_valid():
  # Logits that strongly favour a valid sequence: B-a I-a O B-b I-b I-b O.
  target = [BA, IA, O, BB, IB, IB, O]
  rng = np.random.default_rng(3)
  logits = rng.normal(size=(1, len(target), C)).astype(np.float32)
  logits[0, np.arange(len(target)), target] += 10.0
  out = _decode(logits, [len(target)])
  greedy = np.asarray(decoding.greedy_decode(jnp.asarray(logits), STATIC))
  np.testing.assert_array_equal(out[0], target)
  np.testing.assert_array_equal(out, greedy)


def test_specials_never_decoded():
  # PAD/UNK have by far the largest logits; they are still never chosen.
  logits = np.zeros((2, 3, C), np.float32)
  logits[..., PAD] = 50.0
  logits[..., UNK] = 40.0
  out = _decode(logits, [3, 2])
  assert not np.isin(out[0], [PAD, UNK]).any()
  assert not np.isin(out[1, :2], [PAD, UNK]).any()
  assert out[1, 2] == 0  # past the length: 0 (here the id of PAD)
  greedy = np.asarray(decoding.greedy_decode(jnp.asarray(logits), STATIC))
  assert not np.isin(greedy, [PAD, UNK]).any()


def test_jit_batch_lengths_and_garbage_padding():
  rng = np.random.default_rng(4)
  t_max = 6
  lengths = np.array([6, 1, 4, 0, 3])
  logits = rng.normal(size=(len(lengths), t_max, C)).astype(np.float32)
  for b, length in enumerate(lengths):
    logits[b, length:] = np.nan  # padding garbage must not matter
  fn = jax.jit(lambda x, n: decoding.constrained_decode(
      x, n, allowed=ALLOWED, start_allowed=START, static_valid=STATIC))
  out = np.asarray(fn(jnp.asarray(logits), jnp.asarray(lengths)))
  np.testing.assert_array_equal(out, _decode(logits, lengths))
  for b, length in enumerate(lengths):
    assert (out[b, length:] == 0).all()
    # Each sentence decoded alone (at its own length, no padding) gives the same tags.
    if length:
      alone = _decode(logits[b:b + 1, :length], [length])
      np.testing.assert_array_equal(out[b, :length], alone[0])


def test_constrained_decode_dtypes_and_errors():
  rng = np.random.default_rng(5)
  logits = rng.normal(size=(2, 3, C)).astype(np.float32)
  ref = _decode(logits, [3, 2])
  # bf16 logits are upcast; the decision is the same for well-separated logits.
  sep = logits * 4.0
  np.testing.assert_array_equal(_decode(sep.astype(jnp.bfloat16), [3, 2]),
                                _decode(sep, [3, 2]))
  assert ref.shape == (2, 3)
  # T = 0.
  assert _decode(np.zeros((2, 0, C), np.float32), [0, 0]).shape == (2, 0)
  kw = dict(allowed=ALLOWED, start_allowed=START, static_valid=STATIC)
  with pytest.raises(ValueError, match=r"lengths.*\[0, 3\]"):
    decoding.constrained_decode(logits, jnp.array([4, 1]), **kw)
  with pytest.raises(ValueError, match="lengths"):
    decoding.constrained_decode(logits, jnp.array([3]), **kw)
  with pytest.raises(ValueError, match=r"\[B, T, C\]"):
    decoding.constrained_decode(logits[0], jnp.array([3]), **kw)
  with pytest.raises(TypeError, match="logits"):
    decoding.constrained_decode(logits.astype(np.int32), jnp.array([3, 2]), **kw)
  with pytest.raises(ValueError, match="static_valid"):
    decoding.constrained_decode(logits, jnp.array([3, 2]), allowed=ALLOWED,
                                start_allowed=START, static_valid=STATIC[:-1])
  none_start = np.zeros(C, bool)
  none_start[IA] = True
  with pytest.raises(ValueError, match="no valid sequence"):
    decoding.constrained_decode(logits, jnp.array([3, 2]), allowed=ALLOWED,
                                start_allowed=START, static_valid=none_start)


# ----------------------------------------------------------------- joint_decode

# Label 0 goes with a only, label 1 with b only, label 2 with both, label 3 with none.
LABEL_TAGS = decoding.label_tag_mask(
    [0, 1, 2, 2, 3], [[O, BA, IA], [BB, IB, O], [BA], [BB], [O, O]], NAMES, 4)


def test_label_tag_mask_by_hand_and_errors():
  #                          PAD UNK O B-a I-a B-b I-b
  expected = np.array([[1, 1, 1, 1, 1, 0, 0],
                       [1, 1, 1, 0, 0, 1, 1],
                       [1, 1, 1, 1, 1, 1, 1],
                       [1, 1, 1, 0, 0, 0, 0]], bool)
  np.testing.assert_array_equal(LABEL_TAGS, expected)
  # An I- tag alone (hand-labelled data) allows its type too.
  np.testing.assert_array_equal(
      decoding.label_tag_mask([0], [[IB]], NAMES, 1)[0], [1, 1, 1, 0, 0, 1, 1])
  with pytest.raises(ValueError, match="one label per tag sequence"):
    decoding.label_tag_mask([0, 1], [[O]], NAMES, 2)
  with pytest.raises(ValueError, match=r"labels must be integers in \[0, 2\)"):
    decoding.label_tag_mask([2], [[O]], NAMES, 2)
  with pytest.raises(ValueError, match=r"tag_sequences\[0\]"):
    decoding.label_tag_mask([0], [[C]], NAMES, 2)


def _mask_reference(labels, seqs, num_labels, min_expected):
  """label_tag_mask by its definition, one (label, type) pair at a time."""
  types = {BA: "a", IA: "a", BB: "b", IB: "b"}
  n, out = len(labels), np.ones((num_labels, C), bool)
  for k in range(num_labels):
    n_k = sum(1 for label in labels if label == k)
    for c, t in types.items():
      seen = any(label == k and t in {types.get(x) for x in seq}
                 for label, seq in zip(labels, seqs))
      share = sum(1 for seq in seqs if t in {types.get(x) for x in seq}) / n
      out[k, c] = seen or n_k * share < min_expected
  return out


def test_label_tag_mask_min_expected_forbids_only_on_evidence():
  # Label 0: 10 sentences with an a entity; label 1: 2 with a b; label 2: 10, all O.
  # Shares: a 10/22, b 2/22. Expected counts n_k * q: a with label 1: 0.91, with
  # label 2: 4.55; b with labels 0 and 2: 0.91.
  labels = [0] * 10 + [1] * 2 + [2] * 10
  seqs = [[BA, IA, O]] * 10 + [[O, BB]] * 2 + [[O, O]] * 10
  plain = decoding.label_tag_mask(labels, seqs, NAMES, 3)
  #                                 PAD UNK O B-a I-a B-b I-b
  np.testing.assert_array_equal(plain, [[1, 1, 1, 1, 1, 0, 0],
                                        [1, 1, 1, 0, 0, 1, 1],
                                        [1, 1, 1, 0, 0, 0, 0]])
  at3 = decoding.label_tag_mask(labels, seqs, NAMES, 3, min_expected=3)
  # Only label 2's ten sentences are evidence against a (4.55 >= 3).
  np.testing.assert_array_equal(at3, [[1, 1, 1, 1, 1, 1, 1],
                                      [1, 1, 1, 1, 1, 1, 1],
                                      [1, 1, 1, 0, 0, 1, 1]])
  np.testing.assert_array_equal(
      decoding.label_tag_mask(labels, seqs, NAMES, 3, min_expected=4.6), np.ones((3, C)))
  np.testing.assert_array_equal(
      decoding.label_tag_mask(labels, seqs, NAMES, 3, min_expected=0.9), plain)
  # Random data against the definition, at several thresholds.
  rng = np.random.default_rng(0)
  for _ in range(20):
    n = int(rng.integers(1, 30))
    labels = rng.integers(0, 4, n)
    seqs = [rng.choice([O, BA, IA, BB, IB], int(rng.integers(0, 5))).tolist()
            for _ in range(n)]
    for m in (0.0, 0.5, 1.0, 3.0):
      np.testing.assert_array_equal(
          decoding.label_tag_mask(labels, seqs, NAMES, 4, min_expected=m),
          _mask_reference(labels.tolist(), seqs, 4, m))
  for bad in (-1.0, float("nan"), float("inf")):
    with pytest.raises(ValueError, match="min_expected must be finite and >= 0"):
      decoding.label_tag_mask([0], [[O]], NAMES, 1, min_expected=bad)


def _joint_brute_force(z, x, length, label_tags):
  """argmax over (k, y) of log softmax(z)[k] + MEMM score of y, y within label k."""
  log_p = z - np.logaddexp.reduce(z)
  best, best_pair = -np.inf, None
  for k in range(len(z)):
    for seq in itertools.product(range(C), repeat=length):
      if _valid_sequence(seq) and all(label_tags[k, t] for t in seq):
        s = log_p[k] + _score(x, seq)
        if s > best:
          best, best_pair = s, (k, seq)
  return best, best_pair


def _joint(z, x, lengths, label_tags=LABEL_TAGS, **kw):
  labels, tags = decoding.joint_decode(
      jnp.asarray(z), jnp.asarray(x), jnp.asarray(lengths), label_tags=label_tags,
      allowed=ALLOWED, start_allowed=START, static_valid=STATIC, **kw)
  return np.asarray(labels), np.asarray(tags)


def test_joint_decode_matches_brute_force():
  rng = np.random.default_rng(3)
  t_max, k = 4, LABEL_TAGS.shape[0]
  lengths = np.array([1, 2, 3, 4, 4, 4, 3, 2, 1, 4, 4, 4, 3, 4, 0])
  # Label logits of scale 0.5 against tag logits of scale 2: the tags often overturn
  # the likelier label, the case the search exists for.
  z = (rng.normal(size=(len(lengths), k)) * 0.5).astype(np.float32)
  x = (rng.normal(size=(len(lengths), t_max, C)) * 2.0).astype(np.float32)
  labels, tags = _joint(z, x, lengths, num_candidates=k)
  assert labels.dtype == np.int32 and labels.shape == (len(lengths),)
  assert tags.dtype == np.int32 and tags.shape == (len(lengths), t_max)
  overturned = 0
  for b, length in enumerate(lengths):
    assert (tags[b, length:] == 0).all()
    if length == 0:  # no tags: the likelier label
      assert labels[b] == np.argmax(z[b])
      continue
    best, (best_k, best_seq) = _joint_brute_force(
        z[b].astype(np.float64), x[b].astype(np.float64), length, LABEL_TAGS)
    got = tuple(int(v) for v in tags[b, :length])
    assert (labels[b], got) == (best_k, best_seq), (b, labels[b], got, best_k, best_seq)
    overturned += int(best_k != np.argmax(z[b]))
  assert overturned >= 3  # the test exercises the joint choice, not just the argmax


def test_joint_decode_with_every_tag_allowed_is_the_independent_decoding():
  rng = np.random.default_rng(4)
  lengths = np.array([5, 3, 0, 1, 5, 2])
  z = rng.normal(size=(6, 4)).astype(np.float32) * 3
  x = rng.normal(size=(6, 5, C)).astype(np.float32) * 3
  labels, tags = _joint(z, x, lengths, label_tags=np.ones((4, C), bool))
  np.testing.assert_array_equal(labels, np.argmax(z, -1))
  np.testing.assert_array_equal(tags, _decode(x, lengths))


def test_joint_decode_candidates_jit_and_label_valid():
  rng = np.random.default_rng(5)
  lengths = np.array([4, 3, 4, 2, 4, 1])
  z = rng.normal(size=(6, 4)).astype(np.float32)
  x = (rng.normal(size=(6, 4, C)) * 2.0).astype(np.float32)
  # One candidate: the argmax label, with the best tags that label allows.
  labels, tags = _joint(z, x, lengths, num_candidates=1)
  np.testing.assert_array_equal(labels, np.argmax(z, -1))
  for b, length in enumerate(lengths):
    # The path is the best within the label's tags, scored by the unrestricted
    # softmax (the brute force with only that label).
    only = np.where(np.arange(4) == labels[b], 0.0, -np.inf)
    _, (_, best_seq) = _joint_brute_force(only, x[b].astype(np.float64), length,
                                          LABEL_TAGS)
    assert tuple(tags[b, :length]) == best_seq
  # More candidates than labels are clipped; jit gives the same answer.
  fn = jax.jit(lambda z, x, n: decoding.joint_decode(
      z, x, n, label_tags=LABEL_TAGS, allowed=ALLOWED, start_allowed=START,
      static_valid=STATIC, num_candidates=50))
  for got, want in zip(fn(z, x, lengths), _joint(z, x, lengths, num_candidates=4)):
    np.testing.assert_array_equal(got, want)
  # An invalid label is never chosen, however likely.
  z_big = z.copy()
  z_big[:, 3] = 50.0
  valid = np.array([True, True, True, False])
  labels, _ = _joint(z_big, x, lengths, label_valid=valid)
  assert (labels != 3).all()
  np.testing.assert_array_equal(labels, _joint(z, x, lengths, label_valid=valid)[0])


def test_joint_decode_errors():
  z, x, n = jnp.zeros((2, 4)), jnp.zeros((2, 3, C)), jnp.array([3, 2])
  kw = dict(label_tags=LABEL_TAGS, allowed=ALLOWED, start_allowed=START,
            static_valid=STATIC)
  with pytest.raises(ValueError, match="label_logits"):
    decoding.joint_decode(jnp.zeros((3, 4)), x, n, **kw)
  with pytest.raises(ValueError, match="label_tags"):
    decoding.joint_decode(z, x, n, **{**kw, "label_tags": LABEL_TAGS[:3]})
  with pytest.raises(TypeError, match="label_tags"):
    decoding.joint_decode(z, x, n, **{**kw, "label_tags": LABEL_TAGS.astype(int)})
  with pytest.raises(ValueError, match="num_candidates"):
    decoding.joint_decode(z, x, n, num_candidates=0, **kw)
  with pytest.raises(ValueError, match="no label"):
    decoding.joint_decode(z, x, n, label_valid=np.zeros(4, bool), **kw)
  with pytest.raises(ValueError, match="lengths"):
    decoding.joint_decode(z, x, jnp.array([4, 2]), **kw)
  with pytest.raises(TypeError, match="tag_logits"):
    decoding.joint_decode(z, jnp.zeros((2, 3, C), jnp.int32), n, **kw)


def test_greedy_decode():
  logits = jnp.array([[[9.0, 0.0, 1.0, 2.0, 3.0, 0.0, 0.0]]])
  np.testing.assert_array_equal(decoding.greedy_decode(logits, STATIC), [[IA]])
  with pytest.raises(ValueError, match="static_valid"):
    decoding.greedy_decode(logits, STATIC[:3])
