"""The joint-NLU objective: finite masks of invalid labels, BIO transitions, a focal
(or CE) entity loss with BIO class weights, λ-weighted sentence heads."""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxloss import losses
from jaxloss.train_step import LossFn


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


ENTITY_LOSSES = ("focal", "ce", "crf")
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

  ``entity_loss="crf"`` replaces the token loss by the linear-chain CRF negative
  log-likelihood per real token (:func:`jaxloss.losses.crf_sequence_loss`, Lafferty et
  al. 2001; BiLSTM-CRF as in Lample et al. 2016) with the model's learned
  ``outputs["tag_transitions"]`` / ``"tag_start"`` / ``"tag_end"``; the tag masks then
  restrict the CRF's sequences (never-seen tags, and ``allowed`` / ``start_allowed`` as
  global transition constraints) instead of each token's softmax, and inference
  decodes with :func:`jaxloss.decoding.crf_decode`.

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
    entity_loss: ``"focal"``, ``"ce"`` or ``"crf"``.
    gamma, entity_alpha, tag_class_weights: the focal entity loss (ignored for
      ``"ce"``); ``tag_class_weights`` ``[C]`` or None.
    mask_fill: ``"finite"`` or ``"neg_inf"``.

  Returns:
    ``loss_fn(outputs, labels, knobs) -> (loss [b], weight [b], aux)`` with
    ``outputs = {"tags": [b, T, C], field: [b, K]}`` and ``labels = {"tags": int [b, T]
    (-1 at padding), field: int [b]}``. ``aux["terms"]``: each field and ``"entity"``
    (before λ); ``aux["heads"]``: each field and ``"entity"`` (the masked tag logits
    with the token mask). When ``outputs`` holds ``"<field>_tokens" [b, T, K]``
    (token-level detection, Qin et al. 2019), that field's term is the mean over the
    real tokens of each token's CE against the sentence label, as Stack-Propagation
    trains it; its head stays ``outputs[field]``.

  Raises:
    ValueError: unknown ``entity_loss`` or ``mask_fill``; ``gamma < 0``; shapes that
      disagree; a head with no valid class; ``"crf"`` with ``mask_fill="neg_inf"``.
  """
  if entity_loss not in ENTITY_LOSSES:
    raise ValueError(f"entity_loss must be one of {ENTITY_LOSSES}, got {entity_loss!r}")
  if mask_fill not in MASK_FILLS:
    raise ValueError(f"mask_fill must be one of {MASK_FILLS}, got {mask_fill!r}")
  if not gamma >= 0:
    raise ValueError(f"gamma must be >= 0, got {gamma}")
  if entity_loss == "crf" and mask_fill != "finite":
    raise ValueError("entity_loss='crf' needs mask_fill='finite'")
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

  def crf_entity(outputs, tags, token_mask):
    safe_tags = jnp.where(token_mask, tags, 0)
    entity = losses.crf_sequence_loss(
        outputs["tags"], safe_tags, where=token_mask,
        transitions=outputs["tag_transitions"], start_transitions=outputs["tag_start"],
        end_transitions=outputs["tag_end"], allowed=allowed_j, start_allowed=start_j,
        static_valid=tag_valid_j)
    tag_logits = losses.mask_invalid_logits(outputs["tags"],
                                            tag_valid_j & token_mask[..., None])
    return entity, tag_logits

  def loss_fn(outputs, labels, knobs):
    tags = labels["tags"]
    token_mask = tags >= 0
    if entity_loss == "crf":
      entity, tag_logits = crf_entity(outputs, tags, token_mask)
      return with_sentence_heads(outputs, labels, knobs, entity, tag_logits, token_mask)
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
    return with_sentence_heads(outputs, labels, knobs, entity, tag_logits, token_mask)

  def with_sentence_heads(outputs, labels, knobs, entity, tag_logits, token_mask):
    terms = {"entity": entity}
    heads = {"entity": (tag_logits, token_mask)}
    total = knobs["lambda_entity"] * entity
    for field in fields:
      z = fill(outputs[field], label_valid[field])
      per_token = outputs.get(f"{field}_tokens")
      if per_token is None:
        terms[field] = losses.softmax_cross_entropy_with_integer_labels(z, labels[field])
      else:  # token-level detection: every real token is trained on the sentence label
        token_ce = losses.softmax_cross_entropy_with_integer_labels(
            fill(per_token, label_valid[field]),
            jnp.broadcast_to(labels[field][:, None], per_token.shape[:2]))
        m = token_mask.astype(token_ce.dtype)
        terms[field] = jnp.sum(token_ce * m, axis=-1) / jnp.maximum(jnp.sum(m, axis=-1),
                                                                    1.0)
      heads[field] = z
      total = total + knobs[f"lambda_{field}"] * terms[field]
    return total, jnp.ones_like(total), {"terms": terms, "heads": heads}

  return loss_fn
