"""Knowledge distillation of vision transformers; MaskedKD.

* ``masked_kd_outputs``: one distillation forward pass whose teacher sees
  only the patches the student's last-layer class token attends to most
  (or random ones, or the teacher's own choice, or all of them).
* ``Distiller``: the ``distillation`` task's model (student + teacher).
* Selection: ``keep_count``, ``class_attention``, ``top_patches``,
  ``random_patches``; loss: ``distillation_loss``, ``distillation_terms``
  (soft KL at temperature tau, or DeiT's hard form; distillation token).
"""

from flatsparse.distill.loss import distillation_loss
from flatsparse.distill.loss import distillation_terms
from flatsparse.distill.loss import KD_KINDS
from flatsparse.distill.masked_kd import check_pair
from flatsparse.distill.masked_kd import Distiller
from flatsparse.distill.masked_kd import masked_kd_outputs
from flatsparse.distill.selection import class_attention
from flatsparse.distill.selection import keep_count
from flatsparse.distill.selection import random_patches
from flatsparse.distill.selection import SELECTIONS
from flatsparse.distill.selection import top_patches

__all__ = [
    "Distiller", "KD_KINDS", "SELECTIONS", "check_pair", "class_attention",
    "distillation_loss", "distillation_terms", "keep_count",
    "masked_kd_outputs", "random_patches", "top_patches",
]
