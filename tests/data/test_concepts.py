"""Concept datasets: the label layout, exact concept noise, the generator."""

import numpy as np
import pytest

from flatsparse import data
from flatsparse.data import concepts


def test_pack_and_split_round_trip_and_errors():
  labels = concepts.pack_concept_labels(np.array([2, 0]),
                                        np.array([[1, 0, 1], [0, 0, 1]]))
  assert labels.dtype == np.int32 and labels.shape == (2, 4)
  classes, c = concepts.split_concept_labels(labels)
  np.testing.assert_array_equal(classes, [2, 0])
  np.testing.assert_array_equal(c, [[1, 0, 1], [0, 0, 1]])
  with pytest.raises(ValueError, match="0/1"):
    concepts.pack_concept_labels(np.array([0]), np.array([[2]]))
  with pytest.raises(ValueError, match=r"\(N, 1 \+ k\).*got shape \(3,\)"):
    concepts.split_concept_labels(np.zeros(3))


@pytest.mark.parametrize("rate", [0.1, 0.25, 0.4])
def test_concept_noise_flips_an_exact_fraction(rate):
  clean = np.random.default_rng(0).integers(0, 2, (37, 11))
  noisy, flipped = concepts.flip_concepts(clean, rate, seed=3)
  assert flipped.sum() == round(rate * clean.size)
  np.testing.assert_array_equal(noisy != clean, flipped)
  again, _ = concepts.flip_concepts(clean, rate, seed=3)
  np.testing.assert_array_equal(noisy, again)
  with pytest.raises(ValueError, match=r"rate must be in \[0, 1\), got 1.0"):
    concepts.flip_concepts(clean, 1.0)


def test_noise_through_load_dataset_touches_train_concepts_only():
  options = dict(num_concepts=10, num_classes=4, num_class_groups=2,
                 input_dim=6, samples_per_class=20)
  clean = data.load_dataset("cbm_synthetic", "train", **options)
  noisy = data.load_dataset("cbm_synthetic", "train", concept_noise=0.2,
                            label_noise=0.1, **options)
  np.testing.assert_array_equal(clean.images, noisy.images)
  c_clean = concepts.split_concept_labels(clean.labels)
  c_noisy = concepts.split_concept_labels(noisy.labels)
  assert (c_noisy[1] != c_clean[1]).sum() == round(0.2 * c_clean[1].size)
  assert (c_noisy[0] != c_clean[0]).sum() == round(0.1 * len(c_clean[0]))
  loader, _ = data.make_loader(dict(name="cbm_synthetic", concept_noise=0.3,
                                    **options), batch_size=8)
  test = data.load_dataset("cbm_synthetic", "test", **options)
  batch = next(loader.eval_batches(batch_size=len(test.labels)))
  np.testing.assert_array_equal(batch["label"], test.labels)  # test clean
  with pytest.raises(ValueError, match=r"\(N, 1 \+ k\)"):
    data.load_dataset("digits", "train", concept_noise=0.1)


def test_generator_follows_the_causal_graph():
  k, classes, groups = 30, 20, 10
  table = concepts.synthetic_class_concepts(k, classes, groups, seed=1)
  # The two classes of a group differ from the group's vector in one
  # concept each, so from each other in exactly two.
  for g in range(groups):
    assert np.sum(table[2 * g] != table[2 * g + 1]) == 2
  assert 0.05 < table.mean() < 0.4  # P(beta >= alpha), alpha ~ N(0.8, 0.1)
  splits = {s: data.load_dataset("cbm_synthetic", s, num_concepts=k,
                                 num_classes=classes, num_class_groups=groups,
                                 input_dim=8, samples_per_class=20, seed=1,
                                 z_std=0.0)
            for s in concepts.SYNTHETIC_SPLITS}
  assert [len(d.labels) for d in splits.values()] == [280, 60, 60]
  y, c = concepts.split_concept_labels(splits["train"].labels)
  np.testing.assert_array_equal(c, table[y])
  # Without noise x = W c: the same concepts give the same input.
  x = splits["train"].images
  same = np.flatnonzero(y == y[0])
  np.testing.assert_allclose(x[same], np.broadcast_to(x[0], x[same].shape),
                             atol=1e-6)
  assert np.bincount(splits["test"].labels[:, 0]).tolist() == [3] * classes


def test_hidden_concepts_and_flips_and_groups():
  full = data.load_dataset("cbm_synthetic", "train", num_concepts=20,
                           num_classes=4, num_class_groups=2,
                           samples_per_class=10)
  hidden = data.load_dataset("cbm_synthetic", "train", num_concepts=20,
                             num_classes=4, num_class_groups=2,
                             samples_per_class=10, hidden_fraction=0.25)
  assert concepts.num_concepts(hidden) == 15
  np.testing.assert_array_equal(full.images, hidden.images)
  flipped = data.load_dataset("cbm_synthetic", "train", num_concepts=20,
                              num_classes=4, num_class_groups=2,
                              samples_per_class=10, flip_probability=0.3)
  assert 0.15 < np.mean(flipped.labels[:, 1:] != full.labels[:, 1:]) < 0.45
  np.testing.assert_array_equal(concepts.concept_groups(6, 2),
                                [[0, 1], [2, 3], [4, 5]])
  with pytest.raises(ValueError, match="group_size 4 does not divide"):
    concepts.concept_groups(6, 4)
  with pytest.raises(ValueError, match="Unknown split 'val'"):
    data.load_dataset("cbm_synthetic", "val")
