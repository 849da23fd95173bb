"""Aggregation operators (server side), optax style: `Aggregator(init, aggregate)` + `chain`."""

from pprsf_jax.aggregation.base import Aggregator, EmptyState, chain, safe_divide
from pprsf_jax.aggregation.mean import weighted_mean
from pprsf_jax.aggregation.registry import REDUCERS, make_aggregator
from pprsf_jax.aggregation.server import make_server_optimizer, server_optimizer

__all__ = [
    "Aggregator", "EmptyState", "REDUCERS", "chain", "make_aggregator", "make_server_optimizer",
    "safe_divide", "server_optimizer", "weighted_mean",
]
