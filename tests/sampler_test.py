"""The class-mix sampler and on-device augmentation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxloss.data.augment import augment_batch, shift_and_noise
from jaxloss.data.sampler import sample_indices, sampling_probabilities

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
