"""Crash-resume soak: kill the main job with SIGKILL K times, resume, compare.

  python -m tools.ops.soak --kills 10 --seed 0            # the main job (digits-LT)
  python -m tools.ops.soak --kills 3 -- --config=experiments/imbalance/configs/digits_lt.py:smoke

1. Runs the job once uninterrupted into ``<root>/reference`` and times its compile
   (from ``metrics.jsonl`` being written, after restore, to the first step's event)
   and its steps (from there to the exit).
2. Runs it into ``<root>/soak`` K times, each time killed with SIGKILL at a random
   moment (seeded by ``--seed``) after its restore: delay = U(0, 1) × (the reference's
   compile time + its time for the steps × the fraction of steps left), then once to
   the end.
3. Compares: the final train state (parameters, optimizer, batch-norm statistics, step,
   key, sums) bitwise; every checkpoint step the two runs share, bitwise; the
   ``metrics.jsonl`` events; ``summary.json`` (all but :data:`PROCESS_FACTS`); and
   restores every
   checkpoint left in ``<root>/soak``.

Prints a table, writes ``<root>/soak.json``, and exits 1 if any check fails. Arguments
after ``--`` go to ``python -m experiments.run``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Optional, Sequence

import numpy as np


def _checkpoint_steps(workdir: str) -> list[int]:
  """Finalized checkpoint steps (orbax renames a step's folder to its number only once
  it is complete; temporary folders carry a suffix)."""
  d = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(d):
    return []
  return sorted(int(n) for n in os.listdir(d) if n.isdigit())


def _temporary_checkpoints(workdir: str) -> list[str]:
  d = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(d):
    return []
  return sorted(n for n in os.listdir(d) if not n.isdigit())


class _Job:
  """One ``python -m experiments.run`` process on a workdir."""

  def __init__(self, workdir: str, args: Sequence[str], log_path: str):
    self.workdir = workdir
    self.metrics = os.path.join(workdir, "metrics.jsonl")
    self.started = time.time()
    self._log = open(log_path, "a")  # pylint: disable=consider-using-with
    self._log.write(f"\n=== start {time.strftime('%H:%M:%S')} ===\n")
    self._log.flush()
    self.proc = subprocess.Popen(
        [sys.executable, "-m", "experiments.run", f"--workdir={workdir}", *args,
         "--config.progress=False"],
        stdout=self._log, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})

  def wait_ready(self, timeout_s: float) -> Optional[float]:
    """Seconds until training starts (``metrics.jsonl`` (re)written by this process),
    or None if the process exited first."""
    while time.time() - self.started < timeout_s:
      if os.path.exists(self.metrics) and os.path.getmtime(self.metrics) >= self.started:
        return time.time() - self.started
      if self.proc.poll() is not None:
        return None
      time.sleep(0.05)
    raise TimeoutError(f"{self.workdir}: training did not start in {timeout_s} s")

  def wait_first_step(self, timeout_s: float) -> Optional[float]:
    """Seconds until the first step's ``init`` event (compiled and ran), or None if the
    process exited first (fresh runs only; a resumed run writes no ``init``)."""
    while time.time() - self.started < timeout_s:
      if os.path.exists(self.metrics):
        with open(self.metrics) as f:
          if '"split": "init"' in f.read():
            return time.time() - self.started
      if self.proc.poll() is not None:
        return None
      time.sleep(0.02)
    raise TimeoutError(f"{self.workdir}: no first step in {timeout_s} s")

  def finish(self, timeout_s: float) -> int:
    try:
      return self.proc.wait(timeout=timeout_s)
    finally:
      self._log.close()

  def kill(self) -> int:
    self.proc.send_signal(signal.SIGKILL)
    code = self.proc.wait()
    self._log.close()
    return code


def _last_logged_step(workdir: str) -> int:
  """The step of the last complete event in ``metrics.jsonl`` (0 if none)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return 0
  with open(path) as f:
    steps = [json.loads(line)["step"] for line in f if line.endswith("\n")]
  return max(steps, default=0)


def _total_steps(workdir: str) -> int:
  with open(os.path.join(workdir, "summary.json")) as f:
    return int(json.load(f)["steps"])


