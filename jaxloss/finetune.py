"""Fine-tuning a pretrained encoder: AdamW with warm-up and linear decay, layer-wise
learning-rate decay and a frozen encoder, all expressed with optax transformations.

The optimizer is one ``optax`` chain, so the encoder's parameters sit in the same
:class:`~jaxloss.train_state.TrainState` as the heads and are checkpointed and resumed
with them. The peak LR stays one injected hyperparameter (``learning_rate``) that the
train step sets from the curriculum on every step (:mod:`jaxloss.train_step`); the
per-layer factors are constants applied after AdamW:

* **layer-wise LR decay** (Clark et al., ELECTRA, ICLR 2020; Sun et al., *How to
  Fine-Tune BERT for Text Classification?*, CCL 2019): the update of a parameter at
  depth ``d`` below the top is scaled by ``decay ** d``; the task heads have ``d = 0``,
  encoder layer ``i`` of ``L`` has ``d = L - i``, the embeddings ``d = L + 1``. Scaling
  AdamW's update scales its learning rate and its decoupled weight decay together, as
  a per-group learning rate does in PyTorch;
* **frozen encoder**: ``optax.multi_transform`` sends the encoder's gradients to
  ``optax.set_to_zero`` (no optimizer state is kept for them), the heads to AdamW;
* **weight decay** skips biases and LayerNorm parameters (``optax.adamw``'s ``mask``),
  the BERT convention (Devlin et al. 2019; ``transformers``' ``no_decay``).

Parameter paths follow :mod:`jaxloss.models.bert` (``.../layer_{i}/...``,
``embeddings``, ``LayerNorm``) under the encoder's top-level name (``"encoder"``).
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Optional

import jax
import optax

_LAYER = re.compile(r"^layer_(\d+)$")


def _path_names(path) -> tuple:
  return tuple(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def layer_depths(params: Mapping[str, Any], *, encoder: str = "encoder") -> Any:
  """The depth below the top of each parameter: a tree of ints shaped like ``params``.

  ``0`` for everything outside ``params[encoder]`` (the task heads) and for the
  encoder's pooler; ``L - i`` inside the encoder's ``layer_i`` (``L`` layers); ``L + 1``
  for the encoder's embeddings.

  Raises:
    ValueError: ``params`` has no ``encoder`` entry, or it has no ``layer_{i}``.

  >>> p = {"encoder": {"embeddings": {"w": 0}, "encoder": {"layer_0": {"w": 0},
  ...                  "layer_1": {"w": 0}}}, "head": {"w": 0}}
  >>> layer_depths(p)
  {'encoder': {'embeddings': {'w': 3}, 'encoder': {'layer_0': {'w': 2}, 'layer_1': {'w': 1}}}, 'head': {'w': 0}}
  """
  if encoder not in params:
    raise ValueError(f"params have no {encoder!r} entry (top-level keys: "
                     f"{sorted(params)})")
  paths = [_path_names(p) for p, _ in jax.tree_util.tree_leaves_with_path(params[encoder])]
  layers = {int(m.group(1)) for names in paths for n in names
            if (m := _LAYER.match(n))}
  if not layers:
    raise ValueError(f"params[{encoder!r}] has no layer_<i> entries")
  num_layers = max(layers) + 1

  def depth(path, _):
    names = _path_names(path)
    if names[0] != encoder:
      return 0
    for n in names[1:]:
      m = _LAYER.match(n)
      if m:
        return num_layers - int(m.group(1))
      if n == "embeddings":
        return num_layers + 1
    return 0  # the pooler
  return jax.tree_util.tree_map_with_path(depth, dict(params))


def decay_mask(params: Mapping[str, Any]) -> Any:
  """True where weight decay applies: every parameter but biases and LayerNorm /
  BatchNorm scales (leaves named ``bias`` or ``scale``, or under a ``LayerNorm``)."""
  def decays(path, _):
    names = _path_names(path)
    return not (names[-1] in ("bias", "scale") or "LayerNorm" in names)
  return jax.tree_util.tree_map_with_path(decays, dict(params))


def make_finetune_optimizer(params: Mapping[str, Any], *, learning_rate: float,
                            weight_decay: float = 0.01, layer_decay: float = 1.0,
                            encoder_lr_scale: float = 1.0,
                            freeze_encoder: bool = False, encoder: str = "encoder",
                            max_grad_norm: Optional[float] = 1.0, b1: float = 0.9,
                            b2: float = 0.999, eps: float = 1e-6
                            ) -> optax.GradientTransformation:
  """AdamW for fine-tuning ``params[encoder]`` (a pretrained encoder) under task heads.

  Chain: global-norm clipping; ``optax.inject_hyperparams(optax.adamw)`` (the LR is the
  injected ``learning_rate`` the train step overwrites on every step from the
  curriculum, e.g. a warm-up + linear decay, :func:`warmup_linear_decay`), weight decay
  masked off biases and LayerNorm; then ``optax.scale(encoder_lr_scale * layer_decay **
  depth)`` per :func:`layer_depths` group of the encoder (``layer_decay ** depth``, that is
  1, for the heads) when either factor is not 1. With ``freeze_encoder`` the
  encoder's updates are zero (``optax.set_to_zero`` through ``optax.multi_transform``)
  and AdamW keeps state for the heads only.

  Args:
    params: the model's parameters (their structure labels the groups).
    learning_rate: the peak LR (the initial injected value).
    weight_decay: AdamW's decoupled weight decay (0.01 in BERT).
    layer_decay: in (0, 1]; 1 is no layer-wise decay.
    encoder_lr_scale: in (0, 1]; the encoder's LR as a fraction of the heads' (a
      randomly initialised head learns at ``learning_rate``, the pretrained encoder at
      ``encoder_lr_scale * learning_rate``, times its layer decay); 1: one LR.
    freeze_encoder: train the heads only.
    encoder: the top-level name of the encoder's parameters.
    max_grad_norm: clip the global gradient norm (None: no clipping).
    b1, b2, eps: AdamW's moments and epsilon (BERT: 0.9, 0.999, 1e-6).

  Raises:
    ValueError: ``learning_rate <= 0``, ``layer_decay`` or ``encoder_lr_scale``
      outside (0, 1],
      ``max_grad_norm <= 0``, or ``params`` without ``encoder`` (see
      :func:`layer_depths`).
  """
  if not learning_rate > 0:
    raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
  if not 0 < layer_decay <= 1:
    raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}")
  if not 0 < encoder_lr_scale <= 1:
    raise ValueError(f"encoder_lr_scale must be in (0, 1], got {encoder_lr_scale}")
  if max_grad_norm is not None and not max_grad_norm > 0:
    raise ValueError(f"max_grad_norm must be > 0 or None, got {max_grad_norm}")
  depths = layer_depths(params, encoder=encoder)
  adamw = optax.inject_hyperparams(optax.adamw, static_args=("mask",))(
      learning_rate=learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
      mask=decay_mask)
  parts = [optax.clip_by_global_norm(max_grad_norm)] if max_grad_norm else []
  if freeze_encoder:
    labels = {k: ("frozen" if k == encoder else "train") for k in params}
    parts.append(optax.multi_transform(
        {"frozen": optax.set_to_zero(), "train": adamw}, labels))
    return optax.chain(*parts)
  parts.append(adamw)
  if layer_decay < 1 or encoder_lr_scale < 1:
    # One group per (encoder or head, depth); the heads' depth is 0 (factor 1).
    factors, groups = {}, {}
    for k, tree in depths.items():
      scale = encoder_lr_scale if k == encoder else 1.0
      part = "encoder" if k == encoder else "head"
      for d in set(jax.tree.leaves(tree)):
        factors[f"{part}_depth_{d}"] = scale * layer_decay ** d
      groups[k] = jax.tree.map(lambda d, part=part: f"{part}_depth_{d}", tree)
    parts.append(optax.multi_transform(
        {g: optax.scale(f) for g, f in sorted(factors.items())}, groups))
  return optax.chain(*parts)


def warmup_linear_decay(peak: float, *, warmup: float, total: float,
                        end: float = 0.0) -> optax.Schedule:
  """LR rising linearly from 0 to ``peak`` over ``warmup`` and falling linearly to
  ``end`` at ``total`` (BERT's schedule; ``transformers``'
  ``get_linear_schedule_with_warmup``). Time in any unit (the curriculum passes
  fractional epochs).

  Raises:
    ValueError: ``warmup < 0`` or ``total <= warmup``.

  >>> s = warmup_linear_decay(1.0, warmup=1, total=5)
  >>> [round(float(s(t)), 2) for t in (0, 0.5, 1, 3, 5, 6)]
  [0.0, 0.5, 1.0, 0.5, 0.0, 0.0]
  """
  if warmup < 0 or not total > warmup:
    raise ValueError(f"need 0 <= warmup < total, got warmup={warmup}, total={total}")
  decay = optax.linear_schedule(peak, end, total - warmup)
  if warmup == 0:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay],
                              boundaries=[warmup])
