"""On-device image augmentation whose strength is a curriculum knob.

* :func:`shift_and_noise` for the 8×8 digits: a one-pixel shift and Gaussian noise.
* :func:`pad_crop_flip` and :func:`cutout` for CIFAR: the standard augmentation of He
  et al. (2016) (4-pixel zero padding, a random 32×32 crop, a horizontal flip with
  probability 1/2) and Cutout (DeVries & Taylor, 2017) as the "strong" augmentation
  whose probability is the knob (:func:`cifar_augment`).

Every batch function keys each example by its *global* position in the step's batch,
so the result does not depend on how the batch is split across devices.

Random numbers: an example's draws are the 32-bit words of Threefry-2x32 in counter
mode (Salmon et al., SC 2011; the construction ``jax.random.bits`` uses), block ``c``
being ``jax.random.fold_in(key, c)``; the example at global position ``p`` that needs
``n`` blocks reads blocks ``p·n … p·n + n − 1``. A whole batch is then *one* Threefry
evaluation, where a ``fold_in`` + ``split`` + ``randint`` + ``uniform`` + ``normal`` per
example were six: XLA:CPU compiles each of those in 0.3–0.8 s, and they were most of the
augmentation's share of the train step's compile time
(``python -m tools.bench.compile``, ``docs/bench_compile.md``). The per-example
functions are the batch functions at position 0.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def random_words(key: jax.Array, positions: jax.Array, num_words: int) -> jax.Array:
  """Independent uniform 32-bit words for each position, in one Threefry evaluation.

  Args:
    key: a PRNG key (raw ``uint32[2]`` or typed).
    positions: int ``[b]``, the examples' global positions (non-negative).
    num_words: words per example (static).

  Returns:
    uint32 ``[b, num_words]``: row ``i`` is a pure function of ``(key, positions[i])``.

  Source: Threefry-2x32 in counter mode (Salmon et al., "Parallel random numbers: as
  easy as 1, 2, 3", SC 2011); block ``c`` is ``jax.random.fold_in(key, c)``.

  Examples:
    >>> key = jax.random.PRNGKey(0)
    >>> words = random_words(key, jnp.arange(4), 3)
    >>> words.shape, words.dtype
    ((4, 3), dtype('uint32'))
    >>> bool(jnp.all(random_words(key, jnp.arange(2, 4), 3) == words[2:]))
    True
  """
  blocks = -(-num_words // 2)  # a Threefry block is two words
  counters = (jnp.asarray(positions, jnp.uint32)[:, None] * jnp.uint32(blocks)
              + jnp.arange(blocks, dtype=jnp.uint32)[None, :])
  keys = jax.vmap(jax.vmap(lambda c: jax.random.fold_in(key, c)))(counters)
  if jax.dtypes.issubdtype(keys.dtype, jax.dtypes.prng_key):
    keys = jax.random.key_data(keys)
  return keys.reshape(counters.shape[0], 2 * blocks)[:, :num_words].astype(jnp.uint32)


def _unit(words: jax.Array) -> jax.Array:
  """float32 uniform on the open interval (0, 1) from the top 24 bits of each word."""
  return ((words >> 8).astype(jnp.float32) + 0.5) * (2.0 ** -24)


def _check_range(name: str, value: int, largest: int) -> None:
  if not 0 <= value <= largest:
    raise ValueError(f"{name} must be in [0, {largest}], got {value}")


def _below(words: jax.Array, n) -> jax.Array:
  """int32 uniform on {0, …, n − 1} (1 ≤ n ≤ 256, may be an array): ⌊top24 · n / 2²⁴⌋,
  exact in uint32 arithmetic."""
  return (((words >> 8) * jnp.asarray(n, jnp.uint32)) >> 24).astype(jnp.int32)


def _normal(words: jax.Array) -> jax.Array:
  """float32 standard normal by inversion, √2 · erf⁻¹(2u − 1), as ``jax.random.normal``."""
  return math.sqrt(2.0) * jax.lax.erf_inv(2.0 * _unit(words) - 1.0)


def _shift_and_noise(words, image, strength, max_shift, noise_std):
  padded = jnp.pad(image, ((max_shift, max_shift), (max_shift, max_shift), (0, 0)))
  apply = _unit(words[0]) < strength
  offset = jnp.where(apply, _below(words[1:3], 2 * max_shift + 1), max_shift)
  shifted = jax.lax.dynamic_slice(padded, (offset[0], offset[1], 0), image.shape)
  noise = _normal(words[3:]).reshape(image.shape).astype(image.dtype)
  out = shifted + (strength * noise_std) * noise
  return jnp.clip(out, 0.0, 1.0).astype(image.dtype)


def _batch(fn, num_words, key, images, positions, *args):
  words = random_words(key, positions, num_words)
  return jax.vmap(lambda w, x: fn(w, x, *args))(words, images)


def _one(fn, num_words, key, image, *args):
  return fn(random_words(key, jnp.zeros((1,), jnp.int32), num_words)[0], image, *args)


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

  Raises:
    ValueError: ``max_shift`` outside [0, 127].

  Returns:
    float ``[H, W, C]``, same dtype as ``image``.
  """
  _check_range("max_shift", max_shift, 127)
  return _one(_shift_and_noise, 3 + image.size, key, image, strength, max_shift,
              noise_std)


def augment_batch(key: jax.Array, images: jax.Array, positions: jax.Array,
                  strength: jax.Array, *, max_shift: int = 1,
                  noise_std: float = 0.1) -> jax.Array:
  """Applies :func:`shift_and_noise` to a batch, keyed by each example's *global*
  position in the step's batch, so the result does not depend on how the batch is
  split across devices.

  Args:
    key: the step's augmentation key.
    images: float ``[b, H, W, C]`` (this device's slice).
    positions: int ``[b]`` positions of these examples in the global batch.
    strength: scalar knob value.
    max_shift, noise_std: as in :func:`shift_and_noise`.

  Raises:
    ValueError: ``max_shift`` outside [0, 127].

  Returns:
    ``[b, H, W, C]``; example ``i`` is :func:`shift_and_noise` of the same key at
    position ``positions[i]`` (position 0 is :func:`shift_and_noise` itself).
  """
  _check_range("max_shift", max_shift, 127)
  return _batch(_shift_and_noise, 3 + math.prod(images.shape[1:]), key, images,
                positions, strength, max_shift, noise_std)


_CROP_WORDS = 3  # row and column offsets, flip


def _pad_crop_flip(words, image, padding):
  padded = jnp.pad(image, ((padding, padding), (padding, padding), (0, 0)))
  offset = _below(words[:2], 2 * padding + 1)
  cropped = jax.lax.dynamic_slice(padded, (offset[0], offset[1], 0), image.shape)
  return jnp.where(_unit(words[2]) < 0.5, cropped[:, ::-1], cropped)


def pad_crop_flip(key: jax.Array, image: jax.Array, *, padding: int = 4) -> jax.Array:
  """The standard CIFAR augmentation of one image: zero-pad by ``padding`` pixels,
  crop ``H × W`` at a uniformly random offset, flip left-right with probability 1/2
  (He et al., CVPR 2016; torchvision's ``RandomCrop(32, padding=4)`` +
  ``RandomHorizontalFlip()``).

  Args:
    key: PRNG key for this example.
    image: ``[H, W, C]``, any dtype (uint8 pixels are kept as they are).
    padding: pixels of zero padding on each side (static, 0 … 127).

  Raises:
    ValueError: ``padding`` outside [0, 127].

  Returns:
    ``[H, W, C]``, the dtype of ``image``.
  """
  _check_range("padding", padding, 127)
  return _one(_pad_crop_flip, _CROP_WORDS, key, image, padding)


def _cutout_fill(image, fill):
  if fill is None:
    from jaxloss.models.resnet import CIFAR10_MEAN  # pylint: disable=g-import-not-at-top
    mean = jnp.asarray(CIFAR10_MEAN)
    fill = (jnp.round(mean * 255.0) if jnp.issubdtype(image.dtype, jnp.integer)
            else mean)
  return jnp.broadcast_to(jnp.asarray(fill), image.shape[-1:]).astype(image.dtype)


def _cutout(words, image, apply, size, fill):
  h, w, _ = image.shape
  centre = _below(words[:2], jnp.array([h, w]))
  rows, cols = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
  half = size // 2
  inside = ((rows >= centre[0] - half) & (rows < centre[0] - half + size)
            & (cols >= centre[1] - half) & (cols < centre[1] - half + size))
  return jnp.where(apply & inside[..., None], _cutout_fill(image, fill), image)


def cutout(key: jax.Array, image: jax.Array, apply: jax.Array, *, size: int = 16,
           fill=None) -> jax.Array:
  """Cutout (DeVries & Taylor, 2017): a ``size × size`` square at a uniformly random
  centre (clipped at the borders) set to ``fill``, if ``apply``.

  Args:
    key: PRNG key for this example.
    image: ``[H, W, C]``, ``H`` and ``W`` at most 256.
    apply: scalar bool (may be traced); False returns ``image`` unchanged.
    size: side of the square in pixels (static).
    fill: ``[C]`` or scalar fill value in the image's units; default the CIFAR-10
      mean pixel (in 0..255 for integer images, in [0, 1] for floats), which is 0
      after normalisation, as the paper cuts normalised images.

  Raises:
    ValueError: ``H`` or ``W`` above 256.

  Returns:
    ``[H, W, C]``, the dtype of ``image``.
  """
  _check_range("image height and width", max(image.shape[:2]), 256)
  return _one(_cutout, 2, key, image, apply, size, fill)


def _cifar_augment(words, image, strength, padding, cutout_size):
  image = _pad_crop_flip(words[:_CROP_WORDS], image, padding)
  apply = _unit(words[_CROP_WORDS]) < strength
  return _cutout(words[_CROP_WORDS + 1:], image, apply, cutout_size, None)


_CIFAR_WORDS = _CROP_WORDS + 1 + 2  # crop + flip, Cutout's flag, Cutout's centre


def _check_cifar(hw, padding):
  _check_range("padding", padding, 127)
  _check_range("image height and width", max(hw), 256)


def cifar_augment(key: jax.Array, image: jax.Array, strength: jax.Array, *,
                  padding: int = 4, cutout_size: int = 16) -> jax.Array:
  """:func:`pad_crop_flip` always, then :func:`cutout` with probability ``strength``
  (the curriculum's ``aug_strength`` knob: 0 = standard augmentation only, 1 = Cutout
  on every image).

  Args:
    key: PRNG key for this example.
    image: ``[H, W, C]`` (uint8 pixels or floats), ``H`` and ``W`` at most 256.
    strength: scalar in [0, 1] (may be traced).
    padding: crop padding (static).
    cutout_size: Cutout square side (static).

  Raises:
    ValueError: ``padding`` outside [0, 127], or ``H`` or ``W`` above 256.

  Returns:
    ``[H, W, C]``, the dtype of ``image``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> image = jnp.arange(32 * 32 * 3, dtype=jnp.int32).reshape(32, 32, 3) % 256
    >>> out = cifar_augment(jax.random.PRNGKey(0), image.astype(jnp.uint8), 1.0)
    >>> out.shape, out.dtype
    ((32, 32, 3), dtype('uint8'))
  """
  _check_cifar(image.shape[:2], padding)
  return _one(_cifar_augment, _CIFAR_WORDS, key, image, strength, padding, cutout_size)


def cifar_augment_batch(key: jax.Array, images: jax.Array, positions: jax.Array,
                        strength: jax.Array, *, padding: int = 4,
                        cutout_size: int = 16) -> jax.Array:
  """:func:`cifar_augment` over a batch ``[b, H, W, C]``, keyed by each example's
  global position ``positions [b]`` (so 1 and 8 devices draw the same crops); the
  ``augment_fn`` of :func:`jaxloss.make_train_step`. Example ``i`` is
  :func:`cifar_augment` of the same key at position ``positions[i]``."""
  _check_cifar(images.shape[1:3], padding)
  return _batch(_cifar_augment, _CIFAR_WORDS, key, images, positions, strength, padding,
                cutout_size)
