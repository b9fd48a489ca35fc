"""End to end through the loop: a ViT teacher trained on digits, then a
student distilled with MaskedKD from the teacher's run (its checkpoint)."""

from configs import maskedkd_fashion_mnist
from flatsparse.train import loop
from flatsparse.train import restore


def test_student_learns_from_a_teacher_restored_from_its_run(tmp_path):
  config = maskedkd_fashion_mnist.get_config("tiny")
  teacher_dir = str(tmp_path / "teacher")
  teacher_metrics = loop.train_and_evaluate(config.teacher, teacher_dir)
  assert teacher_metrics["accuracy"] > 0.8  # 359 test digits
  student = config.base
  student.model.teacher_workdir = teacher_dir
  metrics, state = loop.train_and_evaluate(student, str(tmp_path / "student"),
                                           return_state=True)
  assert metrics["accuracy"] > 0.3  # chance 0.1; a half-masked teacher
  # The student's state holds the teacher's weights as restored, untrained.
  _, teacher_state = restore.restore_trained(teacher_dir)
  for name in ("pos_embedding", "cls"):
    assert (state.frozen["teacher"][name] == teacher_state.params[name]).all()
