"""Reading and checking the NLU recipe's config (``nlu/configs/joint_nlu.py``).

:func:`validate` raises a ``ValueError`` naming the field for every value out of range
before any data is read; :func:`parse_lambda` turns a λ (a number or per-epoch values)
into a curriculum schedule; :func:`train_length` raises the epochs of a small training
set to a number of updates; :func:`memm_tagger` says whether the tags are decoded by the
BIO-constrained Viterbi that joint decoding needs; :func:`lambda_for` gives a label
field's λ. ``experiments.nlu.recipe`` re-exports all five.
"""

from __future__ import annotations

import math

import optax

def parse_lambda(value, *, name: str):
  """A λ from the config: a number (constant) or per-epoch values ``"0.3,0.4,0.5"``
  (value k during epoch k, the last one from then on).

  Returns:
    ``(schedule, values)``: a float, or an optax schedule of the epoch (for the
    curriculum, whose callables take the time in epochs), and the list of values.

  Raises:
    ValueError: not a number or a comma-separated list of numbers, or a negative value.

  Examples:
    >>> sched, values = parse_lambda("0.3,0.4,0.5", name="lambdas.entity")
    >>> [round(float(sched(e)), 2) for e in (0, 0.5, 1, 1.99, 2, 9)]
    [0.3, 0.3, 0.4, 0.4, 0.5, 0.5]
  """
  if isinstance(value, str):
    parts = [p.strip() for p in value.split(",") if p.strip()]
  else:
    parts = [value]
  try:
    values = [float(p) for p in parts]
  except (TypeError, ValueError):
    raise ValueError(f"config.{name} must be a number or per-epoch values like "
                     f"'0.3,0.4,0.5', got {value!r}") from None
  if not values or any(not (v >= 0 and math.isfinite(v)) for v in values):
    raise ValueError(f"config.{name} must hold finite numbers >= 0, got {value!r}")
  if len(values) == 1:
    return values[0], values
  schedule = optax.join_schedules([optax.constant_schedule(v) for v in values],
                                  boundaries=list(range(1, len(values))))
  return schedule, values


def train_length(config, steps_per_epoch: int) -> tuple[int, int]:
  """``(epochs, eval_every_epochs)``: ``config.num_epochs``, raised on a small training
  set to reach ``config.min_train_steps`` updates, and then an evaluation cadence that
  keeps about ``config.evaluations_when_raised`` evaluations (None: ``num_epochs``).

  Forty epochs of SNIPS are 8,200 updates of 64 sentences; forty epochs of a
  1,600-sentence set are 1,000, and the 2-layer tagger is still learning its tags there
  (slot F1 rising by a point an epoch at the end of 20). A training length in updates
  travels between dataset sizes where one in epochs does not.

  >>> import ml_collections
  >>> c = ml_collections.ConfigDict({"num_epochs": 40, "min_train_steps": 4000,
  ...                                "evaluations_when_raised": 20})
  >>> train_length(c, 205), train_length(c, 25)
  ((40, 1), (160, 8))
  """
  epochs = int(config.num_epochs)
  need = int(config.get("min_train_steps") or 0)
  if need <= epochs * steps_per_epoch:
    return epochs, 1
  raised = math.ceil(need / steps_per_epoch)
  evaluations = int(config.get("evaluations_when_raised") or epochs)
  return raised, max(1, round(raised / evaluations))


def memm_tagger(config) -> bool:
  """Whether the tags are decoded by the BIO-constrained MEMM Viterbi (the tagger
  :func:`jaxloss.decoding.joint_decode` decodes jointly with a sentence label)."""
  return bool(config.constrained_decoding and config.entity_loss != "crf"
              and config.get("decoder_hidden") is None)


