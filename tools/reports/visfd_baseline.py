"""A scikit-learn reference for UIT-ViSFD: ``python -m tools.reports.visfd_baseline``.

  python -m tools.reports.visfd_baseline [--manual_dir DIR] [--C 1 3 10 30]
                                         [--out docs/visfd_baseline]

TF-IDF of word uni- and bigrams (lower-cased syllables, ``jaxloss.data.text.tokenize``;
``min_df`` 2, sublinear tf) and, per aspect, one multinomial logistic regression over
its 4 classes (absent, positive, negative, neutral) with class-balanced weights
(``class_weight="balanced"``); the inverse regularisation ``C`` is picked on Dev (the
best mean of aspect and sentiment F1 over ``--C``). Scored on Test with the recipe's metrics
(:func:`jaxloss.metrics.absa_report`: aspect F1, sentiment F1, per-aspect F1), so the
neural rows and this one differ in the model alone.

It answers "is this aspect learnable from these reviews?": a rare aspect the neural rows
miss (STORAGE, 91 of 7,786 training reviews) is found here by its words ("bộ nhớ",
"GB"). Each ``C`` trains in about 25 s on the 2-core CPU. Writes ``--out``.md / .json.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from jaxloss.data import uit_visfd
from jaxloss.data.text import tokenize
from jaxloss.metrics import absa_report


def fit_and_score(manual_dir: str, *, C: float = 10.0, max_train: int | None = None
                  ) -> dict:
  """Fits the per-aspect models on Train and scores Dev and Test.

  Returns:
    ``{"dev": report, "test": report, "C": C, "num_train": n}`` with
    :func:`~jaxloss.metrics.absa_report`'s keys in each report.

  Raises:
    FileNotFoundError: a split's CSV is missing (named).
  """
  from sklearn.feature_extraction.text import TfidfVectorizer  # pylint: disable=import-outside-toplevel
  from sklearn.linear_model import LogisticRegression  # pylint: disable=import-outside-toplevel
  splits = {}
  for name, file in (("train", "Train.csv"), ("dev", "Dev.csv"), ("test", "Test.csv")):
    rows = uit_visfd.read_csv(os.path.join(manual_dir, file))
    if name == "train" and max_train is not None:
      rows = rows[:max_train]
    splits[name] = ([r["text"] for r in rows], np.stack([r["labels"] for r in rows]))
  vectorizer = TfidfVectorizer(tokenizer=tokenize, token_pattern=None, lowercase=False,
                               ngram_range=(1, 2), min_df=2, sublinear_tf=True)
  x_train = vectorizer.fit_transform(splits["train"][0])
  y_train = splits["train"][1]
  features = {s: vectorizer.transform(splits[s][0]) for s in ("dev", "test")}
  predictions = {s: np.zeros_like(splits[s][1]) for s in ("dev", "test")}
  for a in range(y_train.shape[1]):
    classes = np.unique(y_train[:, a])
    if len(classes) == 1:  # a tiny training subset without this aspect
      for s in predictions:
        predictions[s][:, a] = classes[0]
      continue
    model = LogisticRegression(C=C, class_weight="balanced", max_iter=3000)
    model.fit(x_train, y_train[:, a])
    for s in predictions:
      predictions[s][:, a] = model.predict(features[s])
  out = {s: absa_report(splits[s][1], predictions[s]) for s in ("dev", "test")}
  return {**out, "C": C, "num_train": int(len(y_train))}


def _dev_score(result: dict) -> float:
  """Model selection: the sum of Dev aspect and sentiment F1."""
  return result["dev"]["aspect_f1"] + result["dev"]["sentiment_f1"]


def markdown(result: dict) -> str:
  """The Test row and its per-aspect aspect F1."""
  t = result["test"]
  per = t["per_aspect_f1"]
  names = list(per)
  lines = ["| UIT-ViSFD Test | aspect F1 | sentiment F1 | " + " | ".join(names) + " |",
           "|---|---:|---:|" + "---:|" * len(names),
           f"| TF-IDF uni+bigrams, logistic regression per aspect (C = {result['C']:g} "
           f"from Dev, balanced) | {100 * t['aspect_f1']:.2f} | "
           f"{100 * t['sentiment_f1']:.2f} | "
           + " | ".join(f"{100 * per[n]['aspect']:.1f}" for n in names) + " |"]
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m tools.reports.visfd_baseline",
                                   description=__doc__.splitlines()[0])
  parser.add_argument("--manual_dir", default=uit_visfd.default_manual_dir())
  parser.add_argument("--C", type=float, nargs="+", default=[1.0, 3.0, 10.0, 30.0])
  parser.add_argument("--out", default="docs/visfd_baseline")
  args = parser.parse_args(argv)
  t0 = time.time()
  grid = [fit_and_score(args.manual_dir, C=c) for c in args.C]
  result = dict(max(grid, key=_dev_score))
  result["grid"] = [{"C": r["C"], **{f"{split}_{k}": r[split][k]
                                     for split in ("dev", "test")
                                     for k in ("aspect_f1", "sentiment_f1")}} for r in grid]
  result["wall_s"] = round(time.time() - t0, 1)
  table = markdown(result)
  print(table)
  if args.out:
    with open(args.out + ".md", "w", encoding="utf-8") as f:
      f.write(table + "\n")
    with open(args.out + ".json", "w", encoding="utf-8") as f:
      json.dump(result, f, indent=2)
    print(f"-> {args.out}.md, {args.out}.json ({result['wall_s']:.0f} s)")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
