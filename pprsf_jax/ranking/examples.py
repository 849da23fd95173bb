"""Client-side preparation of ranking examples from the candidates a client received.

In deployment each client does this alone with its own data; the simulator does it for every
client at once with vectorised NumPy (no Python loop over clients). Inputs include private
interactions, so only client-side code calls it.
"""

from __future__ import annotations

import numpy as np

from pprsf_jax.ranking.features import ClientExamples
from pprsf_jax.types import Candidates, Interactions


def history_profile(history: Interactions, genres: np.ndarray, num_users: int) -> np.ndarray:
  """[N, G + 1] float32: genre shares of each user's history, then log(1 + history length)."""
  totals = np.zeros((num_users, genres.shape[1]), np.float64)
  np.add.at(totals, history.user, genres[history.item])
  shares = totals / np.maximum(totals.sum(1, keepdims=True), 1e-9)
  length = np.bincount(history.user, minlength=num_users)
  return np.concatenate([shares, np.log1p(length)[:, None]], axis=1).astype(np.float32)


def build_examples(candidates: Candidates, user_features: np.ndarray, history: Interactions,
                   positives: Interactions, genres: np.ndarray) -> ClientExamples:
  """Stacked [N, K] ranking examples.

  Args:
    candidates: the recall output each client received.
    user_features: [N, F_u] the clients' private attributes.
    history: interactions the client already had (public and private): they form its profile and
      are never ranked (the server cannot filter the private ones; the client does).
    positives: interactions that label a candidate 1 (empty when only ranking, not training).
    genres: [M, G] public item genres.
  """
  num_users, k = candidates.items.shape
  num_items = genres.shape[0]
  users = np.repeat(np.arange(num_users), k).reshape(num_users, k)
  real = candidates.items >= 0
  items = np.where(real, candidates.items, 0)
  known = history.contains(users, items, num_items)
  labels = positives.contains(users, items, num_items)
  return ClientExamples(
      items=candidates.items.astype(np.int32),
      recall_scores=np.where(real, candidates.scores, 0.0).astype(np.float32),
      labels=(labels & real).astype(np.float32),
      mask=(real & ~known).astype(np.float32),
      user_features=user_features.astype(np.float32),
      profile=history_profile(history, genres, num_users),
  )
