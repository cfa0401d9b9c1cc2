"""PyTorch ports of the recipes' models for ``tools.bench.vs_torch``, built on the very
same weights as the flax models (PyTorch is an optional comparison, never a dependency:
every function takes the ``torch`` module as its first argument).

Each port is tested equal to its flax model in loss and gradients
(``tests/tools/bench_vs_torch_test.py``).
"""

from __future__ import annotations

import numpy as np


def torch_model(torch, config, variables, packed: bool = True):
  """A PyTorch port of the workload's flax model holding the same weights (NCHW).

  ``packed=False`` (the BiLSTM models only): the LSTM runs over every padded step, as
  a ``lax.scan`` does, and its backward direction starts at the padding, so the loss
  is not the flax model's; for timing the same work as jaxloss's scans."""
  nn, F = torch.nn, torch.nn.functional
  params, stats = variables["params"], variables.get("batch_stats", {})

  def conv(p, cin, cout, stride, padding):
    m = nn.Conv2d(cin, cout, 3, stride=stride, padding=padding, bias=False)
    m.weight.data = torch.from_numpy(np.asarray(p["kernel"]).transpose(3, 2, 0, 1).copy())
    return m

  def bn(p, s, c):
    # flax: running = 0.9 running + 0.1 batch, eps 1e-5; torch's momentum is the 0.1.
    m = nn.BatchNorm2d(c, eps=1e-5, momentum=0.1)
    m.weight.data = torch.from_numpy(np.asarray(p["scale"]).copy())
    m.bias.data = torch.from_numpy(np.asarray(p["bias"]).copy())
    m.running_mean.data = torch.from_numpy(np.asarray(s["mean"]).copy())
    m.running_var.data = torch.from_numpy(np.asarray(s["var"]).copy())
    return m

  if config.get("trainer") == "rerank":
    return _torch_sasrec(torch, params)
  if config.get("trainer") == "nlu":
    return _torch_joint_nlu(torch, params, packed)
  if config.model == "bilstm":
    return _torch_bilstm(torch, params, packed)
  if config.model != "resnet":
    widths = tuple(config.model_widths)

    class SmallCNN(nn.Module):
      def __init__(self):
        super().__init__()
        cins = (1, *widths[:-1])
        # flax's "SAME" padding: 1 on both sides at stride 1; at stride 2 on an even
        # size, 0 before and 1 after (done with F.pad in forward).
        self.convs = nn.ModuleList(
            conv(params[f"Conv_{i}"], cins[i], w, 1 if i == 0 else 2, 1 if i == 0 else 0)
            for i, w in enumerate(widths))
        self.bns = nn.ModuleList(bn(params[f"BatchNorm_{i}"], stats[f"BatchNorm_{i}"], w)
                                 for i, w in enumerate(widths))
        self.fc = _torch_linear(torch, params["Dense_0"])

      def forward(self, x):
        for i, (c, b) in enumerate(zip(self.convs, self.bns)):
          x = F.relu(b(c(x if i == 0 else F.pad(x, (0, 1, 0, 1)))))
        return self.fc(x.mean(dim=(2, 3)))
    return SmallCNN()

  depth, widths = int(config.resnet_depth), (16, 32, 64)

  class Block(nn.Module):
    def __init__(self, p, s, cin, cout, stride):
      super().__init__()
      self.stride, self.extra = stride, cout - cin
      self.conv1, self.bn1 = conv(p["conv1"], cin, cout, stride, 1), bn(p["bn1"], s["bn1"], cout)
      self.conv2, self.bn2 = conv(p["conv2"], cout, cout, 1, 1), bn(p["bn2"], s["bn2"], cout)

    def forward(self, x):
      y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
      short = x
      if self.stride != 1 or self.extra:  # option A: subsample, zero-pad the channels
        short = F.pad(x[:, :, ::self.stride, ::self.stride],
                      (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))
      return F.relu(y + short)

  class ResNet(nn.Module):
    def __init__(self):
      super().__init__()
      self.conv, self.bn = conv(params["conv"], 3, 16, 1, 1), bn(params["bn"], stats["bn"], 16)
      blocks, cin = [], 16
      for stage, w in enumerate(widths):
        for k in range((depth - 2) // 6):
          name = f"stage{stage + 1}_block{k + 1}"
          blocks.append(Block(params[name], stats[name], cin, w,
                              2 if stage > 0 and k == 0 else 1))
          cin = w
      self.blocks = nn.Sequential(*blocks)
      self.fc = _torch_linear(torch, params["classifier"])
      # Buffers, so that .to(device) moves them with the weights.
      self.register_buffer("mean", torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1))
      self.register_buffer("std", torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1))

    def forward(self, x):
      x = (x.to(self.mean.dtype) / 255.0 - self.mean) / self.std
      x = self.blocks(F.relu(self.bn(self.conv(x))))
      return self.fc(x.mean(dim=(2, 3)))
  return ResNet()


