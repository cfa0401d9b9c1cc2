"""Plays several hosts on one machine: N local processes of one jaxloss command.

  python -m tools.ops.launch_local --processes 2 --devices_per_process 4 -- \\
      -m experiments.run --workdir=/tmp/mp --config.num_epochs=2

Each process gets ``JAXLOSS_COORDINATOR_ADDRESS`` (``localhost:<free port>``),
``JAXLOSS_NUM_PROCESSES`` and ``JAXLOSS_PROCESS_ID``, ``JAX_PLATFORMS=cpu`` and
``--xla_force_host_platform_device_count=<devices_per_process>`` in ``XLA_FLAGS`` (in
place of any device count there; the caller's other XLA flags are kept), so
``jaxloss.distributed.initialize`` joins them into one run of N × devices CPU devices
with gloo collectives (what ``tests/distributed_test.py`` does). Output goes to
``<log_dir>/process_<i>.log``; the exit status is the first non-zero status of any
process (0 if all succeed).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from typing import Optional, Sequence

from jaxloss import distributed


def free_port() -> int:
  """A TCP port that was free a moment ago (for the coordinator)."""
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def with_device_count(xla_flags: str, devices_per_process: int) -> str:
  """``xla_flags`` (a space-separated ``XLA_FLAGS`` string) without its
  ``--xla_force_host_platform_device_count`` (if any), the other flags in their order,
  and that flag set to ``devices_per_process`` at the end.

  >>> with_device_count("--xla_force_host_platform_device_count=8 --xla_dump_to=/tmp/d", 4)
  '--xla_dump_to=/tmp/d --xla_force_host_platform_device_count=4'
  >>> with_device_count("", 2)
  '--xla_force_host_platform_device_count=2'
  """
  flag = "--xla_force_host_platform_device_count"
  kept = [f for f in xla_flags.split() if f.split("=")[0] != flag]
  return " ".join([*kept, f"{flag}={devices_per_process}"])


def process_env(process_id: int, num_processes: int, port: int,
                devices_per_process: int, base: Optional[dict] = None) -> dict:
  """The environment of local process ``process_id`` of ``num_processes``."""
  env = dict(os.environ if base is None else base)
  env.update({
      distributed.ENV_COORDINATOR: f"localhost:{port}",
      distributed.ENV_NUM_PROCESSES: str(num_processes),
      distributed.ENV_PROCESS_ID: str(process_id),
      "JAX_PLATFORMS": "cpu",
      "XLA_FLAGS": with_device_count(env.get("XLA_FLAGS", ""), devices_per_process),
      "PYTHONUNBUFFERED": "1",
  })
  return env


def start(args: Sequence[str], *, num_processes: int, devices_per_process: int,
          log_dir: str, port: Optional[int] = None, cwd: Optional[str] = None
          ) -> list[subprocess.Popen]:
  """Starts ``python <args>`` as ``num_processes`` cooperating processes; returns the
  ``Popen`` objects (process i logs to ``log_dir/process_<i>.log``).

  Raises:
    ValueError: ``num_processes`` or ``devices_per_process`` < 1.
  """
  if num_processes < 1 or devices_per_process < 1:
    raise ValueError(f"num_processes and devices_per_process must be >= 1, got "
                     f"{num_processes} and {devices_per_process}")
  os.makedirs(log_dir, exist_ok=True)
  port = port or free_port()
  procs = []
  for i in range(num_processes):
    log = open(os.path.join(log_dir, f"process_{i}.log"), "w")  # pylint: disable=consider-using-with
    procs.append(subprocess.Popen(
        [sys.executable, *args], env=process_env(i, num_processes, port,
                                                 devices_per_process),
        stdout=log, stderr=subprocess.STDOUT, cwd=cwd))
    log.close()
  return procs


def wait(procs: Sequence[subprocess.Popen], timeout_s: float) -> list[Optional[int]]:
  """Exit statuses after at most ``timeout_s`` (None for a process still running, which
  is then killed)."""
  deadline = time.monotonic() + timeout_s
  codes = []
  for p in procs:
    try:
      codes.append(p.wait(timeout=max(0.0, deadline - time.monotonic())))
    except subprocess.TimeoutExpired:
      p.kill()
      p.wait()
      codes.append(None)
  return codes


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--processes", type=int, default=2)
  parser.add_argument("--devices_per_process", type=int, default=4)
  parser.add_argument("--log_dir", default="workdirs/launch_local")
  parser.add_argument("--timeout_s", type=float, default=3600)
  parser.add_argument("args", nargs=argparse.REMAINDER,
                      help="after --: the python arguments, e.g. -m experiments.run ...")
  a = parser.parse_args(argv)
  args = a.args[1:] if a.args[:1] == ["--"] else a.args
  if not args:
    parser.error("give the command after --, e.g. -- -m experiments.run")
  procs = start(args, num_processes=a.processes,
                devices_per_process=a.devices_per_process, log_dir=a.log_dir)
  codes = wait(procs, a.timeout_s)
  for i, c in enumerate(codes):
    print(f"process {i}: exit {c}  log {os.path.join(a.log_dir, f'process_{i}.log')}")
  bad = [c for c in codes if c != 0]
  return (bad[0] if bad[0] is not None else 1) if bad else 0


if __name__ == "__main__":
  sys.exit(main())
