"""``train_and_evaluate(config, workdir)`` for multi-aspect sentiment on UIT-ViSFD.

Per-aspect focal loss (α per aspect and class from the training counts) plus a
supervised contrastive term with multi-label positives, on a BiLSTM trained from
scratch; the recipe of ``experiments/configs/visfd_absa.py``. Laid out like
``experiments/train.py``: data, model and state, restore-or-init, compiled steps, the
loop (log, evaluate, checkpoint), the summary.

An *ensemble* (``config.ensemble_focal_weights = "0.7,0.8"``) is a train state with a
leading member axis: member k has its own parameters, optimizer state and key (seed
``config.seed + k``), focal weight ``w_k`` and contrastive weight ``1 - w_k``; one
``jax.vmap`` of the train step body trains all members in one compiled step, and
member k follows exactly the trajectory of a single run with that seed and weight.
A single run is the same code with one member.

Model selection: Dev and Test are evaluated after every epoch; the reported Test
numbers are those of the epoch with the best Dev score (mean of aspect and sentiment
F1), as restoring the best-Dev checkpoint would give, and the last epoch's are kept
beside them.

Workdir: ``config.json``, ``vocab.json`` (the token ids every restart and evaluation
use), ``metrics.jsonl`` (per member under ``member_<k>/`` for an ensemble, and the
ensemble's own Dev/Test events at the top), ``diagnosis.json``, ``checkpoints/``,
``embeddings/epoch_<e>.npz``, ``summary.json``, ``loss_relationship.png`` and
``embedding_space_evolution.png``.
"""

from __future__ import annotations

import json
import math
import os
import time
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from tqdm import tqdm

from jaxloss import curriculum as curriculum_lib
from jaxloss import metrics as metrics_lib
from jaxloss import monitors
from jaxloss.checkpoint import Checkpointer
from jaxloss.data.sampler import epoch_permutation_indices
from jaxloss.data.text import Vocabulary, tokenize
from jaxloss.data.uit_visfd import load_uit_visfd
from jaxloss.models.text import AspectSentimentModel
from jaxloss.parallel import DataParallel, TraceCounter, pad_to_multiple
from jaxloss.train_state import TrainState
from jaxloss.train_step import (aspect_alpha_table, make_multi_aspect_loss,
                                make_optimizer, make_train_step)
from experiments.train import MetricsLog

PROJECTIONS = ("tsne", "pca")
SPLITS = ("train", "dev", "test")


# --- Configuration ---------------------------------------------------------------------

def parse_members(config) -> list[dict]:
  """The ensemble members as ``[{"focal_weight", "contrastive_weight", "seed"}]``.

  ``config.ensemble_focal_weights`` ("0.7,0.8", or a tuple) gives one member per focal
  weight ``w`` with contrastive weight ``1 - w`` and seed ``config.seed + k``; empty
  gives the single member of ``config.focal_weight`` / ``config.contrastive_weight``
  (0 when None).

  Raises:
    ValueError: a weight outside ``[0, 1]`` or not a number; an ensemble with no
      contrastive term configured (``config.contrastive_weight`` None).
  """
  raw = config.ensemble_focal_weights
  if isinstance(raw, str):
    parts = [p.strip() for p in raw.split(",") if p.strip()]
  else:
    parts = list(raw or ())
  if not parts:
    return [{"focal_weight": float(config.focal_weight),
             "contrastive_weight": float(config.contrastive_weight or 0.0),
             "seed": int(config.seed)}]
  if config.contrastive_weight is None:
    raise ValueError("config.ensemble_focal_weights needs the contrastive term: set "
                     "config.contrastive_weight (members use 1 - focal weight)")
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


def _validate(config) -> None:
  for field in ("num_epochs", "batch_size", "eval_batch_size", "keep_checkpoints",
                "max_len", "vocab_min_count"):
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
  monitors.resolve_thresholds(config.monitor)
  monitors.validate_halt_on(config.monitor.halt_on)


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


