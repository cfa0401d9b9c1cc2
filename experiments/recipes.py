"""The reference recipes by name, and ``run(config, workdir)``: the one loop
(:func:`jaxloss.training.train_and_evaluate`) on the recipe ``config.trainer`` names.

A recipe is a package ``experiments/<name>/`` whose ``build(config, workdir)`` returns a
:class:`jaxloss.training.Recipe`. A recipe of your own needs no entry here: set
``config.trainer = "your.module"`` (any importable module with ``build``).
"""

from __future__ import annotations

import importlib
from typing import Optional

from jaxloss.training import train_and_evaluate

# config.trainer -> the package whose build(config, workdir) gives the Recipe.
RECIPES = {"imbalance": "experiments.imbalance", "absa": "experiments.absa",
           "nlu": "experiments.nlu", "rerank": "experiments.rerank",
           "tabular": "experiments.tabular"}


def builder(config):
  """The ``build`` function of ``config.trainer`` (default ``imbalance``): a name of
  :data:`RECIPES` or a module path.

  Raises:
    ValueError: a trainer that is neither, or a module without ``build``.
  """
  name = config.get("trainer", "imbalance")
  module_name = RECIPES.get(name, name)
  try:
    module = importlib.import_module(module_name)
  except ModuleNotFoundError as e:
    if name in RECIPES or e.name != module_name:
      raise
    raise ValueError(f"config.trainer must be one of {sorted(RECIPES)} or an importable "
                     f"module with build(config, workdir), got {name!r}") from None
  if not hasattr(module, "build"):
    raise ValueError(f"config.trainer={name!r}: module {module_name} has no "
                     f"build(config, workdir)")
  return module.build


def run(config, workdir: str, *, allow_config_change: bool = False) -> Optional[dict]:
  """Trains and evaluates ``config`` in ``workdir`` (resuming it); see
  :func:`jaxloss.training.train_and_evaluate`."""
  return train_and_evaluate(config, workdir, builder(config),
                            allow_config_change=allow_config_change)
