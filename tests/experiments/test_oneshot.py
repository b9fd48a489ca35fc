"""The one-shot pruning study end to end on the tiny byte-level LLaMA."""

import json

import jax.numpy as jnp
import pytest

from configs import oneshot_shakespeare
from experiments import oneshot
from flatsparse.models import hf_checkpoint


def test_method_names_parse_and_bad_ones_are_refused():
  config = oneshot_shakespeare.get_config()
  method = oneshot.parse_method("sparsegpt/2:4/br+gp+cr", config)
  assert (method.solver, method.scope, method.sparsity) == (
      "sparsegpt", "2:4", None)
  assert method.cross_block and method.global_propagation
  assert oneshot.parse_method("wanda/0.6/lr", config).sparsity == 0.6
  with pytest.raises(ValueError, match="solver/pattern/reconstruction"):
    oneshot.parse_method("wanda/0.5", config)
  with pytest.raises(ValueError, match="neither a sparsity"):
    oneshot.parse_method("wanda/half/lr", config)
  # The full grid: 3 solvers x 4 reconstructions + SAFE, SAFE+, at 4
  # patterns; the recorded study: all of it at 50%, LR and SparseGPT+BR+GP
  # at the other three.
  assert len(oneshot_shakespeare.get_config("full").methods) == 4 * (3 * 4 + 2)
  assert len(config.methods) == 14 + 3 * 4


def test_tiny_study_trains_prunes_measures_and_resumes(tmp_path, monkeypatch):
  config = oneshot_shakespeare.get_config("tiny")
  results = oneshot.run_study(config, str(tmp_path))
  dense = results["dense_perplexity"]
  # The tiny model has learned the sonnet: far below the 256-byte uniform
  # perplexity (and below its ~30 distinct characters).
  assert dense < 8.0, dense
  runs = {r["method"]: r for r in results["runs"]}
  assert set(runs) == set(config.methods)
  for name, run in runs.items():
    assert run["sparsity"] == pytest.approx(0.5, abs=1e-6), name
    assert len(run["block_errors"]) == 2
    assert run["perplexity"] > dense * 0.99, name
    assert run["reconstruction_error"] > 0
  assert "| wanda/0.5/lr |" in results["report"]
  # The pruned model, saved as a Hugging Face checkpoint, loads back with
  # the same zeros.
  model, pruned, _ = hf_checkpoint.load_hf_checkpoint(
      str(tmp_path / "wanda_0.5_lr" / "seed_0" / "pruned_hf"))
  kernel = pruned["layers_1"]["mlp"]["down_proj"]["kernel"]
  assert float(jnp.mean(kernel == 0)) == pytest.approx(0.5)
  saved = json.loads((tmp_path / "results.json").read_text())
  assert saved["dense_perplexity"] == dense
  # Again: the dense model is loaded from its exported checkpoint and every
  # run from its record; nothing is pruned again.
  monkeypatch.setattr(oneshot.oneshot, "prune", _refuse)
  again = oneshot.run_study(config, str(tmp_path))
  assert again["dense_perplexity"] == pytest.approx(dense, rel=1e-6)


def _refuse(*args, **kwargs):
  raise AssertionError("a finished run was pruned again")