def build(config: ml_collections.ConfigDict, workdir: str | None = None):
  """Data, vocabulary, model, optimizer, loss, members and the step bodies of a run
  (no device placement). Returns a namespace (see the end of the function)."""
  data = load_uit_visfd(data_dir=config.data_dir, manual_dir=config.manual_dir)
  limits = {"train": config.max_train_examples, "dev": config.max_eval_examples,
            "test": config.max_eval_examples}
  splits = {}
  for name in SPLITS:
    s = data[name]
    n = len(s["text"]) if limits[name] is None else min(limits[name], len(s["text"]))
    splits[name] = {"text": s["text"][:n], "labels": np.asarray(s["labels"][:n])}
  vocab = load_vocab(config, splits["train"]["text"], workdir)
  for s in splits.values():
    s["ids"], s["lengths"] = vocab.encode([tokenize(t) for t in s["text"]],
                                          max_len=config.max_len)
  train = splits["train"]
  num_train = len(train["labels"])
  if config.batch_size > num_train:
    raise ValueError(f"config.batch_size ({config.batch_size}) exceeds the training "
                     f"set ({num_train} reviews)")
  # Counts of the (possibly truncated) training split, [A, C].
  class_counts = np.stack([np.bincount(train["labels"][:, a], minlength=4)
                           for a in range(train["labels"].shape[1])])
  steps_per_epoch = math.ceil(num_train / config.batch_size)
  total_steps = int(config.num_epochs) * steps_per_epoch
  members = parse_members(config)
  contrastive = config.contrastive_weight is not None

  # Warm-up at most half the run, so that a one-epoch run still decays.
  warmup = min(float(config.warmup_epochs), float(config.num_epochs) / 2)
  lr = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=config.learning_rate,
      warmup_steps=warmup, decay_steps=float(config.num_epochs),
      end_value=config.learning_rate * 0.01)
  curriculum_spec = curriculum_lib.constant(learning_rate=lr)
  curriculum = curriculum_spec.compile(steps_per_epoch)
  model = AspectSentimentModel(len(vocab), embed_dim=config.embed_dim,
                               hidden=config.hidden, num_layers=config.num_layers,
                               dropout_rate=config.dropout_rate,
                               projection_dim=config.projection_dim)
  tx = make_optimizer(config.optimizer, learning_rate=config.learning_rate,
                      weight_decay=config.weight_decay, max_grad_norm=config.max_grad_norm)
  loss_fn = make_multi_aspect_loss(
      class_counts, loss=config.loss, gamma=config.focal_gamma,
      alpha_method=config.alpha_method, alpha_cap=config.alpha_cap,
      contrastive=contrastive, temperature=config.contrastive_temperature)
  alpha = (aspect_alpha_table(class_counts, method=config.alpha_method,
                              cap=config.alpha_cap) if config.loss == "focal" else None)
  term_name = config.loss
  terms = [term_name] + (["contrastive"] if contrastive else [])
  monitor_spec = None
  if config.monitor.enabled:
    monitor_spec = monitors.MonitorSpec(
        terms=tuple(terms),
        heads={"aspect": monitors.HeadSpec(4), "polarity": monitors.HeadSpec(3)})
  initial_reference = uniform_logit_loss(train["labels"], alpha,
                                         config.focal_gamma if alpha is not None else 0)
  supcon_ref = (contrastive_reference(train["labels"], config.batch_size)
                if contrastive else None)
  member_knobs = {k: jnp.asarray([m[k] for m in members], jnp.float32)
                  for k in ("focal_weight", "contrastive_weight")}

  def init_member(key) -> TrainState:
    init_key, state_key = jax.random.split(key)
    ids = jnp.zeros((1, config.max_len), jnp.int32)
    variables = model.init(init_key, ids, jnp.ones((1,), jnp.int32), train=False)
    return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                             rng=state_key, train_sums=monitors.zero_sums(monitor_spec))

  def init_state() -> TrainState:
    """All members' states, stacked on a leading member axis."""
    keys = jnp.stack([jax.random.PRNGKey(m["seed"]) for m in members])
    return jax.vmap(init_member)(keys)

  def sampler(rng, step, data, knobs):
    del data, knobs
    return epoch_permutation_indices(jax.random.fold_in(rng, 1), step, num_train,
                                     config.batch_size)

  def train_step_body(num_devices: int):
    body = make_train_step(curriculum=curriculum, loss_fn=loss_fn,
                           global_batch_size=config.batch_size, num_devices=num_devices,
                           class_counts=None, max_grad_norm=config.max_grad_norm,
                           monitor=monitor_spec, input_keys=("ids", "lengths"),
                           sampler=sampler)

    def ensemble_body(state, data):
      return jax.vmap(body, in_axes=(0, None, 0))(state, data, member_knobs)

    return ensemble_body

  def predict_body(state, batch):
    def one(params):
      out = model.apply({"params": params}, batch["ids"], batch["lengths"], train=False)
      return jax.nn.softmax(out["logits"], axis=-1), out["embedding"]
    probs, embedding = jax.vmap(one)(state.params)  # [M, b, A, C], [M, b, E]
    return {"probs": jnp.moveaxis(probs, 0, 1), "embedding": jnp.moveaxis(embedding, 0, 1)}

  return types.SimpleNamespace(
      splits=splits, vocab=vocab, class_counts=class_counts, members=members,
      steps_per_epoch=steps_per_epoch, total_steps=total_steps, contrastive=contrastive,
      curriculum_spec=curriculum_spec, curriculum=curriculum, model=model, tx=tx,
      loss_fn=loss_fn, alpha=alpha, terms=terms, monitor_spec=monitor_spec,
      initial_reference=initial_reference, contrastive_reference=supcon_ref,
      init_state=init_state, train_step_body=train_step_body, predict_body=predict_body)


