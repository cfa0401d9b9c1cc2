"""The candidate-reranking recipe: ``build(config, workdir) -> Recipe``.

The reranking recipe of ``experiments/rerank/configs/rerank.py``: a SASRec encoder (Kang &
McAuley, ICDM 2018) trained on every position of each user's interaction sequence to
place the true next item first among it and ``num_candidates - 1`` sampled negatives,
with the listwise softmax loss (``:listwise``, the recipe) or BPR (``:bpr``, the
baseline). Evaluation follows the SASRec protocol on the leave-one-out splits of the
``interactions`` TFDS builder: for every user, the true held-out item among the
``num_candidates - 1`` stored negatives (items the user never interacted with, fixed by
``config.data_seed``), ranked by the model; HR@1/5/10, NDCG@5/10 and MRR, beside the
random and popularity rankers scored on the same lists in the same run.

The sanity checks its authors ran by hand run with every experiment and are reported in
``summary.json["sanity"]`` (and printed):

* ``first_loss``: the first step's loss within ``config.first_loss_tolerance`` (0.05) of
  the loss of a model that knows nothing, ``ln(num_candidates)`` for the listwise loss
  (``ln 2`` for BPR);
* ``true_item_in_every_list``: the held-out item is among the candidates of every
  evaluated user, exactly once (a failure raises: the split is corrupt);
* ``position_uniform``: the true item's position is uniform over the list (chi-square
  p-value above ``config.position_p_min``), so the position leaks nothing;
* ``eval_deterministic``: evaluating the same parameters twice gives identical metrics
  (checked at the first and the last evaluation);
* ``loss_fell``: the last epoch's training loss is below the first step's.

Negatives for training are drawn on device for every user and step, uniformly over all
items, through ``make_train_step``'s ``augment_fn`` hook (keyed by the example's global
position in the batch, so 1 and 8 devices draw the same ones; the hook's ``aug_strength``
knob is a constant 1 and unused); a drawn item the user has in the window is masked out.

Model selection: Validation is evaluated every ``config.eval_every`` epochs and at the
end; the reported Test metrics are those of the evaluation with the best Validation
NDCG@10, and the last evaluation's are kept beside them.

Workdir: ``config.json``, ``metrics.jsonl``, ``diagnosis.json``, ``checkpoints/``,
``summary.json``, ``curves.png``.
"""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxloss import curriculum as curriculum_lib
from jaxloss import metrics as metrics_lib
from jaxloss import monitors
from jaxloss.data.interactions import load_interactions, pad_left
from jaxloss.data.sampler import epoch_permutation_sampler
from jaxloss.models.sequential import SASRec
from jaxloss.train_state import TrainState
from jaxloss.train_step import make_optimizer
from jaxloss.training import Recipe, Selection
from experiments.rerank.objective import RERANK_LOSSES, make_rerank_loss

EVAL_SPLITS = ("validation", "test")
KEYS = ("hr@1", "hr@5", "hr@10", "ndcg@5", "ndcg@10", "mrr")
# Published numbers, with the data and protocol they were measured on: a run reports
# an anchor only when its dataset file and candidate count are those.
ANCHORS = (
    {"model": "SASRec (Kang & McAuley, ICDM 2018, Table III, Games)",
     "dataset": "sasrec_games/Video.txt", "num_candidates": 101, "hr@10": 0.7410,
     "ndcg@10": 0.5360},
)


def anchors_for(path: str, num_candidates: int) -> tuple:
  """The anchors measured on this file (its folder and name) with this many candidates."""
  tail = "/".join(os.path.normpath(path).split(os.sep)[-2:])
  return tuple(a for a in ANCHORS
               if a["dataset"] == tail and a["num_candidates"] == num_candidates)


