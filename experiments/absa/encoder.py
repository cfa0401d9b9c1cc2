"""The multi-aspect sentiment recipe on a pretrained encoder (``config.encoder``, a
local Hugging Face folder, e.g. ``multilingual-e5-small``).

Each review is tokenised whole (with ``config.encoder_text_prefix``, e5's ``"query: "``)
and padded to one width for the dataset; training batches are drawn grouped by length
(:func:`jaxloss.data.sampler.length_grouped_sampler`, one order for every ensemble
member) and cut to their bucket (``Recipe.sequence_buckets``); evaluation runs in order
of length, each batch cut to its bucket. Two forms:

* **fine-tuned** (:class:`~jaxloss.models.encoder_heads.EncoderAspectSentimentModel`):
  the encoder and the heads trained together by
  :func:`jaxloss.finetune.make_finetune_optimizer`; the heads read the mean-pooled
  review vector (or, with ``config.token_hidden``, a BiLSTM over the token states);
* **frozen, cached** (``freeze_encoder`` and ``cache_features``): the encoder runs once
  over every split (:func:`experiments.encoders.cache_token_states`, float16) and
  :class:`~jaxloss.models.encoder_heads.AspectSentimentHeads` (a BiLSTM of
  ``config.token_hidden`` units over the per-token states) trains on them.
"""

from __future__ import annotations

from jaxloss.models.encoder_heads import AspectSentimentHeads, EncoderAspectSentimentModel
from experiments import encoders


def setup(config, splits: dict, monitor_sums, state_cls, train_stream=None
          ) -> encoders.Setup:
  """Loads ``config.encoder``, adds its inputs to ``splits`` (in place) and returns the
  :class:`experiments.encoders.Setup` (see :func:`experiments.encoders.text_setup`).

  Raises:
    ValueError: as :func:`experiments.encoders.text_setup`.
  """
  def model_fn(module, pooling, token_hidden):
    return EncoderAspectSentimentModel(
        module, dropout_rate=config.head_dropout_rate,
        projection_dim=config.projection_dim, pooling=pooling, token_hidden=token_hidden,
        freeze_encoder=bool(config.freeze_encoder),
        aspect_attention=bool(config.get("aspect_attention")))

  def heads_fn(token_hidden):
    return AspectSentimentHeads(token_hidden=token_hidden,
                                dropout_rate=config.head_dropout_rate,
                                projection_dim=config.projection_dim,
                                aspect_attention=bool(config.get("aspect_attention")))
  return encoders.text_setup(config, splits, model_fn=model_fn, heads_fn=heads_fn,
                             monitor_sums=monitor_sums, state_cls=state_cls,
                             train_stream=train_stream)
