"""The samplers (class-mix, epoch permutation and its cached form, length-grouped,
repeat-factor streams) and on-device augmentation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxloss.data.augment import augment_batch, random_words, shift_and_noise
from jaxloss.data.sampler import (cached_epoch_permutation_indices,
                                  epoch_permutation_cache, epoch_permutation_indices,
                                  epoch_permutation_sampler, length_grouped_indices,
                                  length_grouped_sampler, repeat_factors, repeat_indices,
                                  sample_indices, sampling_probabilities, stream_sampler)

LABELS = np.repeat(np.arange(4), [80, 15, 4, 1])
COUNTS = np.bincount(LABELS)


@pytest.mark.parametrize("mix", [0.0, 0.3, 1.0])
def test_class_marginals_match_the_mix(mix):
  p = np.asarray(sampling_probabilities(jnp.asarray(LABELS), jnp.asarray(COUNTS), mix))
  assert p.sum() == pytest.approx(1.0, abs=1e-6)
  class_mass = np.bincount(LABELS, weights=p)
  expected = (1 - mix) * COUNTS / COUNTS.sum() + mix / 4
  np.testing.assert_allclose(class_mass, expected, rtol=1e-5)


def test_draws_follow_the_probabilities_chi_square():
  p = sampling_probabilities(jnp.asarray(LABELS), jnp.asarray(COUNTS), 1.0)
  idx = np.asarray(sample_indices(jax.random.PRNGKey(0), p, 20000))
  observed = np.bincount(LABELS[idx], minlength=4)
  _, pvalue = stats.chisquare(observed, np.full(4, 5000))
  assert pvalue > 1e-3


def test_indices_are_a_pure_function_of_key_and_mix():
  p = sampling_probabilities(jnp.asarray(LABELS), jnp.asarray(COUNTS), 0.5)
  key = jax.random.fold_in(jax.random.PRNGKey(3), 17)
  a = sample_indices(key, p, 64)
  np.testing.assert_array_equal(a, sample_indices(key, p, 64))
  assert not np.array_equal(a, sample_indices(jax.random.fold_in(key, 1), p, 64))


def test_absent_classes_get_no_mass():
  counts = np.array([3, 0, 1])
  labels = np.array([0, 0, 0, 2])
  p = np.asarray(sampling_probabilities(jnp.asarray(labels), jnp.asarray(counts), 1.0))
  np.testing.assert_allclose(p, [1 / 6, 1 / 6, 1 / 6, 1 / 2], rtol=1e-6)


def test_strength_zero_is_identity_and_shift_moves_pixels():
  image = jnp.asarray(np.random.default_rng(0).random((8, 8, 1)), jnp.float32)
  out = shift_and_noise(jax.random.PRNGKey(0), image, 0.0)
  np.testing.assert_array_equal(out, image)
  shifted = [shift_and_noise(jax.random.PRNGKey(k), image, 1.0, noise_std=0.0)
             for k in range(20)]
  assert any(not np.array_equal(s, image) for s in shifted)
  for s in shifted:  # a shift, not a distortion: the interior is a translated copy
    assert any(np.array_equal(s[1:-1, 1:-1], image[1 + dy:7 + dy, 1 + dx:7 + dx])
               for dy in (-1, 0, 1) for dx in (-1, 0, 1))


def test_batch_augmentation_depends_on_global_position_only():
  images = jnp.asarray(np.random.default_rng(1).random((8, 8, 8, 1)), jnp.float32)
  key = jax.random.PRNGKey(2)
  whole = augment_batch(key, images, jnp.arange(8), 1.0)
  halves = jnp.concatenate([augment_batch(key, images[:4], jnp.arange(4), 1.0),
                            augment_batch(key, images[4:], jnp.arange(4, 8), 1.0)])
  np.testing.assert_array_equal(whole, halves)


def test_batch_example_at_position_zero_is_the_single_image_function():
  image = jnp.asarray(np.random.default_rng(3).random((8, 8, 1)), jnp.float32)
  key = jax.random.PRNGKey(4)
  batch = augment_batch(key, jnp.stack([image, image]), jnp.array([0, 1]), 0.7)
  np.testing.assert_array_equal(batch[0], shift_and_noise(key, image, 0.7))
  assert not np.array_equal(batch[0], batch[1])


def test_random_words_are_uniform_and_independent_of_the_batch_split():
  key = jax.random.PRNGKey(6)
  words = np.asarray(random_words(key, jnp.arange(4000), 5))
  assert words.shape == (4000, 5) and words.dtype == np.uint32
  np.testing.assert_array_equal(words[1000:2000],
                                random_words(key, jnp.arange(1000, 2000), 5))
  # Every bit is a fair coin: 20,000 words, so a bit's ones count has sd 71.
  ones = ((words.reshape(-1, 1) >> np.arange(32, dtype=np.uint32)) & 1).sum(0).astype(np.int64)
  assert np.all(np.abs(ones - 10_000) < 5 * 71)
  # Adjacent words and adjacent positions are uncorrelated (sd of r: 1/sqrt(n)).
  u = words.astype(np.float64) / 2.0 ** 32
  assert abs(np.corrcoef(u[:, 0], u[:, 1])[0, 1]) < 5 / np.sqrt(4000)
  assert abs(np.corrcoef(u[:-1, 4], u[1:, 0])[0, 1]) < 5 / np.sqrt(4000)


def test_shift_is_uniform_over_the_nine_offsets_and_noise_has_the_std():
  n = 1800
  image = jnp.zeros((8, 8, 1), jnp.float32).at[3, 4, 0].set(1.0)
  out = np.asarray(augment_batch(jax.random.PRNGKey(7), jnp.broadcast_to(image, (n, 8, 8, 1)),
                                 jnp.arange(n), 1.0, noise_std=0.0))
  rows, cols = np.nonzero(out[..., 0] == 1.0)[1:]
  assert rows.size == n  # one lit pixel each: a shift by at most 1 keeps it inside
  cells = np.bincount((rows - 2) * 3 + (cols - 3), minlength=9)
  assert stats.chisquare(cells).pvalue > 1e-4  # 200 expected in each of the 9 cells
  grey = jnp.full((n, 8, 8, 1), 0.5, jnp.float32)
  noisy = np.asarray(augment_batch(jax.random.PRNGKey(8), grey, jnp.arange(n), 1.0,
                                   max_shift=0, noise_std=0.1)) - 0.5
  # 115,200 draws of N(0, 0.1²) (clipping at ±5 sd never bites): the sample sd has
  # relative sd 1/sqrt(2n) = 0.2 %, the mean sd 0.1/sqrt(n) = 3e-4.
  assert abs(noisy.std() - 0.1) < 0.005 and abs(noisy.mean()) < 0.0015
  assert abs(stats.kurtosis(noisy.ravel())) < 0.1  # Gaussian, not uniform (−1.2)
  half = np.asarray(augment_batch(jax.random.PRNGKey(9), jnp.broadcast_to(image, (n, 8, 8, 1)),
                                  jnp.arange(n), 0.5, noise_std=0.0))
  # Strength 0.5: shifted with probability 1/2 (then the identity offset 1 time in 9).
  unmoved = np.sum(half[:, 3, 4, 0] == 1.0)
  assert abs(unmoved - n * (0.5 + 0.5 / 9)) < 5 * np.sqrt(n * 0.25)


# --- Length-grouped batches ---------------------------------------------------------------

def _epoch(key, epoch, lengths, b, g):
  spe = -(-len(lengths) // b)
  return [np.asarray(length_grouped_indices(key, epoch * spe + s, lengths, b, g))
          for s in range(spe)]


def test_length_grouped_epoch_sees_every_example_and_fills_the_last_batch():
  lengths = np.random.default_rng(0).integers(1, 200, size=103)
  key = jax.random.PRNGKey(3)
  for epoch in range(2):
    batches = _epoch(key, epoch, lengths, 8, 4)
    drawn = np.concatenate(batches)
    assert len(batches) == 13 and len(drawn) == 104
    # Each of the 103 examples at least once, one repeated to fill batch 13.
    counts = np.bincount(drawn, minlength=103)
    assert counts.min() == 1 and counts.sum() == 104


def test_length_grouped_batches_are_sorted_within_groups():
  """Within a group of g batches the examples are in decreasing length, so each batch
  spans a contiguous length range of its group: the batch's longest is at most the
  shortest of the group's previous batch."""
  lengths = np.random.default_rng(1).integers(1, 500, size=4000)
  b, g = 32, 10
  key = jax.random.PRNGKey(0)
  batches = _epoch(key, 0, lengths, b, g)
  # Rebuild the sorted epoch from the sampler's own definition and compare.
  perm = np.asarray(jax.random.permutation(jax.random.fold_in(key, 0), len(lengths)))
  spe = len(batches)
  filled = np.concatenate([perm, perm[:spe * b - len(lengths)]])
  order = []
  for start in range(0, len(filled), g * b):
    group = filled[start:start + g * b]
    order.extend(group[np.argsort(-lengths[group], kind="stable")])
  order = np.asarray(order).reshape(spe, b)
  visit = np.asarray(jax.random.permutation(jax.random.fold_in(key, 1), spe))
  for s, batch in enumerate(batches):
    np.testing.assert_array_equal(batch, order[visit[s]])
  # Padding to the batch's longest wastes far less than for random batches.
  grouped = np.mean([lengths[x].max() - lengths[x].mean() for x in batches])
  rng = np.random.default_rng(2)
  shuffled = np.mean([lengths[rng.choice(4000, b, replace=False)].max()
                      - lengths[rng.choice(4000, b, replace=False)].mean()
                      for _ in range(200)])
  assert grouped < 0.2 * shuffled


