"""Splitting a dataset among federated clients: IID, Dirichlet, shards.

Each function takes the labels and a seed and returns one int64 index array
per client (disjoint, together every example once), so the same seed gives
the same partition on every machine.

* :func:`iid`: a random permutation cut into near-equal parts.
* :func:`dirichlet`: label skew. For each class ``c``, draw
  ``q_c ~ Dir(alpha * 1_K)`` and give client ``k`` a ``q_c[k]`` share of
  class ``c``'s examples (Hsu et al.). Small ``alpha`` gives each client a
  few classes; large ``alpha`` tends to IID. A draw that leaves a client
  with fewer than ``min_size`` examples is redrawn (as the common
  implementations do), up to ``max_tries`` times.
* :func:`shards`: McMahan et al.'s pathological non-IID split: sort by
  label, cut into ``num_clients * shards_per_client`` shards, deal each
  client ``shards_per_client`` of them at random.

References:
  McMahan et al., "Communication-efficient learning of deep networks from
  decentralized data", AISTATS 2017; Hsu et al., "Measuring the effects of
  non-identical data distribution for federated visual classification",
  arXiv:1909.06335, 2019.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from flatsparse import validation

__all__ = ["iid", "dirichlet", "shards", "make_partition", "PARTITIONS",
           "label_counts"]

PARTITIONS = ("iid", "dirichlet", "shards")


def _check(labels: np.ndarray, num_clients: int) -> np.ndarray:
  labels = np.asarray(labels)
  if labels.ndim != 1:
    raise ValueError(f"labels must be 1-D, got shape {labels.shape}.")
  validation.check_count("num_clients", num_clients)
  if num_clients > labels.shape[0]:
    raise ValueError(f"num_clients={num_clients} is more than the "
                     f"{labels.shape[0]} examples; every client needs one.")
  return labels


def iid(labels: np.ndarray, num_clients: int, seed: int) -> list[np.ndarray]:
  """A seeded permutation cut into ``num_clients`` near-equal parts."""
  labels = _check(labels, num_clients)
  order = np.random.default_rng(seed).permutation(labels.shape[0])
  return [np.sort(part) for part in np.array_split(order, num_clients)]


def dirichlet(labels: np.ndarray, num_clients: int, seed: int, *,
              alpha: float, min_size: int = 1, max_tries: int = 1000
              ) -> list[np.ndarray]:
  """Label skew from ``Dir(alpha)`` per class (module docstring).

  Args:
    labels: int ``(N,)``.
    num_clients: ``K``.
    seed: the partition's seed.
    alpha: the concentration, > 0.
    min_size: the fewest examples a client may get.
    max_tries: draws before giving up.

  Returns:
    ``K`` sorted index arrays.

  Raises:
    ValueError: bad arguments, or no draw in ``max_tries`` gives every
      client ``min_size`` examples.
  """
  labels = _check(labels, num_clients)
  validation.check("alpha", alpha, lambda v: v > 0, "> 0")
  validation.check_count("min_size", min_size, minimum=0)
  if min_size * num_clients > labels.shape[0]:
    raise ValueError(f"min_size={min_size} for {num_clients} clients needs "
                     f"{min_size * num_clients} examples; there are "
                     f"{labels.shape[0]}.")
  rng = np.random.default_rng(seed)
  by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
  for _ in range(max_tries):
    parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for members in by_class:
      members = rng.permutation(members)
      shares = rng.dirichlet(np.full(num_clients, float(alpha)))
      cuts = (np.cumsum(shares)[:-1] * members.shape[0]).astype(int)
      for k, chunk in enumerate(np.split(members, cuts)):
        parts[k].append(chunk)
    result = [np.sort(np.concatenate(p)) for p in parts]
    if min(r.shape[0] for r in result) >= min_size:
      return result
  raise ValueError(
      f"dirichlet(alpha={alpha}) gave some of the {num_clients} clients "
      f"fewer than min_size={min_size} examples in {max_tries} draws; lower "
      "min_size or num_clients, or raise alpha.")


def shards(labels: np.ndarray, num_clients: int, seed: int, *,
           shards_per_client: int = 2) -> list[np.ndarray]:
  """Sorted-label shards dealt at random (module docstring)."""
  labels = _check(labels, num_clients)
  validation.check_count("shards_per_client", shards_per_client)
  total = num_clients * shards_per_client
  if total > labels.shape[0]:
    raise ValueError(f"{num_clients} clients x shards_per_client="
                     f"{shards_per_client} = {total} shards is more than the "
                     f"{labels.shape[0]} examples.")
  rng = np.random.default_rng(seed)
  shuffled = rng.permutation(labels.shape[0])
  by_label = shuffled[np.argsort(labels[shuffled], kind="stable")]
  pieces = np.array_split(by_label, total)
  dealt = rng.permutation(total).reshape(num_clients, shards_per_client)
  return [np.sort(np.concatenate([pieces[i] for i in row])) for row in dealt]


def make_partition(kind: str, labels: np.ndarray, num_clients: int,
                   seed: int, **kwargs: Any) -> list[np.ndarray]:
  """``iid`` / ``dirichlet`` (``alpha=``) / ``shards`` by name."""
  validation.check_choice("partition", kind, PARTITIONS)
  return {"iid": iid, "dirichlet": dirichlet, "shards": shards}[kind](
      labels, num_clients, seed, **kwargs)


def label_counts(labels: np.ndarray, parts: list[np.ndarray],
                 num_classes: int) -> np.ndarray:
  """``(K, C)``: how many examples of each class each client holds."""
  return np.stack([np.bincount(labels[p], minlength=num_classes)
                   for p in parts])
