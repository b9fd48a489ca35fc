"""The forward_forward task of the loop: a pruned FFMLP learns the digits
centrally; its train and eval outputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import forward_forward_digits
from flatsparse import sparsity
from flatsparse.train import loop
from flatsparse.train import tasks


@pytest.mark.slow
def test_loop_trains_a_pruned_ff_model_on_digits(tmp_path):
  config = forward_forward_digits.get_config("tiny")
  metrics, state = loop.train_and_evaluate(config, str(tmp_path),
                                           return_state=True)
  assert metrics["accuracy"] > 0.7, metrics
  assert metrics["readout_accuracy"] > 0.7, metrics
  summary = sparsity.summarize_sparsity(state.params)
  np.testing.assert_allclose(summary["prunable_sparsity"], 0.5, atol=0.01)


def test_loop_runs_the_task_with_a_pruning_wrapper(tmp_path):
  """The fast stand-in of the test above (FF learning is claimed by
  test_end_to_end.py): 30 steps, pruned to 50%, every metric there."""
  config = forward_forward_digits.get_config("tiny")
  config.steps, config.eval_every, config.checkpoint_every = 30, 30, 30
  config.log_every = 10
  config.sparsity.update_start_step = 5
  config.sparsity.update_freq = 5
  config.sparsity.update_end_step = 20
  metrics, state = loop.train_and_evaluate(config, str(tmp_path),
                                           return_state=True)
  assert 0 <= metrics["accuracy"] <= 1 and 0 <= metrics[
      "readout_accuracy"] <= 1
  assert np.isfinite(metrics["loss"])
  summary = sparsity.summarize_sparsity(state.params)
  np.testing.assert_allclose(summary["prunable_sparsity"], 0.5, atol=0.01)


def test_train_outputs_are_the_layer_terms_and_separation():
  from flatsparse.models import FFMLP  # pylint: disable=g-import-not-at-top
  task = tasks.get_task("forward_forward")
  model = FFMLP((6, 4), num_labels=3, threshold=1.0, readout=True)
  batch = {"image": jax.random.uniform(jax.random.PRNGKey(0), (5, 8)),
           "label": jnp.array([0, 1, 2, 0, 1])}
  variables = model.init(jax.random.PRNGKey(1), batch["image"])
  out = task.forward(model, variables, batch, train=True,
                     rng=jax.random.PRNGKey(2))
  assert set(out["terms"]) == {"layer_0", "layer_1", "readout"}
  np.testing.assert_allclose(task.loss(out, batch),
                             sum(out["terms"].values()), rtol=1e-6)
  evaluated = task.forward(model, variables, batch, train=False,
                           rng=jax.random.PRNGKey(2))
  assert evaluated["scores"].shape == (5, 3)
  sums = task.eval_sums(evaluated, batch, jnp.ones(5))
  assert set(task.eval_metrics(sums)) == {"accuracy", "loss",
                                          "readout_accuracy"}
