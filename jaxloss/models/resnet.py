"""The CIFAR ResNets of He et al. (2016): ResNet-(6n+2), e.g. ResNet-32 (n = 5).

:class:`CifarResNet` is the network of He et al., Section 4.2, as the long-tail
literature uses it for CIFAR-10-LT (Cao et al.'s LDAM-DRW code, Menon et al.'s logit
adjustment): a 3×3 convolution with 16 filters, three stages of ``n`` basic blocks
(two 3×3 convolutions with batch norm and a residual) with 16, 32 and 64 filters, the
second and third starting with stride 2, global average pooling and a classifier.
Shortcuts that change the shape are option A of the paper: the input subsampled by 2
and zero-padded to the new width, so the shortcut has no parameters and ResNet-32 has
0.46 M. Batch-norm statistics live in the ``batch_stats`` collection (the train
state's ``model_state``) and, with ``axis_name``, are averaged over the data-parallel
axis.

The input may be ``uint8`` images in 0..255 (as the CIFAR-10-LT builder stores them) or
floats in [0, 1]; the model scales and normalises them by the CIFAR-10 channel mean and
standard deviation itself, so augmentation can work on raw pixels.

In training, each block's output and its inner activation are stored once on the CPU
(:func:`jaxloss.models.materialize.materialize`); XLA:CPU would otherwise recompute
the stage's whole chain of batch norms and ReLUs in every layout transpose of the
gradient (ResNet-32's step at batch 128: 1.8× faster at 1 thread, same gradients).

The linear classifier starts small (normal, std 0.01; zero bias), so an untrained
model's cross-entropy is ≈ ln C. ``classifier="cosine"`` replaces the last Dense layer by the normalised linear layer of
LDAM-DRW (cosine similarity of the L2-normalised features and class weights, in
[-1, 1]; the loss applies its scale s): its logits suit :func:`jaxloss.ldam_loss`.

References:
  K. He, X. Zhang, S. Ren, J. Sun, *Deep Residual Learning for Image Recognition*,
  CVPR 2016.
  K. Cao et al., *Learning Imbalanced Datasets with Label-Distribution-Aware Margin
  Loss*, NeurIPS 2019 (the normalised classifier).
"""

from __future__ import annotations

from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxloss.models.materialize import materialize

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CLASSIFIERS = ("linear", "cosine")

_conv_init = nn.initializers.variance_scaling(2.0, "fan_in", "normal")  # He et al.


def normalize_images(x: jax.Array) -> jax.Array:
  """uint8 0..255 or float [0, 1] images ``[..., 3]`` -> float32, standardised by the
  CIFAR-10 channel mean and standard deviation."""
  if jnp.issubdtype(x.dtype, jnp.integer):
    x = x.astype(jnp.float32) / 255.0
  x = x.astype(jnp.float32)
  return (x - jnp.asarray(CIFAR10_MEAN)) / jnp.asarray(CIFAR10_STD)


