"""Aggregators by name, so configs select them; pure functions never see a config."""

from __future__ import annotations

from typing import Callable

from pprsf_jax.aggregation.base import Aggregator, chain
from pprsf_jax.aggregation.mean import weighted_mean
from pprsf_jax.aggregation.robust import (bulyan, centered_clipping, coordinate_median,
                                          geometric_median, krum, norm_bounding, trimmed_mean)
from pprsf_jax.aggregation.server import make_server_optimizer, server_optimizer
from pprsf_jax.config import FederatedConfig

# Each entry builds the client-side and reducer stages; the server optimizer is appended.
REDUCERS: dict[str, Callable[[FederatedConfig], list[Aggregator]]] = {
    "fedavg": lambda config: [weighted_mean()],
    "median": lambda config: [coordinate_median()],
    "trimmed_mean": lambda config: [trimmed_mean(config.trimmed_mean_beta)],
    "krum": lambda config: [krum(config.byzantine_f)],
    "multi_krum": lambda config: [krum(config.byzantine_f, config.multi_krum_m)],
    "bulyan": lambda config: [bulyan(config.byzantine_f)],
    "geometric_median": lambda config: [geometric_median()],
    "norm_bounding": lambda config: [norm_bounding(config.norm_bound), weighted_mean()],
    "centered_clipping": lambda config: [centered_clipping(config.clipping_tau)],
}


def make_aggregator(config: FederatedConfig) -> Aggregator:
  """Reducer stages named by `config.aggregator`, then the configured server optimizer."""
  if config.aggregator not in REDUCERS:
    raise ValueError(
        f"federated.aggregator={config.aggregator!r} is not registered: known {sorted(REDUCERS)}")
  stages = REDUCERS[config.aggregator](config)
  optimizer = make_server_optimizer(config.server_optimizer, config.server_learning_rate)
  return chain(*stages, server_optimizer(optimizer))
