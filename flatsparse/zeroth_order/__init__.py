"""Zeroth-order optimization and ZIP (black-box prompt tuning).

* Estimators as optax transformations: ``zeroth_order_gradient`` (SPSA,
  Gaussian and sphere smoothing, coordinate differences; one- and
  two-sided; q directions in one batched query; exact query counts and a
  budget), ``queries_used``, ZIP's schedules ``zip_smoothing`` and
  ``zip_learning_rate``.
* ZIP: ``ZipPrompt`` (low rank with feature sharing, fixed random
  projections: dense, shared, or the reference's structured fastfood map
  over ``walsh_hadamard``) and ``intrinsic_clip`` (clip at ``sqrt(N)``).
"""

from flatsparse.zeroth_order.estimators import ESTIMATORS
from flatsparse.zeroth_order.estimators import queries_per_step
from flatsparse.zeroth_order.estimators import queries_used
from flatsparse.zeroth_order.estimators import zeroth_order_gradient
from flatsparse.zeroth_order.estimators import ZerothOrderState
from flatsparse.zeroth_order.estimators import zip_learning_rate
from flatsparse.zeroth_order.estimators import zip_smoothing
from flatsparse.zeroth_order.zip_prompt import intrinsic_clip
from flatsparse.zeroth_order.zip_prompt import num_numbers
from flatsparse.zeroth_order.zip_prompt import PROJECTIONS
from flatsparse.zeroth_order.zip_prompt import walsh_hadamard
from flatsparse.zeroth_order.zip_prompt import ZipPrompt

__all__ = [
    "ESTIMATORS", "PROJECTIONS", "ZerothOrderState", "ZipPrompt",
    "intrinsic_clip", "num_numbers", "queries_per_step", "queries_used",
    "walsh_hadamard", "zeroth_order_gradient", "zip_learning_rate",
    "zip_smoothing",
]
