"""The multi-aspect sentiment recipe on a pretrained encoder
(``visfd_absa.py:e5_smoke``): multilingual-e5 cut to one layer, fine-tuned as the
two-member ensemble on a few UIT-ViSFD reviews with length-grouped batches, and the
frozen form's cached per-token states."""

import dataclasses
import json
import os

import jax
import numpy as np
import pytest

from experiments import encoders, recipes
from experiments.absa import encoder as absa_encoder
from experiments.absa import recipe as absa_recipe
from experiments.absa.configs import visfd_absa
from jaxloss.data.subword import bucket_length
from jaxloss.models.pretrained import shared_models_dir
from jaxloss.train_state import TrainState
from jaxloss.training import loop, train_and_evaluate
from tests.conftest import smoke_settings

VISFD = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "uit_visfd")
E5 = shared_models_dir() / "multilingual-e5-small"
pytestmark = pytest.mark.skipif(
    not (os.path.isdir(VISFD) and E5.is_dir()),
    reason=f"needs UIT-ViSFD ({VISFD}) and multilingual-e5-small ({E5}) from ../shared "
    "beside the repository")


def _config(tfds_dir, **overrides):
  config = visfd_absa.get_config("e5_smoke")
  config.progress = False
  config.data_dir = tfds_dir
  config.max_train_examples = 64  # 4 steps of 16
  config.max_eval_examples = 48
  config.num_devices = 1
  for k, v in overrides.items():
    config[k] = v
  return config


def _eval_events(workdir, member):
  with open(os.path.join(workdir, f"member_{member}", "metrics.jsonl")) as f:
    events = [json.loads(line) for line in f]
  return [e for e in events if e["split"] in ("dev", "test")]


def _smoke_config(tfds_dir):
  """The config of the shared ``absa_e5`` smoke run (conftest.py): 32 reviews, 2 steps
  of 16 on 8 devices, host input."""
  _, settings = smoke_settings("absa_e5", tfds_dir)
  config = visfd_absa.get_config("e5_smoke")
  for k, v in settings.items():
    config[k] = v
  return config


def test_e5_ensemble_fine_tunes_with_length_grouped_batches(tmp_path, tfds_dir, smoke_run):
  workdir, summary = smoke_run("absa_e5")
  config = _smoke_config(tfds_dir)
  enc = summary["encoder"]
  assert (enc["model_type"], enc["num_layers"], enc["pooling"]) == ("bert", 1, "mean")
  assert enc["text_prefix"] == "query: " and not enc["cached_features"]
  # Only the sub-words of the run's own texts (encoder_data_vocabulary).
  assert 0 < enc["vocabulary"]["kept"] < enc["vocabulary"]["of"]
  assert summary["ensemble"] and len(summary["members"]) == 2
  assert [m["focal_weight"] for m in summary["members"]] == [0.7, 0.8]
  steps = summary["steps"]
  assert summary["skipped_steps"] == [0, 0] and steps == 2
  for key in ("aspect_f1", "sentiment_f1"):
    assert 0.0 <= summary[key] <= 1.0
  # The attended sub-words decode through the trimmed vocabulary to the tokenizer's
  # own tokens (a token the texts contain, not the id's text in the full vocabulary).
  tokenizer = encoders.load(config).tokenizer
  texts = absa_recipe.load_uit_visfd(data_dir=config.data_dir, manual_dir=config.manual_dir
                                     )["test"]["text"][:24]
  used = {t for text in texts for t in tokenizer.encode("query: " + text).tokens}
  tops = [t["token"] for v in summary["attended_tokens"].values() for t in v["top"]]
  assert tops and set(tops) <= used

  # Both members draw the same length-grouped batches (one shared key), so each step's
  # width is its one batch's bucket: one compilation per distinct width.
  recipe = absa_recipe.build(config)
  draw = loop._host_sampler(recipe)  # pylint: disable=protected-access
  sb = recipe.sequence_buckets
  draws = [np.asarray(draw(np.asarray(jax.random.PRNGKey(k)), np.int32(s)))
           for k in (0, 1) for s in range(steps)]
  np.testing.assert_array_equal(draws[:steps], draws[steps:])
  widths = {min(bucket_length(int(sb.lengths[d].max()), sb.buckets),
                enc["subword_length"]) for d in draws}
  assert summary["train_step_compilations"] == len(widths)

  # Evaluation in order of length, each batch cut to its bucket, reports what the
  # full-width evaluation reports (same training: only the evaluation's padding
  # differs; softmax over masked positions is exactly 0 either way).
  def build_full_width(config, workdir):
    r = absa_recipe.build(config, workdir)
    return dataclasses.replace(
        r, sequence_buckets=dataclasses.replace(r.sequence_buckets, eval_lengths=None))
  full = str(tmp_path / "full")
  train_and_evaluate(_smoke_config(tfds_dir), full, build_full_width)
  for member in (0, 1):
    a, b = _eval_events(workdir, member), _eval_events(full, member)
    assert [e["split"] for e in a] == [e["split"] for e in b] == ["dev", "test"]
    for x, y in zip(a, b):
      assert x["loss"] == pytest.approx(y["loss"], rel=1e-5)
      assert x["aspect_f1"] == y["aspect_f1"]
      assert x["sentiment_f1"] == y["sentiment_f1"]


def test_frozen_e5_caches_token_states_and_trains_the_bilstm_head(tmp_path, tfds_dir):
  config = _config(tfds_dir, freeze_encoder=True, token_hidden=8,
                   ensemble_focal_weights="", max_train_examples=32,
                   max_eval_examples=16)
  workdir = str(tmp_path / "frozen")
  summary = recipes.run(config, workdir)
  enc = summary["encoder"]
  assert enc["cached_features"] and enc["pooling"] == "token_bilstm"
  assert summary["steps"] == 2 and summary["skipped_steps"] == 0
  assert summary["diagnosis"]["error"] == 0

  # The cache equals the encoder's own states at full width, row by row, although
  # it is computed in order of length on batches cut to their bucket.
  splits = {"train": {"text": ["pin trâu , chụp ảnh đẹp", "máy nóng",
                               "giá hơi cao so với cấu hình nhưng màn hình đẹp và "
                               "camera chụp rõ nét"]}}
  config.length_grouped = False  # three texts: fewer than a batch
  setup = absa_encoder.setup(config, splits, None, TrainState)
  names = set(setup.init(jax.random.PRNGKey(0)).params)
  assert {"classifier", "projection", "projection_hidden", "OptimizedLSTMCell_0",
          "OptimizedLSTMCell_1"} <= names
  assert "encoder" not in names  # the heads alone train
  s = splits["train"]
  pre = encoders.load(config)
  full = absa_encoder.EncoderAspectSentimentModel(pre.module, freeze_encoder=True)
  expected = np.asarray(full.apply({"params": {"encoder": pre.params}}, s["subword_ids"],
                                   s["subword_mask"], method="token_features"))
  expected = expected * s["subword_mask"][..., None]
  np.testing.assert_allclose(s["token_features"].astype(np.float32), expected,
                             rtol=2e-3, atol=2e-3)  # float16 cache: 11 bits
  assert s["token_features"].dtype == np.float16
  widths = s["subword_lengths"]
  assert s["subword_ids"].shape[1] >= widths.max()
  assert np.all(s["token_features"][0, widths[0]:] == 0)
