"""jaxloss: losses, curricula, data-parallel train steps and training-health monitors
for imbalanced and multi-task training in JAX/Flax.

Re-exports only: the public surface.
"""

from jaxloss.losses import (
    class_priors_from_counts,
    class_weights_from_counts,
    logit_adjusted_softmax_cross_entropy,
    masked_mean,
    smooth_labels,
    softmax_cross_entropy_with_integer_labels,
    softmax_focal_loss,
    softmax_focal_loss_with_integer_labels,
    weighted_mean,
)
from jaxloss.curriculum import (
    CompiledCurriculum,
    Curriculum,
    CurriculumState,
    Stage,
    constant,
    four_stage,
    milestone_lr,
)
from jaxloss.train_state import TrainState
from jaxloss.train_step import (
    make_eval_step,
    make_imbalance_loss,
    make_optimizer,
    make_train_step,
)
from jaxloss.parallel import DataParallel, make_mesh
from jaxloss.checkpoint import Checkpointer
from jaxloss.metrics import classification_report, per_class_recall, uar, war

__version__ = "0.1.0"

__all__ = [
    "CompiledCurriculum", "Curriculum", "CurriculumState", "Checkpointer",
    "DataParallel", "Stage", "TrainState", "class_priors_from_counts",
    "class_weights_from_counts", "classification_report", "constant", "four_stage",
    "logit_adjusted_softmax_cross_entropy", "make_eval_step", "make_imbalance_loss",
    "make_mesh", "make_optimizer", "make_train_step", "masked_mean", "milestone_lr",
    "per_class_recall",
    "smooth_labels", "softmax_cross_entropy_with_integer_labels", "softmax_focal_loss",
    "softmax_focal_loss_with_integer_labels", "uar", "war", "weighted_mean",
]
