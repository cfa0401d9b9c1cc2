"""The imbalance recipe: ``build(config, workdir) -> Recipe``.

One recipe for single-label classification on imbalanced data, picked by
``config.dataset``: digits-LT (``configs/digits_lt.py``, the main job), CIFAR-10-LT
(``configs/cifar10_lt.py``: ERM, focal, logit adjustment, LDAM-DRW and the four-stage
curriculum on a CIFAR ResNet) and UIT-VSFC (``configs/vsfc.py``: a BiLSTM on sentence
sentiment or topic). ``config.model``, ``config.augment``, ``config.loss`` and
``config.curriculum`` choose the rest. Evaluated on the balanced test split after every
epoch; the reported numbers are the last evaluation's (WAR weighted by the training
distribution, UAR, many / medium / few-shot accuracy).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxloss import curriculum as curriculum_lib
from jaxloss import losses
from jaxloss import metrics as metrics_lib
from jaxloss import monitors
from jaxloss.data import augment
from jaxloss.data.digits_lt import load_digits_lt
from jaxloss.models import SmallCNN
from jaxloss.models.resnet import CifarResNet
from jaxloss.models.text import TextClassifier
from jaxloss.parallel import DATA_AXIS
from jaxloss.train_state import TrainState
from jaxloss.train_step import eval_logits, make_optimizer
from jaxloss.training import Recipe
from experiments.imbalance import encoder as imbalance_encoder
from experiments.imbalance.objective import add_contrastive_term, make_imbalance_loss

CURRICULA = ("four_stage", "erm", "la", "drw")
WAR_WEIGHTS = ("train", "test")
DATASETS = ("digits_lt", "cifar10_lt", "uit_vsfc")
MODELS = ("small_cnn", "resnet", "bilstm")
# config.augment -> the on-device augment_fn of make_train_step (None: no augmentation).
AUGMENTS = {"shift_and_noise": augment.augment_batch, "cifar": augment.cifar_augment_batch,
            "none": None}
# The model's positional inputs: fields of the data splits.
IMAGE_INPUTS, TEXT_INPUTS = ("image",), ("ids", "lengths")
SHOTS = ("many_shot", "medium_shot", "few_shot")


def build_curriculum(config: ml_collections.ConfigDict) -> curriculum_lib.Curriculum:
  """The curriculum named by ``config.curriculum``.

  * ``four_stage``: :func:`jaxloss.curriculum.four_stage` (with
    ``config.warmup_epochs`` of linear LR warm-up, if set per-stage
    ``config.aug_strengths``, and ``config.sampler_mix`` as the mix of its
    class-balanced stages: 1 = fully balanced, 0 = the data distribution).
  * ``erm``: a single stage with class-weight cap 1, data-distribution sampling and
    τ = 0 (plain cross-entropy, or focal / LDAM with ``config.loss``) and the same LR
    milestones as the cooldown of ``four_stage``, so the two differ only in what the
    recipe changes.
  * ``la``: ``erm`` with logit adjustment τ = ``config.la_tau`` throughout (Menon et
    al., ICLR 2021, the logit-adjusted loss).
  * ``drw``: :func:`jaxloss.curriculum.deferred_reweighting` from
    ``config.drw_start`` of the run (LDAM-DRW with ``config.loss="ldam"``).

  Raises:
    ValueError: unknown ``config.curriculum``.
  """
  warmup = float(config.get("warmup_epochs", 0.0))
  milestones = [m * config.num_epochs for m in config.lr_milestones]
  if config.curriculum == "four_stage":
    strengths = config.get("aug_strengths")
    return curriculum_lib.four_stage(
        num_epochs=config.num_epochs, learning_rate=config.learning_rate,
        aug_strength=config.aug_strength, lr_milestones=tuple(config.lr_milestones),
        lr_decay=config.lr_decay, warmup_epochs=warmup,
        aug_strengths=tuple(strengths) if strengths else None,
        sampler_mix=float(config.get("sampler_mix", 1.0)))
  if config.curriculum in ("erm", "la"):
    lr = curriculum_lib.warmup_milestone_lr(config.learning_rate, warmup=warmup,
                                            milestones=milestones, decay=config.lr_decay)
    tau = float(config.la_tau) if config.curriculum == "la" else 0.0
    return curriculum_lib.constant(class_weight_cap=1.0, sampler_mix=0.0, tau=tau,
                                   aug_strength=config.aug_strength, learning_rate=lr)
  if config.curriculum == "drw":
    return curriculum_lib.deferred_reweighting(
        num_epochs=config.num_epochs, learning_rate=config.learning_rate,
        drw_start=config.drw_start, warmup_epochs=warmup,
        lr_milestones=tuple(config.lr_milestones), lr_decay=config.lr_decay,
        aug_strength=config.aug_strength)
  raise ValueError(f"config.curriculum must be one of {CURRICULA}, got "
                   f"{config.curriculum!r}")


def _every_kth_per_class(split: dict, k: int) -> dict:
  """Every ``k``-th example of each class, in order (keeps the imbalance; smoke runs)."""
  keep = np.zeros(len(split["label"]), bool)
  for c in np.unique(split["label"]):
    keep[np.flatnonzero(split["label"] == c)[::k]] = True
  return {name: value[keep] for name, value in split.items()}


def load_data(config: ml_collections.ConfigDict) -> dict:
  """The train and test splits of ``config.dataset`` as NumPy arrays, with
  ``class_counts``, ``num_classes`` and ``class_names``.

  Raises:
    ValueError: an unknown ``config.dataset`` or a ``config.subsample`` below 1.
  """
  if config.dataset == "digits_lt":
    data = load_digits_lt(imbalance_ratio=config.imbalance_ratio,
                          test_per_class=config.test_per_class, seed=config.data_seed,
                          data_dir=config.data_dir)
  elif config.dataset == "cifar10_lt":
    from jaxloss.data.cifar10_lt import load_cifar10_lt  # pylint: disable=g-import-not-at-top
    data = load_cifar10_lt(imbalance_ratio=config.imbalance_ratio,
                           manual_dir=config.get("manual_dir"), data_dir=config.data_dir)
  elif config.dataset == "uit_vsfc":
    data = _load_vsfc(config)
  else:
    raise ValueError(f"config.dataset must be one of {DATASETS}, got {config.dataset!r}")
  k = int(config.get("subsample", 1))
  if k < 1:
    raise ValueError(f"config.subsample must be >= 1, got {k}")
  if k > 1:
    data = {**data, "train": _every_kth_per_class(data["train"], k),
            "test": _every_kth_per_class(data["test"], k)}
    data["class_counts"] = np.bincount(data["train"]["label"],
                                       minlength=data["num_classes"]).astype(np.int64)
  return data


def _load_vsfc(config: ml_collections.ConfigDict) -> dict:
  """UIT-VSFC for one label field (``config.task``: ``sentiment`` or ``topic``), as
  token ids: the vocabulary is built from the training sentences (deterministic: most
  frequent first, ties by token), so a restart encodes exactly the same ids."""
  from jaxloss.data.text import Vocabulary, tokenize  # pylint: disable=g-import-not-at-top
  from jaxloss.data.uit_vsfc import LABELS, load_uit_vsfc  # pylint: disable=g-import-not-at-top
  if config.task not in LABELS:
    raise ValueError(f"config.task must be one of {tuple(LABELS)}, got {config.task!r}")
  raw = load_uit_vsfc(manual_dir=config.get("manual_dir"), data_dir=config.data_dir)
  names = raw["class_names"][config.task]
  if config.get("encoder") is not None:  # raw texts; experiments.imbalance.encoder
    return {**{name: {"text": np.asarray(raw[name]["text"], dtype=object),
                      "label": raw[name][config.task]}
               for name in ("train", "test")},
            "class_counts": raw["class_counts"][config.task], "num_classes": len(names),
            "class_names": names}
  vocab = Vocabulary.build((tokenize(t) for t in raw["train"]["text"]),
                           min_count=config.vocab_min_count)

  def encode(split):
    ids, lengths = vocab.encode([tokenize(t) for t in split["text"]],
                                max_len=config.max_len)
    return {"ids": ids, "lengths": lengths, "label": split[config.task]}

  return {"train": encode(raw["train"]), "test": encode(raw["test"]),
          "class_counts": raw["class_counts"][config.task], "num_classes": len(names),
          "class_names": names, "vocab_size": len(vocab)}


def build_model(config: ml_collections.ConfigDict, num_classes: int, *,
                projection_dim=None, vocab_size=None):
  """The classifier named by ``config.model`` (``small_cnn``, ``resnet`` or ``bilstm``).

  Raises:
    ValueError: an unknown model, or a projection head asked of the ResNet.
  """
  model = config.get("model", "small_cnn")
  if model == "small_cnn":
    return SmallCNN(num_classes, widths=tuple(config.model_widths), axis_name=DATA_AXIS,
                    dropout_rate=config.dropout_rate, projection_dim=projection_dim)
  if model == "resnet":
    if projection_dim is not None:
      raise ValueError("config.contrastive_weight needs config.model='small_cnn' (the "
                       "ResNet has no projection head)")
    return CifarResNet(num_classes, depth=config.resnet_depth,
                       widths=tuple(config.resnet_widths), axis_name=DATA_AXIS,
                       classifier=config.classifier)
  if model == "bilstm":
    if projection_dim is not None:
      raise ValueError("config.contrastive_weight needs config.model='small_cnn'")
    return TextClassifier(vocab_size, num_classes, embed_dim=config.embed_dim,
                          hidden=config.hidden, dropout_rate=config.dropout_rate)
  raise ValueError(f"config.model must be one of {MODELS}, got {model!r}")


def _scaled_tau(loss_fn, scale: float):
  """``loss_fn`` with the curriculum's logit-adjustment τ multiplied by ``scale``."""
  def scaled(logits, labels, knobs):
    return loss_fn(logits, labels, {**knobs, "tau": scale * knobs["tau"]})
  return scaled


