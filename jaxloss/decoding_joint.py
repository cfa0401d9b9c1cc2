"""A sentence label and its BIO tags decoded together (re-exported by
:mod:`jaxloss.decoding`, where the tag vocabulary, the BIO constraints and the MEMM that
these functions build on are described).

:func:`label_tag_mask` reads from training data which entity types each label (intent)
goes with; :func:`joint_decode` returns the (label, valid tag sequence) pair with the
highest product of the label head's and the MEMM's probabilities under that mask.
"""

from __future__ import annotations

import functools
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

# bio_transitions and tag_valid_mask are used by the doctests.
from jaxloss.decoding import (_BEGIN, _INSIDE, ArrayLike, _check_bool_vector,
                              _check_constraints, _check_lengths, _normalised,
                              _parse_tags, _viterbi_paths, bio_transitions,
                              tag_valid_mask)
from jaxloss.losses import _checks
from jaxloss.losses.masking import large_negative


def label_tag_mask(labels: ArrayLike, tag_sequences: Sequence[Sequence[int]],
                   tag_names: Sequence[str], num_labels: int, *,
                   min_expected: float = 0.0) -> np.ndarray:
  """Which tags go with which sentence label, read from training data.

  ``B-X`` and ``I-X`` are allowed with label ``k`` when some training sentence labelled
  ``k`` has an entity of type ``X``; ``O`` and the special tags are allowed with every
  label. The mask :func:`joint_decode` uses (SNIPS: ``B-movie_name`` occurs only with
  ``SearchScreeningEvent``).

  With ``min_expected > 0`` a pair never seen is forbidden only where the data are
  evidence against it: where ``n_k · q_X >= min_expected``, ``n_k`` being the training
  sentences labelled ``k`` and ``q_X`` the share of all training sentences with an
  ``X`` entity. ``n_k · q_X`` is how many of ``k``'s sentences would hold an ``X`` if
  ``X`` went with ``k`` as often as with the data overall; seeing none of them then has
  probability about ``exp(-n_k q_X)``, under 5 % at 3 (the "rule of three"). So a rare
  label (a few sentences) or a rare type keeps its pairs open, and a label seen often
  enough without ``X`` forbids it. On SNIPS, at 3 the mask equals the plain one (every
  label has 1,800+ sentences); on a copy whose rarest intent has 4 sentences it keeps
  open the types those 4 did not show (``tools.reports.nlu_variants``' ``tail``).

  Args:
    labels: int ``[N]``, each training sentence's label (e.g. its intent) in
      ``[0, num_labels)``.
    tag_sequences: ``N`` sequences of tag ids (any lengths).
    tag_names: the ``C`` tag names (see the module docstring).
    num_labels: ``K``.
    min_expected: ``>= 0``, in sentences; 0 (the default): every pair not seen is
      forbidden. The joint NLU recipe uses 3 (``config.label_tag_min_expected``).

  Returns:
    NumPy bool ``[K, C]``.

  Raises:
    TypeError, ValueError: as :func:`bio_transitions`; ``labels`` not ``N`` integers
      in ``[0, K)``; a tag id outside ``[0, C)``; ``min_expected`` negative or not
      finite.

  Examples:
    >>> names = ["PAD", "O", "B-a", "I-a", "B-b"]
    >>> label_tag_mask([0, 1], [[1, 2, 3], [4, 1]], names, 2).astype(int)
    array([[1, 1, 1, 1, 0],
           [1, 1, 0, 0, 1]])
    >>> # One sentence of each label is no evidence against the other's type.
    >>> label_tag_mask([0, 1], [[1, 2, 3], [4, 1]], names, 2, min_expected=3).astype(int)
    array([[1, 1, 1, 1, 1],
           [1, 1, 1, 1, 1]])

  References:
    J. A. Hanley, A. Lippman-Hand, *If nothing goes wrong, is everything all right?
    Interpreting zero numerators*, JAMA 249 (1983) (the rule of three).
  """
  _, kinds, types = _parse_tags(tag_names)
  labels = np.asarray(labels)
  if labels.ndim != 1 or labels.shape[0] != len(tag_sequences):
    raise ValueError(f"labels must be one label per tag sequence, [{len(tag_sequences)}]"
                     f", got shape {labels.shape}")
  if labels.size and (not np.issubdtype(labels.dtype, np.integer)
                      or labels.min() < 0 or labels.max() >= num_labels):
    raise ValueError(f"labels must be integers in [0, {num_labels}) (num_labels)")
  if not (np.isfinite(min_expected) and min_expected >= 0):
    raise ValueError(f"min_expected must be finite and >= 0, got {min_expected}")
  num = len(kinds)
  entity = np.isin(kinds, (_BEGIN, _INSIDE))
  names = sorted({types[c] for c in range(num) if entity[c]})
  column = {t: i for i, t in enumerate(names)}
  has = np.zeros((len(tag_sequences), len(names)), bool)  # sentence i has an X entity
  for i, tags in enumerate(tag_sequences):
    tags = np.asarray(tags, np.int64)
    if tags.size and (tags.min() < 0 or tags.max() >= num):
      raise ValueError(f"tag_sequences[{i}] has a tag id outside [0, {num})")
    for t in {types[c] for c in tags if entity[c]}:
      has[i, column[t]] = True
  seen = np.zeros((num_labels, len(names)), bool)  # [K, types]
  np.logical_or.at(seen, labels.astype(np.int64), has)
  if min_expected > 0 and labels.size:
    n = np.bincount(labels, minlength=num_labels).astype(np.float64)
    seen |= n[:, None] * has.mean(0)[None, :] < min_expected
  mask = np.zeros((num_labels, num), bool)
  mask[:, ~entity] = True  # O and the specials
  for c in np.flatnonzero(entity):
    mask[:, c] = seen[:, column[types[c]]]
  return mask


