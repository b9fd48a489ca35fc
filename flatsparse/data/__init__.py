"""Offline-friendly datasets as in-memory numpy arrays, and batch iteration."""

from flatsparse.data.batching import iterate_batches
from flatsparse.data.dataset import Dataset, num_examples
from flatsparse.data.digits import load_digits
from flatsparse.data.tfds_source import load_tfds

__all__ = [
    "Dataset",
    "iterate_batches",
    "load_digits",
    "load_tfds",
    "num_examples",
]
