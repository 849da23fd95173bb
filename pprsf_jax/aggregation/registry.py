"""Federated algorithms by name, so configs select them; pure functions never see a config.

The entries read a `FederatedSettings`: any object with these fields, in practice
`pprsf_jax.config.FederatedConfig`. This module does not import the config (the config imports
it, to check the names a config selects), so the dependency runs one way.
"""

from __future__ import annotations

from typing import Callable, Protocol

from pprsf_jax.aggregation.algorithm import FederatedAlgorithm
from pprsf_jax.aggregation.base import Aggregator, chain
from pprsf_jax.aggregation.compression import (Compressor, no_compression,
                                               stochastic_quantization, top_k_sparsification)
from pprsf_jax.aggregation.local_algorithms import LocalAlgorithm, fedprox, local_sgd, scaffold
from pprsf_jax.aggregation.mean import fednova, weighted_mean
from pprsf_jax.aggregation.robust import (bulyan, centered_clipping, coordinate_median,
                                          geometric_median, krum, norm_bounding, trimmed_mean)
from pprsf_jax.aggregation.server import make_server_optimizer, server_optimizer


class FederatedSettings(Protocol):
  """The fields of `pprsf_jax.config.FederatedConfig` that the entries below read."""

  aggregator: str
  local_algorithm: str
  compression: str
  weighting: str
  server_optimizer: str
  server_learning_rate: float
  byzantine_f: int
  multi_krum_m: int
  trimmed_mean_beta: float
  norm_bound: float
  clipping_tau: float
  fedprox_mu: float
  quantization_bits: int
  top_k_fraction: float

# Each entry builds the per-client map and reducer stages; the server optimizer is appended.
REDUCERS: dict[str, Callable[[FederatedSettings], list[Aggregator]]] = {
    "fedavg": lambda config: [weighted_mean()],
    "fednova": lambda config: [fednova()],
    "median": lambda config: [coordinate_median()],
    "trimmed_mean": lambda config: [trimmed_mean(config.trimmed_mean_beta)],
    "krum": lambda config: [krum(config.byzantine_f)],
    "multi_krum": lambda config: [krum(config.byzantine_f, config.multi_krum_m)],
    "bulyan": lambda config: [bulyan(config.byzantine_f)],
    "geometric_median": lambda config: [geometric_median()],
    "norm_bounding": lambda config: [norm_bounding(config.norm_bound), weighted_mean()],
    "centered_clipping": lambda config: [centered_clipping(config.clipping_tau)],
}

# Client-side algorithms: (config, number of clients in the federation) -> LocalAlgorithm.
LOCAL_ALGORITHMS: dict[str, Callable[[FederatedSettings, int], LocalAlgorithm]] = {
    "sgd": lambda config, num_clients: local_sgd(),
    "fedprox": lambda config, num_clients: fedprox(config.fedprox_mu),
    "scaffold": lambda config, num_clients: scaffold(num_clients),
}

COMPRESSORS: dict[str, Callable[[FederatedSettings], Compressor]] = {
    "none": lambda config: no_compression(),
    "quantize": lambda config: stochastic_quantization(config.quantization_bits),
    "top_k": lambda config: top_k_sparsification(config.top_k_fraction),
}


def _lookup(table: dict, name: str, field: str):
  if name not in table:
    raise ValueError(f"federated.{field}={name!r} is not registered: known {sorted(table)}")
  return table[name]


def make_aggregator(config: FederatedSettings, reducer: Aggregator | None = None) -> Aggregator:
  """Reducer stages named by `config.aggregator` (or `reducer`), then the server optimizer."""
  stages = ([reducer] if reducer is not None
            else _lookup(REDUCERS, config.aggregator, "aggregator")(config))
  optimizer = make_server_optimizer(config.server_optimizer, config.server_learning_rate)
  return chain(*stages, server_optimizer(optimizer))


def make_algorithm(config: FederatedSettings, num_clients: int) -> FederatedAlgorithm:
  """The whole federated algorithm a config names, for a federation of `num_clients`."""
  local = _lookup(LOCAL_ALGORITHMS, config.local_algorithm, "local_algorithm")(config, num_clients)
  compressor = _lookup(COMPRESSORS, config.compression, "compression")(config)
  return FederatedAlgorithm(local=local, compressor=compressor,
                            aggregator=make_aggregator(config), weighting=config.weighting)
