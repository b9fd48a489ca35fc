r"""MaskedKD on Fashion-MNIST: a ViT teacher trained here, a smaller ViT
student distilled from it (experiments/maskedkd.py).

  python -m experiments.maskedkd --config=configs/maskedkd_fashion_mnist.py \
      --workdir=workdirs/maskedkd
Variants (`:variant` after the path):
  study    (default) the teacher (ViT, width 64, 4 layers, 4 heads, patch 4:
           49 patches of 28x28; 2,000 steps of 128), then students (width 32,
           2 layers, 2 heads; 1,000 steps): no KD, full KD, MaskedKD at
           r = 0.75 / 0.5 / 0.25, random patches at 0.5; 3 seeds; accuracy,
           teacher GFLOPs per image, teacher forward and whole-step times
           (sized for the 2-core CPU: under an hour)
  teacher  the teacher's train config alone (classification)
  student  one student's train config (task 'distillation', MaskedKD at
           r = 0.5); needs --config.model.teacher_workdir=<the teacher's run>
  tiny     the study on scikit-learn's digits (8x8, patch 2: 16 patches),
           tiny ViTs, 1 seed, few steps (what the tests run)
Data: Debian's dataset-fashion-mnist (apt install dataset-fashion-mnist);
CIFAR-10 through TFDS for users with the data: --config.teacher.dataset.name=
cifar10 and the same for --config.base.dataset.name.
"""

import ml_collections

from flatsparse.train import config_schema

VARIANTS = ("study", "teacher", "student", "tiny")
# name: (selection, keep_ratio, alpha); alpha 0 never runs the teacher.
STUDENTS = {
    "no_kd": ("all", 1.0, 0.0),
    "full_kd": ("all", 1.0, 0.5),
    "maskedkd_0.75": ("student", 0.75, 0.5),
    "maskedkd_0.5": ("student", 0.5, 0.5),
    "maskedkd_0.25": ("student", 0.25, 0.5),
    "random_0.5": ("random", 0.5, 0.5),
}


def _vit(hidden, layers, heads, patch):
  return ml_collections.ConfigDict(dict(
      name="vit", hidden_size=hidden, num_layers=layers, num_heads=heads,
      mlp_dim=2 * hidden, patch_size=patch))


def _train(dataset, model, steps, batch, lr):
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.dataset = ml_collections.ConfigDict(dict(name=dataset, normalize=True))
  c.model = model
  c.optimizer = ml_collections.ConfigDict(dict(
      name="adamw", learning_rate=lr, weight_decay=0.05, schedule="cosine",
      warmup_steps=steps // 20))
  c.steps = steps
  c.batch_size = batch
  c.log_every = max(1, steps // 10)
  c.eval_every = steps
  c.checkpoint_every = steps
  return c


def _student(c, tiny):
  student = _vit(16, 1, 2, 2) if tiny else _vit(32, 2, 2, 4)
  base = _train(c.teacher.dataset.name, ml_collections.ConfigDict(dict(
      name="distillation", student=student, teacher_workdir=None,
      keep_ratio=0.5, selection="student", temperature=1.0, alpha=0.5,
      kind="soft")), 150 if tiny else 1000, 64 if tiny else 128,
                1e-2 if tiny else 1e-3)
  base.task = "distillation"
  return base


def get_config(variant: str = "study") -> ml_collections.ConfigDict:
  if variant not in VARIANTS:
    raise ValueError(f"Unknown variant {variant!r}; allowed: "
                     f"{', '.join(VARIANTS)}.")
  tiny = variant == "tiny"
  c = ml_collections.ConfigDict()
  c.teacher = (_train("digits", _vit(32, 2, 2, 2), 300, 64, 1e-2) if tiny
               else _train("fashion_mnist_debian", _vit(64, 4, 4, 4), 2000,
                           128, 1e-3))
  if variant == "teacher":
    return config_schema.complete(c.teacher)
  c.base = _student(c, tiny)
  if variant == "student":
    return config_schema.complete(c.base)
  c.seeds = (0,) if tiny else (0, 1, 2)
  c.students = ("no_kd", "maskedkd_0.5") if tiny else tuple(STUDENTS)
  # Cost measurements: batch and repetitions of the timed teacher forward
  # and distillation step.
  c.timing_batch = 32 if tiny else 128
  c.timing_repeats = 3 if tiny else 20
  c.timing_ratios = (0.5,) if tiny else (0.75, 0.5, 0.25)
  config_schema.complete(c.teacher)
  return config_schema.complete(c)
