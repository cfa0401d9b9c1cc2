"""Per-example losses for imbalanced and multi-task training, and their helpers.

Every loss returns one value per example (per list for ranking, per sequence
for tagging, per anchor for contrastive losses, per decision for the sigmoid
focal loss) and never reduces; reduce with :func:`weighted_mean` /
:func:`masked_mean`, combine terms with :func:`weighted_sum`. Masks are
``where=`` (True = include) everywhere.

Families (one module each): ``classification`` (softmax/sigmoid focal,
weighted and logit-adjusted CE), ``long_tail`` (balanced softmax, LDAM,
post-hoc logit adjustment), ``contrastive`` (SupCon, NT-Xent), ``ranking``
(listwise softmax, pairwise logistic), ``sequence`` (token tagging), ``crf``
(linear-chain CRF),
``masking`` (finite invalid-label masks), ``multitask`` (weighted sums),
``weights`` (class weights and priors from counts), ``reduce``.
"""

from jaxloss.losses.checked import checked
from jaxloss.losses.classification import logit_adjusted_softmax_cross_entropy
from jaxloss.losses.classification import sigmoid_focal_loss
from jaxloss.losses.classification import smooth_labels
from jaxloss.losses.classification import softmax_cross_entropy_with_integer_labels
from jaxloss.losses.classification import softmax_focal_loss
from jaxloss.losses.classification import softmax_focal_loss_with_integer_labels
from jaxloss.losses.contrastive import ntxent_loss
from jaxloss.losses.crf import crf_sequence_loss
from jaxloss.losses.contrastive import supervised_contrastive_loss
from jaxloss.losses.long_tail import balanced_softmax_cross_entropy
from jaxloss.losses.long_tail import ldam_loss
from jaxloss.losses.long_tail import ldam_margins
from jaxloss.losses.long_tail import logit_adjust
from jaxloss.losses.masking import large_negative
from jaxloss.losses.masking import mask_invalid_logits
from jaxloss.losses.multitask import weighted_sum
from jaxloss.losses.ranking import listwise_softmax_loss
from jaxloss.losses.ranking import pairwise_logistic_loss
from jaxloss.losses.reduce import masked_mean
from jaxloss.losses.reduce import weighted_mean
from jaxloss.losses.sequence import sequence_tagging_loss
from jaxloss.losses.weights import class_priors_from_counts
from jaxloss.losses.weights import class_weights_from_counts

__all__ = (
    "balanced_softmax_cross_entropy",
    "checked",
    "class_priors_from_counts",
    "class_weights_from_counts",
    "crf_sequence_loss",
    "large_negative",
    "ldam_loss",
    "ldam_margins",
    "listwise_softmax_loss",
    "logit_adjust",
    "logit_adjusted_softmax_cross_entropy",
    "mask_invalid_logits",
    "masked_mean",
    "ntxent_loss",
    "pairwise_logistic_loss",
    "sequence_tagging_loss",
    "sigmoid_focal_loss",
    "smooth_labels",
    "softmax_cross_entropy_with_integer_labels",
    "softmax_focal_loss",
    "softmax_focal_loss_with_integer_labels",
    "supervised_contrastive_loss",
    "weighted_mean",
    "weighted_sum",
)
