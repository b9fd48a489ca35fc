"""End to end through the loop: a ViT teacher trained on digits, then a
student distilled with MaskedKD from the teacher's run (its checkpoint)."""

from configs import maskedkd_fashion_mnist
from flatsparse.train import loop
from flatsparse.train import restore


def _shorten(section, steps):
  # The tiny config's 300 teacher / 150 student steps cut to 200 / 100:
  # teacher 88%, student 47% on the digits test set (seed 0).
  section.steps = section.eval_every = section.checkpoint_every = steps
  section.log_every = steps // 10
  section.optimizer.warmup_steps = steps // 20


def test_student_learns_from_a_teacher_restored_from_its_run(tmp_path,
                                                            monkeypatch):
  loads = []
  make_loader = loop.make_loader

  def counted(dataset, batch_size):
    loads.append(dataset["name"])
    return make_loader(dataset, batch_size)

  monkeypatch.setattr(loop, "make_loader", counted)
  config = maskedkd_fashion_mnist.get_config("tiny")
  _shorten(config.teacher, 200)
  _shorten(config.base, 100)
  teacher_dir = str(tmp_path / "teacher")
  teacher_metrics = loop.train_and_evaluate(config.teacher, teacher_dir)
  assert teacher_metrics["accuracy"] > 0.8  # 359 test digits
  assert len(loads) == 1
  student = config.base
  student.model.teacher_workdir = teacher_dir
  metrics, state = loop.train_and_evaluate(student, str(tmp_path / "student"),
                                           return_state=True)
  assert metrics["accuracy"] > 0.3  # chance 0.1; a half-masked teacher
  # The student's data, and the teacher's once: its model (the Distiller's
  # builder) and its weights (the task's frozen variables) share that load.
  assert len(loads) == 3
  # The student's state holds the teacher's weights as restored, untrained.
  model, teacher_state = restore.restore_trained(teacher_dir)
  assert len(loads) == 3
  assert model.num_classes == restore.run_data(teacher_dir).num_classes == 10
  for name in ("pos_embedding", "cls"):
    assert (state.frozen["teacher"][name] == teacher_state.params[name]).all()