# --- Evaluation ---------------------------------------------------------------------------

def _absa_eval_report(labels: np.ndarray, probs: np.ndarray) -> dict:
  """Metrics of ``probs [N, A, C]`` against ``labels [N, A]`` (host)."""
  predictions = probs.argmax(-1)
  report = metrics_lib.absa_report(labels, predictions)
  p = np.clip(np.take_along_axis(probs, labels[..., None], axis=-1)[..., 0], 1e-12, 1)
  report["loss"] = float(-np.mean(np.log(p)))  # CE per aspect slot
  share = np.bincount(predictions.ravel(), minlength=4) / predictions.size
  report["pred_share/aspect"] = share.tolist()
  report["top_share/aspect"] = float(share.max())
  report["top_class/aspect"] = int(share.argmax())
  present = labels > 0
  if present.any():
    pol = probs[..., 1:].argmax(-1)[present]
    pshare = np.bincount(pol, minlength=3) / pol.size
    report["pred_share/polarity"] = pshare.tolist()
    report["top_share/polarity"] = float(pshare.max())
    report["top_class/polarity"] = int(pshare.argmax())
  report["score"] = (report["aspect_f1"] + report["sentiment_f1"]) / 2
  return report


def _member_meta(config, b, member: dict, k: int) -> dict:
  terms = [{"name": b.terms[0], "weight": member["focal_weight"],
            "weight_field": "config.focal_weight",
            "initial_reference": b.initial_reference,
            "initial_reference_text": ("ln 4" if config.loss == "ce" else
                                       "the focal loss at uniform logits")}]
  if b.contrastive:
    # An untrained encoder separates nothing: SupCon starts at its chance level.
    terms.append({"name": "contrastive", "weight": member["contrastive_weight"],
                  "weight_field": "config.contrastive_weight",
                  "initial_reference": b.contrastive_reference["chance"],
                  "initial_reference_text": "the SupCon chance level (ln(B-1) over "
                                            "anchors with positives)"})
  return {
      "step": 0, "split": "meta", "name": config.name, "member": k, **member,
      "total_steps": b.total_steps, "steps_per_epoch": b.steps_per_epoch,
      "num_classes": 4, "class_counts": b.class_counts.tolist(),
      "learning_rate": float(config.learning_rate), "max_grad_norm": config.max_grad_norm,
      "terms": terms, "initial_reference": b.initial_reference,
      "initial_reference_text": terms[0]["initial_reference_text"],
      "contrastive_reference": b.contrastive_reference,
      "heads": {"aspect": {"num_classes": 4, "o_index": None},
                "polarity": {"num_classes": 3, "o_index": None}},
      "class_names": {"aspect": list(metrics_lib.POLARITIES),
                      "polarity": list(metrics_lib.POLARITIES[1:])},
      "stages": [{"name": "constant", "start_step": 0, "expect": {}, "knobs": {}}],
      "thresholds": monitors.resolve_thresholds(config.monitor),
      "config_fields": {"learning_rate": "config.learning_rate"},
  }


