"""A ``Loader`` from the trainer's ``config.dataset`` section."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from flatsparse.data.pipeline import Loader
from flatsparse.data.registry import load_dataset

__all__ = ["make_loader", "NOISE_KEYS"]

# Label and concept noise apply to the train split only.
NOISE_KEYS = ("label_noise", "noise_kind", "noise_seed", "noise_pairs",
              "concept_noise", "concept_noise_seed")


def make_loader(dataset: Mapping[str, Any], batch_size: int
                ) -> tuple[Loader, np.ndarray]:
  """Loader and a sample input (the first train example) from a config.

  Keys: ``name`` (see ``load_dataset``), ``train_split`` ("train"),
  ``eval_split`` ("test"), ``augment``, ``normalize``, label-noise keys
  (train split only) and dataset-specific options.
  """
  cfg = dict(dataset.to_dict() if hasattr(dataset, "to_dict") else dataset)
  if "name" not in cfg:
    raise ValueError("config.dataset needs 'name' (e.g. 'digits', 'cifar10').")
  name = cfg.pop("name")
  train_split = cfg.pop("train_split", "train")
  eval_split = cfg.pop("eval_split", "test")
  augment = cfg.pop("augment", False)
  normalize = cfg.pop("normalize", False)
  train = load_dataset(name, train_split, **cfg)
  clean = {k: v for k, v in cfg.items() if k not in NOISE_KEYS}
  test = load_dataset(name, eval_split, **clean)
  loader = Loader(train, test, batch_size=batch_size, augment=augment,
                  normalize=normalize)
  return loader, train.images[:1]
