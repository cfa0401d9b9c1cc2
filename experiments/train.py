"""``train_and_evaluate(config, workdir)``: the imbalance-curriculum training loop.

One loop for single-label classification on imbalanced data, picked by
``config.dataset``: digits-LT (``configs/digits_lt.py``, the main job), CIFAR-10-LT
(``configs/cifar10_lt.py``: ERM, focal, logit adjustment, LDAM-DRW and the four-stage
curriculum on a CIFAR ResNet) and UIT-VSFC (``configs/vsfc.py``: a BiLSTM on sentence
sentiment or topic). ``config.model``, ``config.augment``, ``config.loss`` and
``config.curriculum`` choose the rest.

Linear and sectioned, as the flax examples' ``train.py``: data, model and state,
restore-or-init, compiled steps, the loop (log, evaluate, checkpoint), the summary.
Everything the run needs to continue exactly lives in the TrainState and the
checkpoint; re-running with the same workdir resumes.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm import tqdm

from jaxloss import curriculum as curriculum_lib
from jaxloss import distributed
from jaxloss import metrics as metrics_lib
from jaxloss import monitors
from jaxloss.checkpoint import Checkpointer
from jaxloss.data import augment
from jaxloss.data.digits_lt import load_digits_lt
from jaxloss.models import SmallCNN
from jaxloss.models.resnet import CifarResNet
from jaxloss.models.text import TextClassifier
from jaxloss.parallel import DATA_AXIS, DataParallel, TraceCounter, pad_to_multiple
from jaxloss.train_state import TrainState
from jaxloss.train_step import (add_contrastive_term, class_mix_indices,
                                make_eval_step, make_imbalance_loss, make_optimizer,
                                make_train_step)

CURRICULA = ("four_stage", "erm", "la", "drw")
# config.train_input: "device" keeps the training set on every device and draws each
# batch inside the step; "host" draws the batch indices on the host and each process
# puts only its own rows on its devices (the multi-process path); "auto" is "host"
# with several processes and "device" with one. Both draw the same batches.
TRAIN_INPUTS = ("auto", "device", "host")
WAR_WEIGHTS = ("train", "test")
DATASETS = ("digits_lt", "cifar10_lt", "uit_vsfc")
MODELS = ("small_cnn", "resnet", "bilstm")
# config.augment -> the on-device augment_fn of make_train_step (None: no augmentation).
AUGMENTS = {"shift_and_noise": augment.augment_batch, "cifar": augment.cifar_augment_batch,
            "none": None}
# The model's positional inputs: fields of the data splits.
IMAGE_INPUTS, TEXT_INPUTS = ("image",), ("ids", "lengths")


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
  vocab = Vocabulary.build((tokenize(t) for t in raw["train"]["text"]),
                           min_count=config.vocab_min_count)

  def encode(split):
    ids, lengths = vocab.encode([tokenize(t) for t in split["text"]],
                                max_len=config.max_len)
    return {"ids": ids, "lengths": lengths, "label": split[config.task]}

  names = raw["class_names"][config.task]
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


class MetricsLog:
  """Appends one JSON object per event to ``metrics.jsonl``, and keeps the events in
  memory so that the monitors re-read the stream at every log step without file I/O.

  On resume, events after the restored step are dropped first: they were written by
  the interrupted run after its last finalized checkpoint and will be written again.
  So is a last line cut short by a kill (no newline). With ``write=False`` (every
  process but the first of a multi-process run) the file is read, never written.
  """

  def __init__(self, path: str, resume_step: int, *, write: bool = True):
    self.path = path
    self.writes = write
    self.events: list[dict] = []
    if os.path.exists(path):
      with open(path) as f:
        lines = [line for line in f if line.strip() and line.endswith("\n")]
      kept = [line for line in lines if json.loads(line)["step"] <= resume_step]
      self.events = [json.loads(line) for line in kept]
      if write:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
          f.writelines(kept)
        os.replace(tmp, path)

  def write(self, event: dict) -> None:
    line = json.dumps(event)
    if self.writes:
      with open(self.path, "a") as f:
        f.write(line + "\n")
    self.events.append(json.loads(line))  # as a reader of the file would see it

  def read(self) -> list[dict]:
    """All events of the run so far (a copy of the list)."""
    return list(self.events)


def _scaled_tau(loss_fn, scale: float):
  """``loss_fn`` with the curriculum's logit-adjustment τ multiplied by ``scale``."""
  def scaled(logits, labels, knobs):
    return loss_fn(logits, labels, {**knobs, "tau": scale * knobs["tau"]})
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


