"""Figures of a run from its ``metrics.jsonl`` (``python -m jaxloss.plots WORKDIR``).

Writes ``WORKDIR/curves.png`` (test WAR and UAR per epoch, curriculum stages shaded, the
train loss on a second panel), ``loss_relationship.png`` for a combined loss (each term
over steps, spans where the ``term_stalled`` monitor fired marked) and
``recall_by_stage.png`` for a curriculum (per-class test recall at the end of each
stage, as a heatmap).
"""

from __future__ import annotations

import argparse
import json
import math
import os

import numpy as np

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
    metrics_path: a ``metrics.jsonl`` written by the training loop (``jaxloss.training``).
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
  ax_loss.plot([e["epoch"] for e in train], [_f(e.get("loss")) for e in train],
               color="C2", label="train loss")
  ax_loss.set_xlabel("epoch")
  ax_loss.set_ylabel("loss")
  ax_loss.grid(alpha=0.3)
  if title:
    ax.set_title(title)
  fig.tight_layout()
  fig.savefig(out_path, dpi=110)
  plt.close(fig)
  return out_path


def _f(x) -> float:
  return math.nan if x is None else float(x)


def _read(metrics_path):
  with open(metrics_path) as f:
    return [json.loads(line) for line in f if line.strip()]


def term_names(events) -> list[str]:
  """Names of the combined loss's terms recorded in a stream (meta, else train keys)."""
  for e in events:
    if e.get("split") == "meta" and e.get("terms"):
      return [t["name"] for t in e["terms"]]
  keys = {k for e in events if e.get("split") == "train" for k in e}
  return sorted(k.split("/", 1)[1] for k in keys if k.startswith("term/"))


def plot_loss_relationship(metrics_path: str, out_path: str, *, findings=(),
                           title: str | None = None) -> str:
  """Each term of a combined loss over steps, and the weighted total.

  Left axis: the terms (before their weights λ); right: each term relative to its first
  logged value, so a flat term beside a falling one stands out. Spans where the
  ``term_stalled`` monitor fired are shaded and labelled with the stalled term.

  Args:
    metrics_path: a ``metrics.jsonl`` with ``term/<name>`` fields in its train events.
    out_path: PNG path to write.
    findings: :class:`jaxloss.monitors.Finding` s (or their dicts) for the run.
    title: figure title.

  Returns:
    ``out_path``.

  Raises:
    ValueError: fewer than two terms recorded.
  """
  events = _read(metrics_path)
  names = term_names(events)
  if len(names) < 2:
    raise ValueError(f"{metrics_path} records {len(names)} loss term(s); "
                     "loss_relationship.png needs a combined loss")
  train = [e for e in events if e.get("split") == "train"]
  weights = {}
  for e in events:
    if e.get("split") == "meta":
      weights = {t["name"]: t.get("weight") for t in e.get("terms") or []}
  fig, (ax, ax_rel) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
  steps = [e["step"] for e in train]
  for i, name in enumerate(names):
    vals = np.array([_f(e.get(f"term/{name}")) for e in train])
    label = f"{name} (λ={weights.get(name)})" if name in weights else name
    ax.plot(steps, vals, color=f"C{i}", label=label)
    first = next((v for v in vals if np.isfinite(v)), np.nan)
    ax_rel.plot(steps, vals / first, color=f"C{i}", label=name)
  ax.plot(steps, [_f(e.get("loss")) for e in train], color="0.4", ls="--",
          label="total (Σ λ·term)")
  for f in findings:
    f = f.to_dict() if hasattr(f, "to_dict") else f
    if f["code"] != "term_stalled":
      continue
    for a in (ax, ax_rel):
      a.axvspan(f["step"], f["until"], color="#f9d0d0", lw=0, zorder=0)
    ax.text((f["step"] + f["until"]) / 2, 0.97, f"{f['subject']} stalled",
            ha="center", va="top", transform=ax.get_xaxis_transform(), fontsize=8)
  ax.set_ylabel("term value")
  ax.legend(loc="upper right", fontsize=8)
  ax.grid(alpha=0.3)
  ax_rel.set_ylabel("relative to first")
  ax_rel.set_xlabel("step")
  ax_rel.axhline(1.0, color="0.6", lw=0.8)
  ax_rel.grid(alpha=0.3)
  if title:
    ax.set_title(f"{title}: loss terms")
  fig.tight_layout()
  fig.savefig(out_path, dpi=110)
  plt.close(fig)
  return out_path


