"""Datasets: TFDS builders, long-tailed splits and loaders.

Every builder writes ``array_record`` files read back through ``tfds`` data
sources, so no TensorFlow is needed.
"""

from jaxloss.data.long_tail import long_tailed_counts
from jaxloss.data.long_tail import make_long_tailed_split
from jaxloss.data.long_tail import min_class_count
from jaxloss.data.long_tail import validate_labels

# The digits builder needs tensorflow-datasets; load it on first use so that
# `import jaxloss` (losses, curricula, steps) stays light.
_DIGITS_NAMES = frozenset((
    "DEFAULT_IMBALANCE_RATIO", "DEFAULT_SEED", "DEFAULT_TEST_PER_CLASS",
    "DIGITS_NUM_CLASSES", "DigitsLT", "DigitsLTConfig", "load_digits_lt"))


_VISFD_NAMES = frozenset(("UitVisfd", "load_uit_visfd"))

_NLU_NAMES = frozenset(("JointNlu", "load_joint_nlu"))

_INTERACTIONS_NAMES = frozenset(("Interactions", "load_interactions", "pad_left"))

_CIFAR_NAMES = frozenset(("Cifar10LT", "load_cifar10_lt"))

_VSFC_NAMES = frozenset(("UitVsfc", "load_uit_vsfc"))


def __getattr__(name):
  if name in _DIGITS_NAMES:
    from jaxloss.data import digits_lt
    return getattr(digits_lt, name)
  if name in _VISFD_NAMES:
    from jaxloss.data import uit_visfd
    return getattr(uit_visfd, name)
  if name in _NLU_NAMES:
    from jaxloss.data import joint_nlu
    return getattr(joint_nlu, name)
  if name in _INTERACTIONS_NAMES:
    from jaxloss.data import interactions
    return getattr(interactions, name)
  if name in _CIFAR_NAMES:
    from jaxloss.data import cifar10_lt
    return getattr(cifar10_lt, name)
  if name in _VSFC_NAMES:
    from jaxloss.data import uit_vsfc
    return getattr(uit_vsfc, name)
  raise AttributeError(f"module 'jaxloss.data' has no attribute {name!r}")


__all__ = [
    "DEFAULT_IMBALANCE_RATIO",
    "DEFAULT_SEED",
    "DEFAULT_TEST_PER_CLASS",
    "DIGITS_NUM_CLASSES",
    "DigitsLT",
    "DigitsLTConfig",
    "Cifar10LT",
    "Interactions",
    "JointNlu",
    "UitVisfd",
    "UitVsfc",
    "load_cifar10_lt",
    "load_digits_lt",
    "load_interactions",
    "load_joint_nlu",
    "load_uit_visfd",
    "load_uit_vsfc",
    "long_tailed_counts",
    "make_long_tailed_split",
    "min_class_count",
    "pad_left",
    "validate_labels",
]