def _torch_lstm(torch, params, input_size: int, num_layers: int):
  """A bidirectional ``torch.nn.LSTM`` holding flax's ``OptimizedLSTMCell_<k>`` weights
  (layer ``l``'s forward cell is ``k = 2l``, its backward cell ``2l + 1``). flax's cell
  has gates i, f, g, o from ``i*`` (input kernels) and ``h*`` (hidden kernels and the
  biases), as ``torch.nn.LSTM``'s rows."""
  hidden = np.asarray(params["OptimizedLSTMCell_0"]["hi"]["kernel"]).shape[0]
  lstm = torch.nn.LSTM(input_size, hidden, num_layers=num_layers, batch_first=True,
                       bidirectional=True)
  for k in range(2 * num_layers):
    p, name = params[f"OptimizedLSTMCell_{k}"], f"l{k // 2}{'_reverse' if k % 2 else ''}"
    w_ih = np.concatenate([np.asarray(p[f"i{g}"]["kernel"]).T for g in "ifgo"])
    w_hh = np.concatenate([np.asarray(p[f"h{g}"]["kernel"]).T for g in "ifgo"])
    b = np.concatenate([np.asarray(p[f"h{g}"]["bias"]) for g in "ifgo"])
    getattr(lstm, f"weight_ih_{name}").data = torch.from_numpy(w_ih.copy())
    getattr(lstm, f"weight_hh_{name}").data = torch.from_numpy(w_hh.copy())
    getattr(lstm, f"bias_ih_{name}").data = torch.from_numpy(b.copy())
    getattr(lstm, f"bias_hh_{name}").data = torch.zeros(4 * hidden)
  return lstm


def _packed_lstm(torch, lstm, x, lengths, packed: bool = True):
  """``lstm`` over each sequence's first ``lengths`` steps (the backward direction
  starts at its last real step, as flax's ``nn.RNN(seq_lengths=...)``); padded steps
  of the output are 0. ``packed=False``: over all ``T`` steps of the padded batch."""
  nn = torch.nn
  if not packed:
    return lstm(x)[0]
  packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True,
                                             enforce_sorted=False)
  out, _ = lstm(packed)
  return nn.utils.rnn.pad_packed_sequence(out, batch_first=True,
                                          total_length=x.shape[1])[0]


def _masked_mean_max(torch, x, lengths):
  """:func:`jaxloss.models.text.masked_mean_max` of ``x [B, T, D]`` over each row's first
  ``lengths`` positions: ``[B, 2D]`` (the max's fill is finite, -1e9)."""
  mask = (torch.arange(x.shape[1], device=x.device)[None, :]
          < lengths[:, None]).unsqueeze(-1)
  mean = (x * mask).sum(1) / mask.sum(1).clamp(min=1)
  return torch.cat([mean, x.masked_fill(~mask, -1e9).max(1).values], -1)


def _torch_linear(torch, p):
  k = np.asarray(p["kernel"])
  m = torch.nn.Linear(*k.shape)
  m.weight.data = torch.from_numpy(k.T.copy())
  m.bias.data = torch.from_numpy(np.asarray(p["bias"]).copy())
  return m


