"""The text encoder: shapes, padding never changes the output, lengths are respected."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxloss.models.text import (AspectAttention, AspectClassifier, AspectSentimentModel,
                                 BiLSTMEncoder, attended_positions)


def _init(model, ids, lengths):
  return model.init(jax.random.PRNGKey(0), ids, lengths, train=False)


def test_shapes():
  model = AspectSentimentModel(vocab_size=50, embed_dim=8, hidden=6, projection_dim=5)
  ids = jnp.array([[3, 4, 5, 0], [7, 0, 0, 0]])
  lengths = jnp.array([3, 1])
  out = model.apply(_init(model, ids, lengths), ids, lengths, train=False)
  assert out["logits"].shape == (2, 10, 4)
  assert out["projection"].shape == (2, 5)
  assert out["embedding"].shape == (2, 24)


def test_padding_and_what_follows_the_length_do_not_matter():
  enc = BiLSTMEncoder(vocab_size=50, embed_dim=8, hidden=6, num_layers=2)
  ids = jnp.array([[3, 4, 5, 9, 9, 9]])
  variables = _init(enc, ids, jnp.array([3]))
  short = enc.apply(variables, ids[:, :3], jnp.array([3]), train=False)
  # The same 3 tokens followed by junk (not even PAD) beyond the length.
  long = enc.apply(variables, ids, jnp.array([3]), train=False)
  np.testing.assert_allclose(short, long, atol=1e-6)
  # A different length changes it (the backward LSTM starts elsewhere).
  other = enc.apply(variables, ids, jnp.array([4]), train=False)
  assert np.abs(np.asarray(other - long)).max() > 1e-4


def test_backward_direction_reads_the_sequence_reversed():
  # Mean pooling of a 1-token sequence equals its max pooling (one position).
  enc = BiLSTMEncoder(vocab_size=20, embed_dim=4, hidden=3)
  ids = jnp.array([[5, 0, 0]])
  out = enc.apply(_init(enc, ids, jnp.array([1])), ids, jnp.array([1]), train=False)
  np.testing.assert_allclose(out[:, :6], out[:, 6:], atol=1e-6)


def test_dropout_needs_train_and_an_rng():
  model = AspectSentimentModel(vocab_size=30, embed_dim=8, hidden=4, dropout_rate=0.5)
  ids, lengths = jnp.array([[1, 2, 3]]), jnp.array([3])
  variables = _init(model, ids, lengths)
  a = model.apply(variables, ids, lengths, train=False)["logits"]
  b = model.apply(variables, ids, lengths, train=False)["logits"]
  np.testing.assert_array_equal(a, b)
  c = model.apply(variables, ids, lengths, train=True,
                  rngs={"dropout": jax.random.PRNGKey(1)})["logits"]
  assert np.abs(np.asarray(c - a)).max() > 0
  with pytest.raises(ValueError, match="num_layers must be >= 1"):
    BiLSTMEncoder(vocab_size=5, num_layers=0).init(jax.random.PRNGKey(0), ids, lengths,
                                                   train=False)


def test_default_head_keeps_its_parameter_names():
  # Checkpoints written before aspect_attention existed load into the default model.
  model = AspectSentimentModel(vocab_size=30, embed_dim=8, hidden=4, projection_dim=5)
  ids, lengths = jnp.array([[1, 2, 3]]), jnp.array([3])
  params = _init(model, ids, lengths)["params"]
  assert sorted(params) == ["BiLSTMEncoder_0", "Dense_0", "Dense_1", "Dense_2"]
  assert params["Dense_0"]["kernel"].shape == (16, 40)


def test_aspect_attention_equals_a_direct_computation():
  rng = np.random.RandomState(0)
  states = jnp.asarray(rng.randn(2, 5, 6), jnp.float32)
  mask = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
  att = AspectAttention(num_aspects=3, attention_dim=4)
  variables = att.init(jax.random.PRNGKey(0), states, mask)
  vectors, weights = att.apply(variables, states, mask)
  p = jax.tree.map(np.asarray, variables["params"])
  s = np.asarray(states, np.float64)
  for b in range(2):
    real = np.flatnonzero(np.asarray(mask[b]))
    keys = np.tanh(s[b, real] @ p["key"]["kernel"] + p["key"]["bias"])  # [n, 4]
    scores = keys @ p["query"]["kernel"]  # [n, A]
    w = np.exp(scores - scores.max(0))
    w /= w.sum(0)
    np.testing.assert_allclose(weights[b, real], w, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(weights[b, len(real):], 0.0)
    np.testing.assert_allclose(vectors[b], w.T @ s[b, real], rtol=1e-5, atol=1e-5)
  # The weights are sown for inspection; the most-attended position per aspect.
  _, inter = att.apply(variables, states, mask, mutable=["intermediates"])
  np.testing.assert_array_equal(attended_positions(inter["intermediates"]),
                                np.argmax(np.asarray(weights), axis=1))
  with pytest.raises(ValueError, match="found 0"):
    attended_positions({})
  # Whatever stands at the padded positions does not matter.
  junk = states.at[0, 3:].set(100.0)
  np.testing.assert_allclose(att.apply(variables, junk, mask)[0][0], vectors[0],
                             atol=1e-6)


def test_aspect_classifier_is_one_dense_per_aspect():
  rng = np.random.RandomState(1)
  features = jnp.asarray(rng.randn(2, 3, 5), jnp.float32)
  clf = AspectClassifier(num_classes=4)
  variables = clf.init(jax.random.PRNGKey(0), features)
  kernel = np.asarray(variables["params"]["kernel"])
  bias = np.asarray(variables["params"]["bias"])
  assert kernel.shape == (3, 5, 4) and bias.shape == (3, 4)
  out = np.asarray(clf.apply(variables, features))
  for a in range(3):
    np.testing.assert_allclose(out[:, a], np.asarray(features[:, a]) @ kernel[a] + bias[a],
                               rtol=1e-5, atol=1e-6)
  # Aspects do not share weights (lecun_normal per aspect, fan-in 5).
  assert np.abs(kernel[0] - kernel[1]).max() > 1e-3


def test_aspect_attention_model_ignores_padding():
  model = AspectSentimentModel(vocab_size=50, embed_dim=8, hidden=6, projection_dim=5,
                               aspect_attention=True)
  ids = jnp.array([[3, 4, 5, 9, 9, 9]])
  variables = _init(model, ids, jnp.array([3]))
  assert variables["params"]["Dense_0"]["kernel"].shape == (10, 12 + 24, 4)
  short = model.apply(variables, ids[:, :3], jnp.array([3]), train=False)
  long = model.apply(variables, ids, jnp.array([3]), train=False)
  assert short["logits"].shape == (1, 10, 4)
  np.testing.assert_allclose(short["logits"], long["logits"], atol=1e-5)
  np.testing.assert_allclose(short["projection"], long["projection"], atol=1e-5)


@pytest.mark.parametrize("crf, heads", [(False, 0), (True, 2)])
def test_joint_nlu_model_ignores_padding_with_crf_and_attention(crf, heads):
  from jaxloss.models.text import JointNluModel  # pylint: disable=g-import-not-at-top
  model = JointNluModel(vocab_size=30, char_vocab_size=20, num_tags=7,
                        sentence_classes=(("intent", 3),), embed_dim=8, char_embed_dim=4,
                        char_features=5, hidden=6, num_layers=1, crf=crf,
                        attention_heads=heads)
  ids = jnp.array([[3, 4, 5, 9, 9]])
  chars = jnp.array(np.random.default_rng(0).integers(1, 20, size=(1, 5, 4)))
  lengths = jnp.array([3])
  variables = model.init(jax.random.PRNGKey(0), ids, chars, lengths, train=False)
  if heads:  # random CRF scores and attention weights are in the tree
    assert "self_attention" in variables["params"]
  assert ("crf_transitions" in variables["params"]) == crf
  full = model.apply(variables, ids, chars, lengths, train=False)
  cut = model.apply(variables, ids[:, :3], chars[:, :3], lengths, train=False)
  # Tokens after the length (garbage ids 9) change nothing at the real tokens.
  np.testing.assert_allclose(full["tags"][:, :3], cut["tags"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(full["intent"], cut["intent"], rtol=1e-5, atol=1e-6)
  if crf:
    assert full["tag_transitions"].shape == (7, 7)
    assert full["tag_start"].shape == full["tag_end"].shape == (7,)


def test_joint_nlu_token_level_heads_are_a_soft_vote_that_ignores_padding():
  from jaxloss.models.text import JointNluModel  # pylint: disable=g-import-not-at-top
  model = JointNluModel(vocab_size=30, char_vocab_size=20, num_tags=7,
                        sentence_classes=(("intent", 3), ("command", 2)), embed_dim=8,
                        char_embed_dim=4, char_features=5, hidden=6, num_layers=1,
                        token_level=True)
  ids = jnp.array([[3, 4, 5, 9, 9], [7, 8, 9, 9, 9]])
  chars = jnp.array(np.random.default_rng(0).integers(1, 20, size=(2, 5, 4)))
  lengths = jnp.array([3, 2])
  variables = model.init(jax.random.PRNGKey(0), ids, chars, lengths, train=False)
  assert {"intent_token_head", "command_token_head"} <= set(variables["params"])
  assert "intent_head" not in variables["params"]
  full = model.apply(variables, ids, chars, lengths, train=False)
  for field, k in (("intent", 3), ("command", 2)):
    tokens = np.asarray(full[f"{field}_tokens"], np.float64)
    assert tokens.shape == (2, 5, k)
    # The sentence's logits: the mean of its real tokens' log-probabilities.
    log_p = tokens - np.log(np.sum(np.exp(tokens), axis=-1, keepdims=True))
    for b, n in enumerate([3, 2]):
      np.testing.assert_allclose(full[field][b], log_p[b, :n].mean(axis=0), rtol=1e-5,
                                 atol=1e-6)
  # Tokens after the length change nothing at the real tokens or in the vote.
  cut = model.apply(variables, ids[:1, :3], chars[:1, :3], lengths[:1], train=False)
  np.testing.assert_allclose(full["tags"][:1, :3], cut["tags"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(full["intent"][:1], cut["intent"], rtol=1e-5, atol=1e-6)


def test_joint_nlu_singleton_replacement_turns_only_rare_words_into_unk():
  from jaxloss.models.text import JointNluModel  # pylint: disable=g-import-not-at-top

  def model(rate):
    return JointNluModel(vocab_size=30, char_vocab_size=20, num_tags=7,
                         sentence_classes=(("intent", 3),), embed_dim=8, char_embed_dim=4,
                         char_features=5, hidden=6, num_layers=1, dropout_rate=0.0,
                         singleton_unk_rate=rate, singleton_start=20)

  # Ids 20.. are the words seen once; 25 sits after the length (padding garbage).
  ids = jnp.array([[3, 21, 5, 20, 25], [29, 8, 2, 19, 0]])
  chars = jnp.array(np.random.default_rng(0).integers(1, 20, size=(2, 5, 4)))
  lengths = jnp.array([4, 3])
  variables = model(1.0).init(jax.random.PRNGKey(0), ids, chars, lengths, train=False)
  rngs = {"dropout": jax.random.PRNGKey(1)}
  # Rate 1: in training every rare word inside the length is UNK (1), nothing else is.
  unk = jnp.array([[3, 1, 5, 1, 25], [1, 8, 2, 19, 0]])
  # (Same operations on the same values; the tolerance only allows for a different
  # fusion of the training graph.)
  np.testing.assert_allclose(
      np.asarray(model(1.0).apply(variables, ids, chars, lengths, train=True,
                                  rngs=rngs)["tags"]),
      np.asarray(model(1.0).apply(variables, unk, chars, lengths, train=False)["tags"]),
      rtol=1e-6, atol=1e-6)
  # The replacement is not vacuous: it changes the logits.
  plain = model(1.0).apply(variables, ids, chars, lengths, train=False)["tags"]
  assert np.abs(np.asarray(plain) - np.asarray(
      model(1.0).apply(variables, unk, chars, lengths, train=False)["tags"])).max() > 1e-4
  # Evaluation, and rate 0, never replace.
  np.testing.assert_allclose(
      np.asarray(model(0.0).apply(variables, ids, chars, lengths, train=True,
                                  rngs=rngs)["tags"]), np.asarray(plain), rtol=1e-6,
      atol=1e-6)
  # Rate 1/2: each draw replaces some subset of the three rare words (the outputs of
  # all 8 subsets, computed in evaluation), and the draws differ (fixed keys).
  rare = [(0, 1), (0, 3), (1, 0)]
  subsets = []
  for bits in range(8):
    chosen = ids
    for j, (b, t) in enumerate(rare):
      if bits >> j & 1:
        chosen = chosen.at[b, t].set(1)
    subsets.append(np.asarray(model(0.5).apply(variables, chosen, chars, lengths,
                                               train=False)["tags"]))
  seen = set()
  for k in range(8):
    t = np.asarray(model(0.5).apply(variables, ids, chars, lengths, train=True,
                                    rngs={"dropout": jax.random.PRNGKey(k)})["tags"])
    matches = [i for i, s in enumerate(subsets)
               if np.allclose(t, s, rtol=1e-6, atol=1e-6)]
    assert len(matches) == 1
    seen.add(matches[0])
  assert len(seen) > 1


def _feedback_decoder(valid=None, allowed=None):
  from jaxloss.models.text import LabelFeedbackLSTM  # pylint: disable=g-import-not-at-top
  return LabelFeedbackLSTM(5, hidden=7, label_embed_dim=3, valid=valid, allowed=allowed)


def test_label_feedback_decoder_equals_a_token_by_token_loop():
  """An independent reference: a Python loop over the tokens with flax's LSTM cell, the
  embedding table and the masked argmax, feeding each greedy choice to the next token."""
  k = 5
  allowed = np.ones((k + 1, k), bool)
  allowed[k, 1] = False       # not at the first token
  allowed[3, 4] = False       # 4 never after 3
  valid = (True, True, True, True, False)  # label 4 never chosen at all
  dec = _feedback_decoder(valid, tuple(map(tuple, allowed)))
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 6, 3))
  variables = dec.init(jax.random.PRNGKey(1), x)
  logits, choices = dec.apply(variables, x)
  p = variables["params"]["step"]
  cell = nn.OptimizedLSTMCell(7)
  table = np.asarray(p["label_embedding"]["embedding"])
  assert table.shape == (k + 1, 3)  # row k: the start symbol
  prev = np.full(4, k)
  carry = (jnp.zeros((4, 7)), jnp.zeros((4, 7)))
  expected_logits, expected_choices = [], []
  for t in range(6):
    carry, h = cell.apply({"params": p["lstm"]}, carry,
                          jnp.concatenate([x[:, t], table[prev]], axis=-1))
    z = np.asarray(h @ p["out"]["kernel"] + p["out"]["bias"], np.float64)
    ok = allowed[prev] & np.asarray(valid)
    prev = np.argmax(np.where(ok, z, -np.inf), axis=-1)
    expected_logits.append(z)
    expected_choices.append(prev)
  # The same float32 ops in another order (scan vs loop): a few ulps of O(1) values.
  np.testing.assert_allclose(logits, np.stack(expected_logits, 1), rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(choices, np.stack(expected_choices, 1))
  assert not np.any(np.asarray(choices) == 4) and not np.any(np.asarray(choices)[:, 0] == 1)
  assert np.unique(np.asarray(choices)).size >= 2  # the masks were not vacuous


def test_label_feedback_decoder_teacher_forcing_reads_the_previous_gold_label():
  dec = _feedback_decoder()
  x = jax.random.normal(jax.random.PRNGKey(2), (3, 6, 3))
  variables = dec.init(jax.random.PRNGKey(3), x)
  greedy, choices = dec.apply(variables, x)
  # Forced with its own greedy choices it computes exactly the greedy logits.
  forced, _ = dec.apply(variables, x, choices, True)
  np.testing.assert_array_equal(forced, greedy)
  # force=False ignores the gold labels.
  other = (np.asarray(choices) + 1) % 5
  unforced, _ = dec.apply(variables, x, jnp.asarray(other), False)
  np.testing.assert_array_equal(unforced, greedy)
  # Token t reads the label at t - 1: changing the gold label at token 2 changes the
  # logits from token 3 on, never before; the last label is read by no one.
  gold = np.asarray(choices).copy()
  gold[:, 2] = (gold[:, 2] + 1) % 5
  changed, _ = dec.apply(variables, x, jnp.asarray(gold), True)
  np.testing.assert_array_equal(changed[:, :3], greedy[:, :3])
  assert np.all(np.abs(np.asarray(changed[:, 3]) - np.asarray(greedy[:, 3])) > 0)
  last = np.asarray(choices).copy()
  last[:, -1] = (last[:, -1] + 1) % 5
  np.testing.assert_array_equal(dec.apply(variables, x, jnp.asarray(last), True)[0],
                                greedy)
  # Padding labels (-1) read as label 0.
  pad = np.asarray(choices).copy()
  pad[:, 4] = -1
  zero = pad.copy()
  zero[:, 4] = 0
  np.testing.assert_array_equal(dec.apply(variables, x, jnp.asarray(pad), True)[0],
                                dec.apply(variables, x, jnp.asarray(zero), True)[0])
  with pytest.raises(ValueError, match="forced must be"):
    dec.apply(variables, x, jnp.zeros((3, 5), jnp.int32), True)


def test_joint_nlu_decoders_force_in_training_and_decode_greedily_in_evaluation():
  from jaxloss.models.text import JointNluModel  # pylint: disable=g-import-not-at-top

  def model(forcing):
    return JointNluModel(vocab_size=30, char_vocab_size=20, num_tags=7,
                         sentence_classes=(("intent", 3),), embed_dim=8,
                         char_embed_dim=4, char_features=5, hidden=6, dropout_rate=0.0,
                         token_level=True, attention_heads=2, decoder_hidden=5,
                         teacher_forcing=forcing)
  ids = jnp.array([[3, 4, 5, 9, 9], [7, 8, 9, 9, 9]])
  chars = jnp.array(np.random.default_rng(0).integers(1, 20, size=(2, 5, 4)))
  lengths = jnp.array([3, 2])
  variables = model(0.9).init(jax.random.PRNGKey(0), ids, chars, lengths, train=False)
  assert {"intent_token_decoder", "tag_decoder", "self_attention"} <= set(
      variables["params"])
  assert "tag_head" not in variables["params"]
  evaluated = model(0.9).apply(variables, ids, chars, lengths, train=False)
  tags = jnp.array([[1, 2, 0, -1, -1], [3, 0, -1, -1, -1]])
  intent = jnp.array([2, 0])
  rngs = {"dropout": jax.random.PRNGKey(1)}
  # Never forced (no dropout): training computes what evaluation computes.
  never = model(0.0).apply(variables, ids, chars, lengths, tags, intent, train=True,
                           rngs=rngs)
  for key in ("tags", "intent", "intent_tokens"):
    np.testing.assert_allclose(never[key], evaluated[key], rtol=1e-6, atol=1e-6)
  # Always forced: the tag logits follow the gold tags, so they differ from greedy ones
  # wherever the gold previous tag differs from the greedy one.
  always = model(1.0).apply(variables, ids, chars, lengths, tags, intent, train=True,
                            rngs=rngs)
  assert not np.allclose(always["tags"][0, 1:3], evaluated["tags"][0, 1:3])
  np.testing.assert_allclose(always["tags"][:, 0], evaluated["tags"][:, 0], rtol=1e-6,
                             atol=1e-6)  # token 0 reads the start symbol either way
  # Tokens after a sentence's length change nothing at its real tokens.
  cut = model(0.9).apply(variables, ids[:1, :3], chars[:1, :3], lengths[:1], train=False)
  np.testing.assert_allclose(evaluated["tags"][:1, :3], cut["tags"], rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(evaluated["tag_choices"][:1, :3], cut["tag_choices"])
  with pytest.raises(ValueError, match="cannot be combined with crf=True"):
    JointNluModel(vocab_size=30, char_vocab_size=20, num_tags=7, embed_dim=8,
                  char_embed_dim=4, char_features=5, hidden=6, crf=True,
                  decoder_hidden=5).init(jax.random.PRNGKey(0), ids, chars, lengths,
                                         train=False)
