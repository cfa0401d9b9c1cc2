"""What every recipe on a pretrained encoder shares (``config.encoder``, a local Hugging
Face folder; see :func:`jaxloss.models.load_pretrained`): loading, tokenising a text
split to bucketed sub-words, initial parameters with the pretrained encoder inside the
fine-tuning optimizer's TrainState, and a frozen encoder's cached token states.

Used by ``experiments/nlu/encoder.py`` (JointBERT), ``experiments/absa/encoder.py``
(multi-aspect sentiment) and ``experiments/imbalance`` (UIT-VSFC).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from jaxloss import finetune
from jaxloss.data import subword
from jaxloss.data.sampler import length_grouped_sampler, stream_sampler
from jaxloss.models.pretrained import (Pretrained, keep_vocabulary, load_pretrained,
                                       resolve_model_dir, truncate_layers)
from jaxloss.train_step import make_optimizer
from jaxloss.training.recipe import SequenceBuckets

TEXT_INPUTS = ("subword_ids", "subword_mask")
FEATURE_INPUTS = ("token_features", "subword_mask")


def load(config) -> Pretrained:
  """The config's encoder, cut to ``config.encoder_num_layers`` bottom layers (None:
  all); with ``config.encoder_remat`` (fine-tuning), each layer's activations are
  recomputed in the backward pass instead of kept (:class:`jaxloss.models.BertEncoder`
  ``remat``).

  Raises:
    FileNotFoundError / ValueError: as :func:`jaxloss.models.load_pretrained` (the
      folder must have a ``tokenizer.json``); a bad ``encoder_num_layers``.
  """
  pre = load_pretrained(resolve_model_dir(config.encoder), require_tokenizer=True)
  if config.get("encoder_num_layers") is not None:
    pre = truncate_layers(pre, int(config.encoder_num_layers))
  if config.get("encoder_remat") and not config.get("freeze_encoder"):
    pre = dataclasses.replace(pre, module=pre.module.clone(remat=True))
  return pre


def encode_texts(pre: Pretrained, texts: dict, *, max_length: int, buckets: tuple,
                 prefix: str = "") -> tuple[dict, dict]:
  """Tokenises raw texts (``{split: [str]}``) with the encoder's tokenizer.

  Returns:
    ``({split: {"subword_ids", "subword_mask": int32 [N, S], "subword_lengths": int32
    [N]}}, facts)``: every split padded to one S (the largest split's bucket) with the
    tokenizer's pad id; facts: S and the sequences truncated per split.
  """
  encoded = {name: subword.encode_batch(pre.tokenizer, [prefix + t for t in ts],
                                        buckets=buckets, max_length=max_length)
             for name, ts in texts.items()}
  width = max(e.length for e in encoded.values())
  pad_id = subword.resolve_pad_id(pre.tokenizer)
  out = {}
  for name, e in encoded.items():
    extra = width - e.length
    out[name] = {
        "subword_ids": np.pad(e.input_ids, ((0, 0), (0, extra)),
                              constant_values=pad_id).astype(np.int32),
        "subword_mask": np.pad(e.attention_mask, ((0, 0), (0, extra))).astype(np.int32),
        "subword_lengths": e.lengths.astype(np.int32)}
  facts = {"subword_length": int(width), "text_prefix": prefix,
           "truncated": {name: int(e.num_truncated) for name, e in encoded.items()}}
  return out, facts


def pretrained_init(config, pre: Pretrained, model, dummy: Sequence, monitor_sums,
                    state_cls) -> tuple[Callable, object]:
  """``(init(key) -> TrainState, tx)`` for ``model`` (whose encoder's parameters are
  ``params["encoder"]``): the heads initialised from ``key``, the encoder's parameters
  the pretrained ones, and :func:`jaxloss.finetune.make_finetune_optimizer` over both
  (``config.learning_rate``, ``weight_decay``, ``layer_decay``, ``encoder_lr_scale``,
  ``freeze_encoder``,
  ``max_grad_norm``).

  Args:
    dummy: one example's model inputs (batch 1), positional, for the shapes.
  """
  dummy = tuple(jnp.asarray(x) for x in dummy)
  shapes = jax.eval_shape(lambda k: model.init(k, *dummy, train=False)["params"],
                          jax.random.PRNGKey(0))
  tx = finetune.make_finetune_optimizer(
      shapes, learning_rate=config.learning_rate, weight_decay=config.weight_decay,
      layer_decay=config.layer_decay, freeze_encoder=config.freeze_encoder,
      encoder_lr_scale=config.get("encoder_lr_scale", 1.0),
      max_grad_norm=config.max_grad_norm)
  pretrained = jax.tree.map(jnp.asarray, pre.params)
  # Jitted: one program instead of one per eager operation of a Transformer's init
  # (the encoder's random init is computed and then replaced by the checkpoint's).
  init_params = jax.jit(lambda k: model.init(k, *dummy, train=False)["params"])

  def init(key):
    init_key, state_key = jax.random.split(key)
    params = dict(init_params(init_key))
    params["encoder"] = pretrained
    return state_cls.create(apply_fn=model.apply, params=params, tx=tx, rng=state_key,
                            train_sums=monitor_sums)
  return init, tx


def cache_token_states(forward: Callable, split: dict, *, buckets: tuple,
                       batch_size: int = 64, dtype=np.float16, progress: bool = False,
                       desc: str = "encoder states") -> np.ndarray:
  """A frozen encoder's last hidden states of a split, computed once.

  ``forward(subword_ids, subword_mask) -> [b, S', H]`` (jitted by the caller) runs in
  order of length on fixed-size batches cut to their own bucket (one compilation per
  bucket; the last batch padded by repeating rows), and the states are put back in the
  split's order, zero beyond each sequence's length.

  Returns:
    ``dtype [N, S, H]`` (S: the split's padded width; float16 halves the memory of a
    cache that is float32 in the model). ``progress``: a tqdm bar named ``desc``.
  """
  ids, mask = split["subword_ids"], split["subword_mask"]
  lengths = np.asarray(split["subword_lengths"])
  n, width = ids.shape
  order = np.argsort(lengths, kind="stable")
  out = None
  for start in tqdm(range(0, n, batch_size), desc=desc, unit="batch", disable=not progress,
                    leave=False):
    rows = order[np.arange(start, start + batch_size) % n]
    cut = min(subword.bucket_length(int(lengths[rows].max()), buckets), width)
    states = np.asarray(forward(ids[rows, :cut], mask[rows, :cut]))
    if out is None:
      out = np.zeros((n, width, states.shape[-1]), dtype)
    keep = min(batch_size, n - start)
    out[rows[:keep], :cut] = states[:keep] * mask[rows[:keep], :cut, None]
  return out


@dataclasses.dataclass(frozen=True)
class Setup:
  """What the recipe takes from the encoder: the model, its input fields, ``init``,
  the optimizer, the batch cutting, the sampler and the facts for the summary."""
  model: Any
  inputs: tuple
  init: Callable
  tx: Any
  sequence_buckets: SequenceBuckets
  sampler: Optional[Callable]
  facts: dict
  # Sub-word ids as the model reads them -> their text (the tokenizer's tokens).
  token_text: Optional[Callable] = None


def text_setup(config, splits: dict, *, model_fn: Callable, heads_fn: Callable,
               monitor_sums, state_cls, train_stream: Optional[np.ndarray] = None
               ) -> Setup:
  """Loads ``config.encoder``, adds its inputs to ``splits`` (in place: each split's
  ``text`` tokenised) and returns the :class:`Setup` of a text recipe on it.

  Args:
    config: reads ``encoder``, ``encoder_num_layers``, ``encoder_data_vocabulary``,
      ``encoder_max_length``,
      ``encoder_text_prefix``, ``sequence_buckets``, ``sentence_pooling``,
      ``token_hidden``, ``freeze_encoder``, ``cache_features``, ``length_grouped``,
      ``group_batches``, ``batch_size``, ``seed``, ``eval_batch_size`` and the
      optimizer's fields.
    splits: ``{name: {"text": [str], ...}}``, ``train`` among them.
    model_fn: ``(encoder_module, pooling, token_hidden) -> model`` taking
      ``(subword_ids, subword_mask)`` and having a ``token_features`` method.
    heads_fn: ``(token_hidden) -> heads`` taking ``(token_features, subword_mask)``
      (the frozen, cached form).
    monitor_sums, state_cls: the TrainState's monitor sums and class.
    train_stream: the training examples' indices to draw from, repeats included
      (:func:`jaxloss.data.sampler.repeat_indices`); None: each example once.

  Raises:
    ValueError: ``config.token_hidden`` < 1; a frozen, cached encoder without
      ``token_hidden`` (the cached row trains a BiLSTM on the token states); and as
      :func:`load`.
  """
  token_hidden = config.get("token_hidden")
  if token_hidden is not None and token_hidden < 1:
    raise ValueError(f"config.token_hidden must be >= 1 or None, got {token_hidden}")
  cached = bool(config.freeze_encoder and config.cache_features)
  if cached and token_hidden is None:
    raise ValueError("config.freeze_encoder with config.cache_features trains heads on "
                     "the cached token states: set config.token_hidden (e.g. 128)")
  pre = load(config)
  buckets = tuple(config.sequence_buckets)
  sub, facts = encode_texts(
      pre, {name: s["text"] for name, s in splits.items()},
      max_length=config.encoder_max_length, buckets=buckets,
      prefix=config.encoder_text_prefix)
  new_to_old = None
  if config.get("encoder_data_vocabulary") and not cached:
    # Only the sub-words these splits use (keep_vocabulary): the same fine-tuning with
    # a smaller embedding table, optimizer state and gradient all-reduce (a frozen,
    # cached encoder runs once and has none of these).
    full = pre.config.vocab_size
    pre, old_to_new = keep_vocabulary(
        pre, np.concatenate([s["subword_ids"].ravel() for s in sub.values()]))
    for s in sub.values():
      s["subword_ids"] = old_to_new[s["subword_ids"]]
    # keep_vocabulary numbers the kept ids in increasing order (-1 at the dropped ones),
    # so new id i is the i-th kept old id.
    new_to_old = np.flatnonzero(old_to_new >= 0)
    facts["vocabulary"] = {"kept": pre.config.vocab_size, "of": full}
  for name in splits:
    splits[name].update(sub[name])
  pooling = config.sentence_pooling
  if pooling == "auto":
    pooling = "pooler" if pre.module.add_pooler else "mean"
  model = model_fn(pre.module, pooling, token_hidden)
  facts.update({"path": str(pre.path), "model_type": pre.config.model_type,
                "num_layers": pre.config.num_hidden_layers,
                "pooling": "token_bilstm" if token_hidden else pooling,
                "freeze_encoder": bool(config.freeze_encoder), "cached_features": cached})
  train_lengths = splits["train"]["subword_lengths"]
  eval_lengths = {n: splits[n]["subword_lengths"] for n in splits if n != "train"}
  sampler = None
  if config.get("length_grouped"):
    lengths = np.asarray(train_lengths)
    if train_stream is not None:
      lengths = lengths[np.asarray(train_stream)]
    sampler = length_grouped_sampler(lengths, config.batch_size,
                                     group_batches=config.group_batches,
                                     key=jax.random.PRNGKey(config.seed))
    if train_stream is not None:
      sampler = stream_sampler(sampler, train_stream)
  width = splits["train"]["subword_ids"].shape[1]
  if cached:
    t0 = time.time()
    encoder_params = jax.tree.map(jnp.asarray, pre.params)
    # The parameters are an argument, not a constant XLA would fold into the program.
    states = jax.jit(lambda p, ids, mask: model.apply(
        {"params": {"encoder": p}}, ids, mask, method="token_features"))
    for name in splits:
      splits[name]["token_features"] = cache_token_states(
          functools.partial(states, encoder_params), splits[name], buckets=buckets,
          batch_size=config.eval_batch_size, progress=bool(config.get("progress")),
          desc=f"{name}: frozen encoder states")
    facts["feature_seconds"] = round(time.time() - t0, 1)
    heads = heads_fn(token_hidden)
    dummy = (jnp.zeros((1, width, pre.config.hidden_size)), jnp.ones((1, width)))
    tx = make_optimizer("adamw", learning_rate=config.learning_rate,
                        weight_decay=config.weight_decay,
                        max_grad_norm=config.max_grad_norm)
    init_params = jax.jit(lambda k: heads.init(k, *dummy, train=False)["params"])

    def init_heads(key):
      init_key, state_key = jax.random.split(key)
      return state_cls.create(apply_fn=heads.apply, params=init_params(init_key), tx=tx,
                              rng=state_key, train_sums=monitor_sums)
    cut = SequenceBuckets(keys=FEATURE_INPUTS, lengths=train_lengths, buckets=buckets,
                          eval_lengths=eval_lengths)
    return Setup(heads, FEATURE_INPUTS, init_heads, tx, cut, sampler, facts)
  dummy = (jnp.zeros((1, width), jnp.int32), jnp.ones((1, width), jnp.int32))
  init, tx = pretrained_init(config, pre, model, dummy, monitor_sums, state_cls)
  cut = SequenceBuckets(keys=TEXT_INPUTS, lengths=train_lengths,
                        buckets=buckets, eval_lengths=eval_lengths)
  tokenizer = pre.tokenizer

  def token_text(ids):
    ids = np.asarray(ids)
    if new_to_old is not None:
      ids = new_to_old[ids]
    return [tokenizer.id_to_token(int(i)) for i in ids.ravel()]
  return Setup(model, TEXT_INPUTS, init, tx, cut, sampler, facts, token_text)
