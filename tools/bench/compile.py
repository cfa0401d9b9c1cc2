"""Where the recipe step's first-call time goes: its trace + lowering and its XLA
compilation against a bare ``jax.jit`` of the same model, loss and optimizer, and against
the step with one of its features turned off.

  python -m tools.bench.compile [--workloads digits_cnn resnet8 bilstm sasrec joint_nlu]
                                [--repeats 3]
                                [--json PATH] [--markdown PATH]

Workloads are those of ``tools.bench.vs_torch``: the main job's digits CNN, CIFAR
ResNet-8 and ResNet-32, the text BiLSTM (UIT-VSFC), SASRec (the reranker) and the joint
NLU model (SNIPS). Contenders:

* ``bare``: ``tools.bench.vs_torch.bare_program``, one optimizer step of the model (its
  loss, the gradient, the batch-norm update, the config's optimizer) under ``jax.jit``;
* ``bare + dropout`` (the text BiLSTM, SASRec, the joint NLU model): the same with the
  recipe's dropout rates on and a PRNG key split once a step. The step of these
  workloads is compared with it, as ``tools.bench.vs_torch`` compares their step
  times: the ratio is then what the loop adds, not the model's dropout;
* ``step``: the recipe's train step as ``experiments.run`` builds it
  (``jaxloss.training.loop.step_body`` under ``DataParallel.launch_train_step``:
  ``jax.shard_map`` under ``jax.jit``) with everything the recipe puts in it: on-device
  sampling from the whole training set (a host-cut batch for recipes with sequence
  buckets), augmentation, curriculum, loss masks and monitor statistics;
* ``step - monitors``: the same with ``config.monitor.enabled = False``;
* ``step - curriculum``: ``config.curriculum = "erm"`` (one stage, the data sampler);
* ``step - augmentation``: ``config.augment = "none"``;
* ``step, XLA defaults`` (recipes with ``cpu_compiler_options``, the image ones): the
  step with ``config.cpu_compiler_options = {}``, compiled with XLA:CPU's defaults;
* ``bare, step's XLA options``: the bare step compiled with the recipe's
  ``cpu_compiler_options``, to tell what the options give apart from what the step adds.

A contender that does not apply to a workload (dropout on a model without it, a config
field the recipe does not have or that already has the override's value, such as the
text BiLSTM's ``augment = "none"``) is left out of its rows.

Each measurement runs in a fresh subprocess (no persistent compilation cache, JAX's
in-memory caches empty, XLA's default optimisation level) on the CPU, so no contender
profits from another's work; the contenders take turns, ``--repeats`` rounds. Reported per
contender: the medians of ``lower s`` (tracing the Python function and lowering it to
StableHLO, ``jitted.lower(*args)``), ``compile s`` (XLA, ``lowered.compile()``), their sum,
the sum ÷ the bare step's, and the program's size (lines of StableHLO text). Building
the recipe (loading the data, ``init``) is not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Sequence

from tools.bench.vs_torch import WORKLOADS

# contender -> config overrides of the recipe's step (None: the bare step)
CONTENDERS: Dict[str, dict | None] = {
    "bare": None,
    "bare + dropout": None,
    "step": {},
    "step - monitors": {"monitor.enabled": False},
    "step - curriculum": {"curriculum": "erm"},
    "step - augmentation": {"augment": "none"},
    "step, XLA defaults": {"cpu_compiler_options": {}},
    "bare, step's XLA options": None,
}
# Contenders that exist only for recipes with XLA options of their own.
WITH_OPTIONS = ("step, XLA defaults", "bare, step's XLA options")
# Every recipe's step (ResNet-32 is ResNet-8's recipe with a deeper model).
DEFAULT_WORKLOADS = ("digits_cnn", "resnet8", "bilstm", "sasrec", "joint_nlu")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def applies(workload: str, contender: str) -> bool:
  """Whether ``contender`` is defined for ``workload``: ``bare + dropout`` on models
  with dropout, a ``step - ...`` override on configs that have its field."""
  from tools.bench import vs_torch  # pylint: disable=import-outside-toplevel
  config = vs_torch.workload_config(workload)
  if contender == "bare + dropout":
    return vs_torch.has_dropout(config)
  if contender in WITH_OPTIONS:
    return bool(config.get("cpu_compiler_options"))
  for key, value in (CONTENDERS[contender] or {}).items():
    node = config
    for k in key.split("."):
      if k not in node:
        return False
      node = node[k]
    if node == value:  # already so: the contender would be the step itself
      return False
  return True


def _program(workload: str, contender: str):
  """``(jitted, args)`` of one contender."""
  from tools.bench import vs_torch  # pylint: disable=import-outside-toplevel
  config = vs_torch.workload_config(workload)
  overrides = CONTENDERS[contender]
  if overrides is None:
    dropout = contender == "bare + dropout"
    model, variables, x, y = vs_torch._model_and_batch(config, dropout=dropout)  # pylint: disable=protected-access
    jitted, args = vs_torch.bare_program(config, model, variables, x, y, dropout=dropout)
    if contender == "bare, step's XLA options":
      import jax  # pylint: disable=import-outside-toplevel
      jitted = jax.jit(jitted, compiler_options=config.cpu_compiler_options.to_dict())
    return jitted, args
  from tools.bench.step import build_step  # pylint: disable=import-outside-toplevel
  config = config.copy_and_resolve_references()
  for key, value in overrides.items():
    node = config
    *path, leaf = key.split(".")
    for k in path:
      node = node[k]
    node[leaf] = value
  step, state, data = build_step(config)
  return step, (state, data)


def measure(workload: str, contender: str) -> dict:
  """Lowers and compiles one contender in this process; its times and size."""
  jitted, args = _program(workload, contender)
  t0 = time.perf_counter()
  lowered = jitted.lower(*args)
  t1 = time.perf_counter()
  lowered.compile()
  t2 = time.perf_counter()
  return {"workload": workload, "contender": contender, "lower_s": t1 - t0,
          "compile_s": t2 - t1, "hlo_lines": lowered.as_text().count("\n")}


def _worker(args) -> int:
  row = measure(args.workloads[0], args.contender)
  with open(args.json, "w") as f:
    json.dump(row, f)
  return 0


def _env() -> Dict[str, str]:
  env = dict(os.environ)
  env.setdefault("JAX_PLATFORMS", "cpu")
  for k in ("JAX_DISABLE_MOST_OPTIMIZATIONS", "JAX_COMPILATION_CACHE_DIR",
            "JAXLOSS_COMPILATION_CACHE"):
    env.pop(k, None)
  env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH", "")) if p)
  return env


def run(workloads: Sequence[str] = DEFAULT_WORKLOADS, repeats: int = 3,
        contenders: Sequence[str] = tuple(CONTENDERS), log=print) -> List[dict]:
  """One row per workload and applicable contender (:func:`applies`): medians over
  ``repeats`` fresh processes. ``vs_bare`` is a row's total over the total of its
  ``ratio_to``: ``bare + dropout`` for models with dropout, else ``bare``."""
  samples: Dict[tuple, list] = {}
  valid = {w: [c for c in contenders if applies(w, c)] for w in workloads}
  for r in range(repeats):
    for w in workloads:
      order = valid[w] if r % 2 == 0 else valid[w][::-1]
      for c in order:
        with tempfile.TemporaryDirectory(prefix="bench-compile-") as tmp:
          out = os.path.join(tmp, "row.json")
          cmd = [sys.executable, "-m", "tools.bench.compile", "--_worker", "--workloads",
                 w, "--contender", c, "--json", out]
          proc = subprocess.run(cmd, env=_env(), cwd=REPO, check=False,
                                capture_output=True, text=True)
          if proc.returncode != 0 or not os.path.exists(out):
            tail = (proc.stderr or "").strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"{w} / {c}: worker exited with {proc.returncode}: "
                               f"{tail[0]}")
          with open(out) as f:
            row = json.load(f)
        samples.setdefault((w, c), []).append(row)
        log(f"[round {r + 1}/{repeats}] {w} / {c}: lower {row['lower_s']:.2f} s, "
            f"compile {row['compile_s']:.2f} s")
  rows = []
  for w in workloads:
    ref = "bare + dropout" if "bare + dropout" in valid[w] else "bare"
    bare = (statistics.median(x["lower_s"] + x["compile_s"] for x in samples[(w, ref)])
            if (w, ref) in samples else None)
    for c in valid[w]:
      s = samples[(w, c)]
      lower = statistics.median(x["lower_s"] for x in s)
      comp = statistics.median(x["compile_s"] for x in s)
      total = statistics.median(x["lower_s"] + x["compile_s"] for x in s)
      row = {"workload": w, "contender": c, "lower_s": lower, "compile_s": comp,
             "total_s": total, "hlo_lines": s[0]["hlo_lines"], "repeats": len(s),
             "totals_s": [x["lower_s"] + x["compile_s"] for x in s]}
      if bare:
        row["vs_bare"] = total / bare
        row["ratio_to"] = ref
      rows.append(row)
  return rows


def markdown(rows: List[dict]) -> str:
  """The rows of :func:`run` as a Markdown table (seconds; ``÷ bare`` is the total over
  the bare step's total, with dropout for the models that have it)."""
  lines = ["| workload | contender | lower s | compile s | total s | ÷ bare | StableHLO lines |",
           "|---|---|---:|---:|---:|---:|---:|"]
  for r in rows:
    ratio = f"{r['vs_bare']:.2f}" if "vs_bare" in r else ""
    lines.append(f"| {r['workload']} | {r['contender']} | {r['lower_s']:.2f} | "
                 f"{r['compile_s']:.2f} | {r['total_s']:.2f} | {ratio} | "
                 f"{r['hlo_lines']:,} |")
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m tools.bench.compile",
                                   description=__doc__.splitlines()[0])
  parser.add_argument("--workloads", nargs="+", choices=sorted(WORKLOADS),
                      default=list(DEFAULT_WORKLOADS))
  parser.add_argument("--contenders", nargs="+", choices=list(CONTENDERS),
                      default=list(CONTENDERS))
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--json", default=None)
  parser.add_argument("--markdown", default=None)
  parser.add_argument("--contender", help=argparse.SUPPRESS)
  parser.add_argument("--_worker", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args._worker:  # pylint: disable=protected-access
    return _worker(args)
  if args.repeats < 1:
    parser.error("--repeats must be >= 1")
  t0 = time.time()
  rows = run(args.workloads, args.repeats, args.contenders,
             log=lambda m: print(m, file=sys.stderr, flush=True))
  table = markdown(rows)
  print(table)
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"rows": rows, "wall_s": round(time.time() - t0, 1),
                 "load_avg_1min_end": os.getloadavg()[0]}, f, indent=2)
  if args.markdown:
    with open(args.markdown, "w") as f:
      f.write(table + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
