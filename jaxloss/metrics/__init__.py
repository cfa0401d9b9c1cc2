"""Evaluation metrics on the host, one module per task family.

* :mod:`~jaxloss.metrics.classification` — per-class recall, UAR, WAR, accuracy,
  macro F1 and many / medium / few-shot accuracy from confusion-matrix sums.
* :mod:`~jaxloss.metrics.absa` — aspect and aspect-sentiment F1 of UIT-ViSFD.
* :mod:`~jaxloss.metrics.spans` — intent accuracy, BIO span F1 (seqeval) and sentence
  accuracy of joint NLU.
* :mod:`~jaxloss.metrics.ranking` — HR@k, NDCG@k, MRR, the true item's position test and
  the random / popularity baselines of candidate reranking.

Every name is re-exported here: ``from jaxloss import metrics; metrics.uar(...)``.
"""

from jaxloss.metrics.absa import (ASPECTS, POLARITIES, absa_report, aspect_detection_f1,
                                  aspect_sentiment_f1, macro_f1_4class)
from jaxloss.metrics.classification import (accuracy, classification_report, macro_f1,
                                            per_class_recall, shot_accuracy, shot_groups,
                                            uar, war)
from jaxloss.metrics.ranking import (max_metric_difference, popularity_scores,
                                     position_uniformity, random_scores, ranking_metrics,
                                     true_item_ranks)
from jaxloss.metrics.spans import joint_nlu_report, span_f1

__all__ = [
    "ASPECTS", "POLARITIES", "absa_report", "accuracy", "aspect_detection_f1",
    "aspect_sentiment_f1", "classification_report", "joint_nlu_report", "macro_f1",
    "macro_f1_4class", "max_metric_difference", "per_class_recall", "popularity_scores",
    "position_uniformity", "random_scores", "ranking_metrics", "shot_accuracy",
    "shot_groups", "span_f1", "true_item_ranks", "uar", "war",
]
