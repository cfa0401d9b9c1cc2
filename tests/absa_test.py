"""Multi-aspect sentiment recipe: sampler, loss, members, and runs on the real data.

The loss is checked against NumPy references written here from the formulas (per-aspect
α-balanced focal, plain CE, SupCon with "share a pair" positives), on 1 and 8 devices.
The runs use ``experiments/absa/configs/visfd_absa.py:smoke`` on the released UIT-ViSFD CSVs
(skipped, with the reason, when ``../shared/data/uit_visfd`` is absent).
"""

from __future__ import annotations

import json
import math
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from experiments.absa import recipe as absa
from experiments.absa.configs import visfd_absa
from jaxloss.data.sampler import epoch_permutation_indices
from jaxloss.data.uit_visfd import default_manual_dir
from jaxloss.parallel import DATA_AXIS, make_mesh
from experiments.absa.objective import aspect_alpha_table, make_multi_aspect_loss

HAVE_DATA = os.path.isdir(default_manual_dir())
needs_data = pytest.mark.skipif(
    not HAVE_DATA, reason=f"UIT-ViSFD not found at {default_manual_dir()} "
    "(../shared/data/uit_visfd beside the repository)")


# --- sampler -----------------------------------------------------------------------------

def test_epoch_permutation_covers_each_epoch_once():
  key = jax.random.PRNGKey(3)
  n, b = 10, 4  # batches straddle epochs: 4 + 4 + (2 | 2) + ...
  stream = np.concatenate([np.asarray(epoch_permutation_indices(key, s, n, b))
                           for s in range(10)])  # 40 positions = 4 epochs
  for e in range(4):
    assert sorted(stream[e * n:(e + 1) * n].tolist()) == list(range(n))
  assert not np.array_equal(stream[:n], stream[n:2 * n])  # reshuffled per epoch
  # A pure function of (key, step): any step recomputed alone gives the same batch.
  np.testing.assert_array_equal(epoch_permutation_indices(key, 7, n, b), stream[28:32])
  jitted = jax.jit(epoch_permutation_indices, static_argnums=(2, 3))
  np.testing.assert_array_equal(jitted(key, jnp.int32(7), n, b), stream[28:32])
  # The stream is the epochs' permutations end to end, batches that straddle two
  # epochs included (steps 2, 7: positions 8-11 and 28-31), jitted or not.
  reference = np.concatenate([np.asarray(jax.random.permutation(
      jax.random.fold_in(key, e), n)) for e in range(4)])
  np.testing.assert_array_equal(stream, reference)
  np.testing.assert_array_equal(
      np.concatenate([np.asarray(jitted(key, jnp.int32(s), n, b)) for s in range(10)]),
      reference)
  # Batched over keys (an ensemble's members): each row is its own key's stream.
  keys = jnp.stack([key, jax.random.PRNGKey(4)])
  both = jax.vmap(epoch_permutation_indices, in_axes=(0, None, None, None))(keys, 2, n, b)
  np.testing.assert_array_equal(both[0], reference[8:12])
  np.testing.assert_array_equal(
      both[1], np.asarray(epoch_permutation_indices(jax.random.PRNGKey(4), 2, n, b)))


def test_epoch_permutation_rejects_bad_batch():
  with pytest.raises(ValueError, match="batch_size must be in"):
    epoch_permutation_indices(jax.random.PRNGKey(0), 0, 5, 6)


# --- loss ------------------------------------------------------------------------------------

COUNTS = np.array([[50, 30, 15, 5], [80, 10, 5, 5], [20, 40, 30, 10]])


def test_alpha_table_matches_formula():
  table = aspect_alpha_table(COUNTS, method="sqrt_inverse_frequency", cap=None)
  for a, row in enumerate(COUNTS):
    w = np.sqrt(row.sum() / (4 * row))
    np.testing.assert_allclose(table[a], w / w.mean(), rtol=1e-6)
  capped = aspect_alpha_table(COUNTS, method="sqrt_inverse_frequency", cap=1.5)
  assert capped.max() <= 1.5 + 1e-7
  with pytest.raises(ValueError, match="num_aspects, num_classes"):
    aspect_alpha_table(COUNTS[0])


