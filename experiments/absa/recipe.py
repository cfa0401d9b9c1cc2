"""The multi-aspect sentiment recipe on UIT-ViSFD: ``build(config, workdir)``.

Per-aspect focal loss (α per aspect and class from the training counts) plus a
supervised contrastive term with multi-label positives, on a BiLSTM trained from
scratch or a pretrained encoder (``experiments/absa/encoder.py``); the recipe of
``experiments/absa/configs/visfd_absa.py``. With ``config.aspect_attention`` (the
default) each aspect's classifier reads its own attention pooling of the token states,
and the last Test evaluation reports each aspect's most-attended tokens
(``summary.json``: ``attended_tokens``; :func:`attended_tokens`).

An *ensemble* (``config.ensemble_focal_weights = "0.7,0.8"``) is the loop's members
axis: member k has its own parameters, optimizer state and key (seed
``config.seed + k``), focal weight ``w_k`` and contrastive weight ``1 - w_k``; one
``jax.vmap`` of the train step body trains all members in one compiled step.

Model selection: Dev and Test are evaluated after every epoch; the reported Test
numbers are those of the epoch with the best Dev score (mean of aspect and sentiment
F1), as restoring the best-Dev checkpoint would give, and the last epoch's are kept
beside them.

Workdir: ``config.json``, ``vocab.json`` (the token ids every restart and evaluation
use), ``metrics.jsonl`` (per member under ``member_<k>/`` for an ensemble, and the
ensemble's own Dev/Test events at the top), ``diagnosis.json``, ``checkpoints/``,
``embeddings/epoch_<e>.npz``, ``predictions/<split>_epoch_<e>.npz`` (every Dev and Test
evaluation's probabilities, per member: :func:`save_predictions`), ``summary.json``,
``loss_relationship.png`` and ``embedding_space_evolution.png``.
"""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxloss import curriculum as curriculum_lib
from jaxloss import finetune
from jaxloss import metrics as metrics_lib
from jaxloss import monitors
from jaxloss.data.sampler import (epoch_permutation_sampler, repeat_factors,
                                  repeat_indices, stream_sampler)
from jaxloss.data.text import Vocabulary, tokenize
from jaxloss.data.uit_visfd import load_uit_visfd
from jaxloss.models.text import AspectSentimentModel, attended_positions
from jaxloss.train_state import TrainState
from jaxloss.train_step import make_optimizer
from jaxloss.training import Member, Recipe, Selection
from experiments.absa import encoder as absa_encoder
from experiments.absa.objective import aspect_alpha_table, make_multi_aspect_loss

PROJECTIONS = ("tsne", "pca")
SPLITS = ("train", "dev", "test")


# --- Configuration ---------------------------------------------------------------------

def parse_members(config) -> list[dict]:
  """The ensemble members as ``[{"focal_weight", "contrastive_weight", "seed"}]``.

  ``config.ensemble_focal_weights`` ("0.7,0.8", or a tuple) gives one member per focal
  weight ``w`` with contrastive weight ``1 - w`` and seed ``config.seed + k``; empty
  gives the single member of ``config.focal_weight`` / ``config.contrastive_weight``
  (0 when None; None and 0 both mean no contrastive term, and 0 is the one a command
  line can give).

  ``config.ensemble_member = k`` (default -1: all) keeps member k alone, with its own
  weights and seed and the ensemble's batch order (keyed on ``config.seed``): the same
  model the ensemble trains as member k, so members can be trained as separate jobs and
  averaged afterwards (``python -m experiments.absa.combine``).

  Raises:
    ValueError: a weight outside ``[0, 1]`` or not a number; an ensemble with no
      contrastive term configured (``config.contrastive_weight`` None or 0);
      ``config.ensemble_member`` not -1 and not the index of a member.
  """
  members = _all_members(config)
  k = int(config.get("ensemble_member", -1))
  if k == -1:
    return members
  if not 0 <= k < len(members) or not config.ensemble_focal_weights:
    raise ValueError(f"config.ensemble_member must be -1 (all) or the index of a member "
                     f"of config.ensemble_focal_weights={config.ensemble_focal_weights!r} "
                     f"({len(members)} member(s)); got {k}")
  return [members[k]]


