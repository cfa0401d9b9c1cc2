"""Joint-NLU metrics: span F1 (seqeval, conlleval semantics) and the joint report.

The expected numbers are worked out by hand in the comments; the random test checks
the wrapper against seqeval's own scores.
"""

import warnings

import numpy as np
import pytest
from seqeval import metrics as seqeval_metrics

from jaxloss import metrics


def _no_warnings(fn, *args, **kwargs):
  """Calls ``fn`` and fails if it emits any warning."""
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    out = fn(*args, **kwargs)
  assert not caught, [str(w.message) for w in caught]
  return out


def _prf(r):
  return r["precision"], r["recall"], r["f1"]


def _counts(r):
  return r["num_true"], r["num_pred"], r["num_correct"]


# ------------------------------------------------------------------------- span_f1


def test_exact_match():
  # Gold spans loc [0, 1] and per [3, 3]; the prediction is identical: 2 of 2 right.
  tags = [["B-loc", "I-loc", "O", "B-per"]]
  r = _no_warnings(metrics.span_f1, tags, tags)
  assert _counts(r) == (2, 2, 2)
  assert _prf(r) == (1.0, 1.0, 1.0)
  assert r["per_type"] == {
      "loc": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1},
      "per": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}}


def test_boundary_mismatch_does_not_count():
  # Gold loc [0, 1], predicted loc [0, 0]: same type, same start, wrong end -> the
  # predicted span is wrong (precision 0/1) and the gold one missed (recall 0/1).
  r = _no_warnings(metrics.span_f1, [["B-loc", "I-loc"]], [["B-loc", "O"]])
  assert _counts(r) == (1, 1, 0)
  assert _prf(r) == (0.0, 0.0, 0.0)
  assert r["per_type"] == {"loc": {"precision": 0.0, "recall": 0.0, "f1": 0.0,
                                   "support": 1}}


def test_type_mismatch_does_not_count():
  # Gold loc [0, 0], predicted per [0, 0]: right boundaries, wrong type. Both types
  # are reported: loc has support 1 and no prediction, per a prediction and support 0.
  r = _no_warnings(metrics.span_f1, [["B-loc", "O"]], [["B-per", "O"]])
  assert _counts(r) == (1, 1, 0)
  assert _prf(r) == (0.0, 0.0, 0.0)
  assert r["per_type"]["loc"]["support"] == 1
  assert r["per_type"]["per"]["support"] == 0


def test_i_after_o_starts_a_chunk():
  # conlleval: an I-X after O starts a new X chunk (it is not dropped). The predicted
  # "O I-loc I-loc" therefore has the span loc [1, 2], exactly the gold span.
  r = metrics.span_f1([["O", "B-loc", "I-loc"]], [["O", "I-loc", "I-loc"]])
  assert _counts(r) == (1, 1, 1)
  assert _prf(r) == (1.0, 1.0, 1.0)
  # I- at the very start starts a chunk too: "I-loc O" has loc [0, 0].
  r = metrics.span_f1([["B-loc", "O"]], [["I-loc", "O"]])
  assert _counts(r) == (1, 1, 1)
  # "B-per I-loc": the type changes, so per [0, 0] ends and loc [1, 1] starts; the
  # gold loc [0, 1] matches neither (2 predicted spans, 0 right).
  r = metrics.span_f1([["B-loc", "I-loc"]], [["B-per", "I-loc"]])
  assert _counts(r) == (1, 2, 0)
  assert sorted(r["per_type"]) == ["loc", "per"]