def _scaled_logits(loss_fn, scale: float):
  """``loss_fn`` on ``scale · logits`` (a cosine-classifier style logit scale)."""
  def scaled(logits, labels, knobs):
    return loss_fn(logits * scale, labels, knobs)
  return scaled


def _uniform_logit_loss(loss_fn, labels, num_classes: int, knobs) -> float:
  """The classification loss of a model that knows nothing (all logits 0) over the
  training set with the first step's knobs: ln C for cross-entropy, (1 - 1/C)^γ ln C
  for focal loss, shifted by any logit adjustment. The initial_loss_off monitor
  compares the first step's loss with it."""
  labels = jnp.asarray(labels)
  logits = jnp.zeros((labels.shape[0], num_classes), jnp.float32)
  per_example, weight, *_ = loss_fn(logits, labels, knobs)
  return float(jnp.sum(per_example * weight) / jnp.sum(weight))


def validate(config) -> None:
  """Raises ValueError naming a config field out of range."""
  if config.war_weights not in WAR_WEIGHTS:
    raise ValueError(f"config.war_weights must be one of {WAR_WEIGHTS}, got "
                     f"{config.war_weights!r}")
  for field in ("num_epochs", "batch_size"):
    if not config[field] >= 1:
      raise ValueError(f"config.{field} must be >= 1, got {config[field]}")
  if config.get("augment", "shift_and_noise") not in AUGMENTS:
    raise ValueError(f"config.augment must be one of {sorted(AUGMENTS)}, got "
                     f"{config.augment!r}")
  if not config.logit_scale > 0:
    raise ValueError(f"config.logit_scale must be > 0, got {config.logit_scale}")
  if not 0 <= config.dropout_rate < 1:
    raise ValueError(f"config.dropout_rate must be in [0, 1), got {config.dropout_rate}")
  # Names checked before any data is read (the builders raise the same errors later).
  for field, choices in (("dataset", DATASETS), ("curriculum", CURRICULA)):
    if config[field] not in choices:
      raise ValueError(f"config.{field} must be one of {choices}, got {config[field]!r}")
  if config.get("model", "small_cnn") not in MODELS:
    raise ValueError(f"config.model must be one of {MODELS}, got {config.model!r}")