def _all_members(config) -> list[dict]:
  raw = config.ensemble_focal_weights
  if isinstance(raw, str):
    parts = [p.strip() for p in raw.split(",") if p.strip()]
  else:
    parts = list(raw or ())
  if not parts:
    return [{"focal_weight": float(config.focal_weight),
             "contrastive_weight": float(config.contrastive_weight or 0.0),
             "seed": int(config.seed)}]
  if not config.contrastive_weight:
    raise ValueError("config.ensemble_focal_weights needs the contrastive term: set "
                     "config.contrastive_weight > 0 (members use 1 - focal weight)")
  members = []
  for k, p in enumerate(parts):
    try:
      w = float(p)
    except ValueError:
      raise ValueError(f"config.ensemble_focal_weights must be comma-separated numbers "
                       f"in [0, 1], e.g. '0.7,0.8'; got {raw!r}") from None
    if not 0.0 <= w <= 1.0:
      raise ValueError(f"config.ensemble_focal_weights entries must be in [0, 1], got "
                       f"{w} in {raw!r}")
    members.append({"focal_weight": w, "contrastive_weight": round(1.0 - w, 10),
                    "seed": int(config.seed) + k})
  return members


def validate(config) -> None:
  """Raises ValueError naming a config field out of range."""
  for field in ("num_epochs", "batch_size", "max_len", "vocab_min_count"):
    if not config[field] >= 1:
      raise ValueError(f"config.{field} must be >= 1, got {config[field]}")
  if config.embedding_projection not in PROJECTIONS:
    raise ValueError(f"config.embedding_projection must be one of {PROJECTIONS}, got "
                     f"{config.embedding_projection!r}")
  if not 0 <= config.dropout_rate < 1:
    raise ValueError(f"config.dropout_rate must be in [0, 1), got {config.dropout_rate}")
  if not config.focal_weight >= 0:
    raise ValueError(f"config.focal_weight must be >= 0, got {config.focal_weight}")
  if config.contrastive_weight is not None and not config.contrastive_weight >= 0:
    raise ValueError(f"config.contrastive_weight must be >= 0 or None, got "
                     f"{config.contrastive_weight}")
  t = config.get("repeat_factor_threshold")
  if t is not None and not 0 < t <= 1:
    raise ValueError(f"config.repeat_factor_threshold must be in (0, 1] or None, got {t}")


# --- Data --------------------------------------------------------------------------------

def load_vocab(config, texts: list[str], workdir: str | None) -> Vocabulary:
  """The run's vocabulary: ``workdir/vocab.json`` if it exists (a restart, or an
  evaluation of a trained run), else built from the training texts and saved there."""
  path = os.path.join(workdir, "vocab.json") if workdir else None
  if path and os.path.exists(path):
    return Vocabulary.load(path)
  vocab = Vocabulary.build((tokenize(t) for t in texts),
                           min_count=config.vocab_min_count)
  if path:
    vocab.save(path)
  return vocab


