"""Digits MLP with gradual magnitude pruning and SAM, for the multi-host
test (batch 128 over 8 devices; eval batches rounded up to 504)."""

import ml_collections

from configs import digits_mlp


def get_config() -> ml_collections.ConfigDict:
  c = digits_mlp.get_config("tiny")
  c.steps = 30
  c.log_every = 5
  c.eval_every = 30
  c.checkpoint_every = 10
  c.flatness = ml_collections.ConfigDict(dict(name="sam", rho=0.05))
  return c