class _BasicBlock(nn.Module):
  width: int
  stride: int
  axis_name: Optional[str]

  @nn.compact
  def __call__(self, x, *, train: bool):
    norm = lambda name: nn.BatchNorm(  # pylint: disable=g-long-lambda
        use_running_average=not train, momentum=0.9, epsilon=1e-5,
        axis_name=self.axis_name if train else None, name=name)
    y = nn.Conv(self.width, (3, 3), strides=self.stride, padding=1, use_bias=False,
                kernel_init=_conv_init, name="conv1")(x)
    y = nn.relu(norm("bn1")(y))
    if train:  # stored once, not recomputed by each consumer in the gradient
      y = materialize(y)
    y = nn.Conv(self.width, (3, 3), padding=1, use_bias=False, kernel_init=_conv_init,
                name="conv2")(y)
    y = norm("bn2")(y)
    shortcut = x
    if self.stride != 1 or x.shape[-1] != self.width:
      # Option A: subsample and zero-pad the channels (no parameters).
      shortcut = x[:, ::self.stride, ::self.stride, :]
      extra = self.width - x.shape[-1]
      shortcut = jnp.pad(shortcut, ((0, 0), (0, 0), (0, 0),
                                    (extra // 2, extra - extra // 2)))
    out = nn.relu(y + shortcut)
    # The residual stream: without this each block's consumers recompute every earlier
    # block of the stage (jaxloss.models.materialize).
    return materialize(out) if train else out


class CosineClassifier(nn.Module):
  """``normalize(x) @ normalize(W)``: cosine logits in [-1, 1] (LDAM's NormedLinear)."""
  num_classes: int

  @nn.compact
  def __call__(self, x):
    w = self.param("kernel", nn.initializers.uniform(2.0), (x.shape[-1], self.num_classes))
    w = w - 1.0  # uniform in [-1, 1), as the reference code's uniform_(-1, 1)
    x = x / jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True) + 1e-12)
    w = w / jnp.sqrt(jnp.sum(w * w, axis=0, keepdims=True) + 1e-12)
    return x @ w


class CifarResNet(nn.Module):
  """ResNet-(6n+2) for 32×32 images (He et al., CVPR 2016, Section 4.2).

  Attributes:
    num_classes: C.
    depth: 6n + 2 (20, 32, 44, 56, 110; 8 is the one-block-a-stage CPU size).
    widths: filters of the three stages (16, 32, 64 in the paper).
    axis_name: if set, batch-norm statistics are averaged over this mapped axis when
      training (synchronised BN).
    classifier: ``"linear"`` (Dense) or ``"cosine"`` (LDAM's normalised layer).

  Call: ``x`` ``[B, 32, 32, 3]`` uint8 (0..255) or float ([0, 1]), ``train`` (batch
  statistics and their update when True); returns float32 logits ``[B, C]``.
  ``dropout`` is accepted and ignored (there is no dropout), so the digits trainer's
  evaluation call fits.

  Raises:
    ValueError: ``depth`` not of the form 6n + 2 with n >= 1, an unknown
      ``classifier``, or ``widths`` not three positive ints.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> model = CifarResNet(num_classes=10, depth=32)
    >>> variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)),
    ...                        train=False)
    >>> sum(x.size for x in jax.tree.leaves(variables["params"]))
    464154
  """
  num_classes: int
  depth: int = 32
  widths: Sequence[int] = (16, 32, 64)
  axis_name: Optional[str] = None
  classifier: str = "linear"

  @nn.compact
  def __call__(self, x, *, train: bool, dropout: Optional[bool] = None):
    del dropout
    if self.depth < 8 or (self.depth - 2) % 6:
      raise ValueError(f"depth must be 6n + 2 with n >= 1 (8, 20, 32, ...), got "
                       f"{self.depth}")
    if self.classifier not in CLASSIFIERS:
      raise ValueError(f"classifier must be one of {CLASSIFIERS}, got "
                       f"{self.classifier!r}")
    widths = tuple(self.widths)
    if len(widths) != 3 or any(int(w) < 1 for w in widths):
      raise ValueError(f"widths must be three positive ints, got {widths}")
    blocks = (self.depth - 2) // 6
    x = normalize_images(x)
    x = nn.Conv(widths[0], (3, 3), padding=1, use_bias=False, kernel_init=_conv_init,
                name="conv")(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                     axis_name=self.axis_name if train else None, name="bn")(x)
    x = nn.relu(x)
    for stage, width in enumerate(widths):
      for block in range(blocks):
        stride = 2 if stage > 0 and block == 0 else 1
        x = _BasicBlock(int(width), stride, self.axis_name,
                        name=f"stage{stage + 1}_block{block + 1}")(x, train=train)
    x = jnp.mean(x, axis=(1, 2))
    if self.classifier == "cosine":
      return CosineClassifier(self.num_classes, name="classifier")(x)
    # A small classifier, so that the untrained model's loss is ≈ ln C (the reference
    # code's He-normal classifier starts near 6 for C = 10, which the initial_loss_off
    # monitor reports).
    return nn.Dense(self.num_classes, kernel_init=nn.initializers.normal(0.01),
                    name="classifier")(x)
