"""Evaluation metrics."""

from pprsf_jax.metrics.ranking import evaluate_lists, hit_matrix, per_user_metrics

__all__ = ["evaluate_lists", "hit_matrix", "per_user_metrics"]