def contrastive_reference(labels: np.ndarray, batch_size: int, *, batches: int = 200,
                          seed: int = 0) -> dict:
  """What a SupCon value means for this data and batch size (host, NumPy).

  Over ``batches`` random training batches, with ``P(i)`` the in-batch positives of
  anchor i (reviews sharing an aspect-polarity pair) and anchors without positives
  counted as 0 (as the loss does):

  * ``chance``: mean of ``ln(B - 1)``: the loss when all similarities are equal (an
    encoder that separates nothing);
  * ``floor``: mean of ``ln |P(i)|``: the loss as τ -> 0 with positives identical and
    negatives orthogonal-or-further; no embedding goes below it, because one anchor's
    positives share the softmax mass;
  * ``share_with_positives``: anchors with at least one positive.
  """
  rng = np.random.default_rng(seed)
  hot = np.eye(4, dtype=bool)[labels][..., 1:].reshape(len(labels), -1)
  chance, floor, with_pos = [], [], []
  for _ in range(batches):
    idx = rng.choice(len(labels), batch_size, replace=False)
    h = hot[idx].astype(np.int32)
    share = (h @ h.T) > 0
    np.fill_diagonal(share, False)
    npos = share.sum(1)
    has = npos > 0
    chance.append(np.mean(has * math.log(batch_size - 1)))
    floor.append(np.mean(np.where(has, np.log(np.maximum(npos, 1)), 0.0)))
    with_pos.append(has.mean())
  return {"chance": float(np.mean(chance)), "floor": float(np.mean(floor)),
          "share_with_positives": float(np.mean(with_pos)), "batch_size": batch_size}


def train_stream(labels: np.ndarray, threshold: float | None) -> np.ndarray:
  """The training reviews' indices the sampler draws from: each review once, or with
  ``threshold`` repeated by :func:`jaxloss.data.sampler.repeat_factors` over its
  ``ASPECT#polarity`` labels (``labels [N, A]``, 0 absent)."""
  labels = np.asarray(labels)
  if threshold is None:
    return np.arange(len(labels), dtype=np.int32)
  num_classes = 4
  categories = (labels[..., None] == np.arange(1, num_classes)).reshape(len(labels), -1)
  return repeat_indices(repeat_factors(categories, threshold))


def uniform_logit_loss(labels: np.ndarray, alpha: np.ndarray | None, gamma: float
                       ) -> float:
  """The per-aspect loss of a model that knows nothing (all logits 0): ln C for CE,
  ``mean_a α[a, y] (1 - 1/C)^γ ln C`` for α-balanced focal; the initial_loss monitor's
  reference."""
  c = 4
  base = (1 - 1 / c) ** gamma * math.log(c)
  if alpha is None:
    return base
  a = np.take_along_axis(alpha[None], labels[..., None], axis=-1)[..., 0]
  return float(np.mean(a) * base)


# --- Evaluation ---------------------------------------------------------------------------

def eval_report(labels: np.ndarray, probs: np.ndarray) -> dict:
  """Metrics of ``probs [N, A, C]`` against ``labels [N, A]`` (host)."""
  predictions = probs.argmax(-1)
  report = metrics_lib.absa_report(labels, predictions)
  p = np.clip(np.take_along_axis(probs, labels[..., None], axis=-1)[..., 0], 1e-12, 1)
  report["loss"] = float(-np.mean(np.log(p)))  # CE per aspect slot
  share = np.bincount(predictions.ravel(), minlength=4) / predictions.size
  report["pred_share/aspect"] = share.tolist()
  report["label_share/aspect"] = _shares(labels, 4)
  report["top_share/aspect"] = float(share.max())
  report["top_class/aspect"] = int(share.argmax())
  present = labels > 0
  if present.any():
    pol = probs[..., 1:].argmax(-1)[present]
    pshare = np.bincount(pol, minlength=3) / pol.size
    report["pred_share/polarity"] = pshare.tolist()
    report["label_share/polarity"] = _shares(labels[present] - 1, 3)
    report["top_share/polarity"] = float(pshare.max())
    report["top_class/polarity"] = int(pshare.argmax())
  report["score"] = (report["aspect_f1"] + report["sentiment_f1"]) / 2
  return report


