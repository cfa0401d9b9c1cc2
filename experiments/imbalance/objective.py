"""The imbalance recipe's objective: class-weighted, logit-adjusted cross-entropy (or
focal, LDAM) with the curriculum's knobs, and an optional supervised contrastive term."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxloss import losses
from jaxloss.parallel import DATA_AXIS
from jaxloss.train_step import LossFn


IMBALANCE_LOSSES = ("ce", "focal", "ldam")


def make_imbalance_loss(class_counts: np.ndarray, *, loss: str = "ce",
                        gamma: float = 2.0, weight_method: str = "inverse_frequency",
                        weight_normalize: Optional[str] = "head",
                        beta: float = 0.999, ldam_max_margin: float = 0.5,
                        ldam_scale: float = 30.0) -> LossFn:
  """The imbalance recipe's loss: class-weighted, logit-adjusted CE (or focal, LDAM).

  ``ℓ_i = w_{y_i} · L(z_i + τ·log π, y_i)`` with ``w = class_weights_from_counts(counts,
  cap=knobs["class_weight_cap"])`` and ``τ = knobs["tau"]``; ``L`` is cross-entropy
  (Menon et al., ICLR 2021, logit-adjusted loss) or softmax focal loss (Lin et al.,
  ICCV 2017). With ``weight_normalize="head"`` a cap of 1 gives uniform weights and
  τ = 0 gives plain cross-entropy, so the ERM baseline is the same step with other
  knob values. ``loss="ldam"`` is :func:`jaxloss.losses.ldam_loss` (Cao et al.,
  NeurIPS 2019) of the logits, with margins from the counts and scale ``ldam_scale``
  (30 for the cosine logits of a normalised classifier); τ does not apply to it, and
  LDAM-DRW is this loss with the class-weight cap raised from 1 at the re-weighting
  epoch (``weight_method="effective_number"``, ``beta=0.9999``).

  Returns:
    ``loss_fn(logits, labels, knobs) -> (loss [b], weight [b], aux)``; the step reduces
    with ``Σ w·ℓ / Σ w`` (PyTorch's ``CrossEntropyLoss(weight=...)`` mean). ``aux``
    reports the one term ``"classification"`` and the head ``"class"`` (``logits``) for
    the monitors.

  Raises:
    ValueError: unknown ``loss``; bad counts (see ``class_weights_from_counts``); a
      non-positive ``ldam_max_margin`` or ``ldam_scale``.
  """
  if loss not in IMBALANCE_LOSSES:
    raise ValueError(f"loss must be one of {IMBALANCE_LOSSES}, got {loss!r}")
  if loss == "ldam":
    for name, value in (("ldam_max_margin", ldam_max_margin), ("ldam_scale", ldam_scale)):
      if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")
  counts = np.asarray(class_counts)
  priors = losses.class_priors_from_counts(counts)
  # Validate the static arguments once, eagerly, with a concrete cap.
  losses.class_weights_from_counts(counts, method=weight_method, beta=beta,
                                   normalize=weight_normalize, cap=1.0)

  def loss_fn(logits, labels, knobs):
    weights = losses.class_weights_from_counts(
        counts, method=weight_method, beta=beta, normalize=weight_normalize,
        cap=knobs["class_weight_cap"])
    if loss == "ce":
      per_example = losses.logit_adjusted_softmax_cross_entropy(
          logits, labels, class_priors=priors, tau=knobs["tau"])
    elif loss == "ldam":
      per_example = losses.ldam_loss(logits, labels, class_counts=counts,
                                     max_margin=ldam_max_margin, scale=ldam_scale)
    else:
      adjusted = logits + knobs["tau"] * jnp.log(jnp.maximum(priors, 1e-12))
      per_example = losses.softmax_focal_loss_with_integer_labels(
          adjusted, labels, gamma=gamma)
    aux = {"terms": {"classification": per_example}, "heads": {"class": logits}}
    return per_example, weights[labels], aux

  return loss_fn


def add_contrastive_term(loss_fn: LossFn, *, classification_weight: float,
                         contrastive_weight: float, temperature: float = 0.1) -> LossFn:
  """Adds a supervised contrastive term on a projection head to a classification loss.

  The model returns ``{"logits": [b, C], "projection": [b, D]}``. Per example,
  ``ℓ_i = λ_cls · cls_i + λ_con · supcon_i`` where ``cls`` is ``loss_fn`` on the logits
  and ``supcon`` is :func:`jaxloss.losses.supervised_contrastive_loss` (Khosla et al.,
  NeurIPS 2020) of the L2-normalised projections. The contrast set is the *global*
  batch: projections and labels are all-gathered over the ``data`` axis and each device
  keeps its own anchors, so any number of devices computes the same objective. Both
  terms share the classification loss's per-example weight. ``aux["terms"]`` reports
  ``classification`` and ``contrastive`` (before λ), so the monitors can see one stall
  while the other falls; a λ of 0 still computes (and reports) its term.

  Raises:
    ValueError: a negative weight, or both weights 0.
  """
  for name, value in (("classification_weight", classification_weight),
                      ("contrastive_weight", contrastive_weight)):
    if not value >= 0:
      raise ValueError(f"{name} must be >= 0, got {value}")
  if classification_weight == 0 and contrastive_weight == 0:
    raise ValueError("classification_weight and contrastive_weight are both 0")

  def combined(outputs, labels, knobs):
    cls, weight, aux = loss_fn(outputs["logits"], labels, knobs)
    local = labels.shape[0]
    z = outputs["projection"]
    z = z / jnp.sqrt(jnp.sum(z * z, axis=-1, keepdims=True) + 1e-12)
    z_all = jax.lax.all_gather(z, DATA_AXIS, tiled=True)
    labels_all = jax.lax.all_gather(labels, DATA_AXIS, tiled=True)
    per_anchor = losses.supervised_contrastive_loss(z_all, labels_all,
                                                    temperature=temperature)
    start = jax.lax.axis_index(DATA_AXIS) * local
    supcon = jax.lax.dynamic_slice_in_dim(per_anchor, start, local)
    total = classification_weight * cls + contrastive_weight * supcon
    aux = {"terms": {"classification": cls, "contrastive": supcon},
           "heads": aux["heads"]}
    return total, weight, aux

  return combined
