"""Pure per-device train and eval step bodies, and the optimizer they expect.

A step body is launched on every device by :class:`jaxloss.parallel.DataParallel`
(``shard_map`` under ``jit``, or ``pmap``). Inside it:

1. the curriculum's schedules are evaluated on ``state.step`` (values, not branches);
2. the *global* batch indices are drawn from the run key folded with the step and the
   sampler mix (a pure function of seed, step and mix), and each device takes its slice;
3. augmentation is keyed by each example's global position;
4. the loss is the global weighted mean ``Σ w·ℓ / Σ w`` (the denominator psum-ed first,
   so any number of devices computes the same objective), gradients are psum-ed;
5. a non-finite loss or gradient skips the update (params, optimizer and model state are
   kept) and is counted, so no NaN ever reaches the parameters;
6. the LR comes from the curriculum and is written into the optimizer's hyperparameters
   (``optax.inject_hyperparams``), so it follows ``state.step`` even across skipped steps.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxloss import losses
from jaxloss.curriculum import CompiledCurriculum, CurriculumState
from jaxloss.monitors import stats as monitor_stats
from jaxloss.data.sampler import sample_indices, sampling_probabilities
from jaxloss.parallel import DATA_AXIS, device_varying, global_positions
from jaxloss.train_state import TrainState

# (outputs, labels [b], knobs) -> (per-example loss [b], per-example weight [b], aux)
# ``outputs`` is whatever the model returns (logits [b, C], or a dict of them); ``aux``
# is optional (a 2-tuple is accepted) and holds what the monitors read:
#   {"terms": {name: per-example term [b] (unweighted by λ)},
#    "heads": {name: logits [..., C] or (logits, where [...])}}
LossFn = Callable[[Any, jax.Array, Mapping[str, jax.Array]], tuple]
OPTIMIZERS = ("sgd", "adamw")


def make_optimizer(name: str = "sgd", *, learning_rate: float, momentum: float = 0.9,
                   weight_decay: float = 0.0, max_grad_norm: Optional[float] = None,
                   b2: float = 0.999, nesterov: bool = True
                   ) -> optax.GradientTransformation:
  """Global-norm clipping, then SGD-momentum (coupled weight decay) or AdamW.

  ``b2`` is AdamW's second-moment decay (0.98 in SASRec's reference code); unused by SGD.
  ``nesterov`` picks Nesterov momentum for SGD (plain heavy-ball momentum when False,
  as PyTorch's ``SGD(momentum=0.9)`` in the CIFAR-LT reference code); unused by AdamW.

  The LR is an injected hyperparameter so that the train step can set it from the
  curriculum on every step.

  Raises:
    ValueError: unknown ``name``, ``learning_rate <= 0`` or ``max_grad_norm <= 0``.
  """
  if name not in OPTIMIZERS:
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
  if not learning_rate > 0:
    raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
  parts = []
  if max_grad_norm is not None:
    if not max_grad_norm > 0:
      raise ValueError(f"max_grad_norm must be > 0 or None, got {max_grad_norm}")
    parts.append(optax.clip_by_global_norm(max_grad_norm))
  if name == "sgd":
    if weight_decay:
      parts.append(optax.add_decayed_weights(weight_decay))
    parts.append(optax.inject_hyperparams(optax.sgd)(
        learning_rate=learning_rate, momentum=momentum, nesterov=nesterov))
  else:
    if not 0 < b2 < 1:
      raise ValueError(f"b2 must be in (0, 1), got {b2}")
    parts.append(optax.inject_hyperparams(optax.adamw)(
        learning_rate=learning_rate, b2=b2, weight_decay=weight_decay))
  return optax.chain(*parts)


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


def bio_class_weights(tag_counts: np.ndarray, tag_names: Sequence[str], *,
                      o_tag: str = "O", o_weight: float = 0.1, cap: float = 5.0,
                      method: str = "sqrt_inverse_frequency") -> np.ndarray:
  """Per-tag weights for a BIO tagger: ``O`` down-weighted, rare entity tags up.

  Entity tags (``B-*``, ``I-*``) get :func:`jaxloss.losses.class_weights_from_counts`
  of their training counts normalised so that the most frequent entity tag has 1
  (``normalize="head"``), capped at ``cap``; ``O`` gets ``o_weight``; any other tag
  (``PAD``, ``UNK``) gets 0 (it is never a valid output).

  Args:
    tag_counts: ``[C]`` training token counts per tag id.
    tag_names: the ``C`` tag names.
    o_tag, o_weight: the outside tag and its weight.
    cap: the largest entity-tag weight.
    method: see ``class_weights_from_counts``.

  Returns:
    float32 ``[C]``.

  Raises:
    ValueError: lengths differ, ``o_tag`` missing, no entity tag, ``o_weight < 0`` or
      ``cap <= 0``.

  Examples:
    >>> w = bio_class_weights(np.array([0, 0, 900, 100, 25, 4]),
    ...                       ["PAD", "UNK", "O", "B-a", "I-a", "B-b"])
    >>> [round(float(x), 2) for x in w]
    [0.0, 0.0, 0.1, 1.0, 2.0, 5.0]
  """
  counts = np.asarray(tag_counts, np.float64)
  names = list(tag_names)
  if counts.shape != (len(names),):
    raise ValueError(f"tag_counts must have shape [{len(names)}] (one per tag name), got "
                     f"{counts.shape}")
  if o_tag not in names:
    raise ValueError(f"o_tag {o_tag!r} is not among tag_names")
  if not o_weight >= 0 or not cap > 0:
    raise ValueError(f"o_weight must be >= 0 and cap > 0, got {o_weight}, {cap}")
  entity = np.array([n[:2] in ("B-", "I-") for n in names])
  if not entity.any():
    raise ValueError("tag_names has no B-/I- entity tag")
  out = np.zeros(len(names), np.float32)
  out[entity] = np.asarray(losses.class_weights_from_counts(
      counts[entity], method=method, normalize="head", cap=cap))
  out[names.index(o_tag)] = o_weight
  return out


ENTITY_LOSSES = ("focal", "ce")
MASK_FILLS = ("finite", "neg_inf")


def make_joint_nlu_loss(*, tag_valid: np.ndarray, label_valid: Mapping[str, np.ndarray],
                        allowed: Optional[np.ndarray] = None,
                        start_allowed: Optional[np.ndarray] = None,
                        entity_loss: str = "focal", gamma: float = 2.0,
                        entity_alpha: float = 0.25,
                        tag_class_weights: Optional[np.ndarray] = None,
                        mask_fill: str = "finite") -> LossFn:
  """Joint NLU loss: sentence-level CE per label field + λ-weighted BIO tagging loss.

  Per sentence, ``ℓ = Σ_f λ_f · CE(mask(z_f), y_f) + λ_entity · tag`` where ``tag`` is
  :func:`jaxloss.losses.sequence_tagging_loss` of the masked tag logits: the focal loss
  (Lin et al., ICCV 2017) scaled by ``entity_alpha`` with ``tag_class_weights`` (e.g.
  :func:`bio_class_weights`, O = 0.1) and exponent ``gamma``, or plain unweighted CE
  (``entity_loss="ce"``). The λ values are curriculum knobs ``lambda_<field>`` and
  ``lambda_entity`` (optax schedules evaluated on the step, e.g. the entity warm-up
  0.3 → 0.4 → 0.5).

  Masks (derived from the training data by the caller): a sentence label or tag never
  seen in training (``PAD``, ``UNK``, unseen ``I-`` tags) is invalid everywhere
  (``label_valid``, ``tag_valid``); with ``allowed`` / ``start_allowed`` (BIO
  transitions, :func:`jaxloss.decoding.bio_transitions`) the tags that cannot follow the
  gold previous tag are invalid too (``I-X`` after ``O``), matching
  :func:`jaxloss.decoding.constrained_decode` at inference. Padding tokens have no
  valid tag.

  ``mask_fill="finite"`` masks with :func:`jaxloss.losses.mask_invalid_logits` and
  reduces with the padding-safe ``sequence_tagging_loss``. ``mask_fill="neg_inf"``
  reproduces the hand-written recipe before its fix -- an additive ``-inf`` mask and the
  token losses of *all* positions multiplied by the token mask -- whose padding rows
  (every tag invalid) are NaN, so the loss is NaN (the step guard then skips the
  update); it exists to reproduce that failure, never use it otherwise.

  Args:
    tag_valid: bool ``[C]``.
    label_valid: ``{field: bool [K_field]}``, one per sentence-level head.
    allowed, start_allowed: bool ``[C, C]`` / ``[C]`` BIO transitions, or None (no
      transition mask).
    entity_loss: ``"focal"`` or ``"ce"``.
    gamma, entity_alpha, tag_class_weights: the focal entity loss (ignored for
      ``"ce"``); ``tag_class_weights`` ``[C]`` or None.
    mask_fill: ``"finite"`` or ``"neg_inf"``.

  Returns:
    ``loss_fn(outputs, labels, knobs) -> (loss [b], weight [b], aux)`` with
    ``outputs = {"tags": [b, T, C], field: [b, K]}`` and ``labels = {"tags": int [b, T]
    (-1 at padding), field: int [b]}``. ``aux["terms"]``: each field and ``"entity"``
    (before λ); ``aux["heads"]``: each field and ``"entity"`` (the masked tag logits
    with the token mask).

  Raises:
    ValueError: unknown ``entity_loss`` or ``mask_fill``; ``gamma < 0``; shapes that
      disagree; a head with no valid class.
  """
  if entity_loss not in ENTITY_LOSSES:
    raise ValueError(f"entity_loss must be one of {ENTITY_LOSSES}, got {entity_loss!r}")
  if mask_fill not in MASK_FILLS:
    raise ValueError(f"mask_fill must be one of {MASK_FILLS}, got {mask_fill!r}")
  if not gamma >= 0:
    raise ValueError(f"gamma must be >= 0, got {gamma}")
  from jaxloss import decoding  # pylint: disable=g-import-not-at-top
  tag_valid = np.asarray(tag_valid, bool)
  num_tags = tag_valid.shape[0]
  if not tag_valid.any():
    raise ValueError("tag_valid has no valid tag")
  for field, valid in label_valid.items():
    if not np.asarray(valid, bool).any():
      raise ValueError(f"label_valid[{field!r}] has no valid class")
  if (allowed is None) != (start_allowed is None):
    raise ValueError("give both allowed and start_allowed, or neither")
  if allowed is not None and (np.shape(allowed) != (num_tags, num_tags)
                              or np.shape(start_allowed) != (num_tags,)):
    raise ValueError(f"allowed must be [{num_tags}, {num_tags}] and start_allowed "
                     f"[{num_tags}], got {np.shape(allowed)} and "
                     f"{np.shape(start_allowed)}")
  weights = None
  if entity_loss == "focal":
    weights = (np.ones(num_tags, np.float32) if tag_class_weights is None
               else np.asarray(tag_class_weights, np.float32))
    if weights.shape != (num_tags,):
      raise ValueError(f"tag_class_weights must be [{num_tags}], got {weights.shape}")
    weights = jnp.asarray(weights * entity_alpha)
  fields = tuple(label_valid)
  label_valid = {f: jnp.asarray(np.asarray(v, bool)) for f, v in label_valid.items()}
  tag_valid_j = jnp.asarray(tag_valid)
  constrained = allowed is not None
  allowed_j = jnp.asarray(np.asarray(allowed, bool)) if constrained else None
  start_j = jnp.asarray(np.asarray(start_allowed, bool)) if constrained else None

  def fill(logits, valid):
    if mask_fill == "finite":
      return losses.mask_invalid_logits(logits, valid)
    return logits + jnp.where(valid, 0.0, -jnp.inf)  # the pre-fix recipe

  def loss_fn(outputs, labels, knobs):
    tags = labels["tags"]
    token_mask = tags >= 0
    safe_tags = jnp.where(token_mask, tags, 0)
    valid = decoding.transition_valid_mask(
        safe_tags, token_mask, allowed=allowed_j, start_allowed=start_j,
        static_valid=tag_valid_j, constrained=constrained)
    tag_logits = fill(outputs["tags"], valid)
    if mask_fill == "finite":
      entity = losses.sequence_tagging_loss(
          tag_logits, safe_tags, where=token_mask, class_weights=weights,
          gamma=gamma if entity_loss == "focal" else 0.0)
    else:
      log_p = jnp.take_along_axis(jax.nn.log_softmax(tag_logits, axis=-1),
                                  safe_tags[..., None], axis=-1)[..., 0]
      per_token = -log_p
      if weights is not None:
        per_token = per_token * (1.0 - jnp.exp(log_p)) ** gamma * weights[safe_tags]
      m = token_mask.astype(per_token.dtype)
      entity = jnp.sum(per_token * m, axis=-1) / jnp.maximum(jnp.sum(m, axis=-1), 1.0)
    terms = {"entity": entity}
    heads = {"entity": (tag_logits, token_mask)}
    total = knobs["lambda_entity"] * entity
    for field in fields:
      z = fill(outputs[field], label_valid[field])
      terms[field] = losses.softmax_cross_entropy_with_integer_labels(z, labels[field])
      heads[field] = z
      total = total + knobs[f"lambda_{field}"] * terms[field]
    return total, jnp.ones_like(total), {"terms": terms, "heads": heads}

  return loss_fn


RERANK_LOSSES = ("listwise", "bpr")


def make_rerank_loss(loss: str = "listwise") -> LossFn:
  """The per-position loss of a next-item reranker trained over sampled candidates.

  The model's outputs (``jaxloss.models.SASRec.__call__``) hold, for every position
  ``t`` of a user's sequence, the scores of a candidate list whose index 0 is the true
  next item and whose other entries are sampled negatives: ``scores [b, L, 1+K]`` and
  ``where [b, L, 1+K]`` (False at padded positions and for invalid negatives).

  * ``"listwise"``: the sampled-softmax / listwise cross-entropy
    :func:`jaxloss.losses.listwise_softmax_loss` with the one-hot label on index 0,
    ``-log softmax(s)_0`` over the valid candidates; ``ln(1+K)`` for a model that knows
    nothing (all scores equal).
  * ``"bpr"``: BPR (Rendle et al., UAI 2009) with one positive,
    ``mean_j softplus(s_j - s_0)`` over the valid negatives ``j``; this equals
    :func:`jaxloss.losses.pairwise_logistic_loss` on the same list (tested) without its
    ``[L, L]`` pair matrix, and is ``ln 2`` at equal scores.

  Per example (user), the loss is the mean over its valid positions and its weight is
  the number of those positions, so the step's weighted mean is the mean over all
  positions of the global batch (SASRec's reduction). A user without a valid position
  has weight 0.

  Args:
    loss: ``"listwise"`` or ``"bpr"``.

  Returns:
    A :data:`LossFn` ``(outputs, labels, knobs) -> (loss [b], weight [b], aux)``;
    ``labels`` is unused (the positive is at index 0 by construction), ``aux["terms"]``
    has the per-example loss under the name ``loss``.

  Raises:
    ValueError: an unknown ``loss``.
  """
  if loss not in RERANK_LOSSES:
    raise ValueError(f"loss must be one of {RERANK_LOSSES}, got {loss!r}")

  def loss_fn(outputs, labels, knobs):
    del labels, knobs
    scores = jnp.asarray(outputs["scores"], jnp.float32)
    where = jnp.asarray(outputs["where"], bool)
    positions = where[..., 0]                                         # [b, L]
    if loss == "listwise":
      onehot = jnp.zeros(scores.shape, jnp.float32).at[..., 0].set(1.0)
      per_position = losses.listwise_softmax_loss(scores, onehot, where=where)
    else:
      negatives = where[..., 1:]
      pair = jax.nn.softplus(scores[..., 1:] - scores[..., :1])
      count = jnp.sum(negatives, axis=-1)
      per_position = (jnp.sum(jnp.where(negatives, pair, 0.0), axis=-1)
                      / jnp.maximum(count, 1))
    per_position = jnp.where(positions, per_position, 0.0)
    num_positions = jnp.sum(positions, axis=-1).astype(jnp.float32)  # [b]
    per_example = jnp.sum(per_position, axis=-1) / jnp.maximum(num_positions, 1.0)
    return per_example, num_positions, {"terms": {loss: per_example}}

  return loss_fn


DATA_LAYOUTS = ("dataset", "batch")


def class_mix_indices(rng: jax.Array, step: jax.Array, labels: jax.Array,
                      class_counts: jax.Array, mix: jax.Array,
                      global_batch_size: int) -> jax.Array:
  """The example indices of step ``step``'s global batch under the class-mix sampler:
  :func:`jaxloss.data.sampler.sample_indices` keyed by the first half of
  ``split(fold_in(rng, step))`` (the second half keys augmentation). A pure function
  of the run's key, the step and the mix, so the train step (on device) and a
  per-process input pipeline (on the host, which then keeps its own rows) draw the
  same batch.

  Args:
    rng: the run's raw ``uint32[2]`` key (``TrainState.rng``).
    step: int scalar.
    labels: int ``[N]`` training labels.
    class_counts: ``[C]`` float.
    mix: the ``sampler_mix`` knob at ``step``.
    global_batch_size: static.

  Returns:
    int32 ``[global_batch_size]``.
  """
  k_sample, _ = jax.random.split(jax.random.fold_in(rng, step))
  probs = sampling_probabilities(labels, class_counts, mix)
  return sample_indices(k_sample, probs, global_batch_size)


def make_train_step(*, curriculum: CompiledCurriculum, loss_fn: LossFn,
                    global_batch_size: int, num_devices: int,
                    class_counts: np.ndarray,
                    augment_fn: Optional[Callable] = None,
                    max_grad_norm: Optional[float] = None,
                    monitor: Optional[monitor_stats.MonitorSpec] = None,
                    input_keys: Sequence[str] = ("image",),
                    sampler: Optional[Callable] = None,
                    data_layout: str = "dataset") -> Callable:
  """Builds the per-device train step body ``(state, data[, member_knobs]) ->
  (state, metrics)``.

  Args:
    curriculum: compiled curriculum; its knobs must include ``learning_rate`` and
      ``sampler_mix`` (``aug_strength`` if ``augment_fn`` is given) and whatever
      ``loss_fn`` reads.
    loss_fn: see :data:`LossFn`.
    global_batch_size: examples per step over all devices (divisible by
      ``num_devices``).
    num_devices: size of the ``data`` axis.
    class_counts: ``[C]`` training examples per class (for the default class-mix
      sampler; unused with ``sampler``).
    augment_fn: ``(key, inputs[0] [b, ...], positions [b], strength) -> inputs[0]``.
    max_grad_norm: the clipping threshold in the optimizer, to report ``clipped``.
    monitor: what to measure for the training-health monitors (per-term loss values,
      predicted-class histograms per head, max gradient norm, non-finite gradient
      elements), accumulated in ``state.train_sums``, whose structure must be
      ``monitors.zero_sums(monitor)``. None measures only the base sums.

    input_keys: the fields of ``data`` passed, in order, as the model's positional
      inputs (``("ids", "lengths")`` for a text model).
    sampler: ``(rng, step, data, knobs) -> int32 [global_batch_size]`` indices of the
      step's global batch (e.g. :func:`jaxloss.data.sampler.epoch_permutation_indices`);
      None draws them with the curriculum's class-mix sampler (knob ``sampler_mix``).

    data_layout: ``"dataset"`` (default): ``data`` is the whole training set,
      replicated, and the step draws its batch on device. ``"batch"``: ``data`` is the
      step's global batch, split along ``data`` (launch with ``batch_sharded=True``),
      drawn on the host by :func:`class_mix_indices` (or ``sampler``) with the same key
      and assembled per process (:meth:`jaxloss.parallel.DataParallel.assemble_batch`):
      the multi-process input path. Both give the same batch, positions and keys.

  ``data`` is the whole training set, replicated: ``{"image": [N, ...], "label": [N]}``
  (or the ``input_keys`` fields and a ``label`` of any shape ``[N, ...]``, or a dict of
  such arrays for a multi-head model, e.g. ``{"tags": [N, T], "intent": [N]}``). The optional
  third argument ``member_knobs`` (a dict of scalars) is merged over the curriculum's
  knobs: ``jax.vmap(body, in_axes=(0, None, 0))`` trains an ensemble whose members
  differ in those values (e.g. loss weights) in one compiled step.
  Metrics (identical on every device): ``loss``, ``grad_norm``, ``clipped``, ``finite``,
  ``stage``, every knob value and, with ``monitor``, ``term/<name>`` for each term.

  Raises:
    ValueError: batch size not divisible by the number of devices; missing knobs; (at
      trace time) a loss function that does not report the terms or heads ``monitor``
      names.
  """
  if data_layout not in DATA_LAYOUTS:
    raise ValueError(f"data_layout must be one of {DATA_LAYOUTS}, got {data_layout!r}")
  if global_batch_size % num_devices:
    raise ValueError(
        f"batch_size must be divisible by the number of devices ({num_devices}), got "
        f"{global_batch_size}")
  on_device = data_layout == "dataset"
  needed = ({"learning_rate"}
            | ({"sampler_mix"} if sampler is None and on_device else set())
            | ({"aug_strength"} if augment_fn else set()))
  missing = needed - set(curriculum.knobs)
  if missing:
    raise ValueError(f"curriculum is missing knobs {sorted(missing)}; it has "
                     f"{sorted(curriculum.knobs)}")
  local_batch = global_batch_size // num_devices
  counts = (jnp.asarray(np.asarray(class_counts), jnp.float32)
            if sampler is None and on_device else None)
  input_keys = tuple(input_keys)

  def body(state: TrainState, data: dict[str, jax.Array], member_knobs=None):
    knobs = {**curriculum.values(state.step), **(member_knobs or {})}
    step_key = jax.random.fold_in(state.rng, state.step)
    _, k_aug = jax.random.split(step_key)
    # Dropout differs per device (its examples differ); folded, not split, so the
    # sampling and augmentation keys are those of a model without dropout.
    k_dropout = jax.random.fold_in(jax.random.fold_in(step_key, 2),
                                   jax.lax.axis_index(DATA_AXIS))
    positions = global_positions(local_batch)
    if on_device:
      if sampler is None:
        indices = class_mix_indices(state.rng, state.step, data["label"], counts,
                                    knobs["sampler_mix"], global_batch_size)
      else:
        indices = sampler(state.rng, state.step, data, knobs)
      local = indices[positions]
      inputs = [data[k][local] for k in input_keys]
      labels = jax.tree.map(lambda x: x[local], data["label"])
    else:  # this device's rows of the global batch, gathered on the host
      inputs = [data[k] for k in input_keys]
      labels = data["label"]
    if augment_fn is not None:
      inputs[0] = augment_fn(k_aug, inputs[0], positions, knobs["aug_strength"])

    mutable = list(state.model_state) or False

    def objective(params):
      variables = {"params": params, **state.model_state}
      out = state.apply_fn(variables, *inputs, train=True, mutable=mutable,
                           rngs={"dropout": k_dropout})
      outputs, new_model_state = out if mutable else (out, {})
      per_example, weight, *rest = loss_fn(outputs, labels, knobs)
      aux = rest[0] if rest else {}
      weight_sum = jax.lax.psum(jnp.sum(weight), DATA_AXIS)
      denominator = jnp.maximum(weight_sum, 1e-12)
      local_loss = jnp.sum(per_example * weight) / denominator
      observed = {}
      if monitor is not None:
        monitor_stats.check_loss_aux(monitor, aux)
        # Each term weighted like the total, so total = Σ λ·term exactly.
        for name in monitor.terms:
          observed[f"term/{name}"] = jnp.sum(aux["terms"][name] * weight) / denominator
        heads = monitor_stats.normalize_heads(aux.get("heads", {}))
        for name, head in monitor.heads:
          head_logits, where = heads[name]
          head_logits = jax.lax.stop_gradient(head_logits)
          observed[f"pred/{name}"] = monitor_stats.predicted_class_counts(
              head_logits, where)
          if head.o_index is not None:
            valid = (jnp.ones(head_logits.shape[:-1], bool) if where is None
                     else jnp.asarray(where, bool))
            predicted = jnp.argmax(head_logits, axis=-1)
            observed[f"tokens/{name}"] = jnp.sum(valid.astype(jnp.float32))
            observed[f"non_o/{name}"] = jnp.sum(
                (valid & (predicted != head.o_index)).astype(jnp.float32))
      observed = jax.lax.stop_gradient(observed)
      return local_loss, (new_model_state, observed)

    (local_loss, (new_model_state, observed)), grads = jax.value_and_grad(
        objective, has_aux=True)(device_varying(state.params))
    grads = jax.lax.psum(grads, DATA_AXIS)
    observed = jax.lax.psum(observed, DATA_AXIS)
    loss = jax.lax.psum(local_loss, DATA_AXIS)
    # Running statistics are synchronised by the model when it uses axis_name; the
    # pmean makes them identical on every device in any case (flax imagenet example).
    new_model_state = jax.lax.pmean(new_model_state, DATA_AXIS)
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

    opt_state = optax.tree_utils.tree_set(state.opt_state,
                                          learning_rate=knobs["learning_rate"])
    updates, new_opt_state = state.tx.update(grads, opt_state, state.params)
    new_params = optax.apply_updates(state.params, updates)

    def keep_if_finite(new, old):
      return jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)

    clipped = (grad_norm > max_grad_norm) if max_grad_norm else jnp.zeros((), bool)
    step_stats = {"loss": loss, "steps": jnp.ones((), jnp.float32),
                  "grad_norm": grad_norm, "clipped": clipped.astype(jnp.float32),
                  "skipped": (~finite).astype(jnp.float32), **observed}
    if monitor is not None:
      step_stats["grad_norm_max"] = grad_norm
      step_stats["nonfinite_grads"] = monitor_stats.nonfinite_count(grads)
    new_sums = monitor_stats.accumulate(state.train_sums, step_stats, finite)
    new_step = state.step + 1
    new_state = state.replace(
        step=new_step,
        params=keep_if_finite(new_params, state.params),
        opt_state=keep_if_finite(new_opt_state, opt_state),
        model_state=keep_if_finite(new_model_state, state.model_state),
        curriculum=CurriculumState(stage=curriculum.stage_index(new_step)),
        skipped_steps=state.skipped_steps + (~finite).astype(jnp.int32),
        train_sums=new_sums,
    )
    metrics = {"loss": loss, "grad_norm": grad_norm, "clipped": clipped,
               "finite": finite, "stage": curriculum.stage_index(state.step), **knobs,
               **{k: v for k, v in observed.items() if k.startswith("term/")}}
    return new_state, metrics

  return body


def make_eval_step(num_classes: int, *, dropout_in_eval: bool = False,
                   input_keys: Sequence[str] = ("image",)) -> Callable:
  """Builds the per-device eval body ``(state, batch) -> sums``.

  ``batch`` holds this device's model inputs (the ``input_keys`` fields, ``image`` by
  default, ``("ids", "lengths")`` for a text model), ``label`` and boolean ``mask``
  (False for padding). Returns, psum-ed over devices, ``confusion`` (float32 ``[C, C]``, rows = true
  class, columns = predicted), ``loss_sum`` (cross-entropy over real examples) and
  ``count``. Uses the model in inference mode (running BN statistics, no dropout).

  Args:
    num_classes: C.
    dropout_in_eval: reproduces a classic bug for the ``eval_nondeterministic``
      monitor: dropout stays on in evaluation, keyed by ``batch["eval_call"]`` (a
      per-call counter, as code that draws a fresh key per evaluation would). Never set
      it in a real run.
  """

  input_keys = tuple(input_keys)

  def body(state: TrainState, batch):
    variables = {"params": state.params, **state.model_state}
    inputs = [batch[k] for k in input_keys]
    if dropout_in_eval:
      key = jax.random.fold_in(jax.random.fold_in(state.rng, batch["eval_call"][0]),
                               jax.lax.axis_index(DATA_AXIS))
      out = state.apply_fn(variables, *inputs, train=False, dropout=True,
                           rngs={"dropout": key})
    else:
      out = state.apply_fn(variables, *inputs, train=False)
    logits = out["logits"] if isinstance(out, Mapping) else out
    mask = batch["mask"]
    labels = jnp.where(mask, batch["label"], 0)
    predictions = jnp.argmax(logits, axis=-1)
    confusion = jnp.zeros((num_classes, num_classes), jnp.float32).at[
        labels, predictions].add(mask.astype(jnp.float32))
    ce = losses.softmax_cross_entropy_with_integer_labels(logits, labels, where=mask)
    sums = {"confusion": confusion, "loss_sum": jnp.sum(ce),
            "count": jnp.sum(mask.astype(jnp.float32))}
    return jax.lax.psum(sums, DATA_AXIS)

  return body
