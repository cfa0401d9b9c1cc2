"""CIFAR augmentation (pad + crop + flip, Cutout at the knob's probability) and the
CIFAR ResNet (parameter count, option-A shortcuts, input scaling, first loss)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxloss.data import augment
from jaxloss.models.resnet import CIFAR10_MEAN, CifarResNet, normalize_images


def _image(seed=0):
  return jnp.asarray(np.random.RandomState(seed).randint(1, 256, (32, 32, 3)), jnp.uint8)


def _crops_of(image, padding=4):
  """Every (offset, flip) output pad_crop_flip can give, as numpy arrays."""
  x = np.asarray(image)
  padded = np.pad(x, ((padding, padding), (padding, padding), (0, 0)))
  out = []
  for i in range(2 * padding + 1):
    for j in range(2 * padding + 1):
      crop = padded[i:i + 32, j:j + 32]
      out += [crop, crop[:, ::-1]]
  return out


def test_pad_crop_flip_is_one_of_the_crops_and_deterministic():
  image = _image()
  crops = _crops_of(image)
  seen_flip, seen_shift = False, False
  for k in range(40):
    out = np.asarray(augment.pad_crop_flip(jax.random.PRNGKey(k), image))
    assert out.dtype == np.uint8 and out.shape == (32, 32, 3)
    assert any(np.array_equal(out, c) for c in crops)
    np.testing.assert_array_equal(out, augment.pad_crop_flip(jax.random.PRNGKey(k), image))
    seen_flip |= any(np.array_equal(out, c) for c in crops[1::2]) and not any(
        np.array_equal(out, c) for c in crops[::2])
    seen_shift |= not (np.array_equal(out, np.asarray(image))
                       or np.array_equal(out, np.asarray(image)[:, ::-1]))
  assert seen_flip and seen_shift


def test_flip_happens_about_half_the_time():
  image = _image()
  plain = _crops_of(image)[::2]
  flips = 0
  for k in range(400):
    out = np.asarray(augment.pad_crop_flip(jax.random.PRNGKey(k), image))
    flips += not any(np.array_equal(out, c) for c in plain)
  assert 160 < flips < 240  # Binomial(400, 1/2): mean 200, sd 10


def test_cutout_square_and_fill():
  image = _image()
  fill = np.round(np.asarray(CIFAR10_MEAN) * 255).astype(np.uint8)
  out = np.asarray(augment.cutout(jax.random.PRNGKey(3), image, jnp.array(True)))
  cut = np.all(out == fill, axis=-1) & ~np.all(np.asarray(image) == fill, axis=-1)
  rows, cols = np.flatnonzero(cut.any(1)), np.flatnonzero(cut.any(0))
  # One axis-aligned square of side <= 16 (clipped at the border), filled whole.
  assert rows.size <= 16 and cols.size <= 16 and cut.sum() == rows.size * cols.size
  assert np.all(cut[rows.min():rows.max() + 1, cols.min():cols.max() + 1])
  np.testing.assert_array_equal(out[~cut], np.asarray(image)[~cut])
  unchanged = augment.cutout(jax.random.PRNGKey(3), image, jnp.array(False))
  np.testing.assert_array_equal(unchanged, image)
  sizes = [int(np.sum(np.all(np.asarray(augment.cutout(
      jax.random.PRNGKey(k), image, jnp.array(True))) == fill, -1))) for k in range(50)]
  assert max(sizes) == 256  # an unclipped 16 x 16 square occurs


def test_float_images_get_the_mean_in_their_units():
  image = jnp.ones((32, 32, 3), jnp.float32)
  out = np.asarray(augment.cutout(jax.random.PRNGKey(0), image, jnp.array(True)))
  assert np.isclose(out, np.asarray(CIFAR10_MEAN)).all(-1).any()


@pytest.mark.parametrize("strength,low,high", [(0.0, 0, 0), (1.0, 200, 200),
                                               (0.5, 70, 130)])
def test_cutout_probability_is_the_knob(strength, low, high):
  images = jnp.stack([_image(s) for s in range(200)])
  out = augment.cifar_augment_batch(jax.random.PRNGKey(0), images, jnp.arange(200),
                                    jnp.float32(strength))
  fill = np.round(np.asarray(CIFAR10_MEAN) * 255).astype(np.uint8)
  # Random pixels almost never equal the fill exactly; a cut image has >= 64 of them.
  cut = (np.all(np.asarray(out) == fill, -1).sum(axis=(1, 2)) >= 64).sum()
  assert low <= cut <= high


def test_batch_augmentation_depends_on_global_position_only():
  images = jnp.stack([_image(s) for s in range(8)])
  key = jax.random.PRNGKey(5)
  whole = augment.cifar_augment_batch(key, images, jnp.arange(8), 0.5)
  halves = [augment.cifar_augment_batch(key, images[i:i + 4], jnp.arange(i, i + 4), 0.5)
            for i in (0, 4)]
  np.testing.assert_array_equal(whole, jnp.concatenate(halves))
  again = augment.cifar_augment_batch(key, images, jnp.arange(8), 0.5)
  np.testing.assert_array_equal(whole, again)


def test_batch_example_at_position_zero_is_the_single_image_function():
  image, key = _image(), jax.random.PRNGKey(11)
  batch = augment.cifar_augment_batch(key, jnp.stack([image, image]), jnp.array([0, 5]),
                                      1.0)
  np.testing.assert_array_equal(batch[0], augment.cifar_augment(key, image, 1.0))
  assert not np.array_equal(batch[0], batch[1])


def test_crop_offsets_are_uniform():
  n, image = 1620, jnp.zeros((32, 32, 3), jnp.uint8).at[10, 6].set(255)
  out = np.asarray(augment.cifar_augment_batch(
      jax.random.PRNGKey(12), jnp.broadcast_to(image, (n, 32, 32, 3)), jnp.arange(n), 0.0))
  _, rows, cols = np.nonzero(out[..., 0] == 255)
  assert rows.size == n
  # Unflipped the pixel lands in columns 2 … 10, flipped in 21 … 29.
  cols = np.where(cols > 15, 31 - cols, cols)
  cells = np.bincount((rows - 6) * 9 + (cols - 2), minlength=81)
  assert cells.size == 81 and stats.chisquare(cells).pvalue > 1e-4  # 20 expected per cell


# ------------------------------------------------------------------------------ ResNet


def _params(model, shape=(1, 32, 32, 3), dtype=jnp.uint8):
  return model.init(jax.random.PRNGKey(0), jnp.zeros(shape, dtype), train=False)


def test_resnet32_has_0_46m_parameters_and_option_a_shortcuts():
  variables = _params(CifarResNet(10, depth=32))
  params = variables["params"]
  count = sum(x.size for x in jax.tree.leaves(params))
  assert count == 464_154 and round(count / 1e6, 2) == 0.46
  # 15 blocks of two convolutions, no projection shortcut anywhere.
  blocks = [k for k in params if k.startswith("stage")]
  assert len(blocks) == 15 and all(set(params[b]) == {"conv1", "bn1", "conv2", "bn2"}
                                   for b in blocks)
  assert params["stage2_block1"]["conv1"]["kernel"].shape == (3, 3, 16, 32)
  # He et al.'s hand count: convolutions + BN scales/biases + the classifier.
  convs = 3 * 16 * 9 + 10 * 16 * 16 * 9 + 16 * 32 * 9 + 9 * 32 * 32 * 9 + 32 * 64 * 9 \
      + 9 * 64 * 64 * 9
  bns = 2 * (16 + 10 * 16 + 10 * 32 + 10 * 64)
  assert count == convs + bns + 64 * 10 + 10
  assert set(variables["batch_stats"]) == {"bn", *blocks}


@pytest.mark.parametrize("depth", [7, 30, 2])
def test_bad_depth_raises(depth):
  with pytest.raises(ValueError, match="6n \\+ 2"):
    _params(CifarResNet(10, depth=depth))


def test_uint8_and_float_inputs_agree_and_the_shortcut_halves_space():
  model = CifarResNet(10, depth=8)
  variables = _params(model)
  images = jnp.stack([_image(s) for s in range(4)])
  a = model.apply(variables, images, train=False)
  b = model.apply(variables, images.astype(jnp.float32) / 255.0, train=False)
  np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  x = normalize_images(images)
  np.testing.assert_allclose(np.asarray(x).mean(), np.mean(
      (np.asarray(images) / 255.0 - np.asarray(CIFAR10_MEAN))
      / np.asarray([0.2470, 0.2435, 0.2616])), rtol=1e-5)


def test_untrained_loss_is_ln_10_and_cosine_logits_are_bounded():
  images = jnp.stack([_image(s) for s in range(32)])
  labels = jnp.arange(32) % 10
  model = CifarResNet(10, depth=8)
  variables = _params(model)
  logits, _ = model.apply(variables, images, train=True, mutable=["batch_stats"])
  loss = -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(32), labels])
  assert abs(float(loss) - math.log(10)) < 0.05
  cosine = CifarResNet(10, depth=8, classifier="cosine")
  out = cosine.apply(_params(cosine), images, train=False)
  assert out.shape == (32, 10) and float(jnp.max(jnp.abs(out))) <= 1.0 + 1e-6
  with pytest.raises(ValueError, match="classifier"):
    _params(CifarResNet(10, depth=8, classifier="arcface"))


@pytest.mark.parametrize("call,match", [
    (lambda: augment.pad_crop_flip(jax.random.PRNGKey(0), _image(), padding=128), "padding"),
    (lambda: augment.cutout(jax.random.PRNGKey(0), jnp.zeros((300, 8, 3)), True),
     "height and width"),
    (lambda: augment.cifar_augment_batch(jax.random.PRNGKey(0), jnp.zeros((2, 8, 257, 3)),
                                         jnp.arange(2), 1.0), "height and width"),
    (lambda: augment.augment_batch(jax.random.PRNGKey(0), jnp.zeros((2, 8, 8, 1)),
                                   jnp.arange(2), 1.0, max_shift=-1), "max_shift"),
])
def test_out_of_range_sizes_are_named(call, match):
  # The random offsets are drawn as floor(24 random bits · n / 2^24) in uint32, exact
  # for n <= 256 only, so larger ranges are refused instead of wrapping around.
  with pytest.raises(ValueError, match=match):
    call()
