"""Client-side feature assembly: candidate + private user features -> one row per candidate.

Runs on the device of ONE client (vmap lifts it to a cohort). It is the only place where the
user's private attributes and private history meet the public item features.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from pprsf_jax.types import ItemCatalogue


class ItemTable(NamedTuple):
  """Public per-item features the server ships with the candidates."""

  features: jax.Array  # [M, F_i] float32: genres, year, year known, standardised log popularity
  genres: jax.Array  # [M, G] float32 multi-hot (also inside `features`; kept for the affinity)


class ClientExamples(NamedTuple):
  """One client's ranking examples (or a cohort's, stacked on a leading axis)."""

  items: jax.Array  # [L] int32 candidate ids; -1 marks padding
  recall_scores: jax.Array  # [L] float32 recall score of each candidate, best first
  neighbor_scores: jax.Array  # [L, 2] float32 similarity of the candidate to the client's history
  labels: jax.Array  # [L] float32 1 = the client interacted with the candidate
  mask: jax.Array  # [L] float32 1 = a real candidate the client may train on / rank
  user_features: jax.Array  # [F_u] float32 private attributes
  profile: jax.Array  # [G + 1] float32 genre shares of the client's own history, log(1 + length)


def make_item_table(catalogue: ItemCatalogue, public_counts: np.ndarray) -> ItemTable:
  """Item features from the catalogue and public interaction counts (both public)."""
  log_count = np.log1p(public_counts)
  popularity = (log_count - log_count.mean()) / max(float(log_count.std()), 1e-6)
  features = np.concatenate(
      [catalogue.genres, catalogue.year[:, None], catalogue.year_known[:, None],
       popularity[:, None]], axis=1).astype(np.float32)
  return ItemTable(features=jnp.asarray(features), genres=jnp.asarray(catalogue.genres))


def num_features(num_user_features: int, item_table: ItemTable) -> int:
  genres = item_table.genres.shape[1]
  return num_user_features + (genres + 1) + item_table.features.shape[1] + 3 + 2


def client_features(examples: ClientExamples, item_table: ItemTable) -> jax.Array:
  """[L, F] float32 feature rows for one client's candidates (padding rows are finite zeros)."""
  mask = examples.mask
  items = jnp.clip(examples.items, 0)
  item_features = item_table.features[items]
  genres = item_table.genres[items]
  # Recall scores are standardised within the client's list: their scale differs between recall
  # models (and between the stacked and the serving model), their order does not.
  count = jnp.maximum(jnp.sum(mask), 1.0)
  scores = jnp.where(mask > 0, examples.recall_scores, 0.0)
  mean = jnp.sum(scores) / count
  std = jnp.sqrt(jnp.sum(mask * (scores - mean) ** 2) / count + 1e-6)
  standardised = mask * (scores - mean) / std
  # Position among the client's real candidates, in [0, 1): independent of trailing padding.
  rank = (jnp.cumsum(mask) - mask) / count
  taste = examples.profile[:-1]
  affinity = genres @ taste / jnp.maximum(jnp.sum(genres, -1), 1.0)
  length = mask.shape[0]
  user = jnp.broadcast_to(examples.user_features, (length, examples.user_features.shape[0]))
  profile = jnp.broadcast_to(examples.profile, (length, examples.profile.shape[0]))
  rows = jnp.concatenate(
      [user, profile, item_features, standardised[:, None], rank[:, None], affinity[:, None],
       examples.neighbor_scores], axis=1)
  return rows * mask[:, None]
