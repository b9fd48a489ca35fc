"""Each criterion against a hand-computed value on a 3-concept, 2-class CBM."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flatsparse import cbm


@pytest.fixture(autouse=True)
def float64():
  # Hand-computed values to 1e-10: float64 inside each test only.
  with jax.enable_x64(True):
    yield

P = np.array([[0.9, 0.4, 0.7], [0.2, 0.55, 0.5 + 1e-3]])
C = np.array([[1, 1, 0], [0, 1, 1]])
# f linear in Flax orientation (concepts, classes).
W = np.array([[1.0, -1.0], [2.0, 0.0], [0.0, 3.0]])


def _scores(criterion, values=None, low=0.0, high=1.0, predict=None):
  logits = jnp.asarray(np.log(P / (1 - P)))
  values = jnp.asarray(P) if values is None else values
  return np.asarray(cbm.concept_scores(
      criterion, concept_logits=logits, concepts=jnp.asarray(C),
      values=values, predict=predict or (lambda v: v @ jnp.asarray(W)),
      low=jnp.full(3, low), high=jnp.full(3, high),
      key=jax.random.key(0)))


def _softmax(z):
  e = np.exp(z - z.max())
  return e / e.sum()


def test_ucp_lcp_entropy_cctp_by_hand():
  np.testing.assert_allclose(_scores("ucp")[0], [2.5, 10.0, 5.0])
  np.testing.assert_allclose(_scores("lcp")[0], [0.1, 0.6, 0.7])
  # Rows of |W| sum to 2, 2, 3: p_i times that.
  np.testing.assert_allclose(_scores("cctp")[0], [1.8, 0.8, 2.1])
  h = -(P * np.log(P) + (1 - P) * np.log(1 - P))
  np.testing.assert_allclose(_scores("entropy"), h)


def test_ectp_eudtp_by_hand():
  ectp, eudtp = _scores("ectp"), _scores("eudtp")
  for b in range(2):
    q = _softmax(P[b] @ W)
    for i in range(3):
      v0, v1 = P[b].copy(), P[b].copy()
      v0[i], v1[i] = 0.0, 1.0
      q0, q1 = _softmax(v0 @ W), _softmax(v1 @ W)
      kl0 = np.sum(q0 * np.log(q0 / q))
      kl1 = np.sum(q1 * np.log(q1 / q))
      assert ectp[b, i] == pytest.approx((1 - P[b, i]) * kl0
                                         + P[b, i] * kl1, rel=1e-10)
      ent = lambda d: -np.sum(d * np.log(d))  # noqa: E731
      expected = ent(q) - ((1 - P[b, i]) * ent(q0) + P[b, i] * ent(q1))
      assert eudtp[b, i] == pytest.approx(expected, rel=1e-10, abs=1e-14)


def test_soft_corrections_use_low_and_high():
  # With the soft bottleneck f reads logits, corrected to low / high.
  logits = jnp.asarray(np.log(P / (1 - P)))
  got = _scores("ectp", values=logits, low=-2.0, high=3.0)
  b, i = 0, 2
  q = _softmax(np.asarray(logits[b]) @ W)
  v0, v1 = np.asarray(logits[b]).copy(), np.asarray(logits[b]).copy()
  v0[i], v1[i] = -2.0, 3.0
  q0, q1 = _softmax(v0 @ W), _softmax(v1 @ W)
  expected = ((1 - P[b, i]) * np.sum(q0 * np.log(q0 / q))
              + P[b, i] * np.sum(q1 * np.log(q1 / q)))
  assert got[b, i] == pytest.approx(expected, rel=1e-10)


def test_cctp_of_a_nonlinear_f_is_its_jacobian():
  w1 = np.random.default_rng(0).normal(size=(3, 5))
  w2 = np.random.default_rng(1).normal(size=(5, 2))

  def predict(v):
    return jnp.tanh(v @ w1) @ w2

  got = _scores("cctp", predict=predict)
  eps = 1e-6
  for b in range(2):
    for i in range(3):
      up, down = P[b].copy(), P[b].copy()
      up[i] += eps
      down[i] -= eps
      d = (np.tanh(up @ w1) @ w2 - np.tanh(down @ w1) @ w2) / (2 * eps)
      assert got[b, i] == pytest.approx(P[b, i] * np.abs(d).sum(), rel=1e-6)


def test_entropy_ranks_like_ucp_and_rand_is_seeded():
  ucp, ent = _scores("ucp"), _scores("entropy")
  np.testing.assert_array_equal(np.argsort(-ucp, 1), np.argsort(-ent, 1))
  rand = _scores("rand")
  assert rand.shape == (2, 3) and ((rand >= 0) & (rand < 1)).all()
  np.testing.assert_array_equal(rand, _scores("rand"))


def test_unknown_criterion_names_it():
  with pytest.raises(ValueError, match="'oracle'.*allowed: rand, ucp"):
    _scores("oracle")