def test_length_grouped_batch_is_a_pure_function_of_key_and_step():
  lengths = np.arange(50)
  key = jax.random.PRNGKey(5)
  a = length_grouped_indices(key, 7, lengths, 4)
  b = jax.jit(length_grouped_indices, static_argnums=(3, 4))(key, 7, lengths, 4, 50)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, length_grouped_indices(key, 8, lengths, 4))
  assert not np.array_equal(a, length_grouped_indices(jax.random.PRNGKey(6), 7,
                                                      lengths, 4))


def test_length_grouped_sampler_shares_one_order_when_given_a_key():
  lengths = np.arange(1, 41)
  shared = length_grouped_sampler(lengths, 8, key=jax.random.PRNGKey(0))
  own = length_grouped_sampler(lengths, 8)
  r0, r1 = jax.random.PRNGKey(1), jax.random.PRNGKey(2)
  np.testing.assert_array_equal(shared(r0, 3, None, None), shared(r1, 3, None, None))
  assert not np.array_equal(own(r0, 3, None, None), own(r1, 3, None, None))


@pytest.mark.parametrize("b, g, match", [(0, 5, "batch_size"), (11, 5, "batch_size"),
                                         (2, 0, "group_batches")])
def test_length_grouped_bad_arguments(b, g, match):
  with pytest.raises(ValueError, match=match):
    length_grouped_sampler(np.arange(10), b, group_batches=g)


