"""Class-mix samplers as pure functions of (key, step, mix): no iterator state.

The sampler knob of a curriculum is a *mixing weight* ``m`` between the data
distribution (``m = 0``: every example equally likely) and the class-balanced one
(``m = 1``: every present class equally likely, then uniform within the class), so a
stage switch changes a value, not a branch. Indices are drawn with replacement, as
PyTorch's ``WeightedRandomSampler`` (the usual class-balanced sampler) does. Because the
indices depend only on the key (the run's key folded with the step) and ``m``, a resumed
run draws exactly the batches the uninterrupted run would have drawn, and every device
(or process) can compute the same global batch and take its own slice.

The epoch-wise samplers here follow the same rule. :class:`EpochPermutationSampler` also
has a cached form that the train step uses to compute an epoch's permutation once, not at
every step: the cache changes what a step costs, never which batch it draws.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def sampling_probabilities(labels: jax.Array, class_counts: jax.Array,
                           mix: jax.Array) -> jax.Array:
  """Per-example sampling probabilities for a data/class-balanced mix.

  p_i = (1 − m) / N + m / (C₊ · n_{y_i}), with N examples and C₊ classes present.

  Args:
    labels: int ``[N]`` labels of the training set.
    class_counts: ``[C]`` examples per class in ``labels`` (``bincount``).
    mix: scalar in [0, 1] (may be traced): 0 = data distribution, 1 = class-balanced.

  Returns:
    float32 ``[N]`` probabilities summing to 1.

  Examples:
    >>> p = sampling_probabilities(jnp.array([0, 0, 0, 1]), jnp.array([3, 1]), 1.0)
    >>> print(jnp.round(p, 4))
    [0.1667 0.1667 0.1667 0.5   ]
  """
  counts = jnp.asarray(class_counts, jnp.float32)
  n = jnp.sum(counts)
  present = jnp.sum(counts > 0)
  per_class = jnp.where(counts > 0, 1.0 / (present * jnp.maximum(counts, 1.0)), 0.0)
  mix = jnp.asarray(mix, jnp.float32)
  return (1.0 - mix) / n + mix * per_class[labels]


def sample_indices(key: jax.Array, probabilities: jax.Array,
                   batch_size: int) -> jax.Array:
  """Draws ``batch_size`` example indices with replacement (int32 ``[batch_size]``).

  Args:
    key: PRNG key; pass the run key folded with the step.
    probabilities: ``[N]`` from :func:`sampling_probabilities`.
    batch_size: the *global* batch size (static).
  """
  n = probabilities.shape[0]
  return jax.random.choice(key, n, (batch_size,), replace=True,
                           p=probabilities).astype(jnp.int32)


def _epoch_positions(step, num_examples: int, batch_size: int):
  """``(first_epoch, within, in_first)`` of step ``step``'s batch in the stream of one
  permutation of ``[0, num_examples)`` per epoch: the epoch its first position falls in
  (int32 scalar), each position's index within its epoch's permutation (int32
  ``[batch_size]``), and whether it is in that first epoch (bool ``[batch_size]``).

  Raises:
    ValueError: ``batch_size`` < 1 or > ``num_examples``.
  """
  if not 1 <= batch_size <= num_examples:
    raise ValueError(f"batch_size must be in [1, num_examples={num_examples}], got "
                     f"{batch_size}")
  start = jnp.asarray(step, jnp.int32) * batch_size
  positions = start + jnp.arange(batch_size, dtype=jnp.int32)
  first_epoch = start // num_examples
  return first_epoch, positions % num_examples, positions // num_examples == first_epoch


def epoch_permutation_indices(key: jax.Array, step: jax.Array, num_examples: int,
                              batch_size: int) -> jax.Array:
  """The ``step``-th global batch of an epoch-wise shuffled pass over the data.

  The training stream is the concatenation of one random permutation of
  ``[0, num_examples)`` per epoch (permutation ``e`` keyed by ``fold_in(key, e)``),
  cut into consecutive batches of ``batch_size``; a batch that straddles two epochs
  takes the tail of one permutation and the head of the next. Every example is seen
  once per epoch (sampling *without* replacement, as PyTorch's ``shuffle=True``
  loader), and the batch is a pure function of ``(key, step)``, so a resumed run
  draws exactly the batches the uninterrupted one would have.

  Args:
    key: PRNG key of the run (not folded with the step).
    step: int scalar (may be traced).
    num_examples: N, the training-set size (static, >= ``batch_size``).
    batch_size: the *global* batch size (static).

  Returns:
    int32 ``[batch_size]`` example indices.

  Raises:
    ValueError: ``batch_size`` < 1 or > ``num_examples``.

  Examples:
    >>> key = jax.random.PRNGKey(0)
    >>> epoch = jnp.concatenate([epoch_permutation_indices(key, s, 6, 2)
    ...                          for s in range(3)])
    >>> sorted(epoch.tolist())
    [0, 1, 2, 3, 4, 5]
  """
  first_epoch, within, in_first = _epoch_positions(step, num_examples, batch_size)
  perm_a = jax.random.permutation(jax.random.fold_in(key, first_epoch), num_examples)

  def straddling(perm_a):
    perm_b = jax.random.permutation(jax.random.fold_in(key, first_epoch + 1),
                                    num_examples)
    return jnp.where(in_first, perm_a[within], perm_b[within])

  # The next epoch's permutation (two sorts of N keys) only for the one batch an epoch
  # that needs it: under jit a cond runs one branch (under vmap, both, as before).
  return jax.lax.cond(in_first[-1], lambda perm_a: perm_a[within], straddling,
                      perm_a).astype(jnp.int32)


def repeat_factors(categories, threshold: float) -> np.ndarray:
  """Repeat-factor sampling's per-example factors (Gupta et al., *LVIS*, CVPR 2019):
  ``r_c = max(1, sqrt(t / f_c))`` for each category ``c`` present in a fraction
  ``f_c`` of the examples, and ``r_i = max(1, max_{c in i} r_c)``.

  For multi-label data whose rare labels share examples with common ones (a review
  with a STORAGE opinion also rates the BATTERY), so that no single-label class mix
  applies.

  Args:
    categories: bool ``[N, K]``, example ``i`` has category ``k`` (e.g. each
      ``ASPECT#polarity`` a review carries).
    threshold: ``t`` in (0, 1]: categories rarer than this are repeated.

  Returns:
    float64 ``[N]`` factors >= 1.

  Raises:
    ValueError: ``categories`` not 2-D, or ``threshold`` outside (0, 1].

  Examples:
    >>> cats = np.array([[1, 0], [1, 0], [1, 0], [1, 1]], bool)  # f = 1, 0.25
    >>> repeat_factors(cats, 0.5).round(3).tolist()
    [1.0, 1.0, 1.0, 1.414]
  """
  cats = np.asarray(categories, bool)
  if cats.ndim != 2:
    raise ValueError(f"categories must be [N, K], got shape {cats.shape}")
  if not 0 < threshold <= 1:
    raise ValueError(f"threshold must be in (0, 1], got {threshold}")
  freq = cats.mean(axis=0)
  per_category = np.where(freq > 0, np.sqrt(threshold / np.maximum(freq, 1e-12)), 1.0)
  per_category = np.maximum(per_category, 1.0)
  return np.max(np.where(cats, per_category[None], 1.0), axis=1, initial=1.0)


def repeat_indices(factors) -> np.ndarray:
  """The training stream's example indices with example ``i`` repeated
  ``round(factors[i])`` times (at least once), in order: int32 ``[M]``.

  LVIS's sampler rounds stochastically each epoch; rounding once keeps the stream a
  fixed array, so the samplers below stay pure functions of ``(key, step)`` with
  static shapes (a resumed run draws the same batches).

  >>> repeat_indices([1.0, 2.4, 2.6]).tolist()
  [0, 1, 1, 2, 2, 2]
  """
  copies = np.maximum(np.rint(np.asarray(factors, np.float64)), 1).astype(np.int64)
  return np.repeat(np.arange(len(copies)), copies).astype(np.int32)


def epoch_permutation_cache(num_examples: int) -> dict:
  """An empty cache for :func:`cached_epoch_permutation_indices`: ``{"epoch": int32
  -1, "permutation": int32 [num_examples]}`` (no epoch's permutation yet).

  >>> cache = epoch_permutation_cache(4)
  >>> int(cache["epoch"]), cache["permutation"].shape
  (-1, (4,))
  """
  return {"epoch": jnp.int32(-1),
          "permutation": jnp.zeros([num_examples], jnp.int32)}


def cached_epoch_permutation_indices(key: jax.Array, step: jax.Array, num_examples: int,
                                     batch_size: int, cache: dict):
  """:func:`epoch_permutation_indices` with the current epoch's permutation carried
  from step to step, so that it is computed once an epoch instead of at every step.

  The batch is the same as :func:`epoch_permutation_indices`'s for any ``cache``: a
  cache that holds another epoch's permutation (or none, as after a restart) is
  recomputed. Drawing a permutation of N examples is two sorts of N random keys (for
  SASRec's N = 31,013, 8 of its step's 132 ms at one thread; issue 22); under
  ``jax.jit`` a ``lax.cond`` runs only the branch taken, so the steps that find their
  epoch in the cache sort nothing. The batch that straddles two epochs computes the
  next epoch's permutation and leaves that in the cache. (Under ``jax.vmap``, as for an
  ensemble's members, the cond computes both branches: the same indices, no saving.)

  Args:
    key, step, num_examples, batch_size: as :func:`epoch_permutation_indices`.
    cache: ``{"epoch": int32 scalar, "permutation": int32 [num_examples]}``, from
      :func:`epoch_permutation_cache` or a previous call.

  Returns:
    ``(indices, cache)``: int32 ``[batch_size]`` example indices, and the cache to pass
    to the next step.

  Raises:
    ValueError: ``batch_size`` < 1 or > ``num_examples``, or a ``cache`` of another
      shape.

  Examples:
    >>> key, cache = jax.random.PRNGKey(0), epoch_permutation_cache(6)
    >>> for s in range(5):
    ...   batch, cache = cached_epoch_permutation_indices(key, s, 6, 4, cache)
    ...   assert (batch == epoch_permutation_indices(key, s, 6, 4)).all()
    >>> int(cache["epoch"])
    3
  """
  first_epoch, within, in_first = _epoch_positions(step, num_examples, batch_size)
  if jnp.shape(cache["permutation"]) != (num_examples,):
    raise ValueError(f"cache['permutation'] must have shape ({num_examples},), got "
                     f"{jnp.shape(cache['permutation'])}")

  def permutation(epoch):
    return jax.random.permutation(jax.random.fold_in(key, epoch),
                                  num_examples).astype(jnp.int32)

  perm_a = jax.lax.cond(cache["epoch"] == first_epoch,
                        lambda: jnp.asarray(cache["permutation"], jnp.int32),
                        lambda: permutation(first_epoch))

  def inside(perm_a):
    return perm_a[within], {"epoch": first_epoch, "permutation": perm_a}

  def straddling(perm_a):
    perm_b = permutation(first_epoch + 1)
    return (jnp.where(in_first, perm_a[within], perm_b[within]),
            {"epoch": first_epoch + 1, "permutation": perm_b})

  return jax.lax.cond(in_first[-1], inside, straddling, perm_a)


class EpochPermutationSampler:
  """A recipe's ``sampler`` (``(rng, step, data, knobs) -> [batch_size]`` indices, see
  :class:`jaxloss.training.Recipe`): :func:`epoch_permutation_indices` keyed by the
  run's key folded with 1 (a stream of its own, apart from the step's other draws).

  Called as a function it is a pure function of the step. It also has a cached form
  that the train step uses when the train state carries ``sampler_cache``
  (:func:`jaxloss.training.loop.with_sampler_cache`): ``init_cache()`` and
  ``cached(rng, step, data, knobs, cache) -> (indices, cache)``, the same indices with
  the epoch's permutation computed once an epoch
  (:func:`cached_epoch_permutation_indices`).
  """

  def __init__(self, num_examples: int, batch_size: int):
    _epoch_positions(0, num_examples, batch_size)  # checks batch_size
    self.num_examples, self.batch_size = num_examples, batch_size

  def __call__(self, rng, step, data, knobs):
    del data, knobs
    return epoch_permutation_indices(jax.random.fold_in(rng, 1), step,
                                     self.num_examples, self.batch_size)

  def init_cache(self) -> dict:
    return epoch_permutation_cache(self.num_examples)

  def cached(self, rng, step, data, knobs, cache):
    del data, knobs
    return cached_epoch_permutation_indices(jax.random.fold_in(rng, 1), step,
                                            self.num_examples, self.batch_size, cache)


def epoch_permutation_sampler(num_examples: int,
                              batch_size: int) -> EpochPermutationSampler:
  """A recipe's ``sampler`` (``(rng, step, data, knobs) -> [batch_size]`` indices, see
  :class:`jaxloss.training.Recipe`): :func:`epoch_permutation_indices` keyed by the
  run's key folded with 1 (a stream of its own, apart from the step's other draws),
  with a cached form for the train step (:class:`EpochPermutationSampler`).

  Returns:
    ``sampler(rng, step, data, knobs) -> int32 [batch_size]``; ``data`` and ``knobs``
    are unused.

  Raises:
    ValueError: ``batch_size`` < 1 or > ``num_examples``.

  Examples:
    >>> sampler = epoch_permutation_sampler(6, 2)
    >>> key = jax.random.PRNGKey(0)
    >>> sorted(int(i) for s in range(3) for i in sampler(key, s, None, None))
    [0, 1, 2, 3, 4, 5]
  """
  return EpochPermutationSampler(num_examples, batch_size)


def length_grouped_indices(key: jax.Array, step: jax.Array, lengths: jax.Array,
                           batch_size: int, group_batches: int = 50) -> jax.Array:
  """The ``step``-th global batch of an epoch-wise pass in which each batch holds
  examples of similar length (Hugging Face's ``group_by_length``).

  Epoch ``e`` (``ceil(N / B)`` steps) shuffles the data (permutation keyed by
  ``fold_in(key, 2e)``, the first ``ceil(N/B)·B − N`` examples repeated to fill the
  last batch), cuts it into groups of ``group_batches`` batches, sorts each group by
  length (longest first), cuts it into batches and visits the epoch's batches in a
  random order (``fold_in(key, 2e + 1)``). Every example is seen at least once an
  epoch; a batch pads to a width close to its own examples' lengths instead of the
  longest of a random draw (on UIT-ViSFD reviews with e5's tokenizer: the bucket of a
  random batch of 32 is mostly 128 sub-words, of a grouped one mostly 64). The batch
  is a pure function of ``(key, step)``: a resumed run draws what the uninterrupted
  one would have.

  Args:
    key: PRNG key of the run (not folded with the step).
    step: int scalar (may be traced).
    lengths: int ``[N]`` example lengths (static values; any unit).
    batch_size: B, the *global* batch size (static, ``1 <= B <= N``).
    group_batches: batches per sorted group (static, >= 1); 1 is a plain shuffle.

  Returns:
    int32 ``[batch_size]`` example indices.

  Raises:
    ValueError: ``batch_size`` or ``group_batches`` out of range.

  Examples:
    >>> lengths = jnp.array([5, 1, 4, 2, 3, 6])
    >>> key = jax.random.PRNGKey(0)
    >>> batches = [lengths[length_grouped_indices(key, s, lengths, 2, 3)].tolist()
    ...            for s in range(3)]
    >>> sorted(sorted(b) for b in batches)
    [[1, 2], [3, 4], [5, 6]]
  """
  lengths = jnp.asarray(lengths)
  n = lengths.shape[0]
  if not 1 <= batch_size <= n:
    raise ValueError(f"batch_size must be in [1, num_examples={n}], got {batch_size}")
  if group_batches < 1:
    raise ValueError(f"group_batches must be >= 1, got {group_batches}")
  steps_per_epoch = -(-n // batch_size)
  step = jnp.asarray(step, jnp.int32)
  epoch, within = step // steps_per_epoch, step % steps_per_epoch
  perm = jax.random.permutation(jax.random.fold_in(key, 2 * epoch), n)
  filled = jnp.concatenate([perm, perm[:steps_per_epoch * batch_size - n]])
  group = jnp.arange(filled.shape[0]) // (group_batches * batch_size)
  longest = jnp.max(lengths).astype(jnp.int32) + 1
  # Sort by group, then by length descending; the stable sort keeps the shuffle's
  # order among equal lengths.
  sort_key = group * longest + (longest - 1 - lengths[filled].astype(jnp.int32))
  ordered = filled[jnp.argsort(sort_key, stable=True)]
  batch = jax.random.permutation(jax.random.fold_in(key, 2 * epoch + 1),
                                 steps_per_epoch)[within]
  return jax.lax.dynamic_slice(ordered, (batch * batch_size,),
                               (batch_size,)).astype(jnp.int32)


def stream_sampler(sampler, stream):
  """``sampler`` drawing positions in ``stream``, mapped to the example indices it holds.

  Used with :func:`repeat_indices` for repeat-factor sampling (Gupta et al., LVIS 2019):
  build ``sampler`` over ``len(stream)`` examples (its lengths, if length-grouped, taken
  as ``lengths[stream]``), and the draws come back as training-set indices.

  Args:
    sampler: ``(rng, step, data, knobs) -> int [B]`` positions in ``[0, len(stream))``.
    stream: int ``[M]`` training-set indices, repeats included.

  Returns:
    ``(rng, step, data, knobs) -> int32 [B]`` training-set indices.

  Examples:
    >>> stream = repeat_indices([1.0, 3.0])  # [0, 1, 1, 1]
    >>> draw = stream_sampler(epoch_permutation_sampler(4, 4), stream)
    >>> sorted(draw(jax.random.PRNGKey(0), 0, None, None).tolist())
    [0, 1, 1, 1]
  """
  return _StreamSampler(sampler, jnp.asarray(stream, jnp.int32))


class _StreamSampler:
  """:func:`stream_sampler`'s sampler; it has the cached form of the sampler it maps
  (``init_cache`` / ``cached``) when that one has it."""

  def __init__(self, sampler, stream):
    self.sampler, self.stream = sampler, stream
    if hasattr(sampler, "cached"):
      self.init_cache = sampler.init_cache
      self.cached = self._cached

  def __call__(self, rng, step, data, knobs):
    return self.stream[self.sampler(rng, step, data, knobs)]

  def _cached(self, rng, step, data, knobs, cache):
    positions, cache = self.sampler.cached(rng, step, data, knobs, cache)
    return self.stream[positions], cache


def length_grouped_sampler(lengths, batch_size: int, *, group_batches: int = 50,
                           key: jax.Array | None = None):
  """A recipe's ``sampler`` drawing :func:`length_grouped_indices` batches.

  Args:
    lengths: int ``[N]`` training-example lengths (e.g. sub-words).
    batch_size: the global batch size.
    group_batches: batches per sorted group.
    key: None: the run's key folded with 1, so each ensemble member draws its own
      batches. A key: every member draws the same batches in the same order (their
      sequence widths then coincide, so a vmapped ensemble step pads no member to
      another's longer batch).

  Returns:
    ``sampler(rng, step, data, knobs) -> int32 [batch_size]``.

  Raises:
    ValueError: as :func:`length_grouped_indices`.
  """
  lengths = jnp.asarray(lengths, jnp.int32)
  length_grouped_indices(jax.random.PRNGKey(0), 0, lengths, batch_size, group_batches)

  def sampler(rng, step, data, knobs):
    del data, knobs
    k = jax.random.fold_in(rng, 1) if key is None else key
    return length_grouped_indices(k, step, lengths, batch_size, group_batches)
  return sampler
