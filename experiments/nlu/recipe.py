"""The joint intent + BIO entity (+ command) NLU recipe: ``build(config, workdir)``.

The phone-assistant recipe of ``experiments/nlu/configs/joint_nlu.py`` on any dataset in the
JointBERT layout (SNIPS by default) or the JSONL layout (any number of sentence-level
label fields such as ``intent`` and ``command``): a word + character BiLSTM trained from
scratch with one head per sentence-level label and a token head for the tags; invalid
labels masked with finite values (:func:`jaxloss.losses.mask_invalid_logits`), never
``-inf``; the λ weights of the heads as curriculum schedules in the train state (by
default 1 each, plain cross-entropy on every head; the ``:notes`` variant warms the
entity weight up 0.3 → 0.4 → 0.5 over epochs 0, 1, 2+ and uses a focal entity loss with
class weights, O = 0.1 and entity tags up to 5). A label field the config gives no λ for
(e.g. ``scenario`` in a JSONL set) gets a head with ``config.default_lambda``. Labels
and tags outside the training vocabularies map to ``UNK`` (as JointBERT maps them) and
are counted in ``summary["dataset"]["unknown_labels"]``.

Decoding: the tags by the BIO-constrained Viterbi of the locally normalised tagger; with
``config.joint_decoding`` (default True; it needs that tagger) the intent (or the
data's first label field) and the tags together (:func:`jaxloss.decoding.joint_decode`,
each label allowing the entity types seen with it in training), with each head's own
decoding logged beside it under ``independent/`` (``summary["independent_decoding"]``).

Model selection: Dev and Test are evaluated after every epoch; the reported Test numbers
are those of the epoch with the best Dev score (mean of intent accuracy, slot F1 and
sentence accuracy), and the last epoch's are kept beside them.

Workdir: ``config.json``, ``vocab.json`` and ``chars.json`` (the word and character ids
every restart and evaluation use), ``metrics.jsonl``, ``diagnosis.json``,
``checkpoints/``, ``summary.json``, ``curves.png`` and ``test_predictions.txt`` (the
last evaluation's Test predictions, so the summary's ``last_epoch`` numbers, not the
Dev-selected ones).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxloss import curriculum as curriculum_lib
from jaxloss import decoding
from jaxloss import finetune
from jaxloss import metrics as metrics_lib
from jaxloss import monitors
from jaxloss.data.joint_nlu import UNK as LABEL_UNK
from jaxloss.data.joint_nlu import load_joint_nlu
from jaxloss.data.sampler import epoch_permutation_sampler
from jaxloss.data.text import UNK, Vocabulary
from jaxloss.models.text import JointNluModel
from jaxloss.train_state import TrainState
from jaxloss.train_step import make_optimizer
from jaxloss.training import Recipe, Selection
from jaxloss.training.recipe import SequenceBuckets
from experiments.nlu import encoder as nlu_encoder
from experiments.nlu.objective import bio_class_weights, make_joint_nlu_loss
from experiments.nlu.settings import (lambda_for, memm_tagger, parse_lambda,  # noqa: F401
                                      train_length, validate)

SPLITS = ("train", "dev", "test")
# Published SNIPS numbers (test split of the JointBERT layout); reported only for SNIPS.
ANCHOR_DATASET = "snips"
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


def singleton_start(words: Vocabulary, tokens: list[list[str]]) -> int | None:
  """The first id of the words seen exactly once in ``tokens`` (the training
  sentences; lower-cased as the vocabulary is), or None if there are none.

  :meth:`Vocabulary.build` lists words most frequent first, so these words are the ids
  from it to the end (:class:`jaxloss.models.JointNluModel`'s ``singleton_start``).

  Raises:
    ValueError: the vocabulary is not ordered by frequency (a ``vocab.json`` not
      written by :meth:`Vocabulary.build`), so the singletons are not its tail.
  """
  counts = collections.Counter(t.lower() for s in tokens for t in s)
  ids = sorted(words.index[w] for w, c in counts.items() if c == 1 and w in words.index)
  if not ids:
    return None
  if ids != list(range(ids[0], len(words))):
    raise ValueError("the word vocabulary does not list the words seen once last; "
                     "rebuild vocab.json with Vocabulary.build")
  return ids[0]


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


@dataclasses.dataclass(frozen=True)
class NluData:
  """A run's encoded splits and label vocabularies (host), as evaluation reads them."""
  raw: dict            # split -> tokens, tags (strings), tag_ids, label_ids per field
  splits: dict         # split -> ids, chars, lengths, tags [N, T] (-1 padding), fields
  fields: tuple        # sentence-level label fields, e.g. ("intent", "command")
  tag_names: list
  label_names: dict
  decode_prefixes: tuple = ("",)


def anchors_for(manual_dir: str, layout: str) -> tuple:
  """The published anchors of this dataset (SNIPS in the JointBERT layout), else ()."""
  name = os.path.basename(os.path.normpath(manual_dir))
  return ANCHORS if name == ANCHOR_DATASET and layout == "jointbert" else ()


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
        intent_true=raw["label_ids"][main], intent_pred=pred.get(f"{prefix}{main}",
                                                                 pred[main]),
        tags_true=raw["tags"], tags_pred=tags_pred,
        label_true={f: raw["label_ids"][f] for f in others} or None,
        label_pred={f: pred[f] for f in others} or None)
    if prefix:
      rep = {f"{prefix}{k}": v for k, v in rep.items()
             if k in ("intent_accuracy", "slot_f1", "slot_precision", "slot_recall",
                      "sentence_accuracy", "pred_non_o_share")}
    report.update(rep)
  for f in b.fields:
    z = pred[f"{f}_logits"].astype(np.float64)
    z = z - z.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    report[f"loss/{f}"] = float(-np.mean(logp[np.arange(len(z)), raw["label_ids"][f]]))
  report["score"] = (report["intent_accuracy"] + report["slot_f1"]
                     + report["sentence_accuracy"]) / 3
  return report


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