@functools.partial(jax.jit, static_argnames=("num_candidates",))
def _joint_core(label_logits, tag_logits, lengths, label_tags, allowed, start_allowed,
                static_valid, label_valid, num_candidates):
  x = tag_logits.astype(_checks.compute_dtype(tag_logits.dtype))
  z = label_logits.astype(x.dtype)
  fill = large_negative(x.dtype)
  log_p = _normalised(z, label_valid[None, :], fill)  # [B, K]
  top_log_p, candidates = jax.lax.top_k(log_p, num_candidates)  # [B, k]

  def one(candidate):  # [B] label ids -> paths [B, T], scores [B]
    return _viterbi_paths(x, lengths, allowed, start_allowed, static_valid,
                          static_valid & label_tags[candidate])

  paths, scores = jax.vmap(one, in_axes=1, out_axes=1)(candidates)  # [B, k, T], [B, k]
  best = jnp.argmax(top_log_p + scores, axis=1)  # [B]; ties: the likelier label
  labels = jnp.take_along_axis(candidates, best[:, None], axis=1)[:, 0]
  tags = jnp.take_along_axis(paths, best[:, None, None], axis=1)[:, 0]
  return labels.astype(jnp.int32), tags


def joint_decode(label_logits: ArrayLike, tag_logits: ArrayLike, lengths: ArrayLike, *,
                 label_tags: ArrayLike, allowed: ArrayLike, start_allowed: ArrayLike,
                 static_valid: ArrayLike, label_valid: Optional[ArrayLike] = None,
                 num_candidates: int = 5) -> tuple[jax.Array, jax.Array]:
  r"""The best (sentence label, valid BIO tag sequence) pair of each sentence.

  The two heads are decoded together instead of each on its own: it returns

  .. math::
    \arg\max_{k,\,y} \; \log p(k \mid x) + \sum_t \log p(y_t \mid x, t, y_{t-1})
    \quad \text{s.t. every } y_t \in \mathrm{label\_tags}[k],

  where ``p(k | x)`` is the softmax of ``label_logits`` over ``label_valid`` and the
  tag terms are :func:`constrained_decode`'s MEMM log-probabilities (each softmax over
  the tags valid after the previous one, whatever ``label_tags[k]`` allows). So a tag
  sequence the label does not allow costs the label what the tagger loses by giving
  it up: a sentence whose tagger is sure of a ``movie_name`` moves from
  ``SearchCreativeWork`` (never seen with one) to ``SearchScreeningEvent``, while a
  sure label keeps its own tags. Only the ``num_candidates`` likeliest labels of each
  sentence are tried (one Viterbi each). With ``label_tags`` all True it returns the
  argmax label and :func:`constrained_decode`'s tags.

  It is the hard-constrained, locally normalised case of a triangular-chain model (a
  sentence label joined to the tag chain by label-tag factors): Jeong & Lee,
  "Triangular-chain conditional random fields", IEEE TASLP 2008.

  Positions ``t >= lengths[b]`` are 0 in the tags and never read. Jittable; logits are
  upcast to at least float32, masks filled with the finite
  :func:`jaxloss.losses.masking.large_negative`.

  Args:
    label_logits: floating ``[B, K]`` sentence-label logits (e.g. intents).
    tag_logits: floating ``[B, T, C]`` tag logits.
    lengths: int ``[B]``, real tokens per sentence, in ``[0, T]``.
    label_tags: bool ``[K, C]``, the tags each label allows (:func:`label_tag_mask`).
    allowed, start_allowed, static_valid: as :func:`constrained_decode`.
    label_valid: bool ``[K]``, the labels that may be output (None: all).
    num_candidates: labels tried per sentence, ``>= 1`` (clipped to ``K``).

  Returns:
    ``(labels, tags)``: int32 ``[B]`` and int32 ``[B, T]``.

  Raises:
    TypeError: logits not floating, ``lengths`` not integer, masks not bool.
    ValueError: shapes that disagree (naming the argument); ``num_candidates < 1``;
      concrete ``lengths`` outside ``[0, T]``; no valid first tag; no valid label.

  Examples:
    >>> names = ["PAD", "O", "B-a", "I-a", "B-b"]
    >>> allowed, start = bio_transitions(names)
    >>> label_tags = label_tag_mask([0, 1], [[2], [4]], names, 2)
    >>> # Label 0 is a little likelier, but the tagger is sure of a b entity.
    >>> labels, tags = joint_decode(
    ...     jnp.array([[0.2, 0.0]]), jnp.array([[[0.0, 0.0, 0.0, 0.0, 4.0]]]),
    ...     jnp.array([1]), label_tags=label_tags, allowed=allowed,
    ...     start_allowed=start, static_valid=tag_valid_mask(names))
    >>> labels, tags
    (Array([1], dtype=int32), Array([[4]], dtype=int32))
  """
  tag_logits = jnp.asarray(tag_logits)
  label_logits = jnp.asarray(label_logits)
  _checks.check_floating(tag_logits, "tag_logits")
  _checks.check_floating(label_logits, "label_logits")
  if tag_logits.ndim != 3:
    raise ValueError(f"`tag_logits` must have shape [B, T, C], got "
                     f"{tuple(tag_logits.shape)}")
  batch, length, num = tag_logits.shape
  if label_logits.ndim != 2 or label_logits.shape[0] != batch:
    raise ValueError(f"`label_logits` must have shape [B, K] with B = {batch} "
                     f"(tag_logits' batch), got {tuple(label_logits.shape)}")
  num_labels = label_logits.shape[1]
  lengths = _check_lengths(lengths, batch, length)
  allowed, start_allowed, static_valid = _check_constraints(
      allowed, start_allowed, static_valid, num)
  label_tags = jnp.asarray(label_tags)
  if label_tags.dtype != jnp.bool_:
    raise TypeError(f"`label_tags` must be a bool array, got dtype {label_tags.dtype}")
  _checks.check_shape(label_tags, (num_labels, num), "label_tags",
                      "[K, C], the tags each label allows")
  label_valid = (jnp.ones(num_labels, bool) if label_valid is None
                 else _check_bool_vector(label_valid, num_labels, "label_valid"))
  if isinstance(num_candidates, bool) or not isinstance(num_candidates, int) or (
      num_candidates < 1):
    raise ValueError(f"num_candidates must be an int >= 1, got {num_candidates!r}")
  for values, what in (
      (_checks.concrete_value(static_valid & start_allowed),
       "no tag is valid at the start of a sentence (static_valid & start_allowed is "
       "all False): no valid sequence exists"),
      (_checks.concrete_value(label_valid), "label_valid is all False: no label")):
    if values is not None and not values.any():
      raise ValueError(what)
  if length == 0:  # no tags: the likeliest valid label
    z = jnp.where(label_valid, label_logits, large_negative(label_logits.dtype))
    return jnp.argmax(z, axis=-1).astype(jnp.int32), jnp.zeros((batch, 0), jnp.int32)
  return _joint_core(label_logits, tag_logits, lengths.astype(jnp.int32), label_tags,
                     allowed, start_allowed, static_valid, label_valid,
                     min(num_candidates, num_labels))
