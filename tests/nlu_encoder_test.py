"""The NLU recipe on a pretrained encoder (JointBERT, ``joint_nlu.py:jointbert_smoke``):
MiniLM cut to one layer fine-tuned on 128 SNIPS sentences, with batches cut to their
length bucket; an interrupted run resumes to the same parameters, encoder included."""

import os

import jax
import numpy as np
import pytest

from experiments import recipes
from experiments.nlu import recipe as nlu_recipe
from experiments.nlu.configs import joint_nlu as nlu_config
from jaxloss.data.subword import bucket_length
from jaxloss.training import loop
from jaxloss.checkpoint import Checkpointer
from jaxloss.models.pretrained import load_pretrained, shared_models_dir

SNIPS = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "snips")
MINILM = shared_models_dir() / "all-MiniLM-L6-v2"
pytestmark = pytest.mark.skipif(
    not (os.path.isdir(SNIPS) and MINILM.is_dir()),
    reason=f"needs SNIPS ({SNIPS}) and MiniLM ({MINILM}) from ../shared beside the "
    "repository")


def _config(tfds_dir, **overrides):
  config = nlu_config.get_config("jointbert_smoke")
  config.progress = False
  config.tfds_data_dir = tfds_dir
  config.max_train_examples = 128  # 4 steps of 32
  config.num_devices = 1  # the loop's 1-vs-8-device equality is tested on its own
  for k, v in overrides.items():
    config[k] = v
  return config


def _params(workdir):
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
  try:
    return ckpt.restore_host()["params"]
  finally:
    ckpt.close()


def test_jointbert_smoke_fine_tunes_and_resumes_exactly(tmp_path, tfds_dir):
  whole = str(tmp_path / "whole")
  summary = recipes.run(_config(tfds_dir), whole)
  enc = summary["encoder"]
  assert (enc["model_type"], enc["num_layers"], enc["pooling"]) == ("bert", 1, "pooler")
  assert enc["truncated"] == {"train": 0, "dev": 0, "test": 0}
  assert enc["words_lost"] == {"train": 0, "dev": 0, "test": 0}
  assert summary["train_input"] == "host" and summary["skipped_steps"] == 0
  # 4 batches of 32, each cut to the bucket of its longest sentence: one compilation
  # per distinct width, recomputed here from the run's own draws.
  config = _config(tfds_dir)
  recipe = nlu_recipe.build(config)
  draw = loop._host_sampler(recipe)  # pylint: disable=protected-access
  rng = np.asarray(recipe.init(jax.random.PRNGKey(config.seed)).rng)
  sb = recipe.sequence_buckets
  widths = {min(bucket_length(int(sb.lengths[np.asarray(draw(rng, np.int32(s)))].max()),
                              sb.buckets), enc["subword_length"]) for s in range(4)}
  assert summary["train_step_compilations"] == len(widths)
  assert summary["initial_loss"] == pytest.approx(summary["initial_reference"], rel=0.1)
  for key in ("intent_accuracy", "slot_f1", "sentence_accuracy"):
    assert 0.0 <= summary[key] <= 1.0, key
  assert summary["diagnosis"]["error"] == 0

  # Fine-tuned: the encoder moved away from the checkpoint on disk.
  trained = _params(whole)
  pre = load_pretrained(MINILM)
  start = pre.params["encoder"]["layer_0"]["attention"]["self"]["query"]["kernel"]
  moved = trained["encoder"]["encoder"]["layer_0"]["attention"]["self"]["query"]["kernel"]
  assert np.max(np.abs(np.asarray(moved) - start)) > 1e-5
  assert "layer_1" not in trained["encoder"]["encoder"]

  # Interrupted after 2 steps and resumed: the same parameters, bit for bit.
  parts = str(tmp_path / "parts")
  assert recipes.run(_config(tfds_dir, interrupt_at_step=2), parts) is None
  resumed = recipes.run(_config(tfds_dir), parts)
  assert resumed["intent_accuracy"] == summary["intent_accuracy"]
  for a, b in zip(jax.tree.leaves(_params(parts)), jax.tree.leaves(trained)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_frozen_encoder_trains_heads_on_cached_features(tmp_path, tfds_dir):
  """``freeze_encoder`` with ``cache_features``: the encoder runs once per split and the
  heads alone train on its features, which equal the fine-tuning model's own."""
  config = _config(tfds_dir, freeze_encoder=True, train_input="host",
                   max_train_examples=64)
  workdir = str(tmp_path / "frozen")
  summary = recipes.run(config, workdir)
  enc = summary["encoder"]
  assert enc["freeze_encoder"] and enc["cached_features"] and enc["feature_seconds"] >= 0
  params = _params(workdir)
  assert sorted(params) == ["intent", "tags"]  # no encoder in the train state
  assert summary["skipped_steps"] == 0 and summary["steps"] == 2

  # The cached features are what the full model computes for the same sentences.
  from experiments.nlu import encoder as nlu_encoder  # pylint: disable=g-import-not-at-top
  pre = nlu_encoder.load(config)
  model = nlu_encoder.make_model(config, pre, num_tags=74, sentence_classes=(("intent", 7),))
  ids = np.array([[101, 2377, 1996, 2299, 102, 0]], np.int32)
  split = {"subword_ids": ids, "subword_mask": (ids != 0).astype(np.int32),
           "word_index": np.array([[1, 2, 3]], np.int32)}
  cached = nlu_encoder.cache_features(model, pre.params, split, batch_size=4)
  words, pooled = model.apply({"params": {"encoder": pre.params}}, split["subword_ids"],
                              split["subword_mask"], split["word_index"],
                              method="features")
  np.testing.assert_allclose(cached["word_features"], words, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(cached["sentence_features"], pooled, rtol=1e-5, atol=1e-5)