def _fmt(x, spec=".4f") -> str:
  return "  nan" if x is None or not np.isfinite(x) else format(x, spec)


def unknown_label_counts(raw: dict, fields, tag_names, label_names: dict) -> dict:
  """``{split: {field or "tags": n}}``: the labels (sentences) and tags (tokens) of each
  split that are not in the vocabularies and were mapped to ``UNK``, as JointBERT maps
  them; zero counts left out. A label literally named ``UNK`` counts too (it is the
  same id)."""
  tag_unk = list(tag_names).index(LABEL_UNK)
  out = {}
  for split, s in raw.items():
    counts = {f: int(np.sum(np.asarray(s["label_ids"][f]) ==
                            list(label_names[f]).index(LABEL_UNK))) for f in fields}
    counts["tags"] = int(sum(np.sum(np.asarray(t) == tag_unk) for t in s["tag_ids"]))
    counts = {k: v for k, v in counts.items() if v}
    if counts:
      out[split] = counts
  return out


def _unknown_text(unknown: dict) -> str:
  if not unknown:
    return ""
  parts = [f"{split} " + ", ".join(f"{k} {v}" for k, v in c.items())
           for split, c in unknown.items()]
  return ("\n  not in the training vocabularies, mapped to UNK (as JointBERT does): "
          + "; ".join(parts))


