"""Where a CIFAR ResNet's gradient goes on XLA:CPU, and the candidate kernel gradients.

  python -m tools.bench.conv_grad [--threads 1 2] [--depths 8] [--batch 128]
                                  [--repeats 7] [--host_memory reuse system]
                                  [--json PATH] [--markdown PATH]

Three measurements, each thread count in its own subprocess (XLA's CPU thread pool is
fixed when JAX starts; with fewer threads than CPUs the process is pinned, as in
``tools.bench.vs_torch``):

* **gradient ÷ forward.** ``CifarResNet(depth)`` (the CIFAR-10-LT recipe's model; its
  ``cpu`` config is depth 8), batch ``--batch`` uint8 images, batch norm in training
  mode: ``jax.jit`` of the mean softmax cross-entropy (the forward pass) against
  ``jax.jit(jax.value_and_grad(...))`` of it, timed in alternating blocks in one process;
  medians of the blocks and the median of the per-block ratios; with the minor page
  faults of a gradient call and the programs' temporaries. Each ``--host_memory`` mode
  runs in its own process: ``reuse`` makes glibc's malloc keep freed memory, as
  ``experiments.run`` does by default (:mod:`jaxloss.training.host_memory`), ``system``
  keeps the system's settings, under which the gradient's 116 MiB of temporaries are
  fresh pages at every call.
* **the gradient's time by kind of op** (1 thread only: with a thread pool the thunks
  overlap), from ``jax.profiler`` (the XLA:CPU thunks of the compiled gradient, averaged
  over 5 calls): convolutions split into forward, input
  gradient and kernel gradient and by the library that runs them (``ynn_fusion``: YNNPACK;
  a plain ``convolution``: XLA's Eigen fallback), the layout transposes XLA inserts before
  the kernel-gradient convolutions, and everything else (batch norm, ReLU, the loss).
* **the kernel gradient's layout change**: ``[B, 32, 32, 16] -> [16, 32, 32, B]`` of one
  activation, alone and fused with the batch norm + ReLU that produced it;
* **candidate kernel gradients** for every 3×3 convolution shape of the model at stride 1:
  XLA's own (``jax.vjp`` of ``lax.conv_general_dilated`` with respect to the kernel),
  im2col (the patches as a ``[B·H·W, 9·C]`` matrix, one matmul with the output gradient)
  and nine shifted matmuls (one ``[C, O]`` product per tap). Each candidate is checked
  equal to XLA's before it is timed.

The tool prints a Markdown table and can write it (``--markdown``) and the JSON
(``--json``). It needs only JAX; nothing here touches PyTorch.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from typing import Callable, Dict, List, Optional, Sequence

from tools.bench.encoder import (HOST_MEMORY, REPO, _pin, _time_blocks, set_host_memory,
                                 worker_env)

CANDIDATES = ("xla", "im2col", "shifted_matmuls")


def _log(msg: str) -> None:
  print(msg, file=sys.stderr, flush=True)


def _blocks(fns: Dict[str, Callable], args: Sequence, steps: int, repeats: int
            ) -> Dict[str, List[float]]:
  """ms per call of each ``fn(*args)`` in ``repeats`` alternating blocks of ``steps``
  calls (``tools.bench.encoder._time_blocks``), after one untimed call each; a
  candidate that raises is dropped."""
  import jax  # pylint: disable=import-outside-toplevel
  calls = {}
  for name, fn in fns.items():
    jax.block_until_ready(fn(*args))
    calls[name] = lambda fn=fn: jax.block_until_ready(fn(*args))
  times, _ = _time_blocks(calls, steps, repeats)
  return times


def _resnet_programs(depth: int, batch: int):
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  from jaxloss.models.resnet import CifarResNet  # pylint: disable=import-outside-toplevel
  model = CifarResNet(num_classes=10, depth=depth)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.integers(0, 256, size=(batch, 32, 32, 3)), jnp.uint8)
  y = jnp.asarray(rng.integers(0, 10, size=(batch,)))
  variables = model.init(jax.random.PRNGKey(0), x[:2], train=False)
  stats = variables["batch_stats"]

  def loss(params):
    logits, _ = model.apply({"params": params, "batch_stats": stats}, x, train=True,
                            mutable=["batch_stats"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  return jax.jit(loss), jax.jit(jax.value_and_grad(loss)), variables["params"]


def _minor_faults() -> int:
  import resource  # pylint: disable=import-outside-toplevel
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def gradient_ratio(depth: int, batch: int, repeats: int) -> dict:
  """Forward and gradient ms (medians of ``repeats`` alternating blocks of 5 calls), the
  programs' temporaries (MiB) and the minor page faults of one gradient call (mean of
  5 after the timed blocks)."""
  import jax  # pylint: disable=import-outside-toplevel
  fwd, grad, params = _resnet_programs(depth, batch)
  times = _blocks({"forward": fwd, "gradient": grad}, (params,), 5, repeats)
  before = _minor_faults()
  for _ in range(5):
    jax.block_until_ready(grad(params))
  faults = (_minor_faults() - before) / 5
  temp = {name: fn.lower(params).compile().memory_analysis().temp_size_in_bytes / 2**20
          for name, fn in (("forward", fwd), ("gradient", grad))}
  f_ms, g_ms = times["forward"], times["gradient"]
  ratios = [g / f for f, g in zip(f_ms, g_ms)]
  return {"depth": depth, "batch": batch, "forward_ms": statistics.median(f_ms),
          "gradient_ms": statistics.median(g_ms), "ratio_min": min(ratios),
          "ratio_median": statistics.median(ratios), "ratio_max": max(ratios),
          "gradient_page_faults": faults, "forward_temp_mib": temp["forward"],
          "gradient_temp_mib": temp["gradient"]}


def _op_kind(name: str, opcode: str, shape: str, op_name: str) -> Optional[str]:
  """The kind of one top-level HLO instruction of the gradient program."""
  if name.startswith("transpose") or opcode == "transpose":
    return "layout transposes"
  conv = opcode == "convolution" or (opcode == "fusion/kCustom"
                                     and "conv_general_dilated" in op_name)
  bracket = re.search(r"\[([\d,]*)\]", shape)  # "f32[16,3,3,16]{3,2,1,0}"
  dims = [int(d) for d in bracket.group(1).split(",") if d] if bracket else []
  kernel_shaped = len(dims) == 4 and dims[1:3] == [3, 3]
  if opcode == "fusion/kCustom" and not op_name and kernel_shaped:
    conv = True  # the kernel-gradient convolutions carry no op_name
  if not conv:
    return None
  library = "Eigen" if opcode == "convolution" else "YNNPACK"
  if "transpose(" in op_name:
    # XLA names the stride-2 input gradients (base-dilated: YNNPACK takes none).
    stride = ", stride 2" if name.startswith("convolution-base-dilated") else ""
    return f"conv input gradient{stride} ({library})"
  if kernel_shaped and not op_name:
    return f"conv kernel gradient ({library})"
  return f"conv forward ({library})"


def gradient_profile(depth: int, batch: int, calls: int = 5) -> dict:
  """ms per kind of op in the compiled gradient (``jax.profiler``, mean of ``calls``)."""
  import jax  # pylint: disable=import-outside-toplevel
  from tools.bench.profile import hlo_instructions, thunk_times  # pylint: disable=import-outside-toplevel
  _, grad, params = _resnet_programs(depth, batch)
  info = hlo_instructions(grad.lower(params).compile().as_text())
  for _ in range(2):
    jax.block_until_ready(grad(params))
  try:
    per_op = thunk_times(lambda: jax.block_until_ready(grad(params)), info, calls)
  except RuntimeError as e:
    return {"depth": depth, "status": f"failed: {e}"}
  kinds: Dict[str, float] = collections.Counter()
  for name, ms in per_op.items():
    opcode, shape, op_name = info[name]
    kinds[_op_kind(name, opcode, shape, op_name)
          or "other (batch norm, ReLU, loss, reductions)"] += ms
  top = sorted(per_op.items(), key=lambda kv: -kv[1])[:12]
  return {"depth": depth, "batch": batch, "total_ms": sum(per_op.values()),
          "kinds_ms": dict(sorted(kinds.items(), key=lambda kv: -kv[1])),
          "top_ops": [{"op": n, "ms": ms, "hlo": info[n][0], "shape": info[n][1],
                       "op_name": info[n][2]} for n, ms in top]}


def transpose_costs(batch: int, repeats: int) -> dict:
  """ms of the kernel gradient's layout change of one first-stage activation
  ``[B, 32, 32, 16] -> [16, 32, 32, B]``: alone, and fused with the batch norm + ReLU that
  produced it (what XLA compiles in the ResNet's gradient)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(batch, 32, 32, 16)), jnp.float32)
  mean, scale, bias = (jnp.asarray(rng.normal(size=(16,)), jnp.float32) for _ in range(3))
  plain = jax.jit(lambda x, m, s, b: jnp.transpose(x, (3, 1, 2, 0)))
  fused = jax.jit(lambda x, m, s, b: jnp.transpose(jnp.maximum((x - m) * s + b, 0.0),
                                                   (3, 1, 2, 0)))
  times = _blocks({"plain_ms": plain, "fused_ms": fused}, (x, mean, scale, bias), 5,
                  repeats)
  return {"shape": f"{batch}×32×32×16", **{k: statistics.median(v)
                                          for k, v in times.items()}}


def kernel_gradient_candidates(batch: int, repeats: int) -> List[dict]:
  """ms of each candidate kernel gradient for the ResNet's stride-1 3×3 shapes."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from jax import lax  # pylint: disable=import-outside-toplevel
  dn = ("NHWC", "HWIO", "NHWC")
  rows = []
  for size, c, o in ((32, 3, 16), (32, 16, 16), (16, 32, 32), (8, 64, 64)):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(batch, size, size, c)), jnp.float32)
    dy = jnp.asarray(rng.normal(size=(batch, size, size, o)), jnp.float32)
    k0 = jnp.zeros((3, 3, c, o), jnp.float32)

    def conv(x, k):
      return lax.conv_general_dilated(x, k, (1, 1), ((1, 1), (1, 1)),
                                      dimension_numbers=dn)

    def xla(x, dy):
      return jax.vjp(lambda k: conv(x, k), k0)[1](dy)[0]

    def im2col(x, dy, c=c, o=o):
      p = lax.conv_general_dilated_patches(x, (3, 3), (1, 1), ((1, 1), (1, 1)),
                                           dimension_numbers=dn)  # [B, H, W, C*9]
      g = p.reshape(-1, p.shape[-1]).T @ dy.reshape(-1, o)
      return g.reshape(c, 3, 3, o).transpose(1, 2, 0, 3)

    def shifted_matmuls(x, dy, size=size):
      xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
      return jnp.stack([jnp.stack([
          jnp.einsum("bhwc,bhwo->co", xp[:, i:i + size, j:j + size], dy)
          for j in range(3)]) for i in range(3)])

    fns = {"xla": jax.jit(xla), "im2col": jax.jit(im2col),
           "shifted_matmuls": jax.jit(shifted_matmuls)}
    ref = np.asarray(fns["xla"](x, dy), np.float64)
    scale = float(np.abs(ref).max())
    row = {"shape": f"{batch}×{size}×{size}, {c}→{o}"}
    for name, fn in fns.items():
      err = float(np.abs(np.asarray(fn(x, dy), np.float64) - ref).max()) / scale
      if err > 1e-4:  # float32 sums of B·H·W = 1e5 products: ~1e-6 relative
        row[name] = {"status": f"failed: max error {err:.1e} of the largest entry"}
        continue
      row[name] = {"rel_err": err}
    times = _blocks({n: f for n, f in fns.items() if "status" not in row[n]}, (x, dy),
                    3, repeats)
    for name, t in times.items():
      row[name]["ms"] = statistics.median(t)
    rows.append(row)
  return rows


# ------------------------------------------------------------ one process per setting


def _worker(args) -> int:
  (threads,) = args.threads
  (mode,) = args.host_memory
  pinned = _pin(threads)
  reused = set_host_memory(mode)
  import jax  # pylint: disable=import-outside-toplevel
  out = {"header": {"threads": threads, "pinned_cpus": pinned, "jax": jax.__version__,
                    "xla_flags": os.environ.get("XLA_FLAGS", ""), "host_memory": mode,
                    "host_memory_reused": reused},
         "ratios": [], "profiles": [], "candidates": []}
  for depth in args.depths:
    _log(f"[threads={threads}, host memory {mode}] ResNet-{depth}: gradient ÷ forward")
    out["ratios"].append(gradient_ratio(depth, args.batch, args.repeats))
    if threads != 1:  # with a pool, thunk events overlap and Eigen's run elsewhere
      continue
    _log(f"[threads={threads}] ResNet-{depth}: profile of the gradient")
    try:
      out["profiles"].append(gradient_profile(depth, args.batch))
    except Exception as e:  # pylint: disable=broad-except
      out["profiles"].append({"depth": depth, "status": f"failed: {e}"})
  if not args.only_ratios:
    out["transpose"] = transpose_costs(args.batch, args.repeats)
    _log(f"[threads={threads}] candidate kernel gradients")
    out["candidates"] = kernel_gradient_candidates(args.batch, args.repeats)
  out["header"]["load_avg_1min_end"] = os.getloadavg()[0]
  with open(args.json, "w") as f:
    json.dump(out, f, indent=2)
  return 0


def run(threads: Sequence[int] = (1, 2), depths: Sequence[int] = (8,), batch: int = 128,
        repeats: int = 7, host_memory: Sequence[str] = HOST_MEMORY) -> dict:
  """Every thread count and host-memory mode in its own subprocess (the modes of one
  thread count one after the other; the transposes and candidates in the first mode
  only); ``{"runs": [...]}``."""
  runs = []
  for n in threads:
    for i, mode in enumerate(host_memory):
      runs.append(_run_one(n, mode, depths, batch, repeats, only_ratios=i > 0))
  return {"runs": runs}


def _run_one(n: int, mode: str, depths: Sequence[int], batch: int, repeats: int,
             only_ratios: bool) -> dict:
  with tempfile.TemporaryDirectory(prefix="bench-conv-grad-") as tmp:
    path = os.path.join(tmp, "out.json")
    cmd = [sys.executable, "-m", "tools.bench.conv_grad", "--_worker", "--threads",
           str(n), "--depths", *map(str, depths), "--batch", str(batch), "--repeats",
           str(repeats), "--json", path, "--host_memory", mode,
           *(["--only_ratios"] if only_ratios else [])]
    env = worker_env(n)
    env.pop("JAX_DISABLE_MOST_OPTIMIZATIONS", None)  # time the optimised programs
    proc = subprocess.run(cmd, env=env, cwd=str(REPO), check=False)
    if proc.returncode == 0 and os.path.exists(path):
      with open(path) as f:
        return json.load(f)
  return {"header": {"threads": n, "host_memory": mode,
                     "error": f"worker exited with {proc.returncode}"}}


def format_tables(result: dict) -> str:
  lines = ["| threads | host memory | model (batch) | forward ms | gradient ms | "
           "gradient ÷ forward (min / median / max) | page faults a gradient call | "
           "gradient temporaries MiB |", "|---:|---|---|---:|---:|---|---:|---:|"]
  for run_ in result["runs"]:
    t, mode = run_["header"]["threads"], run_["header"].get("host_memory", "system")
    if "error" in run_["header"]:
      lines.append(f"| {t} | {mode} | {run_['header']['error']} | | | | | |")
    for r in run_.get("ratios", []):
      lines.append(f"| {t} | {mode} | ResNet-{r['depth']} ({r['batch']}) | "
                   f"{r['forward_ms']:.1f} | {r['gradient_ms']:.1f} | "
                   f"{r['ratio_min']:.2f} / **{r['ratio_median']:.2f}** / "
                   f"{r['ratio_max']:.2f} | {r.get('gradient_page_faults', 0):,.0f} | "
                   f"{r.get('gradient_temp_mib', 0):.0f} |")
  lines += ["", "| threads | host memory | model | kind of op in the gradient | ms | "
            "share |",
            "|---:|---|---|---|---:|---:|"]
  for run_ in result["runs"]:
    t, mode = run_["header"]["threads"], run_["header"].get("host_memory", "system")
    for p in run_.get("profiles", []):
      if "kinds_ms" not in p:
        lines.append(f"| {t} | {mode} | ResNet-{p['depth']} | {p.get('status')} | | |")
        continue
      for kind, ms in p["kinds_ms"].items():
        lines.append(f"| {t} | {mode} | ResNet-{p['depth']} | {kind} | {ms:.1f} | "
                     f"{100 * ms / p['total_ms']:.0f} % |")
  lines += ["", "| threads | activation | transpose alone (ms) | fused with batch norm + "
            "ReLU (ms) |", "|---:|---|---:|---:|"]
  for run_ in result["runs"]:
    tr = run_.get("transpose")
    if tr:
      lines.append(f"| {run_['header']['threads']} | {tr['shape']} | {tr['plain_ms']:.2f} | "
                   f"{tr['fused_ms']:.2f} |")
  lines += ["", "| threads | kernel gradient of | " + " | ".join(CANDIDATES)
            + " (ms) |", "|---:|---|" + "---:|" * len(CANDIDATES)]
  for run_ in result["runs"]:
    t = run_["header"]["threads"]
    for r in run_.get("candidates", []):
      cells = [f"{r[c]['ms']:.2f}" if "ms" in r[c] else r[c].get("status", "")
               for c in CANDIDATES]
      lines.append(f"| {t} | {r['shape']} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m tools.bench.conv_grad",
                                   description=__doc__.split("\n")[0])
  parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
  parser.add_argument("--depths", nargs="+", type=int, default=[8])
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--json", default=None)
  parser.add_argument("--markdown", default=None)
  parser.add_argument("--host_memory", nargs="+", choices=HOST_MEMORY,
                      default=list(HOST_MEMORY),
                      help="reuse: glibc's malloc keeps freed memory, as experiments.run "
                      "does by default; system: the system's settings (default: both)")
  parser.add_argument("--_worker", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--only_ratios", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args._worker:  # pylint: disable=protected-access
    return _worker(args)
  if args.batch < 1 or args.repeats < 1 or min(args.threads) < 1:
    parser.error("--batch, --repeats and --threads must be >= 1")
  result = run(args.threads, args.depths, args.batch, args.repeats, args.host_memory)
  table = format_tables(result)
  print(table)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=2)
  if args.markdown:
    with open(args.markdown, "w") as f:
      f.write(f"`python -m tools.bench.conv_grad {' '.join(argv or sys.argv[1:])}`\n\n"
              + table + "\n")
  return 0 if all("error" not in r["header"] for r in result["runs"]) else 1


if __name__ == "__main__":
  sys.exit(main())
