"""Every recipe on several processes: 2 processes x 4 devices (``tools.launch_local``,
gloo, each process feeding its own rows of every batch and of every evaluation) train
the parameters of 1 process x 8 devices with the same host-drawn input, to 1e-6, and
report the same evaluation metrics. Smoke configs cut to a few steps on the real data
(skipped when ``../shared/data`` lacks them)."""

import json
import os

import jax
import numpy as np
import pytest

from experiments import recipes
from experiments.absa.configs import visfd_absa
from experiments.imbalance.configs import digits_lt
from experiments.nlu.configs import joint_nlu
from experiments.rerank.configs import rerank
from experiments.tabular.configs import breast_cancer
from jaxloss.checkpoint import Checkpointer
from tools import launch_local

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(REPO, "..", "shared", "data")

# recipe -> (config file, its module, overrides, data folder needed, report split)
CASES = {
    "imbalance": ("experiments/imbalance/configs/digits_lt.py:smoke", digits_lt, "smoke",
                  {"num_epochs": 1, "model_widths": (8, 16)}, None, "test"),
    "absa": ("experiments/absa/configs/visfd_absa.py:smoke", visfd_absa, "smoke",
             {"num_epochs": 1, "max_train_examples": 128, "max_eval_examples": 64,
              "batch_size": 32}, "uit_visfd", "test"),
    "nlu": ("experiments/nlu/configs/joint_nlu.py:smoke", joint_nlu, "smoke",
            {"num_epochs": 1, "max_train_examples": 128, "max_eval_examples": 32},
            "snips", "test"),
    "rerank": ("experiments/rerank/configs/rerank.py:smoke", rerank, "smoke",
               {"num_epochs": 1, "max_train_users": 256, "max_eval_users": 64},
               "sasrec_games", "test"),
    "tabular": ("experiments/tabular/configs/breast_cancer.py:smoke", breast_cancer,
                "smoke", {"num_epochs": 1}, None, "test"),
}


def _flag(k, v):
  if isinstance(v, tuple):
    v = "(" + ",".join(map(str, v)) + ",)"
  return f"--config.{k}={v}"


def _params(workdir):
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
  try:
    return ckpt.restore_host()["params"]
  finally:
    ckpt.close()


def _last_eval(workdir, split):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    events = [json.loads(line) for line in f]
  return [e for e in events if e["split"] == split][-1]


@pytest.mark.parametrize("name", list(CASES))
def test_two_processes_equal_one_process(name, tmp_path, tfds_dir):
  path, module, variant, overrides, needs, split = CASES[name]
  if needs and not os.path.isdir(os.path.join(DATA, needs)):
    pytest.skip(f"{needs} not found in {DATA}")
  data_flags = {}
  if name == "imbalance":
    data_flags["data_dir"] = tfds_dir
  elif name in ("nlu", "rerank"):
    data_flags["tfds_data_dir"] = tfds_dir
  elif name == "absa":
    data_flags["data_dir"] = tfds_dir
  settings = {**overrides, **data_flags, "progress": False}
  two = str(tmp_path / "two")
  procs = launch_local.start(
      ["-m", "experiments.run", f"--config={path}", f"--workdir={two}",
       *[_flag(k, v) for k, v in settings.items()]],
      num_processes=2, devices_per_process=4, log_dir=str(tmp_path / "logs"), cwd=REPO)
  codes = launch_local.wait(procs, 300)
  assert codes == [0, 0], open(tmp_path / "logs" / "process_0.log").read()[-3000:]
  config = module.get_config(variant)
  for k, v in {**settings, "train_input": "host", "num_devices": 8}.items():
    config[k] = v
  one = str(tmp_path / "one")
  recipes.run(config, one)
  a, b = _params(two), _params(one)
  diff = max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  assert diff < 1e-6, diff
  e_two, e_one = _last_eval(two, split), _last_eval(one, split)
  for key, value in e_one.items():
    if isinstance(value, float):
      assert e_two[key] == pytest.approx(value, abs=1e-6), key
  with open(os.path.join(two, "summary.json")) as f:
    assert json.load(f)["num_processes"] == 2