def build(config: ml_collections.ConfigDict, workdir: str | None = None) -> Recipe:
  """The run's data, curriculum, model, loss, evaluation and summary as a
  :class:`~jaxloss.training.Recipe` (no device placement)."""
  del workdir  # nothing derived from the data is stored
  validate(config)
  # --- Data -----------------------------------------------------------------------
  data = load_data(config)
  train, test = data["train"], data["test"]
  if config.shuffle_train_labels:
    # A data fault for the not_learning monitor: labels no longer match the images
    # (the class counts, and so the sampler and the class weights, are unchanged).
    train = {**train, "label": np.random.default_rng(config.data_seed).permutation(
        train["label"])}
  class_counts = np.asarray(data["class_counts"])
  num_classes = int(data["num_classes"])
  class_names = data.get("class_names")
  steps_per_epoch = math.ceil(len(train["label"]) / config.batch_size)
  war_weights = class_counts if config.war_weights == "train" else None

  # --- Curriculum, model, optimizer, loss ---------------------------------------------
  curriculum = build_curriculum(config)
  compiled = curriculum.compile(steps_per_epoch)
  combined = config.contrastive_weight is not None
  use_encoder = config.get("encoder") is not None
  if use_encoder and (config.dataset != "uit_vsfc" or combined):
    raise ValueError("config.encoder needs config.dataset='uit_vsfc' and no "
                     "config.contrastive_weight")
  if not use_encoder:
    model = build_model(config, num_classes,
                        projection_dim=config.projection_dim if combined else None,
                        vocab_size=data.get("vocab_size"))
    tx = make_optimizer(config.optimizer, learning_rate=config.learning_rate,
                        momentum=config.momentum, weight_decay=config.weight_decay,
                        max_grad_norm=config.max_grad_norm,
                        nesterov=config.get("nesterov", True))
  input_keys = TEXT_INPUTS if config.dataset == "uit_vsfc" else IMAGE_INPUTS
  loss_fn = make_imbalance_loss(class_counts, loss=config.loss, gamma=config.focal_gamma,
                                weight_method=config.class_weight_method,
                                weight_normalize=config.class_weight_normalize,
                                beta=config.get("class_weight_beta", 0.999),
                                ldam_max_margin=config.get("ldam_max_margin", 0.5),
                                ldam_scale=config.get("ldam_scale", 30.0))
  if config.logit_scale != 1.0:
    loss_fn = _scaled_logits(loss_fn, config.logit_scale)
  if config.tau_scale != 1.0:
    loss_fn = _scaled_tau(loss_fn, config.tau_scale)
  initial_reference = _uniform_logit_loss(loss_fn, train["label"], num_classes,
                                          compiled.values(0))
  reference_text = (f"ln {num_classes}"
                    if abs(initial_reference - math.log(num_classes)) < 1e-4
                    else "the loss at uniform logits")
  terms = [{"name": "classification", "weight": 1.0,
            "weight_field": "config.classification_weight",
            "initial_reference": initial_reference,
            "initial_reference_text": reference_text}]
  if combined:
    loss_fn = add_contrastive_term(
        loss_fn, classification_weight=config.classification_weight,
        contrastive_weight=config.contrastive_weight,
        temperature=config.contrastive_temperature)
    terms[0]["weight"] = float(config.classification_weight)
    terms.append({"name": "contrastive", "weight": float(config.contrastive_weight),
                  "weight_field": "config.contrastive_weight"})
  monitor_spec = None
  if config.monitor.enabled:
    monitor_spec = monitors.MonitorSpec(
        terms=tuple(t["name"] for t in terms) if combined else (),
        heads={"class": monitors.HeadSpec(num_classes)})

  def init(key) -> TrainState:
    init_key, state_key = jax.random.split(key)
    # The first training example fixes the input shapes and dtypes (the parameters
    # depend on the shapes only).
    variables = model.init(init_key, *[jnp.asarray(train[k][:1]) for k in input_keys],
                           train=False)
    return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                             rng=state_key,
                             model_state={k: v for k, v in variables.items()
                                          if k != "params"},
                             train_sums=monitors.zero_sums(monitor_spec))

  sequence_buckets, encoder_facts = None, None
  if use_encoder:
    enc = imbalance_encoder.setup(config, {"train": train, "test": test}, num_classes,
                                  monitors.zero_sums(monitor_spec), TrainState)
    model, input_keys, init, tx = enc.model, enc.inputs, enc.init, enc.tx
    sequence_buckets, encoder_facts = enc.sequence_buckets, enc.facts

  # --- Evaluation ---------------------------------------------------------------------
  def predict(state, batch):
    """Predicted class and cross-entropy per example (inference mode)."""
    # config.eval_dropout: dropout left on with a fresh key per evaluation (a fault).
    logits = eval_logits(state, [batch[k] for k in input_keys],
                         eval_call=batch["eval_call"][0] if config.eval_dropout else None)
    ce = losses.softmax_cross_entropy_with_integer_labels(
        logits, jnp.where(batch["mask"], batch["label"], 0))
    return {"prediction": jnp.argmax(logits, axis=-1).astype(jnp.int32),
            "loss": ce.astype(jnp.float32)}

  shots = tuple(config.get("shot_thresholds") or ())  # (many, few) training counts

  def evaluate(split, outputs) -> dict:
    labels = test["label"]
    confusion = np.zeros((num_classes, num_classes), np.float64)
    np.add.at(confusion, (labels, outputs["prediction"]), 1.0)
    report = metrics_lib.classification_report(confusion, war_weights)
    if shots:
      report.update(metrics_lib.shot_accuracy(confusion, class_counts, many=shots[0],
                                              few=shots[1]))
    report["loss"] = float(np.mean(outputs["loss"], dtype=np.float64))
    predicted = confusion.sum(axis=0)
    report["pred_share/class"] = (predicted / predicted.sum()).tolist()
    report["label_share/class"] = (confusion.sum(axis=1) / confusion.sum()).tolist()
    report["top_share/class"] = float(predicted.max() / predicted.sum())
    report["top_class/class"] = int(predicted.argmax())
    return report

  def meta(k) -> dict:
    del k
    stages = []
    for stage, start in zip(curriculum.stages, compiled.boundaries):
      knobs = compiled.host_values(start)
      knobs.pop("learning_rate", None)
      stages.append({"name": stage.name, "start_step": int(start),
                     "expect": dict(stage.expect), "knobs": knobs})
    return {
        "num_classes": num_classes, "class_counts": [int(c) for c in class_counts],
        "learning_rate": float(config.learning_rate),
        "max_grad_norm": config.max_grad_norm, "terms": terms,
        "initial_reference": initial_reference,
        "initial_reference_text": reference_text,
        "heads": {"class": {"num_classes": num_classes, "o_index": None,
                            "label_shares": (class_counts / class_counts.sum()).tolist()}},
        "class_names": {"class": list(class_names)} if class_names is not None else {},
        "stages": stages, "config_fields": {"learning_rate": "config.learning_rate"},
    }

  def summarize(record) -> dict:
    events = record.streams[0]
    _, last = record.select(events)
    final = last["test"]
    stage_end = {}
    for e in events:
      if e["split"] == "test":
        stage_end[e["stage"]] = {"epoch": e["epoch"], "war": e["war"], "uar": e["uar"],
                                 **{k: e[k] for k in SHOTS if k in e}}
    return {
        "war": final["war"], "uar": final["uar"], "accuracy": final["accuracy"],
        "macro_f1": final["macro_f1"], "per_class_recall": final["per_class_recall"],
        "test_loss": final["loss"], "war_weights": config.war_weights,
        **{k: final[k] for k in SHOTS if k in final},
        "class_counts": class_counts.tolist(),
        "stages": [{"name": n, "start_step": s} for n, s in
                   zip(compiled.names, compiled.boundaries)],
        "stage_end": stage_end, "encoder": encoder_facts,
    }

  def progress(train_event, reports) -> str:
    text = f"loss {_fmt(train_event.get('loss'))}"
    if "test" in reports:
      r = reports["test"]
      text += f" | test WAR {100 * r['war']:5.1f} UAR {100 * r['uar']:5.1f}"
    return (text + f" | cap {train_event.get('class_weight_cap', 0):4.1f} tau "
            f"{train_event.get('tau', 0):.1f} mix {train_event.get('sampler_mix', 0):.1f}"
            f" lr {train_event.get('learning_rate', 0):.4g}")

  def figures(workdir, record) -> None:
    from jaxloss import plots  # pylint: disable=g-import-not-at-top
    metrics_path = f"{workdir}/metrics.jsonl"
    plots.plot_curves(metrics_path, f"{workdir}/curves.png", title=config.name)
    if combined:
      plots.plot_loss_relationship(metrics_path, f"{workdir}/loss_relationship.png",
                                   findings=record.findings[0], title=config.name)
    if len(compiled.names) > 1:
      plots.plot_recall_by_stage(metrics_path, f"{workdir}/recall_by_stage.png",
                                 title=config.name)

  def report(summary) -> list:
    return [f"{config.name}: WAR {100 * summary['war']:.2f}  UAR "
            f"{100 * summary['uar']:.2f}"]

  return Recipe(
      name=config.name, train={**{k: train[k] for k in input_keys},
                               "label": train["label"]},
      eval_splits={"test": {**{k: test[k] for k in input_keys}, "label": test["label"]}},
      input_keys=input_keys, eval_input_keys=(*input_keys, "label"), init=init,
      objective=loss_fn, curriculum=curriculum, compiled=compiled,
      batch_size=config.batch_size, num_epochs=config.num_epochs, predict=predict,
      evaluate=evaluate, meta=meta, summarize=summarize, seed=config.seed,
      class_counts=class_counts, augment_fn=AUGMENTS[config.get("augment",
                                                                "shift_and_noise")],
      max_grad_norm=config.max_grad_norm, monitor=monitor_spec, progress=progress,
      figures=figures, report=report, eval_call_counter=bool(config.eval_dropout),
      sequence_buckets=sequence_buckets,
      describe=(f"{len(train['label'])} train / {len(test['label'])} test examples, "
                f"{num_classes} classes"
                + ("" if encoder_facts is None else
                   f", encoder {encoder_facts['path']} ({encoder_facts['num_layers']} "
                   f"layers, {encoder_facts['pooling']}"
                   f"{', states cached' if encoder_facts['cached_features'] else ''}), "
                   f"{encoder_facts['subword_length']} sub-words, truncated "
                   f"{sum(encoder_facts['truncated'].values())}")))


def _fmt(x, spec=".4f") -> str:
  return "nan" if x is None or not np.isfinite(x) else format(x, spec)
