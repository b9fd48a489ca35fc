"""The concept-bottleneck task: modes, loss, conformance, end to end."""

import inspect

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import cbm_synthetic
from flatsparse import cbm
from flatsparse import data
from flatsparse import flatness
from flatsparse import models
from flatsparse import sparsity
from flatsparse.data import concepts as concept_data
from flatsparse.train import builders
from flatsparse.train import loop
from flatsparse.train import state as state_lib
from flatsparse.train import step as step_lib
from flatsparse.train import tasks

K, CLASSES = 4, 3


def _batch(n=8, seed=0):
  rng = np.random.default_rng(seed)
  labels = concept_data.pack_concept_labels(rng.integers(0, CLASSES, n),
                                            rng.integers(0, 2, (n, K)))
  return {"image": rng.normal(size=(n, 5)).astype(np.float32),
          "label": labels}


def _model(mode="joint", bottleneck="soft", **kwargs):
  return cbm.ConceptBottleneck(models.MLP((8,), K), CLASSES, mode=mode,
                               bottleneck=bottleneck, **kwargs)


def _grads(mode, bottleneck):
  model, task = _model(mode, bottleneck), tasks.get_task("concept_bottleneck")
  batch = {k: jnp.asarray(v) for k, v in _batch().items()}
  params = model.init(jax.random.key(0), batch["image"])["params"]

  def loss(p, only_task):
    out = task.forward(model, {"params": p}, batch, train=True,
                       rng=jax.random.key(1))
    if only_task:
      return tasks.cross_entropy(out["logits"], batch["label"][:, 0])
    return task.loss(out, batch)

  grad = jax.jit(jax.grad(loss), static_argnums=1)
  return params, grad(params, True), grad(params, False), model, task, batch


@pytest.mark.parametrize("mode,bottleneck,reaches_g", [
    ("independent", "sigmoid", False), ("sequential", "hard", False),
    ("sequential", "soft", False), ("joint", "soft", True),
    ("joint", "sigmoid", True)])
def test_which_losses_reach_g(mode, bottleneck, reaches_g):
  params, task_grads, _, _, _, _ = _grads(mode, bottleneck)
  g_norm = optax.tree.norm(task_grads["concept_model"])
  assert (float(g_norm) > 0) == reaches_g
  assert float(optax.tree.norm(task_grads["task_head"])) > 0


def test_loss_is_ce_plus_weighted_bce_by_hand():
  for mode, bottleneck, weight in (("joint", "soft", 0.01),
                                   ("sequential", "sigmoid", 1.0 / K),
                                   ("joint", "soft", 0.5)):
    model = _model(mode, bottleneck,
                   concept_weight=None if weight != 0.5 else 0.5)
    task = tasks.get_task("concept_bottleneck")
    batch = {k: jnp.asarray(v) for k, v in _batch().items()}
    variables = model.init(jax.random.key(0), batch["image"])
    out = task.forward(model, variables, batch, train=True,
                       rng=jax.random.key(1))
    y, c = np.asarray(batch["label"][:, 0]), np.asarray(batch["label"][:, 1:])
    logits = np.asarray(out["logits"], np.float64)
    log_q = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    ce = -log_q[np.arange(8), y].mean()
    p = 1 / (1 + np.exp(-np.asarray(out["concept_logits"], np.float64)))
    bce = -(c * np.log(p) + (1 - c) * np.log(1 - p)).mean(0).sum()
    assert float(task.loss(out, batch)) == pytest.approx(
        ce + weight * bce, rel=1e-5)


def test_independent_f_reads_the_true_concepts_in_training_only():
  model = _model("independent", "hard")
  batch = _batch()
  x = jnp.asarray(batch["image"])
  concepts = jnp.asarray(batch["label"][:, 1:])
  variables = model.init(jax.random.key(0), x)
  train = model.apply(variables, x, train=True, concepts=concepts)
  f_true = model.apply(variables, concepts.astype(jnp.float32),
                       method=cbm.ConceptBottleneck.predict_from_concepts)
  np.testing.assert_allclose(train["logits"], f_true, rtol=1e-6)
  evaluated = model.apply(variables, x, train=False)
  hard = (evaluated["concept_logits"] > 0).astype(jnp.float32)
  np.testing.assert_allclose(evaluated["logits"], model.apply(
      variables, hard, method=cbm.ConceptBottleneck.predict_from_concepts),
                             rtol=1e-6)


