"""Content-based recall: items are described by their public catalogue features, users by the
features of what they interacted with publicly.

Item i's vector is its IDF-weighted genre (and release-period) profile, L2-normalised; a user's
vector is the mean of the vectors of its public history items, so score(u, i) is the mean
cosine similarity of i to u's history. Nothing about an item's own interactions enters its
vector: an item nobody has interacted with yet is recalled as readily as a popular one with the
same features (the item side of cold start).

A small log-popularity bias breaks the many ties between items with identical features and is
all that scores a user with no public history (a zero vector), who thus gets popularity recall.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from pprsf_jax.recall.model import RecallParams
from pprsf_jax.recall.popularity import item_counts
from pprsf_jax.types import Interactions, ItemCatalogue

# Release periods: the catalogue's known (standardised) years fall into this many quantile bins.
NUM_YEAR_BINS = 4


def _idf(features: np.ndarray) -> np.ndarray:
  """[F] smoothed inverse document frequency of each binary feature over the catalogue."""
  carrying = features.sum(0)
  return (np.log((1.0 + features.shape[0]) / (1.0 + carrying)) + 1.0).astype(np.float32)


def item_features(catalogue: ItemCatalogue) -> np.ndarray:
  """[M, G + NUM_YEAR_BINS] float32 L2-normalised IDF-weighted genre and release-period profile.

  Rare genres weigh more than common ones (IDF), as in text retrieval: sharing "Film-Noir" says
  more about two films than sharing "Drama". An item without known year has no period bin.

  Example:
    >>> import numpy as np
    >>> from pprsf_jax.types import ItemCatalogue
    >>> catalogue = ItemCatalogue(genres=np.eye(3, dtype=np.float32),
    ...                           year=np.zeros(3, np.float32), year_known=np.zeros(3, np.float32))
    >>> np.linalg.norm(item_features(catalogue), axis=1).round(3).tolist()
    [1.0, 1.0, 1.0]
  """
  genres = (np.asarray(catalogue.genres) > 0).astype(np.float32)
  known = np.asarray(catalogue.year_known) > 0
  year = np.asarray(catalogue.year, np.float32)
  periods = np.zeros((genres.shape[0], NUM_YEAR_BINS), np.float32)
  if known.any():
    edges = np.quantile(year[known], np.linspace(0, 1, NUM_YEAR_BINS + 1)[1:-1])
    bins = np.searchsorted(edges, year, side="right")
    periods[np.flatnonzero(known), bins[known]] = 1.0
  binary = np.concatenate([genres, periods], axis=1)
  weighted = binary * _idf(binary)[None, :]
  norms = np.linalg.norm(weighted, axis=1, keepdims=True)
  return (weighted / np.maximum(norms, 1e-12)).astype(np.float32)


def history_means(interactions: Interactions, vectors: np.ndarray, num_users: int) -> np.ndarray:
  """[N, D] mean of `vectors` [M, D] over each user's interactions (zero for users with none)."""
  sums = np.zeros((num_users, vectors.shape[1]), np.float64)
  np.add.at(sums, interactions.user, vectors[interactions.item])
  counts = np.bincount(interactions.user, minlength=num_users)
  return (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)


def train_content(interactions: Interactions, catalogue: ItemCatalogue, num_users: int,
                  num_items: int, *, popularity_weight: float) -> RecallParams:
  """Content-based recall from public interactions and the item catalogue.

  Args:
    interactions: public (user, item) interactions: the users' profiles.
    catalogue: public item features.
    num_users: N.
    num_items: M.
    popularity_weight: the bias of the most interacted-with item; the others get it scaled by
      log(1 + count) / log(1 + max count). Cosine scores lie in [0, 1], so a weight well below
      1 only reorders items of (nearly) equal similarity.

  Returns:
    RecallParams with user [N, F], item [M, F] and the popularity bias [M].
  """
  vectors = item_features(catalogue)
  if vectors.shape[0] != num_items:
    raise ValueError(f"content: catalogue has {vectors.shape[0]} items, expected {num_items}")
  popularity = np.log1p(item_counts(interactions, num_items))
  popularity = popularity / max(float(popularity.max(initial=0.0)), 1e-12)
  return RecallParams(
      user=jnp.asarray(history_means(interactions, vectors, num_users)),
      item=jnp.asarray(vectors),
      item_bias=jnp.asarray(popularity_weight * popularity, jnp.float32),
  )
