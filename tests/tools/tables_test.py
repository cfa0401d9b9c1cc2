"""tools.reports.tables.run_or_reuse: a finished run is reused only for the config that
trained it; a changed default is named, never tabulated under the new row's label."""

import json
import os

import ml_collections
import pytest

from jaxloss.training.guard import ConfigChangedError
from tools.reports import tables


def _config(**fields):
  c = ml_collections.ConfigDict({"seed": 0, "num_epochs": 20, "progress": True,
                                 "monitor": {"enabled": True}})
  c.singleton_unk_rate = ml_collections.config_dict.placeholder(float)
  for k, v in fields.items():
    c[k] = v
  return c


def _finished(workdir, config, summary):
  os.makedirs(workdir)
  with open(os.path.join(workdir, "summary.json"), "w") as f:
    json.dump(summary, f)
  if config is not None:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort())


def _never_trains(config, workdir):
  raise AssertionError(f"trained {workdir}")


def test_reuses_the_summary_of_the_same_config(tmp_path, capsys):
  workdir = str(tmp_path / "recipe_seed=0")
  _finished(workdir, _config(), {"slot_f1": 0.9353})
  # A field that changes only how a run is executed may differ.
  got = tables.run_or_reuse(workdir, lambda: _config(progress=False), _never_trains)
  assert got == {"slot_f1": 0.9353}
  assert "reusing" in capsys.readouterr().out


def test_a_finished_run_of_another_config_is_named_not_reused(tmp_path):
  # The run was made before a default changed (None -> 0.5): reusing it would put the
  # old recipe's numbers under the new recipe's label.
  workdir = str(tmp_path / "recipe_seed=0")
  _finished(workdir, _config(), {"slot_f1": 0.9284})
  changed = r"num_epochs \(20 -> 40\), singleton_unk_rate \(null -> 0.5\)"
  with pytest.raises(ConfigChangedError, match=changed):
    tables.run_or_reuse(workdir, lambda: _config(singleton_unk_rate=0.5, num_epochs=40),
                        _never_trains)


def test_without_config_json_it_is_reused_and_says_so(tmp_path, capsys):
  workdir = str(tmp_path / "copied")
  _finished(workdir, None, {"war": 0.86})
  assert tables.run_or_reuse(workdir, _config, _never_trains) == {"war": 0.86}
  assert "not checked" in capsys.readouterr().out


def test_an_unfinished_row_trains_with_the_row_config(tmp_path):
  calls = []

  def train(config, workdir):
    calls.append((config.num_epochs, workdir))
    return {"done": True}
  workdir = str(tmp_path / "new")
  got = tables.run_or_reuse(workdir, lambda: _config(num_epochs=3), train)
  assert got == {"done": True}
  assert calls == [(3, workdir)]
