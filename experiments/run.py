"""The one entry point: ``python -m experiments.run [--config=FILE[:variant]] [--workdir=DIR]``.

With no arguments it trains the four-stage imbalance curriculum on digits-LT
(``experiments/configs/digits_lt.py``) into ``workdirs/<config>_<variant>``. A config's
``trainer`` field picks the loop: ``imbalance`` (``experiments/train.py``, the
default: digits-LT, CIFAR-10-LT and UIT-VSFC), ``absa`` (``experiments/absa.py``, multi-aspect sentiment on UIT-ViSFD), ``nlu``
(``experiments/nlu.py``, joint intent + entity (+ command) NLU on SNIPS) or ``rerank``
(``experiments/rerank.py``, next-item candidate reranking on Amazon Games). Any config
field can be overridden, e.g. ``--config.seed=1 --config.num_epochs=50``. Re-running with
the same workdir resumes from its latest checkpoint.
"""

from __future__ import annotations

import importlib
import os

from absl import app, flags, logging
from ml_collections import config_flags

# config.trainer -> the module whose train_and_evaluate(config, workdir) runs it.
TRAINERS = {"imbalance": "experiments.train", "absa": "experiments.absa",
            "nlu": "experiments.nlu", "rerank": "experiments.rerank"}

# Trainers whose input, evaluation and file writing are per-process aware.
MULTI_PROCESS = ("imbalance",)

_DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "configs", "digits_lt.py")

_CONFIG = config_flags.DEFINE_config_file(
    "config", _DEFAULT_CONFIG, "Experiment config file, optionally FILE:variant.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Output directory (metrics, checkpoints, plots). Default: "
    "workdirs/<config name>_<variant>; an existing workdir is resumed.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  # orbax reports every save step through absl logging at INFO; keep the console for
  # the progress bar and the per-epoch lines.
  logging.set_verbosity(logging.WARNING)
  # Imported here so that --help is fast and XLA flags set by the caller apply.
  config = _CONFIG.value
  workdir = _WORKDIR.value or os.path.join("workdirs", config.name)
  trainer = config.get("trainer", "imbalance")
  if trainer not in TRAINERS:
    raise app.UsageError(f"config.trainer must be one of {sorted(TRAINERS)}, got "
                         f"{trainer!r}")
  # Several processes: join them before anything touches a device.
  from jaxloss import distributed  # pylint: disable=g-import-not-at-top
  if distributed.initialize(config.get("distributed")) and trainer not in MULTI_PROCESS:
    raise app.UsageError(
        f"config.trainer={trainer!r} runs in one process; multi-process runs (jax."
        f"distributed) are supported by {sorted(MULTI_PROCESS)}")
  module = importlib.import_module(TRAINERS[trainer])
  module.train_and_evaluate(config, workdir)


if __name__ == "__main__":
  app.run(main)
