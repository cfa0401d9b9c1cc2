"""jaxloss: losses, curricula, data-parallel train steps and training-health monitors
for imbalanced and multi-task training in JAX/Flax.

Re-exports only: the public surface.
"""

# The whole loss library, so `from jaxloss import softmax_focal_loss` works.
from jaxloss.losses import (
    balanced_softmax_cross_entropy,
    checked,
    class_priors_from_counts,
    class_weights_from_counts,
    crf_sequence_loss,
    large_negative,
    ldam_loss,
    ldam_margins,
    listwise_softmax_loss,
    logit_adjust,
    logit_adjusted_softmax_cross_entropy,
    mask_invalid_logits,
    masked_mean,
    ntxent_loss,
    pairwise_logistic_loss,
    sequence_tagging_loss,
    sigmoid_focal_loss,
    smooth_labels,
    softmax_cross_entropy_with_integer_labels,
    softmax_focal_loss,
    softmax_focal_loss_with_integer_labels,
    supervised_contrastive_loss,
    weighted_mean,
    weighted_sum,
)
from jaxloss.curriculum import (
    CompiledCurriculum,
    Curriculum,
    CurriculumState,
    Stage,
    constant,
    deferred_reweighting,
    four_stage,
    milestone_lr,
    warmup_milestone_lr,
)
from jaxloss.train_state import TrainState
from jaxloss import monitors
from jaxloss.monitors import Finding, HeadSpec, Monitor, MonitorSpec, diagnose
from jaxloss.train_step import (
    class_mix_indices,
    make_eval_step,
    make_optimizer,
    make_train_step,
)
from jaxloss.parallel import DataParallel, make_mesh
from jaxloss.checkpoint import Checkpointer
from jaxloss import distributed
from jaxloss.metrics import classification_report, per_class_recall, uar, war
from jaxloss import decoding

__version__ = "0.1.0"

__all__ = [
    "CompiledCurriculum", "Curriculum", "CurriculumState", "Checkpointer",
    "DataParallel", "Finding", "HeadSpec", "Monitor", "MonitorSpec", "Stage",
    "TrainState", "classification_report", "class_mix_indices", "constant", "decoding",
    "deferred_reweighting", "distributed",
    "diagnose", "monitors",
    "four_stage", "make_eval_step", "make_mesh",
    "make_optimizer", "make_train_step", "milestone_lr", "per_class_recall", "uar",
    "war", "warmup_milestone_lr",
    # losses (the same names as jaxloss.losses.__all__)
    "balanced_softmax_cross_entropy", "checked", "class_priors_from_counts",
    "class_weights_from_counts", "crf_sequence_loss", "large_negative", "ldam_loss",
    "ldam_margins",
    "listwise_softmax_loss", "logit_adjust", "logit_adjusted_softmax_cross_entropy",
    "mask_invalid_logits", "masked_mean", "ntxent_loss", "pairwise_logistic_loss",
    "sequence_tagging_loss", "sigmoid_focal_loss", "smooth_labels",
    "softmax_cross_entropy_with_integer_labels", "softmax_focal_loss",
    "softmax_focal_loss_with_integer_labels", "supervised_contrastive_loss",
    "weighted_mean", "weighted_sum",
]
