"""Ranking layer (client side): the client task, ranking models, local training, the federated
round and on-device ranking."""

from pprsf_jax.ranking.baselines import train_central, train_local_only
from pprsf_jax.ranking.candidate_task import candidate_task, candidate_training
from pprsf_jax.ranking.client import (ClientMetrics, LocalTraining, client_update, local_train,
                                      rank_candidates)
from pprsf_jax.ranking.features import (ClientExamples, ItemTable, client_features,
                                        make_item_table, num_features)
from pprsf_jax.ranking.federated import (RoundMetrics, client_key, cohort_slice,
                                         gather_client_states, make_round,
                                         scatter_client_states)
from pprsf_jax.ranking.models import (RANKING_MODELS, CandidateInputs, ModelDims, ModelSpec,
                                      RankingModel, build_model)
from pprsf_jax.ranking.task import (ClientTask, DeviceState, TrainingUnits, init_device_states,
                                    init_personal_states, personal_key)

__all__ = [
    "RANKING_MODELS", "CandidateInputs", "ClientExamples", "ClientMetrics", "ClientTask",
    "DeviceState", "ItemTable", "LocalTraining", "ModelDims", "ModelSpec", "RankingModel",
    "RoundMetrics", "TrainingUnits", "build_model", "candidate_task", "candidate_training",
    "client_features", "client_key", "client_update", "cohort_slice", "gather_client_states",
    "init_device_states", "init_personal_states", "local_train", "make_item_table", "make_round",
    "num_features", "personal_key", "rank_candidates", "scatter_client_states", "train_central",
    "train_local_only",
]
