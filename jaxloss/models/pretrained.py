"""Load a pretrained BERT-family encoder from a local Hugging Face folder.

:func:`load_pretrained` reads a folder in the Hugging Face layout (``config.json``,
``model.safetensors``, optionally ``tokenizer.json``), builds the
:class:`~jaxloss.models.bert.BertEncoder` its config describes and maps the state dict
onto the module's parameter tree by name (see :mod:`jaxloss.models.bert` for the tree).
Nothing is downloaded: the folder is the whole input. Weights are read with
``safetensors.numpy.load_file`` (no pickle, so a ``pytorch_model.bin``-only folder is
refused with a message saying to convert it); the tokenizer with
``tokenizers.Tokenizer.from_file``.

Every tensor is checked against the module: a missing tensor, an unexpected one or one
of the wrong shape is an error that names it. Tensor names may carry the prefix
``bert.`` or ``roberta.`` (a task model's checkpoint, e.g. ``BertForMaskedLM``) or none
(``BertModel``).

References:
  Hugging Face ``transformers``, ``modeling_utils.PreTrainedModel.from_pretrained`` (the
  folder layout and state-dict names); ``safetensors`` (the weights format).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxloss.models.bert import SUPPORTED_MODEL_TYPES, BertEncoder, EncoderConfig

if TYPE_CHECKING:
  import tokenizers

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
TOKENIZER_FILE = "tokenizer.json"
PREFIXES = ("bert.", "roberta.")
# Tensors a checkpoint may hold that the encoder does not use, skipped on load:
# `position_ids` / `token_type_ids` are torch buffers (constant id tables saved with the
# module by older transformers versions, not weights); `cls.` and `lm_head.` are the
# masked-LM / next-sentence pre-training heads of BertForPreTraining /
# RobertaForMaskedLM checkpoints, which transformers' AutoModel drops the same way.
IGNORED_TENSORS = ("embeddings.position_ids", "embeddings.token_type_ids")
IGNORED_PREFIXES = ("cls.", "lm_head.")

PathLike = Union[str, "pathlib.Path"]


@dataclasses.dataclass(frozen=True, eq=False)
class Pretrained:
  """A loaded encoder.

  Attributes:
    module: the :class:`BertEncoder`; ``module.apply({"params": params}, input_ids,
      attention_mask)`` is the last hidden state ``[B, T, H]``.
    params: the parameter tree (a dict of numpy arrays in the requested
      ``param_dtype``).
    tokenizer: the folder's ``tokenizers.Tokenizer`` (from ``tokenizer.json``) with
      padding and truncation switched off (``transformers`` sets them per call too;
      :func:`jaxloss.data.subword.encode_batch` does), or None when the folder has no
      ``tokenizer.json`` (e.g. a bare model; slow-tokenizer files such as
      ``vocab.txt`` alone are not read).
    config: the :class:`EncoderConfig` of ``config.json``.
    path: the folder.
  """
  module: BertEncoder
  params: Dict[str, Any]
  tokenizer: Optional["tokenizers.Tokenizer"]
  config: EncoderConfig
  path: pathlib.Path


def load_pretrained(path: PathLike, *, dtype: Any = jnp.float32,
                    param_dtype: Any = jnp.float32, add_pooler: Optional[bool] = None,
                    require_tokenizer: bool = False) -> Pretrained:
  """Load the encoder, weights and tokenizer of a local Hugging Face folder.

  Args:
    path: the folder (``config.json``, ``model.safetensors`` or a sharded
      ``model.safetensors.index.json``, optionally ``tokenizer.json``).
    dtype: the module's computation dtype.
    param_dtype: the dtype the weights are converted to (float16 weights included).
    add_pooler: give the module the pooler; None = if the checkpoint has pooler
      weights. True without them is a missing-tensor error; False skips them.
    require_tokenizer: raise when there is no ``tokenizer.json`` (otherwise the
      ``tokenizer`` is None).

  Returns:
    A :class:`Pretrained`.

  Raises:
    FileNotFoundError: no folder, no ``config.json``, no ``model.safetensors`` (a
      folder with only ``pytorch_model.bin`` is told to convert it), or no
      ``tokenizer.json`` when ``require_tokenizer``.
    ValueError: an unsupported ``model_type`` (the supported ones are listed) or an
      invalid config; tensors that do not fit the config: each missing, unexpected or
      wrongly shaped tensor is named, with the expected and found shapes.
  """
  folder = pathlib.Path(path)
  if not folder.is_dir():
    raise FileNotFoundError(f"no model folder at {folder}")
  config = _read_config(folder)
  tensors, source = _read_tensors(folder)
  tensors = _strip_prefixes(tensors)
  if add_pooler is None:
    add_pooler = "pooler.dense.weight" in tensors
  module = BertEncoder(config, dtype=dtype, param_dtype=param_dtype,
                       add_pooler=bool(add_pooler))
  params = _to_params(module, tensors, source, param_dtype)
  tokenizer = None
  tok_file = folder / TOKENIZER_FILE
  if tok_file.is_file():
    import tokenizers  # pylint: disable=import-outside-toplevel
    tokenizer = tokenizers.Tokenizer.from_file(str(tok_file))
    tokenizer.no_padding()
    tokenizer.no_truncation()
  elif require_tokenizer:
    raise FileNotFoundError(f"no {TOKENIZER_FILE} in {folder} (the fast-tokenizer file "
                            "is required)")
  return Pretrained(module=module, params=params, tokenizer=tokenizer, config=config,
                    path=folder)


def _read_config(folder: pathlib.Path) -> EncoderConfig:
  file = folder / CONFIG_FILE
  if not file.is_file():
    raise FileNotFoundError(f"no {CONFIG_FILE} in {folder}")
  with open(file, encoding="utf-8") as f:
    d = json.load(f)
  model_type = d.get("model_type")
  if model_type not in SUPPORTED_MODEL_TYPES:
    raise ValueError(f"{file}: unsupported model_type {model_type!r}; supported: "
                     f"{', '.join(SUPPORTED_MODEL_TYPES)}")
  try:
    return EncoderConfig.from_hf_dict(d)
  except ValueError as e:
    raise ValueError(f"{file}: {e}") from e


def _read_tensors(folder: pathlib.Path) -> Tuple[Dict[str, np.ndarray], str]:
  """``({name: array}, file name for messages)``."""
  from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
  file = folder / WEIGHTS_FILE
  if file.is_file():
    return load_file(str(file)), str(file)
  index = folder / WEIGHTS_INDEX_FILE
  if index.is_file():
    with open(index, encoding="utf-8") as f:
      shards = sorted(set(json.load(f)["weight_map"].values()))
    tensors = {}
    for shard in shards:
      if not (folder / shard).is_file():
        raise FileNotFoundError(f"{index} names {shard}, which is not in {folder}")
      tensors.update(load_file(str(folder / shard)))
    return tensors, str(index)
  others = [n for n in ("pytorch_model.bin", "tf_model.h5", "flax_model.msgpack")
            if (folder / n).is_file()]
  hint = (f" (found {', '.join(others)}: safetensors is required; convert the "
          "weights, e.g. with transformers' save_pretrained(safe_serialization=True))"
          if others else "")
  raise FileNotFoundError(f"no {WEIGHTS_FILE} in {folder}{hint}")


def _strip_prefixes(tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
  out = {}
  for name, value in tensors.items():
    for prefix in PREFIXES:
      if name.startswith(prefix):
        name = name[len(prefix):]
        break
    out[name] = value
  return out


def _hf_to_path(name: str) -> Optional[Tuple[Tuple[str, ...], bool]]:
  """``(param path, transpose)`` of a state-dict name, or None if it has no place."""
  parts = name.split(".")
  if len(parts) >= 3 and parts[0] == "encoder" and parts[1] == "layer":
    if not parts[2].isdigit():
      return None
    parts = ["encoder", f"layer_{int(parts[2])}"] + parts[3:]
  if len(parts) < 2:
    return None
  *modules, leaf = parts
  owner = modules[-1]
  if owner.endswith("_embeddings"):
    return (tuple(modules) + ("embedding",), False) if leaf == "weight" else None
  if owner == "LayerNorm":
    leaf = {"weight": "scale", "gamma": "scale", "beta": "bias", "bias": "bias"}.get(leaf)
    return (tuple(modules) + (leaf,), False) if leaf else None
  if leaf == "weight":
    return tuple(modules) + ("kernel",), True
  if leaf == "bias":
    return tuple(modules) + ("bias",), False
  return None


def _path_to_hf(path: Tuple[str, ...]) -> str:
  """The ``transformers`` state-dict name of a param path (for messages)."""
  parts = []
  for p in path:
    if p.startswith("layer_") and p[6:].isdigit():
      parts += ["layer", p[6:]]
    else:
      parts.append("weight" if p in ("kernel", "embedding", "scale") else p)
  return ".".join(parts)


def _to_params(module: BertEncoder, tensors: Dict[str, np.ndarray], source: str,
               param_dtype: Any) -> Dict[str, Any]:
  ids = jnp.zeros((1, 1), jnp.int32)
  shapes = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), ids, ids)["params"])
  expected = {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(shapes).items()}
  flat, unexpected, wrong = {}, [], []
  for name in sorted(tensors):
    if name in IGNORED_TENSORS or name.startswith(IGNORED_PREFIXES):
      continue
    if name.startswith("pooler.") and not module.add_pooler:
      continue  # the caller asked for no pooler
    target = _hf_to_path(name)
    if target is None or target[0] not in expected:
      unexpected.append(name)
      continue
    key, transpose = target
    value = tensors[name]
    want = expected[key][::-1] if transpose else expected[key]
    if tuple(value.shape) != want:
      wrong.append(f"{name!r} has shape {tuple(value.shape)}, expected {want}")
      continue
    value = value.T if transpose else value
    flat[key] = np.ascontiguousarray(value.astype(param_dtype))
  missing = [_path_to_hf(k) for k in expected if k not in flat]
  problems = []
  if missing:
    problems.append(f"missing tensor(s) {_some(missing)}")
  if unexpected:
    problems.append(f"unexpected tensor(s) {_some(unexpected)}")
  if wrong:
    problems.append(f"wrong shape: {_some(wrong, quote=False)}")
  if problems:
    raise ValueError(f"{source} does not fit its config.json: " + "; ".join(problems))
  return traverse_util.unflatten_dict(flat)


def _some(names, quote: bool = True, limit: int = 6) -> str:
  shown = [repr(n) if quote else n for n in names[:limit]]
  more = f" and {len(names) - limit} more" if len(names) > limit else ""
  return ", ".join(shown) + more


def truncate_layers(pre: Pretrained, num_layers: int) -> Pretrained:
  """``pre`` with only its bottom ``num_layers`` Transformer layers (the embeddings,
  ``layer_0 .. layer_{num_layers-1}`` and the pooler kept): a smaller, faster encoder
  for smoke tests and quick baselines (layer dropping as in Sajjad et al., *On the
  Effect of Dropping Layers of Pre-trained Transformer Models*, 2023).

  Raises:
    ValueError: ``num_layers`` outside ``1 .. config.num_hidden_layers``.
  """
  total = pre.config.num_hidden_layers
  if not 1 <= num_layers <= total:
    raise ValueError(f"num_layers must be in 1..{total} (the layers of {pre.path}), "
                     f"got {num_layers}")
  config = dataclasses.replace(pre.config, num_hidden_layers=int(num_layers))
  module = pre.module.clone(config=config)
  params = dict(pre.params)
  params["encoder"] = {k: v for k, v in pre.params["encoder"].items()
                       if int(k.split("_")[-1]) < num_layers}
  return dataclasses.replace(pre, module=module, params=params, config=config)


def shared_models_dir() -> pathlib.Path:
  """``../shared/models`` beside the repository that holds this package (where the
  project's reference encoders are; see its README)."""
  repo = pathlib.Path(__file__).resolve().parents[2]
  return (repo / ".." / "shared" / "models").resolve()


def resolve_model_dir(name: PathLike) -> pathlib.Path:
  """The folder of ``name``: ``name`` itself when it is a folder, else
  ``shared_models_dir() / name`` when that is one (so a config may say
  ``all-MiniLM-L6-v2``).

  Raises:
    FileNotFoundError: neither exists (both paths named).
  """
  path = pathlib.Path(name).expanduser()
  if path.is_dir():
    return path
  shared = shared_models_dir() / str(name)
  if shared.is_dir():
    return shared
  raise FileNotFoundError(f"no model folder {str(name)!r}: neither {path.resolve()} nor "
                          f"{shared} exists (give the path of a Hugging Face folder)")


def keep_vocabulary(pre: Pretrained, ids: np.ndarray) -> Tuple[Pretrained, np.ndarray]:
  """``pre`` with only the word-embedding rows of the sub-word ids in ``ids`` (and of
  every id up to ``config.pad_token_id``, so that the padding id and the positions
  RoBERTa types derive from it are unchanged), and the map from old ids to new ones.

  Fine-tuning on a fixed set of texts changes only the rows of the sub-words those
  texts use (the others get no gradient; decoupled weight decay only shrinks them), so
  keeping the used rows trains the same model, with an embedding table, optimizer
  state and cross-device gradient all-reduce a fraction of the size (multilingual-e5:
  27,703 rows; 80 UIT-ViSFD reviews use 824 of them). The trimmed encoder reads
  only ids remapped with the returned table; its ``tokenizer`` is the original one.
  Vocabulary trimming of multilingual encoders as in Abdaoui et al., *Load What You
  Need: Smaller Versions of Multilingual BERT* (SustaiNLP 2020).

  Args:
    pre: the loaded encoder; its word-embedding table ``[vocab_size, H]`` (any float
      dtype, kept) is sliced on the host.
    ids: int array of any shape: the sub-word ids the run will feed.

  Returns:
    ``(trimmed, old_to_new)``: ``old_to_new`` is int32 ``[vocab_size]``, -1 at the
    dropped ids; ``old_to_new[ids]`` are the trimmed encoder's inputs.

  Raises:
    ValueError: an id outside ``[0, vocab_size)``.
  """
  vocab = pre.config.vocab_size
  ids = np.unique(np.asarray(ids, np.int64))
  if ids.size and (ids[0] < 0 or ids[-1] >= vocab):
    bad = ids[0] if ids[0] < 0 else ids[-1]
    raise ValueError(f"sub-word id {bad} outside [0, {vocab}) (the vocabulary of "
                     f"{pre.path})")
  keep = np.union1d(np.arange(pre.config.pad_token_id + 1), ids)
  old_to_new = np.full(vocab, -1, np.int32)
  old_to_new[keep] = np.arange(keep.size, dtype=np.int32)
  config = dataclasses.replace(pre.config, vocab_size=int(keep.size))
  table = pre.params["embeddings"]["word_embeddings"]["embedding"]
  params = dict(pre.params)
  params["embeddings"] = {**pre.params["embeddings"],
                          "word_embeddings": {"embedding": np.asarray(table)[keep]}}
  trimmed = dataclasses.replace(pre, module=pre.module.clone(config=config),
                                params=params, config=config)
  return trimmed, old_to_new
