"""ViT token subsets, last-layer maps and the distillation token (MaskedKD's
teacher and student)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flatsparse.models import ViT

IMAGES = (2, 16, 16, 1)  # patch 4: 16 patches


def _vit(**kwargs) -> ViT:
  return ViT(**{**dict(num_classes=3, hidden_size=16, num_layers=2,
                       num_heads=2, mlp_dim=32, patch_size=4), **kwargs})


def _init(model, x):
  params = dict(model.init(jax.random.key(0), x)["params"])
  for name in ("head", "head_dist"):  # zero-initialized heads: randomize
    if name in params:
      params[name] = {**params[name], "kernel": jax.random.normal(
          jax.random.key(7), params[name]["kernel"].shape)}
  return {"params": params}


def test_all_patches_in_order_equal_the_full_image():
  model = _vit()
  x = jax.random.normal(jax.random.key(1), IMAGES)
  variables = _init(model, x)
  every = jnp.tile(jnp.arange(16), (2, 1))
  np.testing.assert_allclose(
      model.apply(variables, x, patch_indices=every), model.apply(variables, x),
      rtol=1e-5, atol=1e-5)


def test_subset_carries_each_patch_position_embedding():
  # A subset equals a hand-built forward: tokens + pos, gathered, then the
  # blocks. Checked by permutation invariance: the kept tokens in another
  # order give the same class-token output (attention is permutation
  # equivariant; positions travel with the tokens).
  model = _vit()
  x = jax.random.normal(jax.random.key(1), IMAGES)
  variables = _init(model, x)
  kept = jnp.array([[3, 7, 12, 0], [15, 1, 2, 9]])
  shuffled = kept[:, ::-1]
  np.testing.assert_allclose(
      model.apply(variables, x, patch_indices=kept),
      model.apply(variables, x, patch_indices=shuffled), rtol=1e-5, atol=1e-5)
  # Changing a position embedding of a kept patch changes the output;
  # changing one of a dropped patch does not.
  pos = variables["params"]["pos_embedding"]
  # Not a constant shift: LayerNorm would remove it.
  bump = jax.random.normal(jax.random.key(3), (16,))
  dropped_changed = {"params": {**variables["params"],
                                "pos_embedding": pos.at[0, 1 + 5].add(bump)}}
  kept_changed = {"params": {**variables["params"],
                             "pos_embedding": pos.at[0, 1 + 3].add(bump)}}
  base = model.apply(variables, x, patch_indices=kept)
  np.testing.assert_allclose(
      model.apply(dropped_changed, x, patch_indices=kept), base, atol=1e-6)
  assert np.abs(model.apply(kept_changed, x, patch_indices=kept)[0]
                - base[0]).max() > 1e-2


def test_last_maps_match_the_written_out_ones_and_fused_logits_agree():
  model = _vit()
  x = jax.random.normal(jax.random.key(1), IMAGES)
  variables = _init(model, x)
  logits_all, maps_all = model.apply(variables, x, return_attention=True)
  logits_last, maps_last = model.apply(variables, x, return_attention="last")
  assert len(maps_all) == 2 and len(maps_last) == 1
  np.testing.assert_allclose(maps_last[0], maps_all[-1], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(logits_last, logits_all, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(model.apply(variables, x), logits_all,
                             rtol=1e-4, atol=1e-4)
  with pytest.raises(ValueError, match="return_attention must be"):
    model.apply(variables, x, return_attention="first")


def test_distillation_token_heads():
  model = _vit(distillation_token=True)
  x = jax.random.normal(jax.random.key(1), IMAGES)
  variables = _init(model, x)
  assert variables["params"]["pos_embedding"].shape == (1, 2 + 16, 16)
  cls_logits, dist_logits = model.apply(variables, x, separate_heads=True)
  np.testing.assert_allclose(model.apply(variables, x),
                             (cls_logits + dist_logits) / 2, rtol=1e-6)
  assert not np.allclose(cls_logits, dist_logits)
  assert model.num_prefix_tokens == 2
  _, maps = model.apply(variables, x, return_attention="last",
                        patch_indices=jnp.zeros((2, 5), jnp.int32))
  assert maps[0].shape == (2, 2, 2 + 5, 2 + 5)
  with pytest.raises(ValueError, match="distillation_token needs"):
    _vit(distillation_token=True, classifier="gap").init(jax.random.key(0), x)


def test_bad_patch_indices_name_the_value():
  model = _vit()
  x = jax.random.normal(jax.random.key(1), IMAGES)
  variables = _init(model, x)
  with pytest.raises(ValueError, match="keeps 17 patches; allowed: 1 to 16"):
    model.apply(variables, x, patch_indices=jnp.zeros((2, 17), jnp.int32))
  with pytest.raises(ValueError, match=r"must be \(batch=2, k\)"):
    model.apply(variables, x, patch_indices=jnp.zeros((3, 4), jnp.int32))
  with pytest.raises(ValueError, match="must be integers"):
    model.apply(variables, x, patch_indices=jnp.zeros((2, 4)))
  # Out of range under jit: NaN logits, not a clamped patch.
  bad = jax.jit(lambda idx: model.apply(variables, x, patch_indices=idx))(
      jnp.array([[0, 16], [1, 2]]))
  assert bool(jnp.all(jnp.isnan(bad[0]))) and bool(jnp.all(jnp.isfinite(
      bad[1])))