def test_eval_sums_are_exact_over_padding():
  task = tasks.get_task("concept_bottleneck")
  model = _model()
  batch = _batch(n=5)
  ds = data.Dataset(batch["image"], batch["label"], CLASSES)
  variables = model.init(jax.random.key(0), jnp.asarray(batch["image"]))
  eval_step = jax.jit(lambda b: task.eval_sums(
      task.forward(model, variables, b, train=False, rng=jax.random.key(0)),
      b, b["mask"]))
  sums = {}
  for b in data.Loader(ds, ds, batch_size=2).eval_batches(batch_size=3):
    for k, v in eval_step(b).items():
      sums[k] = sums.get(k, 0.0) + float(v)
  metrics = task.eval_metrics(sums)
  concept_logits, logits = cbm.predict_concepts(model, variables,
                                                batch["image"])
  assert metrics["accuracy"] == pytest.approx(
      np.mean(logits.argmax(1) == batch["label"][:, 0]))
  assert metrics["concept_accuracy"] == pytest.approx(np.mean(
      (concept_logits > 0) == batch["label"][:, 1:]))


def test_bad_input_names_the_value():
  with pytest.raises(ValueError, match="Unknown CBM mode 'both'"):
    cbm.check_mode("both", "soft")
  with pytest.raises(ValueError, match="must be one of .*got 'soft'"):
    cbm.check_mode("independent", "soft")
  with pytest.raises(ValueError, match="'hard' cuts"):
    cbm.check_mode("joint", "hard")
  task = tasks.get_task("concept_bottleneck")
  model = cbm.ConceptBottleneck(models.MLP((), K + 1), CLASSES)
  batch = {k: jnp.asarray(v) for k, v in _batch().items()}
  variables = model.init(jax.random.key(0), batch["image"])
  with pytest.raises(ValueError, match="data have 4 concepts but the model "
                     "predicts 5"):
    task.forward(model, variables, batch, train=False, rng=jax.random.key(0))


def test_train_step_conformance_sam_and_pruning():
  """One compilation for two steps; SAM inside a pruning wrapper; f32 and
  bf16 computation."""
  task = tasks.get_task("concept_bottleneck")
  for dtype in (jnp.float32, jnp.bfloat16):
    model = cbm.ConceptBottleneck(models.MLP((8,), K, dtype=dtype), CLASSES,
                                  dtype=dtype)
    inner = optax.chain(flatness.sam(0.1), optax.sgd(0.1))
    tx = sparsity.create_updater_from_config(
        ml_collections.ConfigDict(dict(algorithm="magnitude", sparsity=0.5,
                                       schedule="one_shot",
                                       update_start_step=0))).wrap(inner)
    state = state_lib.create_train_state(
        model, tx, jnp.asarray(_batch()["image"]), seed=0)
    step = jax.jit(step_lib.make_train_step(model, tx, task=task))
    for i in range(2):
      state, metrics = step(state, {k: jnp.asarray(v)
                                    for k, v in _batch(seed=i).items()})
    assert step._cache_size() == 1
    assert np.isfinite(float(metrics["loss"]))
    kernel = state.params["concept_model"]["dense_0"]["kernel"]
    assert kernel.dtype == jnp.float32
    assert float(jnp.mean(kernel == 0)) == pytest.approx(0.5)


def test_builder_and_config_errors():
  model = builders.build_model(ml_collections.ConfigDict(dict(
      name="concept_bottleneck", num_concepts=7,
      backbone=dict(name="mlp", hidden=(4,)))), 3)
  assert isinstance(model, cbm.ConceptBottleneck)
  assert model.concept_model.num_classes == 7
  with pytest.raises(ValueError, match="Unknown bottleneck 'fuzzy'"):
    builders.build_model(dict(name="concept_bottleneck", num_concepts=7,
                              bottleneck="fuzzy",
                              backbone=dict(name="mlp", hidden=())), 3)


def test_sequential_cbm_halves_its_error_after_20_ucp_corrections(tmp_path):
  config = cbm_synthetic.get_config("tiny")
  _, state = loop.train_and_evaluate(config, str(tmp_path),
                                     return_state=True)
  model = builders.build_model(config.model, config.dataset.num_classes)
  options = inspect.signature(concept_data.load_concept_synthetic).parameters
  test = data.load_dataset("cbm_synthetic", "test", **{
      k: v for k, v in config.dataset.to_dict().items()
      if k in options and k not in ("split", "data_dir")})
  classes, concepts = concept_data.split_concept_labels(test.labels)
  logits, _ = cbm.predict_concepts(model, {"params": state.params},
                                   test.images)
  curves = cbm.intervention_curves(model, state.params, logits, concepts,
                                   classes, criteria=("rand", "ucp"),
                                   max_steps=20)
  assert curves["ucp"][0] > 0.2  # a model that makes errors to correct
  assert curves["ucp"][20] <= curves["ucp"][0] / 2
  assert curves["ucp"][10] < curves["rand"][10]
