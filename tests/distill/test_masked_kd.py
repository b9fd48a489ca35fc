"""MaskedKD's forward pass, the distillation task's step and its errors."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from flatsparse import distill
from flatsparse import flatness
from flatsparse import sparsity
from flatsparse.models import ViT
from flatsparse.train import builders
from flatsparse.train import state as state_lib
from flatsparse.train import step as step_lib
from flatsparse.train import tasks

IMAGES = (4, 16, 16, 1)  # patch 4: 16 patches


def _vit(hidden=16, layers=2, **kwargs):
  return ViT(**{**dict(num_classes=3, hidden_size=hidden, num_layers=layers,
                       num_heads=2, mlp_dim=2 * hidden, patch_size=4),
                **kwargs})


def _params(model, x, seed=0):
  params = dict(model.init(jax.random.key(seed), x)["params"])
  for name in ("head", "head_dist"):
    if name in params:
      params[name] = {**params[name], "kernel": jax.random.normal(
          jax.random.key(seed + 7), params[name]["kernel"].shape)}
  return params


def _setup(selection="student", ratio=0.5, **student_kwargs):
  x = jax.random.normal(jax.random.key(1), IMAGES)
  student, teacher = _vit(**student_kwargs), _vit(hidden=32)
  s_params, t_params = _params(student, x), _params(teacher, x, 3)

  @jax.jit
  def run(s_params, t_params, x):
    return distill.masked_kd_outputs(
        lambda images, **kw: student.apply({"params": s_params}, images,
                                           train=True, **kw),
        student, teacher, t_params, x, keep_ratio=ratio,
        selection=selection, key=jax.random.key(5))

  return run(s_params, t_params, x), student, teacher, s_params, t_params, x


def test_student_selection_is_the_top_k_of_its_class_attention():
  out, student, teacher, s_params, t_params, x = _setup()
  _, maps = jax.jit(lambda p, x: student.apply({"params": p}, x,
                                               return_attention=True))(
                                                   s_params, x)
  scores = np.asarray(maps[-1][:, :, 0, 1:].mean(1))
  expected = np.argsort(-scores, axis=1, kind="stable")[:, :8]
  np.testing.assert_array_equal(out["patches"], expected)
  np.testing.assert_allclose(
      out["teacher"], teacher.apply({"params": t_params}, x,
                                    patch_indices=out["patches"]),
      rtol=1e-4, atol=1e-5)


def test_keep_all_equals_the_full_teacher_and_all_selection_too():
  full, *_, teacher, _, t_params, x = _setup(ratio=1.0)
  reference = teacher.apply({"params": t_params}, x)
  np.testing.assert_allclose(full["teacher"], reference, rtol=1e-4, atol=1e-5)
  every, *_ = _setup(selection="all")
  assert every["patches"] is None
  np.testing.assert_allclose(every["teacher"], reference, rtol=1e-4, atol=1e-5)


def test_teacher_and_random_selection():
  out, _, teacher, _, t_params, x = _setup(selection="teacher")
  _, maps = teacher.apply({"params": t_params}, x, return_attention="last")
  expected = np.argsort(-np.asarray(maps[0][:, :, 0, 1:].mean(1)), axis=1,
                        kind="stable")[:, :8]
  np.testing.assert_array_equal(out["patches"], expected)
  rand, *_ = _setup(selection="random", ratio=0.25)
  assert rand["patches"].shape == (4, 4)
  with pytest.raises(ValueError, match="needs a PRNG key"):
    student = _vit()
    distill.masked_kd_outputs(
        lambda images, **kw: student.apply(
            {"params": _params(student, x)}, images, **kw),
        student, teacher, t_params, x, selection="random")


def test_no_gradient_into_the_teacher_or_through_the_selection():
  _, student, teacher, s_params, t_params, x = _setup()
  labels = jnp.array([0, 1, 2, 0])

  def outputs(s_params, t_params):
    return distill.masked_kd_outputs(
        lambda images, **kw: student.apply({"params": s_params}, images,
                                           **kw),
        student, teacher, t_params, x)

  def loss(s_params, t_params):
    out = outputs(s_params, t_params)
    return distill.distillation_loss(out["student"], out["teacher"], labels)

  @jax.jit
  def gradients(s_params, t_params):
    g_student, g_teacher = jax.grad(loss, argnums=(0, 1))(s_params, t_params)
    # The same loss with the teacher's (masked) logits as a constant: the
    # selection carries no gradient, so the student's gradient is equal.
    fixed = outputs(s_params, t_params)["teacher"]
    g_fixed = jax.grad(lambda p: distill.distillation_loss(
        student.apply({"params": p}, x), fixed, labels))(s_params)
    return g_student, g_teacher, g_fixed

  g_student, g_teacher, g_fixed = gradients(s_params, t_params)
  assert all(float(jnp.abs(g).max()) == 0.0
             for g in jax.tree.leaves(g_teacher))
  assert float(optax.tree.norm(g_student)) > 0
  for a, b in zip(jax.tree.leaves(g_student), jax.tree.leaves(g_fixed)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_distillation_token_student():
  out, student, *_ = _setup(distillation_token=True)
  cls_logits, dist_logits = out["student"]
  assert cls_logits.shape == dist_logits.shape == (4, 3)
  assert out["patches"].shape == (4, 8)


def test_bad_pairs_and_knobs_name_the_value():
  x = jnp.zeros(IMAGES)
  student, teacher = _vit(), _vit(patch_size=2)
  with pytest.raises(ValueError, match="patch size 2 differs from the "
                     "student's 4"):
    distill.check_pair(student, teacher, "student", 0.5)
  with pytest.raises(ValueError, match=r"keep_ratio must be in \(0, 1\], got "
                     "1.5"):
    distill.check_pair(student, _vit(), "student", 1.5)
  with pytest.raises(ValueError, match="Unknown selection 'attention'"):
    distill.check_pair(student, _vit(), "attention", 0.5)
  with pytest.raises(ValueError, match="classifier='gap'"):
    distill.check_pair(_vit(classifier="gap"), _vit(), "student", 0.5)
  with pytest.raises(ValueError, match="must be a flatsparse.models.ViT"):
    distill.check_pair(student, object(), "student", 0.5)
  with pytest.raises(ValueError, match="alpha must be in"):
    distill.Distiller(student, _vit(), alpha=2.0)
  del x


def _distiller(dtype=jnp.float32, **kwargs):
  return builders.build_model(ml_collections.ConfigDict(dict(
      name="distillation",
      student=dict(name="vit", hidden_size=16, num_layers=2, num_heads=2,
                   mlp_dim=32, patch_size=4, dtype=dtype),
      teacher=dict(name="vit", hidden_size=32, num_layers=2, num_heads=2,
                   mlp_dim=64, patch_size=4), **kwargs)), 3)


def _batch(seed):
  rng = np.random.default_rng(seed)
  return {"image": jnp.asarray(rng.normal(size=IMAGES), jnp.float32),
          "label": jnp.asarray(rng.integers(0, 3, IMAGES[0]), jnp.int32)}


def test_task_step_conformance_sam_and_pruning():
  """One compilation for two steps, SAM inside a pruning wrapper around an
  injected-hyperparameter SGD, on the student; the teacher never changes."""
  model = _distiller()
  task = tasks.get_task("distillation")
  x = _batch(0)["image"]
  teacher_params = _params(model.teacher, x, 3)
  inner = optax.chain(flatness.sam(0.05), optax.inject_hyperparams(
      optax.sgd)(learning_rate=0.1))
  tx = sparsity.create_updater_from_config(ml_collections.ConfigDict(dict(
      algorithm="magnitude", sparsity=0.5, schedule="one_shot",
      update_start_step=0))).wrap(inner)
  state = state_lib.create_train_state(model, tx, x, seed=0,
                                       frozen={"teacher": teacher_params})
  assert set(state.params) == {"student"}
  step = jax.jit(step_lib.make_train_step(model, tx, task=task))
  for i in range(2):
    state, metrics = step(state, _batch(i))
  assert step._cache_size() == 1
  assert np.isfinite(float(metrics["loss"])) and float(metrics["kd"]) > 0
  kernel = state.params["student"]["encoderblock_0"]["mlp_dense1"]["kernel"]
  assert kernel.dtype == jnp.float32
  assert float(jnp.mean(kernel == 0)) == pytest.approx(0.5)
  for a, b in zip(jax.tree.leaves(state.frozen["teacher"]),
                  jax.tree.leaves(teacher_params)):
    np.testing.assert_array_equal(a, b)
  # The eval step scores the student alone.
  sums = jax.jit(step_lib.make_eval_step(model, task))(
      state, {**_batch(5), "mask": jnp.ones(4)})
  assert float(sums["count"]) == 4


def test_bfloat16_student_keeps_float32_params_and_loss():
  model = _distiller(jnp.bfloat16)
  task = tasks.get_task("distillation")
  batch = _batch(0)
  teacher_params = _params(model.teacher, batch["image"], 3)
  params = model.init(jax.random.key(0), batch["image"])["params"]

  @jax.jit
  def loss_and_grad(params):
    def loss(p):
      out = task.forward(model, {"params": p, "teacher": teacher_params},
                         batch, train=True, rng=jax.random.key(1))
      return task.loss(out, batch), out["logits"]
    return jax.value_and_grad(loss, has_aux=True)(params)

  (loss, logits), grads = loss_and_grad(params)
  assert loss.dtype == jnp.float32 and np.isfinite(float(loss))
  assert logits.dtype == jnp.bfloat16
  assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads))


def test_task_loss_matches_the_library_loss():
  model = _distiller(keep_ratio=0.75)
  task = tasks.get_task("distillation")
  batch = _batch(0)
  teacher_params = _params(model.teacher, batch["image"], 3)
  params = model.init(jax.random.key(0), batch["image"])["params"]
  key = jax.random.key(9)

  @jax.jit
  def both(params, teacher_params):
    out = task.forward(model, {"params": params, "teacher": teacher_params},
                       batch, train=True, rng=key)
    ref = distill.masked_kd_outputs(
        lambda images, **kw: model.apply({"params": params}, images,
                                         train=True, rngs={"dropout": key},
                                         **kw),
        model.student, model.teacher, teacher_params, batch["image"],
        keep_ratio=0.75)
    return task.loss(out, batch), distill.distillation_loss(
        ref["student"], ref["teacher"], batch["label"])

  got, expected = both(params, teacher_params)
  assert float(got) == pytest.approx(float(expected), rel=1e-5)
  no_kd = _distiller(alpha=0.0)
  assert task.frozen_variables(no_kd) == {}
  with pytest.raises(ValueError, match="teacher_workdir is None"):
    task.frozen_variables(model)
