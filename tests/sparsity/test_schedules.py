"""Schedules against their formulas."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from flatsparse.sparsity import schedules


def test_polynomial_matches_zhu_gupta():
  s = schedules.Polynomial(update_freq=10, update_start_step=100,
                           update_end_step=600, initial_sparsity=0.1)
  for t in (0, 100, 150, 350, 599, 600, 900):
    p = min(max((t - 100) / 500, 0), 1)
    want = 0.9 + (0.1 - 0.9) * (1 - p) ** 3
    assert float(s.sparsity(jnp.int32(t), 0.9)) == pytest.approx(want, abs=1e-6)


@pytest.mark.parametrize("power", [1.0, 2.0, 3.0, 5.0])
def test_polynomial_power_at_mid_ramp(power):
  s = schedules.Polynomial(update_freq=10, update_start_step=100,
                           update_end_step=600, initial_sparsity=0.1,
                           power=power)
  # Half way (t = 350): s_f + (s_i - s_f) / 2 ** power. Power 2: 0.7, power
  # 3: 0.8, so a schedule that ignores the power fails every case but 3.
  want = 0.9 + (0.1 - 0.9) * 0.5 ** power
  assert float(s.sparsity(jnp.int32(350), 0.9)) == pytest.approx(want,
                                                                abs=1e-6)
  # A quarter of the way (t = 225), and the end points.
  want = 0.9 + (0.1 - 0.9) * 0.75 ** power
  assert float(s.sparsity(jnp.int32(225), 0.9)) == pytest.approx(want,
                                                                abs=1e-6)
  assert float(s.sparsity(jnp.int32(100), 0.9)) == pytest.approx(0.1)
  assert float(s.sparsity(jnp.int32(600), 0.9)) == pytest.approx(0.9)


def test_polynomial_update_steps():
  s = schedules.Polynomial(update_freq=10, update_start_step=5,
                           update_end_step=45)
  steps = [t for t in range(100) if bool(s.is_update_step(jnp.int32(t)))]
  assert steps == [5, 15, 25, 35, 45]


def test_periodic_and_one_shot_and_no_update():
  p = schedules.Periodic(update_freq=3, update_start_step=2, update_end_step=11)
  assert [t for t in range(20) if p.is_update_step(jnp.int32(t))] == [2, 5, 8,
                                                                     11]
  open_ended = schedules.Periodic(update_freq=4)
  assert bool(open_ended.is_update_step(jnp.int32(400)))
  o = schedules.OneShot(7)
  assert [t for t in range(20) if o.is_update_step(jnp.int32(t))] == [7]
  assert not any(bool(schedules.NoUpdate().is_update_step(jnp.int32(t)))
                 for t in range(5))
  assert float(o.sparsity(jnp.int32(0), 0.8)) == pytest.approx(0.8)


def test_cosine_drop_fraction():
  f = schedules.cosine_drop_fraction(0.3, end_step=100)
  for t in (0, 25, 50, 100, 150):
    want = 0.15 * (1 + math.cos(math.pi * min(t, 100) / 100))
    assert float(f(jnp.int32(t))) == pytest.approx(want, abs=1e-6)


@pytest.mark.parametrize("kwargs,msg", [
    (dict(update_freq=0), "update_freq must be an int >= 1, got 0"),
    (dict(update_start_step=-1), "update_start_step must be an int >= 0"),
    (dict(update_start_step=10, update_end_step=5), "must be >="),
])
def test_periodic_errors(kwargs, msg):
  with pytest.raises(ValueError, match=msg):
    schedules.Periodic(**kwargs)


def test_polynomial_errors():
  with pytest.raises(ValueError,
                     match="update_end_step .* > update_start_step"):
    schedules.Polynomial(update_start_step=10, update_end_step=10)
  with pytest.raises(ValueError, match=r"initial_sparsity must be in \[0, 1\)"):
    schedules.Polynomial(initial_sparsity=1.0)
  with pytest.raises(ValueError, match="initial_fraction"):
    schedules.cosine_drop_fraction(1.5)
  assert np.isfinite(float(schedules.Polynomial().sparsity(jnp.int32(3), 0.5)))