def validate(config) -> None:
  """Raises ValueError naming a config field out of range."""
  for field in ("num_epochs", "batch_size", "max_len", "hidden", "num_blocks",
                "num_heads", "eval_every"):
    if not config[field] >= 1:
      raise ValueError(f"config.{field} must be >= 1, got {config[field]}")
  if not config.num_candidates >= 2:
    raise ValueError(f"config.num_candidates must be >= 2 (the true item and at least "
                     f"one negative), got {config.num_candidates}")
  if config.hidden % config.num_heads:
    raise ValueError(f"config.hidden ({config.hidden}) must be divisible by "
                     f"config.num_heads ({config.num_heads})")
  if config.loss not in RERANK_LOSSES:
    raise ValueError(f"config.loss must be one of {RERANK_LOSSES}, got {config.loss!r}")
  if not 0 <= config.dropout_rate < 1:
    raise ValueError(f"config.dropout_rate must be in [0, 1), got {config.dropout_rate}")
  if not config.first_loss_tolerance > 0:
    raise ValueError(f"config.first_loss_tolerance must be > 0, got "
                     f"{config.first_loss_tolerance}")


# --- Data and sanity checks of the lists ---------------------------------------------------

def check_lists(split: dict, num_candidates: int, *, name: str) -> dict:
  """The data-side sanity checks of one evaluation split: the true item is at
  ``candidates[label_index]`` and nowhere else in every list, and its position is
  uniform (chi-square).

  Returns:
    ``{"true_item_in_every_list": bool, "position_chi2", "position_p_value"}``.

  Raises:
    RuntimeError: a list without its true item, or with it twice (a corrupt split;
      the message names the split and the first bad row).
  """
  candidates, label_index = split["candidates"], split["label_index"]
  rows = np.arange(len(candidates))
  at_label = candidates[rows, label_index] == split["target"]
  occurrences = np.sum(candidates == split["target"][:, None], axis=1)
  bad = np.flatnonzero(~at_label | (occurrences != 1))
  if bad.size:
    i = int(bad[0])
    raise RuntimeError(
        f"{name}: {bad.size} list(s) do not hold the true item exactly once at "
        f"label_index, e.g. row {i} (user {int(split['user'][i])}): target "
        f"{int(split['target'][i])}, candidates[{int(label_index[i])}] = "
        f"{int(candidates[i, label_index[i]])}, occurrences {int(occurrences[i])}")
  uniform = metrics_lib.position_uniformity(label_index, num_candidates)
  return {"true_item_in_every_list": True, "position_chi2": uniform["chi2"],
          "position_p_value": uniform["p_value"]}



# --- Evaluation -------------------------------------------------------------------------------

def rerank_report(scores: np.ndarray, split: dict) -> dict:
  """HR@1/5/10, NDCG@5/10, MRR, mean rank and the listwise loss of the true item on
  one split's ``[N, C]`` scores (host)."""
  report = metrics_lib.ranking_metrics(scores, split["label_index"])
  z = scores.astype(np.float64)
  z = z - z.max(-1, keepdims=True)
  logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
  report["loss"] = float(-np.mean(logp[np.arange(len(z)), split["label_index"]]))
  return report



def _fmt(x, spec=".4f") -> str:
  return "  nan" if x is None or not np.isfinite(x) else format(x, spec)


