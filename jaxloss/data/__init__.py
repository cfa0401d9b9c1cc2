"""Datasets: TFDS builders, long-tailed splits and loaders.

Every builder writes ``array_record`` files read back through ``tfds`` data
sources, so no TensorFlow is needed.
"""

from jaxloss.data.digits_lt import DEFAULT_IMBALANCE_RATIO
from jaxloss.data.digits_lt import DEFAULT_SEED
from jaxloss.data.digits_lt import DEFAULT_TEST_PER_CLASS
from jaxloss.data.digits_lt import DIGITS_NUM_CLASSES
from jaxloss.data.digits_lt import DigitsLT
from jaxloss.data.digits_lt import DigitsLTConfig
from jaxloss.data.digits_lt import load_digits_lt
from jaxloss.data.long_tail import long_tailed_counts
from jaxloss.data.long_tail import make_long_tailed_split
from jaxloss.data.long_tail import min_class_count
from jaxloss.data.long_tail import validate_labels

__all__ = [
    "DEFAULT_IMBALANCE_RATIO",
    "DEFAULT_SEED",
    "DEFAULT_TEST_PER_CLASS",
    "DIGITS_NUM_CLASSES",
    "DigitsLT",
    "DigitsLTConfig",
    "load_digits_lt",
    "long_tailed_counts",
    "make_long_tailed_split",
    "min_class_count",
    "validate_labels",
]
