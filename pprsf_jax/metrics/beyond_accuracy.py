"""Beyond-accuracy metrics of recommendation lists: diversity, novelty, exposure inequality.

All take [U, k] item lists (-1 marks an empty slot, which counts for nothing) and public
item facts only, so the server can report them.

* Intra-list diversity: mean over users of the mean pairwise genre distance (1 - cosine of the
  multi-hot genre vectors) between the items of the user's list (Ziegler et al., 2005).
* Novelty: mean self-information -log2 p(i) of the recommended items, p(i) the share of users
  whose (public, train) history holds i, smoothed as (count + 1) / (users + 1) so an item nobody
  saw has finite novelty (Zhou et al., 2010).
* Exposure Gini: the Gini coefficient of how often each catalogue item is recommended, over
  every item (never-recommended ones included): 0 when all are shown equally, (M - 1) / M when
  one item takes every slot.
"""

from __future__ import annotations

import numpy as np


def intra_list_diversity(lists: np.ndarray, genres: np.ndarray) -> float:
  """Mean pairwise (1 - genre cosine) within each list, averaged over lists with 2+ items."""
  real = lists >= 0
  vectors = genres[np.maximum(lists, 0)].astype(np.float64)  # [U, k, G]
  norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
  unit = np.where(norms > 0, vectors / np.maximum(norms, 1e-12), 0.0)
  cosine = np.einsum("ukg,ulg->ukl", unit, unit)
  pair = real[:, :, None] & real[:, None, :] & ~np.eye(lists.shape[1], dtype=bool)[None]
  pairs = pair.sum((1, 2))
  per_user = np.where(pair, 1.0 - cosine, 0.0).sum((1, 2)) / np.maximum(pairs, 1)
  return float(per_user[pairs > 0].mean()) if np.any(pairs > 0) else float("nan")


def novelty(lists: np.ndarray, item_counts: np.ndarray, num_users: int) -> float:
  """Mean -log2 of each recommended item's smoothed popularity share."""
  real = lists >= 0
  if not real.any():
    return float("nan")
  share = (item_counts[lists[real]].astype(np.float64) + 1.0) / (num_users + 1.0)
  return float(np.mean(-np.log2(share)))


def exposure_gini(lists: np.ndarray, num_items: int) -> float:
  """Gini coefficient of recommendation counts over the whole catalogue."""
  exposure = np.sort(np.bincount(lists[lists >= 0], minlength=num_items).astype(np.float64))
  total = exposure.sum()
  if total == 0:
    return float("nan")
  ranks = np.arange(1, num_items + 1)
  return float((2.0 * np.sum(ranks * exposure)) / (num_items * total) - (num_items + 1) / num_items)


def beyond_accuracy(lists: np.ndarray, genres: np.ndarray, item_counts: np.ndarray,
                    num_users: int) -> dict[str, float]:
  """The three metrics at k = lists.shape[1] (coverage is with the accuracy metrics)."""
  k = lists.shape[1]
  return {f"diversity@{k}": intra_list_diversity(lists, genres),
          f"novelty@{k}": novelty(lists, item_counts, num_users),
          f"gini@{k}": exposure_gini(lists, genres.shape[0])}
