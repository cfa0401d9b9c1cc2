"""Reranking recipe end to end on the real Games file: the smoke run with its sanity
checks, a scorer by position alone on the stored lists, and the errors of corrupt lists
and bad configs (resume and 1 vs 8 devices are the loop's: tests/training)."""

import json
import math
import os

import numpy as np
import pytest

from experiments import recipes
from experiments.rerank import recipe as rerank
from experiments.rerank.configs import rerank as rerank_config
from jaxloss import metrics
from tools.reports import rerank_table

GAMES = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                     "sasrec_games", "Video.txt")
needs_games = pytest.mark.skipif(
    not os.path.exists(GAMES), reason=f"real Games interactions not found at {GAMES} "
    "(../shared/data/sasrec_games beside the repository)")


def _smoke(tfds_dir, **overrides):
  c = rerank_config.get_config("smoke")
  c.progress = False
  c.tfds_data_dir = tfds_dir
  for k, v in overrides.items():
    c[k] = v
  return c


@needs_games
def test_smoke_run_sanity_checks(smoke_run):
  workdir, summary = smoke_run("rerank")
  for key in rerank.KEYS:
    assert 0.0 <= summary[key] <= 1.0, key
  assert summary["hr@1"] <= summary["hr@5"] <= summary["hr@10"]
  # The sanity checks: first loss within 0.05 of ln 50, true item everywhere, uniform
  # positions, evaluation repeated with identical metrics, the loss fell.
  s = summary["sanity"]
  assert summary["initial_reference"] == pytest.approx(math.log(50))
  assert abs(summary["initial_loss"] - math.log(50)) <= 0.05
  assert s["first_loss"]["ok"] and s["true_item_in_every_list"]
  assert s["eval_deterministic"] == {"max_diff": 0.0, "evaluations_repeated": 2,
                                     "ok": True}
  assert s["loss_fell"]["ok"] and s["all_ok"]
  assert rerank_table.failed_checks(s) == []
  assert summary["train_step_compilations"] == 1 and summary["skipped_steps"] == 0
  assert summary["dataset"]["num_items"] == 23715
  # Trained on 2,048 users for 32 steps it already beats the random ranker.
  assert summary["hr@10"] > summary["baselines"]["test"]["random"]["hr@10"] + 0.1
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    events = [json.loads(line) for line in f]
  assert [e["epoch"] for e in events if e["split"] == "validation"] == [1.0, 2.0]
  assert os.path.exists(os.path.join(workdir, "curves.png"))


@needs_games
def test_a_scorer_by_position_alone_gets_chance_hr_at_1(tfds_dir):
  # The stored lists put the true item at a uniform position, so a model that scores
  # by position (first = best) learns nothing from where the true item sits. At 101
  # candidates: tests/data/interactions_test.py (the same lists, without preparing a
  # second TFDS config).
  num_candidates = 50
  config = _smoke(tfds_dir, num_candidates=num_candidates, max_eval_users=None)
  b = rerank.prepare_data(config)
  for split in ("validation", "test"):
    e = b["evals"][split]
    n = len(e["label_index"])
    assert n == 30901
    scores = np.tile(-np.arange(num_candidates, dtype=np.float64), (n, 1))
    m = metrics.ranking_metrics(scores, e["label_index"])
    p = 1 / num_candidates
    assert abs(m["hr@1"] - p) < 4 * math.sqrt(p * (1 - p) / n), (split, m["hr@1"])
    assert abs(m["hr@10"] - 10 * p) < 4 * math.sqrt(10 * p * (1 - 10 * p) / n)
    assert b["sanity"][split]["position_p_value"] > 1e-3
    # Baselines scored in the same run: random at chance, popularity far above it.
    assert abs(b["baselines"][split]["random"]["hr@10"] - 10 * p) < 0.01
    assert b["baselines"][split]["popularity"]["hr@10"] > 2 * 10 * p


def test_check_lists_names_a_list_without_its_true_item():
  split = {"user": np.array([1, 2, 3]), "target": np.array([7, 8, 9]),
           "candidates": np.array([[7, 1, 2], [3, 8, 4], [9, 9, 5]]),
           "label_index": np.array([0, 1, 0])}
  with pytest.raises(RuntimeError, match=r"test: 1 list.*row 2 \(user 3\).*occurrences 2"):
    rerank.check_lists(split, 3, name="test")
  split["candidates"][2] = [9, 6, 5]
  out = rerank.check_lists(split, 3, name="test")
  assert out["true_item_in_every_list"] and 0 <= out["position_p_value"] <= 1


