"""Finished joint-NLU runs decoded both ways: each head on its own, and jointly.

  python -m tools.reports.nlu_decode WORKDIR [WORKDIR ...] [--step N] [--out PATH]
                                    [--label_tag_min_expected M]

For each workdir of a joint NLU run (``experiments/nlu``, the from-scratch BiLSTM tagger
or an encoder), the tool rebuilds the recipe from the run's ``config.json``,
``vocab.json`` and ``chars.json`` (copied to a temporary folder: the workdir is only
read), restores checkpoint ``--step`` (default: the latest), predicts Dev and Test and
scores the predictions twice:

* **independent**: the intent (or the data's first label field) by argmax, the tags by
  the BIO-constrained Viterbi (``jaxloss.decoding.constrained_decode``), as the recipe
  decoded before ``config.joint_decoding``;
* **joint**: the (intent, tags) pair with the highest product of the two heads'
  probabilities, each intent allowing only the entity types seen with it in training
  (``jaxloss.decoding.joint_decode``), the recipe's default since 2026-12-06. A type
  never seen with an intent is forbidden only where the intent's sentences are evidence
  (``--label_tag_min_expected``, default 3 as the recipe's
  ``config.label_tag_min_expected``; 0: every unseen pair forbidden, as the recipe
  decoded before that field; ``jaxloss.decoding.label_tag_mask``).

The same parameters give both rows, so their difference is the decoding's alone. It
works on runs made before the recipe had ``config.joint_decoding``. Prints a Markdown
table (intent accuracy / slot F1 / sentence accuracy in %, and the joint minus
independent differences) with the mean over the runs, and writes ``<out>.md`` and
``<out>.json`` when ``--out`` is given.

  python -m tools.reports.nlu_decode --epochs WORKDIR [WORKDIR ...]

reads instead the ``metrics.jsonl`` of runs made with ``config.joint_decoding`` (which
log both decodings at every evaluation) and tables the mean joint minus independent
difference over the evaluations, and how often the joint decoding is better, equal or
worse.

Raises ``SystemExit`` with a one-line message for a workdir without ``config.json`` or
checkpoints, or whose tagger is not the MEMM one (a CRF or a decoder run).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

import numpy as np

KEYS = ("intent_accuracy", "slot_f1", "sentence_accuracy")
SPLITS = ("dev", "test")


def _config(workdir: str, min_expected: float | None = None):
  import ml_collections  # pylint: disable=g-import-not-at-top
  from experiments.nlu import recipe as nlu  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{workdir}: no config.json (not a finished or started run)")
  with open(path) as f:
    saved = json.load(f)
  if saved.get("trainer") != "nlu":
    raise ValueError(f"{path}: trainer {saved.get('trainer')!r}, not a joint NLU run")
  config = ml_collections.ConfigDict(saved)
  if not nlu.memm_tagger(config):
    raise ValueError(f"{path}: the tags are not decoded by the MEMM Viterbi (CRF, "
                     f"decoder or unconstrained), so there is no joint decoding")
  config.joint_decoding = True  # both decodings: joint, and independent/ beside it
  if min_expected is None:  # the recipe's default
    from experiments.nlu.configs import joint_nlu  # pylint: disable=g-import-not-at-top
    min_expected = joint_nlu.get_config().label_tag_min_expected
  config.label_tag_min_expected = float(min_expected)
  config.progress = False
  return config


def _predict(recipe, fn, params, split: str, size: int = 512) -> dict:
  """The predictions of ``split`` by ``fn``, the jitted ``recipe.predict`` (which reads
  only the state's ``params``), in batches of ``size`` sentences."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  data = recipe.eval_splits[split]
  n = len(data[recipe.eval_input_keys[0]])
  parts = []
  for start in range(0, n, size):
    batch = {k: jnp.asarray(data[k][start:start + size]) for k in recipe.eval_input_keys}
    parts.append(jax.device_get(fn(params, batch)))
  return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}


def decode_run(workdir: str, step: int | None = None,
               min_expected: float | None = None) -> dict:
  """``{"workdir", "step", "label_tag_min_expected", split: {"independent": {key: x},
  "joint": {key: x}}}`` of one run's checkpoint ``step`` (default: the latest), decoded
  jointly with ``label_tag_mask(..., min_expected=min_expected)`` (None: the recipe's
  default, ``config.label_tag_min_expected``); values are fractions.

  Raises:
    FileNotFoundError: no ``config.json`` or no checkpoint.
    ValueError: not a joint NLU run, or not the MEMM tagger; ``min_expected``
      negative or not finite.
  """
  import jax  # pylint: disable=g-import-not-at-top

  from experiments.nlu import recipe as nlu  # pylint: disable=g-import-not-at-top
  from jaxloss.checkpoint import Checkpointer  # pylint: disable=g-import-not-at-top

  config = _config(workdir, min_expected)
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
  step = ckpt.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"{workdir}: no checkpoint")
  params = ckpt.restore_host(step)["params"]
  with tempfile.TemporaryDirectory() as tmp:
    for name in ("vocab.json", "chars.json"):  # the run's word and character ids
      if os.path.exists(os.path.join(workdir, name)):
        shutil.copy(os.path.join(workdir, name), tmp)
    recipe = nlu.build(config, tmp)
    fn = jax.jit(lambda p, batch: recipe.predict(type("State", (), {"params": p}), batch))
    result = {"workdir": workdir, "step": int(step),
              "label_tag_min_expected": config.label_tag_min_expected}
    for split in SPLITS:  # one compilation for splits of the same size
      report = recipe.evaluate(split, _predict(recipe, fn, params, split))
      result[split] = {"independent": {k: report[f"independent/{k}"] for k in KEYS},
                       "joint": {k: report[k] for k in KEYS}}
  return result