def save_predictions(workdir: str, split: str, epoch: float, step: int,
                     labels: np.ndarray, member_probs: list) -> str:
  """Writes ``predictions/<split>_epoch_<epoch>.npz``: ``probs`` float32 ``[N, M, A, C]``
  (each member's class probabilities), ``labels`` int ``[N, A]``, ``epoch``, ``step``;
  written to a temporary name and renamed, so a reader never sees half a file.
  Returns the path."""
  out_dir = os.path.join(workdir, "predictions")
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, f"{split}_epoch_{epoch:g}.npz")
  tmp = path + ".tmp.npz"
  np.savez_compressed(tmp, probs=np.stack([np.asarray(p, np.float32) for p in member_probs],
                                          axis=1),
                      labels=np.asarray(labels), epoch=float(epoch), step=int(step))
  os.replace(tmp, path)
  return path


def _shares(labels: np.ndarray, num_classes: int) -> list[float]:
  """Each class's share of ``labels`` (any shape), the monitors' reference."""
  counts = np.bincount(np.asarray(labels).ravel(), minlength=num_classes)
  return (counts / max(counts.sum(), 1)).tolist()


def attended_tokens(labels: np.ndarray, tokens: np.ndarray, token_text, top: int = 5
                    ) -> dict:
  """What each aspect reads: over the reviews where aspect ``a`` is present
  (``labels[:, a] != 0``), the ``top`` most frequent tokens among the one each review's
  aspect-``a`` attention weighted most.

  Args:
    labels: int ``[N, A]`` (0 = absent).
    tokens: int ``[N, A]``, the most-attended token id of each review and aspect.
    token_text: ids -> list of token strings.

  Returns:
    ``{aspect: {"reviews": n, "top": [{"token": str, "share": float}, ...]}}``, shares
    of the ``n`` reviews, in the order of :data:`jaxloss.metrics.ASPECTS`.
  """
  out = {}
  for a, name in enumerate(metrics_lib.ASPECTS):
    rows = np.flatnonzero(labels[:, a] != 0)
    ids, counts = np.unique(np.asarray(tokens)[rows, a], return_counts=True)
    order = np.argsort(-counts, kind="stable")[:top]
    text = token_text(ids[order]) if order.size else []
    out[name] = {"reviews": int(rows.size),
                 "top": [{"token": t, "share": float(counts[i] / rows.size)}
                         for t, i in zip(text, order)]}
  return out


