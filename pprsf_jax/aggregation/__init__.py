"""Federated algorithms in the optax style.

Server side: `Aggregator(init, aggregate)` stages composed with `chain` (reducers, per-client
maps, server optimizers). Client side: `LocalAlgorithm` (FedProx, SCAFFOLD) and `Compressor`
(quantization, top-k with error feedback). `FederatedAlgorithm` bundles the three.
"""

from pprsf_jax.aggregation.algorithm import (ClientState, FederatedAlgorithm, ServerState,
                                             client_state_bytes, init_client_states,
                                             init_server_state)
from pprsf_jax.aggregation.base import Aggregator, EmptyState, chain, safe_divide
from pprsf_jax.aggregation.compression import (Compressor, ErrorFeedbackState, dense_bits,
                                               no_compression, stochastic_quantization,
                                               top_k_sparsification)
from pprsf_jax.aggregation.local_algorithms import (LocalAlgorithm, ScaffoldClient,
                                                    ScaffoldServer, fedprox, local_sgd, scaffold)
from pprsf_jax.aggregation.mean import (MeanPartial, SumReducer, add_partials, as_aggregator,
                                        fednova, fednova_reducer, mean_reducer, reduce_in_chunks,
                                        weighted_mean)
from pprsf_jax.aggregation.registry import (COMPRESSORS, LOCAL_ALGORITHMS, REDUCERS,
                                            make_aggregator, make_algorithm)
from pprsf_jax.aggregation.robust import (CenteredClippingState, bulyan, centered_clipping,
                                          coordinate_median, geometric_median, krum, norm_bounding,
                                          trimmed_mean)
from pprsf_jax.aggregation.server import make_server_optimizer, server_optimizer
from pprsf_jax.aggregation.validation import StackedUploads, check_upload, stack_uploads

__all__ = [
    "COMPRESSORS", "LOCAL_ALGORITHMS", "REDUCERS", "Aggregator", "CenteredClippingState",
    "ClientState", "Compressor", "EmptyState", "ErrorFeedbackState", "FederatedAlgorithm",
    "LocalAlgorithm", "MeanPartial", "ScaffoldClient", "ScaffoldServer", "ServerState",
    "StackedUploads", "SumReducer", "add_partials", "as_aggregator", "bulyan", "centered_clipping", "chain", "check_upload",
    "client_state_bytes", "coordinate_median", "dense_bits", "fednova", "fednova_reducer",
    "fedprox", "geometric_median", "init_client_states", "init_server_state", "krum",
    "local_sgd", "make_aggregator", "make_algorithm", "make_server_optimizer", "mean_reducer",
    "no_compression", "norm_bounding", "reduce_in_chunks", "safe_divide", "scaffold",
    "server_optimizer", "stack_uploads", "stochastic_quantization", "top_k_sparsification", "trimmed_mean",
    "weighted_mean",
]
