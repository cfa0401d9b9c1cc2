"""A recipe's training step, jaxloss vs PyTorch on the same machine, side by side.

  python -m tools.bench.vs_torch [--workloads digits_cnn resnet8 resnet32 bilstm sasrec
                                              joint_nlu]
                                 [--threads 1 2] [--steps 5] [--repeats 9]
                                 [--json PATH] [--markdown PATH] [--no-compile]
                                 [--no-forward] [--torch_device cpu|cuda]

A *workload* is one recipe config: its model, batch size and optimizer.

* ``digits_cnn``: ``imbalance/configs/digits_lt.py``, the main job: SmallCNN (32, 64) on
  8x8 digits, batch 64, SGD-Nesterov.
* ``resnet8``: ``cifar10_lt.py:four_stage,cpu``: CIFAR ResNet-8 on 32x32 uint8 images,
  batch 128, SGD momentum.
* ``resnet32``: ``cifar10_lt.py:four_stage,full``: ResNet-32, batch 128.
* ``bilstm``: ``vsfc.py:four_stage,sentiment``: the text BiLSTM (embedding 128, 64 units
  a direction, masked mean + max pooling) on the first 64 UIT-VSFC training sentences,
  AdamW.
* ``sasrec``: ``rerank/configs/rerank.py:listwise``: SASRec (2 blocks, d = 50) on the
  first 128 Games users with 49 uniform negatives, the listwise softmax loss, AdamW.
* ``joint_nlu``: ``nlu/configs/joint_nlu.py`` (the default): ``JointNluModel`` (word
  embedding 128 + character CNN 64, 2 bidirectional LSTM layers of 256, an intent head
  and a tag head) on the first 64 SNIPS training sentences, cut to the bucket of the
  longest (16 words) as the recipe cuts its batches; intent CE + the mean over real
  tokens of the tag CE (λ 1 each), AdamW. The recipe's step (host input, the same 64
  sentences cut to their bucket) adds the soft label masks, word dropout and dropout.

The text BiLSTM, SASRec and the joint NLU model run without dropout on both sides, so that both compute the
same loss (the recipe's own step keeps its dropout). Each workload is timed with these
contenders:

* ``jaxloss bare``: ``jax.jit`` of one optimizer step of the same model: the loss
  (softmax cross-entropy; SASRec's listwise loss over the valid positions) and its
  gradient (batch norm in training mode, its statistics updated), then
  ``jaxloss.train_step.make_optimizer`` with the config's settings (clipping, weight
  decay, momentum or AdamW's b2).
* ``torch eager``: a plain PyTorch port of the same model, started from the very same
  weights, with the same loss and batch. The optimizer is ``clip_grad_norm_`` then
  ``torch.optim.SGD`` or ``torch.optim.AdamW`` with the same settings.
* ``torch.compile``: the same model under ``torch.compile`` (default mode, after a few
  warm-up calls).
* ``jaxloss step`` (all but ``resnet32``): the recipe's real train step on its real
  data (``tools.bench.step``), as ``experiments.run`` compiles it. It adds, on the
  device, class-mix sampling (negative sampling for SASRec), augmentation, the
  curriculum's knobs and the monitors' statistics, and it keeps the model's dropout.
* ``jaxloss bare + dropout`` (the text BiLSTM, SASRec, the joint NLU model): the bare
  step with the recipe's dropout rates on, a PRNG key split once a step. The recipe's
  step is compared with it (``step ÷ bare + dropout``), so that the ratio is what the
  loop adds, not the model's dropout.
* ``jaxloss forward`` and ``torch eager forward`` (unless ``--no-forward``): the
  forward pass and the loss alone, in training mode (batch norm on the batch's
  statistics), no gradient (``torch.no_grad()``); the torch row's ratio is to
  ``jaxloss forward``. A second table splits each step: the forward pass on each side,
  then the rest (the backward pass and the update: the step's block less the forward
  pass's block of the same repeat) and the ratio of those, so that a ratio short of
  its target is placed in the forward or the backward pass.
* ``torch eager, padded LSTM`` (the text BiLSTM, the joint NLU model): the torch port
  with its LSTM run over every padded step, as jaxloss's ``lax.scan`` runs, instead of
  ``pack_padded_sequence``; the same work as jaxloss, not the same loss (the backward
  direction starts at the padding), so no loss difference is reported for it.

Every call blocks until its result is ready (the steps of a loop depend on each other).
The contenders take turns in blocks of ``--steps`` calls, reversing their order on every
repeat, so drift in the machine's load hits all of them alike.

Reported per workload, thread count and contender:

* ``ms/step``: the median over ``--repeats`` blocks;
* ``torch ÷ jaxloss``: the min / median / max over blocks of the ratio of the torch
  block's time to the ``jaxloss bare`` block of the same repeat (> 1: jaxloss is
  faster);
* ``first call s``: the jaxloss trace and compilation; for torch.compile, capture and
  Inductor compilation;
* ``loss diff``: the relative difference of the torch side's first loss from jaxloss's,
  on the same weights and batch. It checks that both sides compute the same thing:
  ~1e-6 in float32.

Each thread count runs in its own subprocess, because XLA's CPU thread pool is fixed
when the process starts (``tools.bench.encoder.worker_env``: one thread turns off
XLA's multi-threaded Eigen; fewer threads than CPUs pins the process). The worker
makes glibc's malloc keep freed memory, as ``experiments.run`` does
(``--host_memory system`` keeps the system's settings; both sides share the process and
so the allocator; :mod:`jaxloss.training.host_memory`). PyTorch is an
optional comparison, never a dependency. Without it the tool says so and times the
jaxloss side alone. PyTorch 2.13 CPU installs with ``pip install torch==2.13.0``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from tools.bench.torch_ports import torch_inputs, torch_loss, torch_model
from tools.bench.encoder import (HOST_MEMORY, REPO, _pin, _time_blocks, _why,
                                 prepare_contender, set_host_memory, worker_env)

BARE, STEP, EAGER, COMPILED = "jaxloss bare", "jaxloss step", "torch eager", "torch.compile"
BARE_DROPOUT = "jaxloss bare + dropout"
FORWARD, EAGER_FORWARD = "jaxloss forward", "torch eager forward"
EAGER_PADDED = "torch eager, padded LSTM"
WORKLOADS = {
    # name: (config module, variant, time the recipe's own step too)
    "digits_cnn": ("digits_lt", None, True),
    "resnet8": ("cifar10_lt", "four_stage,cpu", True),
    "resnet32": ("cifar10_lt", "four_stage,full", False),
    "bilstm": ("vsfc", "four_stage,sentiment", True),
    "sasrec": ("experiments.rerank.configs.rerank", "listwise", True),
    "joint_nlu": ("experiments.nlu.configs.joint_nlu", None, True),
}
COMPILE_WARMUP = 3


def _log(msg: str) -> None:
  print(msg, file=sys.stderr, flush=True)


def workload_config(name: str):
  """The imbalance config a workload times (``experiments/imbalance/configs``)."""
  import importlib  # pylint: disable=import-outside-toplevel
  module, variant, _ = WORKLOADS[name]
  if "." not in module:
    module = f"experiments.imbalance.configs.{module}"
  return importlib.import_module(module).get_config(variant)


def workload_kind(config) -> str:
  """``"sasrec"``, ``"joint_nlu"`` or the imbalance config's ``model`` (``"bilstm"``,
  ``"resnet"``, ``"cnn"``)."""
  kind = {"rerank": "sasrec", "nlu": "joint_nlu"}.get(config.get("trainer"))
  return kind or config.model


def has_dropout(config) -> bool:
  """Whether the workload's model has dropout: the text BiLSTM, SASRec and the joint NLU
  model (the ``jaxloss bare + dropout`` contender)."""
  return workload_kind(config) in ("bilstm", "sasrec", "joint_nlu")


def _param_shapes(recipe, state=None) -> Dict[str, tuple]:
  """``{key path: shape}`` of the recipe's parameters, without computing them (from
  ``state``, the ``jax.eval_shape`` of ``recipe.init``, when given)."""
  import jax  # pylint: disable=import-outside-toplevel
  if state is None:
    state = jax.eval_shape(recipe.init, jax.random.PRNGKey(0))
  leaves = jax.tree_util.tree_leaves_with_path(state)
  return {jax.tree_util.keystr(k): v.shape for k, v in leaves
          if jax.tree_util.keystr(k).startswith(".params")}


def _text_vocab_and_batch(config, b: int):
  """UIT-VSFC's vocabulary size and the first ``b`` training sentences, as the recipe
  reads them (``experiments.imbalance.build``): ``(vocab_size, num_classes, (ids, lengths),
  labels)``."""
  from experiments import imbalance  # pylint: disable=import-outside-toplevel
  recipe = imbalance.build(config)
  train = recipe.train
  # The embedding table's rows are the vocabulary, the head's columns the classes.
  params = _param_shapes(recipe)
  (vocab_size, _), = [v for k, v in params.items() if k.endswith("['embedding']")]
  (_, num_classes), = [v for k, v in params.items()
                       if k.endswith("['Dense_0']['kernel']")]
  return (int(vocab_size), int(num_classes),
          (np.asarray(train["ids"][:b]), np.asarray(train["lengths"][:b])),
          np.asarray(train["label"][:b]).astype(np.int32))


def _sasrec_and_batch(config, rng, seed: int, dropout: bool = False):
  """SASRec (dropout off, or the recipe's with ``dropout``) and a batch of the first ``batch_size`` Games users:
  ``x = (negatives [B, K], seq [B, L], pos [B, L])`` with uniform negatives, as the
  recipe's step draws them; ``y`` is unused (the true item is candidate 0)."""
  import jax  # pylint: disable=import-outside-toplevel
  from experiments import recipes  # pylint: disable=import-outside-toplevel
  from jaxloss.models.sequential import SASRec  # pylint: disable=import-outside-toplevel
  recipe = recipes.builder(config)(config)
  b = int(config.batch_size)
  seq, pos = (np.asarray(recipe.train[k][:b], np.int32) for k in ("seq", "pos"))
  (rows, _), = [v for k, v in _param_shapes(recipe).items()
                if "item_embedding" in k and k.endswith("['embedding']")]
  num_items = int(rows) - 1  # row 0 is padding
  negatives = rng.integers(1, num_items + 1, size=(b, config.num_candidates - 1),
                           dtype=np.int32)
  model = SASRec(num_items=num_items, max_len=int(config.max_len), hidden=int(config.hidden),
                 num_blocks=int(config.num_blocks), num_heads=int(config.num_heads),
                 dropout_rate=float(config.dropout_rate) if dropout else 0.0)
  variables = model.init(jax.random.PRNGKey(seed), negatives[:1], seq[:1], pos[:1],
                         train=False)
  return model, variables, (negatives, seq, pos), np.zeros((b,), np.int32)


def _nlu_and_batch(config, seed: int, dropout: bool = False):
  """``JointNluModel`` (dropout, word dropout and singleton replacement off, or the
  recipe's with ``dropout``) and the first ``batch_size`` SNIPS
  training sentences as the recipe reads them: ``x = (ids [B, T], chars [B, T, W],
  lengths [B])``, ``y = (intent [B], tags [B, T])``, cut to the bucket of the longest
  sentence as the recipe's training batches are (``config.sequence_buckets``)."""
  import jax  # pylint: disable=import-outside-toplevel
  from experiments import recipes  # pylint: disable=import-outside-toplevel
  from jaxloss.models.text import JointNluModel  # pylint: disable=import-outside-toplevel
  recipe = recipes.builder(config)(config)
  b, train = int(config.batch_size), recipe.train
  from jaxloss.data.subword import bucket_length  # pylint: disable=import-outside-toplevel
  lengths = np.asarray(train["lengths"][:b])
  width = min(bucket_length(int(lengths.max()), tuple(config.sequence_buckets)),
              train["ids"].shape[1])
  x = (np.asarray(train["ids"][:b, :width]), np.asarray(train["chars"][:b, :width]), lengths)
  y = (np.asarray(train["label"]["intent"][:b], np.int32),
       np.asarray(train["label"]["tags"][:b, :width], np.int32))
  state = jax.eval_shape(recipe.init, jax.random.PRNGKey(0))
  shapes = _param_shapes(recipe, state)
  size = lambda path: shapes[".params" + path][0]  # pylint: disable=unnecessary-lambda-assignment
  # The recipe's own model (a static field of its state): its singleton replacement,
  # a word dropout of the rare words, is part of the recipe's dropout.
  recipe_model = state.apply_fn.__self__
  model = JointNluModel(
      vocab_size=size("['Embed_0']['embedding']"),
      char_vocab_size=size("['CharCNN_0']['Embed_0']['embedding']"),
      num_tags=size("['tag_head']['bias']"),
      sentence_classes=(("intent", size("['intent_head']['bias']")),),
      embed_dim=int(config.embed_dim), char_embed_dim=int(config.char_embed_dim),
      char_features=size("['CharCNN_0']['Conv_0']['bias']"), hidden=int(config.hidden),
      num_layers=int(config.num_layers),
      dropout_rate=float(config.dropout_rate) if dropout else 0.0,
      word_dropout_rate=float(config.word_dropout_rate) if dropout else 0.0,
      singleton_unk_rate=recipe_model.singleton_unk_rate if dropout else 0.0,
      singleton_start=recipe_model.singleton_start)
  variables = model.init(jax.random.PRNGKey(seed), *(a[:1] for a in x), train=False)
  return model, variables, x, y


def _model_and_batch(config, seed: int = 0, dropout: bool = False):
  """The flax model, its variables and one batch (numpy) of ``config``'s shapes. The
  batch ``x`` is an array, or a tuple of arrays for a text model (``ids``, ``lengths``:
  real UIT-VSFC sentences). The text models' and SASRec's dropout is off, so that both
  sides compute the same loss; ``dropout=True`` turns on the recipe's rates (the
  ``jaxloss bare + dropout`` contender, against which the recipe's step, which keeps
  its dropout, is compared)."""
  import jax  # pylint: disable=import-outside-toplevel
  from jaxloss.models.cnn import SmallCNN  # pylint: disable=import-outside-toplevel
  from jaxloss.models.resnet import CifarResNet  # pylint: disable=import-outside-toplevel
  from jaxloss.models.text import TextClassifier  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(seed)
  b = int(config.batch_size)
  if config.get("trainer") == "rerank":
    return _sasrec_and_batch(config, rng, seed, dropout)
  if config.get("trainer") == "nlu":
    return _nlu_and_batch(config, seed, dropout)
  if config.model == "bilstm":
    vocab_size, num_classes, x, y = _text_vocab_and_batch(config, b)
    model = TextClassifier(vocab_size, num_classes, embed_dim=config.embed_dim,
                           hidden=config.hidden,
                           dropout_rate=float(config.dropout_rate) if dropout else 0.0)
    variables = model.init(jax.random.PRNGKey(seed), *(a[:1] for a in x), train=False)
    return model, variables, x, y
  if config.model == "resnet":
    model = CifarResNet(num_classes=10, depth=int(config.resnet_depth))
    x = rng.integers(0, 256, size=(b, 32, 32, 3), dtype=np.uint8)
  else:
    model = SmallCNN(num_classes=10, widths=tuple(config.model_widths))
    x = rng.uniform(0.0, 1.0, size=(b, 8, 8, 1)).astype(np.float32)
  y = rng.integers(0, 10, size=(b,)).astype(np.int32)
  variables = model.init(jax.random.PRNGKey(seed), x[:1], train=False)
  return model, variables, x, y


def optimizer_settings(config) -> dict:
  """The recipe's optimizer as ``jaxloss.train_step.make_optimizer``'s arguments (SGD
  with momentum for the image models, AdamW for the text models and SASRec)."""
  rerank = config.get("trainer") == "rerank"
  return {"name": "adamw" if rerank else config.optimizer,
          "learning_rate": float(config.learning_rate),
          "momentum": float(config.get("momentum", 0.9)),
          "weight_decay": float(config.weight_decay),
          "max_grad_norm": config.max_grad_norm,
          "nesterov": bool(config.get("nesterov", False)),
          "b2": float(config.get("adam_b2", 0.999))}


def jax_loss(outputs, y):
  """The bare step's loss: softmax CE of logits ``[B, C]`` and labels ``y [B]``; for
  SASRec's ``{"scores" [B, L, 1+K], "where"}``, the recipe's listwise softmax loss (the
  true item is candidate 0), averaged over the valid positions; for the joint NLU
  model's ``{"intent" [B, K], "tags" [B, T, C]}`` and ``y = (intent, tags)``, the intent
  CE plus the tag CE averaged over the real tokens (a tag of -1 is padding)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  if isinstance(outputs, dict) and "tags" in outputs:
    intent, tags = y
    real = tags >= 0
    token = optax.softmax_cross_entropy_with_integer_labels(outputs["tags"],
                                                            jnp.maximum(tags, 0))
    return (optax.softmax_cross_entropy_with_integer_labels(outputs["intent"], intent).mean()
            + jnp.sum(jnp.where(real, token, 0.0)) / jnp.maximum(jnp.sum(real), 1))
  if isinstance(outputs, dict):
    where = outputs["where"]
    logp = jax.nn.log_softmax(jnp.where(where, outputs["scores"], -1e9), axis=-1)[..., 0]
    valid = where[..., 0]
    return -jnp.sum(jnp.where(valid, logp, 0.0)) / jnp.maximum(jnp.sum(valid), 1)
  return optax.softmax_cross_entropy_with_integer_labels(outputs, y).mean()


def bare_program(config, model, variables, x, y, dropout: bool = False):
  """``(step, args)``: ``jax.jit`` of one optimizer step (:func:`jax_loss`, its gradient,
  the batch-norm update where the model has batch norm, then the config's optimizer,
  :func:`optimizer_settings`) and its first arguments ``(params, stats, opt_state,
  inputs, y)`` as device arrays (``inputs`` a tuple of the model's inputs, ``stats``
  empty without batch norm); ``step(*args)`` returns ``(params, stats, opt_state,
  loss)``. With ``dropout`` (a model built with its dropout on) the arguments and the
  results carry a PRNG key after ``opt_state``, split once a step for the dropout
  masks."""
  import jax  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  from jaxloss.train_step import make_optimizer  # pylint: disable=import-outside-toplevel
  tx = make_optimizer(**optimizer_settings(config))
  params, stats = variables["params"], variables.get("batch_stats", {})
  inputs = x if isinstance(x, tuple) else (x,)

  def step_body(params, stats, opt_state, inputs, y, rngs):
    def loss_fn(p):
      if not stats:  # no batch norm (the text models, SASRec)
        outputs = model.apply({"params": p}, *inputs, train=True, rngs=rngs)
        return jax_loss(outputs, y), {"batch_stats": stats}
      logits, new = model.apply({"params": p, "batch_stats": stats}, *inputs,
                                train=True, mutable=["batch_stats"])
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new
    (loss, new), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), new["batch_stats"], opt_state, loss

  args = (params, stats, tx.init(params))
  data = (jax.device_put(inputs), jax.device_put(y))
  if not dropout:
    return jax.jit(lambda *a: step_body(*a, rngs=None)), args + data

  @jax.jit
  def step(params, stats, opt_state, key, inputs, y):
    key, sub = jax.random.split(key)
    *new, loss = step_body(params, stats, opt_state, inputs, y, {"dropout": sub})
    return (*new, key, loss)

  return step, args + (jax.random.PRNGKey(0),) + data


def forward_program(config, model, variables, x, y):
  """``(loss_fn, args)``: ``jax.jit`` of the bare step's forward pass and loss alone
  (batch norm in training mode, its new statistics computed and returned, no gradient,
  no update) and its arguments ``(params, stats, inputs, y)`` as device arrays;
  ``loss_fn(*args)`` returns ``(loss, new_stats)``."""
  import jax  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  params, stats = variables["params"], variables.get("batch_stats", {})
  inputs = x if isinstance(x, tuple) else (x,)

  @jax.jit
  def loss_fn(params, stats, inputs, y):
    if not stats:
      return jax_loss(model.apply({"params": params}, *inputs, train=True), y), stats
    logits, new = model.apply({"params": params, "batch_stats": stats}, *inputs,
                              train=True, mutable=["batch_stats"])
    return (optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(),
            new["batch_stats"])

  return loss_fn, (params, stats, jax.device_put(inputs), jax.device_put(y))


def _prepare_forward(config, model, variables, x, y):
  """The forward pass + loss alone (:func:`forward_program`) and a call that runs it."""
  import jax  # pylint: disable=import-outside-toplevel
  loss_fn, args = forward_program(config, model, variables, x, y)
  t = time.perf_counter()
  loss, _ = loss_fn(*args)
  jax.block_until_ready(loss)
  first = time.perf_counter() - t

  def call():
    loss, _ = loss_fn(*args)
    jax.block_until_ready(loss)
    return loss
  return call, {"first_call_s": first, "loss": float(loss)}


def _prepare_bare(config, model, variables, x, y, dropout: bool = False):
  """The bare step (:func:`bare_program`) and a call that runs it once."""
  import jax  # pylint: disable=import-outside-toplevel
  step, (*carry, x, y) = bare_program(config, model, variables, x, y, dropout)
  t = time.perf_counter()
  *carry, loss = step(*carry, x, y)
  jax.block_until_ready(loss)
  first = time.perf_counter() - t

  def call():  # returns the loss before this step's update
    nonlocal carry
    *new, loss = step(*carry, x, y)
    jax.block_until_ready(loss)
    carry = new
    return loss
  return call, {"first_call_s": first, "loss": float(loss)}


def _prepare_recipe_step(config):
  """The recipe's own compiled step on its real data (``tools.bench.step``)."""
  import jax  # pylint: disable=import-outside-toplevel
  from tools.bench.step import _step_and_state  # pylint: disable=import-outside-toplevel
  t = time.perf_counter()
  step, state, data = _step_and_state(config, True)
  first = time.perf_counter() - t

  def call():
    nonlocal state
    state, metrics = step(state, data)
    jax.block_until_ready(metrics)
  return call, {"first_call_s": first}


# ------------------------------------------------------------------ the PyTorch side
# The ports are in tools/bench/torch_ports.py (torch_model, torch_loss, torch_inputs).


def _torch_batch(torch, x, y, device: str):
  """``(inputs, labels, sync)``: the batch as torch tensors on ``device`` (int64
  labels) and the call that waits for the device's work (a no-op on the CPU)."""
  tx = torch_inputs(torch, x, device)
  ty = (tuple(torch.from_numpy(a.astype(np.int64)).to(device) for a in y)
        if isinstance(y, tuple) else torch.from_numpy(y.astype(np.int64)).to(device))
  sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
  return tx, ty, sync


def _prepare_torch_forward(torch, config, variables, x, y, device: str = "cpu"):
  """PyTorch eager's forward pass + loss alone (training mode, so batch norm uses and
  updates the batch's statistics as on the JAX side), under ``torch.no_grad()``: no
  graph is recorded, as ``jaxloss forward`` keeps no residuals."""
  model = torch_model(torch, config, variables).train().to(device)
  tx, ty, sync = _torch_batch(torch, x, y, device)

  def call():
    with torch.no_grad():
      loss = torch_loss(torch, model(*tx), ty)
    sync()
    return loss

  t = time.perf_counter()
  first_loss = float(call())
  return call, {"first_call_s": time.perf_counter() - t, "loss": first_loss}


def _prepare_torch(torch, config, variables, x, y, compiled: bool, device: str = "cpu",
                   packed: bool = True):
  model = torch_model(torch, config, variables, packed).train().to(device)
  o = optimizer_settings(config)
  if o["name"] == "sgd":
    opt = torch.optim.SGD(model.parameters(), lr=o["learning_rate"], momentum=o["momentum"],
                          nesterov=o["nesterov"], weight_decay=o["weight_decay"])
  else:  # optax.adamw's defaults: b1 0.9, eps 1e-8, decoupled decay scaled by the LR
    opt = torch.optim.AdamW(model.parameters(), lr=o["learning_rate"],
                            betas=(0.9, o["b2"]), eps=1e-8, weight_decay=o["weight_decay"])
  fwd = torch.compile(model) if compiled else model
  tx, ty, sync = _torch_batch(torch, x, y, device)

  def step():
    opt.zero_grad(set_to_none=True)
    loss = torch_loss(torch, fwd(*tx), ty)
    loss.backward()
    if o["max_grad_norm"] is not None:
      torch.nn.utils.clip_grad_norm_(model.parameters(), o["max_grad_norm"])
    opt.step()
    sync()  # a step's time is its device work, as jax.block_until_ready on the JAX side
    return loss

  t = time.perf_counter()
  first_loss = float(step().detach())
  for _ in range(COMPILE_WARMUP if compiled else 0):
    step()
  return step, {"first_call_s": time.perf_counter() - t, "loss": first_loss}


def _import_torch():
  try:
    import torch  # pylint: disable=import-outside-toplevel
    return torch, None
  except ImportError as e:
    return None, f"torch not installed ({e}); pip install torch==2.13.0"


def measure(workload: str, *, steps: int = 5, repeats: int = 9,
            threads: Optional[int] = None, use_torch: bool = True,
            compile_torch: bool = True, torch_device: str = "cpu",
            forward: bool = True, log: Callable[[str], None] = _log) -> List[dict]:
  """Times one workload's contenders in this process (the caller sets JAX's threads).

  Returns one row per contender: ``workload``, ``threads``, ``contender``, ``status``
  (``"ok"`` or ``"failed: <reason>"``) and, when measured, ``ms`` (median ms a step),
  ``min_ms``, ``max_ms``, ``times_ms``, ``first_call_s``; ``loss`` where the contender
  computes the shared batch's loss; torch rows also ``ratio_min`` / ``ratio_median`` /
  ``ratio_max`` (torch block ms / jaxloss bare block ms, per repeat) and
  ``loss_rel_diff``. ``torch_device``: where the PyTorch contenders run (``"cpu"``, or
  ``"cuda"`` beside JAX on a GPU); JAX uses its default backend. With ``forward``, the
  forward pass + loss alone is timed on both sides too (``jaxloss forward``, ``torch
  eager forward``, whose ratio is to ``jaxloss forward``), and the ``jaxloss bare`` and
  ``torch eager`` rows get ``gradient_ms``: the median over repeats of the step's time
  less the forward pass's in the same repeat (the backward pass and the update); the
  torch row also ``gradient_ratio_min`` / ``_median`` / ``_max`` of those differences.
  """
  config = workload_config(workload)
  model, variables, x, y = _model_and_batch(config)
  kind = workload_kind(config)
  if kind == "joint_nlu":
    label = (f"JointNluModel({config.num_layers} x BiLSTM {config.hidden}, "
             f"embed {config.embed_dim} + chars)")
  elif kind == "sasrec":
    label = (f"SASRec({config.num_blocks} blocks, d {config.hidden}, "
             f"{config.num_candidates} candidates)")
  elif kind == "bilstm":
    label = f"BiLSTM(embed {config.embed_dim}, hidden {config.hidden})"
  elif kind == "resnet":
    label = f"ResNet-{config.resnet_depth}"
  else:
    label = f"SmallCNN{tuple(config.model_widths)}"
  base = {"workload": workload, "model": label,
          "batch": int(config.batch_size), "steps": steps, "repeats": repeats,
          "threads": threads}
  rows: Dict[str, dict] = {}
  calls: Dict[str, Callable] = {}
  tag = f"[{workload}, threads={threads}]"

  def prepare(name, make):
    prepare_contender(rows, calls, {**base, "contender": name}, make, f"{tag} {name}", log)

  prepare(BARE, lambda: _prepare_bare(config, model, variables, x, y))
  if forward:
    prepare(FORWARD, lambda: _prepare_forward(config, model, variables, x, y))
  if WORKLOADS[workload][2]:
    if has_dropout(config):  # the recipe's step draws dropout masks: compare like with like
      prepare(BARE_DROPOUT, lambda: _prepare_bare(config, *_model_and_batch(config,
                                                                             dropout=True),
                                                  dropout=True))
    prepare(STEP, lambda: _prepare_recipe_step(config))
  torch, missing = _import_torch() if use_torch else (None, "not asked for")
  if torch is not None:
    if threads is not None:
      torch.set_num_threads(threads)
    prepare(EAGER, lambda: _prepare_torch(torch, config, variables, x, y, False,
                                                    torch_device))
    if kind in ("bilstm", "joint_nlu"):  # the same padded work as jaxloss's scans
      prepare(EAGER_PADDED, lambda: _prepare_torch(torch, config, variables, x, y, False,
                                                   torch_device, packed=False))
    if forward:
      prepare(EAGER_FORWARD, lambda: _prepare_torch_forward(torch, config, variables, x,
                                                            y, torch_device))
    if compile_torch:
      prepare(COMPILED, lambda: _prepare_torch(torch, config, variables, x, y, True,
                                                         torch_device))
  elif use_torch:
    log(f"{tag} {missing}")
  log(f"{tag} timing {', '.join(calls)}: {repeats} blocks of {steps} steps each")
  times, failed = _time_blocks(calls, steps, repeats)
  for name, t in times.items():
    row = rows[name]
    if name in failed:
      row["status"] = failed[name]
    if t:
      row.update(ms=statistics.median(t), min_ms=min(t), max_ms=max(t), times_ms=t)
  refs = {STEP: BARE_DROPOUT if times.get(BARE_DROPOUT) else BARE,
          EAGER_FORWARD: FORWARD}
  for name in (BARE_DROPOUT, STEP, EAGER, EAGER_PADDED, EAGER_FORWARD, COMPILED):
    row, t = rows.get(name), times.get(name) or []
    if row is None:
      continue
    ref = refs.get(name, BARE)
    row["ratio_to"] = ref
    ratios = [a / b for a, b in zip(t, times.get(ref) or [])]
    if ratios:
      row.update(ratio_min=min(ratios), ratio_median=statistics.median(ratios),
                 ratio_max=max(ratios))
    mine = rows.get(ref, {}).get("loss")
    if name in (EAGER, COMPILED, EAGER_FORWARD) and "loss" in row and mine is not None:
      row["loss_rel_diff"] = abs(row["loss"] - mine) / abs(mine)
  _gradient_split(rows, times)
  return list(rows.values())


def _gradient_split(rows: Dict[str, dict], times: Dict[str, List[float]]) -> None:
  """Adds ``gradient_ms`` (step less forward pass, per repeat, median) to the ``jaxloss
  bare`` and ``torch eager`` rows and the per-repeat ratio of those differences to the
  torch row (see :func:`measure`)."""
  diffs = {}
  for step, fwd in ((BARE, FORWARD), (EAGER, EAGER_FORWARD)):
    pairs = list(zip(times.get(step) or [], times.get(fwd) or []))
    if step in rows and pairs:
      diffs[step] = [a - b for a, b in pairs]
      rows[step]["gradient_ms"] = statistics.median(diffs[step])
  ratios = [a / b for a, b in zip(diffs.get(EAGER, []), diffs.get(BARE, [])) if b > 0]
  if ratios:
    rows[EAGER].update(gradient_ratio_min=min(ratios),
                       gradient_ratio_median=statistics.median(ratios),
                       gradient_ratio_max=max(ratios))


# ------------------------------------------------------------ one process per setting


def _worker(args) -> int:
  (threads,) = args.threads
  pinned = _pin(threads)
  reused = set_host_memory(args.host_memory)
  rows = []
  for w in args.workloads:
    try:
      rows += measure(w, steps=args.steps, repeats=args.repeats, threads=threads,
                      use_torch=args.torch, compile_torch=args.compile,
                      torch_device=args.torch_device, forward=args.forward)
    except Exception as e:  # pylint: disable=broad-except
      rows.append({"workload": w, "threads": threads, "contender": BARE,
                   "status": f"failed: {_why(e)}"})
      _log(f"[{w}, threads={threads}] {rows[-1]['status']}")
  import jax  # pylint: disable=import-outside-toplevel
  torch, _ = _import_torch()
  header = {"threads": threads, "pinned_cpus": pinned,
            "xla_flags": os.environ.get("XLA_FLAGS", ""), "jax": jax.__version__,
            "jax_device": jax.devices()[0].device_kind, "torch_device": args.torch_device,
            "torch": None if torch is None else torch.__version__,
            "torch_threads": None if torch is None else torch.get_num_threads(),
            "host_memory": args.host_memory, "host_memory_reused": reused,
            "load_avg_1min_end": os.getloadavg()[0]}
  with open(args.json, "w") as f:
    json.dump({"header": header, "rows": rows}, f, indent=2)
  return 0


def run(workloads: Sequence[str] = tuple(WORKLOADS), threads: Sequence[int] = (1, 2),
        steps: int = 5, repeats: int = 9, use_torch: bool = True,
        compile_torch: bool = True, torch_device: str = "cpu",
        host_memory: str = "reuse", forward: bool = True) -> dict:
  """Every thread count in its own subprocess; ``{"runs": [{"header", "rows"}]}``."""
  runs = []
  for n in threads:
    with tempfile.TemporaryDirectory(prefix="bench-vs-torch-") as tmp:
      out = os.path.join(tmp, "rows.json")
      cmd = [sys.executable, "-m", "tools.bench.vs_torch", "--_worker", "--threads",
             str(n), "--workloads", *workloads, "--steps", str(steps), "--repeats",
             str(repeats), "--json", out, *([] if use_torch else ["--no-torch"]),
             *([] if compile_torch else ["--no-compile"]), "--torch_device", torch_device,
             "--host_memory", host_memory, *([] if forward else ["--no-forward"])]
      env = worker_env(n)
      env.pop("JAX_DISABLE_MOST_OPTIMIZATIONS", None)  # time the optimised programs
      if torch_device != "cpu":  # JAX on its accelerator beside PyTorch's
        env["JAX_PLATFORMS"] = os.environ.get("JAX_PLATFORMS", "")
      proc = subprocess.run(cmd, env=env, cwd=str(REPO), check=False)
      if proc.returncode == 0 and os.path.exists(out):
        with open(out) as f:
          runs.append(json.load(f))
        continue
    why = f"failed: worker for {n} thread(s) exited with {proc.returncode}"
    runs.append({"header": {"threads": n, "error": why},
                 "rows": [{"workload": w, "threads": n, "contender": BARE,
                           "status": why} for w in workloads]})
  return {"runs": runs}


def _fmt(v, spec):
  return "" if v is None else format(v, spec)


def markdown(result: dict) -> str:
  """The comparison table (one row per workload, thread count and contender)."""
  lines = ["| workload | threads | contender | ms/step (median) | torch ÷ jaxloss bare "
           "(min / median / max) | first call s | loss diff |",
           "|---|---:|---|---:|---|---:|---:|"]
  for run_ in result["runs"]:
    for r in run_["rows"]:
      if r.get("status", "ok") != "ok" and "ms" not in r:
        lines.append(f"| {r['workload']} | {r['threads']} | {r['contender']} | "
                     f"{r['status']} | | | |")
        continue
      ratio = (f"{r['ratio_min']:.2f} / **{r['ratio_median']:.2f}** / {r['ratio_max']:.2f}"
               + (f" (÷ {FORWARD})" if r["contender"] == EAGER_FORWARD else "")
               if "ratio_median" in r and r["contender"] in (EAGER, COMPILED,
                                                             EAGER_FORWARD,
                                                             EAGER_PADDED) else
               (f"÷ {r.get('ratio_to', BARE)} {r['ratio_median']:.2f}"
                if "ratio_median" in r else ""))
      lines.append(
          f"| {r['workload']} ({r.get('model', '')}, batch {r.get('batch', '')}) | "
          f"{r['threads']} | {r['contender']} | {_fmt(r.get('ms'), '.2f')} | {ratio} | "
          f"{_fmt(r.get('first_call_s'), '.1f')} | {_fmt(r.get('loss_rel_diff'), '.1e')} |")
  split = split_markdown(result)
  return "\n".join(lines) + (f"\n\n{split}" if split else "")


def split_markdown(result: dict) -> str:
  """Where each step's time goes, per workload and thread count: the forward pass +
  loss on each side and their ratio, then the rest of the step (backward pass and
  update: step less forward, per repeat) and its ratio (torch ÷ jaxloss; > 1: jaxloss
  is faster). Empty without the forward contenders."""
  lines = []
  for run_ in result["runs"]:
    by = {}
    for r in run_["rows"]:
      by.setdefault((r["workload"], r["threads"]), {})[r["contender"]] = r
    for (workload, threads), rows in by.items():
      fwd, tfwd = rows.get(FORWARD, {}), rows.get(EAGER_FORWARD, {})
      bare, eager = rows.get(BARE, {}), rows.get(EAGER, {})
      if "ms" not in fwd or "gradient_ms" not in bare:
        continue
      fr = (f"{tfwd['ratio_min']:.2f} / **{tfwd['ratio_median']:.2f}** / "
            f"{tfwd['ratio_max']:.2f}" if "ratio_median" in tfwd else "")
      gr = (f"{eager['gradient_ratio_min']:.2f} / **{eager['gradient_ratio_median']:.2f}**"
            f" / {eager['gradient_ratio_max']:.2f}" if "gradient_ratio_median" in eager
            else "")
      lines.append(f"| {workload} | {threads} | {fwd['ms']:.2f} | "
                   f"{_fmt(tfwd.get('ms'), '.2f')} | {fr} | {bare['gradient_ms']:.2f} | "
                   f"{_fmt(eager.get('gradient_ms'), '.2f')} | {gr} |")
  if not lines:
    return ""
  return "\n".join(
      ["| workload | threads | forward + loss ms, jaxloss | torch eager | torch ÷ "
       "jaxloss (min / median / max) | backward + update ms, jaxloss | torch eager | "
       "torch ÷ jaxloss (min / median / max) |",
       "|---|---:|---:|---:|---|---:|---:|---|"] + lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m tools.bench.vs_torch",
                                   description=__doc__.splitlines()[0])
  parser.add_argument("--workloads", nargs="+", choices=sorted(WORKLOADS),
                      default=list(WORKLOADS))
  parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--repeats", type=int, default=9)
  parser.add_argument("--json", default=None)
  parser.add_argument("--markdown", default=None)
  parser.add_argument("--no-torch", dest="torch", action="store_false")
  parser.add_argument("--no-compile", dest="compile", action="store_false")
  parser.add_argument("--no-forward", dest="forward", action="store_false",
                      help="skip the forward-only contenders (and the split of each "
                      "step into its forward pass and the rest)")
  parser.add_argument("--torch_device", default="cpu",
                      help="where PyTorch runs: cpu (default) or cuda (JAX then uses "
                      "its default backend, the GPU)")
  parser.add_argument("--host_memory", choices=HOST_MEMORY, default="reuse",
                      help="reuse: glibc's malloc keeps freed memory, as experiments.run "
                      "does by default; system: the system's malloc settings (both "
                      "sides share the process)")
  parser.add_argument("--_worker", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.steps < 1 or args.repeats < 1 or min(args.threads) < 1:
    parser.error("--steps, --repeats and --threads must be >= 1")
  if args._worker:  # pylint: disable=protected-access
    return _worker(args)
  result = run(args.workloads, args.threads, args.steps, args.repeats, args.torch,
               args.compile, args.torch_device, args.host_memory, args.forward)
  table = markdown(result)
  print(table)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=2)
  if args.markdown:
    with open(args.markdown, "w") as f:
      f.write(table + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