def test_several_sentences_with_counts():
  true = [["B-loc", "I-loc", "O", "B-per"],  # loc [0,1], per [3,3]
          ["B-loc", "I-loc", "O"],  # loc [0,1]
          ["B-per", "O"],  # per [0,0]
          ["O", "B-time", "I-time"],  # time [1,2]
          ["O", "O"]]  # none
  pred = [["B-loc", "I-loc", "O", "B-per"],  # both right:           2 pred, 2 right
          ["B-loc", "O", "O"],  # loc [0,0], boundary wrong:          1 pred, 0 right
          ["B-loc", "O"],  # loc [0,0], type wrong:                   1 pred, 0 right
          ["O", "I-time", "I-time"],  # I- after O starts time [1,2]: 1 pred, 1 right
          ["B-per", "O"]]  # per [0,0], spurious:                     1 pred, 0 right
  r = _no_warnings(metrics.span_f1, true, pred)
  # 5 gold spans, 6 predicted, 3 right: P = 3/6, R = 3/5, F1 = 2*3 / (5+6) = 6/11.
  assert _counts(r) == (5, 6, 3)
  assert r["precision"] == pytest.approx(0.5)
  assert r["recall"] == pytest.approx(0.6)
  assert r["f1"] == pytest.approx(6 / 11)
  # loc: 2 gold, 3 predicted, 1 right -> P 1/3, R 1/2, F1 2*1/(2+3) = 0.4.
  # per: 2 gold (s0, s2), 2 predicted (s0, s4), 1 right -> 0.5 each.
  # time: 1 / 1 / 1 -> 1.0 each.
  expected = {"loc": (1 / 3, 1 / 2, 0.4, 2), "per": (0.5, 0.5, 0.5, 2),
              "time": (1.0, 1.0, 1.0, 1)}
  assert list(r["per_type"]) == ["loc", "per", "time"]
  for name, (p, rec, f, s) in expected.items():
    got = r["per_type"][name]
    assert (got["precision"], got["recall"], got["f1"]) == pytest.approx((p, rec, f))
    assert got["support"] == s


def test_no_spans_gives_zero_without_warnings():
  r = _no_warnings(metrics.span_f1, [["O", "O"], ["O"]], [["O", "O"], ["O"]])
  assert _counts(r) == (0, 0, 0)
  assert _prf(r) == (0.0, 0.0, 0.0)
  assert r["per_type"] == {}
  # Predictions but no gold span: precision 0/1, recall 0/0 -> 0, F1 0.
  r = _no_warnings(metrics.span_f1, [["O", "O"]], [["B-loc", "O"]])
  assert _counts(r) == (0, 1, 0)
  assert _prf(r) == (0.0, 0.0, 0.0)
  # Gold spans but no prediction: precision 0/0 -> 0, recall 0/1.
  r = _no_warnings(metrics.span_f1, [["B-loc", "O"]], [["O", "O"]])
  assert _counts(r) == (1, 0, 0)
  assert _prf(r) == (0.0, 0.0, 0.0)


def test_accepts_tuples_and_arrays():
  true = np.array([["B-loc", "I-loc", "O"], ["O", "B-per", "O"]])
  pred = (("B-loc", "I-loc", "O"), ("O", "O", "O"))
  r = metrics.span_f1(true, pred)
  assert _counts(r) == (2, 1, 1)
  assert _prf(r) == pytest.approx((1.0, 0.5, 2 / 3))


def test_special_tags_are_seqeval_spans():
  # seqeval reads "PAD" as tag P with type "AD": a predicted special is a spurious
  # one-token span (and seqeval warns), as when JointBERT scores raw predictions.
  with pytest.warns(UserWarning, match="seems not to be NE tag"):
    r = metrics.span_f1([["B-loc", "O"]], [["B-loc", "PAD"]])
  assert _counts(r) == (1, 2, 1)
  assert "AD" in r["per_type"]


def test_length_mismatch_names_sentence_and_lengths():
  with pytest.raises(ValueError, match=r"sentence 1: true_tags has 3 tags but "
                     r"pred_tags has 2"):
    metrics.span_f1([["O"], ["O", "B-a", "I-a"]], [["O"], ["O", "B-a"]])
  with pytest.raises(ValueError, match="expected 2 sentences, got 1"):
    metrics.span_f1([["O"], ["O"]], [["O"]])
  with pytest.raises(ValueError, match="at least one sentence"):
    metrics.span_f1([], [])


def test_wrong_types():
  with pytest.raises(TypeError, match=r"true_tags\[0\] must be a sequence of tag "
                     "strings"):
    metrics.span_f1(["B-a O"], [["B-a", "O"]])
  with pytest.raises(TypeError, match="must hold tag strings"):
    metrics.span_f1([[1, 0]], [["B-a", "O"]])


