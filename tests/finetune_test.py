"""Fine-tuning optimizer (jaxloss.finetune) and the JointBERT heads
(jaxloss.models.encoder_heads) on a small random BERT."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxloss import finetune
from jaxloss.models.bert import BertEncoder, EncoderConfig
from jaxloss.models.encoder_heads import EncoderAspectSentimentModel, EncoderJointNluModel

CFG = EncoderConfig(vocab_size=40, hidden_size=8, num_hidden_layers=3,
                    num_attention_heads=2, intermediate_size=16,
                    max_position_embeddings=16, hidden_dropout_prob=0.0,
                    attention_probs_dropout_prob=0.0)
IDS = jnp.array([[2, 7, 9, 11, 3, 0], [2, 5, 3, 0, 0, 0]], jnp.int32)
MASK = (IDS != 0).astype(jnp.int32)
# Words: sentence 0 has 3 words starting at sub-words 1, 2, 4; sentence 1 one word at 1.
WORD_INDEX = jnp.array([[1, 2, 4], [1, 0, 0]], jnp.int32)
LENGTHS = jnp.array([3, 1], jnp.int32)


def _model(pooling="pooler"):
  return EncoderJointNluModel(BertEncoder(CFG, add_pooler=pooling == "pooler"),
                              num_tags=5, sentence_classes=(("intent", 4),),
                              dropout_rate=0.0, pooling=pooling)


def _init(model, seed):
  # Jitted: one compilation instead of one per eager operation.
  return jax.jit(lambda k: model.init(k, IDS, MASK, WORD_INDEX, LENGTHS,
                                      train=False)["params"])(jax.random.PRNGKey(seed))


@pytest.fixture(scope="module")
def params():
  return _init(_model(), 0)


def _leaves(tree):
  return {"/".join(str(getattr(k, "key", k)) for k in p): v
          for p, v in jax.tree_util.tree_leaves_with_path(tree)}


def test_layer_depths_of_a_bert_under_heads(params):
  depths = _leaves(finetune.layer_depths(params))
  assert depths["tags/kernel"] == 0 and depths["intent/bias"] == 0
  assert depths["encoder/pooler/dense/kernel"] == 0
  for i in range(3):
    assert depths[f"encoder/encoder/layer_{i}/output/dense/kernel"] == 3 - i
  assert depths["encoder/embeddings/word_embeddings/embedding"] == 4
  with pytest.raises(ValueError, match="no 'backbone' entry"):
    finetune.layer_depths(params, encoder="backbone")


def test_weight_decay_skips_biases_and_layernorm(params):
  mask = _leaves(finetune.decay_mask(params))
  assert mask["tags/kernel"] and mask["encoder/encoder/layer_0/attention/self/query/kernel"]
  assert not mask["tags/bias"]
  assert not mask["encoder/embeddings/LayerNorm/scale"]
  assert not mask["encoder/encoder/layer_1/output/LayerNorm/bias"]
  assert mask["encoder/embeddings/word_embeddings/embedding"]


def _one_update(tx, params, grads, lr=None):
  def update(params, grads):
    state = tx.init(params)
    if lr is not None:
      state = optax.tree_utils.tree_set(state, learning_rate=lr)
    return tx.update(grads, state, params)[0]
  return _leaves(jax.jit(update)(params, grads))


@pytest.mark.parametrize("layer_decay,encoder_lr_scale", [(0.5, 1.0), (1.0, 0.25),
                                                          (0.5, 0.125)])
def test_layer_decay_scales_each_layers_update_by_decay_to_its_depth(
    params, layer_decay, encoder_lr_scale):
  grads = jax.tree.map(lambda p: np.full(p.shape, 0.01, np.float32) * (
      1 + np.arange(p.size).reshape(p.shape) % 3), params)
  plain = _one_update(finetune.make_finetune_optimizer(
      params, learning_rate=1e-3, max_grad_norm=None), params, grads)
  decayed = _one_update(finetune.make_finetune_optimizer(
      params, learning_rate=1e-3, layer_decay=layer_decay,
      encoder_lr_scale=encoder_lr_scale, max_grad_norm=None), params, grads)
  depths = _leaves(finetune.layer_depths(params))
  for name, u in plain.items():
    # The encoder's updates (its pooler at depth 0 included) are scaled by
    # encoder_lr_scale, the heads' are not. One multiplication by a power of 2: exact
    # in float32.
    factor = layer_decay ** depths[name] * (
        encoder_lr_scale if name.startswith("encoder/") else 1.0)
    np.testing.assert_array_equal(np.asarray(decayed[name]),
                                  np.asarray(u) * np.float32(factor))
  assert np.all(np.asarray(plain["tags/kernel"]) != 0)
  assert depths and max(depths.values()) == 4


def test_frozen_encoder_gets_zero_updates_and_no_adam_state(params):
  tx = finetune.make_finetune_optimizer(params, learning_rate=1e-3, freeze_encoder=True)
  grads = jax.tree.map(lambda p: np.ones(p.shape, np.float32), params)
  updates = _one_update(tx, params, grads, lr=2e-3)
  for name, u in updates.items():
    if name.startswith("encoder/"):
      assert not np.any(np.asarray(u)), name
    else:
      assert np.all(np.asarray(u) != 0), name
  # Adam's moments exist for the heads only: mu + nu of each head leaf.
  head_size = sum(v.size for k, v in _leaves(params).items() if not k.startswith("encoder/"))
  state_size = sum(np.size(x) for x in jax.tree.leaves(tx.init(params))
                   if np.ndim(x) > 0)
  assert state_size == 2 * head_size


def test_the_injected_learning_rate_is_what_the_step_sets(params):
  """The train step writes the curriculum's LR with tree_set; every group follows it."""
  grads = jax.tree.map(lambda p: np.ones(p.shape, np.float32), params)
  for freeze in (False, True):
    tx = finetune.make_finetune_optimizer(params, learning_rate=1.0, layer_decay=0.5,
                                          freeze_encoder=freeze, weight_decay=0.0,
                                          max_grad_norm=None)
    a = _one_update(tx, params, grads, lr=1e-3)
    b = _one_update(tx, params, grads, lr=4e-3)
    for name in a:
      np.testing.assert_allclose(np.asarray(b[name]), 4 * np.asarray(a[name]),
                                 rtol=1e-6, atol=0)


