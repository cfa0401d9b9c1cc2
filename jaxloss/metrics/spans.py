"""Joint-NLU metrics: intent accuracy, span F1 (seqeval) and sentence accuracy.

Intent accuracy, slot (span) F1 and sentence ("semantic frame") accuracy, as JointBERT
reports them. Slot F1 is seqeval's default mode (conlleval semantics): a span counts
only when its type and both boundaries match, and an ``I-X`` that does not continue an
``X`` span (``O I-X``, ``B-Y I-X``) starts a new span instead of being dropped.
:func:`span_f1` wraps seqeval (it does not reimplement span extraction) and adds the span
counts and per-type scores; :func:`joint_nlu_report` adds the sentence-level numbers.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence
import warnings

import numpy as np


def _seqeval_labeling():
  """seqeval's ``sequence_labeling`` module, imported on first use so that the rest of
  this module works without seqeval."""
  try:
    from seqeval.metrics import sequence_labeling  # pylint: disable=g-import-not-at-top
  except ImportError as e:  # pragma: no cover - seqeval is a declared dependency
    raise ImportError("span_f1 and joint_nlu_report need seqeval: pip install "
                      "'seqeval>=1.2.2'") from e
  return sequence_labeling


def _tag_sentences(name: str, tags) -> list[list[str]]:
  """``tags`` as a list of lists of plain ``str``; TypeError for anything else."""
  if isinstance(tags, str):
    raise TypeError(f"{name} must be a sequence of sentences, each a sequence of tag "
                    f"strings, got the str {tags!r}")
  sentences = []
  for i, sentence in enumerate(tags):
    if isinstance(sentence, str):
      raise TypeError(f"{name}[{i}] must be a sequence of tag strings, got the str "
                      f"{sentence!r}")
    sentence = list(sentence)
    for tag in sentence:
      if not isinstance(tag, str):
        raise TypeError(f"{name}[{i}] must hold tag strings, got {tag!r} of type "
                        f"{type(tag).__name__}")
    sentences.append([str(tag) for tag in sentence])
  return sentences


def _check_tag_pairs(true_tags, pred_tags) -> tuple[list[list[str]], list[list[str]]]:
  """Validates the two tag sets sentence by sentence; returns them as lists of lists."""
  true_list = _tag_sentences("true_tags", true_tags)
  pred_list = _tag_sentences("pred_tags", pred_tags)
  if len(pred_list) != len(true_list):
    raise ValueError(f"pred_tags must have one tag sequence per sentence of true_tags, "
                     f"expected {len(true_list)} sentences, got {len(pred_list)}")
  if not true_list:
    raise ValueError("true_tags and pred_tags must hold at least one sentence, got none")
  for i, (t, p) in enumerate(zip(true_list, pred_list)):
    if len(t) != len(p):
      raise ValueError(f"sentence {i}: true_tags has {len(t)} tags but pred_tags has "
                       f"{len(p)}; both must be cut to the sentence's length")
  return true_list, pred_list


def span_f1(true_tags: Sequence[Sequence[str]],
            pred_tags: Sequence[Sequence[str]]) -> dict:
  """Span (chunk) precision, recall and F1 of BIO tags, seqeval's default mode.

  Spans come from ``seqeval.metrics.sequence_labeling.get_entities`` and the scores
  from seqeval's ``precision_recall_fscore_support`` (default mode, the semantics of
  CoNLL's ``conlleval`` script), so ``f1`` equals ``seqeval.metrics.f1_score(true_tags,
  pred_tags)``. A predicted span is correct only when its type and both boundaries
  match a gold span. An ``I-X`` that does not continue an ``X`` span (after ``O``,
  after ``B-Y``, at the start) starts a new span, as in conlleval.

  With no span at all, or no correct one, the scores are 0 (seqeval's
  ``zero_division=0``); seqeval's ``UndefinedMetricWarning`` is silenced. Tags that are
  not ``O``/``B-``/``I-`` are passed to seqeval as they are: it warns "PAD seems not to
  be NE tag" and reads ``PAD`` as a one-token span of type ``AD`` (``UNK``: type
  ``NK``), so a predicted special tag is a false-positive span, as in JointBERT, which
  scores its raw slot predictions with seqeval too.

  Args:
    true_tags: gold tags, one sequence of tag strings per sentence, cut to the
      sentence's length.
    pred_tags: predicted tags, same layout.

  Returns:
    ``{"precision", "recall", "f1"}``: micro averages over spans, floats in [0, 1];
    ``{"num_true", "num_pred", "num_correct"}``: span counts (ints); ``"per_type"``:
    ``{type: {"precision", "recall", "f1", "support"}}`` for every type seen in either
    set (support = gold spans of that type), in sorted type order.

  Raises:
    TypeError: a tag set, sentence or tag of the wrong type (a str where a sequence
      of tags is expected, a non-str tag).
    ValueError: no sentence, a different number of sentences, or a sentence whose
      two tag sequences differ in length (the message names the sentence index and
      both lengths).

  References:
    Nakayama, seqeval (https://github.com/chakki-works/seqeval), default mode;
    Tjong Kim Sang & De Meulder, "Introduction to the CoNLL-2003 Shared Task", CoNLL
    2003 (the ``conlleval`` span F1).

  Examples:
    >>> r = span_f1([["B-loc", "I-loc", "O", "B-per"]], [["B-loc", "O", "O", "B-per"]])
    >>> r["num_true"], r["num_pred"], r["num_correct"]
    (2, 2, 1)
    >>> r["precision"], r["recall"], r["f1"]
    (0.5, 0.5, 0.5)
    >>> r["per_type"]["loc"]
    {'precision': 0.0, 'recall': 0.0, 'f1': 0.0, 'support': 1}
  """
  from sklearn.exceptions import (  # pylint: disable=g-import-not-at-top
      UndefinedMetricWarning)
  true_list, pred_list = _check_tag_pairs(true_tags, pred_tags)
  labeling = _seqeval_labeling()
  spans = []
  for tags in (true_list, pred_list):
    by_type = {}
    for type_, start, end in labeling.get_entities(tags):
      by_type.setdefault(type_, set()).add((start, end))
    spans.append(by_type)
  true_spans, pred_spans = spans
  types = sorted(set(true_spans) | set(pred_spans))
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", UndefinedMetricWarning)
    precision, recall, f1, _ = labeling.precision_recall_fscore_support(
        true_list, pred_list, average="micro", zero_division=0)
    per_p, per_r, per_f, per_s = labeling.precision_recall_fscore_support(
        true_list, pred_list, average=None, zero_division=0)
  if len(per_p) != len(types):  # seqeval orders its per-type arrays by sorted type
    raise AssertionError(f"seqeval returned {len(per_p)} types, expected {types}")
  empty = set()
  return {
      "precision": float(precision),
      "recall": float(recall),
      "f1": float(f1),
      "num_true": sum(len(s) for s in true_spans.values()),
      "num_pred": sum(len(s) for s in pred_spans.values()),
      "num_correct": sum(len(s & pred_spans.get(t, empty))
                         for t, s in true_spans.items()),
      "per_type": {
          t: {"precision": float(p), "recall": float(r), "f1": float(f),
              "support": int(s)}
          for t, p, r, f, s in zip(types, per_p, per_r, per_f, per_s)},
  }


def _check_ids(name: str, ids, num: Optional[int] = None) -> np.ndarray:
  """A 1-D array of non-negative integer ids (of length ``num`` when given)."""
  ids = np.asarray(ids)
  if not (np.issubdtype(ids.dtype, np.integer) and ids.dtype != np.bool_):
    raise ValueError(f"{name} must be an integer array of ids, got dtype {ids.dtype}")
  if ids.ndim != 1:
    raise ValueError(f"{name} must be 1-D [N], got shape {ids.shape}")
  if num is not None and ids.shape[0] != num:
    raise ValueError(f"{name} must have one id per sentence, expected {num}, got "
                     f"{ids.shape[0]}")
  if ids.size and ids.min() < 0:
    raise ValueError(f"{name} must hold ids >= 0, got {ids.min()}")
  return ids.astype(np.int64)


def joint_nlu_report(*, intent_true, intent_pred,
                     tags_true: Sequence[Sequence[str]],
                     tags_pred: Sequence[Sequence[str]],
                     o_tag: str = "O",
                     label_true: Optional[Mapping[str, np.ndarray]] = None,
                     label_pred: Optional[Mapping[str, np.ndarray]] = None,
                     intent_names: Optional[Sequence[str]] = None) -> dict:
  """Intent accuracy, slot F1, sentence accuracy and collapse signals of a joint model.

  * ``intent_accuracy``: share of sentences with the right intent.
  * ``slot_f1``, ``slot_precision``, ``slot_recall``: :func:`span_f1` (seqeval,
    conlleval semantics) over all sentences.
  * ``sentence_accuracy``: share of sentences whose intent *and* every tag are right
    (JointBERT's "semantic frame accuracy"), and every extra sentence label too
    (``label_true`` / ``label_pred``, e.g. a command field) when given.
  * ``accuracy/<field>``: accuracy of each extra sentence label.
  * ``pred_non_o_share`` / ``true_non_o_share``: share of predicted / gold tokens that
    are not ``o_tag`` (0.0 when there is no token). A tagger collapsed onto ``O`` has
    ``pred_non_o_share`` near 0 while ``true_non_o_share`` is not.
  * ``top_intent_share``: the largest share of the predictions that any one intent
    takes; ``top_intent``: that intent (the smallest id on a tie), its id, or its
    name when ``intent_names`` is given. A head collapsed onto one intent has a share
    near 1.
  * ``num_sentences``: N.

  Args:
    intent_true: int ``[N]`` gold intent ids (>= 0).
    intent_pred: int ``[N]`` predicted intent ids.
    tags_true: N gold tag sequences (strings), each cut to its sentence's length.
    tags_pred: N predicted tag sequences, same lengths.
    o_tag: the outside tag.
    label_true: ``{field: array [N, ...]}``, extra sentence-level gold labels, or
      None. A sentence's label is right when all its entries equal the prediction.
    label_pred: ``{field: array}`` with the same fields and shapes, or None.
    intent_names: names indexed by intent id (used for ``top_intent``), or None.

  Returns:
    A dict of plain Python numbers (``top_intent``: int or str), keys as above.

  Raises:
    ValueError: intent ids not 1-D integer ``[N]`` or negative, or out of range of
      ``intent_names``; tags as in :func:`span_f1` (N sentences each); only one of
      ``label_true`` / ``label_pred`` given, their fields differ, or an array's shape
      is not ``[N, ...]`` or differs between the two.
    TypeError: tags of the wrong type, as in :func:`span_f1`.

  References:
    Chen, Zhuo & Wang, "BERT for Joint Intent Classification and Slot Filling",
    arXiv:1902.10909 (intent accuracy, slot F1, sentence-level semantic frame
    accuracy). The definitions follow JointBERT's ``utils.py`` (``get_intent_acc``,
    ``get_slot_metrics`` with seqeval, ``get_sentence_frame_acc``), as found in forks
    of monologg/JointBERT.

  Examples:
    >>> r = joint_nlu_report(
    ...     intent_true=np.array([0, 1, 1]), intent_pred=np.array([0, 1, 0]),
    ...     tags_true=[["B-loc", "O"], ["O", "B-per"], ["O"]],
    ...     tags_pred=[["B-loc", "O"], ["O", "O"], ["O"]],
    ...     intent_names=["weather", "call"])
    >>> round(r["intent_accuracy"], 4), round(r["sentence_accuracy"], 4)
    (0.6667, 0.3333)
    >>> r["slot_precision"], r["slot_recall"], round(r["slot_f1"], 4)
    (1.0, 0.5, 0.6667)
    >>> r["pred_non_o_share"], r["true_non_o_share"]
    (0.2, 0.4)
    >>> round(r["top_intent_share"], 4), r["top_intent"]
    (0.6667, 'weather')
  """
  intent_true = _check_ids("intent_true", intent_true)
  num = intent_true.shape[0]
  intent_pred = _check_ids("intent_pred", intent_pred, num)
  true_list, pred_list = _check_tag_pairs(tags_true, tags_pred)
  if len(true_list) != num:
    raise ValueError(f"tags_true must have one tag sequence per sentence, expected "
                     f"{num} (the length of intent_true), got {len(true_list)}")
  if intent_names is not None:
    intent_names = list(intent_names)
    high = int(max(intent_true.max(), intent_pred.max()))
    if high >= len(intent_names):
      raise ValueError(f"intent_names must name every intent id, got {len(intent_names)} "
                       f"names but id {high}")
  if (label_true is None) != (label_pred is None):
    raise ValueError("give both label_true and label_pred, or neither")
  label_true = dict(label_true or {})
  label_pred = dict(label_pred or {})
  if set(label_true) != set(label_pred):
    raise ValueError(f"label_true and label_pred must have the same fields, got "
                     f"{sorted(label_true)} and {sorted(label_pred)}")

  intent_ok = intent_true == intent_pred
  tags_ok = np.array([t == p for t, p in zip(true_list, pred_list)], bool)
  sentence_ok = intent_ok & tags_ok
  field_accuracy = {}
  for field in label_true:
    y, p = np.asarray(label_true[field]), np.asarray(label_pred[field])
    if y.ndim < 1 or y.shape[0] != num:
      raise ValueError(f"label_true[{field!r}] must have shape [N, ...] with N = {num}, "
                       f"got {y.shape}")
    if p.shape != y.shape:
      raise ValueError(f"label_pred[{field!r}] must have the shape of "
                       f"label_true[{field!r}], expected {y.shape}, got {p.shape}")
    ok = (y == p).reshape(num, -1).all(axis=1)
    field_accuracy[f"accuracy/{field}"] = float(ok.mean())
    sentence_ok &= ok

  slots = span_f1(true_list, pred_list)
  num_tokens = sum(len(t) for t in true_list)

  def non_o_share(sentences):
    if num_tokens == 0:
      return 0.0
    return sum(tag != o_tag for s in sentences for tag in s) / num_tokens

  counts = np.bincount(intent_pred)
  top = int(np.argmax(counts))
  return {
      "intent_accuracy": float(intent_ok.mean()),
      "slot_f1": slots["f1"],
      "slot_precision": slots["precision"],
      "slot_recall": slots["recall"],
      "sentence_accuracy": float(sentence_ok.mean()),
      **field_accuracy,
      "pred_non_o_share": float(non_o_share(pred_list)),
      "true_non_o_share": float(non_o_share(true_list)),
      "top_intent_share": float(counts[top] / num),
      "top_intent": intent_names[top] if intent_names is not None else top,
      "num_sentences": num,
  }


# Candidate reranking (see the module docstring for the protocol and sources).
