"""The one training loop and the recipe protocol it runs.

* :func:`train_and_evaluate` — ``(config, workdir, build)``: the loop.
* :class:`Recipe`, :class:`Member`, :class:`Selection`, :class:`RunRecord` — what a
  recipe module's ``build(config, workdir)`` returns and what it gets back.
* :mod:`~jaxloss.training.guard` — a run is one config (resume guard).
* :mod:`~jaxloss.training.run_files` — ``metrics.jsonl``, atomic JSON, run facts.
"""

from jaxloss.training.guard import ConfigChangedError
from jaxloss.training.loop import train_and_evaluate
from jaxloss.training.recipe import (Member, Recipe, RunRecord, Selection,
                                     SequenceBuckets, select)
from jaxloss.training.run_files import MetricsLog, write_json

__all__ = ["ConfigChangedError", "Member", "MetricsLog", "Recipe", "RunRecord",
           "Selection", "SequenceBuckets", "select", "train_and_evaluate",
           "write_json"]
