"""tools.bench.vs_torch: the workloads are the recipe's configs, the bare JAX step trains,
the PyTorch ports compute the same loss and gradients as the flax models (where torch
is installed: it is an optional comparison, absent in CI), and the table formats."""

import importlib.util

import jax
import numpy as np
import optax
import pytest

from tools.bench import vs_torch


def _assert_gradient_close(g_torch, g_jax, name):
  # float32 sums in another order: within 1e-4 of the gradient's scale.
  g_jax = np.asarray(g_jax)
  np.testing.assert_allclose(g_torch, g_jax, atol=1e-4 * np.abs(g_jax).max(), err_msg=name)


def test_workloads_are_the_recipe_configs():
  digits = vs_torch.workload_config("digits_cnn")
  assert digits.model == "small_cnn" and digits.batch_size == 64 and digits.nesterov
  r8, r32 = vs_torch.workload_config("resnet8"), vs_torch.workload_config("resnet32")
  assert (r8.model, r8.resnet_depth, r32.resnet_depth) == ("resnet", 8, 32)
  assert not r8.nesterov and r8.batch_size == 128


def test_bare_step_lowers_the_loss_on_its_batch():
  config = vs_torch.workload_config("digits_cnn")
  model, variables, x, y = vs_torch._model_and_batch(config)  # pylint: disable=protected-access
  call, info = vs_torch._prepare_bare(config, model, variables, x, y)  # pylint: disable=protected-access
  assert info["loss"] == pytest.approx(np.log(10), rel=0.2)  # untrained: about ln 10
  losses = [float(call()) for _ in range(30)]
  # SGD on one batch of 64 random labels: the loss falls well below its start
  assert losses[-1] < 0.7 * info["loss"], losses  # measured: 2.36 -> 1.39


def test_bare_step_with_dropout_draws_new_masks_each_step():
  """The ``jaxloss bare + dropout`` contender (the recipe step's like-for-like reference):
  the text BiLSTM at the recipe's dropout rate, one PRNG split a step."""
  config = vs_torch.workload_config("bilstm")
  assert config.dropout_rate > 0
  off = vs_torch._model_and_batch(config)  # pylint: disable=protected-access
  on = vs_torch._model_and_batch(config, dropout=True)  # pylint: disable=protected-access
  assert (off[0].dropout_rate, on[0].dropout_rate) == (0.0, config.dropout_rate)
  step, (params, stats, opt_state, key, x, y) = vs_torch.bare_program(
      config, *on, dropout=True)
  new_params, _, _, new_key, loss = step(params, stats, opt_state, key, x, y)
  assert not np.array_equal(np.asarray(new_key), np.asarray(key))
  # Same weights and batch, masks from the next key: another loss; without dropout, the
  # loss is a pure function of the weights (the plain bare step's).
  *_, loss_next = step(params, stats, opt_state, new_key, x, y)
  assert np.isfinite(float(loss)) and float(loss) != float(loss_next)
  plain, (p0, s0, o0, x0, y0) = vs_torch.bare_program(config, *off)
  assert float(plain(p0, s0, o0, x0, y0)[-1]) == float(plain(p0, s0, o0, x0, y0)[-1])
  del new_params


def test_joint_nlu_bare_with_dropout_replaces_the_recipe_singletons():
  """The joint NLU model's ``bare + dropout`` keeps the recipe's singleton replacement
  (a word dropout of the words seen once, drawn with the dropout key); without
  dropout it is off, so that the JAX and PyTorch sides compute the same loss."""
  config = vs_torch.workload_config("joint_nlu")
  assert config.singleton_unk_rate == 0.5
  off, *_ = vs_torch._model_and_batch(config)  # pylint: disable=protected-access
  on, variables, x, _ = vs_torch._model_and_batch(config, dropout=True)  # pylint: disable=protected-access
  assert (off.singleton_unk_rate, on.singleton_unk_rate) == (0.0, 0.5)
  start = on.singleton_start
  assert start is not None and 2 < start < on.vocab_size
  ids = np.asarray(x[0])
  assert ((ids >= start) & (ids < on.vocab_size)).any()  # the batch has singletons
  # Train mode with the other dropout off: the draws change only the singletons. A
  # batch without them gives the evaluation logits under every key; with them, the
  # first key already differs (each draw keeps all of them with probability 0.5 ** n).
  only = on.clone(dropout_rate=0.0, word_dropout_rate=0.0)
  n = int(((ids >= start) & (ids < on.vocab_size)).sum())
  assert n >= 10
  common = np.where(ids >= start, 2, ids)  # id 2: a frequent word, not a singleton
  for ids_in, changes in ((common, False), (ids, True)):
    plain = only.apply(variables, ids_in, *x[1:], train=False)["tags"]
    drawn = only.apply(variables, ids_in, *x[1:], train=True,
                       rngs={"dropout": jax.random.PRNGKey(0)})["tags"]
    assert np.allclose(drawn, plain, atol=0) != changes


