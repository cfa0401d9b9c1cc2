"""Pretrained BERT-family encoders loaded from ../shared/models against the outputs of
PyTorch + transformers (each folder's reference_outputs.json): token ids, hidden states,
pooler, mean-pooled sentence embeddings; the loader's errors on broken folders; bf16;
gradients. Skipped, with the reason, when ../shared/models is absent. Each model is
compiled once (module-scoped fixtures)."""

import json
import math
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tokenizers
from safetensors.numpy import load_file, save_file

from jaxloss.data.subword import resolve_pad_id
from jaxloss.models import BertEncoder, EncoderConfig, Pretrained, load_pretrained
from jaxloss.models.bert import mean_pool

MODELS = Path(__file__).resolve().parents[1] / ".." / "shared" / "models"
MINILM, E5, ROBERTA = "all-MiniLM-L6-v2", "multilingual-e5-small", "tiny-random-roberta"
NAMES = (MINILM, E5, ROBERTA)

pytestmark = pytest.mark.skipif(
    not all((MODELS / n / "reference_outputs.json").is_file() for n in NAMES),
    reason="needs the pretrained encoders of ../shared/models beside the repository "
    f"({', '.join(NAMES)})")

# float32 against float32: the hidden states agree to ~2e-6 (measured), so 1e-4 per
# value. A row sum adds H = 384 values whose errors are independent, so its error grows
# like sqrt(H) times theirs: 1e-4 * sqrt(H) ≈ 2e-3 (measured ≤ 1.7e-5; the reference
# sums are rounded to 5 decimals).
ATOL = 1e-4


@pytest.fixture(scope="module")
def loaded():
  """``loaded(name) -> (Pretrained, reference dict, hidden [B, T, H], pooled or None)``,
  each model loaded and run once on its reference ids."""
  cache = {}

  def get(name):
    if name not in cache:
      pre = load_pretrained(MODELS / name)
      with open(MODELS / name / "reference_outputs.json", encoding="utf-8") as f:
        ref = json.load(f)
      ids = np.asarray(ref["input_ids"], np.int32)
      mask = np.asarray(ref["attention_mask"], np.int32)
      hidden, pooled = jax.jit(lambda p, i, m: pre.module.apply(
          {"params": p}, i, m, method="encode"))(pre.params, ids, mask)
      cache[name] = (pre, ref, np.asarray(hidden),
                     None if pooled is None else np.asarray(pooled))
    return cache[name]
  return get


@pytest.mark.parametrize("name", [MINILM, E5])
def test_tokenizer_gives_the_reference_ids(loaded, name):
  pre, ref, _, _ = loaded(name)
  assert pre.tokenizer.padding is None and pre.tokenizer.truncation is None
  tok = tokenizers.Tokenizer.from_str(pre.tokenizer.to_str())
  pad = resolve_pad_id(tok)
  tok.enable_padding(pad_id=pad, pad_token=tok.id_to_token(pad))  # to the longest
  enc = tok.encode_batch(ref["sentences"])
  np.testing.assert_array_equal([e.ids for e in enc], ref["input_ids"])
  np.testing.assert_array_equal([e.attention_mask for e in enc], ref["attention_mask"])
  assert [e.tokens for e in enc] == ref["tokens"]


def test_folder_without_tokenizer_gives_none(loaded):
  pre, _, _, _ = loaded(ROBERTA)
  assert isinstance(pre, Pretrained) and pre.tokenizer is None
  assert pre.path == MODELS / ROBERTA and pre.config.model_type == "roberta"


@pytest.mark.parametrize("name", [MINILM, E5])
def test_hidden_states_match_transformers(loaded, name):
  pre, ref, hidden, _ = loaded(name)
  first4 = np.asarray(ref["last_hidden_state_first4"])
  np.testing.assert_allclose(hidden[..., :4], first4, rtol=0, atol=ATOL)
  h = pre.config.hidden_size
  np.testing.assert_allclose(hidden.sum(-1), ref["last_hidden_state_sum"], rtol=0,
                             atol=ATOL * math.sqrt(h))


def test_roberta_positions_full_state_and_pooler(loaded):
  pre, ref, hidden, pooled = loaded(ROBERTA)
  cfg = pre.config
  assert (cfg.roberta_positions, cfg.position_offset, cfg.max_length) == (True, 2, 38)
  assert cfg.layer_norm_eps == 1e-5 and cfg.type_vocab_size == 1
  np.testing.assert_allclose(hidden, ref["last_hidden_state"], rtol=0, atol=ATOL)
  np.testing.assert_allclose(pooled, ref["pooler_output"], rtol=0, atol=ATOL)


