"""The text encoder: shapes, padding never changes the output, lengths are respected."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxloss.models.text import AspectSentimentModel, BiLSTMEncoder


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
