"""BIO tag constraints and constrained (Viterbi) decoding for joint-NLU taggers (MEMM
and CRF).

Tag vocabularies look like JointBERT's ``slot_label.txt``: ``["PAD", "UNK", "O",
"B-album", "I-album", ...]``. Every name is one of

* ``"O"``, the outside tag;
* ``"B-<type>"`` / ``"I-<type>"`` with a non-empty type (the type is everything after
  the two-character prefix, so ``"B-object-type"`` has type ``object-type``);
* a *special* tag: any other name without ``"-"`` (``PAD``, ``UNK``, ``[CLS]``, ...).
  Specials are never a valid output.

Any other name is malformed and raises ``ValueError``: a ``B-``/``I-`` prefix with an
empty type, a name with ``"-"`` but another prefix (``X-foo``, IOBES's ``E-loc`` and
``S-loc``), and the untyped ``B`` and ``I``.

BIO transitions (:func:`bio_transitions`): ``I-X`` may follow only ``B-X`` or ``I-X``;
``O`` and any ``B-*`` may follow anything; a sentence starts with ``O`` or a ``B-*``.
After a special tag the rules after ``O`` apply.

Training and decoding use the same locally normalised model (a maximum-entropy Markov
model, MEMM). In training, :func:`transition_valid_mask` gives each token the tags
valid after the *gold* previous tag. :func:`jaxloss.losses.mask_invalid_logits` then
masks the others out of the token's softmax. So the model learns
``log p(c | x, t, prev) = x[t, c] - logsumexp_{c' valid after prev} x[t, c']``.
:func:`constrained_decode` finds the valid tag sequence that maximises the sum of
exactly these log-probabilities (Viterbi over the previous tag). :func:`greedy_decode`
is the unconstrained baseline: argmax over the statically valid tags. It can emit an
``I-X`` after ``O``, which seqeval then reads as the start of a new span.

A sentence label (an intent) and the tags can be decoded together:
:func:`joint_decode` returns the (label, valid tag sequence) pair with the highest
product of the label head's and the MEMM's probabilities, each label allowing only the
entity types :func:`label_tag_mask` saw with it in the training data.

The globally normalised alternative is a linear-chain CRF: learned tag-to-tag
transition scores, trained with :func:`jaxloss.losses.crf_sequence_loss` and decoded by
:func:`crf_decode`, under the same three constraint masks.

Finite fills: invalid tags get :func:`jaxloss.losses.masking.large_negative` (-1e9 in
float32), never ``-inf``. So padding rows and impossible paths stay finite. A
reachable path always beats an unreachable one unless its log-probability is below
about -1e9 (logit gaps of order 1e9 / T).
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from jaxloss.losses import _checks
from jaxloss.losses import crf
from jaxloss.losses.masking import large_negative

ArrayLike = Any

# Tag kinds.
_SPECIAL, _OUTSIDE, _BEGIN, _INSIDE = range(4)
_SPECIAL_EXAMPLES = "PAD, UNK"


def _parse_tags(tag_names: Sequence[str]) -> tuple[list[str], np.ndarray, list[str]]:
  """Names, kinds ``[C]`` and entity types (``""`` for O and specials)."""
  if isinstance(tag_names, str):
    raise TypeError(f"tag_names must be a sequence of tag names, got the str "
                    f"{tag_names!r}")
  names = list(tag_names)
  if not names:
    raise ValueError("tag_names must hold at least one tag, got none")
  kinds = np.empty(len(names), np.int32)
  types = []
  for i, name in enumerate(names):
    if not isinstance(name, str):
      raise TypeError(f"tag_names[{i}] must be a str, got {name!r} of type "
                      f"{type(name).__name__}")
    entity_type = ""
    if name == "O":
      kind = _OUTSIDE
    elif name[:2] in ("B-", "I-"):
      entity_type = name[2:]
      if not entity_type.strip():
        raise ValueError(f"malformed tag {name!r} (tag_names[{i}]): the {name[0]}- "
                         "prefix needs a non-empty entity type, e.g. 'B-loc'")
      kind = _BEGIN if name[0] == "B" else _INSIDE
    elif "-" in name:
      raise ValueError(f"malformed tag {name!r} (tag_names[{i}]): expected 'O', "
                       "'B-<type>', 'I-<type>' or a special name without '-' (e.g. "
                       f"{_SPECIAL_EXAMPLES}); other schemes (IOBES) are not supported")
    elif name in ("B", "I"):
      raise ValueError(f"malformed tag {name!r} (tag_names[{i}]): untyped B/I tags are "
                       "not supported, use 'B-<type>' / 'I-<type>'")
    else:
      kind = _SPECIAL
    kinds[i] = kind
    types.append(entity_type)
  seen = {}
  for i, name in enumerate(names):
    if name in seen:
      raise ValueError(f"tag_names must be distinct, {name!r} is at {seen[name]} and "
                       f"{i}")
    seen[name] = i
  return names, kinds, types


def bio_transitions(tag_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
  """The BIO transition constraints of a tag vocabulary.

  ``allowed[p, c]`` is True iff tag ``c`` may follow tag ``p``:

  * ``O`` and every ``B-*``: after anything;
  * ``I-X``: only after ``B-X`` or ``I-X`` (same type);
  * a special tag (``PAD``, ``UNK``): never.

  A row ``p`` of a special tag is the same as the row of ``O``. ``start_allowed[c]``:
  ``O`` and ``B-*`` may start a sentence, ``I-*`` and specials not. See the module
  docstring for which names are special and which are malformed.

  Args:
    tag_names: the ``C`` tag names, indexed by tag id.

  Returns:
    ``(allowed, start_allowed)``: NumPy bool ``[C, C]`` and ``[C]``.

  Raises:
    TypeError: ``tag_names`` is a str or holds a non-str.
    ValueError: no tag, a repeated name, or a malformed name (``"I-"``, ``"X-foo"``,
      ``"E-loc"``, ``"B"``); the message names it.

  Examples:
    >>> allowed, start = bio_transitions(["PAD", "O", "B-a", "I-a", "B-b", "I-b"])
    >>> allowed.astype(int)
    array([[0, 1, 1, 0, 1, 0],
           [0, 1, 1, 0, 1, 0],
           [0, 1, 1, 1, 1, 0],
           [0, 1, 1, 1, 1, 0],
           [0, 1, 1, 0, 1, 1],
           [0, 1, 1, 0, 1, 1]])
    >>> start.astype(int)
    array([0, 1, 1, 0, 1, 0])

  References:
    Ramshaw & Marcus, "Text Chunking using Transformation-Based Learning", WVLC 1995
    (the IOB scheme); Tjong Kim Sang & Veenstra, "Representing Text Chunks", EACL
    1999 (IOB2: every chunk starts with B-, as in JointBERT's slot labels).
  """
  _, kinds, types = _parse_tags(tag_names)
  free = (kinds == _OUTSIDE) | (kinds == _BEGIN)
  num = len(kinds)
  allowed = np.repeat(free[None, :], num, axis=0)
  for c in np.flatnonzero(kinds == _INSIDE):
    for p in np.flatnonzero((kinds == _BEGIN) | (kinds == _INSIDE)):
      if types[p] == types[c]:
        allowed[p, c] = True
  return allowed, free.copy()


def observed_transitions(tag_sequences: Sequence[Sequence[int]], num_tags: int
                         ) -> tuple[np.ndarray, np.ndarray]:
  """The transitions and first tags that occur in labelled data.

  OR them into :func:`bio_transitions`' masks so that every training sequence stays
  valid: hand-labelled data sometimes hold an ``I-X`` after ``O``, and a gold sequence
  the constraints forbid gets a loss of about ``1e9`` under the finite fill.

  Args:
    tag_sequences: one int sequence of tag ids per sentence (empty ones are skipped).
    num_tags: C.

  Returns:
    ``(allowed, start_allowed)``: NumPy bool ``[C, C]`` (``[p, c]``: some sentence has
    ``c`` right after ``p``) and ``[C]`` (some sentence starts with ``c``).

  Raises:
    ValueError: a tag id outside ``[0, num_tags)``, naming the sentence.

  Examples:
    >>> allowed, start = observed_transitions([[1, 3], [2]], 4)
    >>> np.argwhere(allowed).tolist(), start.astype(int).tolist()
    ([[1, 3]], [0, 1, 1, 0])
  """
  allowed = np.zeros((num_tags, num_tags), bool)
  start = np.zeros(num_tags, bool)
  for i, seq in enumerate(tag_sequences):
    seq = np.asarray(seq, np.int64)
    if not seq.size:
      continue
    if seq.min() < 0 or seq.max() >= num_tags:
      raise ValueError(f"tag_sequences[{i}] has a tag id outside [0, {num_tags})")
    start[seq[0]] = True
    allowed[seq[:-1], seq[1:]] = True
  return allowed, start


def tag_valid_mask(tag_names: Sequence[str],
                   train_tag_counts: Optional[Union[ArrayLike, Mapping[str, int]]] = None
                   ) -> np.ndarray:
  """Tags a tagger may ever output: ``O`` and ``B-``/``I-`` tags, minus unseen ones.

  Special tags (``PAD``, ``UNK``) are never valid. With ``train_tag_counts``, every tag
  with a zero training count is invalid too. These are typically ``I-`` tags of
  one-token slot types, which no training sentence contains: a model could not learn
  them, and predicting one can only cost precision.

  Args:
    tag_names: the ``C`` tag names.
    train_tag_counts: training token counts per tag, an array ``[C]`` indexed by tag
      id, or a mapping ``{name: count}`` (missing names count 0); None keeps every
      non-special tag.

  Returns:
    NumPy bool ``[C]``.

  Raises:
    TypeError, ValueError: as :func:`bio_transitions`; counts of the wrong length,
      negative, or naming a tag not in ``tag_names``.

  Examples:
    >>> names = ["PAD", "UNK", "O", "B-a", "I-a", "B-b", "I-b"]
    >>> tag_valid_mask(names).astype(int)
    array([0, 0, 1, 1, 1, 1, 1])
    >>> tag_valid_mask(names, {"O": 50, "B-a": 7, "I-a": 3, "B-b": 4}).astype(int)
    array([0, 0, 1, 1, 1, 1, 0])
  """
  names, kinds, _ = _parse_tags(tag_names)
  valid = kinds != _SPECIAL
  if train_tag_counts is None:
    return valid
  if isinstance(train_tag_counts, Mapping):
    unknown = sorted(set(train_tag_counts) - set(names))
    if unknown:
      raise ValueError(f"train_tag_counts names tags not in tag_names: {unknown}")
    counts = np.array([train_tag_counts.get(n, 0) for n in names], np.float64)
  else:
    counts = np.asarray(train_tag_counts, np.float64)
    if counts.shape != (len(names),):
      raise ValueError(f"train_tag_counts must have shape ({len(names)},), one count "
                       f"per tag name, got {counts.shape}")
  if (counts < 0).any() or not np.isfinite(counts).all():
    raise ValueError("train_tag_counts must be finite and non-negative")
  return valid & (counts > 0)


def _check_bool_vector(x, num: int, name: str) -> jax.Array:
  x = jnp.asarray(x)
  if x.dtype != jnp.bool_:
    raise TypeError(f"`{name}` must be a bool array, got dtype {x.dtype}")
  _checks.check_shape(x, (num,), name, "one entry per tag")
  return x


def _check_constraints(allowed, start_allowed, static_valid, num: Optional[int]):
  """Validates the three constraint arrays against ``num`` tags (or allowed's size)."""
  allowed = jnp.asarray(allowed)
  if allowed.dtype != jnp.bool_:
    raise TypeError(f"`allowed` must be a bool array, got dtype {allowed.dtype}")
  if num is None:
    num = allowed.shape[0] if allowed.ndim == 2 else -1
  _checks.check_shape(allowed, (num, num), "allowed",
                      "[C, C], allowed[p, c] = tag c may follow tag p")
  start_allowed = _check_bool_vector(start_allowed, num, "start_allowed")
  static_valid = _check_bool_vector(static_valid, num, "static_valid")
  return allowed, start_allowed, static_valid


@functools.partial(jax.jit, static_argnames=("constrained",))
def _transition_core(tags, token_mask, allowed, start_allowed, static_valid,
                     constrained):
  num_tags = static_valid.shape[0]
  valid = static_valid & token_mask[..., None]
  if not constrained:
    return valid
  length = tags.shape[-1]
  # Position of the last real token before t (-1: none, t is the first real token).
  last = jax.lax.cummax(jnp.where(token_mask, jnp.arange(length), -1),
                        axis=tags.ndim - 1)
  prev = jnp.concatenate([jnp.full(last.shape[:-1] + (1,), -1, last.dtype),
                          last[..., :-1]], axis=-1)[..., :length]
  prev_tag = jnp.take_along_axis(tags, jnp.maximum(prev, 0), axis=-1)
  after = allowed[jnp.clip(prev_tag, 0, num_tags - 1)]  # [..., T, C]
  follow = jnp.where((prev >= 0)[..., None], after, start_allowed)
  return valid & follow


def transition_valid_mask(tags: ArrayLike, token_mask: ArrayLike,
                          allowed: Optional[ArrayLike],
                          start_allowed: Optional[ArrayLike],
                          static_valid: ArrayLike, *,
                          constrained: bool = True) -> jax.Array:
  """The tags valid at each token given the gold previous tag (teacher forcing).

  ``valid[..., t, c] = token_mask[..., t] & static_valid[c] & follow[..., t, c]``.
  ``follow`` is ``start_allowed`` at the first real token and ``allowed[tags[...,
  s]]`` at the others, where ``s`` is the previous *real* token (the last ``s < t``
  with ``token_mask`` True). With a prefix mask (padding only at the end) ``s`` is
  ``t - 1``. With interior masked positions (e.g. the word pieces after the first of a
  word, whose label JointBERT ignores) the constraint still links consecutive
  words. Padding positions have no valid tag at all: the rows that make an ``-inf``
  mask NaN, so mask with :func:`jaxloss.losses.mask_invalid_logits` and keep the
  padding in the loss's ``where=``.

  ``constrained=False`` drops the transitions: ``static_valid & token_mask`` (and
  ``allowed`` / ``start_allowed`` may be None).

  Jittable (the checks look only at shapes and dtypes, plus the values of concrete
  tags). Under ``jax.jit`` an out-of-range gold tag at a real token cannot be checked
  and is clipped into ``[0, C)``.

  Args:
    tags: int ``[..., T]`` gold tags; positions with ``token_mask`` False may hold
      anything (e.g. -100).
    token_mask: bool (or 0/1 int) ``[..., T]``, True = a real token.
    allowed: bool ``[C, C]`` from :func:`bio_transitions`, or None when
      unconstrained.
    start_allowed: bool ``[C]`` from :func:`bio_transitions`, or None when
      unconstrained.
    static_valid: bool ``[C]``, e.g. :func:`tag_valid_mask`.
    constrained: whether to apply the transitions.

  Returns:
    bool ``[..., T, C]``.

  Raises:
    TypeError: ``tags`` not integer, masks not bool.
    ValueError: shapes that disagree; ``allowed`` / ``start_allowed`` None with
      ``constrained=True``; a concrete gold tag outside ``[0, C)`` at a real token.

  Examples:
    >>> names = ["PAD", "O", "B-a", "I-a"]
    >>> allowed, start = bio_transitions(names)
    >>> tags = jnp.array([[2, 3, 1, -100]])  # B-a I-a O <pad>
    >>> valid = transition_valid_mask(tags, tags >= 0, allowed, start,
    ...                               tag_valid_mask(names))
    >>> valid[0].astype(int)
    Array([[0, 1, 1, 0],
           [0, 1, 1, 1],
           [0, 1, 1, 1],
           [0, 0, 0, 0]], dtype=int32)
  """
  tags = jnp.asarray(tags)
  _checks.check_integer(tags, "tags")
  if tags.ndim < 1:
    raise ValueError("`tags` must have shape [..., T], got a scalar")
  token_mask = jnp.asarray(token_mask)
  if jnp.issubdtype(token_mask.dtype, jnp.floating):
    raise TypeError(f"`token_mask` must be a bool (or 0/1 int) mask, got dtype "
                    f"{token_mask.dtype}")
  _checks.check_shape(token_mask, tags.shape, "token_mask", "the shape of `tags`")
  token_mask = token_mask.astype(bool)
  static_valid = jnp.asarray(static_valid)
  if static_valid.ndim != 1:
    raise ValueError(f"`static_valid` must have shape [C], got "
                     f"{tuple(static_valid.shape)}")
  num = static_valid.shape[0]
  if constrained:
    if allowed is None or start_allowed is None:
      raise ValueError("constrained=True needs `allowed` and `start_allowed` (from "
                       "bio_transitions)")
    allowed, start_allowed, static_valid = _check_constraints(
        allowed, start_allowed, static_valid, num)
  else:
    static_valid = _check_bool_vector(static_valid, num, "static_valid")
    allowed = start_allowed = None
  tag_values = _checks.concrete_value(tags)
  mask_values = _checks.concrete_value(token_mask)
  if constrained and tag_values is not None and mask_values is not None:
    real = tag_values[mask_values]
    bad = real[(real < 0) | (real >= num)]
    if bad.size:
      raise ValueError(f"`tags` at real tokens must be in [0, {num}), got {int(bad[0])}")
  return _transition_core(tags, token_mask, allowed, start_allowed, static_valid,
                          constrained)


def _check_lengths(lengths, batch: int, length: int) -> jax.Array:
  """``lengths`` as an int array ``[B]``, concrete values checked against ``[0, T]``."""
  lengths = jnp.asarray(lengths)
  _checks.check_integer(lengths, "lengths")
  _checks.check_shape(lengths, (batch,), "lengths", "one length per sentence, [B]")
  values = _checks.concrete_value(lengths)
  if values is not None and values.size and (values.min() < 0 or
                                             values.max() > length):
    raise ValueError(f"`lengths` must be in [0, {length}] (T), got values in "
                     f"[{values.min()}, {values.max()}]")
  return lengths


def _normalised(x, valid, fill):
  """``x - logsumexp(x over valid)`` on valid entries, ``fill`` elsewhere."""
  z = jnp.where(valid, x, fill)
  return jnp.where(valid, z - jax.nn.logsumexp(z, axis=-1, keepdims=True), fill)


def _viterbi_paths(x, lengths, allowed, start_allowed, static_valid, path_valid):
  """Best MEMM path of each sentence among those whose tags are all in
  ``path_valid`` ([B, C]); the softmax of each step is over the tags valid after the
  previous one (``static_valid & allowed``), whatever ``path_valid`` allows. Returns
  int32 ``[B, T]`` paths and their ``[B]`` log-probabilities (a large negative finite
  number where no path exists, 0 for an empty sentence)."""
  fill = large_negative(x.dtype)
  batch, length, num = x.shape
  start_valid = static_valid & start_allowed  # [C]
  trans_valid = static_valid[None, :] & allowed  # [P, C]
  delta = jnp.where(path_valid, _normalised(x[:, 0], start_valid, fill), fill)
  identity = jnp.broadcast_to(jnp.arange(num), (batch, num))

  def forward(delta, inputs):
    xt, t = inputs  # [B, C], scalar
    score = _normalised(xt[:, None, :], trans_valid[None], fill)  # [B, P, C]
    candidate = delta[:, :, None] + jnp.where(path_valid[:, None, :], score, fill)
    active = (t < lengths)[:, None]
    new_delta = jnp.where(active, candidate.max(axis=1), delta)
    # Past the end the state is carried unchanged (identity back-pointers).
    back = jnp.where(active, candidate.argmax(axis=1), identity)
    return new_delta, back

  delta, backs = jax.lax.scan(
      forward, delta, (jnp.swapaxes(x[:, 1:], 0, 1), jnp.arange(1, length)))
  last = delta.argmax(axis=-1)  # [B]

  def backward(tag, back):  # tag at t + 1 -> tag at t
    return jnp.take_along_axis(back, tag[:, None], axis=1)[:, 0], tag

  first, rest = jax.lax.scan(backward, last, backs, reverse=True)
  path = jnp.concatenate([first[None], rest], axis=0).T  # [B, T]
  inside = jnp.arange(length)[None, :] < lengths[:, None]
  # An empty sentence has the empty path, log-probability 0 (padding is never read).
  return (jnp.where(inside, path, 0).astype(jnp.int32),
          jnp.where(lengths > 0, delta.max(axis=-1), 0.0))


@jax.jit
def _viterbi_core(logits, lengths, allowed, start_allowed, static_valid):
  x = logits.astype(_checks.compute_dtype(logits.dtype))
  path_valid = jnp.broadcast_to(static_valid, x.shape[::2])
  return _viterbi_paths(x, lengths, allowed, start_allowed, static_valid,
                        path_valid)[0]


def constrained_decode(logits: ArrayLike, lengths: ArrayLike, *, allowed: ArrayLike,
                       start_allowed: ArrayLike, static_valid: ArrayLike) -> jax.Array:
  r"""The best valid BIO tag sequence of each sentence (Viterbi, MEMM scores).

  For sentence ``b`` with ``L = lengths[b]`` tokens, it returns the tag sequence
  :math:`y_0 \ldots y_{L-1}` that maximises

  .. math::
    \sum_t \Big( x_{t, y_t} - \log \sum_{c \in V(y_{t-1})} e^{x_{t, c}} \Big),
    \qquad y_t \in V(y_{t-1}),

  where ``V(p) = static_valid & allowed[p]`` and ``V(y_{-1}) = static_valid &
  start_allowed``. Each term is the log-probability of a softmax over the tags valid
  after the previous one. It is the quantity that training with
  :func:`transition_valid_mask` and a masked softmax fits, so decoding and training
  agree. Only valid sequences are considered: no ``I-X`` after anything but
  ``B-X``/``I-X``, no statically invalid tag.

  Positions ``t >= lengths[b]`` are 0 in the output (the caller cuts each sentence to
  its length); their logits are never read into the result, so padding may hold
  garbage (even NaN). Jittable, one ``lax.scan`` over ``T``, ``O(B T C^2)``. Logits
  are upcast to at least float32, and invalid tags are filled with the finite
  :func:`jaxloss.losses.masking.large_negative`, not ``-inf``.

  Args:
    logits: floating ``[B, T, C]`` tag logits.
    lengths: int ``[B]``, the number of real tokens of each sentence, in ``[0, T]``.
    allowed: bool ``[C, C]`` from :func:`bio_transitions`.
    start_allowed: bool ``[C]`` from :func:`bio_transitions`.
    static_valid: bool ``[C]``, e.g. :func:`tag_valid_mask`.

  Returns:
    int32 ``[B, T]`` tag ids.

  Raises:
    TypeError: ``logits`` not floating, ``lengths`` not integer, masks not bool.
    ValueError: shapes that disagree; concrete lengths outside ``[0, T]``; concrete
      constraints that allow no first tag (no valid sequence exists).

  Examples:
    >>> names = ["PAD", "O", "B-a", "I-a"]
    >>> allowed, start = bio_transitions(names)
    >>> # Greedy would give O I-a (invalid); the best valid sequence is B-a I-a.
    >>> logits = jnp.array([[[0.0, 2.0, 1.5, 0.0], [0.0, 0.0, 0.0, 3.0]]])
    >>> greedy_decode(logits, tag_valid_mask(names))
    Array([[1, 3]], dtype=int32)
    >>> constrained_decode(logits, jnp.array([2]), allowed=allowed,
    ...                    start_allowed=start, static_valid=tag_valid_mask(names))
    Array([[2, 3]], dtype=int32)

  References:
    Viterbi, "Error bounds for convolutional codes and an asymptotically optimum
    decoding algorithm", IEEE Trans. Inf. Theory 1967; McCallum, Freitag & Pereira,
    "Maximum Entropy Markov Models for Information Extraction and Segmentation", ICML
    2000 (locally normalised transition scores).
  """
  logits = jnp.asarray(logits)
  _checks.check_floating(logits, "logits")
  if logits.ndim != 3:
    raise ValueError(f"`logits` must have shape [B, T, C], got "
                     f"{tuple(logits.shape)}")
  batch, length, num = logits.shape
  lengths = _check_lengths(lengths, batch, length)
  allowed, start_allowed, static_valid = _check_constraints(
      allowed, start_allowed, static_valid, num)
  start_values = _checks.concrete_value(static_valid & start_allowed)
  if start_values is not None and not start_values.any():
    raise ValueError("no tag is valid at the start of a sentence (static_valid & "
                     "start_allowed is all False): no valid sequence exists")
  if length == 0:
    return jnp.zeros((batch, 0), jnp.int32)
  return _viterbi_core(logits, lengths.astype(jnp.int32), allowed, start_allowed,
                       static_valid)


@jax.jit
def _greedy_core(logits, static_valid):
  fill = large_negative(logits.dtype)
  return jnp.where(static_valid, logits, fill).argmax(axis=-1).astype(jnp.int32)


def greedy_decode(logits: ArrayLike, static_valid: ArrayLike) -> jax.Array:
  """The most likely statically valid tag of each token, ignoring transitions.

  Args:
    logits: floating ``[..., C]``.
    static_valid: bool ``[C]`` (e.g. :func:`tag_valid_mask`); invalid tags are never
      chosen (unless every tag is invalid, then tag 0).

  Returns:
    int32 ``logits.shape[:-1]``.

  Raises:
    TypeError: ``logits`` not floating or ``static_valid`` not bool.
    ValueError: ``static_valid`` not ``[C]``.

  Examples:
    >>> greedy_decode(jnp.array([[5.0, 1.0, 2.0]]), jnp.array([False, True, True]))
    Array([2], dtype=int32)
  """
  logits = jnp.asarray(logits)
  _checks.check_floating(logits, "logits")
  _checks.check_logits_rank(logits)
  static_valid = _check_bool_vector(static_valid, logits.shape[-1], "static_valid")
  return _greedy_core(logits, static_valid)


@jax.jit
def _crf_viterbi_core(emissions, mask, transitions, start, end, allowed, start_allowed,
                      static_valid):
  e, trans, a, b, _ = crf._constrained_scores(  # pylint: disable=protected-access
      emissions, transitions, start, end, allowed, start_allowed, static_valid)
  e = jnp.where(mask[..., None], e, 0.0)
  alpha, _, backs = crf._forward_scan(  # pylint: disable=protected-access
      e, mask, trans, a, use_max=True)
  last = (alpha + b[None]).argmax(axis=-1)  # the tag of the last real token

  def backward(tag, back):  # tag at t -> tag at the real token before t
    return jnp.take_along_axis(back, tag[:, None], axis=1)[:, 0], tag

  first, rest = jax.lax.scan(backward, last, backs[1:], reverse=True)
  path = jnp.concatenate([first[None], rest], axis=0).T  # [B, T]
  return jnp.where(mask, path, 0).astype(jnp.int32)


def crf_decode(emissions: ArrayLike, lengths: ArrayLike, *, transitions: ArrayLike,
               start_transitions: Optional[ArrayLike] = None,
               end_transitions: Optional[ArrayLike] = None,
               allowed: Optional[ArrayLike] = None,
               start_allowed: Optional[ArrayLike] = None,
               static_valid: Optional[ArrayLike] = None) -> jax.Array:
  r"""The highest-scoring tag sequence of each sentence under a linear-chain CRF.

  Maximises :math:`s(y) = a_{y_0} + \sum_t e_{t, y_t} + \sum_{t>0} A_{y_{t-1}, y_t} +
  b_{y_{L-1}}` over the sequences the constraint masks allow: the model that
  :func:`jaxloss.losses.crf_sequence_loss` trains, with the same masks and the same
  finite fill. Unlike :func:`constrained_decode` (locally normalised MEMM scores) the
  scores here are not normalised per token; the learned ``transitions`` carry the tag
  dependencies.

  Positions ``t >= lengths[b]`` are 0 in the output and never read. Jittable, one
  ``lax.scan`` over ``T``, ``O(B T C^2)``; scores upcast to at least float32.

  Args:
    emissions: floating ``[B, T, C]`` tag scores.
    lengths: int ``[B]`` real tokens per sentence, in ``[0, T]``.
    transitions: floating ``[C, C]``; ``start_transitions`` / ``end_transitions``:
      floating ``[C]`` or None (0).
    allowed, start_allowed, static_valid: optional bool ``[C, C]``, ``[C]``, ``[C]``
      (e.g. :func:`bio_transitions`, :func:`tag_valid_mask`).

  Returns:
    int32 ``[B, T]`` tag ids.

  Raises:
    TypeError: non-floating scores, ``lengths`` not integer, masks not bool.
    ValueError: shapes that disagree; concrete lengths outside ``[0, T]``.

  Examples:
    >>> names = ["PAD", "O", "B-a", "I-a"]
    >>> allowed, start = bio_transitions(names)
    >>> e = jnp.array([[[0.0, 2.0, 1.5, 0.0], [0.0, 0.0, 0.0, 3.0]]])
    >>> crf_decode(e, jnp.array([2]), transitions=jnp.zeros((4, 4)), allowed=allowed,
    ...            start_allowed=start, static_valid=tag_valid_mask(names))
    Array([[2, 3]], dtype=int32)

  References:
    Lafferty, McCallum & Pereira, ICML 2001; Viterbi, IEEE Trans. Inf. Theory 1967.
  """
  emissions, transitions, start, end = crf._check_scores(  # pylint: disable=protected-access
      emissions, transitions, start_transitions, end_transitions)
  if emissions.ndim != 3:
    raise ValueError(f"`emissions` must have shape [B, T, C], got "
                     f"{tuple(emissions.shape)}")
  batch, length, num = emissions.shape
  lengths = _check_lengths(lengths, batch, length)
  allowed, start_allowed, static_valid = crf._check_masks(  # pylint: disable=protected-access
      num, allowed, start_allowed, static_valid)
  if length == 0:
    return jnp.zeros((batch, 0), jnp.int32)
  mask = jnp.arange(length)[None, :] < lengths[:, None]
  return _crf_viterbi_core(emissions, mask, transitions, start, end, allowed,
                           start_allowed, static_valid)



def __getattr__(name: str):
  """``joint_decode`` and ``label_tag_mask`` live in :mod:`jaxloss.decoding_joint`
  (which builds on this module) and are part of this module's API."""
  if name in ("joint_decode", "label_tag_mask"):
    from jaxloss import decoding_joint  # pylint: disable=g-import-not-at-top
    return getattr(decoding_joint, name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
