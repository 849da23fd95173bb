"""Ranking layer (client side): features, the model, local training and on-device ranking."""

from pprsf_jax.ranking.baselines import train_central, train_local_only
from pprsf_jax.ranking.client import (ClientMetrics, LocalTraining, client_update, local_train,
                                      rank_candidates)
from pprsf_jax.ranking.features import (ClientExamples, ItemTable, client_features,
                                        make_item_table, num_features)
from pprsf_jax.ranking.federated import (RoundMetrics, client_key, cohort_slice,
                                         gather_client_states, make_round,
                                         scatter_client_states)
from pprsf_jax.ranking.model import RankingMLP, init_params, logits

__all__ = [
    "ClientExamples", "ClientMetrics", "ItemTable", "LocalTraining", "RankingMLP", "RoundMetrics",
    "client_features", "client_key", "client_update", "cohort_slice", "gather_client_states",
    "init_params",
    "local_train", "logits", "make_item_table", "make_round", "num_features", "rank_candidates",
    "scatter_client_states", "train_central", "train_local_only",
]