def _events(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


# Facts about how the run got there (summed over its restarts), not its result: a
# killed and resumed run takes more time, segments and compilations (and its last
# segment compiles, or loads from the compilation cache, what that segment needed).
PROCESS_FACTS = ("wall_s", "train_step_compilations", "segments", "compilation")


def _summary(workdir: str) -> dict:
  with open(os.path.join(workdir, "summary.json")) as f:
    s = json.load(f)
  for key in PROCESS_FACTS:
    s.pop(key, None)
  return s


def _trees_equal(a, b) -> tuple[bool, str]:
  import jax  # pylint: disable=g-import-not-at-top
  la, ta = jax.tree_util.tree_flatten_with_path(a)
  lb, tb = jax.tree_util.tree_flatten_with_path(b)
  if ta != tb:
    return False, "tree structures differ"
  for (path, x), (_, y) in zip(la, lb):
    x, y = np.asarray(x), np.asarray(y)
    if x.dtype != y.dtype or x.shape != y.shape or x.tobytes() != y.tobytes():
      return False, f"{jax.tree_util.keystr(path)} differs"
  return True, ""


def compare(reference: str, soak: str) -> dict:
  """The checks of step 3 (see the module docstring) as a dict of results."""
  from jaxloss.checkpoint import Checkpointer  # pylint: disable=g-import-not-at-top
  temporary = _temporary_checkpoints(soak)  # before orbax opens the folder
  ref_ckpt = Checkpointer(os.path.join(reference, "checkpoints"), async_save=False)
  soak_ckpt = Checkpointer(os.path.join(soak, "checkpoints"), async_save=False)
  try:
    ref_steps, soak_steps = ref_ckpt.all_steps(), soak_ckpt.all_steps()
    final_ref = ref_ckpt.restore_host()
    final_soak = soak_ckpt.restore_host()
    final_equal, final_why = _trees_equal(final_ref, final_soak)
    shared = sorted(set(ref_steps) & set(soak_steps))
    shared_diff = []
    for step in shared:
      ok, why = _trees_equal(ref_ckpt.restore_host(step), soak_ckpt.restore_host(step))
      if not ok:
        shared_diff.append(f"{step}: {why}")
    restore_failures = []
    for step in soak_steps:
      try:
        tree = soak_ckpt.restore_host(step)
        if int(tree["step"]) != step:
          restore_failures.append(f"{step}: holds step {int(tree['step'])}")
      except Exception as e:  # pylint: disable=broad-except
        restore_failures.append(f"{step}: {type(e).__name__}: {e}")
  finally:
    ref_ckpt.close()
    soak_ckpt.close()
  summary_ref, summary_soak = _summary(reference), _summary(soak)
  summary_diff = sorted(k for k in set(summary_ref) | set(summary_soak)
                        if summary_ref.get(k) != summary_soak.get(k))
  return {
      "final_step": int(final_ref["step"]),
      "final_state_bitwise_equal": final_equal, "final_state_difference": final_why,
      "shared_checkpoint_steps": shared, "shared_checkpoints_differing": shared_diff,
      "soak_checkpoint_steps": soak_steps,
      "checkpoints_restored": len(soak_steps) - len(restore_failures),
      "restore_failures": restore_failures,
      "temporary_checkpoint_dirs_left": temporary,
      "events_equal": _events(reference) == _events(soak),
      "summary_equal_but_process_facts": not summary_diff,
      "summary_keys_differing": summary_diff,
  }


def soak(*, kills: int, seed: int, root: str, args: Sequence[str],
         timeout_s: float = 1800) -> dict:
  """Runs steps 1-3; returns the record written to ``<root>/soak.json``."""
  rng = np.random.default_rng(seed)
  reference, target = os.path.join(root, "reference"), os.path.join(root, "soak")
  for d in (reference, target):
    shutil.rmtree(d, ignore_errors=True)
  os.makedirs(root, exist_ok=True)
  log = os.path.join(root, "soak.log")
  t0 = time.time()
  job = _Job(reference, args, log)
  ready = job.wait_ready(timeout_s)
  first = job.wait_first_step(timeout_s)
  code = job.finish(timeout_s)
  if code != 0 or ready is None or first is None:
    raise RuntimeError(f"the reference run failed (exit {code}); see {log}")
  compile_s = first - ready
  steps_s = time.time() - job.started - first
  total = _total_steps(reference)
  print(f"reference: {total} steps; start-up {ready:.1f} s, compile and first step "
        f"{compile_s:.1f} s, the rest {steps_s:.1f} s -> {reference}")

  records = []
  for k in range(kills):
    resume_step = max(_checkpoint_steps(target), default=0)
    job = _Job(target, args, log)
    ready = job.wait_ready(timeout_s)
    # A moment of this run's life after restore: its compile, or any of its steps.
    # (At most 0.8 of it, so that most kills find the run still training.)
    delay = 0.8 * float(rng.uniform()) * (compile_s
                                          + steps_s * (total - resume_step) / total)
    if ready is not None:
      time.sleep(delay)
    finished = job.proc.poll() is not None
    code = job.finish(timeout_s) if finished else job.kill()
    record = {"kill": k + 1, "resumed_from_step": resume_step,
              "delay_after_start_s": round(delay, 2),
              "killed": not finished, "exit": code,
              "last_logged_step": _last_logged_step(target),
              "checkpoints_after": _checkpoint_steps(target),
              "temporary_dirs_after": _temporary_checkpoints(target)}
    records.append(record)
    print(f"kill {k + 1:2d}: resumed from step {resume_step:4d}, SIGKILL "
          f"{delay:5.2f} s after restore, after logging step "
          f"{record['last_logged_step']:4d} -> last checkpoint "
          f"{max(record['checkpoints_after'], default=0)}"
          + ("" if record["killed"] else "  (had already finished)"))
  job = _Job(target, args, log)
  code = job.finish(timeout_s)
  if code != 0:
    raise RuntimeError(f"the final resumed run failed (exit {code}); see {log}")
  result = compare(reference, target)
  ok = (result["final_state_bitwise_equal"] and not result["shared_checkpoints_differing"]
        and not result["restore_failures"] and result["events_equal"]
        and result["summary_equal_but_process_facts"])
  out = {"kills": kills, "seed": seed, "args": list(args), "total_steps": total,
         "reference_compile_s": round(compile_s, 2),
         "reference_steps_s": round(steps_s, 2), "kill_records": records,
         "kills_landed": sum(r["killed"] for r in records),
         "kills_mid_save": mid_save_kills(records), **result, "ok": ok,
         "wall_s": round(time.time() - t0, 1)}
  with open(os.path.join(root, "soak.json"), "w") as f:
    json.dump(out, f, indent=2)
  return out


def mid_save_kills(records: Sequence[dict]) -> int:
  """Kills that left a new half-written (temporary) checkpoint folder behind."""
  count, before = 0, set()
  for r in records:
    after = set(r["temporary_dirs_after"])
    count += bool(after - before)
    before = after
  return count


def format_report(out: dict) -> str:
  rows = [
      ("SIGKILLs that found the run running", f"{out['kills_landed']} of {out['kills']}"),
      ("SIGKILLs that left a half-written checkpoint",
       mid_save_kills(out["kill_records"])),
      ("final state bitwise equal", out["final_state_bitwise_equal"]),
      ("shared checkpoints bitwise equal",
       f"{len(out['shared_checkpoint_steps']) - len(out['shared_checkpoints_differing'])}"
       f" of {len(out['shared_checkpoint_steps'])}"),
      ("checkpoints on disk that restore",
       f"{out['checkpoints_restored']} of {len(out['soak_checkpoint_steps'])}"),
      ("metrics.jsonl events equal", out["events_equal"]),
      ("summary.json equal (but " + ", ".join(PROCESS_FACTS) + ")",
       out["summary_equal_but_process_facts"]),
      ("temporary checkpoint dirs left", len(out["temporary_checkpoint_dirs_left"])),
  ]
  width = max(len(r[0]) for r in rows)
  lines = [f"| {'check':<{width}} | result |", f"|{'-' * (width + 2)}|--------|"]
  lines += [f"| {name:<{width}} | {value} |" for name, value in rows]
  lines.append(f"soak {'PASSED' if out['ok'] else 'FAILED'} in {out['wall_s']:.0f} s")
  return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--kills", type=int, default=10, help="SIGKILLs (>= 0)")
  parser.add_argument("--seed", type=int, default=0, help="seeds the kill moments")
  parser.add_argument("--root", default="workdirs/soak")
  parser.add_argument("--timeout_s", type=float, default=1800)
  parser.add_argument("args", nargs=argparse.REMAINDER,
                      help="after --: arguments for python -m experiments.run")
  a = parser.parse_args(argv)
  if a.kills < 0:
    parser.error(f"--kills must be >= 0, got {a.kills}")
  args = a.args[1:] if a.args[:1] == ["--"] else a.args
  out = soak(kills=a.kills, seed=a.seed, root=a.root, args=args, timeout_s=a.timeout_s)
  print(format_report(out))
  print(f"-> {os.path.join(a.root, 'soak.json')}")
  return 0 if out["ok"] else 1


if __name__ == "__main__":
  sys.exit(main())