def test_pooler_and_sentence_embeddings(loaded):
  pre, ref, hidden, pooled = loaded(MINILM)
  assert pre.module.add_pooler
  np.testing.assert_allclose(pooled[:, :4], ref["pooler_output_first4"], rtol=0,
                             atol=ATOL)
  for name in (MINILM, E5):
    pre, ref, hidden, _ = loaded(name)
    emb = np.asarray(mean_pool(hidden, np.asarray(ref["attention_mask"])))
    emb = emb / np.linalg.norm(emb, axis=-1, keepdims=True)
    np.testing.assert_allclose(emb, ref["sentence_embedding_mean_pooled_l2"], rtol=0,
                               atol=ATOL)


def test_param_tree_mirrors_the_checkpoint(loaded):
  pre, _, _, _ = loaded(E5)  # no pooler stored; float16 matrices converted
  p = pre.params
  assert not pre.module.add_pooler and sorted(p) == ["embeddings", "encoder"]
  assert sorted(p["encoder"], key=lambda k: int(k[6:])) == [f"layer_{i}"
                                                             for i in range(12)]
  assert p["embeddings"]["word_embeddings"]["embedding"].shape == (27703, 384)
  layer = p["encoder"]["layer_11"]
  assert layer["attention"]["self"]["query"]["kernel"].shape == (384, 384)
  assert layer["intermediate"]["dense"]["kernel"].shape == (384, 1536)  # [in, out]
  assert layer["output"]["LayerNorm"]["scale"].shape == (384,)
  assert {leaf.dtype for leaf in jax.tree.leaves(p)} == {np.dtype(np.float32)}
  # Exactly the float16 values, transposed to [in, out].
  raw = load_file(str(MODELS / E5 / "model.safetensors"))
  w = raw["encoder.layer.11.intermediate.dense.weight"]
  assert w.dtype == np.float16
  np.testing.assert_array_equal(layer["intermediate"]["dense"]["kernel"],
                                w.T.astype(np.float32))


def test_gradients_reach_every_parameter(loaded):
  pre, ref, _, _ = loaded(ROBERTA)
  ids = jnp.asarray(ref["input_ids"], jnp.int32)
  mask = jnp.asarray(ref["attention_mask"], jnp.int32)
  # A random projection: the sum of a LayerNorm's outputs alone has ~zero gradient
  # (its scale starts at 1 in this random model).
  r_hidden = jax.random.normal(jax.random.PRNGKey(1), ids.shape + (32,))
  r_pooled = jax.random.normal(jax.random.PRNGKey(2), (ids.shape[0], 32))

  def loss(params):
    h, pooled = pre.module.apply({"params": params}, ids, mask, method="encode")
    return jnp.sum(h * r_hidden) + jnp.sum(pooled * r_pooled)

  grads = jax.jit(jax.grad(loss))(pre.params)
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    g = np.asarray(g)
    assert np.all(np.isfinite(g)), path
    assert np.abs(g).max() > 0, path
  # Only the word embeddings of ids in the batch get a gradient.
  g_words = np.asarray(grads["embeddings"]["word_embeddings"]["embedding"])
  used = np.zeros(120, bool)
  used[np.unique(ref["input_ids"])] = True
  assert np.all(np.abs(g_words[~used]).max(-1) == 0)
  assert np.all(np.abs(g_words[used]).max(-1) > 0)


