"""Ranking models, selectable by name (`ranking.model=`): each a `RankingModel` of pure functions.

Add one by writing a builder `ModelSpec -> RankingModel` and naming it in
`RANKING_MODELS` (docs/ranking_models.md walks through it).
"""

from __future__ import annotations

import functools
from typing import Callable

from pprsf_jax.ranking.models.base import (CandidateInputs, ModelDims, ModelSpec, RankingModel,
                                           item_ids, no_personal_state)
from pprsf_jax.ranking.models.dcn import dcn
from pprsf_jax.ranking.models.factorisation import mf, ncf
from pprsf_jax.ranking.models.feature_mlp import feature_mlp
from pprsf_jax.ranking.models.pfedrec import pfedrec

RANKING_MODELS: dict[str, Callable[[ModelSpec], RankingModel]] = {
    "feature_mlp": feature_mlp,  # today's MLP over the feature row (everything shared)
    "mf": mf,  # FedMF: shared item embeddings and biases, personal user embedding
    "ncf": ncf,  # FedNCF (NeuMF): shared item embeddings and network, personal user embeddings
    "pfedrec": pfedrec,  # PFedRec: shared item embedding, personal score function
    "dcn": dcn,  # DCN-v2 cross network over the feature row (everything shared)
}

# Models that read only candidate ids, never the feature row: they also run the id-only
# leave-one-out protocol of the federated-recommendation papers.
ID_MODELS = ("mf", "ncf", "pfedrec")


@functools.cache
def build_model(name: str, spec: ModelSpec) -> RankingModel:
  """The named model. Cached: the same arguments give the same value, so everything jitted on it
  compiles once."""
  if name not in RANKING_MODELS:
    raise ValueError(f"unknown ranking model {name!r}; known: {', '.join(RANKING_MODELS)}")
  return RANKING_MODELS[name](spec)


__all__ = ["ID_MODELS", "RANKING_MODELS", "CandidateInputs", "ModelDims", "ModelSpec",
           "RankingModel", "build_model", "item_ids", "no_personal_state"]
