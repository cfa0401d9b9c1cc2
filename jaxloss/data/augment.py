"""On-device image augmentation whose strength is a curriculum knob.

* :func:`shift_and_noise` for the 8×8 digits: a one-pixel shift and Gaussian noise.
* :func:`pad_crop_flip` and :func:`cutout` for CIFAR: the standard augmentation of He
  et al. (2016) (4-pixel zero padding, a random 32×32 crop, a horizontal flip with
  probability 1/2) and Cutout (DeVries & Taylor, 2017) as the "strong" augmentation
  whose probability is the knob (:func:`cifar_augment`).

Every batch function keys each example by its *global* position in the step's batch,
so the result does not depend on how the batch is split across devices.
"""

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


def _per_example(fn, key, images, positions, strength, **kwargs):
  keys = jax.vmap(lambda p: jax.random.fold_in(key, p))(positions)
  return jax.vmap(lambda k, x: fn(k, x, strength, **kwargs))(keys, images)


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
  return _per_example(shift_and_noise, key, images, positions, strength, **kwargs)


def pad_crop_flip(key: jax.Array, image: jax.Array, *, padding: int = 4) -> jax.Array:
  """The standard CIFAR augmentation of one image: zero-pad by ``padding`` pixels,
  crop ``H × W`` at a uniformly random offset, flip left-right with probability 1/2
  (He et al., CVPR 2016; torchvision's ``RandomCrop(32, padding=4)`` +
  ``RandomHorizontalFlip()``).

  Args:
    key: PRNG key for this example.
    image: ``[H, W, C]``, any dtype (uint8 pixels are kept as they are).
    padding: pixels of zero padding on each side (static, >= 0).

  Returns:
    ``[H, W, C]``, the dtype of ``image``.
  """
  k_crop, k_flip = jax.random.split(key)
  padded = jnp.pad(image, ((padding, padding), (padding, padding), (0, 0)))
  offset = jax.random.randint(k_crop, (2,), 0, 2 * padding + 1)
  cropped = jax.lax.dynamic_slice(padded, (offset[0], offset[1], 0), image.shape)
  return jnp.where(jax.random.bernoulli(k_flip), cropped[:, ::-1], cropped)


def cutout(key: jax.Array, image: jax.Array, apply: jax.Array, *, size: int = 16,
           fill=None) -> jax.Array:
  """Cutout (DeVries & Taylor, 2017): a ``size × size`` square at a uniformly random
  centre (clipped at the borders) set to ``fill``, if ``apply``.

  Args:
    key: PRNG key for this example.
    image: ``[H, W, C]``.
    apply: scalar bool (may be traced); False returns ``image`` unchanged.
    size: side of the square in pixels (static).
    fill: ``[C]`` or scalar fill value in the image's units; default the CIFAR-10
      mean pixel (in 0..255 for integer images, in [0, 1] for floats), which is 0
      after normalisation, as the paper cuts normalised images.

  Returns:
    ``[H, W, C]``, the dtype of ``image``.
  """
  from jaxloss.models.resnet import CIFAR10_MEAN  # pylint: disable=g-import-not-at-top
  h, w, _ = image.shape
  centre = jax.random.randint(key, (2,), 0, jnp.array([h, w]))
  rows, cols = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
  half = size // 2
  inside = ((rows >= centre[0] - half) & (rows < centre[0] - half + size)
            & (cols >= centre[1] - half) & (cols < centre[1] - half + size))
  if fill is None:
    mean = jnp.asarray(CIFAR10_MEAN)
    fill = (jnp.round(mean * 255.0) if jnp.issubdtype(image.dtype, jnp.integer)
            else mean)
  fill = jnp.broadcast_to(jnp.asarray(fill), image.shape[-1:]).astype(image.dtype)
  return jnp.where(apply & inside[..., None], fill, image)


def cifar_augment(key: jax.Array, image: jax.Array, strength: jax.Array, *,
                  padding: int = 4, cutout_size: int = 16) -> jax.Array:
  """:func:`pad_crop_flip` always, then :func:`cutout` with probability ``strength``
  (the curriculum's ``aug_strength`` knob: 0 = standard augmentation only, 1 = Cutout
  on every image).

  Args:
    key: PRNG key for this example.
    image: ``[H, W, C]`` (uint8 pixels or floats).
    strength: scalar in [0, 1] (may be traced).
    padding: crop padding (static).
    cutout_size: Cutout square side (static).

  Returns:
    ``[H, W, C]``, the dtype of ``image``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> image = jnp.arange(32 * 32 * 3, dtype=jnp.int32).reshape(32, 32, 3) % 256
    >>> out = cifar_augment(jax.random.PRNGKey(0), image.astype(jnp.uint8), 1.0)
    >>> out.shape, out.dtype
    ((32, 32, 3), dtype('uint8'))
  """
  k_crop, k_apply, k_cut = jax.random.split(key, 3)
  image = pad_crop_flip(k_crop, image, padding=padding)
  apply = jax.random.uniform(k_apply) < strength
  return cutout(k_cut, image, apply, size=cutout_size)


def cifar_augment_batch(key: jax.Array, images: jax.Array, positions: jax.Array,
                        strength: jax.Array, **kwargs) -> jax.Array:
  """:func:`cifar_augment` over a batch ``[b, H, W, C]``, keyed by each example's
  global position ``positions [b]`` (so 1 and 8 devices draw the same crops); the
  ``augment_fn`` of :func:`jaxloss.make_train_step`."""
  return _per_example(cifar_augment, key, images, positions, strength, **kwargs)