def test_repeat_factors_follow_lvis_on_real_visfd_labels():
  """Repeat-factor sampling on the UIT-ViSFD training labels' 30 ASPECT#polarity
  categories, against a direct loop over the reviews."""
  import os  # pylint: disable=g-import-not-at-top
  from experiments.absa.recipe import train_stream  # pylint: disable=g-import-not-at-top
  from jaxloss.data import uit_visfd  # pylint: disable=g-import-not-at-top
  path = os.path.join(uit_visfd.default_manual_dir(), "Train.csv")
  if not os.path.exists(path):
    pytest.skip(f"{path} is absent (../shared/data)")
  labels = np.stack([row["labels"] for row in uit_visfd.read_csv(path)])
  t = 0.03
  cats = [(a, c) for a in range(labels.shape[1]) for c in (1, 2, 3)]
  freq = {ac: np.mean(labels[:, ac[0]] == ac[1]) for ac in cats}
  expected = []
  for row in labels:
    r = max([1.0] + [max(1.0, np.sqrt(t / freq[(a, c)])) for a, c in cats
                     if row[a] == c])
    expected.append(max(1, int(np.rint(r))))
  stream = train_stream(labels, t)
  np.testing.assert_array_equal(np.bincount(stream, minlength=len(labels)), expected)
  # STORAGE (column 9) reviews: 91 of 7,786, each repeated 2-5 times; most reviews once.
  storage = labels[:, 9] > 0
  counts = np.bincount(stream, minlength=len(labels))
  assert storage.sum() == 91 and counts[storage].min() >= 2 and counts[storage].max() == 5
  assert np.mean(counts == 1) > 0.9
  np.testing.assert_array_equal(train_stream(labels, None), np.arange(len(labels)))
  with pytest.raises(ValueError, match="threshold"):
    repeat_factors(labels[:, :3] > 0, 0.0)


