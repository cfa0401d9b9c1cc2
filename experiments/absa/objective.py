"""The multi-aspect sentiment objective: per-aspect focal loss with a per-aspect class
weight table, plus a multi-label supervised contrastive term."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxloss import losses
from jaxloss.parallel import DATA_AXIS
from jaxloss.train_step import LossFn


def aspect_alpha_table(class_counts: np.ndarray, *,
                       method: str = "sqrt_inverse_frequency",
                       normalize: Optional[str] = "mean",
                       cap: Optional[float] = None) -> np.ndarray:
  """Focal α per aspect and class from training counts: ``[A, C]`` float32.

  Row ``a`` is :func:`jaxloss.losses.class_weights_from_counts` of ``class_counts[a]``
  (each aspect weighted on its own label distribution, so a rare polarity of a frequent
  aspect and a frequent polarity of a rare aspect are treated separately).

  Raises:
    ValueError: ``class_counts`` not 2-D, or bad counts / method (see
      ``class_weights_from_counts``).
  """
  counts = np.asarray(class_counts)
  if counts.ndim != 2:
    raise ValueError(f"class_counts must be [num_aspects, num_classes], got shape "
                     f"{counts.shape}")
  return np.stack([np.asarray(losses.class_weights_from_counts(
      row, method=method, normalize=normalize, cap=cap)) for row in counts]
                  ).astype(np.float32)


MULTI_ASPECT_LOSSES = ("focal", "ce")


def make_multi_aspect_loss(class_counts: np.ndarray, *, loss: str = "focal",
                           gamma: float = 2.0,
                           alpha_method: str = "sqrt_inverse_frequency",
                           class_weight_cap: Optional[float] = 10.0,
                           contrastive: bool = True,
                           temperature: float = 0.1) -> LossFn:
  """Multi-aspect sentiment loss: per-aspect focal (or CE) + multi-label SupCon.

  For a review with aspect labels ``y [A]`` (class 0 = aspect absent),

  ``ℓ = λ_f · (1/A) Σ_a α[a, y_a] (1 − p_{a,y_a})^γ (−log p_{a,y_a}) + λ_c · supcon``

  with ``α`` from :func:`aspect_alpha_table` (Lin et al., ICCV 2017, α-balanced focal
  loss, one α per aspect and class) and ``supcon`` the supervised contrastive loss
  (Khosla et al., NeurIPS 2020) of the L2-normalised projection with *multi-label*
  positives: two reviews are positives when they share an (aspect, polarity) pair,
  i.e. the multi-hot labels are ``[A · (C − 1)]`` over present aspect-polarity pairs
  (:func:`jaxloss.losses.supervised_contrastive_loss`, "any" rule). The contrast set is
  the global batch (all-gathered over ``data``). ``loss="ce"`` is the baseline:
  unweighted cross-entropy per aspect (no α, γ = 0).

  The weights ``λ_f`` and ``λ_c`` are read from ``knobs["focal_weight"]`` and
  ``knobs["contrastive_weight"]`` (traced values: ensemble members with different
  weights share one compiled step).

  Args:
    class_counts: ``[A, C]`` training counts per aspect and class.
    loss: ``"focal"`` or ``"ce"``.
    gamma: focal exponent (ignored for ``"ce"``).
    alpha_method, class_weight_cap: see :func:`aspect_alpha_table` (``normalize="mean"``,
      ``cap=class_weight_cap``).
    contrastive: add the SupCon term (the model must return ``"projection"``).
    temperature: SupCon τ.

  Returns:
    ``loss_fn(outputs, labels [b, A], knobs) -> (loss [b], weight [b], aux)`` with
    ``outputs = {"logits": [b, A, C], "projection": [b, D]}``. ``aux["terms"]`` has
    ``loss`` (the per-aspect term, named ``"focal"`` or ``"ce"``) and, with
    ``contrastive``, ``"contrastive"``, both before λ; ``aux["heads"]`` has
    ``"aspect"`` (all ``[b, A]`` slots, C classes) and ``"polarity"`` (the C − 1
    polarity logits on slots whose aspect is present).

  Raises:
    ValueError: unknown ``loss``, ``gamma < 0``, ``temperature <= 0``, bad counts.
  """
  if loss not in MULTI_ASPECT_LOSSES:
    raise ValueError(f"loss must be one of {MULTI_ASPECT_LOSSES}, got {loss!r}")
  if not gamma >= 0:
    raise ValueError(f"gamma must be >= 0, got {gamma}")
  if not temperature > 0:
    raise ValueError(f"temperature must be > 0, got {temperature}")
  counts = np.asarray(class_counts)
  alpha = jnp.asarray(aspect_alpha_table(counts, method=alpha_method, cap=class_weight_cap))
  num_aspects, num_classes = counts.shape

  def loss_fn(outputs, labels, knobs):
    logits = outputs["logits"]
    if loss == "focal":
      per_slot = losses.softmax_focal_loss_with_integer_labels(logits, labels,
                                                               gamma=gamma)
      per_slot = per_slot * jnp.take_along_axis(alpha[None], labels[..., None],
                                                axis=-1)[..., 0]
    else:
      per_slot = losses.softmax_cross_entropy_with_integer_labels(logits, labels)
    cls = jnp.mean(per_slot, axis=-1)
    present = labels > 0
    heads = {"aspect": logits, "polarity": (logits[..., 1:], present)}
    weight = jnp.ones_like(cls)
    if not contrastive:
      total = knobs["focal_weight"] * cls
      return total, weight, {"terms": {loss: cls}, "heads": heads}
    multi_hot = jax.nn.one_hot(labels, num_classes, dtype=jnp.int32)[..., 1:]
    multi_hot = multi_hot.reshape(labels.shape[0], num_aspects * (num_classes - 1))
    local = labels.shape[0]
    z = outputs["projection"]
    z_all = jax.lax.all_gather(z, DATA_AXIS, tiled=True)
    hot_all = jax.lax.all_gather(multi_hot, DATA_AXIS, tiled=True)
    per_anchor = losses.supervised_contrastive_loss(z_all, hot_all,
                                                    temperature=temperature)
    start = jax.lax.axis_index(DATA_AXIS) * local
    supcon = jax.lax.dynamic_slice_in_dim(per_anchor, start, local)
    total = knobs["focal_weight"] * cls + knobs["contrastive_weight"] * supcon
    return total, weight, {"terms": {loss: cls, "contrastive": supcon}, "heads": heads}

  return loss_fn
