"""Training platform: state, generic steps, checkpoints, metrics, the loop.

Importing it registers the built-in tasks (``classification``,
``language_modeling``, ``concept_bottleneck``, ``distillation``,
``forward_forward``).
"""

from flatsparse.train import concept_bottleneck
from flatsparse.train import config_schema
from flatsparse.train import distillation
from flatsparse.train import faults
from flatsparse.train import forward_forward
from flatsparse.train import language_modeling
from flatsparse.train import methods
from flatsparse.train import tasks
from flatsparse.train.batch_norm import recalibrate_batch_stats
from flatsparse.train.builders import build_method
from flatsparse.train.builders import build_model
from flatsparse.train.builders import build_optimizer
from flatsparse.train.builders import MODELS
from flatsparse.train.builders import OPTIMIZERS
from flatsparse.train.builders import register_model
from flatsparse.train.builders import register_optimizer
from flatsparse.train.checkpoint import Checkpointer
from flatsparse.train.config_schema import complete as complete_config
from flatsparse.train.faults import NonFiniteLossError
from flatsparse.train.faults import Preempted
from flatsparse.train.language_modeling import LanguageModeling
from flatsparse.train.loop import train_and_evaluate
from flatsparse.train.loop import validate_config
from flatsparse.train.methods import FinalizeContext
from flatsparse.train.methods import Method
from flatsparse.train.methods import MethodPart
from flatsparse.train.methods import register_method_part
from flatsparse.train.metrics import MetricWriter
from flatsparse.train.metrics import Progress
from flatsparse.train.metrics import read_metrics
from flatsparse.train.metrics import sparsity_scalars
from flatsparse.train.restore import restore_trained
from flatsparse.train.sharpness import sharpness
from flatsparse.train.state import create_train_state
from flatsparse.train.state import TrainState
from flatsparse.train.step import make_eval_step
from flatsparse.train.step import make_train_step
from flatsparse.train.tasks import Classification
from flatsparse.train.tasks import register_task
from flatsparse.train.tasks import Task

__all__ = [
    "recalibrate_batch_stats", "build_method", "build_model",
    "build_optimizer", "MODELS", "methods", "tasks", "Method", "MethodPart",
    "FinalizeContext", "register_method_part", "Task", "Classification",
    "LanguageModeling", "language_modeling", "concept_bottleneck",
    "distillation", "forward_forward", "restore_trained",
    "register_task",
    "OPTIMIZERS",
    "register_model", "register_optimizer", "Checkpointer", "config_schema",
    "complete_config", "faults", "NonFiniteLossError", "Preempted",
    "train_and_evaluate", "validate_config", "MetricWriter", "Progress",
    "read_metrics", "sparsity_scalars", "sharpness", "create_train_state",
    "TrainState",
    "make_eval_step", "make_train_step",
]
