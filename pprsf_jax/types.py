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

  @property
  def size(self) -> int:
    """Number of interactions (len() stays the tuple's field count, as NamedTuple needs)."""
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


def _select(interactions: Interactions, keep: np.ndarray) -> Interactions:
  return Interactions(interactions.user[keep], interactions.item[keep])


class PublicData(NamedTuple):
  """Everything the server may hold: the catalogue and public (logged) interactions.

  Train interactions carry a cross-fitting fold: for fold f, a recall model trained on
  `context(f)` proposes candidates and `labels(f)` marks the positives among them, so ranking
  labels never come from interactions the recall model trained on, and every train interaction
  labels exactly one fold.
  """

  num_users: int
  num_items: int
  catalogue: ItemCatalogue
  history: Interactions  # every public train interaction: the serving recall model trains on it
  fold: np.ndarray  # [R] int32 cross-fitting fold of each history interaction, in [0, num_folds)
  num_folds: int
  # [N] bool: the devices registered with the server (the users who have signed up). Federated
  # training samples its cohorts from these; the server never infers them from private data.
  devices: np.ndarray

  def context(self, fold: int) -> Interactions:
    return _select(self.history, self.fold != fold)

  def labels(self, fold: int) -> Interactions:
    return _select(self.history, self.fold == fold)


class PrivateData(NamedTuple):
  """What never leaves a client (stacked over users in simulation)."""

  user_features: np.ndarray  # [N, F_u] float32 encoded age, gender, occupation, zip
  history: Interactions  # private train interactions
  fold: np.ndarray  # [R] int32 cross-fitting fold of each private interaction

  def context(self, fold: int) -> Interactions:
    return _select(self.history, self.fold != fold)

  def labels(self, fold: int) -> Interactions:
    return _select(self.history, self.fold == fold)


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

  delta: Params  # theta_i - Theta as the server decodes it, same structure as the global params
  # The two counts come from the candidate lists the server sent, never from private data
  # (`pprsf_jax.ranking.client.public_upload_counts`): the server could compute them itself.
  num_examples: Any  # [] (or [C]) float32: the client's real candidate slots (its weight)
  num_steps: Any  # [] (or [C]) int32: local SGD steps its lists plan for (FedNova's tau_i)
  extra: Any  # what the client-side algorithm adds (SCAFFOLD's control-variate change), or ()
  num_bytes: Any  # [] (or [C]) float32: size on the wire of delta + extra as encoded


SERVING = -1  # the fold of a candidate list proposed for serving, not for training


class CandidateList(NamedTuple):
  """One user's candidate list as the server ships it to that device (deployments)."""

  fold: int  # the cross-fitting fold whose recall model proposed it; SERVING at serving time
  items: np.ndarray  # [K] int32 candidate ids, best first (-1 pads)
  scores: np.ndarray  # [K] float32 recall scores
  neighbor_items: np.ndarray  # [K, P] int32 each candidate's public item neighbours (-1 pads)
  neighbor_similarity: np.ndarray  # [K, P] float32 their similarity
  public_counts: np.ndarray  # [M] float32 public interaction counts of the recall model's log


class TopTRequest(NamedTuple):
  """A client's ranked Top-T, sent to the server for re-ranking."""

  items: Any  # [U, T] int32 (-1 = empty slot)
  scores: Any  # [U, T] float32 ranking scores, descending
