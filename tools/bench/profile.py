"""Where each recipe's bare step spends its time on XLA:CPU, by kind of op.

  python -m tools.bench.profile [--workloads digits_cnn resnet8 resnet32 bilstm sasrec
                                             joint_nlu]
                                [--calls 5] [--top 5] [--json PATH] [--markdown PATH]

For each workload of ``tools.bench.vs_torch`` (the recipe's model, batch and optimizer),
the ``jaxloss bare`` step (:func:`tools.bench.vs_torch.bare_program`: the loss, its
gradient and the update, one ``jax.jit``) is compiled, run twice, then run ``--calls``
times under ``jax.profiler``. Each XLA:CPU thunk the trace records is matched by name
to its instruction in the compiled HLO, and its time (ms a step, the mean over the
calls) is put in one class:

* ``matrix products``: ``dot`` instructions and the fusions that contain one (a
  YNNPACK fusion is named after its root, e.g. the ``reduce_sum`` of a softmax's
  gradient fused after the attention's batched product; :func:`fused_products`):
  dense layers, attention, LSTM gates;
* ``convolutions``: ``convolution`` instructions (XLA's Eigen fallback) and YNNPACK
  convolution fusions, the kernel gradients included
  (:func:`tools.bench.conv_grad._op_kind`);
* ``layout copies and transposes``: ``copy`` and ``transpose`` instructions and
  fusions rooted in one;
* ``gathers and scatters``: embedding look-ups and their gradients;
* ``element-wise and reductions``: every other fusion (activations, normalisation,
  softmax, the loss, the optimizer's update);
* ``other``: the rest (concatenations, slices, control flow, custom calls).

Thunks inside a ``while`` loop (an LSTM's ``lax.scan``) are recorded once per
iteration and summed. The process runs on 1 thread (pinned, XLA's multi-threaded
Eigen off, ``tools.bench.encoder.worker_env``): with a thread pool the thunks overlap
and their times no longer add up to the step. ``profiled ms`` is that sum; ``step ms``
the median of 5 plain calls, for comparison (the difference is the runtime's own
dispatch between thunks and the profiler's cost).

Prints a Markdown table (one row per workload: the step, each class's ms and share)
and the ``--top`` slowest instructions of each; ``--json`` / ``--markdown`` write them.
Needs only JAX.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from tools.bench.encoder import REPO, _pin, set_host_memory, worker_env

CLASSES = ("matrix products", "convolutions", "layout copies and transposes",
           "gathers and scatters", "element-wise and reductions", "other")
Instruction = Tuple[str, str, str]  # (opcode, with "/<fusion kind>"), shape, op_name


def hlo_instructions(text: str) -> Dict[str, Instruction]:
  """Every instruction of a compiled HLO module's text (every computation, so the
  bodies of ``while`` loops too): ``{name: (opcode, shape, op_name)}``, the opcode of
  a fusion with its kind (``"fusion/kCustom"``), ``op_name`` from the metadata (``""``
  without)."""
  info = {}
  for line in text.splitlines():
    m = re.match(r"\s+(?:ROOT )?%(\S+) = (\S+) ([\w-]+)\(", line)
    if m:
      kind = re.search(r"kind=(\w+)", line)
      meta = re.search(r'op_name="([^"]+)"', line)
      info[m.group(1)] = (m.group(3) + ("/" + kind.group(1) if kind else ""),
                          m.group(2), meta.group(1) if meta else "")
  return info


def fused_products(text: str) -> Dict[str, str]:
  """The fusions of a compiled HLO module's text that contain a product:
  ``{fusion name: "dot" or "convolution"}`` (a convolution wins when both are fused).
  YNNPACK fusions name themselves after their root instruction (``reduce_sum``, say),
  so the product inside one is found here, in the computation it calls."""
  inside: Dict[str, str] = {}
  current = None
  for line in text.splitlines():
    head = re.match(r"%?(\S+) \(.*\{$", line)
    if head and not line.startswith(" "):
      current = head.group(1)
      continue
    if line.startswith("}"):
      current = None
    elif current is not None:
      op = re.match(r"\s+(?:ROOT )?%\S+ = \S+ ([\w-]+)\(", line)
      if op and op.group(1) in ("dot", "convolution") and inside.get(current) != \
          "convolution":
        inside[current] = op.group(1)
  found = {}
  for line in text.splitlines():
    m = re.match(r"\s+(?:ROOT )?%(\S+) = \S+ fusion\(.*calls=%([\w.-]+)", line)
    if m and m.group(2) in inside:
      found[m.group(1)] = inside[m.group(2)]
  return found


def thunk_times(call: Callable[[], object], names: Dict[str, Instruction],
                calls: int = 5) -> Dict[str, float]:
  """ms a call of each instruction in ``names`` that ``jax.profiler`` records while
  ``call()`` (which blocks until its results are ready) runs ``calls`` times: the
  mean over the calls of the summed durations of its thunks.

  Raises:
    RuntimeError: the profiler wrote no perfetto trace.
  """
  import jax  # pylint: disable=import-outside-toplevel
  per_op: Dict[str, float] = collections.Counter()
  with tempfile.TemporaryDirectory(prefix="jaxloss-profile-") as tmp:
    with jax.profiler.trace(tmp, create_perfetto_trace=True):
      for _ in range(calls):
        call()
    files = glob.glob(os.path.join(tmp, "**", "*.trace.json.gz"), recursive=True)
    if not files:
      raise RuntimeError("jax.profiler wrote no perfetto trace")
    with gzip.open(files[0]) as f:
      events = json.load(f)
  events = events["traceEvents"] if isinstance(events, dict) else events
  for e in events:
    if e.get("ph") == "X" and e.get("name") in names:
      per_op[e["name"]] += e.get("dur", 0) / calls / 1e3
  return dict(per_op)


def op_class(name: str, opcode: str, shape: str, op_name: str,
             fused: Optional[str] = None) -> str:
  """The class (one of :data:`CLASSES`) of one instruction of a compiled step;
  ``fused``: the product a fusion contains (:func:`fused_products`), if any."""
  from tools.bench.conv_grad import _op_kind  # pylint: disable=import-outside-toplevel
  if fused == "convolution" or _op_kind(name, opcode, shape, op_name) not in (
      None, "layout transposes"):
    return "convolutions"
  if fused == "dot":
    return "matrix products"
  base = opcode.split("/")[0]
  last = op_name.rsplit("/", 1)[-1]
  if base == "dot" or (base == "fusion" and last in ("dot_general", "dot")):
    return "matrix products"
  if base in ("copy", "transpose") or name.startswith(("copy", "transpose")):
    return "layout copies and transposes"
  if base in ("gather", "scatter") or "scatter" in name or "gather" in name:
    return "gathers and scatters"
  if base == "fusion":
    return "element-wise and reductions"
  return "other"


def profile_workload(workload: str, calls: int = 5, top: int = 5) -> dict:
  """One workload's row (see the module docstring): ``step_ms``, ``profiled_ms``,
  ``classes_ms`` ({class: ms}) and ``top_ops`` (the ``top`` slowest instructions:
  ``op``, ``ms``, ``class``, ``shape``, ``op_name``).

  Raises:
    KeyError: ``workload`` is not one of ``tools.bench.vs_torch.WORKLOADS``.
  """
  import jax  # pylint: disable=import-outside-toplevel
  from tools.bench import vs_torch  # pylint: disable=import-outside-toplevel
  if workload not in vs_torch.WORKLOADS:
    raise KeyError(f"unknown workload {workload!r}; one of {sorted(vs_torch.WORKLOADS)}")
  config = vs_torch.workload_config(workload)
  step, args = vs_torch.bare_program(config, *vs_torch._model_and_batch(config))  # pylint: disable=protected-access
  compiled = step.lower(*args).compile()
  text = compiled.as_text()
  names = hlo_instructions(text)
  fused = fused_products(text)
  state = list(args[:3])
  data = args[3:]

  def call():
    *new, loss = compiled(*state, *data)
    jax.block_until_ready(loss)
    state[:] = new

  for _ in range(2):
    call()
  plain = []
  for _ in range(5):
    t = time.perf_counter()
    call()
    plain.append((time.perf_counter() - t) * 1e3)
  per_op = thunk_times(call, names, calls)
  classes = {c: 0.0 for c in CLASSES}
  for name, ms in per_op.items():
    classes[op_class(name, *names[name], fused.get(name))] += ms
  slowest = sorted(per_op.items(), key=lambda kv: -kv[1])[:top]
  return {"workload": workload, "model": vs_torch.WORKLOADS[workload][0],
          "batch": int(config.batch_size), "step_ms": statistics.median(plain),
          "profiled_ms": sum(per_op.values()), "classes_ms": classes,
          "top_ops": [{"op": n, "ms": ms, "class": op_class(n, *names[n], fused.get(n)),
                       "shape": names[n][1], "op_name": names[n][2]}
                      for n, ms in slowest]}


def markdown(result: dict) -> str:
  """The table of classes per workload, then each workload's slowest instructions."""
  rows = [r for r in result["rows"] if "classes_ms" in r]
  head = ("| workload | step ms | profiled ms | "
          + " | ".join(f"{c} ms (share)" for c in CLASSES) + " |")
  lines = [head, "|---|---:|---:|" + "---:|" * len(CLASSES)]
  for r in rows:
    total = r["profiled_ms"] or 1.0
    cells = " | ".join(f"{r['classes_ms'][c]:.1f} ({100 * r['classes_ms'][c] / total:.0f} %)"
                       for c in CLASSES)
    lines.append(f"| {r['workload']} | {r['step_ms']:.1f} | {r['profiled_ms']:.1f} | "
                 f"{cells} |")
  for r in result["rows"]:
    if "status" in r:
      lines.append(f"| {r['workload']} | {r['status']} |" + " |" * (len(CLASSES) + 1))
  for r in rows:
    lines += ["", f"Slowest instructions of `{r['workload']}`:", "",
              "| instruction | ms | class | shape | op_name |", "|---|---:|---|---|---|"]
    lines += [f"| {o['op']} | {o['ms']:.2f} | {o['class']} | `{o['shape']}` | "
              f"`{o['op_name'][-70:]}` |" for o in r["top_ops"]]
  return "\n".join(lines)


