"""CIFAR-10-LT and UIT-VSFC through the imbalance recipe on the real data: smoke runs of
the methods (many / medium / few in the summary, one compilation, the DRW switch, the
full ResNet-32 schedule), the configs' variants and errors, and the table tool. Resume,
1 vs 8 devices and host input are the loop's, tested in tests/training/loop_test.py."""

import json
import math
import os

import jax
import numpy as np
import pytest

from experiments import recipes
from experiments.imbalance import recipe as imbalance_recipe
from experiments.imbalance.configs import cifar10_lt, vsfc
from jaxloss.checkpoint import Checkpointer
from jaxloss.data import cifar10_lt as cifar_data
from jaxloss.data import uit_vsfc
from jaxloss.data.subword import bucket_length
from jaxloss.models.pretrained import shared_models_dir
from jaxloss.training import loop
from tools.reports import cifar_table

needs_cifar = pytest.mark.skipif(
    not os.path.isfile(os.path.join(cifar_data.default_manual_dir(), cifar_data.ARCHIVE)),
    reason="CIFAR-10 archive not found (../shared/data/cifar10 beside the repository)")
needs_vsfc = pytest.mark.skipif(
    not os.path.isdir(os.path.join(uit_vsfc.default_manual_dir(), "train")),
    reason="UIT-VSFC not found (../shared/data/uit_vsfc beside the repository)")
needs_e5 = pytest.mark.skipif(
    not (shared_models_dir() / "multilingual-e5-small").is_dir(),
    reason="multilingual-e5-small not found (../shared/models beside the repository)")


def _cifar(tfds_dir, variant="smoke", **overrides):
  c = cifar10_lt.get_config(variant)
  c.data_dir = tfds_dir
  c.progress = False
  if variant != "smoke":  # a method at smoke size
    c.subsample, c.num_epochs, c.warmup_epochs, c.batch_size = 25, 3, 0.0, 64
    c.checkpoint_every_steps = 5
  for k, v in overrides.items():
    c[k] = v
  return c