def _np_focal(logits, labels, alpha, gamma):
  z = logits - logits.max(-1, keepdims=True)
  logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
  lp = np.take_along_axis(logp, labels[..., None], -1)[..., 0]
  a = np.take_along_axis(alpha[None], labels[..., None], -1)[..., 0]
  return (a * (1 - np.exp(lp)) ** gamma * -lp).mean(-1)


def _np_supcon(z, labels, tau):
  z = z / np.linalg.norm(z, axis=-1, keepdims=True)
  hot = np.eye(4)[labels][..., 1:].reshape(len(labels), -1)
  n = len(z)
  out = np.zeros(n)
  for i in range(n):
    others = [j for j in range(n) if j != i]
    pos = [j for j in others if hot[i] @ hot[j] > 0]
    if not pos:
      continue
    s = z @ z[i] / tau
    log_den = np.log(np.sum(np.exp(s[others])))
    out[i] = -np.mean([s[p] - log_den for p in pos])
  return out


def _batch(seed=0, n=16, a=3):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 4, size=(n, a)).astype(np.int32)
  labels[0] = 0  # a review with no aspect: no positives, contributes 0 to SupCon
  outputs = {"logits": rng.normal(size=(n, a, 4)).astype(np.float32),
             "projection": rng.normal(size=(n, 8)).astype(np.float32)}
  return outputs, labels


def _run_loss(loss_fn, outputs, labels, knobs, num_devices):
  mesh = make_mesh(num_devices)

  def body(outputs, labels):
    total, weight, aux = loss_fn(outputs, labels, knobs)
    return total, aux["terms"]

  f = jax.jit(jax.shard_map(body, mesh=mesh, in_specs=(P(DATA_AXIS), P(DATA_AXIS)),
                            out_specs=(P(DATA_AXIS), P(DATA_AXIS))))
  return jax.device_get(f(outputs, labels))


