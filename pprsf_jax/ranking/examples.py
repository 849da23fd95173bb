"""Client-side preparation of ranking examples from the candidates a client received.

In deployment each client does this alone with its own data; the simulator does it for every
client at once with vectorised NumPy (no Python loop over clients). Inputs include private
interactions, so only client-side code calls it.
"""

from __future__ import annotations

import numpy as np

from pprsf_jax.ranking.features import ClientExamples, standardised_log_counts
from pprsf_jax.recall.item_knn import ItemNeighbors
from pprsf_jax.types import Candidates, Interactions


def history_profile(history: Interactions, genres: np.ndarray, num_users: int) -> np.ndarray:
  """[N, G + 1] float32: genre shares of each user's history, then log(1 + history length)."""
  totals = np.zeros((num_users, genres.shape[1]), np.float64)
  np.add.at(totals, history.user, genres[history.item])
  shares = totals / np.maximum(totals.sum(1, keepdims=True), 1e-9)
  length = np.bincount(history.user, minlength=num_users)
  return np.concatenate([shares, np.log1p(length)[:, None]], axis=1).astype(np.float32)


def neighbor_scores(candidates: np.ndarray, neighbors: ItemNeighbors, history: Interactions,
                    num_items: int) -> np.ndarray:
  """[N, K, 2] float32: per candidate, log(1 + summed) and max similarity of its neighbours that
  are in the user's own history (private items included). Computed on the client."""
  neighbor_items = neighbors.items[np.maximum(candidates, 0)]  # [N, K, P]
  similarity = neighbors.similarity[np.maximum(candidates, 0)]
  users = np.broadcast_to(np.arange(candidates.shape[0])[:, None, None], neighbor_items.shape)
  matched = history.contains(users, np.maximum(neighbor_items, 0), num_items) & (neighbor_items >= 0)
  matched &= (candidates >= 0)[:, :, None]
  weights = np.where(matched, similarity, 0.0)
  return np.stack([np.log1p(weights.sum(-1)), weights.max(-1, initial=0.0)], -1).astype(np.float32)


def build_examples(candidates: Candidates, user_features: np.ndarray, history: Interactions,
                   positives: Interactions, genres: np.ndarray, neighbors: ItemNeighbors,
                   public_counts: np.ndarray) -> ClientExamples:
  """Ranking examples of every client for one candidate list each: fields [N, 1, K, ...].

  Args:
    candidates: the recall output each client received.
    user_features: [N, F_u] the clients' private attributes.
    history: interactions the client already had (public and private): they form its profile and
      are never ranked (the server cannot filter the private ones; the client does).
    positives: interactions that label a candidate 1 (empty when only ranking, not training).
    genres: [M, G] public item genres.
    neighbors: public item neighbour lists, shipped with the candidates.
    public_counts: [M] public interaction counts of the log the recall model was trained on
      (each candidate's popularity is shipped with it).
  """
  num_users, k = candidates.items.shape
  num_items = genres.shape[0]
  users = np.repeat(np.arange(num_users), k).reshape(num_users, k)
  real = candidates.items >= 0
  items = np.where(real, candidates.items, 0)
  known = history.contains(users, items, num_items)
  labels = positives.contains(users, items, num_items)
  one_list = lambda array: array[:, None]  # [N, ...] -> [N, 1, ...]: a single list per client
  return ClientExamples(
      items=one_list(candidates.items.astype(np.int32)),
      recall_scores=one_list(np.where(real, candidates.scores, 0.0).astype(np.float32)),
      popularity=one_list(
          np.where(real, standardised_log_counts(public_counts)[items], 0.0).astype(np.float32)),
      neighbor_scores=one_list(neighbor_scores(candidates.items, neighbors, history, num_items)),
      labels=one_list((labels & real).astype(np.float32)),
      mask=one_list((real & ~known).astype(np.float32)),
      user_features=user_features.astype(np.float32),
      profile=one_list(history_profile(history, genres, num_users)),
  )


def stack_lists(per_list: list[ClientExamples]) -> ClientExamples:
  """Concatenates several single-list example sets along the list axis: [N, S, K, ...]."""
  first = per_list[0]
  return first._replace(**{
      field: np.concatenate([getattr(examples, field) for examples in per_list], axis=1)
      for field in ClientExamples._fields if field != "user_features"})