def _worker(args) -> int:
  pinned = _pin(1)
  set_host_memory("reuse")
  rows: List[dict] = []
  for w in args.workloads:
    try:
      rows.append(profile_workload(w, args.calls, args.top))
    except Exception as e:  # pylint: disable=broad-except
      rows.append({"workload": w, "status": f"failed: {type(e).__name__}: {e}"[:300]})
    print(f"[{w}] done", file=sys.stderr, flush=True)
  import jax  # pylint: disable=import-outside-toplevel
  header = {"threads": 1, "pinned_cpus": pinned, "jax": jax.__version__,
            "xla_flags": os.environ.get("XLA_FLAGS", ""), "calls": args.calls}
  with open(args.json, "w") as f:
    json.dump({"header": header, "rows": rows}, f, indent=2)
  return 0


def run(workloads: Sequence[str], calls: int = 5, top: int = 5) -> dict:
  """Profiles ``workloads`` in one 1-thread subprocess; ``{"header", "rows"}``.

  Raises:
    RuntimeError: the subprocess failed.
  """
  with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
    out = os.path.join(tmp, "rows.json")
    cmd = [sys.executable, "-m", "tools.bench.profile", "--_worker", "--workloads",
           *workloads, "--calls", str(calls), "--top", str(top), "--json", out]
    env = worker_env(1)
    env.pop("JAX_DISABLE_MOST_OPTIMIZATIONS", None)  # profile the optimised programs
    proc = subprocess.run(cmd, env=env, cwd=str(REPO), check=False)
    if proc.returncode != 0 or not os.path.exists(out):
      raise RuntimeError(f"profile worker exited with {proc.returncode}")
    with open(out) as f:
      return json.load(f)