@pytest.mark.parametrize("num_devices", [1, 8])
def test_focal_supcon_matches_numpy(num_devices):
  outputs, labels = _batch()
  alpha = aspect_alpha_table(COUNTS, cap=10.0)
  loss_fn = make_multi_aspect_loss(COUNTS, loss="focal", gamma=2.0, temperature=0.2)
  knobs = {"focal_weight": jnp.float32(0.7), "contrastive_weight": jnp.float32(0.3)}
  total, terms = _run_loss(loss_fn, outputs, labels, knobs, num_devices)
  focal = _np_focal(outputs["logits"], labels, alpha, 2.0)
  supcon = _np_supcon(outputs["projection"], labels, 0.2)
  np.testing.assert_allclose(terms["focal"], focal, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(terms["contrastive"], supcon, rtol=1e-5, atol=1e-6)
  assert terms["contrastive"][0] == 0.0
  np.testing.assert_allclose(total, 0.7 * focal + 0.3 * supcon, rtol=1e-5, atol=1e-6)


def test_ce_baseline_is_plain_cross_entropy():
  outputs, labels = _batch(seed=1)
  loss_fn = make_multi_aspect_loss(COUNTS, loss="ce", contrastive=False)
  total, terms = _run_loss(loss_fn, outputs, labels, {"focal_weight": jnp.float32(1.0)},
                           1)
  ones = np.ones_like(aspect_alpha_table(COUNTS))
  np.testing.assert_allclose(terms["ce"], _np_focal(outputs["logits"], labels, ones, 0.0),
                             rtol=1e-5)
  np.testing.assert_allclose(total, terms["ce"], rtol=1e-6)
  assert set(terms) == {"ce"}


def test_loss_gradient_matches_finite_differences():
  outputs, labels = _batch(seed=2, n=8)
  loss_fn = make_multi_aspect_loss(COUNTS, temperature=0.5)
  knobs = {"focal_weight": jnp.float32(0.8), "contrastive_weight": jnp.float32(0.2)}
  mesh = make_mesh(1)

  @jax.jit  # one program for the many evaluations the check makes (eagerly: 521)
  def mean_loss(logits, projection):
    def body(logits, projection, labels):
      total, _, _ = loss_fn({"logits": logits, "projection": projection}, labels, knobs)
      return jnp.mean(total)[None]
    f = jax.shard_map(body, mesh=mesh, in_specs=(P(), P(), P()), out_specs=P(DATA_AXIS))
    return f(logits, projection, labels)[0]

  args = (jnp.asarray(outputs["logits"], jnp.float64) if jax.config.x64_enabled
          else jnp.asarray(outputs["logits"]), jnp.asarray(outputs["projection"]))
  chex.assert_numerical_grads(mean_loss, args, order=1, atol=2e-2, rtol=2e-2)


def test_multi_aspect_loss_rejects_bad_arguments():
  with pytest.raises(ValueError, match="loss must be one of"):
    make_multi_aspect_loss(COUNTS, loss="hinge")
  with pytest.raises(ValueError, match="gamma must be >= 0"):
    make_multi_aspect_loss(COUNTS, gamma=-1.0)
  with pytest.raises(ValueError, match="temperature must be > 0"):
    make_multi_aspect_loss(COUNTS, temperature=0.0)


# --- members and references -------------------------------------------------------------

def test_parse_members():
  c = visfd_absa.get_config()
  assert absa.parse_members(c) == [{"focal_weight": 0.7, "contrastive_weight": 0.3,
                                    "seed": 0}]
  c.ensemble_focal_weights = "0.7, 0.8"
  c.seed = 5
  assert absa.parse_members(c) == [
      {"focal_weight": 0.7, "contrastive_weight": 0.3, "seed": 5},
      {"focal_weight": 0.8, "contrastive_weight": 0.2, "seed": 6}]
  c.ensemble_focal_weights = "0.7,1.5"
  with pytest.raises(ValueError, match=r"entries must be in \[0, 1\]"):
    absa.parse_members(c)
  # 0 is the command line's "no contrastive term" (None cannot be given there): a
  # single member has weight 0, an ensemble (members use 1 - w) is refused.
  c.contrastive_weight = 0.0
  with pytest.raises(ValueError, match="needs the contrastive term"):
    absa.parse_members(c)
  c.ensemble_focal_weights = ""
  assert absa.parse_members(c) == [{"focal_weight": 0.7, "contrastive_weight": 0.0,
                                    "seed": 5}]
  c.contrastive_weight = 0.3
  c.ensemble_focal_weights = "0.7,x"
  with pytest.raises(ValueError, match="comma-separated numbers"):
    absa.parse_members(c)
  c = visfd_absa.get_config("focal")
  c.ensemble_focal_weights = "0.7,0.8"
  with pytest.raises(ValueError, match="needs the contrastive term"):
    absa.parse_members(c)
  # One member of an ensemble alone: its own seed and weights.
  c = visfd_absa.get_config()
  c.ensemble_focal_weights = "0.7,0.8"
  c.ensemble_member = 1
  assert absa.parse_members(c) == [{"focal_weight": 0.8, "contrastive_weight": 0.2,
                                    "seed": 1}]
  for bad in (2, -2):
    c.ensemble_member = bad
    with pytest.raises(ValueError, match="config.ensemble_member must be -1"):
      absa.parse_members(c)
  c.ensemble_focal_weights = ""
  c.ensemble_member = 0
  with pytest.raises(ValueError, match="config.ensemble_member must be -1"):
    absa.parse_members(c)


def test_contrastive_reference_hand_worked():
  # 4 reviews, one aspect: two positive, one negative, one absent. In a batch of all
  # four: anchors 0 and 1 have one positive each (ln 1 = 0 floor, ln 3 chance); 2 and 3
  # have none (0).
  labels = np.array([[1], [1], [2], [0]])
  ref = absa.contrastive_reference(labels, 4, batches=3)
  assert ref["share_with_positives"] == pytest.approx(0.5)
  assert ref["chance"] == pytest.approx(0.5 * math.log(3))
  assert ref["floor"] == pytest.approx(0.0)


def test_uniform_logit_loss():
  labels = np.array([[0, 1], [2, 3]])
  assert absa.uniform_logit_loss(labels, None, 0.0) == pytest.approx(math.log(4))
  alpha = np.array([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]])
  expected = np.mean([1.0, 2.0, 3.0, 4.0]) * 0.75 ** 2 * math.log(4)
  assert absa.uniform_logit_loss(labels, alpha, 2.0) == pytest.approx(expected)


