"""Several processes on JAX's distributed runtime, simulated on one machine.

Two local processes with 4 CPU devices each (gloo collectives) run the loop's tiny
recipe: their checkpoint restores on other topologies, and a killed process must take
the other down with a clear message. The unit tests of the pieces (config resolution,
per-process rows) run in this process; every recipe's 2-vs-1-process equality is in
tests/recipes_multiprocess_test.py.
"""

import json
import os
import shutil
import signal
import time

import jax
import numpy as np
import pytest

from experiments import recipes
from experiments.imbalance.configs import digits_lt
from jaxloss import distributed
from jaxloss.checkpoint import Checkpointer
from jaxloss.parallel import DataParallel
from jaxloss.training import train_and_evaluate
from tests.training import tiny_recipe
from tools.ops import launch_local

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- config resolution --------------------------------------------------------------
def test_resolve_single_process_by_default():
  assert distributed.resolve(None, environ={}) is None
  assert distributed.resolve(digits_lt.get_config().distributed, environ={}) is None


def test_resolve_from_config_and_environment():
  cfg = digits_lt.get_config().distributed
  cfg.coordinator_address, cfg.num_processes, cfg.process_id = "10.0.0.1:1234", 4, 3
  assert distributed.resolve(cfg, environ={}) == distributed.ProcessSpec(
      "10.0.0.1:1234", 4, 3)
  env = {distributed.ENV_COORDINATOR: "h:1", distributed.ENV_NUM_PROCESSES: "2",
         distributed.ENV_PROCESS_ID: "1"}
  assert distributed.resolve(None, environ=env) == distributed.ProcessSpec("h:1", 2, 1)
  assert distributed.resolve(None, environ={distributed.ENV_AUTO: "auto"}).auto
  auto = digits_lt.get_config().distributed
  auto.auto_detect = True
  assert distributed.resolve(auto, environ={}) == distributed.ProcessSpec(auto=True)


@pytest.mark.parametrize("fields,match", [
    ({"coordinator_address": "h:1"}, "num_processes, process_id must be set"),
    ({"coordinator_address": "h:1", "num_processes": 2, "process_id": 2},
     r"process_id from config.distributed must be in \[0, 2\), got 2"),
    ({"coordinator_address": "h", "num_processes": 2, "process_id": 0}, "host:port"),
    ({"coordinator_address": "h:1", "num_processes": 0, "process_id": 0},
     "num_processes from config.distributed must be >= 1"),
])
def test_resolve_errors_name_the_setting(fields, match):
  with pytest.raises(ValueError, match=match):
    distributed.resolve(fields, environ={})
  env = {distributed.ENV_NUM_PROCESSES: "x", distributed.ENV_PROCESS_ID: "0",
         distributed.ENV_COORDINATOR: "h:1"}
  with pytest.raises(ValueError, match="must be integers"):
    distributed.resolve(None, environ=env)


def test_initialize_is_a_no_op_for_one_process():
  assert distributed.initialize(None, environ={}) is False
  assert distributed.is_main_process()


# --- per-process input pieces (one process, 8 devices) ----------------------------
def test_process_rows_and_assemble_batch_one_process():
  dp = DataParallel("shard_map", 8)
  assert dp.process_rows(64) == slice(0, 64)
  x = np.arange(64 * 3, dtype=np.float32).reshape(64, 3)
  g = dp.assemble_batch({"x": x}, 64)["x"]
  assert g.shape == (64, 3) and g.sharding.spec == dp.batch_sharding.spec
  np.testing.assert_array_equal(np.asarray(g), x)
  for shard in g.addressable_shards:
    np.testing.assert_array_equal(np.asarray(shard.data), x[shard.index])
  with pytest.raises(ValueError, match="process-local batch has 63 rows, expected 64"):
    dp.assemble_batch({"x": x[:63]}, 64)
  with pytest.raises(ValueError, match="not divisible by num_devices=8"):
    dp.process_rows(60)


def _config(tfds_dir, **overrides):
  c = digits_lt.get_config("smoke")
  c.data_dir = tfds_dir
  c.progress = False
  c.model_widths = (8, 16)
  for k, v in overrides.items():
    c[k] = v
  return c


def test_bad_train_input_is_rejected(tfds_dir, tmp_path):
  with pytest.raises(ValueError, match="config.train_input must be one of"):
    recipes.run(_config(tfds_dir, train_input="disk"), str(tmp_path))


# --- real processes -------------------------------------------------------------------
def _launch(args, processes, devices, log_dir, timeout_s=900):
  # timeout_s guards against a hang; under load a run of the tiny recipe can take
  # minutes (a 300 s guard failed once for a heavier recipe), so it is generous.
  procs = launch_local.start(args, num_processes=processes,
                             devices_per_process=devices, log_dir=log_dir, cwd=REPO)
  codes = launch_local.wait(procs, timeout_s)
  logs = [open(os.path.join(log_dir, f"process_{i}.log")).read()
          for i in range(processes)]
  assert codes == [0] * processes, (codes, [log[-3000:] for log in logs])
  return logs