def _torch_joint_nlu(torch, params, packed: bool = True):
  """:class:`jaxloss.models.text.JointNluModel` (dropout off) in PyTorch on the flax
  weights: word embedding + the character CNN (flax's ``Conv`` over the characters,
  ``"SAME"`` padding; max over the real characters, 0 for an empty word), the stacked
  bidirectional LSTM over each sentence's length, masked mean + max sentence vector,
  the intent head, and the tag head on each token state beside ``relu(context)``;
  returns ``{"intent", "tags"}``."""
  nn, F = torch.nn, torch.nn.functional
  words = np.asarray(params["Embed_0"]["embedding"])
  chars = np.asarray(params["CharCNN_0"]["Embed_0"]["embedding"])
  kernel = np.asarray(params["CharCNN_0"]["Conv_0"]["kernel"])  # [width, in, out]
  num_layers = sum(k.startswith("OptimizedLSTMCell_") for k in params) // 2

  class JointNlu(nn.Module):
    def __init__(self):
      super().__init__()
      self.words, self.chars = nn.Embedding(*words.shape), nn.Embedding(*chars.shape)
      self.words.weight.data = torch.from_numpy(words.copy())
      self.chars.weight.data = torch.from_numpy(chars.copy())
      self.conv = nn.Conv1d(kernel.shape[1], kernel.shape[2], kernel.shape[0],
                            padding=kernel.shape[0] // 2)
      self.conv.weight.data = torch.from_numpy(kernel.transpose(2, 1, 0).copy())
      self.conv.bias.data = torch.from_numpy(
          np.asarray(params["CharCNN_0"]["Conv_0"]["bias"]).copy())
      self.lstm = _torch_lstm(torch, params, words.shape[1] + kernel.shape[2], num_layers)
      self.intent = _torch_linear(torch, params["intent_head"])
      self.context = _torch_linear(torch, params["context"])
      self.tag = _torch_linear(torch, params["tag_head"])

    def forward(self, ids, char_ids, lengths):
      b, t, w = char_ids.shape
      c = self.chars(char_ids).view(b * t, w, -1).transpose(1, 2)  # [B*T, E, W]
      c = F.relu(self.conv(c)).transpose(1, 2).view(b, t, w, -1)
      real = (char_ids > 0).unsqueeze(-1)
      pooled = c.masked_fill(~real, -1e9).max(2).values
      c = torch.where(real.any(2), pooled, torch.zeros_like(pooled))
      x = _packed_lstm(torch, self.lstm, torch.cat([self.words(ids), c], -1), lengths,
                       packed)
      sentence = _masked_mean_max(torch, x, lengths)
      context = F.relu(self.context(sentence))[:, None].expand(b, t, -1)
      return {"intent": self.intent(sentence),
              "tags": self.tag(torch.cat([x, context], -1))}
  return JointNlu()


def _torch_bilstm(torch, params, packed: bool = True):
  """``TextClassifier`` (embedding, one bidirectional LSTM over each sentence's length,
  masked mean + max pooling, a linear head) in PyTorch, on the flax weights
  (:func:`_torch_lstm`; the backward cell reads each sentence from its last real token,
  as ``pack_padded_sequence`` does)."""
  nn = torch.nn
  enc = params["BiLSTMEncoder_0"]
  emb = np.asarray(enc["Embed_0"]["embedding"])
  lstm = _torch_lstm(torch, enc, emb.shape[1], 1)

  class BiLSTM(nn.Module):
    def __init__(self):
      super().__init__()
      self.embed = nn.Embedding(*emb.shape)
      self.embed.weight.data = torch.from_numpy(emb.copy())
      self.lstm = lstm
      self.fc = _torch_linear(torch, params["Dense_0"])

    def forward(self, ids, lengths):
      out = _packed_lstm(torch, self.lstm, self.embed(ids), lengths, packed)
      return self.fc(_masked_mean_max(torch, out, lengths))
  return BiLSTM()


def torch_loss(torch, outputs, y):
  """:func:`jax_loss` in PyTorch (SASRec's outputs are ``(scores, where)``, the joint
  NLU model's ``{"intent", "tags"}`` with ``y = (intent, tags)``)."""
  if isinstance(outputs, dict):
    intent, tags = y
    F = torch.nn.functional
    real = tags >= 0
    token = F.cross_entropy(outputs["tags"].flatten(0, 1), tags.clamp(min=0).flatten(),
                            reduction="none").view(tags.shape)
    return (F.cross_entropy(outputs["intent"], intent)
            + (token * real).sum() / real.sum().clamp(min=1))
  if isinstance(outputs, tuple):
    scores, where = outputs
    logp = torch.log_softmax(scores.masked_fill(~where, -1e9), dim=-1)[..., 0]
    valid = where[..., 0]
    return -(logp * valid).sum() / valid.sum().clamp(min=1)
  return torch.nn.functional.cross_entropy(outputs, y)


def _torch_sasrec(torch, params):
  """:class:`jaxloss.models.sequential.SASRec` (dropout off) in PyTorch on the flax
  weights: the same pre-norm blocks (the attention added to the normed query, as the
  reference code), flax's attention (query scaled by 1/sqrt(head dim), masked logits
  at the dtype's minimum), layer norms with eps 1e-8; returns ``(scores, where)``."""
  nn, F = torch.nn, torch.nn.functional

  def t(a):
    return nn.Parameter(torch.from_numpy(np.asarray(a).copy()))

  class SASRec(nn.Module):
    def __init__(self):
      super().__init__()
      from flax import traverse_util  # pylint: disable=import-outside-toplevel
      self.p = nn.ParameterDict({
          k: t(v) for k, v in traverse_util.flatten_dict(dict(params), sep="/").items()})
      self.names = sorted({k.split("/")[0] for k in self.p if k.startswith("block_")})

    def ln(self, x, name):
      return F.layer_norm(x, x.shape[-1:], self.p[f"{name}/scale"], self.p[f"{name}/bias"],
                          eps=1e-8)

    def attention(self, q_in, kv_in, mask, b):
      def proj(x, n):
        return (torch.einsum("bld,dhk->blhk", x, self.p[f"{b}/attention/{n}/kernel"])
                + self.p[f"{b}/attention/{n}/bias"])
      q, k, v = proj(q_in, "query"), proj(kv_in, "key"), proj(kv_in, "value")
      q = q / float(q.shape[-1]) ** 0.5
      logits = torch.einsum("bqhd,bkhd->bhqk", q, k)
      logits = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
      o = torch.einsum("bhqk,bkhd->bqhd", torch.softmax(logits, -1), v)
      return (torch.einsum("bqhd,hdo->bqo", o, self.p[f"{b}/attention/out/kernel"])
              + self.p[f"{b}/attention/out/bias"])

    def forward(self, negatives, seq, pos):
      emb = self.p["item_embedding/embedding"]
      pos_emb = self.p["position_embedding/embedding"]
      length, d = seq.shape[1], emb.shape[1]
      valid = seq > 0
      x = emb[seq] * float(d) ** 0.5 + pos_emb[pos_emb.shape[0] - length:]
      x = x * valid[..., None]
      causal = torch.tril(torch.ones(length, length, dtype=torch.bool, device=seq.device))
      mask = (causal[None] & valid[:, None, :])[:, None]
      for b in self.names:
        q = self.ln(x, f"{b}/attention_norm")
        x = q + self.attention(q, x, mask, b)
        y = self.ln(x, f"{b}/ffn_norm")
        h = F.relu(y @ self.p[f"{b}/ffn_in/kernel"] + self.p[f"{b}/ffn_in/bias"])
        h = h @ self.p[f"{b}/ffn_out/kernel"] + self.p[f"{b}/ffn_out/bias"]
        x = (y + h) * valid[..., None]
      h = self.ln(x, "final_norm") * valid[..., None]
      pos_scores = (h * emb[pos]).sum(-1)
      neg_scores = torch.einsum("bld,bkd->blk", h, emb[negatives])
      scores = torch.cat([pos_scores[..., None], neg_scores], -1)
      own = torch.cat([seq, pos], -1)
      collides = (negatives[:, :, None] == own[:, None, :]).any(-1)
      neg_ok = (negatives > 0) & ~collides
      position_ok = pos > 0
      where = torch.cat([position_ok[..., None],
                         position_ok[..., None] & neg_ok[:, None, :]], -1)
      return scores, where
  return SASRec()


def torch_inputs(torch, x, device: str = "cpu"):
  """The batch ``x`` of :func:`_model_and_batch` as PyTorch tensors: NCHW images, or
  the text inputs (``(ids, lengths)``, ``(ids, chars, lengths)``, ...) as int64."""
  if isinstance(x, tuple):
    return tuple(torch.from_numpy(np.asarray(a).astype(np.int64)).to(device) for a in x)
  return (torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(device),)