def _events(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _state_at(workdir, step=None):
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
  try:
    return ckpt.restore_host(step)
  finally:
    ckpt.close()


def _params(workdir):
  return _state_at(workdir)["params"]


@needs_cifar
def test_cifar_smoke_summary_and_figures(tfds_dir, tmp_path):
  workdir = str(tmp_path / "run")
  summary = recipes.run(_cifar(tfds_dir), workdir)
  # Every 25th image of each class: ceil(n / 25) of the ρ = 100 counts.
  assert summary["class_counts"] == [math.ceil(n / 25) for n in (
      5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50)]
  assert summary["train_step_compilations"] == 1
  for key in ("many_shot", "medium_shot", "few_shot"):
    assert key in summary
  # At this size no class has > 1000 images: many is empty, the rest is split.
  assert summary["many_shot"] is None and summary["few_shot"] is not None
  recall = summary["per_class_recall"]
  assert math.isclose(summary["uar"], np.mean(recall), rel_tol=1e-9)
  for name in ("curves.png", "recall_by_stage.png", "diagnosis.json"):
    assert os.path.exists(os.path.join(workdir, name)), name
  first = next(e for e in _events(workdir) if e["split"] == "init")
  assert abs(first["loss"] - math.log(10)) < 0.25 * math.log(10)
  tests = [e for e in _events(workdir) if e["split"] == "test"]
  assert [e["stage"] for e in tests] == ["margin", "aggressive", "cooldown"]
  trains = [e for e in _events(workdir) if e["split"] == "train"]
  assert [e["aug_strength"] for e in trains] == [0.5, 0.5, 0.0]


@needs_cifar
def test_full_size_resnet32_schedule_as_configured(tfds_dir):
  # The accelerator config as it stands (ResNet-32, batch 128, 200 epochs, 5 warm-up
  # epochs, LR x0.1 at epochs 160 and 180), on every 50th image: its parameter count
  # (traced, not compiled; ResNet-8 of the same module trains in the smoke tests) and
  # its learning-rate schedule at the boundaries.
  c = cifar10_lt.get_config("four_stage")
  c.data_dir, c.progress, c.subsample = tfds_dir, False, 50
  recipe = imbalance_recipe.build(c)
  assert (recipe.batch_size, recipe.num_epochs) == (128, 200)
  state = jax.eval_shape(recipe.init, jax.random.PRNGKey(0))
  assert sum(x.size for x in jax.tree.leaves(state.params)) == 464_154
  per_epoch = math.ceil(len(recipe.train["label"]) / 128)
  lr = {e: recipe.compiled.host_values(int(e * per_epoch))["learning_rate"]
        for e in (0, 5, 159, 160, 179, 180, 199)}
  assert lr[0] < 0.1 * 0.25 and lr[5] == pytest.approx(0.1) and lr[159] == pytest.approx(0.1)
  assert lr[160] == pytest.approx(0.01) and lr[179] == pytest.approx(0.01)
  assert lr[180] == pytest.approx(0.001) and lr[199] == pytest.approx(0.001)


@needs_cifar
def test_ldam_drw_switches_the_weights_at_80_percent(tfds_dir):
  # The config's curriculum as built (no training: the knob reaches the step the same
  # way as the four-stage curriculum's, which the smoke run above trains).
  config = _cifar(tfds_dir, "ldam_drw,cpu", num_epochs=5)
  recipe = imbalance_recipe.build(config)
  compiled, per_epoch = recipe.compiled, recipe.steps_per_epoch
  assert (compiled.names, compiled.boundaries) == (("erm", "drw"), (0, 4 * per_epoch))
  caps = [compiled.host_values(e * per_epoch + per_epoch - 1)["class_weight_cap"]
          for e in range(5)]
  assert caps == [1.0, 1.0, 1.0, 1.0, 1e6]


@needs_vsfc
def test_vsfc_topic_task_builds_its_four_classes(tfds_dir):
  # The topic labels of the same sentences (the e5 runs below train the sentiment task).
  c = vsfc.get_config("erm,topic")
  c.data_dir, c.progress, c.subsample = tfds_dir, False, 10
  recipe = imbalance_recipe.build(c)
  counts = [math.ceil(n / 10) for n in [8166, 2201, 497, 562]]
  assert np.bincount(recipe.train["label"]).tolist() == counts
  assert recipe.class_counts.tolist() == counts
  assert recipe.meta(0)["num_classes"] == 4


@needs_vsfc
@needs_e5
@pytest.mark.parametrize("variant", ["e5_smoke,four_stage", "e5,erm"])
def test_vsfc_on_e5(tfds_dir, tmp_path, variant):
  """The imbalance recipe on multilingual-e5 cut to one layer: the frozen form (a
  BiLSTM on cached token states) under the four-stage curriculum, and the fine-tuned
  classifier under ERM; the class-mix sampler's batches cut to their length bucket."""
  c = vsfc.get_config(variant)
  c.data_dir, c.progress, c.num_devices = tfds_dir, False, 1
  if variant.startswith("e5_smoke"):
    c.subsample = 20  # every 20th sentence: 573 to train on
  if variant == "e5,erm":  # fine-tuned, at smoke size
    c.encoder_num_layers, c.subsample, c.num_epochs, c.warmup_epochs = 1, 40, 1, 0.0
    c.encoder_max_length, c.sequence_buckets = 64, (64,)  # one width to compile
    c.encoder_data_vocabulary = True  # the run's sub-words only: a small table
  summary = recipes.run(c, str(tmp_path / "run"))
  enc = summary["encoder"]
  frozen = variant.startswith("e5_smoke")
  assert (enc["num_layers"], enc["cached_features"]) == (1, frozen)
  assert enc["pooling"] == ("token_bilstm" if frozen else "mean")
  k = 20 if frozen else 40
  assert summary["class_counts"] == [math.ceil(n / k) for n in [5325, 458, 5643]]
  assert len(summary["per_class_recall"]) == 3 and 0 <= summary["uar"] <= 1
  assert summary["war_weights"] == "test"
  assert summary["war"] == summary["accuracy"]  # WAR = Test accuracy
  assert summary["skipped_steps"] == 0
  # One compilation per distinct bucket width of the run's own batches.
  recipe = imbalance_recipe.build(c)
  draw = loop._host_sampler(recipe)  # pylint: disable=protected-access
  rng = np.asarray(recipe.init(jax.random.PRNGKey(c.seed)).rng)
  sb = recipe.sequence_buckets
  widths = {min(bucket_length(int(sb.lengths[np.asarray(draw(rng, np.int32(s)))].max()),
                              sb.buckets), enc["subword_length"])
            for s in range(summary["steps"])}
  assert summary["train_step_compilations"] == len(widths)


def test_variants_and_errors():
  assert cifar10_lt.parse_variant(None) == ("four_stage", "full", False)
  assert cifar10_lt.parse_variant("la,cpu") == ("la", "cpu", False)
  full, cpu = cifar10_lt.get_config("erm"), cifar10_lt.get_config("erm,cpu")
  assert (full.resnet_depth, full.num_epochs, full.warmup_epochs) == (32, 200, 5.0)
  assert (full.learning_rate, full.weight_decay, full.batch_size) == (0.1, 2e-4, 128)
  assert [m * full.num_epochs for m in full.lr_milestones] == [160, 180]
  assert (cpu.resnet_depth, cpu.num_epochs) == (8, 30)
  ldam = cifar10_lt.get_config("ldam_drw")
  assert (ldam.loss, ldam.curriculum, ldam.classifier) == ("ldam", "drw", "cosine")
  assert ldam.drw_start * ldam.num_epochs == 160 and ldam.class_weight_beta == 0.9999
  assert cifar10_lt.get_config("la").la_tau == 1.0
  assert cifar10_lt.get_config("focal").loss == "focal"
  with pytest.raises(ValueError, match="method must be one of"):
    cifar10_lt.get_config("mixup")
  with pytest.raises(ValueError, match="size must be one of"):
    cifar10_lt.get_config("erm,tpu")
  assert vsfc.parse_variant("erm,topic") == (None, "erm", "topic", False)
  assert vsfc.parse_variant("e5_frozen,erm") == ("e5_frozen", "erm", "sentiment", False)
  assert vsfc.parse_variant("e5") == ("e5", "four_stage", "sentiment", False)
  e5 = vsfc.get_config("e5,erm,topic")
  assert (e5.name, e5.encoder, e5.freeze_encoder) == (
      "vsfc_e5_erm_topic", "multilingual-e5-small", False)
  assert vsfc.get_config("e5_frozen,erm").token_hidden == 128
  assert vsfc.get_config().curriculum == "four_stage"
  with pytest.raises(ValueError, match="task must be one of"):
    vsfc.get_config("erm,emotion")


@pytest.mark.parametrize("field,value,match", [
    ("augment", "mixup", "config.augment must be one of"),
    ("dataset", "cifar100_lt", "config.dataset must be one of"),
    ("model", "vit", "config.model must be one of"),
    ("curriculum", "mixup", "config.curriculum must be one of"),
])
def test_config_errors_name_the_field(tmp_path, field, value, match):
  c = cifar10_lt.get_config("smoke")
  c.data_dir = str(tmp_path)
  c[field] = value
  with pytest.raises(ValueError, match=match):
    recipes.run(c, str(tmp_path / "run"))


def _row(label, uar, **extra):
  return {"label": label, "war": 0.9, "uar": uar, "many_shot": 0.9, "medium_shot": 0.7,
          "few_shot": None, "steps": 300, "steps_per_epoch": 10,
          "diagnosis": {"error": 0, "warning": 1, "info": 2},
          "findings": ["term_saturated"], **extra}


def test_cifar_table_markdown():
  lines = cifar_table.cifar_markdown([_row("ERM", 0.6), _row("four-stage", 0.675)],
                                     "cpu").splitlines()
  assert lines[2] == ("| ERM | 90.00 | 60.00 | 40.00 | 90.00 | 70.00 | — | 30 | "
                      "0/1 (term_saturated) |")
  assert lines[3].startswith("| four-stage | 90.00 | 67.50 | 32.50 |")
  assert lines[4] == ("| ResNet-32, 200 epochs: ERM (Menon et al., ICLR 2021, Table 3), "
                      "published | | 72.84 | 27.16 | | | | 200 | |")
  assert len(lines) == 2 + 2 + len(cifar_table.ANCHORS)


