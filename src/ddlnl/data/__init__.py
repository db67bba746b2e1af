"""Data loading: CIFAR-10/100, CIFAR-N human labels, Tiny-ImageNet, ImageFolder trees.

Every loader returns :class:`DatasetSplits` of uint8 RGB HWC images and int64 labels in
the dataset's official order, and raises :class:`ddlnl.errors.DataError` with a fix for
missing or corrupt files.
"""

from ddlnl.data.check import check_data, describe_data_root, format_table
from ddlnl.data.cifar import (
    CIFAR10_CLASSES,
    CIFAR100_COARSE_CLASSES,
    CIFAR100_FINE_CLASSES,
    CIFAR100_SUPERCLASS_OF_FINE,
    load_cifar,
)
from ddlnl.data.cifarn import HUMAN_LABEL_SETS, find_human_label_file, load_human_labels, read_human_label_file
from ddlnl.data.imagefolder import load_image_folder
from ddlnl.data.longtail import longtail_counts, longtail_indices
from ddlnl.data.registry import clear_cache, list_datasets, load_dataset, resolve_data_root
from ddlnl.data.safe_pickle import load_pickle_restricted
from ddlnl.data.tiny import load_tiny_imagenet
from ddlnl.data.types import DatasetSplits, LabeledImages

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR100_COARSE_CLASSES",
    "CIFAR100_FINE_CLASSES",
    "CIFAR100_SUPERCLASS_OF_FINE",
    "HUMAN_LABEL_SETS",
    "DatasetSplits",
    "LabeledImages",
    "check_data",
    "clear_cache",
    "describe_data_root",
    "find_human_label_file",
    "format_table",
    "list_datasets",
    "load_cifar",
    "load_dataset",
    "load_human_labels",
    "load_image_folder",
    "load_pickle_restricted",
    "load_tiny_imagenet",
    "longtail_counts",
    "longtail_indices",
    "read_human_label_file",
    "resolve_data_root",
]
