"""On-device image augmentation whose strength is a curriculum knob."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def shift_and_noise(key: jax.Array, image: jax.Array, strength: jax.Array, *,
                    max_shift: int = 1, noise_std: float = 0.1) -> jax.Array:
  """Random translation and Gaussian noise for one small image (e.g. 8×8 digits).

  With probability ``strength`` the image is shifted by up to ``max_shift`` pixels on
  each axis (zero fill, as padding-and-cropping does); then noise with standard
  deviation ``strength · noise_std`` is added and pixels are clipped to [0, 1].
  ``strength = 0`` returns the image unchanged, so the knob can switch augmentation
  off without a branch.

  Args:
    key: PRNG key for this example.
    image: float ``[H, W, C]`` in [0, 1].
    strength: scalar in [0, 1] (may be traced).
    max_shift: largest shift in pixels (static).
    noise_std: noise standard deviation at strength 1.

  Returns:
    float ``[H, W, C]``, same dtype as ``image``.
  """
  k_apply, k_shift, k_noise = jax.random.split(key, 3)
  h, w, _ = image.shape
  padded = jnp.pad(image, ((max_shift, max_shift), (max_shift, max_shift), (0, 0)))
  offset = jax.random.randint(k_shift, (2,), 0, 2 * max_shift + 1)
  apply = jax.random.uniform(k_apply) < strength
  offset = jnp.where(apply, offset, max_shift)  # max_shift = the identity crop
  shifted = jax.lax.dynamic_slice(padded, (offset[0], offset[1], 0), image.shape)
  noise = jax.random.normal(k_noise, image.shape, image.dtype)
  out = shifted + (strength * noise_std) * noise
  return jnp.clip(out, 0.0, 1.0).astype(image.dtype)


def augment_batch(key: jax.Array, images: jax.Array, positions: jax.Array,
                  strength: jax.Array, **kwargs) -> jax.Array:
  """Applies :func:`shift_and_noise` to a batch, keyed by each example's *global*
  position in the step's batch, so the result does not depend on how the batch is
  split across devices.

  Args:
    key: the step's augmentation key.
    images: float ``[b, H, W, C]`` (this device's slice).
    positions: int ``[b]`` positions of these examples in the global batch.
    strength: scalar knob value.
  """
  keys = jax.vmap(lambda p: jax.random.fold_in(key, p))(positions)
  return jax.vmap(lambda k, x: shift_and_noise(k, x, strength, **kwargs))(keys, images)
