"""MaskedKD: the teacher sees only the patches the student attends to.

One distillation forward pass (:func:`masked_kd_outputs`)::

  s, A   = student(x)                 # train mode; A: last layer's softmax
  idx    = top_k(mean_h A[:, h, 0, patches], k = floor(r * P))   # per example
  t      = teacher(x, patch_indices=idx)    # inference mode, no gradient

The teacher gathers the kept patch tokens after its patch embedding and
position embeddings (``ViT(..., patch_indices=...)``), plus its class token:
no architecture change, any ViT size, its cost roughly ``r`` of a full pass.
Only the student's last layer writes its attention out; every other layer,
and the whole teacher, run ``jax.nn.dot_product_attention``.
``selection`` picks the ablations: ``'random'`` patches, the ``'teacher'``'s
own last-layer attention (a full teacher pass first), or ``'all'`` (full KD).

:class:`Distiller` is the model of the loop's ``distillation`` task: the
student (trained, under ``params['student']``) and the teacher's definition
and knobs; the teacher's weights are the task's frozen variables.

References:
  Son et al., "The role of masking for efficient supervised knowledge
  distillation of vision transformers" (MaskedKD), ECCV 2024,
  arXiv:2302.10494; Touvron et al., DeiT, arXiv:2012.12877.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

from flatsparse import validation
from flatsparse.distill import loss as loss_lib
from flatsparse.distill import selection as selection_lib
from flatsparse.models import ViT

__all__ = ["Distiller", "check_pair", "masked_kd_outputs"]


def check_pair(student: nn.Module, teacher: nn.Module, selection: str,
               keep_ratio: float) -> None:
  """The knobs and the student/teacher pair fit (errors name the values).

  Raises:
    ValueError: unknown selection, ``keep_ratio`` outside (0, 1], a
      non-ViT teacher, a token-less student for ``'student'`` selection, or
      patch sizes that differ.
  """
  validation.check_choice("selection", selection, selection_lib.SELECTIONS)
  selection_lib.keep_count(1 << 20, keep_ratio)  # range check only
  if not isinstance(teacher, ViT):
    raise ValueError(f"The teacher must be a flatsparse.models.ViT, got "
                     f"{type(teacher).__name__}.")
  if not isinstance(student, ViT):
    raise ValueError(f"The student must be a flatsparse.models.ViT, got "
                     f"{type(student).__name__}.")
  if student.patch_size != teacher.patch_size:
    raise ValueError(
        f"The teacher's patch size {teacher.patch_size} differs from the "
        f"student's {student.patch_size}; MaskedKD selects the same patches "
        "in both, so they must be equal.")
  if selection == "student" and student.classifier != "token":
    raise ValueError("selection 'student' reads the student's class-token "
                     "attention; the student has classifier="
                     f"{student.classifier!r} (allowed: 'token').")
  if selection == "teacher" and teacher.classifier != "token":
    raise ValueError("selection 'teacher' reads the teacher's class-token "
                     "attention; the teacher has classifier="
                     f"{teacher.classifier!r} (allowed: 'token').")


def _num_patches(model: ViT, images: jax.Array) -> int:
  _, height, width, _ = images.shape
  return (height // model.patch_size) * (width // model.patch_size)


def masked_kd_outputs(student_apply: Any, student: ViT, teacher: ViT,
                      teacher_params: Any, images: jax.Array, *,
                      keep_ratio: float = 0.5, selection: str = "student",
                      key: jax.Array | None = None) -> dict[str, Any]:
  """The student's and the (masked) teacher's logits of one batch.

  Args:
    student_apply: ``f(images, **call_kwargs)`` applying the student in
      train mode with its variables bound (the caller owns its params,
      rngs and mutable collections); called once with
      ``return_attention='last'`` for ``'student'`` selection.
    student: The student's definition (patch size, prefix tokens, heads).
    teacher: The teacher's definition.
    teacher_params: Its ``params``.
    images: ``(batch, H, W, C)``.
    keep_ratio: ``r`` in (0, 1]: the teacher sees ``floor(r * P)`` patches.
    selection: One of ``SELECTIONS``.
    key: PRNG key (``'random'`` selection only).

  Returns:
    ``{'student': logits (a pair with a distillation token), 'teacher':
    logits (no gradient), 'patches': (batch, k) int32 kept indices, or None
    for 'all'}``.
  """
  check_pair(student, teacher, selection, keep_ratio)
  heads = {"separate_heads": True} if student.distillation_token else {}
  # One patch grid: check_pair makes the patch sizes equal.
  num_patches = _num_patches(teacher, images)
  count = selection_lib.keep_count(num_patches, keep_ratio)
  patches = None
  if selection == "student":
    student_logits, maps = student_apply(images, return_attention="last",
                                         **heads)
    patches = selection_lib.top_patches(
        selection_lib.class_attention(maps[-1], student.num_prefix_tokens),
        count)
  else:
    student_logits = student_apply(images, **heads)
  teacher_vars = {"params": jax.lax.stop_gradient(teacher_params)}
  if selection == "random":
    if key is None:
      raise ValueError("selection 'random' needs a PRNG key.")
    patches = selection_lib.random_patches(key, images.shape[0], num_patches,
                                           count)
  elif selection == "teacher":
    _, maps = teacher.apply(teacher_vars, images, return_attention="last")
    patches = selection_lib.top_patches(
        selection_lib.class_attention(maps[-1], teacher.num_prefix_tokens),
        count)
  teacher_logits = teacher.apply(teacher_vars, images, patch_indices=patches)
  return {"student": student_logits,
          "teacher": jax.lax.stop_gradient(teacher_logits),
          "patches": patches}


class Distiller(nn.Module):
  """A student trained from a teacher (the ``distillation`` task's model).

  Calling it runs the student (``params['student']``): what evaluation and
  every optimizer see. The teacher is only a definition here; its weights
  are the task's frozen variables (``TrainState.frozen['teacher']``).

  Attributes:
    student: A ViT (with a distillation token for DeiT-style training).
    teacher: A ViT with the student's patch size.
    teacher_workdir: The platform workdir whose latest checkpoint holds the
      teacher's weights (None: the caller gives them).
    keep_ratio: ``r``.
    selection: One of ``SELECTIONS``.
    temperature: ``tau``.
    alpha: Weight of the distillation term (0: no KD; the teacher is then
      never run).
    kind: ``'soft'`` or ``'hard'``.
  """

  student: nn.Module
  teacher: nn.Module
  teacher_workdir: str | None = None
  keep_ratio: float = 0.5
  selection: str = "student"
  temperature: float = 1.0
  alpha: float = 0.5
  kind: str = "soft"

  def __post_init__(self):
    check_pair(self.student, self.teacher, self.selection, self.keep_ratio)
    validation.check_choice("kind", self.kind, loss_lib.KD_KINDS)
    if not 0.0 <= self.alpha <= 1.0:
      raise ValueError(f"alpha must be in [0, 1], got {self.alpha!r}.")
    if not self.temperature > 0:
      raise ValueError(f"temperature must be > 0, got {self.temperature!r}.")
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False, **kwargs) -> Any:
    """The student's output (``kwargs`` go to the ViT call)."""
    return self.student(x, train=train, **kwargs)
