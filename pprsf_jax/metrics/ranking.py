"""Top-k accuracy metrics over recommendation lists (full-ranking protocol).

Users without any relevant item in the evaluated period are left out of the averages, as
RecBole does.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from pprsf_jax.types import Interactions


def hit_matrix(lists: np.ndarray, truth: Interactions, num_items: int) -> tuple[np.ndarray, np.ndarray]:
  """hits [U, k] bool (list entry is relevant) and relevant-item counts [U]."""
  users = np.repeat(np.arange(lists.shape[0]), lists.shape[1]).reshape(lists.shape)
  hits = truth.contains(users, np.where(lists >= 0, lists, 0), num_items)
  hits &= lists >= 0
  return hits, np.bincount(truth.user, minlength=lists.shape[0])


def per_user_metrics(hits: np.ndarray, num_relevant: np.ndarray) -> dict[str, np.ndarray]:
  """Per-user Recall/NDCG/MRR/Hit/Precision at k = hits.shape[1] (NaN for users with no relevant item)."""
  k = hits.shape[1]
  discounts = 1.0 / np.log2(np.arange(2, k + 2))
  dcg = (hits * discounts).sum(1)
  ideal = np.cumsum(discounts)[np.clip(np.minimum(num_relevant, k) - 1, 0, k - 1)]
  first = np.where(hits.any(1), hits.argmax(1) + 1, np.inf)
  has = num_relevant > 0
  nan = np.full(hits.shape[0], np.nan)
  safe = np.maximum(num_relevant, 1)
  return {
      f"recall@{k}": np.where(has, hits.sum(1) / safe, nan),
      f"ndcg@{k}": np.where(has, dcg / ideal, nan),
      f"mrr@{k}": np.where(has, 1.0 / first, nan),
      f"hit@{k}": np.where(has, hits.any(1).astype(float), nan),
      f"precision@{k}": np.where(has, hits.sum(1) / k, nan),
  }


def evaluate_lists(lists: np.ndarray, truth: Interactions, num_items: int) -> dict[str, float]:
  """Mean metrics of [U, k] lists against the relevant items in `truth`, plus catalogue coverage."""
  hits, num_relevant = hit_matrix(lists, truth, num_items)
  results = {name: float(np.nanmean(values)) for name, values in per_user_metrics(hits, num_relevant).items()}
  k = lists.shape[1]
  results[f"coverage@{k}"] = float(np.unique(lists[lists >= 0]).size / num_items)
  return results


def compare_per_user(federated_user: np.ndarray, local_user: np.ndarray) -> dict[str, float | int]:
  """P_FL against each client's own P_i, user by user ([U] metric values, users with test
  items only): shares of wins, ties and losses.

  Ties are common (a user's few test items: both lists often hit the same ones, or none), so
  the sign test asks whether P_FL wins more often than it loses among the users where the two
  differ (two-sided binomial test, p = 0.5).
  """
  wins = int(np.sum(federated_user > local_user))
  losses = int(np.sum(federated_user < local_user))
  count = max(len(federated_user), 1)
  return {"clients": len(federated_user),
          "fl_beats_local_share": wins / count,
          "fl_ties_local_share": (len(federated_user) - wins - losses) / count,
          "fl_loses_local_share": losses / count,
          "fl_beats_local_among_differing": wins / max(wins + losses, 1),
          "sign_test_p": (float(stats.binomtest(wins, wins + losses).pvalue)
                          if wins + losses else 1.0)}
