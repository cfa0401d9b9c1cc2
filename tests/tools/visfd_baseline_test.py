"""tools.reports.visfd_baseline: the scikit-learn reference on real UIT-ViSFD reviews,
scored with the recipe's metrics."""

import os

import numpy as np
import pytest

from jaxloss.data import uit_visfd
from jaxloss.metrics import absa_report
from tools.reports import visfd_baseline

MANUAL_DIR = uit_visfd.default_manual_dir()
needs_data = pytest.mark.skipif(not os.path.exists(os.path.join(MANUAL_DIR, "Test.csv")),
                                reason=f"{MANUAL_DIR} is absent (../shared/data)")


@needs_data
def test_baseline_learns_from_a_subset_and_scores_with_absa_report():
  # 1,500 training reviews: BATTERY, the most frequent aspect, is found far above
  # chance; the report has the recipe's keys and its numbers are absa_report's.
  result = visfd_baseline.fit_and_score(MANUAL_DIR, C=3.0, max_train=1500)
  assert result["num_train"] == 1500
  test = result["test"]
  assert set(test) >= {"aspect_f1", "sentiment_f1", "per_aspect_f1", "macro_f1_4class"}
  assert test["per_aspect_f1"]["BATTERY"]["aspect"] > 0.85
  assert 0.5 < test["aspect_f1"] < 1.0 and 0.2 < test["sentiment_f1"] < test["aspect_f1"]
  table = visfd_baseline.markdown(result)
  assert f"{100 * test['aspect_f1']:.2f}" in table and "STORAGE" in table


def test_markdown_lists_every_aspect():
  y = np.array([[1] * 10, [0] * 10])
  report = absa_report(y, y)
  table = visfd_baseline.markdown({"test": report, "C": 3.0})
  assert table.count("| 100.0 ") == 10 and "C = 3 from Dev" in table
