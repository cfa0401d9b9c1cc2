"""Cost of the training-health monitors: the train step with monitors on vs off.

  python -m tools.bench.step [--variants main supcon] [--steps 50] [--repeats 15]
                             [--json PATH]

Builds the main job's jitted, data-parallel train step (``experiments.imbalance.build``,
digits-LT, four-stage curriculum) twice, identical except for ``config.monitor.enabled``:
*off* accumulates the foundation step's sums (loss, grad norm, clipped, skipped); *on*
adds what the monitors read (per-term losses, max grad norm, non-finite gradient
elements, the predicted-class histogram). Each repeat runs ``--steps`` steps of each
step in alternation (off, on, on, off, ...), so drift in the machine hits both alike; a
step's time is the median over repeats of (time for the block) / steps. Prints a table
with the ratio on / off (target: within 3 %, i.e. <= 1.03).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

VARIANTS = {"main": None, "supcon": "supcon"}


def build_step(config):
  """``(step, state, data)``: the recipe's train step as ``experiments.run`` builds it
  for ``config`` (not yet called, so not yet compiled). ``data`` is the whole training
  set on the device; for a recipe with ``sequence_buckets`` (host input) it is its
  first ``batch_size`` examples, cut to their bucket as the loop cuts a batch."""
  import jax
  import numpy as np
  from experiments import recipes
  from jaxloss.training import loop
  recipe = recipes.builder(config)(config)  # config.trainer's build (imbalance, rerank)
  dp = loop.data_parallel(config)  # with the config's cpu_compiler_options
  host = recipe.sequence_buckets is not None
  step = dp.launch_train_step(loop.step_body(recipe, dp.num_devices, host=host),
                              batch_sharded=host)
  state = loop.init_state(recipe)
  state = dp.replicate(state if host else loop.with_sampler_cache(recipe, state))
  fields = (*recipe.input_keys, "label")
  if host:
    drawn = np.arange(recipe.batch_size)
    part = {k: jax.tree.map(lambda x: x[drawn], recipe.train[k]) for k in fields}
    part = loop.cut_to_bucket(part, recipe.sequence_buckets, drawn)
    data = dp.assemble_batch(part, recipe.batch_size)
  else:
    data = dp.replicate({k: recipe.train[k] for k in fields})
  return step, state, data


def _step_and_state(config, monitor: bool):
  """``(step, state, data)`` of :func:`build_step` with the monitors on or off, after
  one call (compiled)."""
  import jax
  config = config.copy_and_resolve_references()
  config.monitor.enabled = monitor
  step, state, data = build_step(config)
  state, _ = step(state, data)  # compile
  jax.block_until_ready(state)
  return step, state, data


def run(variants=("main", "supcon"), steps: int = 50, repeats: int = 15) -> list[dict]:
  """Median per-step wall time (ms) with monitors off and on, per variant."""
  import jax
  from experiments.imbalance.configs import digits_lt
  rows = []
  for name in variants:
    config = digits_lt.get_config(VARIANTS[name])
    runners = {m: list(_step_and_state(config, m)) for m in (False, True)}
    times = {False: [], True: []}
    for r in range(repeats):
      order = (False, True) if r % 2 == 0 else (True, False)
      for m in order:
        step, state, data = runners[m]
        t = time.perf_counter()
        for _ in range(steps):
          state, _ = step(state, data)
        jax.block_until_ready(state)
        times[m].append((time.perf_counter() - t) / steps * 1e3)
        runners[m][1] = state
    off, on = statistics.median(times[False]), statistics.median(times[True])
    rows.append({"variant": name, "off_ms": off, "on_ms": on, "ratio": on / off,
                 "off_min_ms": min(times[False]), "on_min_ms": min(times[True]),
                 "steps": steps, "repeats": repeats,
                 "devices": jax.device_count(), "backend": jax.default_backend()})
  return rows


def format_table(rows) -> str:
  head = (f"{'variant':<8} {'off ms/step':>12} {'on ms/step':>11} {'on/off':>8} "
          f"{'target':>8}  verdict")
  lines = [head, "-" * len(head)]
  for r in rows:
    verdict = "met" if r["ratio"] <= 1.03 else "MISSED"
    lines.append(f"{r['variant']:<8} {r['off_ms']:>12.3f} {r['on_ms']:>11.3f} "
                 f"{r['ratio']:>8.3f} {'<= 1.03':>8}  {verdict}")
  if rows:
    r = rows[0]
    lines.append(f"(median of {r['repeats']} alternating blocks of {r['steps']} steps; "
                 f"{r['devices']} {r['backend']} device(s))")
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m tools.bench.step",
                                   description=__doc__.splitlines()[0])
  parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS),
                      default=["main", "supcon"])
  parser.add_argument("--steps", type=int, default=50)
  parser.add_argument("--repeats", type=int, default=15)
  parser.add_argument("--json", default=None)
  args = parser.parse_args(argv)
  if args.steps < 1 or args.repeats < 1:
    parser.error("--steps and --repeats must be >= 1")
  rows = run(args.variants, args.steps, args.repeats)
  print(format_table(rows))
  if args.json:
    with open(args.json, "w") as f:
      json.dump(rows, f, indent=2)
  return 0


if __name__ == "__main__":
  sys.exit(main())
