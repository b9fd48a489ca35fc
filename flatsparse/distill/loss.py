"""The knowledge-distillation loss of MaskedKD (DeiT's soft and hard forms).

Soft (Hinton et al.; MaskedKD's default, ``tau = 1``, ``alpha = 0.5``)::

  L = (1 - alpha) * CE(s, y)
      + alpha * tau^2 * mean_b KL(softmax(t_b / tau) || softmax(s_b / tau))

the KL summed over classes and averaged over the batch (the reference's
``KLDivLoss(reduction='batchmean')``). Hard (DeiT): the second term is
``CE(s, argmax t)``. With DeiT's distillation token the student gives
``(class_logits, distillation_logits)``: the first term reads the class
head, the second the distillation head.

References:
  Hinton et al., "Distilling the knowledge in a neural network",
  arXiv:1503.02531; Touvron et al., DeiT, arXiv:2012.12877; Son et al.,
  MaskedKD, ECCV 2024, arXiv:2302.10494.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from flatsparse import validation

__all__ = ["KD_KINDS", "distillation_terms", "distillation_loss"]

KD_KINDS = ("soft", "hard")


def _heads(student_logits: Any) -> tuple[jax.Array, jax.Array]:
  if isinstance(student_logits, (tuple, list)):
    if len(student_logits) != 2:
      raise ValueError("student_logits must be an array or a pair (class, "
                       f"distillation), got {len(student_logits)} arrays.")
    return student_logits[0], student_logits[1]
  return student_logits, student_logits


def distillation_terms(student_logits: Any, teacher_logits: jax.Array,
                       labels: jax.Array, *, temperature: float = 1.0,
                       kind: str = "soft") -> tuple[jax.Array, jax.Array]:
  """Per-example ``(CE(s, y), KD term)`` ``(batch,)`` float32 each; the
  loss is ``(1 - alpha) * mean(CE) + alpha * mean(KD)``.

  Raises:
    ValueError: unknown kind, ``temperature <= 0`` or mismatched shapes.
  """
  validation.check_choice("kind", kind, KD_KINDS)
  if not temperature > 0:
    raise ValueError(f"temperature must be > 0, got {temperature!r}.")
  class_logits, kd_logits = _heads(student_logits)
  ce = optax.softmax_cross_entropy_with_integer_labels(
      class_logits.astype(jnp.float32), labels)
  if teacher_logits.shape != kd_logits.shape:
    raise ValueError(f"teacher_logits {teacher_logits.shape} and student "
                     f"logits {kd_logits.shape} must have the same shape.")
  teacher = jax.lax.stop_gradient(teacher_logits.astype(jnp.float32))
  kd_logits = kd_logits.astype(jnp.float32)
  if kind == "soft":
    log_p_teacher = jax.nn.log_softmax(teacher / temperature)
    log_p_student = jax.nn.log_softmax(kd_logits / temperature)
    kd = temperature ** 2 * jnp.sum(
        jnp.exp(log_p_teacher) * (log_p_teacher - log_p_student), axis=-1)
  else:
    kd = optax.softmax_cross_entropy_with_integer_labels(
        kd_logits, jnp.argmax(teacher, -1))
  return ce, kd


def distillation_loss(student_logits: Any, teacher_logits: jax.Array | None,
                      labels: jax.Array, *, temperature: float = 1.0,
                      alpha: float = 0.5, kind: str = "soft") -> jax.Array:
  """The scalar loss of the module docstring (float32).

  Args:
    student_logits: ``(batch, classes)``, or the pair of a student with a
      distillation token.
    teacher_logits: ``(batch, classes)``; None with ``alpha = 0`` (no KD).
    labels: ``(batch,)`` int labels.
    temperature: ``tau > 0``.
    alpha: weight of the distillation term, in [0, 1].
    kind: ``'soft'`` or ``'hard'``.

  Raises:
    ValueError: a knob out of range, or mismatched shapes (names them).
  """
  if not 0.0 <= alpha <= 1.0:
    raise ValueError(f"alpha must be in [0, 1], got {alpha!r}.")
  if alpha == 0.0:
    class_logits, _ = _heads(student_logits)
    return optax.softmax_cross_entropy_with_integer_labels(
        class_logits.astype(jnp.float32), labels).mean()
  if teacher_logits is None:
    raise ValueError(f"teacher_logits is None with alpha={alpha}; only "
                     "alpha=0 (no distillation) needs no teacher.")
  ce, kd = distillation_terms(student_logits, teacher_logits, labels,
                              temperature=temperature, kind=kind)
  return (1.0 - alpha) * ce.mean() + alpha * kd.mean()