def prepare_data(config: ml_collections.ConfigDict) -> dict:
  """The training sequences and the evaluation lists with their data-side sanity
  checks and the random / popularity baselines scored on them:
  ``{"data", "train", "evals", "sanity", "baselines"}``.

  Raises:
    RuntimeError: an evaluation list without its true item (see :func:`check_lists`).
  """
  data = load_interactions(manual_dir=config.data_dir, data_dir=config.tfds_data_dir,
                           filename=config.filename, num_candidates=config.num_candidates,
                           seed=config.data_seed)
  L = int(config.max_len)
  items = data["train"]["items"]
  if config.max_train_users is not None:
    items = items[:config.max_train_users]
  seq, _ = pad_left([s[:-1] for s in items], L)  # input: all but the last item
  pos, _ = pad_left([s[1:] for s in items], L)   # target: the next item at each position
  num_train = len(seq)
  train = {"negatives": np.zeros((num_train, 1), np.int32), "seq": seq, "pos": pos,
           "label": pos}

  evals, sanity = {}, {}
  for name in EVAL_SPLITS:
    s = data[name]
    n = len(s["target"])
    if config.max_eval_users is not None:
      n = min(n, config.max_eval_users)
    history, _ = pad_left(s["history"][:n], L)
    evals[name] = {"user": np.asarray(s["user"][:n]), "history": history,
                   "candidates": np.asarray(s["candidates"][:n], np.int32),
                   "label_index": np.asarray(s["label_index"][:n], np.int32),
                   "target": np.asarray(s["target"][:n], np.int32)}
    sanity[name] = check_lists(evals[name], config.num_candidates, name=name)

  # Baselines on the same lists: a random ranker and item popularity (training counts).
  baselines = {}
  for name in EVAL_SPLITS:
    e = evals[name]
    scores = {
        "random": metrics_lib.random_scores(len(e["target"]), config.num_candidates,
                                            seed=config.seed),
        "popularity": metrics_lib.popularity_scores(e["candidates"], data["item_counts"],
                                                    seed=config.seed)}
    baselines[name] = {k: metrics_lib.ranking_metrics(v, e["label_index"])
                       for k, v in scores.items()}

  return {"data": data, "train": train, "evals": evals, "sanity": sanity,
          "baselines": baselines}