def test_markdown_rows_and_ratios():
  row = {"workload": "digits_cnn", "model": "SmallCNN(32, 64)", "batch": 64,
         "threads": 1, "status": "ok"}
  result = {"runs": [{"header": {}, "rows": [
      {**row, "contender": vs_torch.BARE, "ms": 4.0, "first_call_s": 2.0, "loss": 2.3},
      {**row, "contender": vs_torch.EAGER, "ms": 6.0, "first_call_s": 0.1,
       "ratio_min": 1.2, "ratio_median": 1.5, "ratio_max": 1.9, "loss_rel_diff": 1e-7},
      {**row, "contender": vs_torch.COMPILED, "status": "failed: no compiler"},
      {**row, "contender": vs_torch.STEP, "ms": 4.2, "ratio_min": 1.0,
       "ratio_median": 1.05, "ratio_max": 1.1, "ratio_to": vs_torch.BARE_DROPOUT}]}]}
  table = vs_torch.markdown(result)
  lines = table.splitlines()
  assert len(lines) == 6
  assert "1.20 / **1.50** / 1.90" in lines[3] and "1.0e-07" in lines[3]
  assert "failed: no compiler" in lines[4]
  assert "÷ jaxloss bare + dropout 1.05" in lines[5]


@pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                    reason="torch is not installed (an optional comparison)")
@pytest.mark.parametrize("workload", ["digits_cnn", "resnet8"])
def test_torch_port_has_the_same_loss_and_gradients(workload):
  import torch  # pylint: disable=g-import-not-at-top
  config = vs_torch.workload_config(workload)
  model, variables, x, y = vs_torch._model_and_batch(config, seed=3)  # pylint: disable=protected-access

  def loss_fn(params):
    logits, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]},
                            x, train=True, mutable=["batch_stats"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
  loss, grads = jax.value_and_grad(loss_fn)(variables["params"])
  port = vs_torch.torch_model(torch, config, variables).train()
  t_loss = torch.nn.functional.cross_entropy(
      port(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))),
      torch.from_numpy(y.astype(np.int64)))
  t_loss.backward()
  # float32 sums over a batch in another order: a few ulps of a loss of ~2.3.
  assert float(t_loss) == pytest.approx(float(loss), rel=1e-5)
  # The first convolution's kernel gradient, HWIO vs OIHW; relative to its scale.
  first = "Conv_0" if config.model != "resnet" else "conv"
  g_jax = np.asarray(grads[first]["kernel"])
  conv = port.convs[0] if config.model != "resnet" else port.conv
  g_torch = conv.weight.grad.numpy().transpose(2, 3, 1, 0)
  np.testing.assert_allclose(g_torch, g_jax, atol=1e-4 * np.abs(g_jax).max())


@pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                    reason="torch is not installed (an optional comparison)")
@pytest.mark.parametrize("workload", ["digits_cnn", "resnet8"])
def test_torch_port_moves_whole_with_to(workload):
  # `--torch_device cuda` moves the port with .to(device); a tensor left out of the
  # module (a closure constant, not a buffer) stays behind and the forward pass fails
  # on the GPU. .to(float64) moves the same tensors, so it shows this without a GPU:
  # the float64 port runs and gives the float32 port's loss.
  import torch  # pylint: disable=g-import-not-at-top
  config = vs_torch.workload_config(workload)
  _, variables, x, y = vs_torch._model_and_batch(config, seed=1)  # pylint: disable=protected-access
  tx = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
  ty = torch.from_numpy(y.astype(np.int64))
  losses = []
  for dtype in (torch.float32, torch.float64):
    port = vs_torch.torch_model(torch, config, variables).train().to(dtype)
    assert {t.dtype for t in (*port.parameters(), *port.buffers())
            if t.is_floating_point()} == {dtype}
    inputs = tx if tx.dtype == torch.uint8 else tx.to(dtype)
    logits = port(inputs)
    assert logits.dtype == dtype
    losses.append(float(torch.nn.functional.cross_entropy(logits, ty)))
  assert losses[1] == pytest.approx(losses[0], rel=1e-5)  # float32 vs float64 rounding


@pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                    reason="torch is not installed (an optional comparison)")
def test_torch_bilstm_port_has_the_same_loss_and_gradients():
  # Real UIT-VSFC sentences of different lengths: the backward LSTM must start at each
  # sentence's last real token and the pooling must skip the padding, on both sides.
  import torch  # pylint: disable=g-import-not-at-top
  config = vs_torch.workload_config("bilstm")
  model, variables, (ids, lengths), y = vs_torch._model_and_batch(config)  # pylint: disable=protected-access
  assert len(set(lengths.tolist())) > 5 and lengths.max() < ids.shape[1]

  def loss_fn(params):
    logits = model.apply({"params": params}, ids, lengths, train=True)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
  loss, grads = jax.value_and_grad(loss_fn)(variables["params"])
  port = vs_torch.torch_model(torch, config, variables).train()
  t_loss = torch.nn.functional.cross_entropy(
      port(*vs_torch.torch_inputs(torch, (ids, lengths))), torch.from_numpy(y.astype(np.int64)))
  t_loss.backward()
  assert float(t_loss) == pytest.approx(float(loss), rel=1e-5)
  enc = grads["BiLSTMEncoder_0"]
  for name, suffix in (("OptimizedLSTMCell_0", ""), ("OptimizedLSTMCell_1", "_reverse")):
    g_jax = np.asarray(enc[name]["ii"]["kernel"]).T  # the input gate's input kernel
    g_torch = getattr(port.lstm, f"weight_ih_l0{suffix}").grad.numpy()[:g_jax.shape[0]]
    np.testing.assert_allclose(g_torch, g_jax, atol=1e-4 * np.abs(g_jax).max())
  g_emb = np.asarray(enc["Embed_0"]["embedding"])
  np.testing.assert_allclose(port.embed.weight.grad.numpy(), g_emb,
                             atol=1e-4 * np.abs(g_emb).max())


@pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                    reason="torch is not installed (an optional comparison)")
def test_torch_sasrec_port_has_the_same_loss_and_gradients():
  # Real Games users (left-padded histories) with uniform negatives: the causal and
  # padding masks, the shared item table and the listwise loss, on both sides.
  import torch  # pylint: disable=g-import-not-at-top
  config = vs_torch.workload_config("sasrec")
  model, variables, x, y = vs_torch._model_and_batch(config)  # pylint: disable=protected-access
  negatives, seq, pos = x
  assert (seq == 0).any() and (seq > 0).any()  # padding and items in the batch

  def loss_fn(params):
    return vs_torch.jax_loss(model.apply({"params": params}, *x, train=True), y)
  loss, grads = jax.value_and_grad(loss_fn)(variables["params"])
  assert float(loss) == pytest.approx(np.log(config.num_candidates), rel=0.05)
  port = vs_torch.torch_model(torch, config, variables).train()
  t_loss = vs_torch.torch_loss(torch, port(*vs_torch.torch_inputs(torch, x)), None)
  t_loss.backward()
  assert float(t_loss) == pytest.approx(float(loss), rel=1e-5)
  for path in ("item_embedding/embedding", "block_0/attention/query/kernel",
               "block_1/ffn_out/kernel"):
    g_jax = grads
    for k in path.split("/"):
      g_jax = g_jax[k]
    _assert_gradient_close(port.p[path].grad.numpy(), g_jax, path)


@pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                    reason="torch is not installed (an optional comparison)")
def test_torch_joint_nlu_port_has_the_same_loss_and_gradients():
  # Real SNIPS sentences of different lengths, with characters: the character CNN's
  # padding and max, both LSTM layers' directions within each length, the sentence
  # vector and the tag loss over real tokens only, on both sides.
  import torch  # pylint: disable=g-import-not-at-top
  config = vs_torch.workload_config("joint_nlu")
  model, variables, x, y = vs_torch._model_and_batch(config)  # pylint: disable=protected-access
  ids, chars, lengths = x
  assert len(set(lengths.tolist())) > 5 and lengths.max() <= ids.shape[1] == 16
  assert (lengths < 16).any() and (chars[..., -1] == 0).any() and (chars > 0).any()

  def loss_fn(params):
    return vs_torch.jax_loss(model.apply({"params": params}, *x, train=True), y)
  loss, grads = jax.value_and_grad(loss_fn)(variables["params"])
  # Untrained: about ln(intents) + ln(tags).
  num_tags = variables["params"]["tag_head"]["bias"].shape[0]
  num_intents = variables["params"]["intent_head"]["bias"].shape[0]
  assert float(loss) == pytest.approx(np.log(num_tags) + np.log(num_intents), rel=0.1)
  port = vs_torch.torch_model(torch, config, variables).train()
  ty = tuple(torch.from_numpy(a.astype(np.int64)) for a in y)
  t_loss = vs_torch.torch_loss(torch, port(*vs_torch.torch_inputs(torch, x)), ty)
  t_loss.backward()
  assert float(t_loss) == pytest.approx(float(loss), rel=1e-5)
  g = variables["params"]
  pairs = {
      "word embedding": (grads["Embed_0"]["embedding"], port.words.weight.grad.numpy()),
      "char conv": (grads["CharCNN_0"]["Conv_0"]["kernel"],
                    port.conv.weight.grad.numpy().transpose(2, 1, 0)),
      # Layer 0's backward cell and layer 1's forward cell: the input gate's kernel.
      "lstm l0 reverse": (np.asarray(grads["OptimizedLSTMCell_1"]["ii"]["kernel"]).T,
                          port.lstm.weight_ih_l0_reverse.grad.numpy()[:config.hidden]),
      "lstm l1": (np.asarray(grads["OptimizedLSTMCell_2"]["ii"]["kernel"]).T,
                  port.lstm.weight_ih_l1.grad.numpy()[:config.hidden]),
      "tag head": (grads["tag_head"]["kernel"], port.tag.weight.grad.numpy().T),
  }
  assert g["Embed_0"]["embedding"].shape == pairs["word embedding"][1].shape
  for name, (g_jax, g_torch) in pairs.items():
    _assert_gradient_close(g_torch, g_jax, name)


