"""tools.reports.cifar_table --reuse_only: tabulates the finished runs under --root (made
elsewhere, e.g. on a GPU) and trains nothing; the missing rows are named."""

import json
import os

from experiments.imbalance.configs import cifar10_lt
from tools.reports import cifar_table, tables


def test_reuse_only_reads_finished_runs_and_names_the_rest(tmp_path):
  rows = tuple((label, f"{m},full", o) for label, m, o in cifar_table.CIFAR_METHODS)
  done = os.path.join(tmp_path, tables.row_dirname("la,full", {}, 0))
  os.makedirs(done)
  with open(os.path.join(done, "summary.json"), "w") as f:
    json.dump({"war": 0.8629, "uar": 0.7142, "steps": 19400, "steps_per_epoch": 97}, f)
  missing = []
  got = cifar_table.run_rows(rows, cifar10_lt.get_config, str(tmp_path), 0,
                             reuse_only=True, missing=missing)
  assert [r["variant"] for r in got] == ["la,full"] and got[0]["uar"] == 0.7142
  assert len(missing) == 4 and all(str(tmp_path) in m for m in missing)
  assert not any(os.listdir(os.path.join(tmp_path, d)) == [] for d in os.listdir(tmp_path))