def test_stream_sampler_draws_through_the_stream():
  stream = repeat_indices([1.0, 3.0, 1.0])  # [0, 1, 1, 1, 2]
  sampler = stream_sampler(epoch_permutation_sampler(len(stream), 5), stream)
  drawn = np.asarray(sampler(jax.random.PRNGKey(0), 0, None, None))
  assert sorted(drawn.tolist()) == [0, 1, 1, 1, 2]


@pytest.mark.parametrize("n,b,start", [(23, 5, 0), (20, 5, 0), (23, 5, 13), (7, 7, 3)])
def test_cached_permutation_draws_the_pure_batches_and_sorts_once_an_epoch(n, b, start):
  """The cached form (the train step's) against the pure one, jitted as the step is,
  from an empty cache at step ``start`` (a resume) for three epochs: the same batches,
  and after each step the cache holds the permutation of the epoch its batch ended in
  (so each epoch's is computed once: by the batch that straddles into it, or by its
  first batch)."""
  key = jax.random.PRNGKey(3)
  cached = jax.jit(cached_epoch_permutation_indices, static_argnums=(2, 3))
  cache = epoch_permutation_cache(n)
  for step in range(start, start + 3 * -(-n // b)):
    batch, cache = cached(key, step, n, b, cache)
    np.testing.assert_array_equal(batch, epoch_permutation_indices(key, step, n, b))
    last_epoch = ((step + 1) * b - 1) // n
    assert int(cache["epoch"]) == last_epoch
    np.testing.assert_array_equal(
        cache["permutation"],
        jax.random.permutation(jax.random.fold_in(key, last_epoch), n))


def test_cached_permutation_ignores_a_stale_cache_and_checks_its_shape():
  key = jax.random.PRNGKey(0)
  stale = {"epoch": jnp.int32(2), "permutation": jnp.arange(10, dtype=jnp.int32)}
  batch, _ = cached_epoch_permutation_indices(key, 1, 10, 4, stale)  # epoch 0
  np.testing.assert_array_equal(batch, epoch_permutation_indices(key, 1, 10, 4))
  with pytest.raises(ValueError, match=r"cache\['permutation'\] must have shape \(10,\)"):
    cached_epoch_permutation_indices(key, 1, 10, 4, epoch_permutation_cache(9))


def test_sampler_cached_forms_match_their_pure_forms_also_under_vmap():
  """EpochPermutationSampler and a stream over it (ABSA's repeat-factor sampling), and
  an ensemble's vmapped members, each with its own key."""
  stream = repeat_indices([1.0, 3.0, 1.0, 2.0, 1.0])  # 8 positions
  for sampler in (epoch_permutation_sampler(8, 3),
                  stream_sampler(epoch_permutation_sampler(len(stream), 3), stream)):
    cache = sampler.init_cache()
    keys = jnp.stack([jax.random.PRNGKey(1), jax.random.PRNGKey(2)])
    caches = jax.tree.map(lambda x: jnp.stack([x, x]), cache)
    for step in range(7):
      batch, cache = sampler.cached(keys[0], step, None, None, cache)
      np.testing.assert_array_equal(batch, sampler(keys[0], step, None, None))
      both, caches = jax.vmap(sampler.cached, in_axes=(0, None, None, None, 0))(
          keys, step, None, None, caches)
      for k in range(2):
        np.testing.assert_array_equal(both[k], sampler(keys[k], step, None, None))
  assert not hasattr(stream_sampler(lambda *a: jnp.zeros(3, jnp.int32), stream),
                     "cached")
