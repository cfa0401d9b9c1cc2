"""A small convolutional classifier for small images (8×8 digits, 32×32 on a CPU)."""

from __future__ import annotations

from typing import Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp


class SmallCNN(nn.Module):
  """Conv-BN-ReLU blocks, global average pooling and a linear classifier.

  Attributes:
    num_classes: C, the logits' last dimension.
    widths: output channels of the 3×3 conv blocks; blocks after the first use stride 2.
    axis_name: if set, batch-norm statistics are averaged over this mapped axis
      (synchronised BN), so a data-parallel run computes the same statistics as a
      single-device run on the global batch.
    dropout_rate: dropout on the pooled features before the classifier (0 = none);
      active when ``dropout`` is True (by default, when training), which needs a
      ``"dropout"`` rng.
    projection_dim: if set, the model also returns a projection head (Dense-ReLU-Dense
      of this width on the pooled features, as in SupCon) for a contrastive loss.

  Input ``[B, H, W, Cin]`` float; output logits ``[B, num_classes]`` float32, or with
  ``projection_dim`` a dict ``{"logits": [B, C], "projection": [B, projection_dim]}``.
  """
  num_classes: int
  widths: Sequence[int] = (32, 64)
  axis_name: Optional[str] = None
  dropout_rate: float = 0.0
  projection_dim: Optional[int] = None

  @nn.compact
  def __call__(self, x, *, train: bool, dropout: Optional[bool] = None):
    for i, width in enumerate(self.widths):
      x = nn.Conv(width, (3, 3), strides=1 if i == 0 else 2, use_bias=False)(x)
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                       axis_name=self.axis_name if train else None)(x)
      x = nn.relu(x)
    x = jnp.mean(x, axis=(1, 2))
    features = x
    if self.dropout_rate:
      active = train if dropout is None else dropout
      x = nn.Dropout(self.dropout_rate, deterministic=not active)(x)
    logits = nn.Dense(self.num_classes)(x)
    if self.projection_dim is None:
      return logits
    hidden = nn.relu(nn.Dense(features.shape[-1])(features))
    return {"logits": logits, "projection": nn.Dense(self.projection_dim)(hidden)}