def _state(workdir, step=None):
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
  try:
    return ckpt.restore_host(step)
  finally:
    ckpt.close()


def _max_diff(a, b):
  return max(jax.tree.leaves(jax.tree.map(
      lambda x, y: float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y))))
      if np.size(x) else 0.0, a, b)))


TINY = "--config=tests/training/tiny_recipe.py"


def test_a_two_process_checkpoint_restores_on_other_topologies(tmp_path):
  """The 2 x 4 checkpoint of step 10 restores on 1 x 8 and on 1 x 1 and trains on:
  both equal 1 x 8 continuing from its own step-10 checkpoint (the loop's tiny recipe,
  host input everywhere so that only the topology differs)."""
  two = str(tmp_path / "two_by_four")
  stop = ["--config.interrupt_at_step=10", "--config.checkpoint_every_steps=10"]
  # No dropout: its masks are drawn per device, so they depend on the topology.
  logs = _launch(["-m", "experiments.run", TINY, f"--workdir={two}", *stop,
                  "--config.dropout_rate=0.0"], 2, 4, str(tmp_path / "logs2"))
  assert "Interrupted at step 10" in logs[0]
  assert "Interrupted" not in logs[1]  # only process 0 reports
  events = [json.loads(line) for line in open(os.path.join(two, "metrics.jsonl"))]
  assert [e["split"] for e in events] == ["meta", "init", "train", "test", "train",
                                          "test"]  # written once, by process 0

  def run(workdir, **overrides):
    c = tiny_recipe.get_config()
    c.train_input, c.dropout_rate = "host", 0.0
    for k, v in overrides.items():
      c[k] = v
    return train_and_evaluate(c, workdir, tiny_recipe.build)

  one = str(tmp_path / "one_by_eight")
  assert run(one, interrupt_at_step=10, num_devices=8, checkpoint_every_steps=10) is None
  assert _max_diff(_state(two)["params"], _state(one)["params"]) < 1e-6
  finals = {}
  for name, source, devices in (("ref", one, 8), ("on8", two, 8), ("on1", two, 1)):
    workdir = str(tmp_path / f"cont_{name}")
    shutil.copytree(source, workdir)
    assert run(workdir, interrupt_at_step=12, num_devices=devices,
               checkpoint_every_steps=2) is None
    finals[name] = _state_latest_or(workdir, 12)
  for name in ("on8", "on1"):
    assert _max_diff(finals[name]["params"], finals["ref"]["params"]) < 1e-6, name


def _state_latest_or(workdir, step):
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
  try:
    assert ckpt.latest_step() == step, ckpt.all_steps()
    return ckpt.restore_host(step)
  finally:
    ckpt.close()


@pytest.mark.parametrize("victim", [1, 0])
def test_killed_process_ends_the_other_with_a_clear_error(tmp_path, victim):
  """SIGKILL one of two processes while process 0 is busy after an evaluation (the
  tiny recipe sleeps there): the survivor exits non-zero within 60 s and says which
  process was lost (our watchdog for a worker; JAX's coordination service for the
  coordinator, process 0). Restarting both resumes from the checkpoint and finishes."""
  workdir = str(tmp_path / "run")
  log_dir = str(tmp_path / "logs")
  args = ["-m", "experiments.run", TINY, f"--workdir={workdir}",
          "--config.sleep_at_epoch=2"]
  procs = launch_local.start(args, num_processes=2, devices_per_process=4,
                             log_dir=log_dir, cwd=REPO)
  try:
    deadline = time.monotonic() + 180
    ckpts = os.path.join(workdir, "checkpoints")
    # Process 0 is asleep after epoch 2's evaluation and the step-5 checkpoint is
    # finalized (orbax finalizes it in the background).
    while not (os.path.exists(os.path.join(workdir, "sleeping"))
               and os.path.isdir(os.path.join(ckpts, "5"))):
      assert all(p.poll() is None for p in procs), "a process exited before the kill"
      assert time.monotonic() < deadline, "the run did not reach epoch 2"
      time.sleep(0.2)
    procs[victim].send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    survivor = procs[1 - victim]
    code = survivor.wait(timeout=60)
    elapsed = time.monotonic() - killed_at
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  log = open(os.path.join(log_dir, f"process_{1 - victim}.log")).read()
  assert code != 0 and elapsed < 60, (code, elapsed)
  if victim == 1:
    assert code == distributed.PEER_LOST_EXIT
    assert "process 0 of 2 lost process 1: no heartbeat" in log, log[-2000:]
  else:
    assert "leader task was preempted/died" in log, log[-2000:]
  # Restarting every process resumes from the last checkpoint (step 5: the one of step
  # 10 comes after the evaluation process 0 was in) and finishes.
  logs = _launch(["-m", "experiments.run", TINY, f"--workdir={workdir}"], 2, 4,
                 str(tmp_path / "logs_restart"))
  assert f"Resumed from {os.path.join(workdir, 'checkpoints')} at step 5" in logs[0]
  with open(os.path.join(workdir, "summary.json")) as f:
    assert json.load(f)["steps"] == 20
