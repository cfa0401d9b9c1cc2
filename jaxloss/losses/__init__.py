"""Per-example losses for imbalanced and multi-task training, and their helpers.

Every loss returns one value per example and never reduces; reduce with
:func:`weighted_mean` / :func:`masked_mean`. Masks are ``where=`` (True =
include) everywhere.
"""

from jaxloss.losses.classification import logit_adjusted_softmax_cross_entropy
from jaxloss.losses.classification import smooth_labels
from jaxloss.losses.classification import softmax_cross_entropy_with_integer_labels
from jaxloss.losses.classification import softmax_focal_loss
from jaxloss.losses.classification import softmax_focal_loss_with_integer_labels
from jaxloss.losses.reduce import masked_mean
from jaxloss.losses.reduce import weighted_mean
from jaxloss.losses.weights import class_priors_from_counts
from jaxloss.losses.weights import class_weights_from_counts

__all__ = (
    "class_priors_from_counts",
    "class_weights_from_counts",
    "logit_adjusted_softmax_cross_entropy",
    "masked_mean",
    "smooth_labels",
    "softmax_cross_entropy_with_integer_labels",
    "softmax_focal_loss",
    "softmax_focal_loss_with_integer_labels",
    "weighted_mean",
)
