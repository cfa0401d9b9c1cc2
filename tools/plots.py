"""Plots from a run's ``metrics.jsonl``: ``python -m tools.plots WORKDIR``.

Writes ``WORKDIR/curves.png``: test WAR and UAR per epoch, curriculum stages shaded, and
the train loss on a second panel.
"""

from __future__ import annotations

import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

_STAGE_COLOURS = ("#dbe9f6", "#fde0c5", "#f9d0d0", "#d8f0d8", "#ece2f4", "#f4f1c9")


def _stage_spans(events):
  """[(name, first_epoch_start, last_epoch)] in order of appearance."""
  spans = []
  prev_epoch = 0.0
  for e in events:
    if spans and spans[-1][0] == e["stage"]:
      spans[-1][2] = e["epoch"]
    else:
      spans.append([e["stage"], prev_epoch, e["epoch"]])
    prev_epoch = e["epoch"]
  return spans


def plot_curves(metrics_path: str, out_path: str, title: str | None = None) -> str:
  """Draws WAR/UAR (test) and loss (train) per epoch with the stages shaded.

  Args:
    metrics_path: a ``metrics.jsonl`` written by ``experiments.train``.
    out_path: PNG path to write.
    title: figure title.

  Returns:
    ``out_path``.

  Raises:
    ValueError: the file has no test events.
  """
  with open(metrics_path) as f:
    events = [json.loads(line) for line in f if line.strip()]
  test = [e for e in events if e["split"] == "test"]
  train = [e for e in events if e["split"] == "train"]
  if not test:
    raise ValueError(f"{metrics_path} has no test events to plot")
  fig, (ax, ax_loss) = plt.subplots(2, 1, figsize=(8, 6), sharex=True,
                                    gridspec_kw={"height_ratios": [2, 1]})
  for i, (name, start, end) in enumerate(_stage_spans(test)):
    for a in (ax, ax_loss):
      a.axvspan(start, end, color=_STAGE_COLOURS[i % len(_STAGE_COLOURS)], lw=0)
    ax.text((start + end) / 2, 0.98, name, ha="center", va="top",
            transform=ax.get_xaxis_transform(), fontsize=9)
  epochs = [e["epoch"] for e in test]
  ax.plot(epochs, [100 * e["war"] for e in test], label="WAR (test)", color="C0")
  ax.plot(epochs, [100 * e["uar"] for e in test], label="UAR (test)", color="C3")
  ax.set_ylabel("%")
  ax.set_ylim(top=max(105, ax.get_ylim()[1]))
  ax.legend(loc="lower right")
  ax.grid(alpha=0.3)
  ax_loss.plot([e["epoch"] for e in train], [e["loss"] for e in train], color="C2",
               label="train loss")
  ax_loss.set_xlabel("epoch")
  ax_loss.set_ylabel("loss")
  ax_loss.grid(alpha=0.3)
  if title:
    ax.set_title(title)
  fig.tight_layout()
  fig.savefig(out_path, dpi=110)
  plt.close(fig)
  return out_path


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("workdir")
  args = parser.parse_args(argv)
  out = plot_curves(os.path.join(args.workdir, "metrics.jsonl"),
                    os.path.join(args.workdir, "curves.png"),
                    title=os.path.basename(os.path.normpath(args.workdir)))
  print(out)


if __name__ == "__main__":
  main()