def build(config: ml_collections.ConfigDict, workdir: str | None = None) -> Recipe:
  """Data, vocabularies, masks, model, loss, curriculum, evaluation and summary of a
  run as a :class:`~jaxloss.training.Recipe` (no device placement). The vocabularies
  are saved in (and on a restart read from) ``workdir``."""
  validate(config)
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
  defaulted = [f for f in fields if f not in config.lambdas]
  unknown = unknown_label_counts(raw, fields, tag_names,
                                 {f: data["label_names"][f] for f in fields})
  words, chars = load_vocabularies(config, raw["train"]["tokens"], workdir)
  max_len = config.max_len or max(len(t) for s in raw.values() for t in s["tokens"])
  splits = {name: encode_split(raw[name], fields, words, chars, max_len=max_len,
                               max_word_len=config.max_word_len, name=name)
            for name in SPLITS}
  train = splits["train"]
  num_train = len(train["ids"])

  # Masks derived from the training data: what was never seen is never predicted.
  tag_counts = np.bincount(np.concatenate(raw["train"]["tag_ids"]),
                           minlength=len(tag_names)).astype(np.int64)
  label_counts = {f: np.bincount(raw["train"]["label_ids"][f],
                                 minlength=len(data["label_names"][f])).astype(np.int64)
                  for f in fields}
  tag_valid = decoding.tag_valid_mask(tag_names, tag_counts)
  label_valid = {f: label_counts[f] > 0 for f in fields}
  allowed, start_allowed = decoding.bio_transitions(tag_names)
  # A transition the training data use is allowed, even if BIO forbids it (an I-X after
  # O in hand-labelled data): the gold sequence must stay valid, or its loss is ~1e9.
  observed = decoding.observed_transitions(raw["train"]["tag_ids"], len(tag_names))
  off_bio = int(np.sum(observed[0] & ~allowed) + np.sum(observed[1] & ~start_allowed))
  allowed, start_allowed = allowed | observed[0], start_allowed | observed[1]
  constrained = bool(config.constrained_decoding)
  crf = config.entity_loss == "crf"
  # Joint decoding of the main label field and the tags: the entity types each label
  # was seen with in training, or that its sentences are too few to rule out.
  main = "intent" if "intent" in fields else fields[0]
  joint = bool(config.get("joint_decoding"))
  min_expected = float(config.get("label_tag_min_expected") or 0.0) if joint else None
  label_tags = (decoding.label_tag_mask(
      raw["train"]["label_ids"][main], raw["train"]["tag_ids"], tag_names,
      len(data["label_names"][main]), min_expected=min_expected) if joint else None)
  tag_weights = None
  if config.entity_loss == "focal":
    tag_weights = (bio_class_weights(tag_counts, tag_names,
                                     o_weight=config.entity_o_weight,
                                     cap=config.class_weight_cap)
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
  num_epochs, eval_every_epochs = train_length(config, steps_per_epoch)
  warmup = min(float(config.warmup_epochs), float(num_epochs) / 2)
  use_encoder = config.get("encoder") is not None
  if use_encoder:  # BERT's schedule: linear warm-up, linear decay to 0
    lr = finetune.warmup_linear_decay(config.learning_rate, warmup=warmup,
                                      total=float(num_epochs))
  else:
    lr = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=config.learning_rate, warmup_steps=warmup,
        decay_steps=float(num_epochs), end_value=config.learning_rate * 0.01)
  lambdas, lambda_values = {}, {}
  for name in ("entity",) + fields:
    field_name = f"lambdas.{name}" if name in config.lambdas else "default_lambda"
    lambdas[f"lambda_{name}"], lambda_values[name] = parse_lambda(
        lambda_for(config, name), name=field_name)
  curriculum = curriculum_lib.constant(learning_rate=lr, **lambdas)
  compiled = curriculum.compile(steps_per_epoch)

  sentence_classes = tuple((f, len(data["label_names"][f])) for f in fields)
  encoder_facts, sequence_buckets = None, None
  # Stack-Propagation's decoders read the previous token's label: gold in training
  # (teacher forcing, so the gold tags and labels are model inputs), their own greedy
  # choices (under the same masks as decoding) in evaluation.
  decoder = config.get("decoder_hidden") is not None
  decoder_fields, teacher_keys = {}, ()
  if decoder:
    forcing = config.get("teacher_forcing")
    decoder_fields = dict(
        decoder_hidden=config.decoder_hidden,
        teacher_forcing=0.9 if forcing is None else float(forcing),
        tag_valid=tuple(bool(v) for v in tag_valid),
        tag_allowed=(tuple(tuple(bool(v) for v in row)
                           for row in np.vstack([allowed, start_allowed[None]]))
                     if constrained else None))
    teacher_keys = ("teacher_tags",) + tuple(f"teacher_{f}" for f in fields)
  singleton_rate = config.get("singleton_unk_rate") or 0.0
  singletons = (singleton_start(words, raw["train"]["tokens"])
                if singleton_rate and not use_encoder else None)
  if not use_encoder:
    model = JointNluModel(
        vocab_size=len(words), char_vocab_size=len(chars), num_tags=len(tag_names),
        sentence_classes=sentence_classes,
        embed_dim=config.embed_dim, char_embed_dim=config.char_embed_dim,
        char_features=config.char_features, hidden=config.hidden,
        num_layers=config.num_layers, dropout_rate=config.dropout_rate,
        word_dropout_rate=config.word_dropout_rate,
        singleton_unk_rate=singleton_rate, singleton_start=singletons, crf=crf,
        attention_heads=config.get("attention_heads", 0),
        token_level=config.get("token_level", False),
        **decoder_fields)
    tx = make_optimizer(config.optimizer, learning_rate=config.learning_rate,
                        weight_decay=config.weight_decay,
                        max_grad_norm=config.max_grad_norm)
  terms = ("entity",) + fields
  o_index = tag_names.index("O")
  monitor_spec = None
  if config.monitor.enabled:
    monitor_spec = monitors.MonitorSpec(
        terms=terms,
        heads={"entity": monitors.HeadSpec(len(tag_names), o_index=o_index),
               **{f: monitors.HeadSpec(len(data["label_names"][f])) for f in fields}})

  def init(key) -> TrainState:
    init_key, state_key = jax.random.split(key)
    variables = model.init(init_key, jnp.zeros((1, max_len), jnp.int32),
                           jnp.zeros((1, max_len, config.max_word_len), jnp.int32),
                           jnp.ones((1,), jnp.int32), train=False)
    return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                             rng=state_key, train_sums=monitors.zero_sums(monitor_spec))

  inputs = ("ids", "chars", "lengths")
  if use_encoder:
    enc = nlu_encoder.setup(config, raw, splits, max_len, len(tag_names),
                            sentence_classes, monitors.zero_sums(monitor_spec), TrainState)
    model, inputs, init, tx = enc.model, enc.inputs, enc.init, enc.tx
    sequence_buckets, encoder_facts = enc.sequence_buckets, enc.facts

  sampler = epoch_permutation_sampler(num_train, config.batch_size)
  if not use_encoder:
    # Each training batch cut to the bucket of its longest sentence (words, characters
    # and tags): the LSTMs scan 16-24 steps instead of the data's longest sentence.
    # Everything is masked by length, so only float rounding differs from full width.
    sequence_buckets = SequenceBuckets(
        keys=("ids", "chars") + teacher_keys[:1], lengths=np.asarray(train["lengths"]),
        buckets=tuple(config.sequence_buckets), label_keys=("tags",))

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
  label_tags_j = None if label_tags is None else jnp.asarray(label_tags)

  def decode(logits, lengths, out):
    if crf:
      masks = (dict(allowed=allowed_j, start_allowed=start_j) if constrained else {})
      return decoding.crf_decode(logits, lengths, transitions=out["tag_transitions"],
                                 start_transitions=out["tag_start"],
                                 end_transitions=out["tag_end"],
                                 static_valid=tag_valid_j, **masks)
    if constrained:
      return decoding.constrained_decode(logits, lengths, allowed=allowed_j,
                                         start_allowed=start_j, static_valid=tag_valid_j)
    return decoding.greedy_decode(logits, tag_valid_j)

  def predict(state, batch):
    lengths = jnp.maximum(batch["lengths"], 1)  # padding rows: one token
    out = model.apply({"params": state.params}, *[batch[k] for k in inputs[:-1]],
                      lengths, train=False)
    result = {"tag_logits": out["tags"]}
    for f in fields:
      z = jnp.where(label_valid_j[f], out[f], -jnp.inf)  # argmax only: -inf is safe
      result[f] = jnp.argmax(z, axis=-1).astype(jnp.int32)
      result[f"{f}_logits"] = out[f]
    for prefix, tau in taus.items():
      if decoder:  # the decoder's own greedy choices (no class weights: validate)
        result[f"{prefix}tags"] = out["tag_choices"]
        continue
      adjusted = out["tags"] - tau * log_w_j if tau else out["tags"]
      if joint:
        if not prefix:  # each head on its own, for comparison
          result["independent/tags"] = decode(adjusted, lengths, out).astype(jnp.int32)
          result[f"independent/{main}"] = result[main]
        result[f"{prefix}{main}"], result[f"{prefix}tags"] = decoding.joint_decode(
            out[main], adjusted, lengths, label_tags=label_tags_j, allowed=allowed_j,
            start_allowed=start_j, static_valid=tag_valid_j,
            label_valid=label_valid_j[main])
      else:
        result[f"{prefix}tags"] = decode(adjusted, lengths, out).astype(jnp.int32)
    return result

  # The loss of a model that knows nothing (all logits 0) on the first training
  # sentences: the initial_loss monitor's reference, computed with the loss itself.
  n_ref = min(num_train, 512)
  zero_out = {"tags": jnp.zeros((n_ref, max_len, len(tag_names)), jnp.float32),
              **({"tag_transitions": jnp.zeros((len(tag_names),) * 2),
                  "tag_start": jnp.zeros(len(tag_names)),
                  "tag_end": jnp.zeros(len(tag_names))} if crf else {}),
              **{f: jnp.zeros((n_ref, len(data["label_names"][f])), jnp.float32)
                 for f in fields}}
  ref_labels = {"tags": jnp.asarray(train["tags"][:n_ref]),
                **{f: jnp.asarray(train[f][:n_ref]) for f in fields}}
  knobs0 = compiled.host_values(0)
  with jax.default_device(jax.local_devices(backend="cpu")[0]):
    _, _, aux0 = loss_fn(zero_out, ref_labels, knobs0)
  initial_terms = {t: float(np.mean(np.asarray(aux0["terms"][t]))) for t in terms}
  initial_reference = float(sum(knobs0[f"lambda_{t}"] * initial_terms[t] for t in terms))
  nlu_data = NluData(raw=raw, splits=splits, fields=fields, tag_names=tag_names,
                     label_names=data["label_names"],
                     decode_prefixes=tuple(taus) + (("independent/",) if joint else ()))
  anchors = anchors_for(data["manual_dir"], data["layout"])

  def meta(k) -> dict:
    del k
    meta_terms = [{"name": t, "weight": lambda_values[t][-1],
                   "weight_field": (f"config.lambdas.{t}" if t in config.lambdas
                                    else "config.default_lambda"),
                   "initial_reference": initial_terms[t],
                   "initial_reference_text": "the loss at all-zero logits"}
                  for t in terms]
    heads = {"entity": {"num_classes": len(tag_names), "o_index": o_index,
                        "label_shares": (tag_counts / max(tag_counts.sum(), 1)).tolist()}}
    class_names = {"entity": list(tag_names)}
    for f in fields:
      heads[f] = {"num_classes": len(data["label_names"][f]), "o_index": None,
                  "label_shares": (label_counts[f]
                                   / max(label_counts[f].sum(), 1)).tolist()}
      class_names[f] = list(data["label_names"][f])
    return {
        "num_classes": len(tag_names), "class_counts": tag_counts.tolist(),
        "learning_rate": float(config.learning_rate),
        "max_grad_norm": config.max_grad_norm, "terms": meta_terms,
        "initial_reference": initial_reference,
        "initial_reference_text": "the λ-weighted loss at all-zero logits",
        "heads": heads, "class_names": class_names,
        "stages": [{"name": "constant", "start_step": 0, "expect": {}, "knobs": {}}],
        "config_fields": {"learning_rate": "config.learning_rate"},
        "lambdas": lambda_values, "mask_fill": config.mask_fill,
    }

  def on_evaluation(workdir, step, epoch, split, outputs, last) -> None:
    if last and split == "test":
      _write_predictions(os.path.join(workdir, "test_predictions.txt"), nlu_data,
                         outputs[0])

  def summarize(record) -> dict:
    events = record.streams[0]
    best, last = record.select(events)
    best_test, last_test = best["test"], last["test"]
    init_event = next((e for e in events if e["split"] == "init"), {})
    train_events = [e for e in events if e["split"] == "train"]
    summary = {key: best_test[key] for key in _KEYS}
    summary.update({
        "name": config.name, "selected_epoch": best_test["epoch"],
        "dev": {key: best["dev"][key] for key in _KEYS},
        "last_epoch": {key: last_test[key] for key in _KEYS},
        "weight_corrected_decoding": ({k[len("tau1/"):]: v for k, v in best_test.items()
                                       if k.startswith("tau1/")} or None),
        "joint_decoding": joint,
        "label_tag_min_expected": min_expected,
        "independent_decoding": ({k[len("independent/"):]: v
                                  for k, v in best_test.items()
                                  if k.startswith("independent/")} or None),
        "true_non_o_share": best_test.get("true_non_o_share"),
        "top_intent": best_test.get("top_intent"),
        "accuracy": {k: v for k, v in best_test.items() if k.startswith("accuracy/")},
        "initial_loss": init_event.get("loss"), "initial_reference": initial_reference,
        "lambdas": lambda_values, "default_lambda_fields": defaulted,
        "mask_fill": config.mask_fill, "entity_loss": config.entity_loss,
        "constrained_decoding": constrained,
        "final_terms": {t: (train_events[-1].get(f"term/{t}") if train_events else None)
                        for t in terms},
        "eval_repeat_max_diff": last_test.get("eval_repeat_max_diff"),
        "vocab_size": len(words), "char_vocab_size": len(chars),
        "encoder": encoder_facts,
        "dataset": {"manual_dir": data["manual_dir"], "layout": data["layout"],
                    "label_fields": list(fields), "num_tags": len(tag_names),
                    "unknown_labels": unknown, "off_bio_transitions": off_bio},
    })
    return summary

  def progress(train_event, reports) -> str:
    dev = reports.get("dev")
    text = ""
    if train_event:
      term_text = " ".join(f"{t} {_fmt(train_event.get(f'term/{t}'))}" for t in terms)
      text = (f"λ_entity {train_event['lambda_entity']:.2f} | loss "
              f"{_fmt(train_event['loss'])} ({term_text})")
    if dev is not None:
      text += (f" | dev intent {100 * dev['intent_accuracy']:5.2f} slot F1 "
               f"{100 * dev['slot_f1']:5.2f} sentence {100 * dev['sentence_accuracy']:5.2f}"
               f" | pred non-O {100 * dev['pred_non_o_share']:4.1f}%")
    return text

  def figures(workdir, record) -> None:
    from jaxloss import plots  # pylint: disable=g-import-not-at-top
    plots.plot_nlu_curves(record.streams[0], os.path.join(workdir, "curves.png"),
                          terms=terms, title=config.name)

  def report(summary) -> list:
    lines = [f"{config.name}: Test intent acc {100 * summary['intent_accuracy']:.2f}  "
             f"slot F1 {100 * summary['slot_f1']:.2f}  sentence acc "
             f"{100 * summary['sentence_accuracy']:.2f}  (Dev-selected epoch "
             f"{summary['selected_epoch']:g})  pred non-O "
             f"{100 * summary['pred_non_o_share']:.1f}% (gold "
             f"{100 * (summary['true_non_o_share'] or 0):.1f}%)  top intent share "
             f"{100 * summary['top_intent_share']:.1f}%"]
    for a in anchors:
      lines.append(f"  {a['model']}: {100 * a['intent_accuracy']:.1f} / "
                   f"{100 * a['slot_f1']:.1f} / {100 * a['sentence_accuracy']:.1f}")
    # The other decodings of the same predictions, when the run logged them.
    for key, text, shown in (
        ("independent_decoding", "intent and tags decoded each on its own",
         (("intent acc", "intent_accuracy", ".2f", ""), ("slot F1", "slot_f1", ".2f", ""),
          ("sentence acc", "sentence_accuracy", ".2f", ""))),
        ("weight_corrected_decoding", "decoded with z - log(class weight)",
         (("slot F1", "slot_f1", ".2f", ""),
          ("sentence acc", "sentence_accuracy", ".2f", ""),
          ("pred non-O", "pred_non_o_share", ".1f", "%")))):
      other = summary.get(key)
      if other:
        lines.append(f"  {text}: " + "  ".join(
            f"{name} {100 * other[k]:{spec}}{unit}" for name, k, spec, unit in shown))
    return lines

  model_text = (f"vocabulary {len(words)} words / {len(chars)} characters"
                + (f" ({len(words) - singletons} seen once in training, replaced by UNK "
                   f"at rate {singleton_rate:g} in training)"
                   if singletons is not None else
                   " (no word is seen once in training: config.singleton_unk_rate has no "
                   "effect)" if singleton_rate else "")
                if not use_encoder else
                f"encoder {encoder_facts['path']} ({encoder_facts['num_layers']} layers"
                f"{', frozen' if config.freeze_encoder else ''}"
                f"{', features cached' if encoder_facts['cached_features'] else ''}), "
                f"sentences padded to "
                f"{encoder_facts['subword_length']} sub-words, truncated "
                f"{sum(encoder_facts['truncated'].values())}, words lost "
                f"{sum(encoder_facts['words_lost'].values())}")
  describe = (f"{len(splits['train']['ids'])} train / {len(splits['dev']['ids'])} dev / "
              f"{len(splits['test']['ids'])} test sentences from {data['manual_dir']} "
              f"({data['layout']}), heads {list(fields)} + {len(tag_names)} tags, "
              f"{model_text}\n  λ per epoch: "
              + ", ".join(f"{k} {v}" for k, v in lambda_values.items())
              + (f" ({', '.join(defaulted)}: config.default_lambda)" if defaulted else "")
              + f"; masks: {config.mask_fill}, constrained decoding {constrained}"
              + (f", {main} and tags decoded jointly" if joint else "")
              + (f" ({off_bio} non-BIO transition(s) of the training data allowed)"
                 if off_bio else "")
              + (", CRF tag transitions" if crf else "")
              + (f", LSTM decoders of {config.decoder_hidden} reading the previous "
                 f"label (teacher forcing {decoder_fields['teacher_forcing']:g}; tags "
                 f"decoded greedily in the model)" if decoder else "")
              + (f"\n  {num_epochs} epochs of {steps_per_epoch} steps: config.num_epochs "
                 f"{config.num_epochs} raised to reach config.min_train_steps "
                 f"{config.min_train_steps}; Dev and Test evaluated every "
                 f"{eval_every_epochs} epochs" if num_epochs != config.num_epochs else "")
              + _unknown_text(unknown))
  return Recipe(
      name=config.name,
      train={**{k: train[k] for k in inputs},
             **({"teacher_tags": train["tags"],
                 **{f"teacher_{f}": train[f] for f in fields}} if decoder else {}),
             "label": {"tags": train["tags"], **{f: train[f] for f in fields}}},
      eval_splits={"dev": splits["dev"], "test": splits["test"]},
      input_keys=inputs + teacher_keys, eval_input_keys=inputs, init=init,
      objective=loss_fn,
      curriculum=curriculum, compiled=compiled, batch_size=config.batch_size,
      num_epochs=num_epochs, eval_every_epochs=eval_every_epochs, predict=predict,
      evaluate=lambda split, out: nlu_eval_report(nlu_data, split, out), meta=meta,
      summarize=summarize, seed=config.seed, sampler=sampler,
      max_grad_norm=config.max_grad_norm, monitor=monitor_spec,
      selection=Selection("dev", "score"), checkpoint_every_epoch=True,
      progress=progress, on_evaluation=on_evaluation, figures=figures, report=report,
      anchors=anchors, describe=describe, sequence_buckets=sequence_buckets)
