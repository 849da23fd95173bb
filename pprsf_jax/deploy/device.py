"""The client side of a real deployment: what one device holds, and what it computes alone.

Nothing here knows about a federated runtime: the Flower client app (`flower_client.py`) and any
other runtime call these functions. They are the simulator's own client functions
(`build_examples`, `client_update`, `rank_candidates`) applied to one client's arrays: a
deployed client computes exactly the row the simulator computes for it.

What a device holds (`DeviceData`) never leaves it: the private attributes, the private
interactions, and the public interactions it logged itself. What it receives from the server
(`CandidateList`, Theta) is public. What it sends back is a `TrainReply` (its encoded update and
the update's size) or a Top-T request; its loss, its example and step counts stay on it.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import numpy as np

from pprsf_jax.aggregation import FederatedAlgorithm
from pprsf_jax.aggregation.algorithm import ClientState
from pprsf_jax.ranking.client import LocalTraining, client_update, rank_candidates
from pprsf_jax.ranking.task import DeviceState, personal_key
from pprsf_jax.ranking.examples import build_examples, stack_lists
from pprsf_jax.ranking.federated import client_key
from pprsf_jax.ranking.features import ClientExamples, ItemTable
from pprsf_jax.recall.item_knn import ItemNeighbors
from pprsf_jax.types import SERVING, CandidateList, Candidates, Interactions, TopTRequest


class DeviceData(NamedTuple):
  """Everything one device holds about its user. Private: never serialised, never sent."""

  client_id: int  # the user's id in the federation (what the server addresses it by)
  user_features: np.ndarray  # [F_u] float32 encoded private attributes
  public_items: np.ndarray  # [R_pub] int32 items of the interactions it logged publicly
  public_fold: np.ndarray  # [R_pub] int32 their cross-fitting fold
  private_items: np.ndarray  # [R_priv] int32 items of its private interactions
  private_fold: np.ndarray  # [R_priv] int32 their cross-fitting fold

  def interactions(self, which: str, keep: np.ndarray | None = None) -> Interactions:
    """This device's interactions as a one-user table (user 0)."""
    items = self.public_items if which == "public" else self.private_items
    items = items if keep is None else items[keep]
    return Interactions(np.zeros(items.shape[0], np.int32), items.astype(np.int32))


def _own_lists(device: DeviceData, fold: int) -> tuple[Interactions, Interactions]:
  """(history, positives) the device uses for one list: for a training fold, its interactions
  outside the fold are history and those inside label the candidates; serving uses them all."""
  if fold == SERVING:
    return device.interactions("public") + device.interactions("private"), Interactions.empty()
  history = (device.interactions("public", device.public_fold != fold)
             + device.interactions("private", device.private_fold != fold))
  positives = (device.interactions("public", device.public_fold == fold)
               + device.interactions("private", device.private_fold == fold))
  return history, positives


def device_examples(device: DeviceData, lists: list[CandidateList],
                    genres: np.ndarray) -> ClientExamples:
  """This device's ranking examples [S, K, ...] from the lists it received (S = len(lists)).

  `genres` [M, G] is the public catalogue's. The neighbour rows arrive for the candidates only;
  they are placed in an item-indexed table, which `build_examples` reads at those rows only.
  """
  if not lists:
    raise ValueError("a device needs at least one candidate list to build examples")
  per_list = []
  for shipped in lists:
    num_items = shipped.public_counts.shape[0]
    neighbors = ItemNeighbors(
        items=np.full((num_items, shipped.neighbor_items.shape[1]), -1, np.int32),
        similarity=np.zeros((num_items, shipped.neighbor_items.shape[1]), np.float32))
    real = shipped.items >= 0
    neighbors.items[shipped.items[real]] = shipped.neighbor_items[real]
    neighbors.similarity[shipped.items[real]] = shipped.neighbor_similarity[real]
    history, positives = _own_lists(device, shipped.fold)
    per_list.append(build_examples(
        Candidates(shipped.items[None], shipped.scores[None]), device.user_features[None],
        history=history, positives=positives, genres=genres, neighbors=neighbors,
        public_counts=shipped.public_counts))
  return jax.tree.map(lambda leaf: leaf[0], stack_lists(per_list))


class TrainReply(NamedTuple):
  """Everything a device sends back after a training round; nothing else leaves it."""

  delta: Any  # its encoded update, or None when its training diverged (nothing is sent)
  num_bytes: float  # the update's size on the wire as encoded (a function of the encoding)


@functools.partial(jax.jit, static_argnames=("local", "algorithm"))
def _update(params, examples, item_table, key, broadcast, state, *, local, algorithm):
  return client_update(params, examples, item_table, key=key, local=local, algorithm=algorithm,
                       broadcast=broadcast, state=state)


def initial_state(params, *, local: LocalTraining, algorithm: FederatedAlgorithm, dims,
                  seed_key: jax.Array, client_id: int) -> DeviceState:
  """What a device holds before its first round: the simulator's initial row for this client
  (the personal state drawn from `personal_key(seed_key, client_id)`)."""
  return DeviceState(ClientState(local=algorithm.local.init_client(params),
                                 compressor=algorithm.compressor.init(params)),
                     local.task.init_personal(personal_key(seed_key, client_id), dims))


def train_on_device(params, examples: ClientExamples, item_table: ItemTable, *,
                    seed_key: jax.Array, round_index: int, client_id: int, local: LocalTraining,
                    algorithm: FederatedAlgorithm, state: DeviceState,
                    broadcast=()) -> tuple[TrainReply, DeviceState]:
  """One round's local update from Theta = `params`: what the device sends back, and the state
  it keeps (its personal state trained; the device's own to store, never sent).

  The key is the simulator's (`client_key(seed_key, round, client_id)`), so a deployed client
  draws the same mini-batches and noise as its simulated twin. The upload's weight and step count
  are not sent: the server computes them from the lists it sent (`coordinator.declared_counts`).
  A device that diverged sends nothing and keeps its old state.
  """
  upload, next_state, metrics = _update(params, examples, item_table,
                                        client_key(seed_key, round_index, client_id), broadcast,
                                        state, local=local, algorithm=algorithm)
  if jax.tree.leaves(upload.extra):
    raise ValueError("this client algorithm uploads extra state; deployments support stateless "
                     "ones only")
  if bool(metrics.diverged):
    return TrainReply(delta=None, num_bytes=float(upload.num_bytes)), state
  return TrainReply(delta=upload.delta, num_bytes=float(upload.num_bytes)), next_state


@functools.partial(jax.jit, static_argnames=("task", "top_t"))
def _rank(params, personal, examples, item_table, *, task, top_t):
  return rank_candidates(params, personal, examples, item_table, task=task, top_t=top_t)


def rank(candidates: CandidateList, device: DeviceData, params, *, item_table: ItemTable,
         genres: np.ndarray, local: LocalTraining, top_t: int, personal=()) -> TopTRequest:
  """On-device inference: rank the server's serving candidates with Theta, the device's personal
  state and its own private data; returns the Top-T request (items [T] int32, -1 when fewer;
  scores [T])."""
  if candidates.fold != SERVING:
    raise ValueError(f"rank() takes a serving candidate list; this one is for fold "
                     f"{candidates.fold}")
  examples = device_examples(device, [candidates], genres)
  items, scores = _rank(params, personal, examples, item_table, task=local.task, top_t=top_t)
  return TopTRequest(items=np.asarray(items), scores=np.asarray(scores))