def main(argv: Optional[Sequence[str]] = None) -> int:
  from tools.bench.vs_torch import WORKLOADS  # pylint: disable=import-outside-toplevel
  parser = argparse.ArgumentParser(prog="python -m tools.bench.profile",
                                   description=__doc__.splitlines()[0])
  parser.add_argument("--workloads", nargs="+", choices=sorted(WORKLOADS),
                      default=list(WORKLOADS))
  parser.add_argument("--calls", type=int, default=5)
  parser.add_argument("--top", type=int, default=5)
  parser.add_argument("--json", default=None)
  parser.add_argument("--markdown", default=None)
  parser.add_argument("--_worker", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.calls < 1 or args.top < 0:
    parser.error("--calls must be >= 1 and --top >= 0")
  if args._worker:  # pylint: disable=protected-access
    return _worker(args)
  result = run(args.workloads, args.calls, args.top)
  table = markdown(result)
  print(table)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=2)
  if args.markdown:
    command = "python -m tools.bench.profile " + " ".join(
        argv if argv is not None else sys.argv[1:])
    header = result.get("header", {})
    with open(args.markdown, "w") as f:
      f.write(f"`{command.strip()}` (jax {header.get('jax', '?')}, 1 thread, "
              f"{args.calls} profiled calls a step)\n\n{table}\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
