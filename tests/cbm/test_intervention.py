"""Intervention curves: budgets, groups, full correction, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flatsparse import cbm
from flatsparse import models


def _model(k=6, classes=3, bottleneck="sigmoid", mode="sequential"):
  return cbm.ConceptBottleneck(models.MLP((), k), classes,
                               bottleneck=bottleneck, mode=mode)


def _setup(k=6, classes=3, n=40, bottleneck="sigmoid", seed=0):
  model = _model(k, classes, bottleneck)
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, 5)).astype(np.float32)
  params = model.init(jax.random.key(seed), jnp.asarray(x))["params"]
  concepts = rng.integers(0, 2, (n, k))
  classes_ = rng.integers(0, classes, n)
  logits, _ = cbm.predict_concepts(model, {"params": params}, x,
                                   batch_size=16)
  return model, params, logits, concepts, classes_


def _f_accuracy(model, params, values, classes):
  logits = model.apply({"params": params}, jnp.asarray(values, jnp.float32),
                       method=cbm.ConceptBottleneck.predict_from_concepts)
  return float(np.mean(np.argmax(logits, -1) == classes))


@pytest.mark.parametrize("bottleneck", ["sigmoid", "hard", "soft"])
def test_correcting_every_concept_gives_f_on_the_truth(bottleneck):
  model, params, logits, concepts, classes = _setup(bottleneck=bottleneck)
  low, high = cbm.replacement_values(bottleneck, logits * 2.0)
  curves = cbm.intervention_curves(
      model, params, logits, concepts, classes, low=low, high=high,
      criteria=("rand", "ucp", "ectp"))
  truth = np.where(concepts > 0, high, low) if bottleneck == "soft" else (
      concepts)
  expected = 1.0 - _f_accuracy(model, params, truth, classes)
  values = np.asarray(cbm.bottleneck_values(jnp.asarray(logits), bottleneck))
  before = 1.0 - _f_accuracy(model, params, values, classes)
  for name, curve in curves.items():
    assert curve.shape == (7,)
    assert curve[0] == pytest.approx(before), name
    assert curve[-1] == pytest.approx(expected), name


def test_soft_percentiles_are_numpys():
  logits = np.random.default_rng(0).normal(size=(101, 4))
  low, high = cbm.replacement_values("soft", logits)
  np.testing.assert_allclose(low, np.percentile(logits, 5, axis=0))
  np.testing.assert_allclose(high, np.percentile(logits, 95, axis=0))
  assert cbm.replacement_values("hard") == (0.0, 1.0)


def test_group_budgets_count_groups():
  scores = jnp.asarray(np.random.default_rng(1).normal(size=(5, 3)))
  index, valid = cbm.group_index([[0, 1], [2, 3], [4, 5]], 6)
  ranks = cbm.intervention.group_ranks(scores, "example")
  for n in range(4):
    chosen = cbm.intervention.selected_concepts(ranks, n, index, valid, 6,
                                                "example")
    np.testing.assert_array_equal(np.sum(chosen, 1), 2 * n)
  # The first group chosen is the best-scored one.
  first = cbm.intervention.selected_concepts(ranks, 1, index, valid, 6,
                                             "example")
  best = np.argmax(scores, 1)
  for b in range(5):
    assert first[b, 2 * best[b]] and first[b, 2 * best[b] + 1]
  # A shared budget: n * B groups over the set, the best scores anywhere.
  ranks = cbm.intervention.group_ranks(scores, "batch")
  chosen = cbm.intervention.selected_concepts(ranks, 1, index, valid, 6,
                                              "batch")
  assert int(np.sum(chosen)) == 2 * 5
  top = np.sort(np.asarray(scores).ravel())[-5:]
  picked = np.asarray(scores)[np.asarray(chosen[:, ::2])]
  np.testing.assert_allclose(np.sort(picked), top)


def test_unequal_groups_and_group_curves():
  model, params, logits, concepts, classes = _setup()
  groups = [[0], [1, 2, 3], [4, 5]]
  for budget in cbm.BUDGETS:
    curve = cbm.intervention_curve(model, params, logits, concepts, classes,
                                   criterion="lcp", groups=groups,
                                   budget=budget)
    assert curve.shape == (4,)
    expected = 1.0 - _f_accuracy(model, params, concepts, classes)
    assert curve[-1] == pytest.approx(expected)


def test_lcp_oracle_beats_random_and_entropy_equals_ucp():
  model, params, logits, concepts, classes = _setup(k=12, classes=4, n=300)
  curves = cbm.intervention_curves(model, params, logits, concepts, classes,
                                   criteria=("rand", "lcp", "ucp",
                                             "entropy"))
  np.testing.assert_array_equal(curves["ucp"], curves["entropy"])
  assert curves["lcp"][1:-1].mean() < curves["rand"][1:-1].mean()


def test_bad_input_names_the_value():
  model, params, logits, concepts, classes = _setup()
  with pytest.raises(ValueError, match="max_steps 7 is above the 6 concepts"):
    cbm.intervention_curve(model, params, logits, concepts, classes,
                           criterion="ucp", max_steps=7)
  with pytest.raises(ValueError, match="above the 3 concept groups"):
    cbm.intervention_curve(model, params, logits, concepts, classes,
                           criterion="ucp", max_steps=4,
                           groups=[[0, 1], [2, 3], [4, 5]])
  with pytest.raises(ValueError, match="Unknown criterion 'best'"):
    cbm.intervention_curve(model, params, logits, concepts, classes,
                           criterion="best")
  with pytest.raises(ValueError, match="Unknown budget 'global'"):
    cbm.intervention_curve(model, params, logits, concepts, classes,
                           criterion="ucp", budget="global")
  with pytest.raises(ValueError, match=r"\(40, 6\) and \(40, 5\)"):
    cbm.intervention_curve(model, params, logits, concepts[:, :5], classes,
                           criterion="ucp")
  with pytest.raises(ValueError, match=r"concepts in \[0, 6\)"):
    cbm.group_index([[0, 6]], 6)


def test_one_compilation_per_model_and_criterion():
  model, params, logits, concepts, classes = _setup()
  cbm.intervention_curve(model, params, logits, concepts, classes,
                         criterion="eudtp")
  before = cbm.intervention.compiled_curve._cache_size()
  cbm.intervention_curve(model, params, logits * 0.5, concepts, classes,
                         criterion="eudtp")
  assert cbm.intervention.compiled_curve._cache_size() == before
