"""A run is one config: the workdir records it, and a resume with a different training
config stops and names the fields (DESIGN.md convention 17).

``config.json`` is written when a workdir starts. Re-running the workdir compares the
new config with it, field by field (nested blocks flattened to dotted names). Fields
that change only how the run is executed — devices, processes, progress bars, the
interrupt used by tests, the halting codes, checkpoint cadence and the eval batch size —
may change freely, and so may the fields a config lists in its own
``runtime_fields``; any other change raises :class:`ConfigChangedError`, unless the
caller opts in, in which case the change is appended to ``config_changes.jsonl`` and
``config.json`` is rewritten.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Iterable, Mapping

# Dotted names (or prefixes ending in ".") that do not change what is trained.
RUNTIME_FIELDS = (
    "progress", "interrupt_at_step", "distributed.", "num_devices", "parallel",
    "train_input", "eval_batch_size", "eval_every_steps", "checkpoint_every_steps",
    "keep_checkpoints", "monitor.halt_on", "monitor.fail_on_error", "tfds_data_dir",
    "runtime_fields", "cpu_compiler_options.",
)


class ConfigChangedError(ValueError):
  """A workdir re-run with a config that changes training."""


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; values as JSON gives them back (tuples
  become lists)."""
  out = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if isinstance(value, Mapping):
      out.update(flatten(value, name + "."))
    else:
      out[name] = value
  return out


def _is_runtime(name: str, runtime: Iterable[str]) -> bool:
  return any(name == r or (r.endswith(".") and name.startswith(r)) for r in runtime)


def config_dict(config) -> dict:
  """A config (``ml_collections.ConfigDict`` or mapping) as plain JSON values."""
  if hasattr(config, "to_json_best_effort"):
    return json.loads(config.to_json_best_effort())
  return json.loads(json.dumps(config, default=str))


def changed_fields(old: Mapping, new: Mapping, runtime: Iterable[str] = RUNTIME_FIELDS
                   ) -> dict[str, tuple[Any, Any]]:
  """``{dotted name: (old, new)}`` of the training fields that differ (a field present
  in only one of them counts, with ``"<absent>"`` for the missing side, unless its
  value there is None: an optional feature a newer config adds, switched off, trains
  what the config without it trained).

  Examples:
    >>> changed_fields({"seed": 0, "progress": True, "monitor": {"halt_on": []}},
    ...                {"seed": 1, "progress": False, "monitor": {"halt_on": ["x"]},
    ...                 "ema_decay": None})
    {'seed': (0, 1)}
    >>> changed_fields({"seed": 0}, {"seed": 0, "ema_decay": 0.999})
    {'ema_decay': ('<absent>', 0.999)}
  """
  a, b = flatten(old), flatten(new)
  out = {}
  for name in sorted(set(a) | set(b)):
    if _is_runtime(name, runtime):
      continue
    va, vb = a.get(name, "<absent>"), b.get(name, "<absent>")
    if (va is None and vb == "<absent>") or (vb is None and va == "<absent>"):
      continue
    if va != vb:
      out[name] = (va, vb)
  return out


def _show(value: Any) -> str:
  text = json.dumps(value)
  return text if len(text) <= 40 else text[:37] + "..."


def describe(changes: Mapping[str, tuple[Any, Any]]) -> str:
  """``changed_fields``' result as ``"name (old -> new), ..."`` (values as JSON, cut to
  40 characters).

  >>> describe({"num_epochs": (20, 40), "singleton_unk_rate": (None, 0.5)})
  'num_epochs (20 -> 40), singleton_unk_rate (null -> 0.5)'
  """
  return ", ".join(f"{k} ({_show(a)} -> {_show(b)})" for k, (a, b) in changes.items())


def recorded_changes(workdir: str, config, runtime: Iterable[str] = RUNTIME_FIELDS
                     ) -> dict[str, tuple[Any, Any]] | None:
  """The training fields in which ``config`` differs from ``workdir/config.json``
  (:func:`changed_fields`; ``runtime`` and the config's own ``runtime_fields`` do not
  count), or None when the workdir has no ``config.json``."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    old = json.load(f)
  new = config_dict(config)
  return changed_fields(old, new, tuple(runtime) + tuple(new.get("runtime_fields") or ()))


def check_resume(workdir: str, config, *, started: bool, allow_change: bool = False,
                 write: bool = True, runtime: Iterable[str] = RUNTIME_FIELDS) -> dict:
  """Records ``config`` in ``workdir/config.json``, or checks it against the recorded
  one when the workdir holds a run (``started``: a checkpoint, or events, exist).

  Returns:
    The changed training fields (empty unless ``allow_change``).

  Raises:
    ConfigChangedError: ``started``, training fields differ and not ``allow_change``;
      the message names every changed field with its old and new value.
  """
  path = os.path.join(workdir, "config.json")
  new = config_dict(config)
  changes = (recorded_changes(workdir, config, runtime) if started else None) or {}
  if changes and not allow_change:
    raise ConfigChangedError(
        f"{workdir} holds a run with another config; changed: {describe(changes)}. Use "
        f"a new --workdir, or pass --allow_config_change to continue this run with the "
        f"new values (recorded in config_changes.jsonl).")
  if changes and write:
    with open(os.path.join(workdir, "config_changes.jsonl"), "a") as f:
      f.write(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                          "changed": {k: list(v) for k, v in changes.items()}}) + "\n")
  if write:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
      json.dump(new, f, indent=2)
    os.replace(tmp, path)
  return changes