def recall_by_stage(events, last: int = 1) -> tuple[list[str], np.ndarray]:
  """Stage names and per-class test recall ``[C, S]`` at the end of each stage (the
  mean of its last ``last`` evaluations)."""
  test = [e for e in events if e.get("split") == "test" and e.get("per_class_recall")]
  names, cols = [], []
  for e in test:
    if not names or names[-1] != e["stage"]:
      names.append(e["stage"])
      cols.append([])
    cols[-1].append(e["per_class_recall"])
  matrix = np.array([np.nanmean(np.array(c[-last:], float), axis=0) for c in cols]).T
  return names, matrix


def plot_recall_by_stage(metrics_path: str, out_path: str, *, title: str | None = None,
                         last: int = 1) -> str:
  """Heatmap of per-class test recall (rows: classes, columns: curriculum stages) at the
  end of each stage, with WAR/UAR under each column.

  Raises:
    ValueError: no test events with per-class recall.
  """
  events = _read(metrics_path)
  names, matrix = recall_by_stage(events, last)
  if not names:
    raise ValueError(f"{metrics_path} has no test events with per_class_recall")
  counts, labels = None, None
  for e in events:
    if e.get("split") == "meta" and e.get("class_counts"):
      counts = e["class_counts"]
    if e.get("split") == "meta":
      labels = (e.get("class_names") or {}).get("class")
  ends = {}
  for e in events:
    if e.get("split") == "test":
      ends[e["stage"]] = e
  fig, ax = plt.subplots(figsize=(1.6 * len(names) + 2.5, 0.42 * matrix.shape[0] + 1.8))
  im = ax.imshow(matrix, cmap="viridis", vmin=0, vmax=1, aspect="auto")
  for (r, c), v in np.ndenumerate(matrix):
    ax.text(c, r, f"{100 * v:.0f}", ha="center", va="center", fontsize=8,
            color="white" if v < 0.6 else "black")
  ax.set_xticks(range(len(names)))
  ax.set_xticklabels([f"{n}\nWAR {100 * ends[n]['war']:.1f} UAR {100 * ends[n]['uar']:.1f}"
                      for n in names], fontsize=8)
  rows = [(labels[i] if labels and i < len(labels) else f"class {i}")
          + (f" (n={counts[i]})" if counts else "") for i in range(matrix.shape[0])]
  ax.set_yticks(range(matrix.shape[0]))
  ax.set_yticklabels(rows, fontsize=8)
  fig.colorbar(im, ax=ax, label="test recall")
  ax.set_title((f"{title}: " if title else "") + "per-class recall at the end of each stage",
               fontsize=9)
  fig.tight_layout()
  fig.savefig(out_path, dpi=110)
  plt.close(fig)
  return out_path