def validate(config) -> None:
  """Raises ValueError naming a config field out of range."""
  for field in ("num_epochs", "batch_size", "vocab_min_count", "max_word_len"):
    if not config[field] >= 1:
      raise ValueError(f"config.{field} must be >= 1, got {config[field]}")
  min_steps = config.get("min_train_steps", 0)
  if not (isinstance(min_steps, int) and min_steps >= 0):
    raise ValueError(f"config.min_train_steps must be an int >= 0, got {min_steps!r}")
  evaluations = config.get("evaluations_when_raised")
  if evaluations is not None and not (isinstance(evaluations, int) and evaluations >= 1):
    raise ValueError(f"config.evaluations_when_raised must be an int >= 1 or None, got "
                     f"{evaluations!r}")
  if config.max_len is not None and not config.max_len >= 1:
    raise ValueError(f"config.max_len must be >= 1 or None, got {config.max_len}")
  for field in ("dropout_rate", "word_dropout_rate", "singleton_unk_rate"):
    value = config.get(field)
    if value is not None and not 0 <= value < 1:
      raise ValueError(f"config.{field} must be in [0, 1), got {value}")
  if config.entity_loss not in ("focal", "ce", "crf"):
    raise ValueError(f"config.entity_loss must be 'focal', 'ce' or 'crf', got "
                     f"{config.entity_loss!r}")
  if config.mask_fill not in ("finite", "neg_inf"):
    raise ValueError(f"config.mask_fill must be 'finite' or 'neg_inf', got "
                     f"{config.mask_fill!r}")
  heads = config.get("attention_heads", 0)
  if not (isinstance(heads, int) and heads >= 0
          and (2 * config.hidden) % max(heads, 1) == 0):
    raise ValueError(f"config.attention_heads must be 0 or a divisor of 2 * config.hidden "
                     f"= {2 * config.hidden}, got {heads!r}")
  if config.get("token_level", False) and config.get("encoder") is not None:
    raise ValueError("config.token_level is for the from-scratch tagger; with "
                     "config.encoder leave it False")
  decoder = config.get("decoder_hidden")
  if decoder is not None:
    if not (isinstance(decoder, int) and decoder >= 1):
      raise ValueError(f"config.decoder_hidden must be None or an int >= 1, got "
                       f"{decoder!r}")
    if config.get("encoder") is not None or config.entity_loss == "crf":
      raise ValueError("config.decoder_hidden is for the from-scratch tagger without a "
                       "CRF: leave config.encoder None and config.entity_loss not 'crf'")
    if config.entity_loss == "focal" and config.entity_class_weights:
      raise ValueError("config.decoder_hidden decodes inside the model, where a "
                       "class-weighted entity loss cannot be corrected: set "
                       "config.entity_class_weights=False")
  forcing = config.get("teacher_forcing")
  if forcing is not None and not 0 <= forcing <= 1:
    raise ValueError(f"config.teacher_forcing must be in [0, 1], got {forcing}")
  joint = config.get("joint_decoding")
  if joint not in (None, True, False):
    raise ValueError(f"config.joint_decoding must be True, False or None, got {joint!r}")
  if joint and not memm_tagger(config):
    raise ValueError("config.joint_decoding=True needs the MEMM tagger "
                     "(config.constrained_decoding=True, config.entity_loss not 'crf', "
                     "config.decoder_hidden None); set config.joint_decoding=False to "
                     "decode each head on its own")
  min_expected = config.get("label_tag_min_expected")
  if min_expected is not None and (isinstance(min_expected, bool) or not isinstance(
      min_expected, (int, float)) or not math.isfinite(min_expected) or min_expected < 0):
    raise ValueError(f"config.label_tag_min_expected must be None or a number >= 0, "
                     f"got {min_expected!r}")
  if config.entity_loss == "crf" and config.mask_fill != "finite":
    raise ValueError("config.entity_loss='crf' needs config.mask_fill='finite'")
  if config.entity_loss == "crf" and config.get("encoder") is not None:
    raise ValueError("config.entity_loss='crf' is for the from-scratch tagger; with "
                     "config.encoder use 'ce' or 'focal'")
  for name, value in config.lambdas.items():
    parse_lambda(value, name=f"lambdas.{name}")
  parse_lambda(config.get("default_lambda", 0.2), name="default_lambda")
  if "entity" not in config.lambdas:
    raise ValueError("config.lambdas must have an 'entity' weight")
  if config.get("encoder") is not None:
    if not 0 < config.layer_decay <= 1:
      raise ValueError(f"config.layer_decay must be in (0, 1], got {config.layer_decay}")
    if not 0 < config.encoder_lr_scale <= 1:
      raise ValueError("config.encoder_lr_scale must be in (0, 1], got "
                       f"{config.encoder_lr_scale}")
    if config.sentence_pooling not in ("auto", "pooler", "cls", "mean"):
      raise ValueError("config.sentence_pooling must be auto, pooler, cls or mean, got "
                       f"{config.sentence_pooling!r}")
    if not 0 <= config.head_dropout_rate < 1:
      raise ValueError(f"config.head_dropout_rate must be in [0, 1), got "
                       f"{config.head_dropout_rate}")


def lambda_for(config, field: str):
  """The config's λ of a label field: ``config.lambdas[field]``, else
  ``config.default_lambda`` (a field of the data the config does not name)."""
  if field in config.lambdas:
    return config.lambdas[field]
  return config.get("default_lambda", 0.2)

