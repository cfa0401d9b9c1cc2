"""UIT-VSFC on a pretrained encoder (``config.encoder``): the sentence classifier of the
imbalance recipe as :class:`~jaxloss.models.encoder_heads.EncoderClassifier` (the
encoder fine-tuned with a softmax classifier on its mean-pooled states), or, with
``freeze_encoder`` and ``cache_features``,
:class:`~jaxloss.models.encoder_heads.TokenStatesClassifier` (a BiLSTM over the frozen
encoder's token states, computed once). The curriculum's class-mix sampler draws the
batches; each is cut to the bucket of its longest sentence.
"""

from __future__ import annotations

from jaxloss.models.encoder_heads import EncoderClassifier, TokenStatesClassifier
from experiments import encoders


def setup(config, splits: dict, num_classes: int, monitor_sums, state_cls
          ) -> encoders.Setup:
  """Adds the encoder's inputs to ``splits`` (``{name: {"text", ...}}``, in place) and
  returns the :class:`experiments.encoders.Setup`.

  Raises:
    ValueError: as :func:`experiments.encoders.text_setup`.
  """
  def model_fn(module, pooling, token_hidden):
    return EncoderClassifier(module, num_classes, dropout_rate=config.head_dropout_rate,
                             pooling=pooling, token_hidden=token_hidden,
                             freeze_encoder=bool(config.freeze_encoder))

  def heads_fn(token_hidden):
    return TokenStatesClassifier(num_classes, token_hidden=token_hidden,
                                 dropout_rate=config.head_dropout_rate)
  return encoders.text_setup(config, splits, model_fn=model_fn, heads_fn=heads_fn,
                             monitor_sums=monitor_sums, state_cls=state_cls)
