"""Per-concept accuracy, susceptibility and the recovered share by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flatsparse import cbm
from flatsparse import models
from flatsparse.cbm import analysis


def test_per_concept_accuracy_and_susceptibility_by_hand():
  logits = np.array([[1.0, -1.0, 2.0], [-1.0, -2.0, 0.5]])
  concepts = np.array([[1, 0, 0], [1, 0, 1]])
  np.testing.assert_allclose(cbm.per_concept_accuracy(logits, concepts),
                             [0.5, 1.0, 0.5])
  result = cbm.susceptibility([0.9, 0.8, 0.95, 0.7], [0.8, 0.79, 0.9, 0.5])
  np.testing.assert_allclose(result.drop, [0.1, 0.01, 0.05, 0.2])
  assert result.mean_drop == pytest.approx(0.09)
  np.testing.assert_array_equal(result.flagged, [True, False, False, True])
  with pytest.raises(ValueError, match=r"two \(k,\) accuracy vectors"):
    cbm.susceptibility([0.9, 0.8], [0.8])


def test_explained_fraction_of_every_concept_is_f_on_the_truth():
  k, classes, n = 6, 3, 50
  model = cbm.ConceptBottleneck(models.MLP((), k), classes,
                                bottleneck="sigmoid", mode="sequential")
  rng = np.random.default_rng(0)
  x = rng.normal(size=(n, 4)).astype(np.float32)
  params = model.init(jax.random.key(0), jnp.asarray(x))["params"]
  concepts = rng.integers(0, 2, (n, k))
  labels = rng.integers(0, classes, n)
  logits, class_logits = cbm.predict_concepts(model, {"params": params}, x)
  truth = model.apply({"params": params}, jnp.asarray(concepts, jnp.float32),
                      method=cbm.ConceptBottleneck.predict_from_concepts)
  on_truth = float(np.mean(np.argmax(truth, -1) == labels))
  noisy = float(np.mean(class_logits.argmax(1) == labels))
  out = analysis.explained_fraction(
      model, params, logits, concepts, labels, np.ones(k, bool),
      clean_accuracy=noisy + 0.1)
  assert out["noisy_accuracy"] == pytest.approx(noisy)
  assert out["corrected_accuracy"] == pytest.approx(on_truth)
  # Every concept flagged: a random set of k concepts is the same set.
  assert out["random_corrected_accuracy"] == pytest.approx(on_truth)
  assert out["explained"] == pytest.approx((on_truth - noisy) / 0.1,
                                          abs=1e-5)