def build(config: ml_collections.ConfigDict, workdir: str | None = None) -> Recipe:
  """Data, model, loss, evaluation and summary of a run as a
  :class:`~jaxloss.training.Recipe` (no device placement).

  Raises:
    ValueError: an invalid config field (named).
    RuntimeError: an evaluation list without its true item.
  """
  del workdir  # nothing derived from the data is stored (ids are the file's)
  validate(config)
  prepared = prepare_data(config)
  data, train, evals = prepared["data"], prepared["train"], prepared["evals"]
  sanity, baselines = prepared["sanity"], prepared["baselines"]
  num_items, num_train, L = int(data["num_items"]), len(train["seq"]), int(config.max_len)
  steps_per_epoch = math.ceil(num_train / config.batch_size)
  warmup = min(float(config.warmup_epochs), float(config.num_epochs) / 2)
  lr = (optax.linear_schedule(0.0, config.learning_rate, warmup) if warmup > 0
        else config.learning_rate)
  if warmup > 0:
    lr = optax.join_schedules([lr, optax.constant_schedule(config.learning_rate)],
                              [warmup])
  curriculum = curriculum_lib.constant(learning_rate=lr, aug_strength=1.0)
  compiled = curriculum.compile(steps_per_epoch)

  model = SASRec(num_items=num_items, max_len=L, hidden=config.hidden,
                 num_blocks=config.num_blocks, num_heads=config.num_heads,
                 dropout_rate=config.dropout_rate)
  tx = make_optimizer("adamw", learning_rate=config.learning_rate, b2=config.adam_b2,
                      weight_decay=config.weight_decay, max_grad_norm=config.max_grad_norm)
  num_negatives = config.num_candidates - 1
  monitor_spec = (monitors.MonitorSpec(terms=(config.loss,), heads={})
                  if config.monitor.enabled else None)
  # The loss of a model that scores every candidate alike.
  initial_reference = (math.log(config.num_candidates) if config.loss == "listwise"
                       else math.log(2.0))
  reference_text = (f"ln({config.num_candidates}), the loss at equal scores"
                    if config.loss == "listwise" else "ln 2, the loss at equal scores")
  anchors = anchors_for(data["path"], config.num_candidates)

  def init(key) -> TrainState:
    init_key, state_key = jax.random.split(key)
    variables = model.init(init_key, jnp.ones((1, num_negatives), jnp.int32),
                           jnp.zeros((1, L), jnp.int32), jnp.zeros((1, L), jnp.int32),
                           train=False)
    return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                             rng=state_key, train_sums=monitors.zero_sums(monitor_spec))

  sampler = epoch_permutation_sampler(num_train, config.batch_size)

  def sample_negatives(key, placeholder, positions, strength):
    """``[b, K]`` item ids uniform over 1..num_items, keyed by global position; a drawn
    item the user has in the window is masked out by the model."""
    del placeholder, strength
    keys = jax.vmap(lambda p: jax.random.fold_in(key, p))(positions)
    return jax.vmap(lambda k: jax.random.randint(
        k, (num_negatives,), 1, num_items + 1, dtype=jnp.int32))(keys)

  def predict(state, batch):
    scores = model.apply({"params": state.params}, batch["history"],
                         batch["candidates"], method=SASRec.score_candidates)
    return {"scores": scores.astype(jnp.float32)}

  def meta(k) -> dict:
    del k
    return {
        "num_classes": config.num_candidates, "class_counts": None,
        "learning_rate": float(config.learning_rate),
        "max_grad_norm": config.max_grad_norm,
        "terms": [{"name": config.loss, "weight": 1.0, "weight_field": None,
                   "initial_reference": initial_reference,
                   "initial_reference_text": "the loss at equal scores"}],
        "initial_reference": initial_reference, "initial_reference_text": reference_text,
        "heads": {}, "class_names": {},
        "stages": [{"name": "constant", "start_step": 0, "expect": {}, "knobs": {}}],
        "config_fields": {"learning_rate": "config.learning_rate"},
    }

  def summarize(record) -> dict:
    events = record.streams[0]
    best, last = record.select(events)
    best_test, last_test = best["test"], last["test"]
    init_event = next((e for e in events if e["split"] == "init"), {})
    train_events = [e for e in events if e["split"] == "train"]
    initial_loss = init_event.get("loss")
    repeat_diffs = [e["eval_repeat_max_diff"] for e in events
                    if e["split"] == "test" and "eval_repeat_max_diff" in e]
    checks = {
        "first_loss": {
            "value": initial_loss, "reference": initial_reference,
            "tolerance": config.first_loss_tolerance,
            "ok": (initial_loss is not None
                   and abs(initial_loss - initial_reference)
                   <= config.first_loss_tolerance)},
        "true_item_in_every_list": all(s["true_item_in_every_list"]
                                       for s in sanity.values()),
        "position_uniform": {
            name: {"chi2": s["position_chi2"], "p_value": s["position_p_value"],
                   "ok": s["position_p_value"] > config.position_p_min}
            for name, s in sanity.items()},
        "eval_deterministic": {"max_diff": max(repeat_diffs) if repeat_diffs else None,
                               "evaluations_repeated": len(repeat_diffs),
                               "ok": bool(repeat_diffs) and max(repeat_diffs) == 0.0},
        "loss_fell": {"first": initial_loss,
                      "last_epoch": train_events[-1]["loss"] if train_events else None,
                      "ok": bool(train_events) and initial_loss is not None
                            and train_events[-1]["loss"] < initial_loss},
    }
    checks["all_ok"] = bool(
        checks["first_loss"]["ok"] and checks["true_item_in_every_list"]
        and all(v["ok"] for v in checks["position_uniform"].values())
        and checks["eval_deterministic"]["ok"] and checks["loss_fell"]["ok"])
    summary = {key: best_test[key] for key in KEYS}
    summary.update({
        "name": config.name, "loss": config.loss,
        "num_candidates": config.num_candidates, "selected_epoch": best_test["epoch"],
        "validation": {key: best["validation"][key] for key in KEYS},
        "last_epoch": {key: last_test[key] for key in KEYS + ("epoch",)},
        "baselines": {name: {k: {key: v[key] for key in KEYS} for k, v in bl.items()}
                      for name, bl in baselines.items()},
        "initial_loss": initial_loss, "initial_reference": initial_reference,
        "sanity": checks, "epochs": train_events[-1]["epoch"] if train_events else 0,
        "final_train_loss": train_events[-1]["loss"] if train_events else None,
        "dataset": {"path": data["path"], "config_name": data["config_name"],
                    "num_users": data["num_users"], "num_items": data["num_items"],
                    "num_interactions": data["num_interactions"],
                    "train_users": num_train,
                    "evaluated_users": len(evals["test"]["target"]),
                    "data_seed": config.data_seed},
    })
    return summary

  def progress(train_event, reports) -> str:
    line = (f"loss {_fmt(train_event.get('loss'))} "
            f"(ln {config.num_candidates} = {math.log(config.num_candidates):.3f})")
    if reports:
      val, test = reports["validation"], reports["test"]
      line += (f" | validation HR@10 {val['hr@10']:.4f} NDCG@10 {val['ndcg@10']:.4f}"
               f" | test HR@10 {test['hr@10']:.4f} NDCG@10 {test['ndcg@10']:.4f}")
    return line

  def figures(workdir, record) -> None:
    from jaxloss import plots  # pylint: disable=g-import-not-at-top
    plots.plot_rerank_curves(record.streams[0], os.path.join(workdir, "curves.png"),
                             reference=initial_reference,
                             baselines=baselines["validation"], title=config.name)

  def report(summary) -> list:
    row = "  ".join(f"{k.upper()} {summary[k]:.4f}" for k in KEYS)
    lines = [f"{config.name}: Test ({config.num_candidates} candidates, "
             f"validation-selected epoch {summary['selected_epoch']:g}) {row}"]
    for name, m in summary["baselines"]["test"].items():
      lines.append(f"  {name:10s} " + "  ".join(f"{k.upper()} {m[k]:.4f}" for k in KEYS))
    for a in anchors:
      lines.append(f"  {a['model']}: HR@10 {a['hr@10']:.4f}  NDCG@10 {a['ndcg@10']:.4f}")
    s = summary["sanity"]
    lines.append(
        f"sanity: first loss {_fmt(s['first_loss']['value'])} vs "
        f"{s['first_loss']['reference']:.4f} "
        f"{'ok' if s['first_loss']['ok'] else 'FAIL'}; true item in every list "
        f"{'ok' if s['true_item_in_every_list'] else 'FAIL'}; position chi-square p "
        + ", ".join(f"{k} {v['p_value']:.3f}" for k, v in s["position_uniform"].items())
        + f"; evaluation repeated x{s['eval_deterministic']['evaluations_repeated']} "
        f"max diff {s['eval_deterministic']['max_diff']} "
        f"{'ok' if s['eval_deterministic']['ok'] else 'FAIL'}; loss fell "
        f"{'ok' if s['loss_fell']['ok'] else 'FAIL'} -> "
        f"{'all ok' if s['all_ok'] else 'SOME CHECKS FAILED'}")
    return lines

  d = data
  describe = (f"{d['num_interactions']} interactions of {d['num_users']} users on "
              f"{d['num_items']} items from {d['path']}; {num_train} training users, "
              f"{len(evals['validation']['target'])} / {len(evals['test']['target'])} "
              f"validation / test lists of {config.num_candidates} candidates")
  for name in EVAL_SPLITS:
    s, pb = sanity[name], baselines[name]
    describe += (f"\n  {name}: true item in every list {s['true_item_in_every_list']}, "
                 f"its position chi-square p = {s['position_p_value']:.3f}; random HR@10 "
                 f"{pb['random']['hr@10']:.4f}, popularity HR@10 "
                 f"{pb['popularity']['hr@10']:.4f} NDCG@10 "
                 f"{pb['popularity']['ndcg@10']:.4f}")

  return Recipe(
      name=config.name, train=train, eval_splits=evals,
      input_keys=("negatives", "seq", "pos"), eval_input_keys=("history", "candidates"),
      init=init, objective=make_rerank_loss(config.loss), curriculum=curriculum,
      compiled=compiled, batch_size=config.batch_size, num_epochs=config.num_epochs,
      predict=predict, evaluate=lambda split, out: rerank_report(out["scores"],
                                                                 evals[split]),
      meta=meta, summarize=summarize, seed=config.seed, sampler=sampler,
      augment_fn=sample_negatives, max_grad_norm=config.max_grad_norm,
      monitor=monitor_spec, selection=Selection("validation", "ndcg@10"),
      eval_every_epochs=config.eval_every, checkpoint_every_epoch=True,
      progress=progress, figures=figures, report=report, anchors=anchors,
      describe=describe)