def snapshot_epochs(num_epochs: int) -> list[int]:
  """Epochs whose Test embeddings are kept for the embedding figure: the first, the
  middle and the last (fewer if the run is shorter)."""
  return sorted({1, max(1, (num_epochs + 1) // 2), num_epochs})


def _fmt(x) -> str:
  return "  nan" if x is None or not np.isfinite(x) else f"{x:.4f}"


ANCHORS = ({"model": "Bi-LSTM + fastText (Phan et al., KSEM 2021)",
            "dataset": "uit_visfd", "aspect_f1": 0.8448, "sentiment_f1": 0.6306},)
_KEYS = ("aspect_f1", "sentiment_f1", "per_aspect_f1", "macro_f1_4class")


def build(config: ml_collections.ConfigDict, workdir: str | None = None) -> Recipe:
  """Data, vocabulary, model, loss, members, evaluation and summary of a run as a
  :class:`~jaxloss.training.Recipe` (no device placement). The vocabulary is saved in
  (and on a restart read from) ``workdir``."""
  validate(config)
  use_encoder = config.get("encoder") is not None
  data = load_uit_visfd(data_dir=config.data_dir, manual_dir=config.manual_dir)
  limits = {"train": config.max_train_examples, "dev": config.max_eval_examples,
            "test": config.max_eval_examples}
  splits = {}
  for name in SPLITS:
    s = data[name]
    n = len(s["text"]) if limits[name] is None else min(limits[name], len(s["text"]))
    splits[name] = {"text": s["text"][:n], "labels": np.asarray(s["labels"][:n])}
  vocab = None
  if not use_encoder:
    vocab = load_vocab(config, splits["train"]["text"], workdir)
    for s in splits.values():
      s["ids"], s["lengths"] = vocab.encode([tokenize(t) for t in s["text"]],
                                            max_len=config.max_len)
  train = splits["train"]
  num_train = len(train["labels"])
  # Counts of the (possibly truncated) training split, [A, C].
  class_counts = np.stack([np.bincount(train["labels"][:, a], minlength=4)
                           for a in range(train["labels"].shape[1])])
  steps_per_epoch = math.ceil(num_train / config.batch_size)
  members = parse_members(config)
  contrastive = bool(config.contrastive_weight)  # None or 0: no SupCon term or head

  # Warm-up at most half the run, so that a one-epoch run still decays.
  warmup = min(float(config.warmup_epochs), float(config.num_epochs) / 2)
  if use_encoder:  # BERT's schedule: linear warm-up, linear decay to 0
    lr = finetune.warmup_linear_decay(config.learning_rate, warmup=warmup,
                                      total=float(config.num_epochs))
  else:
    lr = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=config.learning_rate,
        warmup_steps=warmup, decay_steps=float(config.num_epochs),
        end_value=config.learning_rate * 0.01)
  curriculum = curriculum_lib.constant(learning_rate=lr)
  compiled = curriculum.compile(steps_per_epoch)
  if not use_encoder:
    model = AspectSentimentModel(len(vocab), embed_dim=config.embed_dim,
                                 hidden=config.hidden, num_layers=config.num_layers,
                                 dropout_rate=config.dropout_rate,
                                 projection_dim=config.projection_dim,
                                 aspect_attention=bool(config.get("aspect_attention")))
    tx = make_optimizer(config.optimizer, learning_rate=config.learning_rate,
                        weight_decay=config.weight_decay,
                        max_grad_norm=config.max_grad_norm)
  loss_fn = make_multi_aspect_loss(
      class_counts, loss=config.loss, gamma=config.focal_gamma,
      alpha_method=config.alpha_method, class_weight_cap=config.class_weight_cap,
      contrastive=contrastive, temperature=config.contrastive_temperature)
  alpha = (aspect_alpha_table(class_counts, method=config.alpha_method,
                              cap=config.class_weight_cap)
           if config.loss == "focal" else None)
  terms = [config.loss] + (["contrastive"] if contrastive else [])
  monitor_spec = None
  if config.monitor.enabled:
    monitor_spec = monitors.MonitorSpec(
        terms=tuple(terms),
        heads={"aspect": monitors.HeadSpec(4), "polarity": monitors.HeadSpec(3)})
  initial_reference = uniform_logit_loss(train["labels"], alpha,
                                         config.focal_gamma if alpha is not None else 0)
  supcon_ref = (contrastive_reference(train["labels"], config.batch_size)
                if contrastive else None)
  test_labels = splits["test"]["labels"]

  def init(key) -> TrainState:
    init_key, state_key = jax.random.split(key)
    ids = jnp.zeros((1, config.max_len), jnp.int32)
    variables = model.init(init_key, ids, jnp.ones((1,), jnp.int32), train=False)
    return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                             rng=state_key, train_sums=monitors.zero_sums(monitor_spec))

  stream = None  # each review once an epoch
  sampler = epoch_permutation_sampler(num_train, config.batch_size)
  if config.get("repeat_factor_threshold") is not None:
    stream = train_stream(train["labels"], config.repeat_factor_threshold)
    sampler = stream_sampler(epoch_permutation_sampler(len(stream), config.batch_size),
                             stream)
  inputs, encoder_facts, sequence_buckets = ("ids", "lengths"), None, None
  if use_encoder:
    enc = absa_encoder.setup(config, splits, monitors.zero_sums(monitor_spec), TrainState,
                             train_stream=stream)
    model, inputs, init, tx = enc.model, enc.inputs, enc.init, enc.tx
    sequence_buckets, encoder_facts = enc.sequence_buckets, enc.facts
    sampler = enc.sampler or sampler

  # With aspect attention over token ids, evaluation also returns the token each
  # aspect attended to most ([B, A] ids); the last Test evaluation summarises them.
  attended = bool(config.get("aspect_attention")) and inputs[0] in ("ids", "subword_ids")
  token_text = (enc.token_text if use_encoder else
                (lambda ids: [vocab.tokens[int(i)] for i in np.ravel(ids)]))

  def predict(state, batch):
    args = [batch[k] for k in inputs]
    if not use_encoder:
      args[1] = jnp.maximum(args[1], 1)
    # With "intermediates" mutable, apply also returns the sown attention weights.
    out = model.apply({"params": state.params}, *args, train=False,
                      mutable=["intermediates"] if attended else False)
    out, inter = out if attended else (out, None)
    result = {"probs": jax.nn.softmax(out["logits"], axis=-1),
              "embedding": out["embedding"]}
    if attended:
      positions = attended_positions(inter["intermediates"])
      result["attended_token"] = jnp.take_along_axis(args[0], positions, axis=1)
    return result

  def meta(k) -> dict:
    member = members[k]
    meta_terms = [{"name": terms[0], "weight": member["focal_weight"],
                   "weight_field": "config.focal_weight",
                   "initial_reference": initial_reference,
                   "initial_reference_text": ("ln 4" if config.loss == "ce" else
                                              "the focal loss at uniform logits")}]
    if contrastive:
      # An untrained encoder separates nothing: SupCon starts at its chance level.
      meta_terms.append({"name": "contrastive", "weight": member["contrastive_weight"],
                         "weight_field": "config.contrastive_weight",
                         "initial_reference": supcon_ref["chance"],
                         "initial_reference_text": "the SupCon chance level (ln(B-1) "
                                                   "over anchors with positives)"})
    return {
        "member": k, **member, "num_classes": 4, "class_counts": class_counts.tolist(),
        "learning_rate": float(config.learning_rate),
        "max_grad_norm": config.max_grad_norm, "terms": meta_terms,
        "initial_reference": initial_reference,
        "initial_reference_text": meta_terms[0]["initial_reference_text"],
        "contrastive_reference": supcon_ref,
        "heads": {"aspect": {"num_classes": 4, "o_index": None,
                             "label_shares": _shares(train["labels"], 4)},
                  "polarity": {"num_classes": 3, "o_index": None,
                               "label_shares": _shares(train["labels"][train["labels"] > 0]
                                                       - 1, 3)}},
        "class_names": {"aspect": list(metrics_lib.POLARITIES),
                        "polarity": list(metrics_lib.POLARITIES[1:])},
        "stages": [{"name": "constant", "start_step": 0, "expect": {}, "knobs": {}}],
        "config_fields": {"learning_rate": "config.learning_rate"},
    }

  snapshots = snapshot_epochs(config.num_epochs)

  attention_report = {}

  def on_evaluation(workdir, step, epoch, split, outputs, last) -> None:
    e_int = int(round(epoch))
    save_predictions(workdir, split, epoch, step, splits[split]["labels"],
                     [o["probs"] for o in outputs])
    if split == "test" and last and attended:
      attention_report.update(attended_tokens(test_labels, outputs[0]["attended_token"],
                                              token_text))
    if split == "test" and (last or (abs(epoch - e_int) < 1e-9 and e_int in snapshots)):
      emb_dir = os.path.join(workdir, "embeddings")
      os.makedirs(emb_dir, exist_ok=True)
      embedding = np.stack([o["embedding"] for o in outputs], axis=1)  # [N, M, E]
      np.savez_compressed(os.path.join(emb_dir, f"epoch_{e_int}.npz"),
                          embedding=embedding.astype(np.float16), labels=test_labels,
                          epoch=epoch, step=step)

  def summarize(record) -> dict:
    member_summaries = []
    for k, events in enumerate(record.streams):
      best, last = record.select(events)
      member_summaries.append({
          **members[k], "workdir": record.member_dirs[k],
          **{key: best["test"][key] for key in _KEYS},
          "selected_epoch": best["dev"]["epoch"],
          "dev_aspect_f1": best["dev"]["aspect_f1"],
          "dev_sentiment_f1": best["dev"]["sentiment_f1"],
          "last_epoch": {key: last["test"][key] for key in _KEYS},
          "eval_repeat_max_diff": last["test"].get("eval_repeat_max_diff"),
          "diagnosis": monitors.counts(record.findings[k]),
          "final_terms": {t: next((e.get(f"term/{t}") for e in reversed(events)
                                   if e["split"] == "train"), None) for t in terms},
      })
    if record.ensemble_events is None:
      top = member_summaries[0]
      out = {key: top[key] for key in _KEYS}
      out.update({"selected_epoch": top["selected_epoch"],
                  "dev_aspect_f1": top["dev_aspect_f1"],
                  "dev_sentiment_f1": top["dev_sentiment_f1"],
                  "last_epoch": top["last_epoch"], "final_terms": top["final_terms"],
                  **members[0]})
    else:
      best, last = record.select(record.ensemble_events)
      out = {key: best["test"][key] for key in _KEYS}
      out.update({"selected_epoch": best["dev"]["epoch"],
                  "dev_aspect_f1": best["dev"]["aspect_f1"],
                  "dev_sentiment_f1": best["dev"]["sentiment_f1"],
                  "last_epoch": {key: last["test"][key] for key in _KEYS}})
    out.update({"name": config.name, "ensemble": record.ensemble_events is not None,
                "members": member_summaries,
                "vocab_size": None if vocab is None else len(vocab),
                "encoder": encoder_facts,
                "contrastive_reference": supcon_ref,
                "initial_reference": initial_reference})
    if attention_report:
      out["attended_tokens"] = dict(attention_report)
    return out

  def progress(train_event, reports) -> str:
    text = ""
    if train_event:
      term_text = " ".join(f"{t} {_fmt(train_event.get(f'term/{t}'))}" for t in terms)
      text = (f"({train_event['focal_weight']:.2f}/{train_event['contrastive_weight']:.2f})"
              f" loss {_fmt(train_event['loss'])} ({term_text}) | ")
    dev = reports["dev"]
    return (text + f"dev aspect F1 {100 * dev['aspect_f1']:5.2f} sentiment F1 "
            f"{100 * dev['sentiment_f1']:5.2f}")

  def figures(workdir, record) -> None:
    from jaxloss import plots  # pylint: disable=g-import-not-at-top
    many = len(record.streams) > 1
    streams = {(f"member {k} ({members[k]['focal_weight']:g}/"
                f"{members[k]['contrastive_weight']:g})" if many else config.name): events
               for k, events in enumerate(record.streams)}
    if record.ensemble_events is not None:
      streams["ensemble"] = record.ensemble_events
    plots.plot_absa_loss_relationship(
        streams, os.path.join(workdir, "loss_relationship.png"), terms=terms,
        contrastive_reference=supcon_ref, title=config.name)
    emb_dir = os.path.join(workdir, "embeddings")
    files = sorted((f for f in os.listdir(emb_dir) if f.endswith(".npz")),
                   key=lambda f: int(f[len("epoch_"):-len(".npz")]))
    epochs = [int(f[len("epoch_"):-len(".npz")]) for f in files]
    wanted = [e for e in snapshots if e in epochs] or epochs[-3:]
    train_events = [e for e in record.streams[0] if e["split"] == "train"]
    panels = []
    for e in wanted:
      z = np.load(os.path.join(emb_dir, f"epoch_{e}.npz"))
      event = min(train_events, key=lambda t: abs(t["epoch"] - e))
      panels.append({"epoch": e, "embedding": z["embedding"][:, 0].astype(np.float32),
                     "labels": z["labels"], "contrastive": event.get("term/contrastive")})
    plots.plot_embedding_evolution(
        panels, os.path.join(workdir, "embedding_space_evolution.png"),
        colour_aspect=metrics_lib.ASPECTS.index("GENERAL"),
        class_names=metrics_lib.POLARITIES, method=config.embedding_projection,
        title=f"{config.name}: Test embeddings" + (" (member 0)" if many else ""))

  def report(summary) -> list:
    lines = [f"{config.name}: Test aspect F1 {100 * summary['aspect_f1']:.2f}  sentiment "
             f"F1 {100 * summary['sentiment_f1']:.2f}  (Dev-selected epoch "
             f"{summary['selected_epoch']:g})"]
    for a in ANCHORS:
      lines.append(f"  {a['model']}: aspect F1 {100 * a['aspect_f1']:.2f}  sentiment F1 "
                   f"{100 * a['sentiment_f1']:.2f}")
    if summary.get("attended_tokens"):
      k = int(config.get("ensemble_member", -1))
      whose = " (member 0)" if len(members) > 1 else (f" (member {k})" if k >= 0 else "")
      lines.append(f"  most-attended token, Test reviews with the aspect{whose}: " +
                   ", ".join(f"{a} {v['top'][0]['token']!r} {100 * v['top'][0]['share']:.0f}%"
                             for a, v in summary["attended_tokens"].items() if v["top"]))
    if summary["ensemble"]:
      for k, m in enumerate(summary["members"]):
        lines.append(f"  member {k} ({m['focal_weight']:g}/{m['contrastive_weight']:g}, "
                     f"seed {m['seed']}): aspect F1 {100 * m['aspect_f1']:.2f}  "
                     f"sentiment F1 {100 * m['sentiment_f1']:.2f}")
    return lines

  def ensemble(split, outputs) -> dict:
    probs = np.mean(np.stack([o["probs"] for o in outputs]), axis=0)
    return eval_report(splits[split]["labels"], probs)

  knob_names = ("focal_weight", "contrastive_weight")
  return Recipe(
      name=config.name,
      train={**{k: train[k] for k in inputs}, "label": train["labels"]},
      eval_splits={name: splits[name] for name in ("dev", "test")},
      input_keys=inputs, eval_input_keys=inputs, init=init,
      objective=loss_fn, curriculum=curriculum, compiled=compiled,
      batch_size=config.batch_size, num_epochs=config.num_epochs, predict=predict,
      evaluate=lambda split, out: eval_report(splits[split]["labels"], out["probs"]),
      meta=meta, summarize=summarize, seed=config.seed, sampler=sampler,
      max_grad_norm=config.max_grad_norm, monitor=monitor_spec,
      members=tuple(Member(seed=m["seed"], knobs={k: m[k] for k in knob_names},
                           fields=dict(m)) for m in members),
      ensemble=ensemble if len(members) > 1 else None,
      selection=Selection("dev", "score"), checkpoint_every_epoch=True,
      progress=progress, on_evaluation=on_evaluation, figures=figures, report=report,
      anchors=ANCHORS,
      sequence_buckets=sequence_buckets,
      describe=(f"{num_train} train / {len(splits['dev']['labels'])} dev / "
                f"{len(splits['test']['labels'])} test reviews, "
                + (f"vocabulary {len(vocab)}, " if vocab is not None else
                   _describe_encoder(encoder_facts))
                + f"{len(members)} member(s) "
                f"{[(m['focal_weight'], m['contrastive_weight']) for m in members]}"))


def _describe_encoder(facts: dict) -> str:
  return (f"encoder {facts['path']} ({facts['num_layers']} layers, {facts['pooling']}"
          f"{', frozen' if facts['freeze_encoder'] else ''}"
          f"{', states cached' if facts['cached_features'] else ''}), "
          f"{facts['subword_length']} sub-words, truncated "
          f"{sum(facts['truncated'].values())}, ")
