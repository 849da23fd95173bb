"""feature_mlp: an MLP over the candidate's client-side feature row; everything shared."""

from __future__ import annotations

import jax

from pprsf_jax.ranking.models.base import (CandidateInputs, ModelDims, ModelSpec, RankingModel,
                                           no_personal_state)
from pprsf_jax.ranking.model import RankingMLP, init_params, logits


def feature_mlp(spec: ModelSpec) -> RankingModel:
  module = RankingMLP(hidden_sizes=spec.hidden_sizes)

  def init_shared(key: jax.Array, dims: ModelDims):
    return init_params(module, dims.num_features, key=key)

  def score(shared, personal, inputs: CandidateInputs) -> jax.Array:
    del personal
    return logits(module, shared, inputs.features)

  return RankingModel(init_shared, no_personal_state, score)