def _random_tags(rng, n, max_len=9):
  alphabet = ["O", "B-a", "I-a", "B-b", "I-b", "B-c", "I-c"]
  probs = [0.4, 0.12, 0.12, 0.1, 0.1, 0.08, 0.08]
  lengths = rng.integers(0, max_len + 1, n)
  return [list(rng.choice(alphabet, size=k, p=probs)) for k in lengths]


@pytest.mark.parametrize("seed", range(6))
def test_against_seqeval(seed):
  rng = np.random.default_rng(seed)
  true = _random_tags(rng, 40)
  # Predictions: each tag kept with probability 0.7, else replaced at random (so
  # boundary, type and I-after-O errors all occur).
  pred = []
  for sentence in true:
    repl = list(rng.choice(["O", "B-a", "I-a", "B-b", "I-b", "B-c", "I-c"],
                           size=len(sentence)))
    keep = rng.random(len(sentence)) < 0.7
    pred.append([t if k else r for t, k, r in zip(sentence, keep, repl)])
  r = _no_warnings(metrics.span_f1, true, pred)
  assert r["f1"] == pytest.approx(seqeval_metrics.f1_score(true, pred), abs=1e-12)
  assert r["precision"] == pytest.approx(
      seqeval_metrics.precision_score(true, pred), abs=1e-12)
  assert r["recall"] == pytest.approx(seqeval_metrics.recall_score(true, pred),
                                      abs=1e-12)
  # The counts agree with the micro scores.
  assert r["precision"] == pytest.approx(r["num_correct"] / max(r["num_pred"], 1))
  assert r["recall"] == pytest.approx(r["num_correct"] / max(r["num_true"], 1))
  per = seqeval_metrics.f1_score(true, pred, average=None)
  np.testing.assert_allclose([v["f1"] for v in r["per_type"].values()], per,
                             atol=1e-12)
  assert sum(v["support"] for v in r["per_type"].values()) == r["num_true"]


# ---------------------------------------------------------------- joint_nlu_report

# 4 sentences; intents 0 greet, 1 play, 2 stop; an extra "command" label.
INTENT_TRUE = np.array([0, 1, 2, 1])
INTENT_PRED = np.array([0, 1, 1, 1])  # sentence 2 wrong
TAGS_TRUE = [["B-loc", "O"], ["O", "B-per", "I-per"], ["O"], ["B-time"]]
TAGS_PRED = [["B-loc", "O"], ["O", "B-per", "O"], ["O"], ["B-time"]]  # sentence 1 wrong
COMMAND_TRUE = np.array([3, 0, 1, 2])
COMMAND_PRED = np.array([3, 0, 1, 0])  # sentence 3 wrong


def test_joint_report_by_hand():
  r = _no_warnings(metrics.joint_nlu_report, intent_true=INTENT_TRUE,
                   intent_pred=INTENT_PRED, tags_true=TAGS_TRUE, tags_pred=TAGS_PRED)
  # Intent right in sentences 0, 1, 3 -> 3/4.
  assert r["intent_accuracy"] == 0.75
  # Tags right in 0, 2, 3; intent and tags right in 0 and 3 only -> 2/4.
  assert r["sentence_accuracy"] == 0.5
  # Spans: gold loc, per [1,2], time; predicted loc, per [1,1], time; 2 of 3 right.
  assert r["slot_precision"] == pytest.approx(2 / 3)
  assert r["slot_recall"] == pytest.approx(2 / 3)
  assert r["slot_f1"] == pytest.approx(2 / 3)
  # 7 tokens; gold non-O: B-loc, B-per, I-per, B-time = 4; predicted: 3.
  assert r["true_non_o_share"] == pytest.approx(4 / 7)
  assert r["pred_non_o_share"] == pytest.approx(3 / 7)
  # Predicted intents 0, 1, 1, 1: intent 1 takes 3/4.
  assert r["top_intent_share"] == 0.75
  assert r["top_intent"] == 1
  assert r["num_sentences"] == 4
  assert not any(k.startswith("accuracy/") for k in r)