def table(results: list) -> str:
  """Markdown: a row per run and split, then the mean of each split over the runs."""
  ms = sorted({r.get("label_tag_min_expected") for r in results} - {None})
  joint = "joint" + (f" (label_tag_min_expected {', '.join(f'{m:g}' for m in ms)})"
                     if ms else "")
  lines = [f"| run | step | split | independent: intent / slot F1 / sentence | {joint} | "
           "joint − independent |", "|---|---:|---|---|---|---|"]

  def row(name, step, split, ind, joint):
    diff = " / ".join(f"{100 * (joint[k] - ind[k]):+.2f}" for k in KEYS)
    return (f"| {name} | {step} | {split} | "
            + " / ".join(f"{100 * ind[k]:.2f}" for k in KEYS) + " | "
            + " / ".join(f"{100 * joint[k]:.2f}" for k in KEYS) + f" | {diff} |")

  names = [os.path.basename(os.path.normpath(r["workdir"])) for r in results]
  if len(set(names)) < len(names):  # e.g. <variant>/<row>: name the folder above too
    names = ["/".join(os.path.normpath(r["workdir"]).split(os.sep)[-2:])
             for r in results]
  for name, r in zip(names, results):
    for split in SPLITS:
      lines.append(row(name, r["step"], split, r[split]["independent"],
                       r[split]["joint"]))
  if len(results) > 1:
    for split in SPLITS:
      mean = {d: {k: float(np.mean([r[split][d][k] for r in results])) for k in KEYS}
              for d in ("independent", "joint")}
      lines.append(row(f"mean of {len(results)}", "", split, mean["independent"],
                       mean["joint"]))
  return "\n".join(lines)


def epoch_differences(workdir: str) -> dict:
  """Joint minus independent decoding at every evaluation of a run that logged both
  (``config.joint_decoding``), read from its ``metrics.jsonl``: ``{split: {"n",
  "mean": {key: x}, "better" / "equal" / "worse": {key: count}}}``, values in
  fractions; one evaluation per epoch (the repeated last one counted once).

  Raises:
    FileNotFoundError: no ``metrics.jsonl``.
    ValueError: no evaluation with both decodings.
  """
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{workdir}: no metrics.jsonl")
  with open(path) as f:
    events = [json.loads(line) for line in f if line.strip()]
  out = {}
  for split in SPLITS:
    by_epoch = {e["epoch"]: e for e in events
                if e.get("split") == split and f"independent/{KEYS[0]}" in e}
    if not by_epoch:
      raise ValueError(f"{path}: no {split} evaluation with both decodings (a run "
                       f"without config.joint_decoding; use the checkpoint table)")
    d = np.array([[e[k] - e[f"independent/{k}"] for k in KEYS]
                  for e in by_epoch.values()])
    tol = 1e-12
    out[split] = {"n": len(d), "mean": dict(zip(KEYS, d.mean(0).tolist())),
                  "better": dict(zip(KEYS, (d > tol).sum(0).tolist())),
                  "equal": dict(zip(KEYS, (abs(d) <= tol).sum(0).tolist())),
                  "worse": dict(zip(KEYS, (d < -tol).sum(0).tolist()))}
  return out


def epochs_table(workdirs: list, results: list) -> str:
  """Markdown of :func:`epoch_differences` per run and split."""
  lines = ["| run | split | evaluations | mean joint − independent: intent / slot F1 / "
           "sentence | joint better / equal / worse: intent; slot F1; sentence |",
           "|---|---|---:|---|---|"]
  for workdir, r in zip(workdirs, results):
    for split in SPLITS:
      x = r[split]
      lines.append(
          f"| {os.path.basename(os.path.normpath(workdir))} | {split} | {x['n']} | "
          + " / ".join(f"{100 * x['mean'][k]:+.2f}" for k in KEYS) + " | "
          + "; ".join(f"{x['better'][k]} / {x['equal'][k]} / {x['worse'][k]}"
                      for k in KEYS) + " |")
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m tools.reports.nlu_decode",
      description="Decode finished joint-NLU runs each head on its own and jointly.")
  parser.add_argument("workdirs", nargs="+", help="workdirs of joint NLU runs")
  parser.add_argument("--step", type=int, default=None,
                      help="checkpoint step (default: each run's latest)")
  parser.add_argument("--out", default=None, help="write <out>.md and <out>.json")
  parser.add_argument("--label_tag_min_expected", type=float, default=None,
                      help="a label forbids a type never seen with it only when "
                           "n_label * share of the type >= this (default: the "
                           "recipe's, 3; 0: every unseen pair)")
  parser.add_argument("--epochs", action="store_true",
                      help="instead: joint minus independent at every evaluation of "
                           "runs that logged both (from metrics.jsonl, no checkpoint)")
  args = parser.parse_args(argv)
  results = []
  for workdir in args.workdirs:
    try:
      results.append(epoch_differences(workdir) if args.epochs
                     else decode_run(workdir, args.step, args.label_tag_min_expected))
    except (FileNotFoundError, ValueError) as e:
      print(f"error: {e}", file=sys.stderr)
      return 2
  text = epochs_table(args.workdirs, results) if args.epochs else table(results)
  print(text)
  if args.out:
    with open(args.out + ".md", "w") as f:
      f.write(text + "\n")
    with open(args.out + ".json", "w") as f:
      json.dump(results, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
