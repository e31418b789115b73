"""Long-tailed datasets for lort's two-stage training.

:func:`build_dataset` loads one of :data:`DATASETS`, cuts its training set to the exponential
long-tail profile of :func:`long_tail_counts`, optionally carves a stratified validation set
and returns an :class:`LTData` whose ``dataset(split, augment)`` yields normalised tensors.

Importing this package needs only NumPy: torch, torchvision, scikit-learn and Pillow are
imported when a dataset is built or its images are read.
"""

from lort.data.build import DATASETS, build_dataset
from lort.data.ltdata import LTData
from lort.data.profile import keep_long_tail, long_tail_counts
from lort.data.split import stratified_val_split

__all__ = [
    "DATASETS",
    "LTData",
    "build_dataset",
    "keep_long_tail",
    "long_tail_counts",
    "stratified_val_split",
]