def snapshot_epochs(num_epochs: int) -> list[int]:
  """Epochs whose Test embeddings are kept for the embedding figure: the first, the
  middle and the last (fewer if the run is shorter)."""
  return sorted({1, max(1, (num_epochs + 1) // 2), num_epochs})


def _fmt(x) -> str:
  return "  nan" if x is None or not np.isfinite(x) else f"{x:.4f}"


# --- The run --------------------------------------------------------------------------------

def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict | None:
  """Trains and evaluates one run (one model or a vmapped ensemble); returns the
  summary (also in ``summary.json``), or None if stopped at
  ``config.interrupt_at_step``. Resumes from ``workdir/checkpoints``."""
  _validate(config)
  t_start = time.time()
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  b = build(config, workdir)
  members, num_members = b.members, len(b.members)
  steps_per_epoch, total_steps = b.steps_per_epoch, b.total_steps
  splits = b.splits
  dp = DataParallel(config.parallel, config.num_devices)
  print(f"{config.name}: {len(splits['train']['labels'])} train / "
        f"{len(splits['dev']['labels'])} dev / {len(splits['test']['labels'])} test "
        f"reviews, vocabulary {len(b.vocab)}, {num_members} member(s) "
        f"{[(m['focal_weight'], m['contrastive_weight']) for m in members]}, "
        f"{steps_per_epoch} steps/epoch on {dp.num_devices} device(s)")

  # --- Restore or initialise -----------------------------------------------------------
  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"),
                              max_to_keep=config.keep_checkpoints)
  state, restored = checkpointer.restore_or_init(b.init_state, dp.restore_sharding)
  if restored:
    print(f"Resumed from {checkpointer.directory} at step {int(state.step[0])}")
  step = int(state.step[0])

  member_dirs = ([workdir] if num_members == 1 else
                 [os.path.join(workdir, f"member_{k}") for k in range(num_members)])
  logs, monitor_list = [], []
  for k, d in enumerate(member_dirs):
    os.makedirs(d, exist_ok=True)
    log = MetricsLog(os.path.join(d, "metrics.jsonl"), resume_step=step)
    if not any(e["split"] == "meta" for e in log.read()):
      log.write(_member_meta(config, b, members[k], k))
    mon = monitors.Monitor(config.monitor, halt_on=config.monitor.halt_on)
    mon.update(log.read())
    logs.append(log)
    monitor_list.append(mon)
  ens_log = None
  if num_members > 1:
    ens_log = MetricsLog(os.path.join(workdir, "metrics.jsonl"), resume_step=step)
    if not any(e["split"] == "meta" for e in ens_log.read()):
      ens_log.write({"step": 0, "split": "meta", "name": config.name, "ensemble": True,
                     "members": members, "member_dirs": member_dirs})
  state = dp.replicate(state)

  counter = TraceCounter()
  train_step = dp.launch_train_step(b.train_step_body(dp.num_devices), counter)
  predict_step = dp.launch_predict_step(b.predict_body)
  train = splits["train"]
  train_data = dp.replicate({"ids": train["ids"], "lengths": train["lengths"],
                             "label": train["labels"]})
  eval_batch = -(-config.eval_batch_size // dp.num_devices) * dp.num_devices

  def predict(state, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities ``[N, M, A, C]`` and embeddings ``[N, M, E]`` of a split."""
    s = splits[split]
    n = len(s["labels"])
    padded = pad_to_multiple({"ids": s["ids"], "lengths": s["lengths"]}, eval_batch)
    padded["lengths"] = np.maximum(padded["lengths"], 1)
    probs, embs = [], []
    for i in range(0, len(padded["mask"]), eval_batch):
      batch = dp.shard_batch({k: padded[k][i:i + eval_batch] for k in ("ids", "lengths")})
      out = jax.device_get(predict_step(state, batch))
      probs.append(out["probs"])
      embs.append(out["embedding"])
    probs, embs = np.concatenate(probs)[:n], np.concatenate(embs)[:n]
    if len(probs) != n:
      raise RuntimeError(f"evaluation of {split} returned {len(probs)} examples, "
                         f"expected {n}")
    return probs, embs

  def evaluate(state, split: str, repeat: bool = False):
    """Per-member reports, the ensemble's (None for one member) and the embeddings."""
    labels = splits[split]["labels"]
    probs, embs = predict(state, split)
    reports = [_absa_eval_report(labels, probs[:, k]) for k in range(num_members)]
    if repeat:
      probs2, _ = predict(state, split)
      diff = float(np.max(np.abs(probs2 - probs)))
      for k, r in enumerate(reports):
        r["eval_repeat_max_diff"] = float(np.max(np.abs(probs2[:, k] - probs[:, k])))
    ensemble = (_absa_eval_report(labels, probs.mean(axis=1)) if num_members > 1
                else None)
    if ensemble is not None and repeat:
      ensemble["eval_repeat_max_diff"] = diff
    return reports, ensemble, embs

  # --- Train -----------------------------------------------------------------------------
  snapshots = snapshot_epochs(config.num_epochs)
  emb_dir = os.path.join(workdir, "embeddings")
  os.makedirs(emb_dir, exist_ok=True)
  bar = tqdm(total=total_steps, initial=step, desc=config.name, unit="step",
             disable=not config.progress, dynamic_ncols=True, leave=False)
  halted = None
  zero = monitors.zero_sums(b.monitor_spec)
  fresh_sums = lambda: dp.replicate(jax.tree.map(  # noqa: E731
      lambda x: np.broadcast_to(np.asarray(x), (num_members,) + x.shape), zero))
  while step < total_steps:
    if config.get("interrupt_at_step") is not None and step >= config.interrupt_at_step:
      bar.close()
      checkpointer.close()
      print(f"Interrupted at step {step} (config.interrupt_at_step)")
      return None
    state, step_metrics = train_step(state, train_data)
    step += 1
    bar.update(1)
    if step == 1:
      first = jax.device_get(dp.unreplicate(step_metrics))
      for k, log in enumerate(logs):
        log.write({"step": 1, "split": "init", "stage": "constant",
                   **{key: float(v[k]) for key, v in first.items()
                      if key == "loss" or key.startswith("term/")}})
    if step % steps_per_epoch and step != total_steps:
      continue
    # End of an epoch: log, evaluate, monitor, checkpoint.
    epoch = step / steps_per_epoch
    knobs = b.curriculum.host_values(step - 1)
    raw = jax.device_get(dp.unreplicate(state.train_sums))
    state = state.replace(train_sums=fresh_sums())
    last = step == total_steps
    first_eval = not any(e["split"] == "test" for e in logs[0].events)
    dev_reports, dev_ens, _ = evaluate(state, "dev")
    test_reports, test_ens, test_emb = evaluate(state, "test",
                                                repeat=first_eval or last)
    e_int = int(round(epoch))
    if last or (abs(epoch - e_int) < 1e-9 and e_int in snapshots):
      np.savez_compressed(
          os.path.join(emb_dir, f"epoch_{e_int}.npz"),
          embedding=test_emb.astype(np.float16), labels=splits["test"]["labels"],
          epoch=epoch, step=step)
    lines = []
    for k, log in enumerate(logs):
      summary_k = monitors.period_summary(jax.tree.map(lambda x: x[k], raw))
      train_event = {"step": step, "epoch": epoch, "stage": "constant", "split": "train",
                     **summary_k, **knobs, **members[k]}
      log.write(train_event)
      for split, rep in (("dev", dev_reports[k]), ("test", test_reports[k])):
        log.write({"step": step, "epoch": epoch, "stage": "constant", "split": split,
                   **rep})
      term_text = " ".join(f"{t} {_fmt(train_event.get(f'term/{t}'))}" for t in b.terms)
      lines.append(
          f"epoch {epoch:4.1f} | member {k} ({members[k]['focal_weight']:.2f}/"
          f"{members[k]['contrastive_weight']:.2f}) | loss {_fmt(train_event['loss'])} "
          f"({term_text}) | dev aspect F1 {100 * dev_reports[k]['aspect_f1']:5.2f} "
          f"sentiment F1 {100 * dev_reports[k]['sentiment_f1']:5.2f}")
    if ens_log is not None:
      for split, rep in (("dev", dev_ens), ("test", test_ens)):
        ens_log.write({"step": step, "epoch": epoch, "split": split, **rep})
      lines.append(f"epoch {epoch:4.1f} | ensemble (probability mean) | dev aspect F1 "
                   f"{100 * dev_ens['aspect_f1']:5.2f} sentiment F1 "
                   f"{100 * dev_ens['sentiment_f1']:5.2f}")
    new_findings = []
    for k, (log, mon) in enumerate(zip(logs, monitor_list)):
      found = mon.update(log.read())
      new_findings += [(k, f) for f in found]
      if halted is None:
        h = mon.halting(found)
        halted = h
      monitors.write_diagnosis(os.path.join(member_dirs[k], "diagnosis.json"),
                               mon.findings, thresholds=mon.thresholds, halted=halted,
                               source=os.path.join(member_dirs[k], "metrics.jsonl"))
    if config.progress:
      for line in lines:
        bar.write(line)
      for k, finding in new_findings:
        prefix = f"[member {k}] " if num_members > 1 else ""
        bar.write(prefix + monitors.format_live(finding))
    else:
      print("\n".join(lines))
    checkpointer.save(step, dp.unreplicate(state))
    if halted is not None:
      bar.write(f"Halted at step {step}: {halted.code} is in config.monitor.halt_on "
                f"(checkpoint saved; re-running the workdir resumes from it)")
      break
  bar.close()
  checkpointer.close()

  # --- Summary ------------------------------------------------------------------------------
  summary = _summarise(config, b, logs, ens_log, member_dirs, monitor_list)
  summary.update({
      "steps": step, "steps_per_epoch": steps_per_epoch,
      "skipped_steps": [int(x) for x in jax.device_get(dp.unreplicate(
          state.skipped_steps))],
      "wall_s": round(time.time() - t_start, 2),
      "train_step_compilations": counter.count, "num_devices": dp.num_devices,
      "parallel": dp.kind, "vocab_size": len(b.vocab),
      "halted": halted.to_dict() if halted else None,
      "contrastive_reference": b.contrastive_reference,
      "initial_reference": b.initial_reference,
  })
  with open(os.path.join(workdir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
  _figures(config, b, workdir, logs, ens_log)
  _print_summary(config, summary, workdir)
  return summary


def _best(events: list[dict]) -> tuple[dict, dict, dict]:
  """(dev event with the best score, the test event of that step, the last test)."""
  dev = [e for e in events if e["split"] == "dev"]
  test = {e["step"]: e for e in events if e["split"] == "test"}
  best = max(dev, key=lambda e: (e["score"], -e["step"]))
  return best, test[best["step"]], test[max(test)]


_KEYS = ("aspect_f1", "sentiment_f1", "per_aspect_f1", "macro_f1_4class")


def _summarise(config, b, logs, ens_log, member_dirs, monitor_list) -> dict:
  member_summaries = []
  for k, log in enumerate(logs):
    best_dev, best_test, last_test = _best(log.read())
    member_summaries.append({
        **b.members[k], "workdir": member_dirs[k],
        **{key: best_test[key] for key in _KEYS},
        "selected_epoch": best_dev["epoch"], "dev_aspect_f1": best_dev["aspect_f1"],
        "dev_sentiment_f1": best_dev["sentiment_f1"],
        "last_epoch": {key: last_test[key] for key in _KEYS},
        "eval_repeat_max_diff": last_test.get("eval_repeat_max_diff"),
        "diagnosis": monitors.counts(monitor_list[k].findings),
        "final_terms": {t: next((e.get(f"term/{t}") for e in reversed(log.read())
                                 if e["split"] == "train"), None) for t in b.terms},
    })
  if ens_log is None:
    top = member_summaries[0]
    out = {key: top[key] for key in _KEYS}
    out.update({"selected_epoch": top["selected_epoch"],
                "dev_aspect_f1": top["dev_aspect_f1"],
                "dev_sentiment_f1": top["dev_sentiment_f1"],
                "last_epoch": top["last_epoch"], "diagnosis": top["diagnosis"],
                "final_terms": top["final_terms"], **b.members[0]})
  else:
    best_dev, best_test, last_test = _best(ens_log.read())
    out = {key: best_test[key] for key in _KEYS}
    out.update({"selected_epoch": best_dev["epoch"],
                "dev_aspect_f1": best_dev["aspect_f1"],
                "dev_sentiment_f1": best_dev["sentiment_f1"],
                "last_epoch": {key: last_test[key] for key in _KEYS},
                "diagnosis": {s: sum(m["diagnosis"][s] for m in member_summaries)
                              for s in monitors.SEVERITIES}})
  out.update({"name": config.name, "ensemble": ens_log is not None,
              "members": member_summaries,
              "anchor": {"model": "Bi-LSTM + fastText (Phan et al., KSEM 2021)",
                         "aspect_f1": 0.8448, "sentiment_f1": 0.6306}})
  return out


def _figures(config, b, workdir, logs, ens_log) -> None:
  try:
    from tools import plots
  except ImportError as e:  # matplotlib missing: the numbers still stand
    print(f"figures not written: {e}")
    return
  streams = {(f"member {k} ({b.members[k]['focal_weight']:g}/"
              f"{b.members[k]['contrastive_weight']:g})" if len(logs) > 1
              else config.name): log.read() for k, log in enumerate(logs)}
  if ens_log is not None:
    streams["ensemble"] = ens_log.read()
  plots.plot_absa_loss_relationship(
      streams, os.path.join(workdir, "loss_relationship.png"), terms=b.terms,
      contrastive_reference=b.contrastive_reference, title=config.name)
  emb_dir = os.path.join(workdir, "embeddings")
  files = sorted((f for f in os.listdir(emb_dir) if f.endswith(".npz")),
                 key=lambda f: int(f[len("epoch_"):-len(".npz")]))
  epochs = [int(f[len("epoch_"):-len(".npz")]) for f in files]
  wanted = [e for e in snapshot_epochs(config.num_epochs) if e in epochs] or epochs[-3:]
  train_events = [e for e in logs[0].read() if e["split"] == "train"]
  panels = []
  for e in wanted:
    z = np.load(os.path.join(emb_dir, f"epoch_{e}.npz"))
    event = min(train_events, key=lambda t: abs(t["epoch"] - e))
    panels.append({"epoch": e, "embedding": z["embedding"][:, 0].astype(np.float32),
                   "labels": z["labels"], "contrastive": event.get("term/contrastive")})
  general = metrics_lib.ASPECTS.index("GENERAL")
  plots.plot_embedding_evolution(
      panels, os.path.join(workdir, "embedding_space_evolution.png"),
      colour_aspect=general, class_names=metrics_lib.POLARITIES,
      method=config.embedding_projection,
      title=f"{config.name}: Test embeddings" + (" (member 0)" if len(logs) > 1 else ""))


def _print_summary(config, summary, workdir) -> None:
  print(f"{config.name}: Test aspect F1 {100 * summary['aspect_f1']:.2f}  sentiment F1 "
        f"{100 * summary['sentiment_f1']:.2f}  (anchor Bi-LSTM+fastText 84.48 / 63.06; "
        f"Dev-selected epoch {summary['selected_epoch']:g})  compilations "
        f"{summary['train_step_compilations']}  wall {summary['wall_s']:.1f}s -> {workdir}")
  for k, m in enumerate(summary["members"]):
    if summary["ensemble"]:
      print(f"  member {k} ({m['focal_weight']:g}/{m['contrastive_weight']:g}, seed "
            f"{m['seed']}): aspect F1 {100 * m['aspect_f1']:.2f}  sentiment F1 "
            f"{100 * m['sentiment_f1']:.2f}")
  d = summary["diagnosis"]
  print(f"diagnosis: {d['error']} error, {d['warning']} warning, {d['info']} info "
        f"(python -m tools.diagnose {summary['members'][0]['workdir']})")
