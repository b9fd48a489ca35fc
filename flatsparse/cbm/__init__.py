"""Concept bottleneck models: training modes, test-time intervention and
noisy concepts.

* ``ConceptBottleneck`` (g then f; soft / sigmoid / hard bottleneck;
  independent / sequential / joint), trained by the loop's
  ``concept_bottleneck`` task (``flatsparse.train.concept_bottleneck``).
* Intervention: ``concept_scores`` (RAND, UCP, LCP, CCTP, ECTP, EUDTP,
  entropy), ``intervention_curve(s)``, ``replacement_values``.
* Analysis: ``predict_concepts``, ``per_concept_accuracy``,
  ``susceptibility``.
* Data: ``flatsparse.data.concepts`` (label layout, synthetic generator,
  concept noise) and ``flatsparse.data.cub``.
"""

from flatsparse.cbm.analysis import explained_fraction
from flatsparse.cbm.analysis import per_concept_accuracy
from flatsparse.cbm.analysis import predict_concepts
from flatsparse.cbm.analysis import Susceptibility
from flatsparse.cbm.analysis import susceptibility
from flatsparse.cbm.criteria import class_entropy
from flatsparse.cbm.criteria import concept_scores
from flatsparse.cbm.criteria import CRITERIA
from flatsparse.cbm.intervention import BUDGETS
from flatsparse.cbm.intervention import corrected_values
from flatsparse.cbm.intervention import group_index
from flatsparse.cbm.intervention import intervention_curve
from flatsparse.cbm.intervention import intervention_curves
from flatsparse.cbm.intervention import replacement_values
from flatsparse.cbm.model import bottleneck_values
from flatsparse.cbm.model import BOTTLENECKS
from flatsparse.cbm.model import check_mode
from flatsparse.cbm.model import ConceptBottleneck
from flatsparse.cbm.model import MODES

__all__ = [
    "BOTTLENECKS", "BUDGETS", "CRITERIA", "MODES", "ConceptBottleneck",
    "Susceptibility", "bottleneck_values", "check_mode", "class_entropy",
    "concept_scores", "corrected_values", "explained_fraction", "group_index",
    "intervention_curve", "intervention_curves", "per_concept_accuracy",
    "predict_concepts", "replacement_values", "susceptibility",
]