def test_keep_vocabulary_is_the_same_encoder_on_remapped_ids(loaded):
  """keep_vocabulary: the trimmed RoBERTa (pad id 1: its positions are derived from the
  pad id, which must keep its value) on remapped ids gives the full encoder's hidden
  states and, row for kept row, its word-embedding gradient; every other gradient is
  the same too. The two programs gather from tables of different sizes and sum the same
  terms, so they agree to float32 rounding (1e-6 relative to values of ~1)."""
  from jaxloss.models.pretrained import keep_vocabulary  # pylint: disable=g-import-not-at-top
  pre, ref, hidden, _ = loaded(ROBERTA)
  ids = np.asarray(ref["input_ids"], np.int32)
  mask = jnp.asarray(ref["attention_mask"], jnp.int32)
  small, old_to_new = keep_vocabulary(pre, ids[np.asarray(mask) > 0])
  kept = np.flatnonzero(old_to_new >= 0)
  assert small.config.vocab_size == kept.size < pre.config.vocab_size
  assert old_to_new[pre.config.pad_token_id] == pre.config.pad_token_id == 1
  assert np.array_equal(old_to_new[kept], np.arange(kept.size))
  r = jax.random.normal(jax.random.PRNGKey(3), ids.shape + (32,))

  def run(p, module, i):
    def loss(q):
      return jnp.sum(module.apply({"params": q}, i, mask) * r)
    return jax.jit(jax.value_and_grad(loss))(p)

  (full_loss, g_full), (small_loss, g_small) = (
      run(pre.params, pre.module, jnp.asarray(ids)),
      run(small.params, small.module, jnp.asarray(old_to_new[ids])))
  np.testing.assert_allclose(small_loss, full_loss, rtol=1e-6)
  np.testing.assert_allclose(
      small.module.apply({"params": small.params}, old_to_new[ids], mask), hidden,
      rtol=1e-5, atol=1e-6)
  words = lambda g: np.asarray(g["embeddings"]["word_embeddings"]["embedding"])
  np.testing.assert_allclose(words(g_small), words(g_full)[kept], rtol=1e-5, atol=1e-6)
  assert np.all(np.delete(words(g_full), kept, axis=0) == 0)  # what was dropped
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(g_small),
                          jax.tree.leaves(g_full)):
    if "word_embeddings" not in jax.tree_util.keystr(path):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=str(path))
  with pytest.raises(ValueError, match="outside"):
    keep_vocabulary(pre, np.array([0, 120]))


def test_remat_gives_the_same_values_and_gradients(loaded):
  """BertEncoder(remat=True) recomputes each layer in the backward pass: same params,
  same hidden states, same gradients -- with dropout on, whose masks the replay must
  draw again identically. Tolerance: float32 sums over <= 64 features re-associated by
  a different XLA program, |x| <= ~10: a few ulp of 10, 1e-5 relative."""
  pre, ref, _, _ = loaded(ROBERTA)
  ids = jnp.asarray(ref["input_ids"], jnp.int32)
  mask = jnp.asarray(ref["attention_mask"], jnp.int32)
  remat = pre.module.clone(remat=True)
  r = jax.random.normal(jax.random.PRNGKey(1), ids.shape + (32,))

  def loss(module):
    def f(params):
      h = module.apply({"params": params}, ids, mask, deterministic=False,
                       rngs={"dropout": jax.random.PRNGKey(3)})
      return jnp.sum(h * r), h
    return jax.jit(jax.value_and_grad(f, has_aux=True))

  (va, ha), ga = loss(pre.module)(pre.params)
  (vb, hb), gb = loss(remat)(pre.params)
  np.testing.assert_allclose(np.asarray(hb), np.asarray(ha), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(float(vb), float(va), rtol=1e-5)
  # The attention key bias's exact gradient is 0 (softmax is invariant to a shift
  # shared by every key): what both programs give is rounding noise of terms of the
  # order of the other gradients, so it is bounded by their scale, not its own.
  overall = max(float(np.abs(np.asarray(a)).max()) for a in jax.tree.leaves(ga))
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(ga), jax.tree.leaves(gb)):
    key_bias = "'key'" in str(path) and "'bias'" in str(path)
    scale = overall if key_bias else float(np.abs(np.asarray(a)).max()) + 1e-12
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=0, atol=1e-5 * scale,
                               err_msg=str(path))
  assert "remat" in str(jax.make_jaxpr(jax.grad(
      lambda p: jnp.sum(remat.apply({"params": p}, ids, mask))))(pre.params))


def test_padding_and_dropout(loaded):
  pre, ref, hidden, _ = loaded(ROBERTA)
  ids = np.asarray(ref["input_ids"], np.int32)
  mask = np.asarray(ref["attention_mask"], np.int32)
  apply = jax.jit(lambda p, i, m, rng, deterministic: pre.module.apply(
      {"params": p}, i, m, deterministic=deterministic, rngs={"dropout": rng}),
                  static_argnames="deterministic")
  # More padding changes nothing at the real tokens (positions skip padding).
  more = np.concatenate([ids, np.ones((3, 4), np.int32)], 1)
  more_mask = np.concatenate([mask, np.zeros((3, 4), np.int32)], 1)
  h = np.asarray(apply(pre.params, more, more_mask, jax.random.PRNGKey(0),
                       deterministic=True))
  np.testing.assert_allclose(h[:, :12][mask > 0], hidden[mask > 0], rtol=0, atol=1e-5)
  # Dropout with deterministic=False and a "dropout" rng.
  dropped = np.asarray(apply(pre.params, ids, mask, jax.random.PRNGKey(0),
                             deterministic=False))
  assert np.abs(dropped - hidden).max() > 1e-2