def _scaled_logits(loss_fn, scale: float):
  """``loss_fn`` on ``scale · logits`` (a cosine-classifier style logit scale)."""
  def scaled(logits, labels, knobs):
    return loss_fn(logits * scale, labels, knobs)
  return scaled


def _validate(config):
  if config.war_weights not in WAR_WEIGHTS:
    raise ValueError(f"config.war_weights must be one of {WAR_WEIGHTS}, got "
                     f"{config.war_weights!r}")
  for field in ("num_epochs", "batch_size", "eval_batch_size",
                "checkpoint_every_steps", "keep_checkpoints"):
    if not config[field] >= 1:
      raise ValueError(f"config.{field} must be >= 1, got {config[field]}")
  if config.get("augment", "shift_and_noise") not in AUGMENTS:
    raise ValueError(f"config.augment must be one of {sorted(AUGMENTS)}, got "
                     f"{config.augment!r}")
  if not config.logit_scale > 0:
    raise ValueError(f"config.logit_scale must be > 0, got {config.logit_scale}")
  if not 0 <= config.dropout_rate < 1:
    raise ValueError(f"config.dropout_rate must be in [0, 1), got {config.dropout_rate}")
  if config.get("train_input", "auto") not in TRAIN_INPUTS:
    raise ValueError(f"config.train_input must be one of {TRAIN_INPUTS}, got "
                     f"{config.train_input!r}")
  monitors.resolve_thresholds(config.monitor)
  monitors.validate_halt_on(config.monitor.halt_on)


def _write_json(path: str, obj, **kwargs) -> None:
  """Writes ``obj`` as JSON through a temporary file and a rename, so a kill never
  leaves a half-written file."""
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, **kwargs)
  os.replace(tmp, path)


def _monitor_meta(config, curriculum, compiled, *, total_steps, steps_per_epoch,
                  num_classes, terms, class_counts, class_names=None) -> dict:
  """The ``meta`` event: what the monitors need to read the stream on their own."""
  stages = []
  for stage, start in zip(curriculum.stages, compiled.boundaries):
    knobs = compiled.host_values(start)
    knobs.pop("learning_rate", None)
    stages.append({"name": stage.name, "start_step": int(start),
                   "expect": dict(stage.expect), "knobs": knobs})
  return {
      "step": 0, "split": "meta", "name": config.name, "total_steps": total_steps,
      "steps_per_epoch": steps_per_epoch, "num_classes": num_classes,
      "class_counts": [int(c) for c in class_counts],
      "learning_rate": float(config.learning_rate),
      "max_grad_norm": config.max_grad_norm, "terms": terms,
      "initial_reference": terms[0]["initial_reference"],
      "initial_reference_text": terms[0]["initial_reference_text"],
      "heads": {"class": {"num_classes": num_classes, "o_index": None}},
      "class_names": {"class": list(class_names)} if class_names is not None else {},
      "stages": stages,
      "thresholds": monitors.resolve_thresholds(config.monitor),
      "config_fields": {"learning_rate": "config.learning_rate"},
  }