@pytest.mark.parametrize("workload", ["digits_cnn", "resnet8"])
def test_forward_program_is_the_bare_steps_loss(workload):
  """``jaxloss forward`` computes the loss the bare step reports before its update
  (batch norm in training mode on ResNet-8), without the gradient."""
  config = vs_torch.workload_config(workload)
  model, variables, x, y = vs_torch._model_and_batch(config)  # pylint: disable=protected-access
  if workload == "resnet8":
    x, y = x[:8], y[:8]
  loss_fn, args = vs_torch.forward_program(config, model, variables, x, y)
  loss, stats = loss_fn(*args)
  step, bare_args = vs_torch.bare_program(config, model, variables, x, y)
  *_, new_stats, _, bare_loss = step(*bare_args)
  # Two compilations of the same float32 sums: equal within a few ulps of ~2.3.
  assert float(loss) == pytest.approx(float(bare_loss), rel=1e-6)
  for a, b in zip(jax.tree.leaves(stats), jax.tree.leaves(new_stats)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_gradient_split_and_its_table():
  row = {"workload": "bilstm", "model": "BiLSTM", "batch": 64, "threads": 1,
         "status": "ok"}
  rows = {c: {**row, "contender": c} for c in (vs_torch.BARE, vs_torch.FORWARD,
                                                vs_torch.EAGER, vs_torch.EAGER_FORWARD)}
  times = {vs_torch.BARE: [10.0, 12.0, 11.0], vs_torch.FORWARD: [4.0, 5.0, 4.0],
           vs_torch.EAGER: [14.0, 13.0, 15.0], vs_torch.EAGER_FORWARD: [2.0, 2.0, 3.0]}
  vs_torch._gradient_split(rows, times)  # pylint: disable=protected-access
  # Per repeat: jaxloss 6, 7, 7 ms; torch 12, 11, 12 ms; ratios 2, 11/7, 12/7.
  assert rows[vs_torch.BARE]["gradient_ms"] == 7.0
  assert rows[vs_torch.EAGER]["gradient_ms"] == 12.0
  eager = rows[vs_torch.EAGER]
  assert (eager["gradient_ratio_min"], eager["gradient_ratio_median"],
          eager["gradient_ratio_max"]) == pytest.approx((11 / 7, 12 / 7, 2.0))
  rows[vs_torch.FORWARD]["ms"] = 4.0
  rows[vs_torch.EAGER_FORWARD].update(ms=2.0, ratio_min=0.5, ratio_median=0.5,
                                      ratio_max=0.75)
  table = vs_torch.split_markdown({"runs": [{"rows": list(rows.values())}]})
  last = table.splitlines()[-1]
  assert last == ("| bilstm | 1 | 4.00 | 2.00 | 0.50 / **0.50** / 0.75 | 7.00 | 12.00 | "
                  "1.57 / **1.71** / 2.00 |")
  # Without the forward contenders there is no split, and no table.
  assert vs_torch.split_markdown({"runs": [{"rows": [rows[vs_torch.EAGER]]}]}) == ""


@pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                    reason="torch is not installed (an optional comparison)")
@pytest.mark.parametrize("workload", ["digits_cnn", "bilstm"])
def test_torch_forward_contender_has_the_same_loss(workload):
  import torch  # pylint: disable=g-import-not-at-top
  config = vs_torch.workload_config(workload)
  model, variables, x, y = vs_torch._model_and_batch(config)  # pylint: disable=protected-access
  _, mine = vs_torch._prepare_forward(config, model, variables, x, y)  # pylint: disable=protected-access
  call, theirs = vs_torch._prepare_torch_forward(torch, config, variables, x, y)  # pylint: disable=protected-access
  assert theirs["loss"] == pytest.approx(mine["loss"], rel=1e-5)
  assert float(call()) == theirs["loss"]  # no update: the same loss every call


@pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                    reason="torch is not installed (an optional comparison)")
def test_padded_lstm_port_runs_every_step():
  """``packed=False`` runs the LSTM over the padding: the same outputs at every real
  position of the forward direction, other outputs in the backward direction (it
  starts at the padding) of a sentence shorter than the batch."""
  import torch  # pylint: disable=g-import-not-at-top
  config = vs_torch.workload_config("bilstm")
  _, variables, (ids, lengths), _ = vs_torch._model_and_batch(config)  # pylint: disable=protected-access
  ports = [vs_torch.torch_model(torch, config, variables, packed=p)
           for p in (True, False)]
  enc = [p.lstm for p in ports]
  x = ports[0].embed(torch.from_numpy(ids.astype(np.int64)))
  tl = torch.from_numpy(lengths.astype(np.int64))
  from tools.bench import torch_ports  # pylint: disable=g-import-not-at-top
  run = torch_ports._packed_lstm  # pylint: disable=protected-access
  with torch.no_grad():
    packed = run(torch, enc[0], x, tl).numpy()
    padded = run(torch, enc[1], x, tl, packed=False).numpy()
  h = packed.shape[-1] // 2
  short = int(np.argmin(lengths))
  assert lengths[short] < ids.shape[1]
  n = int(lengths[short])
  np.testing.assert_allclose(padded[short, :n, :h], packed[short, :n, :h], atol=1e-6)
  assert not np.allclose(padded[short, :n, h:], packed[short, :n, h:], atol=1e-3)
