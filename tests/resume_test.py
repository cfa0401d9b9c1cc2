"""End to end on real data through the training loop: a run interrupted after a stage
boundary and resumed by fresh objects equals the uninterrupted run, bitwise."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments import recipes
from jaxloss.training import MetricsLog
from experiments.imbalance.configs import digits_lt
from jaxloss.checkpoint import Checkpointer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(tfds_dir, **overrides):
  c = digits_lt.get_config("smoke")  # 4 epochs x 8 steps; stages start at 5, 13, 24
  c.data_dir = tfds_dir
  c.progress = False
  c.model_widths = (8, 16)
  c.checkpoint_every_steps = 100  # checkpoints only at stage boundaries and the end
  for k, v in overrides.items():
    c[k] = v
  return c


def _final_params(workdir):
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
  step = ckpt.latest_step()
  # Restore without a target: the raw saved tree, independent of this process' objects.
  import orbax.checkpoint as ocp
  raw = ckpt._manager.restore(step, args=ocp.args.StandardRestore())
  ckpt.close()
  return step, raw


def _events(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


@pytest.mark.parametrize("interrupt_at", [16])
def test_resume_after_stage_boundary_is_exact(tfds_dir, tmp_path, interrupt_at):
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  summary_a = recipes.run(_config(tfds_dir), straight)

  # Interrupted after crossing the boundaries at steps 5 and 13 (last checkpoint: 13);
  # the events it logged after step 13 (the epoch-2 log at step 16) are dropped on
  # resume and written again.
  assert recipes.run(_config(tfds_dir, interrupt_at_step=interrupt_at),
                                  resumed) is None
  ckpt = Checkpointer(os.path.join(resumed, "checkpoints"))
  assert ckpt.all_steps() == [5, 13]
  ckpt.close()
  summary_b = recipes.run(_config(tfds_dir), resumed)

  step_a, state_a = _final_params(straight)
  step_b, state_b = _final_params(resumed)
  assert step_a == step_b == 32
  jax.tree.map(np.testing.assert_array_equal, state_a, state_b)  # bitwise
  assert _events(straight) == _events(resumed)
  for key in ("war", "uar", "per_class_recall", "steps", "test_loss", "stage_end"):
    assert summary_a[key] == summary_b[key], key
  assert summary_a["train_step_compilations"] == 1


def test_smoke_run_writes_every_artifact(tfds_dir, tmp_path):
  workdir = str(tmp_path / "run")
  summary = recipes.run(_config(tfds_dir), workdir)
  for name in ("metrics.jsonl", "summary.json", "curves.png", "config.json",
               "diagnosis.json", "recall_by_stage.png"):
    assert os.path.exists(os.path.join(workdir, name)), name
  with open(os.path.join(workdir, "summary.json")) as f:
    assert json.load(f) == json.loads(json.dumps(summary))
  events = _events(workdir)
  assert {e["split"] for e in events} == {"meta", "init", "train", "test"}
  events = [e for e in events if e["split"] in ("train", "test")]
  assert [e["stage"] for e in events if e["split"] == "test"] == [
      "margin", "aggressive", "aggressive", "cooldown"]
  for e in events:
    assert {"step", "epoch", "stage", "split", "loss"} <= set(e)
    if e["split"] == "test":
      assert {"war", "uar", "per_class_recall"} <= set(e)
      assert np.isclose(e["uar"], np.mean(e["per_class_recall"]))
  assert summary["train_step_compilations"] == 1
  assert summary["steps"] == 32 and summary["skipped_steps"] == 0
  # Re-running a finished workdir resumes at the end and reproduces the summary, here
  # restored through the other launcher on 2 devices (a checkpoint is topology-free).
  again = recipes.run(_config(tfds_dir, parallel="pmap", num_devices=2),
                                   workdir)
  assert again["war"] == summary["war"] and again["uar"] == summary["uar"]
  # A no-op resume keeps the run's own facts (not the 0 compilations of the re-run).
  assert again["train_step_compilations"] == summary["train_step_compilations"] == 1
  assert again["wall_s"] == summary["wall_s"]
  # The command line: a re-run with another seed stops at once, naming the field.
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.run",
       "--config=experiments/imbalance/configs/digits_lt.py:smoke",
       f"--workdir={workdir}", f"--config.data_dir={tfds_dir}", "--config.seed=1"],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert "seed (0 -> 1)" in proc.stderr and "--allow_config_change" in proc.stderr
  assert "Traceback" not in proc.stderr


def test_bad_config_raises(tfds_dir, tmp_path):
  with pytest.raises(ValueError, match="config.curriculum must be one of"):
    recipes.run(_config(tfds_dir, curriculum="three_stage"),
                             str(tmp_path / "x"))
  with pytest.raises(ValueError, match="config.war_weights"):
    recipes.run(_config(tfds_dir, war_weights="val"), str(tmp_path / "y"))
  with pytest.raises(ValueError, match="variant must be one of"):
    digits_lt.get_config("huge")


def test_metrics_log_drops_a_line_cut_short_by_a_kill(tmp_path):
  path = str(tmp_path / "metrics.jsonl")
  with open(path, "w") as f:
    f.write('{"step": 0, "split": "meta"}\n{"step": 8, "split": "train"}\n'
            '{"step": 16, "spl')
  log = MetricsLog(path, resume_step=8)
  assert [e["step"] for e in log.read()] == [0, 8]
  with open(path) as f:
    assert f.read() == '{"step": 0, "split": "meta"}\n{"step": 8, "split": "train"}\n'
  reader = MetricsLog(path, resume_step=0, write=False)  # a non-main process
  reader.write({"step": 1, "split": "init"})
  assert [e["step"] for e in reader.read()] == [0, 1]
  with open(path) as f:
    assert len(f.readlines()) == 2  # not written


@pytest.mark.parametrize("args, flag", [
    (["--config.nonexistent=1"], "--config.nonexistent"),
    (["--config=experiments/nlu/configs/joint_nlu.py", "--config.lambdas.scenario=0.2"],
     "--config.lambdas.scenario"),
])
def test_unknown_config_field_is_one_line(tmp_path, args, flag):
  """A field the config lacks: one line naming the flag and exit status 2, whether
  ml_collections parses it while the flag is defined (the default config) or with
  the other flags (an explicit --config)."""
  proc = subprocess.run([sys.executable, "-m", "experiments.run",
                         f"--workdir={tmp_path / 'w'}", *args],
                        cwd=REPO, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert proc.stderr.startswith(f"error: {flag}: the config has no field")
  assert "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) == 1
