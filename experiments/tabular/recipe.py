"""Example recipe: sigmoid focal loss on imbalanced breast-cancer data (scikit-learn).

``python -m experiments.run --config=experiments/tabular/configs/breast_cancer.py``.
The training split keeps every ``config.keep_every``-th malignant case (ρ ≈ 10 at the
default 6), the test split is stratified and untouched; features are standardised with
the training statistics. The whole recipe is this file: data, model, objective,
evaluation, summary. Everything else is the loop's.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn import datasets, metrics, model_selection

from jaxloss import curriculum, monitors, sigmoid_focal_loss
from jaxloss.data.sampler import epoch_permutation_sampler
from jaxloss.train_state import TrainState
from jaxloss.train_step import make_optimizer
from jaxloss.training import Recipe


class MLP(nn.Module):
  hidden: int = 32

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.relu(nn.Dense(self.hidden)(x))
    return nn.Dense(1)(x)[..., 0]  # the log-odds of malignant


def load(config) -> tuple[dict, dict]:
  """Train / test splits ``{"features" [N, 30] float32, "label" [N] int32}`` (1 =
  malignant), the training split made imbalanced."""
  x, y = datasets.load_breast_cancer(return_X_y=True)
  y = (y == 0).astype(np.int32)  # scikit-learn codes malignant as 0
  x_tr, x_te, y_tr, y_te = model_selection.train_test_split(
      x, y, test_size=0.3, stratify=y, random_state=config.data_seed)
  keep = (y_tr == 0) | (np.cumsum(y_tr) % config.keep_every == 1)
  x_tr, y_tr = x_tr[keep], y_tr[keep]
  mean, std = x_tr.mean(0), x_tr.std(0) + 1e-6
  split = lambda a, b: {"features": ((a - mean) / std).astype(np.float32),  # noqa: E731
                        "label": b}
  return split(x_tr, y_tr), split(x_te, y_te)


def build(config, workdir=None) -> Recipe:
  del workdir
  train, test = load(config)
  counts = np.bincount(train["label"], minlength=2)
  alpha = float(counts[0] / counts.sum())  # positives weighted by the negatives' share
  model = MLP(config.hidden)
  tx = make_optimizer("adamw", learning_rate=config.learning_rate,
                      weight_decay=config.weight_decay, max_grad_norm=1.0)
  lr = optax.cosine_decay_schedule(config.learning_rate, config.num_epochs)
  schedule = curriculum.constant(learning_rate=lr)
  steps_per_epoch = math.ceil(len(train["label"]) / config.batch_size)
  spec = monitors.MonitorSpec(heads={"class": monitors.HeadSpec(2)})

  def objective(logits, labels, knobs):
    del knobs
    loss = sigmoid_focal_loss(logits, labels, alpha=alpha, gamma=config.gamma)
    two = jnp.stack([jnp.zeros_like(logits), logits], -1)  # for the class histogram
    return loss, jnp.ones_like(loss), {"heads": {"class": two}}

  def init(key):
    init_key, state_key = jax.random.split(key)
    params = model.init(init_key, jnp.asarray(train["features"][:1]))["params"]
    return TrainState.create(apply_fn=model.apply, params=params, tx=tx, rng=state_key,
                             train_sums=monitors.zero_sums(spec))

  sampler = epoch_permutation_sampler(len(train["label"]), config.batch_size)

  def predict(state, batch):
    return {"p": jax.nn.sigmoid(state.apply_fn({"params": state.params},
                                               batch["features"]))}

  def evaluate(split, outputs):
    p, y = outputs["p"], test["label"]
    pred = (p > 0.5).astype(int)
    share = np.bincount(pred, minlength=2) / len(pred)
    return {"uar": metrics.balanced_accuracy_score(y, pred),
            "malignant_recall": metrics.recall_score(y, pred),
            "roc_auc": metrics.roc_auc_score(y, p),
            "average_precision": metrics.average_precision_score(y, p),
            "pred_share/class": share.tolist(), "top_share/class": float(share.max()),
            "top_class/class": int(share.argmax())}

  def meta(k):
    # The loss of a model that knows nothing (logit 0) on these labels.
    ref = float(np.mean(sigmoid_focal_loss(np.zeros(len(train["label"]), np.float32),
                                           train["label"], alpha=alpha,
                                           gamma=config.gamma)))
    return {"num_classes": 2, "class_counts": counts.tolist(),
            "learning_rate": config.learning_rate, "max_grad_norm": 1.0,
            "terms": [{"name": "focal", "weight": 1.0, "initial_reference": ref,
                       "initial_reference_text": "the loss at logit 0"}],
            "initial_reference": ref, "initial_reference_text": "the loss at logit 0",
            # label_shares: the monitors judge a collapse against the data's shares.
            "heads": {"class": {"num_classes": 2, "o_index": None,
                                "label_shares": (counts / counts.sum()).tolist()}},
            "class_names": {"class": ["benign", "malignant"]},
            "stages": [{"name": "constant", "start_step": 0, "expect": {}, "knobs": {}}],
            "config_fields": {"learning_rate": "config.learning_rate"}}

  def summarize(record):
    _, last = record.select(record.streams[0])  # no selection: the last
    keys = ("uar", "malignant_recall", "roc_auc", "average_precision")
    return {**{k: last["test"][k] for k in keys}, "epoch": last["test"]["epoch"],
            "class_counts": counts.tolist()}

  return Recipe(
      name=config.name, train=train, eval_splits={"test": test},
      input_keys=("features",), eval_input_keys=("features",), init=init,
      objective=objective, curriculum=schedule,
      compiled=schedule.compile(steps_per_epoch), batch_size=config.batch_size,
      num_epochs=config.num_epochs, predict=predict, evaluate=evaluate, meta=meta,
      summarize=summarize, seed=config.seed, sampler=sampler, max_grad_norm=1.0,
      monitor=spec,
      progress=lambda t, r: (f"loss {t['loss']:.4f}" + (
          f" | test UAR {100 * r['test']['uar']:.1f} AUC {r['test']['roc_auc']:.4f}"
          if "test" in r else "")),
      report=lambda s: [f"{config.name}: test UAR {100 * s['uar']:.2f}  malignant "
                        f"recall {100 * s['malignant_recall']:.2f}  ROC-AUC "
                        f"{s['roc_auc']:.4f}"],
      describe=f"{len(train['label'])} train (class counts {counts.tolist()}) / "
               f"{len(test['label'])} test tumours")
