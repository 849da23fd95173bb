"""A planted federation at population scale (10^6 users × 10^5 items) in a compact ragged layout.

`generate_synthetic` draws every user's interactions from a softmax over the whole catalogue,
which needs an [N, M] logit matrix. Here the planted structure is a mixture: items belong to
taste clusters (an item's latent vector is its cluster centre plus noise) and carry a popularity
bias; a user's taste (from its private gender, age bucket and occupation, plus noise, as in
`generate_synthetic`) gives a softmax over clusters, each interaction draws a cluster from it and
then an item of that cluster with probability proportional to exp(popularity). Sampling is
inverse-CDF over [user chunk, clusters] and over one catalogue-long CDF, so memory is
O(users × clusters / chunks + interactions), never O(N × M).

Interactions are stored per user in CSR form (`offsets`, `items`): 8 bytes per interaction plus
a flag byte and a fold byte; 2·10^7 interactions are about 200 MB.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from pprsf_jax.data.dataset import AGE_BUCKET_EDGES, encode_attributes
from pprsf_jax.data.tables import GENRES
from pprsf_jax.types import Interactions, ItemCatalogue

NUM_OCCUPATIONS = 21  # as many as MovieLens-100K's vocabulary, so feature widths are comparable


class ScaleFederation(NamedTuple):
  """Every client's data in host memory: attributes dense, interactions ragged (CSR by user)."""

  user_features: np.ndarray  # [N, F] float32 encoded private attributes
  catalogue: ItemCatalogue  # [M, ...] public item metadata
  offsets: np.ndarray  # [N + 1] int64: user u's interactions are items[offsets[u]:offsets[u+1]]
  items: np.ndarray  # [R] int32 item ids, grouped by user
  private: np.ndarray  # [R] bool: stays on the client
  fold: np.ndarray  # [R] int8 cross-fitting fold (fold 0 labels ranking; recall never sees it)

  @property
  def num_users(self) -> int:
    return self.offsets.size - 1

  @property
  def num_items(self) -> int:
    return self.catalogue.genres.shape[0]

  def users_of_rows(self) -> np.ndarray:
    """[R] int32 the owner of each interaction."""
    return np.repeat(np.arange(self.num_users, dtype=np.int32), np.diff(self.offsets))

  def select(self, rows: np.ndarray) -> Interactions:
    """The interactions where `rows` ([R] bool) holds, as a flat (user, item) list."""
    return Interactions(self.users_of_rows()[rows], self.items[rows])

  def rows_of(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, local owner) of `users`' interactions, no Python loop per user: rows index the
    CSR arrays, local owner is the position of the row's user within `users`."""
    starts, ends = self.offsets[users], self.offsets[users + 1]
    lengths = ends - starts
    owner = np.repeat(np.arange(users.size, dtype=np.int32), lengths)
    first = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    rows = np.repeat(starts, lengths) + (np.arange(int(lengths.sum())) - np.repeat(first, lengths))
    return rows, owner


def _draw_categorical(cdf: np.ndarray, uniforms: np.ndarray, rows: np.ndarray) -> np.ndarray:
  """Inverse-CDF draws: uniforms[j] against row rows[j] of the row-wise CDFs [U, B]."""
  width = cdf.shape[1]
  # One sorted array: row r's CDF shifted by r, so a single searchsorted serves every row.
  shifted = (cdf + np.arange(cdf.shape[0])[:, None]).ravel()
  found = np.searchsorted(shifted, uniforms + rows, side="right")
  return np.minimum(found - rows * width, width - 1)


