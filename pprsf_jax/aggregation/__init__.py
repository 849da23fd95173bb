"""Aggregation operators (server side), optax style: `Aggregator(init, aggregate)` + `chain`."""

from pprsf_jax.aggregation.base import Aggregator, EmptyState, chain, safe_divide
from pprsf_jax.aggregation.mean import weighted_mean
from pprsf_jax.aggregation.registry import REDUCERS, make_aggregator
from pprsf_jax.aggregation.robust import (CenteredClippingState, bulyan, centered_clipping,
                                          coordinate_median, geometric_median, krum, norm_bounding,
                                          trimmed_mean)
from pprsf_jax.aggregation.server import make_server_optimizer, server_optimizer

__all__ = [
    "Aggregator", "CenteredClippingState", "EmptyState", "REDUCERS", "bulyan", "centered_clipping",
    "chain", "coordinate_median", "geometric_median", "krum", "make_aggregator",
    "make_server_optimizer", "norm_bounding", "safe_divide", "server_optimizer", "trimmed_mean",
    "weighted_mean",
]
