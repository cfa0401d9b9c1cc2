"""Several processes on JAX's distributed runtime, simulated on one machine.

Two local processes with 4 CPU devices each (gloo collectives) train the digits-LT
curriculum; the result is compared with one process of 8 devices, the checkpoint is
restored on other topologies, and a killed process must take the other down with a
clear message. The unit tests of the pieces (config resolution, per-process rows,
host-drawn batches) run in this process.
"""

import json
import os
import signal
import time

import jax
import numpy as np
import pytest

from experiments import recipes
from experiments.configs import digits_lt
from jaxloss import distributed
from jaxloss.checkpoint import Checkpointer
from jaxloss.parallel import DataParallel
from tools import launch_local

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


def test_host_input_equals_device_input_bitwise(tfds_dir, tmp_path):
  """The per-process input path (indices drawn on the host with the step's key,
  rows gathered and assembled) trains exactly what the on-device sampler trains."""
  a = recipes.run(_config(tfds_dir, train_input="device"),
                               str(tmp_path / "device"))
  b = recipes.run(_config(tfds_dir, train_input="host"),
                               str(tmp_path / "host"))
  assert (a["train_input"], b["train_input"]) == ("device", "host")
  state_a = Checkpointer(str(tmp_path / "device" / "checkpoints")).restore_host()
  state_b = Checkpointer(str(tmp_path / "host" / "checkpoints")).restore_host()
  jax.tree.map(np.testing.assert_array_equal, state_a, state_b)
  assert a["uar"] == b["uar"] and a["per_class_recall"] == b["per_class_recall"]
  assert a["num_processes"] == 1


def test_bad_train_input_is_rejected(tfds_dir, tmp_path):
  with pytest.raises(ValueError, match="config.train_input must be one of"):
    recipes.run(_config(tfds_dir, train_input="disk"), str(tmp_path))


# --- real processes -------------------------------------------------------------------
def _run_args(workdir, tfds_dir, *extra):
  return ["-m", "experiments.run", f"--workdir={workdir}", f"--config.data_dir={tfds_dir}",
          "--config.progress=False", *extra]


def _launch(args, processes, devices, log_dir, timeout_s=300):
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


def test_two_processes_equal_one_process_and_restore_elsewhere(tfds_dir, tmp_path):
  """2 processes x 4 devices, 20 steps of the digits-LT curriculum (the main job's
  model and schedule), equal 1 process x 8 devices to 1e-6; the 2 x 4 checkpoint then
  restores on 1 x 8 and 1 x 1 and training continues."""
  stop = ["--config.interrupt_at_step=20", "--config.checkpoint_every_steps=20"]
  two, one = str(tmp_path / "two_by_four"), str(tmp_path / "one_by_eight")
  logs = _launch(_run_args(two, tfds_dir, *stop), 2, 4, str(tmp_path / "logs2"))
  assert "Interrupted at step 20" in logs[0]
  assert "Interrupted" not in logs[1]  # only process 0 reports
  # The same host-drawn input path on one process, so that only the topology differs.
  _launch(_run_args(one, tfds_dir, *stop, "--config.train_input=host"), 1, 8,
          str(tmp_path / "logs1"))
  state_two, state_one = _state(two), _state(one)
  assert int(state_two["step"]) == int(state_one["step"]) == 20
  assert _max_diff(state_two["params"], state_one["params"]) < 1e-6
  assert _max_diff(state_two, state_one) < 1e-5  # BN statistics, momentum, sums
  np.testing.assert_array_equal(state_two["rng"], state_one["rng"])
  events = [json.loads(line) for line in open(os.path.join(two, "metrics.jsonl"))]
  assert [e["split"] for e in events] == ["meta", "init", "train", "test", "train",
                                          "test"]  # written once, by process 0

  # Restore the 2 x 4 checkpoint on 1 x 8 and on 1 x 1 and train 2 more steps; both
  # equal 1 x 8 continuing from its own step-20 checkpoint.
  cont = ["--config.interrupt_at_step=22", "--config.checkpoint_every_steps=22"]
  finals = {}
  for name, source, devices in (("ref", one, 8), ("on8", two, 8), ("on1", two, 1)):
    workdir = str(tmp_path / f"cont_{name}")
    os.system(f"cp -r {source} {workdir}")
    logs = _launch(_run_args(workdir, tfds_dir, *cont), 1, devices,
                   str(tmp_path / f"logs_{name}"))
    assert "Resumed from" in logs[0] and "at step 20" in logs[0]
    finals[name] = _state(workdir, 22)
    assert int(finals[name]["step"]) == 22
  for name in ("on8", "on1"):
    assert _max_diff(finals[name]["params"], finals["ref"]["params"]) < 1e-6, name


def _wait_for_training(workdir, procs, timeout_s=180):
  """Until the run is training and has a finalized checkpoint."""
  ckpts = os.path.join(workdir, "checkpoints")
  deadline = time.monotonic() + timeout_s
  while time.monotonic() < deadline:
    if os.path.isdir(ckpts) and any(n.isdigit() for n in os.listdir(ckpts)):
      return
    assert all(p.poll() is None for p in procs), "a process exited before training"
    time.sleep(0.2)
  raise AssertionError("training did not start")


@pytest.mark.parametrize("victim", [1, 0])
def test_killed_process_ends_the_other_with_a_clear_error(tfds_dir, tmp_path, victim):
  """SIGKILL one of two processes mid-run: the survivor exits non-zero within 60 s and
  says which process was lost (our watchdog for a worker; JAX's coordination service
  for the coordinator, process 0). Restarting both resumes from the checkpoint."""
  workdir = str(tmp_path / "run")
  log_dir = str(tmp_path / "logs")
  args = _run_args(workdir, tfds_dir, "--config.checkpoint_every_steps=8")
  procs = launch_local.start(args, num_processes=2, devices_per_process=4,
                             log_dir=log_dir, cwd=REPO)
  try:
    _wait_for_training(workdir, procs)
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
  # Restarting every process resumes from the last checkpoint and finishes.
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
  saved = ckpt.latest_step()
  ckpt.close()
  assert saved is not None and saved >= 8
  logs = _launch(_run_args(workdir, tfds_dir, "--config.checkpoint_every_steps=8",
                           "--config.interrupt_at_step=" + str(saved + 8)),
                 2, 4, str(tmp_path / "logs_restart"))
  assert f"Resumed from {os.path.join(workdir, 'checkpoints')} at step {saved}" in logs[0]


def test_single_process_trainers_refuse_several_processes(tmp_path):
  """The reranking trainer writes its files from every process: started on two it
  stops at once with an error that says which trainers support several processes."""
  log_dir = str(tmp_path / "logs")
  procs = launch_local.start(
      ["-m", "experiments.run", "--config=experiments/rerank/configs/rerank.py:smoke",
       f"--workdir={tmp_path / 'run'}"], num_processes=2, devices_per_process=1,
      log_dir=log_dir, cwd=REPO)
  codes = launch_local.wait(procs, 120)
  log = open(os.path.join(log_dir, "process_0.log")).read()
  assert codes[0] not in (0, None), codes
  assert "config.trainer='rerank' runs in one process" in log, log[-2000:]
  assert "supported by ['imbalance']" in log
