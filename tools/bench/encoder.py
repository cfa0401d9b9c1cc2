"""Pretrained-encoder training step, jaxloss vs PyTorch + transformers, in tokens/s.

  python -m tools.bench.encoder [--models all-MiniLM-L6-v2 multilingual-e5-small]
                                [--batch 32] [--length 32] [--steps 5] [--repeats 7]
                                [--threads 1 2] [--json PATH] [--no-torch] [--no-compile]
                                [--no-flax-products]

One *step* is a forward and backward pass of a pretrained BERT-family encoder (a folder
name under ``../shared/models``, resolved with
``jaxloss.models.pretrained.resolve_model_dir``, or the path of a Hugging Face folder):
the scalar ``sum(mean_pool(last_hidden_state) ** 2)`` and its gradient with respect to
every parameter, on ``--batch`` x ``--length`` random token ids (seed 0, never the
padding id, attention mask all ones), float32, no dropout on either side. The
contenders:

* ``jaxloss``: ``jax.jit(jax.value_and_grad(loss))`` of
  ``jaxloss.models.load_pretrained(folder).module`` with ``deterministic=True``, the
  parameters passed as arguments; every call ends in ``block_until_ready`` (the steps
  of a training loop depend on each other, so none may overlap the next).
* ``jaxloss, flax Dense products`` (skip with ``--no-flax-products``): the same with
  ``BertEncoder(..., flat_products=False)``, whose dense layers make
  ``flax.linen.Dense``'s own products; the kernel gradient of a ``[B, T, D]`` input then contracts two axes,
  which XLA:CPU runs about half as fast (``jaxloss.models.dense``);
* ``torch eager``: ``transformers.AutoModel.from_pretrained(folder)`` in float32,
  ``eval()`` (no dropout) with gradients on, then ``zero_grad(set_to_none=True)``, the
  same loss, ``loss.backward()``.
* ``torch.compile``: the same with ``torch.compile(model)`` (default mode, a fresh
  Dynamo cache per model, a few warm-up calls); a row ``failed: <reason>`` when it does
  not work here, and a line under the table when Dynamo broke the graph.

Neither side has the pooler (``add_pooler=False`` / ``add_pooling_layer=False``), so both
differentiate the same parameters. Each thread count runs in a subprocess of this tool,
because XLA's CPU thread pool is fixed when the process starts: with ``--threads 1`` the
subprocess gets ``XLA_FLAGS=... --xla_cpu_multi_thread_eigen=false
intra_op_parallelism_threads=1`` and ``OMP_NUM_THREADS=1``; with ``n`` threads fewer than
the CPUs this process may use, it is also pinned to ``n`` of them
(``os.sched_setaffinity``, which XLA's and torch's pools both follow), so neither side can
use more cores than the other; torch gets ``torch.set_num_threads(n)`` in every case.

Inside a subprocess the contenders take turns in blocks of ``--steps`` calls (jaxloss,
jaxloss with flax's products, torch eager, torch.compile, then the reverse order next
repeat, each block after a short pause), after warm-up and compilation, so drift in the
machine's load hits all of them alike. Reported per model, thread count and contender:
``ms/step`` = the median over ``--repeats`` blocks of (block time) / steps; ``tokens/s``
= batch * length / that; ``jaxloss speed-up`` = the contender's ms / jaxloss ms (> 1:
jaxloss is faster); ``first call s`` = the first call's wall time (for jaxloss its trace + XLA compilation, for torch.compile
the graph capture + Inductor compilation plus the first run); ``loss diff`` = the
relative difference of the contender's loss from the jaxloss one on the very inputs timed
(a check that both compute the same thing; ~1e-6 in float32). torch and transformers
are optional: without them the tool says so and times the jaxloss side alone.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

DEFAULT_MODELS = ("all-MiniLM-L6-v2", "multilingual-e5-small")
TORCH_INSTALL = 'pip install torch==2.13.0 "transformers>=5"'
JAX, EAGER, COMPILED = "jaxloss", "torch eager", "torch.compile"
# The same jaxloss step with flax.linen.Dense's own products (BertEncoder(...,
# flat_products=False)): what jaxloss.models.dense's 2-D products gain.
FLAX_PRODUCTS = "jaxloss, flax Dense products"
# Calls of the compiled torch model before timing (the first one compiles; later ones
# may still recompile, e.g. for the backward graph or a guard failure).
COMPILE_WARMUP = 3
# Pause before each timed block: torch's OpenMP workers keep spinning for a while after
# a call and would otherwise always slow down the same successor.
PAUSE_S = 0.01
SINGLE_THREAD_XLA_FLAGS = ("--xla_cpu_multi_thread_eigen=false "
                           "intra_op_parallelism_threads=1")
REPO = pathlib.Path(__file__).resolve().parents[2]


def _log(msg: str) -> None:
  print(msg, file=sys.stderr, flush=True)


def _import_torch():
  """``(torch, transformers, None)``, or ``(None, None, why not)``."""
  try:
    import torch  # pylint: disable=import-outside-toplevel
    import transformers  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    return None, None, f"{e.__class__.__name__}: {e}"
  return torch, transformers, None


def _resolve(model: str) -> pathlib.Path:
  """The folder of a model name under ``../shared/models`` or of a path."""
  from jaxloss.models import pretrained  # pylint: disable=import-outside-toplevel
  return pretrained.resolve_model_dir(model)


def _absent() -> List[str]:
  """Which of torch and transformers are not installed (without importing them)."""
  return [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]


def _why(e: BaseException) -> str:
  text = " ".join(str(e).split())
  return f"{e.__class__.__name__}: {text[:300]}"


# ---------------------------------------------------------------- the contenders


def _random_ids(vocab_size: int, pad_token_id: int, batch: int, length: int,
                seed: int):
  """Token ids drawn uniformly from the vocabulary less the padding id (torch's
  embedding gives that row no gradient, and RoBERTa positions skip it), and the mask."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(seed)
  ids = rng.integers(0, vocab_size - 1, size=(batch, length))
  ids = (ids + (ids >= pad_token_id)).astype(np.int32)
  return ids, np.ones((batch, length), np.int32)


