"""The text encoder: shapes, padding never changes the output, lengths are respected."""

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