def test_joint_report_extra_labels_and_names():
  r = metrics.joint_nlu_report(
      intent_true=INTENT_TRUE, intent_pred=INTENT_PRED, tags_true=TAGS_TRUE,
      tags_pred=TAGS_PRED, label_true={"command": COMMAND_TRUE},
      label_pred={"command": COMMAND_PRED}, intent_names=["greet", "play", "stop"])
  # Command right in 0, 1, 2 -> 3/4; sentence 3 (intent and tags right) now fails on
  # the command, so only sentence 0 is right in full -> 1/4.
  assert r["accuracy/command"] == 0.75
  assert r["sentence_accuracy"] == 0.25
  assert r["top_intent"] == "play"
  assert r["intent_accuracy"] == 0.75  # unchanged by the extra label


def test_joint_report_collapse_diagnostics():
  # A collapsed model: every intent 2, every tag O.
  r = metrics.joint_nlu_report(
      intent_true=INTENT_TRUE, intent_pred=np.full(4, 2), tags_true=TAGS_TRUE,
      tags_pred=[["O"] * len(t) for t in TAGS_TRUE], intent_names=["a", "b", "c"])
  assert r["top_intent_share"] == 1.0 and r["top_intent"] == "c"
  assert r["pred_non_o_share"] == 0.0
  assert r["slot_f1"] == 0.0 and r["slot_precision"] == 0.0
  # Only sentence 2 (intent 2, tags O) is right.
  assert r["sentence_accuracy"] == 0.25
  # A tie between intents 0 and 1 (2 each) goes to the smaller id.
  r = metrics.joint_nlu_report(
      intent_true=INTENT_TRUE, intent_pred=np.array([1, 0, 1, 0]),
      tags_true=TAGS_TRUE, tags_pred=TAGS_TRUE)
  assert r["top_intent"] == 0 and r["top_intent_share"] == 0.5
  # A custom outside tag: with o_tag="B-loc" the other tags count as non-O.
  r = metrics.joint_nlu_report(intent_true=INTENT_TRUE, intent_pred=INTENT_PRED,
                               tags_true=TAGS_TRUE, tags_pred=TAGS_PRED, o_tag="B-loc")
  assert r["true_non_o_share"] == pytest.approx(6 / 7)


def test_joint_report_errors():
  kw = dict(intent_true=INTENT_TRUE, intent_pred=INTENT_PRED, tags_true=TAGS_TRUE,
            tags_pred=TAGS_PRED)
  with pytest.raises(ValueError, match=r"sentence 1: true_tags has 3 tags but "
                     r"pred_tags has 2"):
    metrics.joint_nlu_report(**{**kw, "tags_pred": [["B-loc", "O"], ["O", "B-per"],
                                                    ["O"], ["B-time"]]})
  with pytest.raises(ValueError, match="expected 4 .*got 3"):
    metrics.joint_nlu_report(**{**kw, "tags_true": TAGS_TRUE[:3],
                                "tags_pred": TAGS_PRED[:3]})
  with pytest.raises(ValueError, match="intent_pred must have one id per sentence"):
    metrics.joint_nlu_report(**{**kw, "intent_pred": INTENT_PRED[:3]})
  with pytest.raises(ValueError, match="integer array"):
    metrics.joint_nlu_report(**{**kw, "intent_pred": INTENT_PRED.astype(float)})
  with pytest.raises(ValueError, match="intent_names must name every intent id"):
    metrics.joint_nlu_report(**kw, intent_names=["a", "b"])
  with pytest.raises(ValueError, match="give both label_true and label_pred"):
    metrics.joint_nlu_report(**kw, label_true={"command": COMMAND_TRUE})
  with pytest.raises(ValueError, match="same fields"):
    metrics.joint_nlu_report(**kw, label_true={"command": COMMAND_TRUE},
                             label_pred={"cmd": COMMAND_PRED})
  with pytest.raises(ValueError, match="must have the shape"):
    metrics.joint_nlu_report(**kw, label_true={"command": COMMAND_TRUE},
                             label_pred={"command": COMMAND_PRED[:3]})
