"""Task and Method units: registries, the default reductions, the parts."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flatsparse.train import builders
from flatsparse.train import methods
from flatsparse.train import tasks

SGD = {"name": "sgd", "learning_rate": 0.1}
SPARSITY = {"algorithm": "magnitude", "sparsity": 0.5, "schedule": "one_shot",
            "update_start_step": 2}


def test_register_task_refuses_duplicates_and_non_tasks():
  with pytest.raises(ValueError, match="'classification' is already"):
    tasks.register_task("classification", tasks.Classification())
  with pytest.raises(TypeError, match="must be a flatsparse.train.tasks.Task"):
    tasks.register_task("bad", object())
  with pytest.raises(ValueError, match="Unknown task 'regresion'; allowed: "
                     "classification"):
    tasks.get_task("regresion")
  tasks.register_task("classification", tasks.Classification(),
                      overwrite=True)


def test_classification_sums_are_exact_over_padding():
  """Hand-computed: 3 real examples (2 correct), one padded with NaN logits."""
  task = tasks.Classification()
  logits = jnp.array([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0], [jnp.nan, 0.0]])
  batch = {"label": jnp.array([0, 1, 1, 0])}
  sums = task.eval_sums(logits, batch, jnp.array([1.0, 1.0, 1.0, 0.0]))
  want_loss = (np.log1p(np.exp(-2.0)) + np.log1p(np.exp(-1.0))
               + np.log1p(np.exp(3.0)))
  assert float(sums["correct"]) == 2 and float(sums["count"]) == 3
  np.testing.assert_allclose(float(sums["loss_sum"]), want_loss, rtol=1e-6)
  metrics = task.eval_metrics({k: float(v) for k, v in sums.items()})
  assert metrics == pytest.approx({"accuracy": 2 / 3, "loss": want_loss / 3})


def test_default_eval_metrics_divide_each_sum_by_count():
  got = tasks.Task().eval_metrics({"mse_sum": 6.0, "hits": 3.0, "count": 4.0})
  assert got == {"mse": 1.5, "hits": 0.75}


def test_method_parts_fill_the_fields_the_loop_uses():
  params = {"Dense_0": {"kernel": jnp.arange(1.0, 9.0).reshape(2, 4),
                        "bias": jnp.ones(4)}}
  dense = builders.build_method(SGD, 10)
  assert dense.finalize is None and dense.mask_update_flags is None
  assert dense.check is None and dense.sub_batches == 1
  sam = builders.build_method(SGD, 10, {"flatness": {
      "name": "sam", "rho": 0.05, "sub_batches": 2}})
  assert sam.sub_batches == 2
  sparse = builders.build_method(SGD, 10, {"sparsity": SPARSITY}, seed=0)
  opt_state = sparse.tx.init(params)
  flags = sparse.mask_update_flags(opt_state, 0, 4)
  np.testing.assert_array_equal(flags, [False, False, True, False])
  with pytest.raises(ValueError, match="counter is 0 at train step 3"):
    sparse.mask_update_flags(opt_state, 3, 4)
  state = type("S", (), {"params": params, "opt_state": opt_state})()
  masks = sparse.active_masks(state)
  assert masks["Dense_0"]["bias"] is None
  assert bool(jnp.all(masks["Dense_0"]["kernel"]))  # dense before step 2
  safe = builders.build_method(SGD, 10, {"safe": {"name": "iht",
                                                  "sparsity": 0.5}})
  assert safe.finalize is not None and safe.finalized_prefix == "unprojected"
  zeroed = {"Dense_0": {"kernel": params["Dense_0"]["kernel"].at[0].set(0.0),
                        "bias": params["Dense_0"]["bias"]}}
  masks = safe.active_masks(type("S", (), {"params": zeroed})())
  np.testing.assert_array_equal(masks["Dense_0"]["kernel"],
                                [[False] * 4, [True] * 4])


def test_method_sections_are_checked():
  with pytest.raises(ValueError, match=r"Unknown method sections \['sharp'\]"):
    builders.build_method(SGD, 10, {"sharp": {"name": "sam"}})
  with pytest.raises(ValueError, match="config.safe excludes config.sparsity "
                     "and config.flatness"):
    builders.build_method(SGD, 10, {"safe": {"name": "iht"},
                                    "sparsity": SPARSITY})
  part = methods.METHOD_PARTS["flatness"]
  with pytest.raises(ValueError, match="'flatness' is already registered"):
    methods.register_method_part("flatness", part)
  with pytest.raises(TypeError, match="must be a MethodPart"):
    methods.register_method_part("other", lambda *a: None)


def test_a_registered_method_part_wraps_the_optimizer():
  """A part replaced by registration: the loop would call its fields."""
  original = methods.METHOD_PARTS["flatness"]

  def scaled(section, inner, context):
    del context
    return inner._replace(tx=optax.chain(optax.scale(section["factor"]),
                                         inner.tx))
  methods.register_method_part("flatness", methods.MethodPart(scaled),
                               overwrite=True)
  try:
    method = builders.build_method(SGD, 10, {"flatness": {"factor": 0.5}})
    params = {"w": jnp.ones(3)}
    updates, _ = method.tx.update({"w": jnp.ones(3)},
                                  method.tx.init(params), params)
    np.testing.assert_allclose(updates["w"], -0.05)
  finally:
    methods.register_method_part("flatness", original, overwrite=True)
