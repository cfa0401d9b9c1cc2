"""The NLU recipe on a pretrained encoder (JointBERT, ``joint_nlu.py:jointbert_smoke``):
MiniLM cut to one layer fine-tuned on 128 SNIPS sentences, with batches cut to their
length bucket; an interrupted run resumes to the same parameters, encoder included."""

import os

import jax
import numpy as np
import pytest

from experiments import recipes
from experiments.nlu.configs import joint_nlu as nlu_config
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
  # per bucket used, at most the buckets up to the dataset's width.
  used = [b for b in nlu_config.get_config().sequence_buckets if b <= enc["subword_length"]]
  assert 1 <= summary["train_step_compilations"] <= len(used)
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