def generate_at_scale(num_users: int, num_items: int, *, interactions_per_user: int = 20,
                      seed: int = 0, num_clusters: int = 256, latent_dim: int = 16,
                      attribute_strength: float = 2.0, private_share: float = 0.2,
                      label_folds: int = 4,
                      user_chunk: int = 65_536) -> ScaleFederation:
  """Draws the federation; the same arguments always give the same arrays."""
  if num_users < 2 or num_items < num_clusters or interactions_per_user < 2:
    raise ValueError(f"generate_at_scale: need num_users >= 2 (got {num_users}), num_items >= "
                     f"num_clusters ({num_items} < {num_clusters}?) and interactions_per_user "
                     f">= 2 (got {interactions_per_user})")
  rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5CA1E]))
  n, m, d = num_users, num_items, latent_dim
  num_buckets = len(AGE_BUCKET_EDGES) + 1

  gender = rng.integers(0, 2, n).astype(np.int8)
  age = rng.integers(16, 70, n).astype(np.int32)
  bucket = np.searchsorted(AGE_BUCKET_EDGES, age, side="right")
  occupation = rng.integers(0, NUM_OCCUPATIONS, n).astype(np.int32)
  zip_region = rng.integers(0, 11, n)
  gender_taste, age_taste = rng.normal(size=(2, d)), rng.normal(size=(num_buckets, d))
  occupation_taste = rng.normal(size=(NUM_OCCUPATIONS, d))

  centres = rng.normal(size=(num_clusters, d))
  cluster = rng.integers(0, num_clusters, m)
  item_latent = centres[cluster] + 0.5 * rng.normal(size=(m, d))
  popularity = rng.normal(size=m)
  directions = rng.normal(size=(len(GENRES), d))
  genres = (item_latent @ directions.T > 1.5 * np.sqrt(d) / 2).astype(np.float32)
  genres[genres.sum(1) == 0, 0] = 1.0
  year = rng.normal(size=m).astype(np.float32)

  # Items grouped by cluster, with one catalogue-long CDF of exp(popularity) within each cluster.
  by_cluster = np.argsort(cluster, kind="stable")
  cluster_start = np.searchsorted(cluster[by_cluster], np.arange(num_clusters + 1))
  weight = np.exp(popularity[by_cluster] - popularity.max())
  running = np.cumsum(weight)
  before = np.concatenate([[0.0], running])[cluster_start[:-1]]
  total = running[cluster_start[1:] - 1] - before
  within_cdf = (running - np.repeat(before, np.diff(cluster_start))) / np.repeat(
      total, np.diff(cluster_start))

  counts = np.maximum(rng.poisson(interactions_per_user, n), 2).astype(np.int64)
  user_parts, item_parts = [], []
  for start in range(0, n, user_chunk):
    users = np.arange(start, min(start + user_chunk, n))
    taste = attribute_strength * (gender_taste[gender[users]] + age_taste[bucket[users]]
                                  + occupation_taste[occupation[users]]) / np.sqrt(3.0)
    taste += rng.normal(size=(users.size, d))
    logits = taste @ centres.T / np.sqrt(d)
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    cdf = np.cumsum(probabilities, 1)
    cdf /= cdf[:, -1:]
    owners = np.repeat(np.arange(users.size), counts[users])
    chosen_cluster = _draw_categorical(cdf, rng.random(owners.size), owners)
    lo, hi = cluster_start[chosen_cluster], cluster_start[chosen_cluster + 1]
    # Within the cluster: inverse CDF on its slice of the catalogue-long CDF.
    position = _search_segments(within_cdf, lo, hi, rng.random(owners.size))
    item = by_cluster[position].astype(np.int32)
    # The same item drawn twice by one user is one interaction.
    keys = np.unique((users[owners].astype(np.int64) * m) + item)
    user_parts.append((keys // m).astype(np.int32))
    item_parts.append((keys % m).astype(np.int32))
  user = np.concatenate(user_parts)
  items = np.concatenate(item_parts)
  offsets = np.concatenate([[0], np.cumsum(np.bincount(user, minlength=n))]).astype(np.int64)

  split_rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5CA1F]))
  private = split_rng.random(items.size) < private_share
  fold = split_rng.integers(0, label_folds, items.size).astype(np.int8)
  catalogue = ItemCatalogue(genres=genres, year=year, year_known=np.ones(m, np.float32))
  features = encode_attributes(age, gender, occupation, NUM_OCCUPATIONS, zip_region)
  return ScaleFederation(user_features=features, catalogue=catalogue, offsets=offsets,
                         items=items, private=private, fold=fold)


def _search_segments(cdf: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                     target: np.ndarray) -> np.ndarray:
  """For each draw j, the first index in [lo[j], hi[j]) whose value in `cdf` (increasing within
  every segment, ending at 1) exceeds target[j]: a vectorised binary search."""
  low, high = lo.copy(), hi - 1
  while True:
    active = low < high
    if not active.any():
      return low
    middle = (low + high) // 2
    go_right = active & (cdf[middle] <= target)
    low = np.where(go_right, middle + 1, low)
    high = np.where(active & ~go_right, middle, high)