def plot_absa_loss_relationship(streams: dict, out_path: str, *, terms,
                                contrastive_reference: dict | None = None,
                                title: str | None = None) -> str:
  """Loss terms and Dev F1 per epoch for each member of a multi-aspect run.

  Top row, one panel per member: each term of the loss (before its weight λ) per epoch,
  with the SupCon chance level (all similarities equal) and floor (positives identical)
  of the batch as dashed lines, so a contrastive value can be read against them. Bottom
  row: Dev aspect and sentiment F1 per epoch for each member (and the ensemble).

  Args:
    streams: label -> the events of a ``metrics.jsonl`` (members have ``train`` and
      ``dev`` events; an ``"ensemble"`` stream only ``dev``/``test``).
    out_path: PNG path to write.
    terms: the term names, e.g. ``["focal", "contrastive"]``.
    contrastive_reference: ``{"chance": ..., "floor": ...}`` or None.
    title: figure title.

  Returns:
    ``out_path``.

  Raises:
    ValueError: no stream has train events.
  """
  members = {k: v for k, v in streams.items()
             if any(e.get("split") == "train" for e in v)}
  if not members:
    raise ValueError("no stream has train events to plot")
  n = len(members)
  fig, axes = plt.subplots(2, n, figsize=(5.5 * n, 6.5), squeeze=False)
  for j, (label, events) in enumerate(members.items()):
    ax = axes[0, j]
    train = [e for e in events if e.get("split") == "train"]
    epochs = [e["epoch"] for e in train]
    for i, name in enumerate(terms):
      ax.plot(epochs, [_f(e.get(f"term/{name}")) for e in train], marker="o", ms=3,
              color=f"C{i}", label=name)
    if contrastive_reference and "contrastive" in terms:
      ax.axhline(contrastive_reference["chance"], color="C1", ls="--", lw=0.8,
                 label=f"SupCon chance {contrastive_reference['chance']:.2f}")
      ax.axhline(contrastive_reference["floor"], color="C1", ls=":", lw=0.8,
                 label=f"SupCon floor {contrastive_reference['floor']:.2f}")
    ax.set_title(label, fontsize=10)
    ax.set_xlabel("epoch")
    ax.set_ylabel("term value (before λ)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  gs = axes[1, 0].get_gridspec()
  for a in axes[1]:
    a.remove()
  ax = fig.add_subplot(gs[1, :])
  for i, (label, events) in enumerate(streams.items()):
    dev = [e for e in events if e.get("split") == "dev"]
    if not dev:
      continue
    ep = [e["epoch"] for e in dev]
    ax.plot(ep, [100 * e["aspect_f1"] for e in dev], color=f"C{i}",
            label=f"{label}: aspect F1")
    ax.plot(ep, [100 * e["sentiment_f1"] for e in dev], color=f"C{i}", ls="--",
            label=f"{label}: sentiment F1")
  ax.set_xlabel("epoch")
  ax.set_ylabel("Dev F1 (%)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, ncol=2 if len(streams) > 1 else 1, loc="lower right")
  if title:
    fig.suptitle(f"{title}: loss terms and Dev F1")
  fig.tight_layout()
  fig.savefig(out_path, dpi=110)
  plt.close(fig)
  return out_path


def project_2d(embedding: np.ndarray, method: str = "tsne", seed: int = 0) -> np.ndarray:
  """``[N, E]`` -> ``[N, 2]`` by scikit-learn's t-SNE (PCA-initialised, perplexity 30)
  or PCA.

  Raises:
    ValueError: unknown ``method``.
  """
  from sklearn.decomposition import PCA
  from sklearn.manifold import TSNE
  x = np.asarray(embedding, np.float32)
  if method == "pca":
    return PCA(n_components=2, random_state=seed).fit_transform(x)
  if method == "tsne":
    perplexity = min(30.0, max(2.0, (len(x) - 1) / 3))
    return TSNE(n_components=2, init="pca", perplexity=perplexity,
                random_state=seed).fit_transform(x)
  raise ValueError(f"method must be 'tsne' or 'pca', got {method!r}")


def plot_embedding_evolution(panels, out_path: str, *, colour_aspect: int,
                             class_names, method: str = "tsne",
                             title: str | None = None) -> str:
  """2-D projections of the same examples' embeddings at several points of training.

  Args:
    panels: ``[{"epoch", "embedding" [N, E], "labels" [N, A], "contrastive"}]``; the
      contrastive loss (train term of that epoch, or None) goes in the panel title.
    out_path: PNG path to write.
    colour_aspect: the aspect whose class colours the points (GENERAL).
    class_names: names of the classes (absent, positive, negative, neutral).
    method: ``"tsne"`` or ``"pca"`` (see :func:`project_2d`).
    title: figure title.

  Returns:
    ``out_path``.

  Raises:
    ValueError: no panels.
  """
  if not panels:
    raise ValueError("no embedding snapshots to plot")
  colours = ("#bbbbbb", "#2a9d4a", "#d62728", "#1f77b4")
  fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.8),
                           squeeze=False)
  for ax, p in zip(axes[0], panels):
    xy = project_2d(p["embedding"], method)
    y = np.asarray(p["labels"])[:, colour_aspect]
    for c in range(len(class_names)):
      sel = y == c
      ax.scatter(xy[sel, 0], xy[sel, 1], s=4, alpha=0.6, color=colours[c % 4],
                 label=f"{class_names[c]} ({int(sel.sum())})", rasterized=True)
    con = p.get("contrastive")
    con_text = "no contrastive term" if con is None else f"contrastive loss {con:.3f}"
    ax.set_title(f"epoch {p['epoch']}: {con_text}", fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
  axes[0, 0].legend(title="GENERAL", fontsize=8, markerscale=3, loc="best")
  if title:
    fig.suptitle(f"{title} ({method.upper() if method == 'pca' else 't-SNE'})")
  fig.tight_layout()
  fig.savefig(out_path, dpi=110)
  plt.close(fig)
  return out_path


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("workdir")
  args = parser.parse_args(argv)
  metrics = os.path.join(args.workdir, "metrics.jsonl")
  title = os.path.basename(os.path.normpath(args.workdir))
  print(plot_curves(metrics, os.path.join(args.workdir, "curves.png"), title=title))
  events = _read(metrics)
  if len(term_names(events)) >= 2:
    from jaxloss import monitors
    findings = monitors.diagnose(events)
    print(plot_loss_relationship(metrics, os.path.join(args.workdir,
                                                       "loss_relationship.png"),
                                 findings=findings, title=title))
  if len({e.get("stage") for e in events if e.get("split") == "test"}) > 1:
    print(plot_recall_by_stage(metrics, os.path.join(args.workdir, "recall_by_stage.png"),
                               title=title))


if __name__ == "__main__":
  main()


def plot_nlu_curves(events: list, out_path: str, *, terms, title: str | None = None
                    ) -> str:
  """Per-epoch curves of a joint NLU run, the three things its authors watched.

  Left: each loss term (before its λ) on the training epochs, with the λ of each term
  (dashed, right axis), so a warm-up can be read against the term it weights; a skipped
  (non-finite) period is marked with a red x. Middle: Dev intent accuracy, slot F1 and
  sentence accuracy. Right: the collapse signals on Dev: share of tokens predicted
  non-O (gold share dashed) and the largest share of one intent among predictions.

  Args:
    events: the events of a ``metrics.jsonl`` (``train`` and ``dev``).
    out_path: PNG path to write.
    terms: the term names, e.g. ``("entity", "intent")``.
    title: figure title.

  Returns:
    ``out_path``.

  Raises:
    ValueError: no train events.
  """
  train = [e for e in events if e.get("split") == "train"]
  dev = [e for e in events if e.get("split") == "dev"]
  if not train:
    raise ValueError("no train events to plot")
  fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
  ax = axes[0]
  epochs = [e["epoch"] for e in train]
  lam_ax = ax.twinx()
  for i, name in enumerate(terms):
    ax.plot(epochs, [_f(e.get(f"term/{name}")) for e in train], marker="o", ms=3,
            color=f"C{i}", label=f"{name} term")
    lam = [e.get(f"lambda_{name}") for e in train]
    if any(v is not None for v in lam):
      lam_ax.step(epochs, [_f(v) for v in lam], where="post", color=f"C{i}", ls="--",
                  lw=1, label=f"λ {name}")
  bad = [e["epoch"] for e in train if e.get("loss") is None
         or not np.isfinite(_f(e.get("loss")))]
  if bad:
    ax.plot(bad, [0.0] * len(bad), "x", color="red", ms=8,
            label="non-finite loss (steps skipped)")
  ax.set_xlabel("epoch")
  ax.set_ylabel("term value (before λ)")
  lam_ax.set_ylabel("λ")
  lam_ax.set_ylim(bottom=0)
  ax.grid(alpha=0.3)
  h1, l1 = ax.get_legend_handles_labels()
  h2, l2 = lam_ax.get_legend_handles_labels()
  ax.legend(h1 + h2, l1 + l2, fontsize=8)
  ax.set_title("loss terms and λ", fontsize=10)
  ax = axes[1]
  if dev:
    ep = [e["epoch"] for e in dev]
    for key, label in (("intent_accuracy", "intent accuracy"), ("slot_f1", "slot F1"),
                       ("sentence_accuracy", "sentence accuracy")):
      ax.plot(ep, [100 * _f(e.get(key)) for e in dev], marker="o", ms=3, label=label)
  ax.set_xlabel("epoch")
  ax.set_ylabel("Dev %")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  ax.set_title("Dev metrics", fontsize=10)
  ax = axes[2]
  if dev:
    ep = [e["epoch"] for e in dev]
    ax.plot(ep, [100 * _f(e.get("pred_non_o_share")) for e in dev], marker="o", ms=3,
            color="C0", label="tokens predicted non-O")
    ax.plot(ep, [100 * _f(e.get("true_non_o_share")) for e in dev], ls="--", color="C0",
            label="gold non-O share")
    ax.plot(ep, [100 * _f(e.get("top_intent_share")) for e in dev], marker="s", ms=3,
            color="C3", label="largest share of one intent")
  ax.set_ylim(0, 105)
  ax.set_xlabel("epoch")
  ax.set_ylabel("Dev %")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  ax.set_title("collapse signals", fontsize=10)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(out_path, dpi=110)
  plt.close(fig)
  return out_path


def plot_rerank_curves(events: list, out_path: str, *, reference: float,
                       baselines: dict | None = None, title: str | None = None) -> str:
  """Per-epoch curves of a reranking run, the checks its authors watched.

  Left: the training loss by epoch from the first step's value, with the loss of a
  model that scores every candidate alike (``reference``, e.g. ln 50) dashed, so "is
  the first loss ≈ ln 50?" and "does it fall?" are read at a glance. Right: Validation
  HR@10 and NDCG@10, with the same metrics of the baselines (random, popularity) on the
  same lists as horizontal lines.

  Args:
    events: the events of a ``metrics.jsonl`` (``init``, ``train`` and ``validation``).
    out_path: PNG path to write.
    reference: the loss at equal scores.
    baselines: ``{name: {"hr@10": float, "ndcg@10": float, ...}}`` on Validation.
    title: figure title.

  Returns:
    ``out_path``.

  Raises:
    ValueError: no train events.
  """
  train = [e for e in events if e.get("split") == "train"]
  init = [e for e in events if e.get("split") == "init"]
  val = [e for e in events if e.get("split") == "validation"]
  if not train:
    raise ValueError("no train events to plot")
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
  ax = axes[0]
  xs = [0.0] + [e["epoch"] for e in train] if init else [e["epoch"] for e in train]
  ys = ([_f(init[0]["loss"])] if init else []) + [_f(e.get("loss")) for e in train]
  ax.plot(xs, ys, marker="o", ms=3, color="C0", label="training loss (epoch 0: step 1)")
  ax.axhline(reference, ls="--", color="gray", label=f"equal scores: {reference:.3f}")
  ax.set_xlabel("epoch")
  ax.set_ylabel("loss")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  ax.set_title("training loss", fontsize=10)
  ax = axes[1]
  if val:
    ep = [e["epoch"] for e in val]
    for i, key in enumerate(("hr@10", "ndcg@10")):
      ax.plot(ep, [_f(e.get(key)) for e in val], marker="o", ms=3, color=f"C{i}",
              label=f"model {key.upper()}")
      for j, (name, m) in enumerate(sorted((baselines or {}).items())):
        ax.axhline(_f(m.get(key)), color=f"C{i}", ls=(":", "-.")[j % 2], lw=1,
                   label=f"{name} {key.upper()}")
  ax.set_ylim(0, 1)
  ax.set_xlabel("epoch")
  ax.set_ylabel("Validation")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  ax.set_title("Validation HR@10 / NDCG@10 against the baselines", fontsize=10)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(out_path, dpi=110)
  plt.close(fig)
  return out_path