def test_too_long_a_sequence_raises(loaded):
  pre, _, _, _ = loaded(ROBERTA)  # 40 positions, offset 2: at most 38 tokens
  shape = lambda t: jax.eval_shape(lambda p: pre.module.apply(
      {"params": p}, jnp.zeros((1, t), jnp.int32), jnp.ones((1, t), jnp.int32)),
                                   pre.params).shape
  assert shape(38) == (1, 38, 32)
  with pytest.raises(ValueError, match=r"length 39 .*maximum of 38 .* 40 minus the "
                     r"RoBERTa offset 2"):
    shape(39)
  cfg = EncoderConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1,
                      num_attention_heads=2, intermediate_size=8,
                      max_position_embeddings=6)
  init = lambda t: jax.eval_shape(BertEncoder(cfg).init, jax.random.PRNGKey(0),
                                  jnp.zeros((1, t), jnp.int32))
  init(6)
  with pytest.raises(ValueError, match="length 7 exceeds the model's maximum of 6"):
    init(7)


def test_bfloat16_stays_close():
  """bf16 keeps 8 significant bits: each stored activation is off by up to 2^-9
  relative (~0.01 at |h| ≈ 5), and six layers compound it a few times over, so
  0.05 on the hidden states (measured 0.02) and cosine 0.999 on the sentence
  embeddings (measured 0.99995) -- 500x looser than float32."""
  pre = load_pretrained(MODELS / MINILM, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
  assert {leaf.dtype for leaf in jax.tree.leaves(pre.params)} == {
      np.dtype(jnp.bfloat16)}
  with open(MODELS / MINILM / "reference_outputs.json", encoding="utf-8") as f:
    ref = json.load(f)
  mask = np.asarray(ref["attention_mask"], np.int32)
  h = jax.jit(lambda p: pre.module.apply({"params": p}, np.asarray(ref["input_ids"]),
                                         mask))(pre.params)
  assert h.dtype == jnp.bfloat16
  h = np.asarray(h.astype(jnp.float32))
  assert np.all(np.isfinite(h))
  real = mask > 0
  np.testing.assert_allclose(h[..., :4][real],
                             np.asarray(ref["last_hidden_state_first4"])[real],
                             rtol=0, atol=0.05)
  emb = np.asarray(mean_pool(h, mask))
  emb = emb / np.linalg.norm(emb, axis=-1, keepdims=True)
  cos = np.sum(emb * np.asarray(ref["sentence_embedding_mean_pooled_l2"]), -1)
  assert cos.min() > 0.999


# ------------------------------------------------------------------ broken folders
@pytest.fixture
def folder(tmp_path):
  """A writable copy of the tiny RoBERTa folder and its tensors."""
  dst = tmp_path / "model"
  dst.mkdir()
  for f in ("config.json", "model.safetensors"):
    shutil.copy(MODELS / ROBERTA / f, dst / f)
  return dst


def _rewrite(folder, edit):
  tensors = load_file(str(folder / "model.safetensors"))
  edit(tensors)
  save_file(tensors, str(folder / "model.safetensors"))


def _edit_config(folder, **changes):
  cfg = json.loads((folder / "config.json").read_text())
  cfg.update(changes)
  (folder / "config.json").write_text(json.dumps(cfg))


def test_missing_files(folder, tmp_path):
  with pytest.raises(FileNotFoundError, match="no model folder"):
    load_pretrained(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match="tokenizer.json"):
    load_pretrained(folder, require_tokenizer=True)
  (folder / "model.safetensors").rename(folder / "other.safetensors")
  with pytest.raises(FileNotFoundError, match="no model.safetensors in"):
    load_pretrained(folder)
  (folder / "pytorch_model.bin").write_bytes(b"not read")
  with pytest.raises(FileNotFoundError, match="pytorch_model.bin.*safetensors is "
                     "required"):
    load_pretrained(folder)
  (folder / "config.json").unlink()
  with pytest.raises(FileNotFoundError, match="no config.json in"):
    load_pretrained(folder)


def test_bad_config(folder):
  _edit_config(folder, model_type="gpt2")
  with pytest.raises(ValueError, match=r"config.json: unsupported model_type 'gpt2'; "
                     r"supported: bert, roberta, xlm-roberta, camembert"):
    load_pretrained(folder)
  _edit_config(folder, model_type="roberta", hidden_act="swish")
  with pytest.raises(ValueError, match="config.json: unsupported hidden_act 'swish'"):
    load_pretrained(folder)
  _edit_config(folder, hidden_act="gelu", position_embedding_type="relative_key")
  with pytest.raises(ValueError, match="position_embedding_type 'relative_key'"):
    load_pretrained(folder)


def test_missing_unexpected_and_misshapen_tensors(folder):
  _rewrite(folder, lambda t: t.pop("encoder.layer.1.output.dense.bias"))
  with pytest.raises(ValueError, match=r"model.safetensors does not fit its "
                     r"config.json: missing tensor\(s\) 'encoder.layer.1.output.dense"
                     r".bias'$"):
    load_pretrained(folder)
  _rewrite(folder, lambda t: t.update({
      "encoder.layer.1.output.dense.bias": np.zeros(32, np.float32),
      "encoder.layer.2.output.dense.bias": np.zeros(32, np.float32)}))
  with pytest.raises(ValueError, match=r"unexpected tensor\(s\) "
                     r"'encoder.layer.2.output.dense.bias'$"):
    load_pretrained(folder)
  _rewrite(folder, lambda t: t.update({
      "encoder.layer.2.output.dense.bias": np.zeros(0, np.float32),
      "encoder.layer.0.attention.self.query.weight": np.zeros((32, 16), np.float32)}))
  with pytest.raises(ValueError) as err:
    load_pretrained(folder)
  msg = str(err.value)
  assert "'encoder.layer.0.attention.self.query.weight' has shape (32, 16), " \
         "expected (32, 32)" in msg and "encoder.layer.2.output.dense.bias" in msg
  assert "model.safetensors" in msg


def test_prefixes_harmless_extras_and_pooler_choice(folder, loaded):
  pre, ref, hidden, _ = loaded(ROBERTA)

  def prefix(t):
    items = {"roberta." + k: v for k, v in t.items()}
    items["roberta.embeddings.position_ids"] = np.arange(40, dtype=np.int64)[None]
    items["lm_head.bias"] = np.zeros(120, np.float32)  # a pre-training head
    t.clear()
    t.update(items)
  _rewrite(folder, prefix)
  again = load_pretrained(folder)
  assert again.module.add_pooler
  for a, b in zip(jax.tree.leaves(again.params), jax.tree.leaves(pre.params)):
    np.testing.assert_array_equal(a, b)
  bare = load_pretrained(folder, add_pooler=False)
  assert "pooler" not in bare.params
  with pytest.raises(ValueError, match="no pooler"):
    bare.module.apply({"params": bare.params}, hidden, method="pool")
  _rewrite(folder, lambda t: [t.pop(k) for k in list(t) if ".pooler." in k])
  assert not load_pretrained(folder).module.add_pooler
  with pytest.raises(ValueError, match=r"missing tensor\(s\) 'pooler.dense.weight', "
                     r"'pooler.dense.bias'|missing tensor\(s\) 'pooler.dense.bias', "
                     r"'pooler.dense.weight'"):
    load_pretrained(folder, add_pooler=True)


def test_config_from_hf_dict():
  bert = EncoderConfig.from_hf_dict({"model_type": "bert", "hidden_size": 64,
                                     "num_attention_heads": 4})
  assert (bert.roberta_positions, bert.position_offset, bert.max_length) == (False, 0,
                                                                             512)
  assert bert.pad_token_id == 0 and bert.intermediate_size == 3072
  xlmr = EncoderConfig.from_hf_dict({"model_type": "xlm-roberta",
                                     "max_position_embeddings": 514})
  assert (xlmr.pad_token_id, xlmr.max_length) == (1, 512)
  with pytest.raises(ValueError, match="not a multiple of num_attention_heads"):
    EncoderConfig(hidden_size=30, num_attention_heads=4)
  with pytest.raises(ValueError, match="no model_type"):
    EncoderConfig.from_hf_dict({})
