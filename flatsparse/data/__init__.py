"""Datasets and input pipelines: deterministic, seeded numpy batches.

* Datasets by name: ``load_dataset`` (built-in offline datasets, TFDS names).
* Loaders: ``load_digits``, ``load_fashion_mnist_debian``, ``load_tfds``,
  ``TfdsSource``, ``make_gaussian_mixture``, ``make_teacher_student``; the IDX
  reader ``read_idx``.
* Text: ``shakespeare`` (byte-level windows of Shakespeare's plays,
  ``load_shakespeare_bytes``; ``held_out_lines``, ``calibration_windows``).
* Pipelines: ``Loader`` (resumable training batches, padded and masked
  evaluation batches), ``shard_batch``, ``data_sharding``, and the simpler
  ``iterate_batches``.
* Transforms: ``normalize``, ``channel_stats``, ``random_crop_flip``,
  ``resize``, ``center_crop_resize``; label noise: ``add_label_noise``.

Importing this package imports neither TensorFlow nor tensorflow_datasets.
"""

from flatsparse.data import shakespeare
from flatsparse.data.batching import iterate_batches
from flatsparse.data.dataset import Dataset
from flatsparse.data.dataset import ExampleSource
from flatsparse.data.dataset import num_examples
from flatsparse.data.digits import load_digits
from flatsparse.data.fashion_mnist import DEBIAN_FASHION_MNIST_DIR
from flatsparse.data.fashion_mnist import FASHION_MNIST_CLASSES
from flatsparse.data.fashion_mnist import load_fashion_mnist_debian
from flatsparse.data.from_config import make_loader
from flatsparse.data.idx import read_idx
from flatsparse.data.idx import write_idx
from flatsparse.data.noise import add_label_noise
from flatsparse.data.noise import CIFAR10_ASYMMETRIC_PAIRS
from flatsparse.data.noise import NOISE_KINDS
from flatsparse.data.pipeline import Batch
from flatsparse.data.pipeline import data_sharding
from flatsparse.data.pipeline import Loader
from flatsparse.data.pipeline import process_rows
from flatsparse.data.pipeline import put_global
from flatsparse.data.pipeline import shard_batch
from flatsparse.data.registry import BUILTIN_DATASETS
from flatsparse.data.registry import load_dataset
from flatsparse.data.registry import register_dataset
from flatsparse.data.registry import TFDS_PREFIX
from flatsparse.data.shakespeare import calibration_windows
from flatsparse.data.shakespeare import held_out_lines
from flatsparse.data.shakespeare import load_shakespeare_bytes
from flatsparse.data.synthetic import gaussian_mixture_means
from flatsparse.data.synthetic import make_gaussian_mixture
from flatsparse.data.synthetic import make_teacher_student
from flatsparse.data.synthetic import teacher_logits
from flatsparse.data.synthetic import teacher_params
from flatsparse.data.tfds_source import load_tfds
from flatsparse.data.tfds_source import TfdsSource
from flatsparse.data.transforms import center_crop_resize
from flatsparse.data.transforms import channel_stats
from flatsparse.data.transforms import normalize
from flatsparse.data.transforms import random_crop_flip
from flatsparse.data.transforms import resize

__all__ = [
    "BUILTIN_DATASETS",
    "Batch",
    "CIFAR10_ASYMMETRIC_PAIRS",
    "DEBIAN_FASHION_MNIST_DIR",
    "Dataset",
    "ExampleSource",
    "FASHION_MNIST_CLASSES",
    "Loader",
    "NOISE_KINDS",
    "TFDS_PREFIX",
    "TfdsSource",
    "add_label_noise",
    "calibration_windows",
    "held_out_lines",
    "load_shakespeare_bytes",
    "shakespeare",
    "register_dataset",
    "center_crop_resize",
    "channel_stats",
    "data_sharding",
    "gaussian_mixture_means",
    "iterate_batches",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist_debian",
    "load_tfds",
    "make_gaussian_mixture",
    "make_teacher_student",
    "normalize",
    "num_examples",
    "random_crop_flip",
    "read_idx",
    "resize",
    "shard_batch",
    "make_loader",
    "process_rows",
    "put_global",
    "teacher_logits",
    "teacher_params",
    "write_idx",
]