def test_attended_tokens_counts_the_reviews_with_each_aspect():
  labels = np.zeros((6, 10), np.int64)
  labels[:4, 9] = [1, 2, 3, 1]  # STORAGE present in the first four reviews
  tokens = np.zeros((6, 10), np.int64)
  tokens[:, 9] = [7, 7, 5, 7, 5, 5]  # the last two are absent: not counted
  text = {5: "dung", 7: "bộ"}
  out = absa.attended_tokens(labels, tokens, lambda ids: [text[int(i)] for i in ids],
                             top=1)
  assert out["STORAGE"] == {"reviews": 4, "top": [{"token": "bộ", "share": 0.75}]}
  assert out["BATTERY"] == {"reviews": 0, "top": []}


def test_config_variants():
  assert visfd_absa.get_config("ce").loss == "ce"
  assert visfd_absa.get_config("focal").contrastive_weight is None
  assert visfd_absa.get_config().contrastive_weight == 0.3
  with pytest.raises(ValueError, match="variant must be one of"):
    visfd_absa.get_config("bert")
  assert visfd_absa.get_config().aspect_attention
  assert visfd_absa.get_config("e5").aspect_attention
  assert visfd_absa.get_config("e5_frozen").aspect_attention


# --- runs on the real data ------------------------------------------------------------------

def _smoke(**overrides):
  c = visfd_absa.get_config("smoke")
  c.progress = False
  for k, v in overrides.items():
    c[k] = v
  return c


