"""The one entry point: ``python -m experiments.run [--config=FILE[:variant]] [--workdir=DIR]``.

With no arguments it trains the four-stage imbalance curriculum on digits-LT
(``experiments/imbalance/configs/digits_lt.py``) into ``workdirs/<config name>``. A config's
``trainer`` field picks the recipe (:data:`experiments.recipes.RECIPES`, or a module of
your own with ``build(config, workdir)``); every recipe runs in the same loop,
:func:`jaxloss.training.train_and_evaluate`. Any config field can be overridden, e.g.
``--config.seed=1 --config.num_epochs=50``. Re-running with the same workdir resumes
from its latest checkpoint; a re-run that changes training stops and names the fields
(``--allow_config_change`` continues with the new values).
"""

from __future__ import annotations

import os
import sys
import traceback

from absl import app, flags, logging
from ml_collections import config_flags

_DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "imbalance", "configs",
                               "digits_lt.py")

# Errors in the user's config or data: printed as one message, exit status 2.
EXIT_USAGE = 2


def _unknown_field(error: Exception) -> None:
  """A ``--config.a.b=v`` naming a field the config lacks fails while the flag is
  defined (ml_collections parses it then): one line naming the flag, exit status 2."""
  name = str(error).strip("\"'")
  flag = next((a for a in sys.argv[1:] if a.startswith("--config.") and
               name in a.split("=", 1)[0].split(".")), None)
  shown = flag.split("=", 1)[0] if flag else f"--config...{name}"
  print(f"error: {shown}: the config has no field {name!r} (a config's fields are "
        "fixed by its file; list them with --helpfull, or add the field to the config "
        "file)", file=sys.stderr)
  sys.exit(EXIT_USAGE)


try:
  _CONFIG = config_flags.DEFINE_config_file(
      "config", _DEFAULT_CONFIG, "Experiment config file, optionally FILE:variant.",
      lock_config=True)
except (AttributeError, KeyError) as _e:
  _unknown_field(_e)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Output directory (metrics, checkpoints, plots). Default: "
    "workdirs/<config name>; an existing workdir is resumed.")
_CACHE = flags.DEFINE_string(
    "compilation_cache", None, "Folder of JAX's persistent compilation cache, so that a "
    "rerun or a resumed run does not compile again; 'off' turns it off. Default: "
    "$JAXLOSS_COMPILATION_CACHE, else ~/.cache/jaxloss/jax_compilation_cache "
    "(jaxloss.training.compile_cache).")
_REUSE_HOST_MEMORY = flags.DEFINE_bool(
    "reuse_host_memory", True, "Keep freed host memory for the next allocation (glibc "
    "malloc: one arena, no mmap, a 1 GiB trim threshold), so that XLA:CPU's per-call "
    "buffers are not fresh pages that fault at every step; --noreuse_host_memory keeps "
    "the system's malloc settings (jaxloss.training.host_memory).")
_ALLOW_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False, "Resume a workdir with a config that changes "
    "training fields (recorded in WORKDIR/config_changes.jsonl).")


def _exit_if_several_processes(message: str, status: int) -> None:
  """With several processes, a failing one exits at once: the normal exit would wait
  in JAX's shutdown barrier for peers that wait on it, while its heartbeat goes on.
  Exiting stops the heartbeat, so every peer stops within its peer_timeout_s, naming
  this process (jaxloss.distributed's watchdog)."""
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_count() > 1:
    print(f"process {jax.process_index()}: {message}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(status)  # pylint: disable=protected-access


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  # orbax reports every save step through absl logging at INFO; keep the console for
  # the progress bar and the per-epoch lines.
  logging.set_verbosity(logging.WARNING)
  # Before JAX starts the threads that run its programs: they take their arena then.
  if _REUSE_HOST_MEMORY.value:
    from jaxloss.training import host_memory  # pylint: disable=g-import-not-at-top
    host_memory.reuse_freed_memory()
  # Before anything compiles: JAX decides once per process whether the cache is used.
  from jaxloss.training import compile_cache  # pylint: disable=g-import-not-at-top
  try:
    compile_cache.enable(compile_cache.default_dir() if _CACHE.value is None
                         else _CACHE.value)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(EXIT_USAGE)
  config = _CONFIG.value
  workdir = _WORKDIR.value or os.path.join("workdirs", config.name)
  # Imported here so that --help is fast and XLA flags set by the caller apply.
  from experiments import recipes  # pylint: disable=g-import-not-at-top
  try:
    summary = recipes.run(config, workdir, allow_config_change=_ALLOW_CHANGE.value)
  except (ValueError, FileNotFoundError) as e:
    if os.environ.get("JAXLOSS_TRACEBACK"):
      _exit_if_several_processes(traceback.format_exc(), 1)
      raise
    _exit_if_several_processes(f"error: {e}", EXIT_USAGE)
    print(f"error: {e}\n(set JAXLOSS_TRACEBACK=1 for the traceback)", file=sys.stderr)
    sys.exit(EXIT_USAGE)
  except BaseException:  # pylint: disable=broad-except
    _exit_if_several_processes(traceback.format_exc(), 1)
    raise
  if summary is not None and summary.get("exit_status"):
    sys.exit(summary["exit_status"])


def _parse_flags(argv):
  """absl's parser, with an unknown ``--config.`` field as one line (exit status 2)."""
  try:
    return app.parse_flags_with_usage(argv)
  except (AttributeError, KeyError) as e:
    _unknown_field(e)


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
