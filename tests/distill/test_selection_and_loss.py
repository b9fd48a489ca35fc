"""MaskedKD's patch selection and the distillation loss, by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flatsparse import distill


@pytest.mark.parametrize("ratio,count", [(0.5, 98), (0.75, 147), (0.25, 49),
                                         (1.0, 196), (1, 196)])
def test_keep_count_floors_like_the_reference(ratio, count):
  assert distill.keep_count(196, ratio) == count


@pytest.mark.parametrize("ratio", [0.0, -0.1, 1.5, True, "half", None])
def test_keep_ratio_outside_the_range_names_the_value(ratio):
  with pytest.raises(ValueError, match=r"keep_ratio must be in \(0, 1\]"):
    distill.keep_count(196, ratio)


def test_keep_ratio_that_keeps_nothing():
  with pytest.raises(ValueError, match="keeps no patch of 16"):
    distill.keep_count(16, 0.05)


def test_top_patches_of_a_hand_made_map_ties_by_index():
  # Batch of 2, 2 heads, class token + 4 patches.
  attention = np.zeros((2, 2, 5, 5), np.float32)
  attention[0, 0, 0, 1:] = [0.1, 0.4, 0.2, 0.3]
  attention[0, 1, 0, 1:] = [0.1, 0.2, 0.4, 0.3]  # mean: .1 .3 .3 .3
  attention[1, :, 0, 1:] = [0.4, 0.1, 0.1, 0.4]
  scores = distill.class_attention(jnp.asarray(attention))
  np.testing.assert_allclose(scores, [[0.1, 0.3, 0.3, 0.3],
                                      [0.4, 0.1, 0.1, 0.4]], rtol=1e-6)
  np.testing.assert_array_equal(distill.top_patches(scores, 2),
                                [[1, 2], [0, 3]])
  np.testing.assert_array_equal(distill.top_patches(scores, 3),
                                [[1, 2, 3], [0, 3, 1]])
  # A distillation token (two prefix tokens) is skipped.
  with_dist = np.zeros((1, 1, 4, 4), np.float32)
  with_dist[0, 0, 0] = [0.0, 0.9, 0.05, 0.05]
  np.testing.assert_allclose(distill.class_attention(jnp.asarray(with_dist),
                                                     2), [[0.05, 0.05]])
  with pytest.raises(ValueError, match="must be \\(batch, heads"):
    distill.class_attention(jnp.zeros((2, 5, 5)))


def test_random_patches_are_distinct_and_seeded():
  a = distill.random_patches(jax.random.key(0), 64, 16, 5)
  b = distill.random_patches(jax.random.key(1), 64, 16, 5)
  assert a.shape == (64, 5) and a.dtype == jnp.int32
  assert all(len(set(row)) == 5 for row in np.asarray(a).tolist())
  assert int(a.min()) >= 0 and int(a.max()) < 16
  assert not np.array_equal(a, b)
  # Every patch is picked about equally often.
  counts = np.bincount(np.asarray(
      distill.random_patches(jax.random.key(2), 4000, 16, 4)).ravel(),
                       minlength=16)
  assert counts.min() > 0.8 * 1000 and counts.max() < 1.2 * 1000


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def test_soft_loss_against_a_hand_computation():
  rng = np.random.default_rng(0)
  s, t = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
  y = np.array([0, 2, 1, 1])
  tau, alpha = 2.0, 0.3
  ce = -np.log(_softmax(s)[np.arange(4), y]).mean()
  p, q = _softmax(t / tau), _softmax(s / tau)
  kl = (p * (np.log(p) - np.log(q))).sum(-1).mean()
  expected = (1 - alpha) * ce + alpha * tau ** 2 * kl
  got = distill.distillation_loss(jnp.asarray(s, jnp.float32),
                                  jnp.asarray(t, jnp.float32), jnp.asarray(y),
                                  temperature=tau, alpha=alpha)
  assert float(got) == pytest.approx(expected, rel=1e-5)
  assert got.dtype == jnp.float32
  # MaskedKD's default (tau 1, alpha 0.5).
  p1, q1 = _softmax(t), _softmax(s)
  expected = 0.5 * ce + 0.5 * (p1 * (np.log(p1) - np.log(q1))).sum(-1).mean()
  assert float(distill.distillation_loss(
      jnp.asarray(s), jnp.asarray(t), jnp.asarray(y))) == pytest.approx(
          expected, rel=1e-5)


def test_hard_loss_and_distillation_token_pair():
  rng = np.random.default_rng(1)
  s_cls, s_dist, t = (rng.normal(size=(5, 4)) for _ in range(3))
  y = rng.integers(0, 4, 5)
  ce = -np.log(_softmax(s_cls)[np.arange(5), y]).mean()
  hard = -np.log(_softmax(s_dist)[np.arange(5), t.argmax(-1)]).mean()
  got = distill.distillation_loss(
      (jnp.asarray(s_cls), jnp.asarray(s_dist)), jnp.asarray(t),
      jnp.asarray(y), kind="hard")
  assert float(got) == pytest.approx(0.5 * ce + 0.5 * hard, rel=1e-5)


def test_no_kd_needs_no_teacher_and_no_gradient_reaches_the_teacher():
  s = jnp.asarray(np.random.default_rng(2).normal(size=(3, 4)), jnp.float32)
  y = jnp.array([0, 1, 3])
  assert float(distill.distillation_loss(s, None, y, alpha=0.0)) == (
      pytest.approx(float(-jnp.mean(jax.nn.log_softmax(s)[jnp.arange(3),
                                                           y]))))
  t = jnp.ones((3, 4))
  grad_t = jax.grad(lambda t: distill.distillation_loss(s, t, y))(t)
  np.testing.assert_array_equal(grad_t, 0.0)


def test_bad_knobs_name_the_value():
  s, y = jnp.zeros((2, 3)), jnp.array([0, 1])
  with pytest.raises(ValueError, match="alpha must be in \\[0, 1\\], got 1.5"):
    distill.distillation_loss(s, s, y, alpha=1.5)
  with pytest.raises(ValueError, match="temperature must be > 0, got 0"):
    distill.distillation_loss(s, s, y, temperature=0)
  with pytest.raises(ValueError, match="Unknown kind 'medium'"):
    distill.distillation_loss(s, s, y, kind="medium")
  with pytest.raises(ValueError, match="teacher_logits is None"):
    distill.distillation_loss(s, None, y)
  with pytest.raises(ValueError, match="same shape"):
    distill.distillation_loss(s, jnp.zeros((2, 4)), y)
