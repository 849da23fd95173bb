"""Evaluation metrics: accuracy (`ranking`) and beyond accuracy (`beyond_accuracy`)."""

from pprsf_jax.metrics.beyond_accuracy import (beyond_accuracy, exposure_gini,
                                               intra_list_diversity, novelty)
from pprsf_jax.metrics.ranking import (compare_per_user, evaluate_lists, hit_matrix,
                                       per_user_metrics)

__all__ = ["beyond_accuracy", "compare_per_user", "evaluate_lists", "exposure_gini", "hit_matrix",
           "intra_list_diversity", "novelty", "per_user_metrics"]