def test_bad_arguments_are_named(params):
  for kw, pattern in (({"learning_rate": 0.0}, "learning_rate"),
                      ({"learning_rate": 1e-3, "layer_decay": 1.5}, "layer_decay"),
                      ({"learning_rate": 1e-3, "encoder_lr_scale": 0.0},
                       "encoder_lr_scale"),
                      ({"learning_rate": 1e-3, "max_grad_norm": 0.0}, "max_grad_norm")):
    with pytest.raises(ValueError, match=pattern):
      finetune.make_finetune_optimizer(params, **kw)
  with pytest.raises(ValueError, match="warmup"):
    finetune.warmup_linear_decay(1.0, warmup=2, total=2)


def test_tag_logits_read_each_words_first_subword(params):
  model = _model()
  out = jax.jit(lambda p: model.apply({"params": p}, IDS, MASK, WORD_INDEX, LENGTHS,
                                      train=False))(params)
  assert out["tags"].shape == (2, 3, 5) and out["intent"].shape == (2, 4)
  enc = BertEncoder(CFG, add_pooler=True)
  hidden, pooled = jax.jit(lambda p: enc.apply({"params": p}, IDS, MASK,
                                               method="encode"))(params["encoder"])
  dense = lambda p, x: x @ p["kernel"] + p["bias"]  # pylint: disable=unnecessary-lambda-assignment
  for i in range(2):
    for j in range(int(LENGTHS[i])):
      np.testing.assert_allclose(out["tags"][i, j],
                                 dense(params["tags"], hidden[i, WORD_INDEX[i, j]]),
                                 rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out["intent"], dense(params["intent"], pooled),
                             rtol=1e-5, atol=1e-6)


def test_mean_pooling_and_tags_ignore_padding():
  model = _model("mean")
  p = _init(model, 1)
  assert "pooler" not in p["encoder"]
  longer = jnp.pad(IDS, ((0, 0), (0, 2)))
  apply = jax.jit(lambda p, ids: model.apply(
      {"params": p}, ids, (ids != 0).astype(jnp.int32), WORD_INDEX, LENGTHS, train=False))
  a, b = apply(p, IDS), apply(p, longer)
  np.testing.assert_allclose(a["intent"], b["intent"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(a["tags"], b["tags"], rtol=1e-5, atol=1e-6)



def test_aspect_attention_on_the_encoder_ignores_padding():
  model = EncoderAspectSentimentModel(BertEncoder(CFG), num_aspects=3, dropout_rate=0.0,
                                      projection_dim=4, aspect_attention=True)
  p = jax.jit(lambda k: model.init(k, IDS, MASK, train=False)["params"])(
      jax.random.PRNGKey(2))
  assert p["classifier"]["kernel"].shape == (3, 8 + 8, 4)  # own vector + review vector
  assert p["aspect_attention"]["query"]["kernel"].shape == (8, 3)
  apply = jax.jit(lambda p, ids: model.apply(
      {"params": p}, ids, (ids != 0).astype(jnp.int32), train=False))
  a, b = apply(p, IDS), apply(p, jnp.pad(IDS, ((0, 0), (0, 2))))
  np.testing.assert_allclose(a["logits"], b["logits"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(a["projection"], b["projection"], rtol=1e-5, atol=1e-6)
  # With a token BiLSTM the aspects attend over its states (2 x 4 units).
  lstm = EncoderAspectSentimentModel(BertEncoder(CFG), num_aspects=3, dropout_rate=0.0,
                                     projection_dim=4, aspect_attention=True,
                                     token_hidden=4)
  p = jax.jit(lambda k: lstm.init(k, IDS, MASK, train=False)["params"])(
      jax.random.PRNGKey(3))
  assert p["classifier"]["kernel"].shape == (3, 8 + 16, 4)  # own vector + mean+max