def build(config: ml_collections.ConfigDict):
  """Data, curriculum, model, optimizer, loss and monitor spec of a run (no device
  placement, no workdir): what ``train_and_evaluate`` trains and ``tools.bench_step``
  times. Returns a namespace with those objects, ``init_state()`` and
  ``train_step_body(num_devices)``.
  """
  # --- Data -----------------------------------------------------------------------
  # With several processes, process 0 builds the TFDS dataset; the others then read it.
  with distributed.main_process_first("data"):
    data = load_data(config)
  train, test = data["train"], data["test"]
  if config.shuffle_train_labels:
    # A data fault for the not_learning monitor: labels no longer match the images
    # (the class counts, and so the sampler and the class weights, are unchanged).
    train = {**train, "label": np.random.default_rng(config.data_seed).permutation(
        train["label"])}
  class_counts = np.asarray(data["class_counts"])
  num_classes = int(data["num_classes"])
  num_train = len(train["label"])
  steps_per_epoch = math.ceil(num_train / config.batch_size)
  total_steps = int(config.num_epochs) * steps_per_epoch
  war_weights = class_counts if config.war_weights == "train" else None

  # --- Curriculum, model, optimizer, parallelism ------------------------------------
  curriculum_spec = build_curriculum(config)
  curriculum = curriculum_spec.compile(steps_per_epoch)
  combined = config.contrastive_weight is not None
  model = build_model(config, num_classes,
                      projection_dim=config.projection_dim if combined else None,
                      vocab_size=data.get("vocab_size"))
  input_keys = TEXT_INPUTS if config.dataset == "uit_vsfc" else IMAGE_INPUTS
  tx = make_optimizer(config.optimizer, learning_rate=config.learning_rate,
                      momentum=config.momentum, weight_decay=config.weight_decay,
                      max_grad_norm=config.max_grad_norm,
                      nesterov=config.get("nesterov", True))
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
                                          curriculum.values(0))
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

  def init_state() -> TrainState:
    key = jax.random.PRNGKey(config.seed)
    init_key, state_key = jax.random.split(key)
    # The first training example fixes the input shapes and dtypes (the parameters
    # depend on the shapes only).
    variables = model.init(init_key, *[jnp.asarray(train[k][:1]) for k in input_keys],
                           train=False)
    params = variables["params"]
    model_state = {k: v for k, v in variables.items() if k != "params"}
    return TrainState.create(apply_fn=model.apply, params=params, tx=tx,
                             rng=state_key, model_state=model_state,
                             train_sums=monitors.zero_sums(monitor_spec))


  def train_step_body(num_devices: int, data_layout: str = "dataset"):
    return make_train_step(curriculum=curriculum, loss_fn=loss_fn,
                           global_batch_size=config.batch_size, num_devices=num_devices,
                           class_counts=class_counts,
                           augment_fn=AUGMENTS[config.get("augment", "shift_and_noise")],
                           max_grad_norm=config.max_grad_norm, monitor=monitor_spec,
                           input_keys=input_keys, data_layout=data_layout)

  def host_batches(dp: DataParallel, rng):
    """``step -> batch`` for ``data_layout="batch"``: the global batch indices of the
    step (the same :func:`class_mix_indices` draw, with the knob from the same
    curriculum, as the on-device sampler), of which this process gathers only its
    rows and assembles them into the global sharded batch."""
    labels = jnp.asarray(train["label"])
    counts = jnp.asarray(class_counts, jnp.float32)

    @jax.jit
    def indices(rng, step):
      mix = curriculum.values(step)["sampler_mix"]
      return class_mix_indices(rng, step, labels, counts, mix, config.batch_size)

    rows = dp.process_rows(config.batch_size)
    rng = np.asarray(rng)
    fields = (*input_keys, "label")

    def batch(step: int):
      local = np.asarray(indices(rng, np.int32(step)))[rows]
      return dp.assemble_batch({k: train[k][local] for k in fields}, config.batch_size)
    return batch

  return types.SimpleNamespace(
      train=train, test=test, class_counts=class_counts, num_classes=num_classes,
      class_names=data.get("class_names"),
      steps_per_epoch=steps_per_epoch, total_steps=total_steps, war_weights=war_weights,
      curriculum_spec=curriculum_spec, curriculum=curriculum, combined=combined,
      model=model, tx=tx, loss_fn=loss_fn, terms=terms, monitor_spec=monitor_spec,
      init_state=init_state, train_step_body=train_step_body, input_keys=input_keys,
      host_batches=host_batches)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict | None:
  """Trains and evaluates one run; returns the summary (also in ``summary.json``).

  Resumes from the latest checkpoint in ``workdir/checkpoints`` if there is one.
  Returns None if the run stopped at ``config.interrupt_at_step`` (a simulated
  preemption used by the resume tests).
  """
  _validate(config)
  # Before anything touches a device: join the other processes, if there are any.
  distributed.initialize(config.get("distributed"))
  main = distributed.is_main_process()
  t_start = time.time()
  os.makedirs(workdir, exist_ok=True)
  if main:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))

  b = build(config)
  train, test = b.train, b.test
  class_counts, num_classes = b.class_counts, b.num_classes
  steps_per_epoch, total_steps = b.steps_per_epoch, b.total_steps
  war_weights, curriculum_spec, curriculum = b.war_weights, b.curriculum_spec, b.curriculum
  combined, terms, monitor_spec, init_state = b.combined, b.terms, b.monitor_spec, b.init_state
  dp = DataParallel(config.parallel, config.num_devices)
  train_input = config.get("train_input", "auto")
  if train_input == "auto":
    train_input = "host" if jax.process_count() > 1 else "device"

  # --- Restore or initialise ----------------------------------------------------------
  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"),
                              max_to_keep=config.keep_checkpoints,
                              async_save=distributed.async_checkpoints_safe())
  state, restored = checkpointer.restore_or_init(init_state, dp.restore_sharding)
  if restored and main:
    print(f"Resumed from {checkpointer.directory} at step {int(state.step)}")
  step = int(state.step)
  log = MetricsLog(os.path.join(workdir, "metrics.jsonl"), resume_step=step, write=main)
  if not any(e["split"] == "meta" for e in log.read()):
    log.write(_monitor_meta(config, curriculum_spec, curriculum, total_steps=total_steps,
                            steps_per_epoch=steps_per_epoch, num_classes=num_classes,
                            terms=terms, class_counts=class_counts,
                            class_names=b.class_names))
  monitor = monitors.Monitor(config.monitor, halt_on=config.monitor.halt_on)
  monitor.update(log.read())  # findings already reported before a restart stay quiet
  diagnosis_path = os.path.join(workdir, "diagnosis.json")
  state = dp.replicate(state)

  counter = TraceCounter()
  host = train_input == "host"
  train_step = dp.launch_train_step(
      b.train_step_body(dp.num_devices, "batch" if host else "dataset"), counter,
      batch_sharded=host)
  eval_step = dp.launch_eval_step(make_eval_step(num_classes,
                                                 dropout_in_eval=config.eval_dropout,
                                                 input_keys=b.input_keys))
  fields = (*b.input_keys, "label")
  if host:
    next_batch = b.host_batches(dp, jax.device_get(dp.unreplicate(state).rng))
  else:
    train_data = dp.replicate({k: train[k] for k in fields})
  eval_batch = -(-config.eval_batch_size // dp.num_devices) * dp.num_devices
  padded = pad_to_multiple({k: test[k] for k in fields}, eval_batch)
  test_batches = [dp.shard_batch({k: v[i:i + eval_batch] for k, v in padded.items()})
                  for i in range(0, len(padded["mask"]), eval_batch)]

  eval_calls = [0]
  shots = tuple(config.get("shot_thresholds") or ())  # (many, few) training counts

  def evaluate(state) -> dict:
    sums = None
    eval_calls[0] += 1
    for batch in test_batches:
      if config.eval_dropout:
        n = len(batch["mask"])
        batch = {**batch, "eval_call": dp.shard_batch(
            {"c": np.full((n,), eval_calls[0], np.int32)})["c"]}
      out = eval_step(state, batch)
      sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
    sums = jax.device_get(sums)
    if int(sums["count"]) != len(test["label"]):
      raise RuntimeError(f"evaluation counted {int(sums['count'])} examples, expected "
                         f"{len(test['label'])}")
    report = metrics_lib.classification_report(sums["confusion"], war_weights)
    if shots:
      report.update(metrics_lib.shot_accuracy(sums["confusion"], class_counts,
                                              many=shots[0], few=shots[1]))
    report["loss"] = float(sums["loss_sum"] / sums["count"])
    predicted = np.asarray(sums["confusion"]).sum(axis=0)
    report["pred_share/class"] = (predicted / predicted.sum()).tolist()
    report["top_share/class"] = float(predicted.max() / predicted.sum())
    report["top_class/class"] = int(predicted.argmax())
    report["_confusion"] = np.asarray(sums["confusion"])
    return report

  def evaluate_twice(state) -> dict:
    """Evaluates the same state twice; records the largest difference (must be 0)."""
    a, b = evaluate(state), evaluate(state)
    diff = max(float(np.max(np.abs(a["_confusion"] - b["_confusion"]))),
               abs(a["loss"] - b["loss"]))
    a["eval_repeat_max_diff"], a["eval_repeat_uar"] = diff, b["uar"]
    return a

  # --- Train ------------------------------------------------------------------------
  boundaries = set(curriculum.boundaries[1:])
  bar = tqdm(total=total_steps, initial=step, desc=config.name, unit="step",
             disable=not (config.progress and main), dynamic_ncols=True, leave=False)
  halted, report = None, None
  while step < total_steps:
    if config.get("interrupt_at_step") is not None and step >= config.interrupt_at_step:
      # Simulated preemption (tests, tools.soak): stop with no final checkpoint.
      bar.close()
      checkpointer.close()
      distributed.finish()
      if main:
        print(f"Interrupted at step {step} (config.interrupt_at_step)")
      return None
    state, step_metrics = train_step(state, next_batch(step) if host else train_data)
    step += 1
    bar.update(1)
    if step == 1:
      # The first step's loss (computed before its update): the initial_loss monitor
      # compares it with ln C.
      first = {k: float(v) for k, v in
               jax.device_get(dp.unreplicate(step_metrics)).items()
               if k == "loss" or k.startswith("term/")}
      log.write({"step": 1, "split": "init",
                 "stage": curriculum.names[curriculum.stage_of(0)], **first})
    epoch_done = step % steps_per_epoch == 0 or step == total_steps
    if epoch_done:
      stage = curriculum.names[curriculum.stage_of(step - 1)]
      knobs = curriculum.host_values(step - 1)
      raw = jax.device_get(dp.unreplicate(state.train_sums))
      # Fresh arrays each time: the step donates the state, sums included.
      state = state.replace(train_sums=dp.replicate(monitors.zero_sums(monitor_spec)))
      if float(raw["skipped"]) < float(raw["steps"]) and not np.isfinite(raw["loss"]):
        raise FloatingPointError(f"non-finite train loss sum at step {step}")
      epoch = step / steps_per_epoch
      train_event = {"step": step, "epoch": epoch, "stage": stage, "split": "train",
                     **monitors.period_summary(raw), **knobs}
      log.write(train_event)
      first_eval = not any(e["split"] == "test" for e in log.events)
      report = (evaluate_twice(state) if first_eval or step == total_steps
                else evaluate(state))
      log.write({"step": step, "epoch": epoch, "stage": stage, "split": "test",
                 **{k: v for k, v in report.items() if not k.startswith("_")}})
      loss_text = ("nan" if train_event["loss"] is None else
                   f"{train_event['loss']:.4f}")
      line = (f"epoch {epoch:5.1f} | {stage:<10} | loss {loss_text} | "
              f"test WAR {100 * report['war']:5.1f} UAR {100 * report['uar']:5.1f} | "
              f"cap {knobs.get('class_weight_cap', 0):4.1f} tau {knobs.get('tau', 0):.1f}"
              f" mix {knobs.get('sampler_mix', 0):.1f} lr {knobs['learning_rate']:.4g}")
      new_findings = monitor.update(log.read())
      if config.progress and main:
        bar.write(line)
        for finding in new_findings:
          bar.write(monitors.format_live(finding))
      halted = monitor.halting(new_findings)
      if main:
        monitors.write_diagnosis(diagnosis_path, monitor.findings,
                                 thresholds=monitor.thresholds, halted=halted,
                                 source=os.path.join(workdir, "metrics.jsonl"))
    if (step % config.checkpoint_every_steps == 0 or step in boundaries
        or step == total_steps or halted is not None):
      checkpointer.save(step, dp.unreplicate(state))
    if halted is not None:
      msg = (f"Halted at step {step}: {halted.code} is in config.monitor.halt_on "
             f"(checkpoint saved; re-running the workdir resumes from it)")
      if main:
        bar.write(msg) if config.progress else print(msg)
      break
  bar.close()
  checkpointer.close()

  # --- Summary ------------------------------------------------------------------------
  final = report if report is not None and step == total_steps else evaluate(state)
  if halted is not None:
    final = report
  events = log.read()
  stage_end = {}
  for e in events:
    if e["split"] == "test":
      stage_end[e["stage"]] = {"epoch": e["epoch"], "war": e["war"], "uar": e["uar"],
                               **{k: e[k] for k in ("many_shot", "medium_shot",
                                                    "few_shot") if k in e}}
  summary = {
      "war": final["war"], "uar": final["uar"], "accuracy": final["accuracy"],
      "macro_f1": final["macro_f1"], "per_class_recall": final["per_class_recall"],
      "test_loss": final["loss"], "war_weights": config.war_weights,
      **{k: final[k] for k in ("many_shot", "medium_shot", "few_shot") if k in final},
      "steps": step, "steps_per_epoch": steps_per_epoch,
      "skipped_steps": int(jax.device_get(dp.unreplicate(state.skipped_steps))),
      "wall_s": round(time.time() - t_start, 2),
      "train_step_compilations": counter.count,
      "num_devices": dp.num_devices, "parallel": dp.kind,
      "num_processes": jax.process_count(), "train_input": train_input,
      "class_counts": class_counts.tolist(),
      "stages": [{"name": n, "start_step": b} for n, b in
                 zip(curriculum.names, curriculum.boundaries)],
      "stage_end": stage_end,
      "halted": halted.to_dict() if halted else None,
      "diagnosis": monitors.counts(monitor.findings),
  }
  distributed.finish()
  if not main:  # process 0 writes the run's files and prints its report
    return summary
  _write_json(os.path.join(workdir, "summary.json"), summary, indent=2)
  monitors.write_diagnosis(diagnosis_path, monitor.findings,
                           thresholds=monitor.thresholds, halted=halted,
                           source=os.path.join(workdir, "metrics.jsonl"))
  try:
    from tools import plots
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    plots.plot_curves(metrics_path, os.path.join(workdir, "curves.png"),
                      title=config.name)
    if combined:
      plots.plot_loss_relationship(metrics_path,
                                   os.path.join(workdir, "loss_relationship.png"),
                                   findings=monitor.findings, title=config.name)
    if len(curriculum.names) > 1:
      plots.plot_recall_by_stage(metrics_path,
                                 os.path.join(workdir, "recall_by_stage.png"),
                                 title=config.name)
  except ImportError as e:  # matplotlib missing: the run's numbers still stand
    print(f"figures not written: {e}")
  print(f"{config.name}: WAR {100 * summary['war']:.2f}  UAR {100 * summary['uar']:.2f}  "
        f"steps {step}  compilations {counter.count}  wall {summary['wall_s']:.1f}s  "
        f"-> {workdir}")
  d = summary["diagnosis"]
  print(f"diagnosis: {d['error']} error, {d['warning']} warning, {d['info']} info "
        f"-> {diagnosis_path} (python -m tools.diagnose {workdir})")
  return summary
