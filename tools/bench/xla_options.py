"""Which recipes' steps should compile with XLA:CPU's earlier element-wise emitters.

  python -m tools.bench.xla_options [--workloads digits_cnn resnet8 bilstm sasrec joint_nlu]
                                    [--steps 3] [--blocks 6] [--calls 5] [--out PATH]

For each workload of ``tools.bench.vs_torch`` the recipe's train step (as
``tools.bench.step.build_step`` builds it, with ``cpu_compiler_options = {}``) is lowered
once and compiled twice in one process: with XLA:CPU's defaults (its MLIR fusion
emitters) and with ``{"xla_cpu_use_fusion_emitters": False}``
(``experiments.configs.runtime.CONV_CPU_COMPILER_OPTIONS``). Reported per workload:

* ``compile s``: each compilation's wall time, the better of two (compiled anew, JAX's
  in-memory caches cleared, in the order defaults, options, options, defaults, so the
  process's first compile, which pays one-time set-up, is not charged to one side);
* ``max diff``: the largest absolute difference between the two programs' metrics and
  final state after ``--steps`` steps from the same state (0.0: the same to the bit);
* ``step ms``: median over ``--blocks`` alternating blocks of ``--calls`` steps each, and
  the per-block ratio options ÷ defaults (min / median / max), so that drift in the
  machine hits both alike.

The image recipes set the option where it compiles faster and computes the same values
at the same speed; the others keep XLA's defaults (``docs/bench_compile.md``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Dict, List, Sequence

from experiments.configs.runtime import CONV_CPU_COMPILER_OPTIONS as OPTIONS

DEFAULT_WORKLOADS = ("digits_cnn", "resnet8", "bilstm", "sasrec", "joint_nlu")


def _copy(tree):
  import jax  # pylint: disable=import-outside-toplevel
  return jax.tree.map(lambda x: x.copy() if hasattr(x, "copy") else x, tree)


def _max_diff(a, b) -> float:
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  diffs = [float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
           for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)) if np.size(x)]
  return max(diffs, default=0.0)


def measure(workload: str, steps: int = 3, blocks: int = 6, calls: int = 5) -> dict:
  """One workload's row (see the module docstring): ``compile_s`` (seconds, the better
  of two per side) and ``compile_all_s``, ``max_diff`` (float, over metrics and state),
  ``step_ms`` (median milliseconds a step per side) and the per-block ratio options ÷
  defaults (``ratio_min``, ``ratio_median``, ``ratio_max``).

  Raises:
    KeyError: ``workload`` is not one of ``tools.bench.vs_torch.WORKLOADS``.
  """
  import jax  # pylint: disable=import-outside-toplevel
  from tools.bench import vs_torch  # pylint: disable=import-outside-toplevel
  from tools.bench.step import build_step  # pylint: disable=import-outside-toplevel
  config = vs_torch.workload_config(workload)
  config.cpu_compiler_options = {}
  step, state, data = build_step(config)
  lowered = step.lower(state, data)
  compile_s: Dict[str, List[float]] = {"defaults": [], "options": []}
  compiled = {}
  for side in ("defaults", "options", "options", "defaults"):
    jax.clear_caches()  # JAX keeps compiled programs in memory: compile anew each time
    t = time.perf_counter()
    compiled[side] = lowered.compile(
        compiler_options=dict(OPTIONS) if side == "options" else {})
    compile_s[side].append(time.perf_counter() - t)

  def run(side, start, n):
    s, metrics = start, None
    for _ in range(n):
      s, metrics = compiled[side](s, data)
    jax.block_until_ready(s)
    return s, metrics

  outs = {}
  for side in compiled:
    final, metrics = run(side, _copy(state), steps)
    outs[side] = jax.device_get((final, metrics))
  times: Dict[str, List[float]] = {"defaults": [], "options": []}
  current = {side: _copy(state) for side in compiled}
  for b in range(blocks):
    for side in (("defaults", "options") if b % 2 == 0 else ("options", "defaults")):
      t = time.perf_counter()
      current[side], _ = run(side, current[side], calls)
      times[side].append((time.perf_counter() - t) / calls)
  ratios = sorted(o / d for o, d in zip(times["options"], times["defaults"]))
  return {"workload": workload, "compile_s": {k: min(v) for k, v in compile_s.items()},
          "compile_all_s": compile_s,
          "max_diff": _max_diff(outs["defaults"], outs["options"]), "steps": steps,
          "step_ms": {k: 1e3 * statistics.median(v) for k, v in times.items()},
          "ratio_min": ratios[0], "ratio_median": statistics.median(ratios),
          "ratio_max": ratios[-1], "blocks": blocks, "calls": calls}


def markdown(rows: Sequence[dict]) -> str:
  """The rows as a Markdown table."""
  lines = ["| workload | compile s, defaults / options | max diff after the steps | "
           "step ms, defaults / options | options ÷ defaults (min / median / max) |",
           "|---|---:|---:|---:|---:|"]
  for r in rows:
    c, t = r["compile_s"], r["step_ms"]
    lines.append(
        f"| {r['workload']} | {c['defaults']:.2f} / {c['options']:.2f} | "
        f"{r['max_diff']:.1e} | {t['defaults']:.2f} / {t['options']:.2f} | "
        f"{r['ratio_min']:.3f} / **{r['ratio_median']:.3f}** / {r['ratio_max']:.3f} |")
  return "\n".join(lines)


def main(argv=None) -> int:
  from tools.bench.vs_torch import WORKLOADS  # pylint: disable=import-outside-toplevel
  from tools.reports import tables  # pylint: disable=import-outside-toplevel
  parser = argparse.ArgumentParser(prog="python -m tools.bench.xla_options",
                                   description=__doc__.splitlines()[0])
  parser.add_argument("--workloads", nargs="+", default=list(DEFAULT_WORKLOADS),
                      choices=sorted(WORKLOADS))
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--blocks", type=int, default=6)
  parser.add_argument("--calls", type=int, default=5)
  parser.add_argument("--out", default=None,
                      help="writes OUT.md (the table) and OUT.json (the rows)")
  args = parser.parse_args(argv)
  for name in ("steps", "blocks", "calls"):
    if getattr(args, name) < 1:
      parser.error(f"--{name} must be >= 1")
  t0 = time.time()
  rows = []
  for w in args.workloads:
    rows.append(measure(w, args.steps, args.blocks, args.calls))
    print(f"{w}: done", file=sys.stderr, flush=True)
  table = markdown(rows)
  print(table)
  if args.out:
    tables.write_outputs(args.out, table, {"rows": rows, "options": OPTIONS,
                                           "wall_s": round(time.time() - t0, 1)},
                         command="python -m tools.bench.xla_options " + " ".join(
                             argv if argv is not None else sys.argv[1:]))
  return 0


if __name__ == "__main__":
  sys.exit(main())
