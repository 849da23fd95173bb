"""A federated algorithm as one value: client half, upload encoding, server half.

The round (`pprsf_jax.ranking.federated.make_round`) is written against this bundle only, so
FedAvg, FedProx, SCAFFOLD, FedNova, robust rules and compressed uploads are all the same round.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import numpy as np

from pprsf_jax.aggregation.base import Aggregator
from pprsf_jax.aggregation.compression import Compressor
from pprsf_jax.aggregation.local_algorithms import LocalAlgorithm


def _send_as_is(update, key):
  del key
  return update


class FederatedAlgorithm(NamedTuple):
  local: LocalAlgorithm  # how clients train and what they keep between rounds
  compressor: Compressor  # how uploads are encoded
  aggregator: Aggregator  # how the server reduces uploads into the next Theta
  weighting: str  # client weights: "examples" or "uniform"
  # (update, key) -> update: what a client does to its update before encoding it (local DP)
  privatizer: Callable[[Any, jax.Array], Any] = _send_as_is
  # Step the server even when no upload was accepted: a DP release must happen every round
  # (whether anything was accepted depends on client data, so skipping would leak it).
  always_step: bool = False


class ServerState(NamedTuple):
  """Everything the server carries from one round to the next."""

  params: Any  # Theta
  aggregator: Any  # the aggregator's state (server optimizer moments, clipping centre, ...)
  broadcast: Any  # what the local algorithm's server half sends with Theta (SCAFFOLD's c)


class ClientState(NamedTuple):
  """What one client keeps on its device between rounds (stacked [N, ...] in simulation)."""

  local: Any  # the local algorithm's state (SCAFFOLD's c_i)
  compressor: Any  # the compressor's state (error-feedback residual)


def init_server_state(algorithm: FederatedAlgorithm, params) -> ServerState:
  return ServerState(params=params, aggregator=algorithm.aggregator.init(params),
                     broadcast=algorithm.local.init_server(params))


def init_client_states(algorithm: FederatedAlgorithm, params, num_clients: int) -> ClientState:
  """Every client's initial state, stacked on a leading client axis as host (NumPy) arrays.

  Host memory, not device memory: only a cohort's rows travel to the device each round.
  """
  one = ClientState(local=algorithm.local.init_client(params),
                    compressor=algorithm.compressor.init(params))
  return jax.tree.map(lambda leaf: np.zeros((num_clients,) + leaf.shape, leaf.dtype), one)


def client_state_bytes(states: ClientState) -> int:
  return int(sum(leaf.nbytes for leaf in jax.tree.leaves(states)))
