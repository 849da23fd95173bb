"""Where a round's cohort comes from: precomputed examples, or examples built per cohort.

`train_federated` asks a cohort source for each round's padded batch. `StackedCohorts` gathers
rows of examples precomputed for every client (what a 943-client job does). `StreamedCohorts`
keeps only each client's raw data in host memory, ragged (`ScaleFederation`: CSR interactions,
dense attributes) plus its candidate list, and builds the cohort's examples when the cohort is
drawn (vectorised over the cohort, no Python loop per client), so a million clients never need
[N, S, K, ...] example arrays. `prefetched` builds the next round's cohort on a host thread
while the device trains the current one.
"""

from __future__ import annotations

import concurrent.futures
from typing import Iterator, Protocol

import numpy as np

from pprsf_jax.data.synthetic_scale import ScaleFederation
from pprsf_jax.ranking.examples import build_examples
from pprsf_jax.ranking.federated import cohort_slice
from pprsf_jax.ranking.features import ClientExamples
from pprsf_jax.recall.item_knn import ItemNeighbors
from pprsf_jax.types import Candidates, Interactions

Cohort = tuple[ClientExamples, np.ndarray, np.ndarray]  # examples [C, ...], ids [C], mask [C]


class CohortSource(Protocol):
  num_clients: int

  def cohort(self, client_ids: np.ndarray, size: int) -> Cohort:
    """The clients' examples padded to `size` clients, their padded ids and the real-client mask."""


class StackedCohorts:
  """Cohorts gathered from examples precomputed for every client ([N, S, K, ...])."""

  def __init__(self, examples: ClientExamples):
    self.examples = examples
    self.num_clients = int(examples.mask.shape[0])

  def cohort(self, client_ids: np.ndarray, size: int) -> Cohort:
    return cohort_slice(self.examples, client_ids, size)


class StreamedCohorts:
  """Each cohort's examples built from the clients' ragged data when it is drawn.

  Every client ranks one candidate list (the server's, from a recall model that did not train on
  fold `label_fold`); its interactions in that fold, public and private, label the candidates,
  and the rest form its history (client side: `build_examples`).
  """

  def __init__(self, federation: ScaleFederation, candidates: Candidates, *,
               neighbors: ItemNeighbors, public_counts: np.ndarray, label_fold: int = 0):
    if candidates.items.shape[0] != federation.num_users:
      raise ValueError(f"StreamedCohorts: {candidates.items.shape[0]} candidate lists for "
                       f"{federation.num_users} clients")
    self.federation, self.candidates = federation, candidates
    self.neighbors, self.public_counts, self.label_fold = neighbors, public_counts, label_fold
    self.num_clients = federation.num_users

  def cohort(self, client_ids: np.ndarray, size: int) -> Cohort:
    federation = self.federation
    # Padding slots are client 0 with its mask zeroed, exactly as `cohort_slice` pads.
    padded_ids = np.zeros(size, np.int32)
    padded_ids[:client_ids.size] = client_ids
    rows, owner = federation.rows_of(padded_ids)
    items = federation.items[rows]
    labels = federation.fold[rows] == self.label_fold
    examples = build_examples(
        Candidates(self.candidates.items[padded_ids], self.candidates.scores[padded_ids]),
        federation.user_features[padded_ids],
        history=Interactions(owner[~labels], items[~labels]),
        positives=Interactions(owner[labels], items[labels]),
        genres=federation.catalogue.genres, neighbors=self.neighbors,
        public_counts=self.public_counts)
    client_mask = (np.arange(size) < client_ids.size).astype(np.float32)
    examples = examples._replace(
        mask=examples.mask * client_mask.reshape((-1,) + (1,) * (examples.mask.ndim - 1)))
    return examples, padded_ids, client_mask


def prefetched(source: CohortSource, schedule: list[np.ndarray], size: int,
               rounds: range) -> Iterator[tuple[int, np.ndarray, Cohort]]:
  """(round, client ids, cohort) for each round, the next cohort built on a host thread while
  the caller works on the current one (NumPy releases the GIL for its heavy loops)."""
  with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
    build = lambda index: pool.submit(source.cohort, schedule[index], size)
    pending = build(rounds[0]) if len(rounds) else None
    for position, round_index in enumerate(rounds):
      cohort = pending.result()
      if position + 1 < len(rounds):
        pending = build(rounds[position + 1])
      yield round_index, schedule[round_index], cohort