def _prepare_jax(pre, ids, mask, flat_products: bool = True):
  """``(call, info)``: the jitted value-and-grad step, compiled by its first call;
  ``flat_products=False``: the encoder with ``flax.linen.Dense``'s own products."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from jaxloss.models.bert import mean_pool  # pylint: disable=import-outside-toplevel
  module = pre.module.clone(flat_products=flat_products)

  def loss_fn(params, input_ids, attention_mask):
    hidden = module.apply({"params": params}, input_ids, attention_mask,
                          deterministic=True)
    return jnp.sum(mean_pool(hidden, attention_mask) ** 2)

  step = jax.jit(jax.value_and_grad(loss_fn))
  device = jax.devices()[0]
  params, ids, mask = jax.device_put((pre.params, ids, mask), device)
  t = time.perf_counter()
  loss, grads = jax.block_until_ready(step(params, ids, mask))
  first = time.perf_counter() - t
  jax.block_until_ready(step(params, ids, mask))  # a warm-up call, as for torch
  leaves = jax.tree_util.tree_leaves(grads)
  info = {"first_call_s": first, "loss": float(loss),
          "grad_norm": float(jnp.sqrt(sum(jnp.sum(g.astype(jnp.float32) ** 2)
                                          for g in leaves))),
          "num_params": int(sum(x.size for x in jax.tree_util.tree_leaves(params)))}
  return (lambda: jax.block_until_ready(step(params, ids, mask))), info


def _load_torch_model(torch, transformers, folder):
  # Quiet: the load report lists the checkpoint's pooler, which is left out on purpose.
  transformers.logging.set_verbosity_error()
  transformers.logging.disable_progress_bar()
  kw = {"dtype": torch.float32}
  try:
    model = transformers.AutoModel.from_pretrained(str(folder), add_pooling_layer=False,
                                                   **kw)
  except TypeError:  # an architecture without the argument: keep its pooler
    model = transformers.AutoModel.from_pretrained(str(folder), **kw)
  model.eval()  # no dropout; gradients stay on
  for p in model.parameters():
    p.requires_grad_(True)
  return model


def _prepare_torch(torch, model, ids, mask, compiled: bool):
  """``(call, info)`` of the eager (or ``torch.compile``) forward + backward step."""
  ids = torch.from_numpy(ids).long()
  mask = torch.from_numpy(mask).long()
  counters = None
  if compiled:
    # A fresh Dynamo cache per model: a recompilation of the same forward for another
    # model's shapes would otherwise mark them dynamic (slower, not like with like).
    torch._dynamo.reset()  # pylint: disable=protected-access
    try:
      from torch._dynamo.utils import counters  # pylint: disable=import-outside-toplevel
      counters.clear()
    except ImportError:
      counters = None
  forward = torch.compile(model) if compiled else model

  def step():
    model.zero_grad(set_to_none=True)
    hidden = forward(input_ids=ids, attention_mask=mask).last_hidden_state
    m = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    loss = pooled.pow(2).sum()
    loss.backward()
    return loss

  t = time.perf_counter()
  loss = step()
  first = time.perf_counter() - t
  for _ in range(COMPILE_WARMUP - 1 if compiled else 1):
    loss = step()
  grads = [p.grad for p in model.parameters() if p.grad is not None]
  info = {"first_call_s": first, "loss": float(loss.item()),
          "grad_norm": float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads))),
          "num_params": int(sum(p.numel() for p in model.parameters()))}
  if counters is not None:
    # Graph breaks leave parts of the step to eager PyTorch; several graphs are normal
    # (forward and backward are compiled separately).
    info["graph_breaks"] = int(sum(counters["graph_break"].values()))
    info["unique_graphs"] = int(counters["stats"].get("unique_graphs", 0))
  return step, info


def _time_blocks(calls: Dict[str, Callable], steps: int, repeats: int):
  """Milliseconds per call of each callable in each repeat, in alternating order.

  Returns ``({name: [ms per call, one per repeat]}, {name: why it failed})``; a callable
  that raises is dropped from the later repeats.
  """
  times = {name: [] for name in calls}
  failed = {}
  names = list(calls)
  for r in range(repeats):
    for name in (names if r % 2 == 0 else names[::-1]):
      if name in failed:
        continue
      call = calls[name]
      time.sleep(PAUSE_S)
      try:
        t = time.perf_counter()
        for _ in range(steps):
          call()
        times[name].append((time.perf_counter() - t) / steps * 1e3)
      except Exception as e:  # pylint: disable=broad-except
        failed[name] = f"failed: {_why(e)}"
  return times, failed


def prepare_contender(rows: Dict[str, dict], calls: Dict[str, Callable], row: dict,
                      make: Callable, tag: str, log: Callable[[str], None]) -> None:
  """Builds one contender: ``make()`` returns ``(call, info)``; ``row`` (with its
  ``"contender"``) goes into ``rows`` with ``status`` "ok" and ``info``, or
  "failed: <reason>" when ``make`` raises; ``call`` goes into ``calls``."""
  name = row["contender"]
  rows[name] = row = {**row, "status": "ok"}
  try:
    calls[name], info = make()
  except Exception as e:  # pylint: disable=broad-except
    row["status"] = f"failed: {_why(e)}"
    log(f"{tag}: {row['status']}")
    return
  row.update(info)
  log(f"{tag}: first call {info['first_call_s']:.2f} s"
      + (f", loss {info['loss']:.6g}" if "loss" in info else ""))


def measure(model: str, *, batch: int = 32, length: int = 32, steps: int = 5,
            repeats: int = 7, threads: Optional[int] = None, use_torch: bool = True,
            compile_torch: bool = True, seed: int = 0, flax_products: bool = True,
            log: Callable[[str], None] = _log) -> List[dict]:
  """Times one encoder's forward + backward step in this process, all contenders.

  The caller controls the threads JAX uses (see the module docstring); ``threads`` only
  sets ``torch.set_num_threads`` and labels the rows.

  Args:
    model: a folder name under ``../shared/models`` or a folder path.
    batch: sequences a step.
    length: tokens a sequence.
    steps: calls in one timed block.
    repeats: timed blocks per contender; the median is reported.
    threads: torch's intra-op threads (None: leave torch's setting).
    use_torch: time the torch contenders when torch and transformers are importable.
    compile_torch: also time ``torch.compile(model)``.
    seed: seed of the random token ids.
    flax_products: also time the jaxloss step with ``flax.linen.Dense``'s own products
      (the ``FLAX_PRODUCTS`` contender).
    log: where progress lines go.

  Returns:
    One row per contender timed or failed: ``model``, ``path``, ``layers``, ``hidden``,
    ``threads``, ``contender``, ``status`` (``"ok"`` or ``"failed: <reason>"``) and, when
    measured, ``ms`` (median ms per step), ``min_ms``, ``times_ms``, ``tokens_per_s``,
    ``first_call_s``, ``loss``, ``grad_norm``, ``num_params``; the other contenders' rows
    also ``speedup`` (their ms / jaxloss ms) and ``loss_rel_diff`` / ``grad_norm_rel_diff``
    (relative to the jaxloss values).
  """
  from jaxloss.models import load_pretrained  # pylint: disable=import-outside-toplevel
  folder = _resolve(model)
  pre = load_pretrained(folder, add_pooler=False)
  cfg = pre.config
  ids, mask = _random_ids(cfg.vocab_size, cfg.pad_token_id, batch, length, seed)
  base = {"model": folder.name, "path": str(folder), "layers": cfg.num_hidden_layers,
          "hidden": cfg.hidden_size, "batch": batch, "length": length, "steps": steps,
          "repeats": repeats, "threads": threads}
  rows: Dict[str, dict] = {}
  calls: Dict[str, Callable] = {}
  tag = f"[{folder.name}, threads={threads}]"

  def prepare(name, make):
    prepare_contender(rows, calls, {**base, "contender": name}, make, f"{tag} {name}", log)

  prepare(JAX, lambda: _prepare_jax(pre, ids, mask))
  if flax_products:
    prepare(FLAX_PRODUCTS, lambda: _prepare_jax(pre, ids, mask, flat_products=False))
  torch = None
  if use_torch:
    torch, transformers, _ = _import_torch()
  if torch is not None:
    if threads is not None:
      torch.set_num_threads(threads)
    try:
      tmodel = _load_torch_model(torch, transformers, folder)
    except Exception as e:  # pylint: disable=broad-except
      tmodel = None
      why = f"failed: {_why(e)}"
      for name in (EAGER, COMPILED) if compile_torch else (EAGER,):
        rows[name] = {**base, "contender": name, "status": why}
      log(f"{tag} torch: {why}")
    if tmodel is not None:
      base["attn_implementation"] = getattr(tmodel.config, "_attn_implementation", None)
      prepare(EAGER, lambda: _prepare_torch(torch, tmodel, ids, mask, compiled=False))
      if compile_torch:
        prepare(COMPILED, lambda: _prepare_torch(torch, tmodel, ids, mask,
                                                 compiled=True))
  log(f"{tag} timing {', '.join(calls)}: {repeats} blocks of {steps} steps each")
  times, failed = _time_blocks(calls, steps, repeats)
  for name, t in times.items():
    row = rows[name]
    if name in failed:
      row["status"] = failed[name]
    if not t:
      continue
    ms = statistics.median(t)
    row.update(ms=ms, min_ms=min(t), times_ms=t, tokens_per_s=batch * length / ms * 1e3)
  mine = rows[JAX]
  for name in (FLAX_PRODUCTS, EAGER, COMPILED):
    row = rows.get(name)
    if row is None:
      continue
    if row.get("ms") and mine.get("ms"):
      row["speedup"] = row["ms"] / mine["ms"]
    for key in ("loss", "grad_norm"):
      if key in row and key in mine:
        row[f"{key}_rel_diff"] = abs(row[key] - mine[key]) / max(abs(mine[key]), 1e-30)
  return list(rows.values())


# ------------------------------------------------------------ one process per setting


def _available_cpus() -> List[int]:
  if hasattr(os, "sched_getaffinity"):
    return sorted(os.sched_getaffinity(0))
  return list(range(os.cpu_count() or 1))


def worker_env(threads: int, env: Optional[Dict[str, str]] = None) -> Dict[str, str]:
  """The environment of the subprocess that measures ``threads`` threads."""
  env = dict(os.environ if env is None else env)
  env.setdefault("JAX_PLATFORMS", "cpu")
  env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
  if threads == 1:
    env["XLA_FLAGS"] = " ".join(
        f for f in (env.get("XLA_FLAGS", ""), SINGLE_THREAD_XLA_FLAGS) if f)
  env["PYTHONPATH"] = os.pathsep.join(
      p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
  return env


HOST_MEMORY = ("reuse", "system")


def set_host_memory(mode: str) -> bool:
  """In a worker, before JAX runs anything: ``"reuse"`` makes glibc's malloc keep freed
  memory, as ``python -m experiments.run`` does by default
  (:func:`jaxloss.training.host_memory.reuse_freed_memory`); ``"system"`` keeps the
  system's settings (``--noreuse_host_memory``). Returns whether the settings were made;
  raises ``ValueError`` for another mode. PyTorch, in the same process, gets the same
  allocator."""
  if mode not in HOST_MEMORY:
    raise ValueError(f"host memory mode must be one of {HOST_MEMORY}, got {mode!r}")
  if mode == "system":
    return False
  from jaxloss.training import host_memory  # pylint: disable=import-outside-toplevel
  return host_memory.reuse_freed_memory()


def _pin(threads: int) -> Optional[List[int]]:
  """Pins this process to ``threads`` CPUs when it may use more (before JAX starts)."""
  cpus = _available_cpus()
  if threads >= len(cpus) or not hasattr(os, "sched_setaffinity"):
    return None
  os.sched_setaffinity(0, cpus[:threads])
  return cpus[:threads]


def _worker_header(threads: int, pinned, torch_missing: Optional[str]) -> dict:
  import jax  # pylint: disable=import-outside-toplevel
  torch, transformers, _ = _import_torch()
  return {
      "threads": threads, "pinned_cpus": pinned, "cpus_used": len(_available_cpus()),
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
      "jax": jax.__version__, "backend": jax.default_backend(),
      "device": str(jax.devices()[0]),
      "torch": None if torch is None else torch.__version__,
      "transformers": None if transformers is None else transformers.__version__,
      "torch_threads": None if torch is None else torch.get_num_threads(),
      "torch_missing": torch_missing,
      "load_avg_1min_end": os.getloadavg()[0]}


def _worker(args) -> int:
  """The subprocess: one thread count, every model, results to ``args.json``."""
  (threads,) = args.threads
  pinned = _pin(threads)
  reused = set_host_memory(args.host_memory)
  missing = None
  if args.torch:
    missing = _import_torch()[2]
  rows = []
  for model in args.models:
    try:
      rows += measure(model, batch=args.batch, length=args.length, steps=args.steps,
                      repeats=args.repeats, threads=threads, use_torch=args.torch,
                      compile_torch=args.compile, seed=args.seed,
                      flax_products=args.flax_products)
    except Exception as e:  # pylint: disable=broad-except
      # E.g. a folder jaxloss cannot load: the other models still get measured.
      rows.append({"model": pathlib.Path(model).name, "path": model, "threads": threads,
                   "contender": JAX, "status": f"failed: {_why(e)}"})
      _log(f"[{model}, threads={threads}] {rows[-1]['status']}")
  header = _worker_header(threads, pinned, missing)
  header["host_memory"], header["host_memory_reused"] = args.host_memory, reused
  with open(args.json, "w") as f:
    json.dump({"header": header, "rows": rows}, f, indent=2)
  return 0


def _run_worker(threads: int, models: Sequence[str], argv: List[str]) -> dict:
  """Runs one thread count in a subprocess; its failure becomes failed rows."""
  with tempfile.TemporaryDirectory(prefix="bench-encoder-") as tmp:
    out = os.path.join(tmp, "rows.json")
    cmd = [sys.executable, "-m", "tools.bench.encoder", "--_worker",
           "--threads", str(threads), "--models", *models, "--json", out, *argv]
    proc = subprocess.run(cmd, env=worker_env(threads), cwd=str(REPO), check=False)
    if proc.returncode == 0 and os.path.exists(out):
      with open(out) as f:
        return json.load(f)
  why = f"failed: worker for {threads} thread(s) exited with {proc.returncode}"
  return {"header": {"threads": threads, "error": why},
          "rows": [{"model": pathlib.Path(m).name, "path": m, "threads": threads,
                    "contender": JAX, "status": why} for m in models]}


def run(models: Sequence[str] = DEFAULT_MODELS, batch: int = 32, length: int = 32,
        steps: int = 5, repeats: int = 7, threads: Sequence[int] = (1, 2),
        use_torch: bool = True, compile_torch: bool = True, seed: int = 0,
        flax_products: bool = True, host_memory: str = "reuse") -> dict:
  """Measures every thread count in its own subprocess.

  Returns:
    ``{"header": ..., "workers": [one header per thread count], "rows": [...]}`` with
    the rows of :func:`measure`.
  """
  paths = [str(_resolve(m).resolve()) for m in models]
  argv = ["--batch", str(batch), "--length", str(length), "--steps", str(steps),
          "--repeats", str(repeats), "--seed", str(seed), "--host_memory", host_memory]
  argv += [] if use_torch else ["--no-torch"]
  argv += [] if compile_torch else ["--no-compile"]
  argv += [] if flax_products else ["--no-flax-products"]
  header = {"python": platform.python_version(), "cpu_count": os.cpu_count(),
            "cpus_available": len(_available_cpus()),
            "load_avg_1min": os.getloadavg()[0], "batch": batch, "length": length,
            "steps": steps, "repeats": repeats, "seed": seed, "use_torch": use_torch,
            "compile_torch": compile_torch, "flax_products": flax_products,
            "host_memory": host_memory, "models": paths}
  workers, rows = [], []
  for n in threads:
    _log(f"--- {n} thread(s): subprocess")
    result = _run_worker(n, paths, argv)
    workers.append(result["header"])
    rows += result["rows"]
  header["load_avg_1min_end"] = os.getloadavg()[0]
  ok = [w for w in workers if "jax" in w]
  if ok:
    for key in ("jax", "backend", "torch", "transformers", "torch_missing"):
      header[key] = ok[0].get(key)
  return {"header": header, "workers": workers, "rows": rows}


# ---------------------------------------------------------------------- output


def _fmt(x, spec: str, suffix: str = "") -> str:
  if x is None or (isinstance(x, float) and not math.isfinite(x)):
    return "n/a"
  return format(x, spec) + suffix


COLUMNS = ("model", "threads", "contender", "ms/step", "tokens/s", "jaxloss speed-up",
           "first call s", "loss diff")


def format_table(results: dict) -> str:
  """The markdown table of the rows and the lines that say how they were measured."""
  h = results.get("header", {})
  lines = []
  if "jax" in h:
    torch_part = (f"torch {h['torch']}, transformers {h['transformers']}"
                  if h.get("torch") else "torch/transformers not importable")
    lines.append(f"jax {h['jax']} ({h.get('backend')}) | {torch_part} | python "
                 f"{h.get('python')} | CPUs {h.get('cpu_count')} (load "
                 f"{_fmt(h.get('load_avg_1min'), '.1f')} -> "
                 f"{_fmt(h.get('load_avg_1min_end'), '.1f')})")
  if "batch" in h:
    lines.append(f"forward + backward of sum(mean_pool(hidden)**2), batch {h['batch']} "
                 f"x length {h['length']} tokens, float32, no dropout; median over "
                 f"{h['repeats']} interleaved blocks of {h['steps']} steps")
  for w in results.get("workers", []):
    if "error" in w:
      lines.append(f"{w['threads']} thread(s): {w['error']}")
      continue
    pinned = (f"pinned to CPUs {w['pinned_cpus']}" if w.get("pinned_cpus")
              else f"not pinned ({w.get('cpus_used')} CPUs)")
    lines.append(f"{w['threads']} thread(s): {pinned}, XLA_FLAGS="
                 f"{w.get('xla_flags') or '(unset)'}, OMP_NUM_THREADS="
                 f"{w.get('omp_num_threads')}, torch threads {w.get('torch_threads')}")
  if lines:
    lines.append("")
  lines.append("| " + " | ".join(COLUMNS) + " |")
  lines.append("|" + "|".join("---" if i < 3 else "---:" for i in range(len(COLUMNS)))
               + "|")
  for r in results["rows"]:
    ok = r.get("ms") is not None
    cells = [r["model"], str(r.get("threads")), r["contender"],
             _fmt(r.get("ms"), ".2f") if ok else r["status"],
             _fmt(r.get("tokens_per_s"), ",.0f"),
             "-" if r["contender"] == JAX else _fmt(r.get("speedup"), ".2f", "x"),
             _fmt(r.get("first_call_s"), ".2f"),
             "-" if r["contender"] == JAX else _fmt(r.get("loss_rel_diff"), ".1e")]
    lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
  for r in results["rows"]:
    if r.get("graph_breaks"):
      lines.append(f"{r['model']} {r['threads']} thread(s) {r['contender']}: "
                   f"{r['graph_breaks']} graph break(s), {r.get('unique_graphs')} "
                   "graphs (parts of the step ran in eager PyTorch)")
    if r.get("ms") is not None and r["status"] != "ok":
      lines.append(f"{r['model']} {r['threads']} thread(s) {r['contender']}: "
                   f"{r['status']} (after {len(r['times_ms'])} timed blocks)")
  missing = h.get("torch_missing")
  if missing:
    lines.append(f"torch comparison skipped: torch/transformers not importable "
                 f"({missing}); only jaxloss was timed. To compare: {TORCH_INSTALL}")
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m tools.bench.encoder",
                                   description=__doc__.splitlines()[0])
  parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS),
                      help="folder names under ../shared/models or folder paths")
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--length", type=int, default=32)
  parser.add_argument("--steps", type=int, default=5, help="calls in a timed block")
  parser.add_argument("--repeats", type=int, default=7,
                      help="timed blocks per contender (the median is reported)")
  parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--json", default=None, metavar="PATH")
  parser.add_argument("--no-torch", dest="torch", action="store_false",
                      help="time the jaxloss side only")
  parser.add_argument("--no-compile", dest="compile", action="store_false",
                      help="skip torch.compile")
  parser.add_argument("--no-flax-products", dest="flax_products", action="store_false",
                      help="skip the jaxloss step with flax.linen.Dense's own products")
  parser.add_argument("--host_memory", choices=HOST_MEMORY, default="reuse",
                      help="reuse: glibc's malloc keeps freed memory, as experiments.run "
                      "does by default; system: the system's malloc settings")
  parser.add_argument("--_worker", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if min(args.batch, args.length, args.steps, args.repeats, *args.threads) < 1:
    parser.error("--batch, --length, --steps, --repeats and --threads must be >= 1")
  if args._worker:  # pylint: disable=protected-access
    if len(args.threads) != 1 or not args.json:
      parser.error("--_worker takes one --threads value and --json")
    return _worker(args)
  for m in args.models:
    try:
      _resolve(m)
    except FileNotFoundError as e:
      parser.error(str(e))
  absent = _absent()
  if args.torch and absent:
    print(f"torch comparison skipped: {' and '.join(absent)} not installed; timing "
          f"jaxloss only. To compare: {TORCH_INSTALL}", flush=True)
  results = run(args.models, args.batch, args.length, args.steps, args.repeats,
                args.threads, args.torch, args.compile, args.seed, args.flax_products,
                args.host_memory)
  print(format_table(results))
  if args.json:
    with open(args.json, "w") as f:
      json.dump(results, f, indent=2)
  return 0


if __name__ == "__main__":
  sys.exit(main())