@pytest.mark.parametrize("field,value,match", [
    ("num_candidates", 1, "num_candidates must be >= 2"),
    ("loss", "hinge", "config.loss must be one of"),
    ("hidden", 10, "divisible by config.num_heads"),
    ("dropout_rate", 1.0, "dropout_rate"),
    ("eval_every", 0, "eval_every"),
])
def test_config_errors_name_the_field(tmp_path, field, value, match):
  config = _smoke(str(tmp_path), **{field: value})
  if field == "hidden":
    config.num_heads = 3
  with pytest.raises(ValueError, match=match):
    recipes.run(config, str(tmp_path / "run"))


def test_variants():
  assert rerank_config.get_config().loss == "listwise"
  assert rerank_config.get_config().num_candidates == 50
  assert rerank_config.get_config("bpr").loss == "bpr"
  with pytest.raises(ValueError, match="variant"):
    rerank_config.get_config("pointwise")


def _summary_row(label, loss, count, hr10, ok=True):
  m = {k: hr10 / 2 for k in rerank_table.KEYS}
  m["hr@10"] = hr10
  sanity = {"first_loss": {"ok": ok}, "true_item_in_every_list": True,
            "position_uniform": {"test": {"ok": True}},
            "eval_deterministic": {"ok": True}, "loss_fell": {"ok": True},
            "all_ok": ok}
  base = {"random": {k: 0.1 for k in rerank_table.KEYS},
          "popularity": {k: 0.3 for k in rerank_table.KEYS}}
  return {"label": label, "loss": loss, "num_candidates": count, **m, "epochs": 20.0,
          "initial_loss": 3.91, "initial_reference": math.log(count),
          "baselines": {"test": base}, "sanity": sanity}


def test_table_markdown_blocks_and_failed_checks():
  anchors = ({"model": "SASRec", "num_candidates": 101, "hr@10": 0.741,
              "ndcg@10": 0.536},)
  rows = [_summary_row("BPR", "bpr", 50, 0.6, ok=False),
          _summary_row("listwise softmax", "listwise", 50, 0.8),
          _summary_row("listwise softmax", "listwise", 101, 0.7)]
  lines = rerank_table.markdown(rows, anchors).splitlines()
  assert lines[2].startswith("| **50 candidates**")
  assert lines[3] == ("| random | 0.1000 | 0.1000 | 0.1000 | 0.1000 | 0.1000 | 0.1000 "
                      "|  |  |  |")
  assert lines[5].startswith("| SASRec + BPR | 0.3000 | 0.3000 | 0.6000 |")
  assert lines[5].endswith("| 3.9100 (ln 2 = 3.9120) | 20 | FAILED: first_loss |")
  assert lines[6].endswith("| 20 | all ok |")
  assert lines[7].startswith("| **101 candidates**")
  assert lines[-1] == "| SASRec, published | | | 0.7410 | | 0.5360 | | | | |"
  assert rerank_table.failed_checks(rows[0]["sanity"]) == ["first_loss"]


def test_table_spread_over_seeds():
  anchors = ({"model": "SASRec", "num_candidates": 101, "hr@10": 0.741,
              "ndcg@10": 0.536},)
  by_seed = {0: [_summary_row("listwise softmax", "listwise", 101, 0.70)],
             1: [_summary_row("listwise softmax", "listwise", 101, 0.74, ok=False)],
             2: [_summary_row("listwise softmax", "listwise", 101, 0.72)]}
  lines = rerank_table.spread_markdown(by_seed, anchors).splitlines()
  assert lines[0].startswith("| Games Test, mean ± std over seeds 0, 1, 2 |")
  assert lines[2].startswith("| **101 candidates**")
  # HR@10 0.70, 0.74, 0.72: mean 0.72, sample std 0.02; HR@1 is half of it.
  assert lines[5].startswith("| SASRec + listwise softmax | 0.3600 ± 0.0100 | "
                             "0.3600 ± 0.0100 | 0.7200 ± 0.0200 |")
  assert lines[5].endswith("| 0.7000 / 0.3500, 0.7400 / 0.3700, 0.7200 / 0.3600 "
                           "| FAILED: first_loss |")
  assert lines[3].startswith("| random | 0.1000 ± 0.0000 |")
  assert lines[-1] == "| SASRec, published | | | 0.7410 | | 0.5360 | | | |"