def _stream(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


@needs_data
def test_smoke_ensemble_writes_everything(smoke_run):
  """The two-member ensemble (0.7/0.3 seed 0, 0.8/0.2 seed 1) in one vmapped step."""
  workdir, summary = smoke_run("absa")
  for key in ("aspect_f1", "sentiment_f1", "per_aspect_f1", "macro_f1_4class",
              "members", "selected_epoch", "contrastive_reference"):
    assert key in summary
  assert summary["ensemble"] and len(summary["members"]) == 2
  assert len(summary["per_aspect_f1"]) == 10
  assert summary["train_step_compilations"] == 1  # both members, one compilation
  assert summary["num_devices"] == len(jax.devices())
  assert summary["anchors"][0]["aspect_f1"] == 0.8448
  with open(os.path.join(workdir, "summary.json")) as f:
    assert json.load(f)["aspect_f1"] == summary["aspect_f1"]
  # What each aspect read (member 0's most-attended Test tokens), with real counts.
  with open(os.path.join(workdir, "config.json")) as f:
    cfg = json.load(f)
  cfg = cfg.get("config", cfg)
  labels = np.asarray(absa.load_uit_visfd(data_dir=cfg["data_dir"], manual_dir=cfg[
      "manual_dir"])["test"]["labels"])[:cfg["max_eval_examples"]]
  attended = summary["attended_tokens"]
  assert list(attended) == list(absa.metrics_lib.ASPECTS)
  for a, (name, v) in enumerate(attended.items()):
    assert v["reviews"] == int(np.sum(labels[:, a] != 0)), name
    shares = [t["share"] for t in v["top"]]
    assert shares == sorted(shares, reverse=True) and sum(shares) <= 1 + 1e-9
  for name in ("vocab.json", "metrics.jsonl", "member_0/metrics.jsonl",
               "member_1/diagnosis.json", "loss_relationship.png",
               "embedding_space_evolution.png", "embeddings/epoch_1.npz",
               "embeddings/epoch_2.npz"):
    assert os.path.exists(os.path.join(workdir, name)), name
  ensemble = _stream(os.path.join(workdir, "metrics.jsonl"))
  assert [e["split"] for e in ensemble] == ["meta", "dev", "test", "dev", "test"]
  ref = summary["contrastive_reference"]
  for k, (w_focal, w_con) in enumerate(((0.7, 0.3), (0.8, 0.2))):
    events = _stream(os.path.join(workdir, f"member_{k}", "metrics.jsonl"))
    train = [e for e in events if e["split"] == "train"]
    assert len(train) == 2 and all(e["focal_weight"] == w_focal for e in train)
    # Both terms logged, and the total is their member's λ-weighted sum.
    for e in train:
      assert e["loss"] == pytest.approx(w_focal * e["term/focal"]
                                        + w_con * e["term/contrastive"], rel=1e-4)
    tests = [e for e in events if e["split"] == "test"]
    assert tests[0]["eval_repeat_max_diff"] == 0.0
    assert tests[-1]["eval_repeat_max_diff"] == 0.0
    init = next(e for e in events if e["split"] == "init")
    # An untrained encoder separates nothing: SupCon starts near its chance level.
    assert abs(init["term/contrastive"] - ref["chance"]) < 0.1 * ref["chance"]
  # Embeddings of every member, [N, M, E].
  z = np.load(os.path.join(workdir, "embeddings", "epoch_2.npz"))
  assert z["embedding"].shape[1] == 2


@needs_data
def test_members_trained_alone_and_combined_equal_the_vmapped_ensemble(smoke_run, tfds_dir,
                                                                       tmp_path, capsys):
  """``config.ensemble_member = k`` trains the ensemble's member k (same seed, weights and
  batch order), so ``experiments.absa.combine`` over the members' workdirs reproduces the
  vmapped ensemble: the same saved probabilities and the same Dev-selected Test numbers."""
  from experiments import recipes  # pylint: disable=g-import-not-at-top
  from experiments.absa import combine  # pylint: disable=g-import-not-at-top
  from tests.conftest import smoke_settings  # pylint: disable=g-import-not-at-top
  workdir, summary = smoke_run("absa")
  _, settings = smoke_settings("absa", tfds_dir)
  alone = []
  for k in (0, 1):
    config = visfd_absa.get_config("smoke")
    for name, v in settings.items():
      config[name] = v
    config.ensemble_member = k
    alone.append(str(tmp_path / f"member_{k}"))
    recipes.run(config, alone[-1])
  for split in ("dev", "test"):
    for epoch in (1, 2):
      both = np.load(os.path.join(workdir, "predictions", f"{split}_epoch_{epoch}.npz"))
      assert both["probs"].shape[1:] == (2, 10, 4) and both["probs"].dtype == np.float32
      for k in (0, 1):
        one = np.load(os.path.join(alone[k], "predictions", f"{split}_epoch_{epoch}.npz"))
        np.testing.assert_array_equal(one["labels"], both["labels"])
        # The same model, vmapped or not: XLA may batch the members' matrix products
        # differently, which moves float32 probabilities by an ulp or two (6e-8 seen).
        np.testing.assert_allclose(one["probs"][:, 0], both["probs"][:, k], atol=1e-6)
  result = combine.combine(alone)
  assert result["members"] == 2 and result["epochs"] == [1.0, 2.0]
  assert result["selected_epoch"] == summary["selected_epoch"]
  for key in ("aspect_f1", "sentiment_f1", "macro_f1_4class"):
    assert result[key] == pytest.approx(summary[key], rel=1e-9), key
  differences = result["config_differences"]
  assert not differences, differences
  assert [m["ensemble_member"] for m in result["member_fields"]] == [0, 1]
  # The command line: a table, the JSON file, and clear refusals.
  out = tmp_path / "ensemble.json"
  assert combine.main([*alone, "--out", str(out)]) == 0
  assert json.loads(out.read_text())["aspect_f1"] == result["aspect_f1"]
  assert "Dev-selected epoch" in capsys.readouterr().out
  assert combine.main([alone[0], alone[0]]) == 2
  assert "named twice" in capsys.readouterr().err
  with pytest.raises(ValueError, match="at least two workdirs"):
    combine.combine(alone[:1])
  with pytest.raises(FileNotFoundError, match="predictions"):
    combine.combine([alone[0], str(tmp_path)])
  # A vmapped ensemble's workdir brings all its members, so its member 0 is met twice.
  with pytest.raises(ValueError, match="the same model twice"):
    combine.combine([workdir, alone[0]])
