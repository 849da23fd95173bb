"""pfedrec: PFedRec-style dual personalisation (Zhang et al., IJCAI 2023).

The item embedding is shared and aggregated; the score function — an MLP from an item's
embedding to its logit, which is how this model represents the user — is personal: every client
keeps and trains its own. Fine-tuning the shared item embedding on the device (the second half
of PFedRec's dual personalisation) is `P_FL + fine-tune` in the pipeline.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pprsf_jax.ranking.models.base import (CandidateInputs, ModelDims, ModelSpec, RankingModel,
                                           item_ids)
from pprsf_jax.ranking.models.factorisation import embedding
from pprsf_jax.ranking.model import RankingMLP


def pfedrec(spec: ModelSpec) -> RankingModel:
  d = spec.embedding_dim
  # The score function is an MLP from an item's embedding to its logit (linear without hidden
  # layers, as PFedRec's): the same network feature_mlp runs over a feature row.
  score_function = RankingMLP(hidden_sizes=spec.hidden_sizes)

  def init_shared(key: jax.Array, dims: ModelDims):
    return {"items": embedding(spec, key, dims.num_items, d)}

  def init_personal(key: jax.Array, dims: ModelDims):
    del dims
    return {"score_function": score_function.init(key, jnp.zeros((1, d), jnp.float32))["params"]}

  def logits(shared, personal, inputs: CandidateInputs) -> jax.Array:
    return score_function.apply({"params": personal["score_function"]},
                                shared["items"][item_ids(inputs)])

  return RankingModel(init_shared, init_personal, logits)
