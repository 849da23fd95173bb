"""Client-side feature assembly: candidate + private user features -> one row per candidate.

Runs on the device of ONE client (vmap lifts it to a cohort). It is the only place where the
user's private attributes and private history meet the public item features.

A client's examples come as S candidate lists of K slots (S = the cross-fitting folds when
training, 1 when serving); list-relative features (standardised recall score, rank) are computed
within each list.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from pprsf_jax.types import ItemCatalogue

NUM_LIST_FEATURES = 6  # standardised recall score, rank, genre affinity, popularity, 2 neighbour scores


class ItemTable(NamedTuple):
  """Static public item features (the catalogue), shipped once."""

  features: jax.Array  # [M, F_i] float32: genres, standardised year, year known
  genres: jax.Array  # [M, G] float32 multi-hot (also inside `features`; kept for the affinity)


class ClientExamples(NamedTuple):
  """One client's ranking examples (a cohort's stacked on a leading client axis)."""

  items: jax.Array  # [S, K] int32 candidate ids; -1 marks padding
  recall_scores: jax.Array  # [S, K] float32 recall score of each candidate, best first
  popularity: jax.Array  # [S, K] float32 standardised log public count, sent with the candidate
  neighbor_scores: jax.Array  # [S, K, 2] float32 similarity of the candidate to the client's history
  labels: jax.Array  # [S, K] float32 1 = the client interacted with the candidate
  mask: jax.Array  # [S, K] float32 1 = a real candidate the client may train on / rank
  user_features: jax.Array  # [F_u] float32 private attributes
  profile: jax.Array  # [S, G + 1] float32 genre shares of the client's history, log(1 + length)


def make_item_table(catalogue: ItemCatalogue) -> ItemTable:
  features = np.concatenate(
      [catalogue.genres, catalogue.year[:, None], catalogue.year_known[:, None]],
      axis=1).astype(np.float32)
  return ItemTable(features=jnp.asarray(features), genres=jnp.asarray(catalogue.genres))


def standardised_log_counts(counts: np.ndarray) -> np.ndarray:
  """[M] float32 log(1 + count), standardised over the catalogue (scale-free across logs)."""
  log_count = np.log1p(counts)
  return ((log_count - log_count.mean()) / max(float(log_count.std()), 1e-6)).astype(np.float32)


def num_features(num_user_features: int, item_table: ItemTable) -> int:
  genres = item_table.genres.shape[1]
  return num_user_features + (genres + 1) + item_table.features.shape[1] + NUM_LIST_FEATURES


def _list_features(items, recall_scores, popularity, neighbor_scores, mask, profile, user_features,
                   item_table: ItemTable) -> jax.Array:
  """[K, F] feature rows of one candidate list (padding rows are finite zeros)."""
  safe_items = jnp.clip(items, 0)
  genres = item_table.genres[safe_items]
  # Recall scores are standardised within the list: their scale differs between recall models
  # (the cross-fitted ones and the serving one), their order does not.
  count = jnp.maximum(jnp.sum(mask), 1.0)
  scores = jnp.where(mask > 0, recall_scores, 0.0)
  mean = jnp.sum(scores) / count
  std = jnp.sqrt(jnp.sum(mask * (scores - mean) ** 2) / count + 1e-6)
  standardised = mask * (scores - mean) / std
  # Position among the list's real candidates, in [0, 1): independent of trailing padding.
  rank = (jnp.cumsum(mask) - mask) / count
  affinity = genres @ profile[:-1] / jnp.maximum(jnp.sum(genres, -1), 1.0)
  length = items.shape[0]
  rows = jnp.concatenate([
      jnp.broadcast_to(user_features, (length, user_features.shape[0])),
      jnp.broadcast_to(profile, (length, profile.shape[0])),
      item_table.features[safe_items],
      standardised[:, None], rank[:, None], affinity[:, None], popularity[:, None],
      neighbor_scores,
  ], axis=1)
  return rows * mask[:, None]


def client_features(examples: ClientExamples, item_table: ItemTable) -> jax.Array:
  """[S * K, F] float32 feature rows for one client's candidate lists, flattened list-major."""
  rows = jax.vmap(_list_features, in_axes=(0, 0, 0, 0, 0, 0, None, None))(
      examples.items, examples.recall_scores, examples.popularity, examples.neighbor_scores,
      examples.mask, examples.profile, examples.user_features, item_table)
  return rows.reshape(-1, rows.shape[-1])
