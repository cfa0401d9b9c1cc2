"""``train_and_evaluate(config, workdir)`` for joint intent + BIO entity (+ command) NLU.

The phone-assistant recipe of ``experiments/configs/joint_nlu.py`` on any dataset in the
JointBERT layout (SNIPS by default) or the JSONL layout (any number of sentence-level
label fields such as ``intent`` and ``command``): a word + character BiLSTM trained from
scratch with one head per sentence-level label and a token head for the tags; invalid
labels masked with finite values (:func:`jaxloss.losses.mask_invalid_logits`), never
``-inf``; the λ weights of the heads as curriculum schedules in the train state (the
entity weight warmed up 0.3 → 0.4 → 0.5 over epochs 0, 1, 2+); a focal entity loss with
class weights (O = 0.1, entity tags up to 5). Laid out like ``experiments/absa.py``:
data, model and state, restore-or-init, compiled steps, the loop (log, evaluate,
monitor, checkpoint), the summary.

Model selection: Dev and Test are evaluated after every epoch; the reported Test numbers
are those of the epoch with the best Dev score (mean of intent accuracy, slot F1 and
sentence accuracy), and the last epoch's are kept beside them.

Workdir: ``config.json``, ``vocab.json`` and ``chars.json`` (the word and character ids
every restart and evaluation use), ``metrics.jsonl``, ``diagnosis.json``,
``checkpoints/``, ``summary.json``, ``curves.png`` and ``test_predictions.txt``.
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
from jaxloss import decoding
from jaxloss import metrics as metrics_lib
from jaxloss import monitors
from jaxloss.checkpoint import Checkpointer
from jaxloss.data.joint_nlu import load_joint_nlu
from jaxloss.data.sampler import epoch_permutation_indices
from jaxloss.data.text import UNK, Vocabulary
from jaxloss.models.text import JointNluModel
from jaxloss.parallel import DataParallel, TraceCounter, pad_to_multiple
from jaxloss.train_state import TrainState
from jaxloss.train_step import (bio_class_weights, make_joint_nlu_loss, make_optimizer,
                                make_train_step)
from experiments.train import MetricsLog

SPLITS = ("train", "dev", "test")
ANCHORS = (
    {"model": "Slot-gated joint model (Goo et al., NAACL 2018)",
     "intent_accuracy": 0.970, "slot_f1": 0.888, "sentence_accuracy": 0.755},
    {"model": "Stack-Propagation (Qin et al., EMNLP 2019)",
     "intent_accuracy": 0.980, "slot_f1": 0.942, "sentence_accuracy": 0.869},
    {"model": "JointBERT, BERT-base (Chen et al., 2019)",
     "intent_accuracy": 0.986, "slot_f1": 0.970, "sentence_accuracy": 0.928},
)
_KEYS = ("intent_accuracy", "slot_f1", "sentence_accuracy", "pred_non_o_share",
         "top_intent_share")


# --- Configuration ---------------------------------------------------------------------

def parse_lambda(value, *, name: str):
  """A λ from the config: a number (constant) or per-epoch values ``"0.3,0.4,0.5"``
  (value k during epoch k, the last one from then on).

  Returns:
    ``(schedule, values)``: a float, or an optax schedule of the epoch (for the
    curriculum, whose callables take the time in epochs), and the list of values.

  Raises:
    ValueError: not a number or a comma-separated list of numbers, or a negative value.

  Examples:
    >>> sched, values = parse_lambda("0.3,0.4,0.5", name="lambdas.entity")
    >>> [round(float(sched(e)), 2) for e in (0, 0.5, 1, 1.99, 2, 9)]
    [0.3, 0.3, 0.4, 0.4, 0.5, 0.5]
  """
  if isinstance(value, str):
    parts = [p.strip() for p in value.split(",") if p.strip()]
  else:
    parts = [value]
  try:
    values = [float(p) for p in parts]
  except (TypeError, ValueError):
    raise ValueError(f"config.{name} must be a number or per-epoch values like "
                     f"'0.3,0.4,0.5', got {value!r}") from None
  if not values or any(not (v >= 0 and math.isfinite(v)) for v in values):
    raise ValueError(f"config.{name} must hold finite numbers >= 0, got {value!r}")
  if len(values) == 1:
    return values[0], values
  schedule = optax.join_schedules([optax.constant_schedule(v) for v in values],
                                  boundaries=list(range(1, len(values))))
  return schedule, values


def _validate(config) -> None:
  for field in ("num_epochs", "batch_size", "eval_batch_size", "keep_checkpoints",
                "vocab_min_count", "max_word_len"):
    if not config[field] >= 1:
      raise ValueError(f"config.{field} must be >= 1, got {config[field]}")
  if config.max_len is not None and not config.max_len >= 1:
    raise ValueError(f"config.max_len must be >= 1 or None, got {config.max_len}")
  for field in ("dropout_rate", "word_dropout_rate"):
    if not 0 <= config[field] < 1:
      raise ValueError(f"config.{field} must be in [0, 1), got {config[field]}")
  if config.entity_loss not in ("focal", "ce"):
    raise ValueError(f"config.entity_loss must be 'focal' or 'ce', got "
                     f"{config.entity_loss!r}")
  if config.mask_fill not in ("finite", "neg_inf"):
    raise ValueError(f"config.mask_fill must be 'finite' or 'neg_inf', got "
                     f"{config.mask_fill!r}")
  for name, value in config.lambdas.items():
    parse_lambda(value, name=f"lambdas.{name}")
  if "entity" not in config.lambdas:
    raise ValueError("config.lambdas must have an 'entity' weight")
  monitors.resolve_thresholds(config.monitor)
  monitors.validate_halt_on(config.monitor.halt_on)


# --- Data --------------------------------------------------------------------------------

def load_vocabularies(config, tokens: list[list[str]], workdir: str | None
                      ) -> tuple[Vocabulary, Vocabulary]:
  """Word and character vocabularies: ``workdir/vocab.json`` / ``chars.json`` if they
  exist (a restart), else built from the training tokens (lower-cased) and saved."""
  paths = ({k: os.path.join(workdir, f"{k}.json") for k in ("vocab", "chars")}
           if workdir else {})
  if paths and all(os.path.exists(p) for p in paths.values()):
    return Vocabulary.load(paths["vocab"]), Vocabulary.load(paths["chars"])
  words = Vocabulary.build(([t.lower() for t in s] for s in tokens),
                           min_count=config.vocab_min_count)
  chars = Vocabulary.build((list(t) for s in tokens for t in s), min_count=1)
  if paths:
    words.save(paths["vocab"])
    chars.save(paths["chars"])
  return words, chars


def encode_split(split: dict, fields: tuple, words: Vocabulary, chars: Vocabulary, *,
                 max_len: int, max_word_len: int, name: str) -> dict:
  """Token ids ``[N, T]``, character ids ``[N, T, W]``, lengths ``[N]``, tags ``[N, T]``
  (-1 at padding) and the sentence label ids of one split.

  Raises:
    ValueError: a sentence longer than ``max_len`` (names the split and line).
  """
  n = len(split["tokens"])
  longest = max(len(s) for s in split["tokens"])
  if longest > max_len:
    i = max(range(n), key=lambda j: len(split["tokens"][j]))
    raise ValueError(f"{name} sentence {i} has {longest} tokens, more than "
                     f"config.max_len={max_len}; raise max_len (None: the longest)")
  ids, lengths = words.encode([[t.lower() for t in s] for s in split["tokens"]],
                              max_len=max_len)
  char_ids = np.zeros((n, max_len, max_word_len), np.int32)
  unk = chars.index[UNK]
  for i, sentence in enumerate(split["tokens"]):
    for j, token in enumerate(sentence):
      row = [chars.index.get(c, unk) for c in token[:max_word_len]]
      char_ids[i, j, :len(row)] = row
  tags = np.full((n, max_len), -1, np.int32)
  for i, t in enumerate(split["tag_ids"]):
    tags[i, :len(t)] = t
  out = {"ids": ids, "chars": char_ids, "lengths": lengths, "tags": tags}
  for f in fields:
    out[f] = np.asarray(split["label_ids"][f], np.int32)
  return out


def build(config: ml_collections.ConfigDict, workdir: str | None = None):
  """Data, vocabularies, masks, model, optimizer, loss, curriculum and step bodies of a
  run (no device placement). Returns a namespace (see the end of the function)."""
  data = load_joint_nlu(manual_dir=config.data_dir, data_dir=config.tfds_data_dir,
                        layout=config.layout)
  fields = tuple(data["label_fields"])
  tag_names = list(data["tag_names"])
  if "O" not in tag_names:
    raise ValueError(f"the tag vocabulary has no 'O' tag: {tag_names[:5]}...")
  raw = {}
  for name in SPLITS:
    s = data[name]
    limit = config.max_train_examples if name == "train" else config.max_eval_examples
    n = len(s["tokens"]) if limit is None else min(limit, len(s["tokens"]))
    raw[name] = {"tokens": s["tokens"][:n], "tags": s["tags"][:n],
                 "tag_ids": s["tag_ids"][:n],
                 "label_ids": {f: np.asarray(s["label_ids"][f][:n]) for f in fields}}
  missing = [f for f in fields if f not in config.lambdas]
  if missing:
    raise ValueError(f"config.lambdas has no weight for the label field(s) {missing} of "
                     f"{data['manual_dir']}; e.g. --config.lambdas.{missing[0]}=0.2")
  words, chars = load_vocabularies(config, raw["train"]["tokens"], workdir)
  max_len = config.max_len or max(len(t) for s in raw.values() for t in s["tokens"])
  splits = {name: encode_split(raw[name], fields, words, chars, max_len=max_len,
                               max_word_len=config.max_word_len, name=name)
            for name in SPLITS}
  train = splits["train"]
  num_train = len(train["ids"])
  if config.batch_size > num_train:
    raise ValueError(f"config.batch_size ({config.batch_size}) exceeds the training "
                     f"set ({num_train} sentences)")

  # Masks derived from the training data: what was never seen is never predicted.
  tag_counts = np.bincount(np.concatenate(raw["train"]["tag_ids"]),
                           minlength=len(tag_names)).astype(np.int64)
  label_counts = {f: np.bincount(raw["train"]["label_ids"][f],
                                 minlength=len(data["label_names"][f])).astype(np.int64)
                  for f in fields}
  tag_valid = decoding.tag_valid_mask(tag_names, tag_counts)
  label_valid = {f: label_counts[f] > 0 for f in fields}
  allowed, start_allowed = decoding.bio_transitions(tag_names)
  constrained = bool(config.constrained_decoding)
  tag_weights = None
  if config.entity_loss == "focal":
    tag_weights = (bio_class_weights(tag_counts, tag_names,
                                     o_weight=config.entity_o_weight,
                                     cap=config.entity_weight_cap)
                   if config.entity_class_weights else
                   np.ones(len(tag_names), np.float32))
  loss_fn = make_joint_nlu_loss(
      tag_valid=tag_valid, label_valid=label_valid,
      allowed=allowed if constrained else None,
      start_allowed=start_allowed if constrained else None,
      entity_loss=config.entity_loss, gamma=config.entity_gamma,
      entity_alpha=config.entity_alpha, tag_class_weights=tag_weights,
      mask_fill=config.mask_fill)

  steps_per_epoch = math.ceil(num_train / config.batch_size)
  total_steps = int(config.num_epochs) * steps_per_epoch
  warmup = min(float(config.warmup_epochs), float(config.num_epochs) / 2)
  lr = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=config.learning_rate, warmup_steps=warmup,
      decay_steps=float(config.num_epochs), end_value=config.learning_rate * 0.01)
  lambdas, lambda_values = {}, {}
  for name in ("entity",) + fields:
    lambdas[f"lambda_{name}"], lambda_values[name] = parse_lambda(
        config.lambdas[name], name=f"lambdas.{name}")
  curriculum_spec = curriculum_lib.constant(learning_rate=lr, **lambdas)
  curriculum = curriculum_spec.compile(steps_per_epoch)

  model = JointNluModel(
      vocab_size=len(words), char_vocab_size=len(chars), num_tags=len(tag_names),
      sentence_classes=tuple((f, len(data["label_names"][f])) for f in fields),
      embed_dim=config.embed_dim, char_embed_dim=config.char_embed_dim,
      char_features=config.char_features, hidden=config.hidden,
      num_layers=config.num_layers, dropout_rate=config.dropout_rate,
      word_dropout_rate=config.word_dropout_rate)
  tx = make_optimizer(config.optimizer, learning_rate=config.learning_rate,
                      weight_decay=config.weight_decay, max_grad_norm=config.max_grad_norm)
  terms = ("entity",) + fields
  o_index = tag_names.index("O")
  monitor_spec = None
  if config.monitor.enabled:
    monitor_spec = monitors.MonitorSpec(
        terms=terms,
        heads={"entity": monitors.HeadSpec(len(tag_names), o_index=o_index),
               **{f: monitors.HeadSpec(len(data["label_names"][f])) for f in fields}})

  def init_state() -> TrainState:
    init_key, state_key = jax.random.split(jax.random.PRNGKey(config.seed))
    variables = model.init(init_key, jnp.zeros((1, max_len), jnp.int32),
                           jnp.zeros((1, max_len, config.max_word_len), jnp.int32),
                           jnp.ones((1,), jnp.int32), train=False)
    return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                             rng=state_key, train_sums=monitors.zero_sums(monitor_spec))

  def sampler(rng, step, data, knobs):
    del data, knobs
    return epoch_permutation_indices(jax.random.fold_in(rng, 1), step, num_train,
                                     config.batch_size)

  def train_step_body(num_devices: int):
    return make_train_step(curriculum=curriculum, loss_fn=loss_fn,
                           global_batch_size=config.batch_size, num_devices=num_devices,
                           class_counts=None, max_grad_norm=config.max_grad_norm,
                           monitor=monitor_spec, input_keys=("ids", "chars", "lengths"),
                           sampler=sampler)

  tag_valid_j = jnp.asarray(tag_valid)
  allowed_j, start_j = jnp.asarray(allowed), jnp.asarray(start_allowed)
  label_valid_j = {f: jnp.asarray(v) for f, v in label_valid.items()}

  # Post-hoc correction of class-weighted training (Menon et al., ICLR 2021): a loss
  # that weights tag c by w_c shifts the learned logits by about log w_c, so decoding
  # with z_c - τ log w_c undoes the bias toward the up-weighted entity tags. Evaluation
  # decodes with config.decode_weight_tau (the reported metrics) and, when the entity
  # loss is class-weighted, also with τ = 1 (keys "tau1/...") for comparison.
  log_w = np.zeros(len(tag_names), np.float32)
  if tag_weights is not None:
    w = np.asarray(tag_weights, np.float64)
    log_w = np.where(w > 0, np.log(np.where(w > 0, w, 1.0)), 0.0).astype(np.float32)
  log_w_j = jnp.asarray(log_w)
  taus = {"": float(config.decode_weight_tau)}
  if tag_weights is not None and float(config.decode_weight_tau) != 1.0:
    taus["tau1/"] = 1.0

  def decode(logits, lengths):
    if constrained:
      return decoding.constrained_decode(logits, lengths, allowed=allowed_j,
                                         start_allowed=start_j, static_valid=tag_valid_j)
    return decoding.greedy_decode(logits, tag_valid_j)

  def predict_body(state, batch):
    out = model.apply({"params": state.params}, batch["ids"], batch["chars"],
                      batch["lengths"], train=False)
    result = {"tag_logits": out["tags"]}
    for prefix, tau in taus.items():
      adjusted = out["tags"] - tau * log_w_j if tau else out["tags"]
      result[f"{prefix}tags"] = decode(adjusted, batch["lengths"]).astype(jnp.int32)
    for f in fields:
      z = jnp.where(label_valid_j[f], out[f], -jnp.inf)  # argmax only: -inf is safe
      result[f] = jnp.argmax(z, axis=-1).astype(jnp.int32)
      result[f"{f}_logits"] = out[f]
    return result

  # The loss of a model that knows nothing (all logits 0) on the first training
  # sentences: the initial_loss monitor's reference, computed with the loss itself.
  n_ref = min(num_train, 512)
  zero_out = {"tags": jnp.zeros((n_ref, max_len, len(tag_names)), jnp.float32),
              **{f: jnp.zeros((n_ref, len(data["label_names"][f])), jnp.float32)
                 for f in fields}}
  ref_labels = {"tags": jnp.asarray(train["tags"][:n_ref]),
                **{f: jnp.asarray(train[f][:n_ref]) for f in fields}}
  knobs0 = curriculum.host_values(0)
  with jax.default_device(jax.devices("cpu")[0]):
    _, _, aux0 = loss_fn(zero_out, ref_labels, knobs0)
  initial_terms = {t: float(np.mean(np.asarray(aux0["terms"][t]))) for t in terms}
  initial_reference = float(sum(knobs0[f"lambda_{t}"] * initial_terms[t] for t in terms))

  return types.SimpleNamespace(
      data=data, raw=raw, splits=splits, fields=fields, tag_names=tag_names,
      label_names=data["label_names"], words=words, chars=chars, max_len=max_len,
      tag_counts=tag_counts, label_counts=label_counts, tag_valid=tag_valid,
      label_valid=label_valid, tag_weights=tag_weights, constrained=constrained,
      decode_prefixes=tuple(taus), steps_per_epoch=steps_per_epoch, total_steps=total_steps,
      lambda_values=lambda_values, curriculum_spec=curriculum_spec,
      curriculum=curriculum, model=model, tx=tx, loss_fn=loss_fn, terms=terms,
      o_index=o_index, monitor_spec=monitor_spec, init_state=init_state,
      train_step_body=train_step_body, predict_body=predict_body,
      initial_terms=initial_terms, initial_reference=initial_reference)


# --- Evaluation ---------------------------------------------------------------------------

def nlu_eval_report(b, split: str, pred: dict) -> dict:
  """Metrics of one split's predictions (host): intent accuracy, span F1, sentence
  accuracy, the collapse signals, and the sentence-level CE of each field. With a second
  decoding (``pred["tau1/tags"]``, the weight-corrected tags) its metrics are added under
  ``tau1/``."""
  raw, enc = b.raw[split], b.splits[split]
  lengths = enc["lengths"]
  main = "intent" if "intent" in b.fields else b.fields[0]
  others = [f for f in b.fields if f != main]
  report = {}
  for prefix in getattr(b, "decode_prefixes", ("",)):
    tags_pred = [[b.tag_names[t] for t in pred[f"{prefix}tags"][i, :lengths[i]]]
                 for i in range(len(lengths))]
    rep = metrics_lib.joint_nlu_report(
        intent_true=raw["label_ids"][main], intent_pred=pred[main],
        tags_true=raw["tags"], tags_pred=tags_pred,
        label_true={f: raw["label_ids"][f] for f in others} or None,
        label_pred={f: pred[f] for f in others} or None)
    if prefix:
      rep = {f"{prefix}{k}": v for k, v in rep.items()
             if k in ("slot_f1", "slot_precision", "slot_recall", "sentence_accuracy",
                      "pred_non_o_share")}
    report.update(rep)
  for f in b.fields:
    z = pred[f"{f}_logits"].astype(np.float64)
    z = z - z.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    report[f"loss/{f}"] = float(-np.mean(logp[np.arange(len(z)), raw["label_ids"][f]]))
  report["score"] = (report["intent_accuracy"] + report["slot_f1"]
                     + report["sentence_accuracy"]) / 3
  return report


def _meta(config, b) -> dict:
  terms = []
  for t in b.terms:
    terms.append({"name": t, "weight": b.lambda_values[t][-1],
                  "weight_field": f"config.lambdas.{t}",
                  "initial_reference": b.initial_terms[t],
                  "initial_reference_text": "the loss at all-zero logits"})
  heads = {"entity": {"num_classes": len(b.tag_names), "o_index": b.o_index}}
  class_names = {"entity": list(b.tag_names)}
  for f in b.fields:
    heads[f] = {"num_classes": len(b.label_names[f]), "o_index": None}
    class_names[f] = list(b.label_names[f])
  return {
      "step": 0, "split": "meta", "name": config.name, "total_steps": b.total_steps,
      "steps_per_epoch": b.steps_per_epoch, "num_classes": len(b.tag_names),
      "class_counts": b.tag_counts.tolist(),
      "learning_rate": float(config.learning_rate), "max_grad_norm": config.max_grad_norm,
      "terms": terms, "initial_reference": b.initial_reference,
      "initial_reference_text": "the λ-weighted loss at all-zero logits",
      "heads": heads, "class_names": class_names,
      "stages": [{"name": "constant", "start_step": 0, "expect": {}, "knobs": {}}],
      "thresholds": monitors.resolve_thresholds(config.monitor),
      "config_fields": {"learning_rate": "config.learning_rate"},
      "lambdas": b.lambda_values, "mask_fill": config.mask_fill,
  }


def _fmt(x, spec=".4f") -> str:
  return "  nan" if x is None or not np.isfinite(x) else format(x, spec)


# --- The run --------------------------------------------------------------------------------

def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict | None:
  """Trains and evaluates one run; returns the summary (also in ``summary.json``), or
  None if stopped at ``config.interrupt_at_step``. Resumes from ``workdir/checkpoints``.
  """
  _validate(config)
  t_start = time.time()
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  b = build(config, workdir)
  splits, steps_per_epoch, total_steps = b.splits, b.steps_per_epoch, b.total_steps
  dp = DataParallel(config.parallel, config.num_devices)
  print(f"{config.name}: {len(splits['train']['ids'])} train / "
        f"{len(splits['dev']['ids'])} dev / {len(splits['test']['ids'])} test sentences "
        f"from {b.data['manual_dir']} ({b.data['layout']}), heads {list(b.fields)} + "
        f"{len(b.tag_names)} tags, vocabulary {len(b.words)} words / {len(b.chars)} "
        f"characters, {steps_per_epoch} steps/epoch on {dp.num_devices} device(s)")
  print("λ per epoch: " + ", ".join(f"{k} {v}" for k, v in b.lambda_values.items())
        + f"; masks: {config.mask_fill}, constrained decoding {b.constrained}; loss at "
        f"zero logits {b.initial_reference:.4f}")

  # --- Restore or initialise -----------------------------------------------------------
  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"),
                              max_to_keep=config.keep_checkpoints)
  state, restored = checkpointer.restore_or_init(b.init_state, dp.restore_sharding)
  if restored:
    print(f"Resumed from {checkpointer.directory} at step {int(state.step)}")
  step = int(state.step)
  log = MetricsLog(os.path.join(workdir, "metrics.jsonl"), resume_step=step)
  if not any(e["split"] == "meta" for e in log.read()):
    log.write(_meta(config, b))
  monitor = monitors.Monitor(config.monitor, halt_on=config.monitor.halt_on)
  monitor.update(log.read())
  state = dp.replicate(state)

  counter = TraceCounter()
  train_step = dp.launch_train_step(b.train_step_body(dp.num_devices), counter)
  predict_step = dp.launch_predict_step(b.predict_body)
  train = splits["train"]
  train_data = dp.replicate({
      "ids": train["ids"], "chars": train["chars"], "lengths": train["lengths"],
      "label": {"tags": train["tags"], **{f: train[f] for f in b.fields}}})
  eval_batch = -(-config.eval_batch_size // dp.num_devices) * dp.num_devices
  inputs = ("ids", "chars", "lengths")

  def predict(state, split: str) -> dict:
    s = splits[split]
    n = len(s["ids"])
    padded = pad_to_multiple({k: s[k] for k in inputs}, eval_batch)
    padded["lengths"] = np.maximum(padded["lengths"], 1)
    outs = []
    for i in range(0, len(padded["mask"]), eval_batch):
      batch = dp.shard_batch({k: padded[k][i:i + eval_batch] for k in inputs})
      outs.append(jax.device_get(predict_step(state, batch)))
    out = {k: np.concatenate([o[k] for o in outs])[:n] for k in outs[0]}
    if len(out["tags"]) != n:
      raise RuntimeError(f"evaluation of {split} returned {len(out['tags'])} sentences, "
                         f"expected {n}")
    return out

  def evaluate(state, split: str, repeat: bool = False) -> tuple[dict, dict]:
    pred = predict(state, split)
    report = nlu_eval_report(b, split, pred)
    if repeat:
      again = predict(state, split)
      report["eval_repeat_max_diff"] = float(max(
          np.max(np.abs(again[k].astype(np.float64) - pred[k].astype(np.float64)))
          for k in pred))
    return report, pred

  # --- Train -----------------------------------------------------------------------------
  bar = tqdm(total=total_steps, initial=step, desc=config.name, unit="step",
             disable=not config.progress, dynamic_ncols=True, leave=False)
  halted = None
  zero_sums = monitors.zero_sums(b.monitor_spec)
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
      log.write({"step": 1, "split": "init", "stage": "constant",
                 **{k: float(v) for k, v in first.items()
                    if k == "loss" or k.startswith("term/")}})
      if config.progress:
        bar.write(f"first step: loss {_fmt(float(first['loss']))} (at zero logits "
                  f"{b.initial_reference:.4f})")
    if step % steps_per_epoch and step != total_steps:
      continue
    epoch = step / steps_per_epoch
    knobs = b.curriculum.host_values(step - 1)
    raw_sums = jax.device_get(dp.unreplicate(state.train_sums))
    # Fresh host copies: the replicated buffers are donated to the next step.
    state = state.replace(train_sums=dp.replicate(jax.tree.map(np.array, zero_sums)))
    first_eval = not any(e["split"] == "test" for e in log.events)
    last = step == total_steps
    dev, _ = evaluate(state, "dev")
    test, test_pred = evaluate(state, "test", repeat=first_eval or last)
    train_event = {"step": step, "epoch": epoch, "stage": "constant", "split": "train",
                   **monitors.period_summary(raw_sums), **knobs}
    log.write(train_event)
    for split, rep in (("dev", dev), ("test", test)):
      log.write({"step": step, "epoch": epoch, "stage": "constant", "split": split,
                 **rep})
    terms = " ".join(f"{t} {_fmt(train_event.get(f'term/{t}'))}" for t in b.terms)
    line = (f"epoch {epoch:4.1f} | λ_entity {knobs['lambda_entity']:.2f} | loss "
            f"{_fmt(train_event['loss'])} ({terms}) | dev intent {100 * dev['intent_accuracy']:5.2f} slot F1 "
            f"{100 * dev['slot_f1']:5.2f} sentence {100 * dev['sentence_accuracy']:5.2f}"
            f" | pred non-O {100 * dev['pred_non_o_share']:4.1f}%")
    if train_event.get("skipped_steps"):
      line += (f" | {train_event['skipped_steps']}/{train_event['period_steps']} steps "
               f"skipped (non-finite loss)")
    found = monitor.update(log.read())
    if halted is None:
      halted = monitor.halting(found)
    monitors.write_diagnosis(os.path.join(workdir, "diagnosis.json"), monitor.findings,
                             thresholds=monitor.thresholds, halted=halted,
                             source=os.path.join(workdir, "metrics.jsonl"))
    if config.progress:
      bar.write(line)
      for finding in found:
        bar.write(monitors.format_live(finding))
    else:
      print(line)
    if last:
      _write_predictions(os.path.join(workdir, "test_predictions.txt"), b, test_pred)
    checkpointer.save(step, dp.unreplicate(state))
    if halted is not None:
      bar.write(f"Halted at step {step}: {halted.code} is in config.monitor.halt_on "
                f"(checkpoint saved; re-running the workdir resumes from it)")
      break
  bar.close()
  checkpointer.close()

  # --- Summary ------------------------------------------------------------------------------
  events = log.read()
  dev_events = [e for e in events if e["split"] == "dev"]
  test_events = {e["step"]: e for e in events if e["split"] == "test"}
  best = max(dev_events, key=lambda e: (e["score"], -e["step"]))
  best_test, last_test = test_events[best["step"]], test_events[max(test_events)]
  init = next((e for e in events if e["split"] == "init"), {})
  train_events = [e for e in events if e["split"] == "train"]
  summary = {key: best_test[key] for key in _KEYS}
  summary.update({
      "name": config.name, "selected_epoch": best["epoch"],
      "dev": {key: best[key] for key in _KEYS},
      "last_epoch": {key: last_test[key] for key in _KEYS},
      "weight_corrected_decoding": ({k[len("tau1/"):]: v for k, v in best_test.items()
                                     if k.startswith("tau1/")} or None),
      "true_non_o_share": best_test.get("true_non_o_share"),
      "top_intent": best_test.get("top_intent"),
      "accuracy": {k: v for k, v in best_test.items() if k.startswith("accuracy/")},
      "initial_loss": init.get("loss"), "initial_reference": b.initial_reference,
      "lambdas": b.lambda_values, "mask_fill": config.mask_fill,
      "entity_loss": config.entity_loss, "constrained_decoding": b.constrained,
      "skipped_steps": int(jax.device_get(dp.unreplicate(state.skipped_steps))),
      "steps": step, "steps_per_epoch": steps_per_epoch,
      "final_terms": {t: (train_events[-1].get(f"term/{t}") if train_events else None)
                      for t in b.terms},
      "eval_repeat_max_diff": last_test.get("eval_repeat_max_diff"),
      "diagnosis": monitors.counts(monitor.findings),
      "findings": sorted({f.code for f in monitor.findings}),
      "halted": halted.to_dict() if halted else None,
      "wall_s": round(time.time() - t_start, 2),
      "train_step_compilations": counter.count, "num_devices": dp.num_devices,
      "parallel": dp.kind, "vocab_size": len(b.words), "char_vocab_size": len(b.chars),
      "dataset": {"manual_dir": b.data["manual_dir"], "layout": b.data["layout"],
                  "label_fields": list(b.fields), "num_tags": len(b.tag_names)},
      "anchors": list(ANCHORS),
  })
  with open(os.path.join(workdir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
  _figures(config, b, workdir, events)
  _print_summary(config, summary, workdir)
  return summary


def _write_predictions(path: str, b, pred: dict) -> None:
  """``token/gold/predicted`` per sentence, gold and predicted labels first (for error
  analysis); written atomically."""
  raw, lengths = b.raw["test"], b.splits["test"]["lengths"]
  lines = []
  for i, tokens in enumerate(raw["tokens"]):
    labels = " ".join(
        f"{f}={b.label_names[f][raw['label_ids'][f][i]]}->"
        f"{b.label_names[f][pred[f][i]]}" for f in b.fields)
    cells = " ".join(f"{tok}/{gold}/{b.tag_names[p]}" for tok, gold, p in
                     zip(tokens, raw["tags"][i], pred["tags"][i, :lengths[i]]))
    lines.append(f"{labels}\t{cells}\n")
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    f.writelines(lines)
  os.replace(tmp, path)


def _figures(config, b, workdir, events) -> None:
  try:
    from tools import plots
  except ImportError as e:  # matplotlib missing: the numbers still stand
    print(f"figures not written: {e}")
    return
  plots.plot_nlu_curves(events, os.path.join(workdir, "curves.png"), terms=b.terms,
                        title=config.name)


def _print_summary(config, summary, workdir) -> None:
  a = ANCHORS[0]
  print(f"{config.name}: Test intent acc {100 * summary['intent_accuracy']:.2f}  slot F1 "
        f"{100 * summary['slot_f1']:.2f}  sentence acc "
        f"{100 * summary['sentence_accuracy']:.2f}  (slot-gated "
        f"{100 * a['intent_accuracy']:.1f} / {100 * a['slot_f1']:.1f} / "
        f"{100 * a['sentence_accuracy']:.1f}; Dev-selected epoch "
        f"{summary['selected_epoch']:g})  pred non-O {100 * summary['pred_non_o_share']:.1f}%"
        f" (gold {100 * (summary['true_non_o_share'] or 0):.1f}%)  top intent share "
        f"{100 * summary['top_intent_share']:.1f}%  skipped steps "
        f"{summary['skipped_steps']}/{summary['steps']}  wall {summary['wall_s']:.1f}s -> "
        f"{workdir}")
  wc = summary.get("weight_corrected_decoding")
  if wc:
    print(f"  decoded with z - log(class weight): slot F1 {100 * wc['slot_f1']:.2f}  "
          f"sentence acc {100 * wc['sentence_accuracy']:.2f}  pred non-O "
          f"{100 * wc['pred_non_o_share']:.1f}%")
  d = summary["diagnosis"]
  print(f"diagnosis: {d['error']} error, {d['warning']} warning, {d['info']} info "
        f"{summary['findings']} (python -m tools.diagnose {workdir})")
