"""The privacy boundary, as types.

Server-side functions (recall, aggregation, re-rank) accept only `PublicData`, `Candidates`,
`ClientUpload` and `TopTRequest`. Client-side functions (local update, local ranking, service
logging) are the only ones that accept `PrivateData`. `tests/test_privacy_boundary.py` checks
both the signatures and the behaviour (poisoned private arrays change nothing the server computes).

In simulation every client's arrays are stacked on a leading user axis; the boundary is which
function may receive which container, not where the bytes live.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

Params = Any  # a pytree of arrays (Flax params, or a stacked cohort of them)


class Interactions(NamedTuple):
  """A flat list of (user, item) interactions (host memory, COO layout)."""

  user: np.ndarray  # [R] int32 dense user id
  item: np.ndarray  # [R] int32 dense item id

  @staticmethod
  def empty() -> Interactions:
    return Interactions(np.zeros(0, np.int32), np.zeros(0, np.int32))

  def __add__(self, other: Interactions) -> Interactions:  # type: ignore[override]
    return Interactions(
        np.concatenate([self.user, other.user]), np.concatenate([self.item, other.item])
    )

  def __len__(self) -> int:  # type: ignore[override]
    return int(self.user.shape[0])

  def keys(self, num_items: int) -> np.ndarray:
    """Sorted int64 keys user * num_items + item, for fast membership tests."""
    return np.sort(self.user.astype(np.int64) * num_items + self.item)

  def contains(self, users: np.ndarray, items: np.ndarray, num_items: int) -> np.ndarray:
    """Whether each (users[...], items[...]) pair is one of these interactions (same shape)."""
    keys = self.keys(num_items)
    query = np.asarray(users).astype(np.int64) * num_items + items
    if keys.size == 0:
      return np.zeros(query.shape, bool)
    found = np.clip(np.searchsorted(keys, query), 0, keys.size - 1)
    return keys[found] == query


class ItemCatalogue(NamedTuple):
  """Public item metadata."""

  genres: np.ndarray  # [M, G] float32 multi-hot
  year: np.ndarray  # [M] float32 release year, standardised; 0 where unknown
  year_known: np.ndarray  # [M] float32 1 where the release year is known


class PublicData(NamedTuple):
  """Everything the server may hold: the catalogue and public (logged) interactions.

  Public train interactions are split in two folds so ranking labels never come from
  interactions the recall model trained on: the stacked recall model sees `context` only, and
  `labels` mark positives of the ranking examples.
  """

  num_users: int
  num_items: int
  catalogue: ItemCatalogue
  context: Interactions  # public train interactions the recall model trains on
  labels: Interactions  # public train interactions held out of recall, labelling ranking

  @property
  def history(self) -> Interactions:
    """Every public train interaction: what the serving recall model trains on."""
    return self.context + self.labels


class PrivateData(NamedTuple):
  """What never leaves a client (stacked over users in simulation)."""

  user_features: np.ndarray  # [N, F_u] float32 encoded age, gender, occupation, zip
  context: Interactions  # private train interactions used as the user's history
  labels: Interactions  # private train interactions labelling ranking examples

  @property
  def history(self) -> Interactions:
    return self.context + self.labels


class Period(NamedTuple):
  """A future period of interactions: the simulator's ground truth, known to nobody in advance."""

  interactions: Interactions
  private: np.ndarray  # [R] bool: logged on the client (True) or sent to the server (False)


class Candidates(NamedTuple):
  """Recall output, sent from the server to each client."""

  items: np.ndarray  # [N, K] int32 item ids; -1 pads users with fewer than K eligible items
  scores: np.ndarray  # [N, K] float32 recall scores, descending along K


class ClientUpload(NamedTuple):
  """What one client (or a stacked cohort) sends to the server after local training."""

  delta: Params  # theta_i - Theta, same structure as the global params
  num_examples: Any  # [] (or [C]) float32: valid examples the client trained on


class TopTRequest(NamedTuple):
  """A client's ranked Top-T, sent to the server for re-ranking."""

  items: Any  # [U, T] int32 (-1 = empty slot)
  scores: Any  # [U, T] float32 ranking scores, descending
