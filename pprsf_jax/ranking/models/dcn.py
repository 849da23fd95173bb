"""dcn: a DCN-v2 feature-crossing network (Wang et al., 2021) over the client-side feature row.

The row holds the private attributes, the private and public history summaries, the item's
features and its recall score; cross layers learn their explicit interactions (x0 * (W x + b) +
x), a parallel MLP the implicit ones. Everything is shared.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from pprsf_jax.ranking.models.base import (CandidateInputs, ModelDims, ModelSpec, RankingModel,
                                           no_personal_state)


class CrossNetwork(nn.Module):
  hidden_sizes: Sequence[int]
  cross_layers: int

  @nn.compact
  def __call__(self, features: jax.Array) -> jax.Array:
    x0 = features
    crossed = x0
    for _ in range(self.cross_layers):
      crossed = x0 * nn.Dense(x0.shape[-1])(crossed) + crossed
    deep = x0
    for width in self.hidden_sizes:
      deep = nn.relu(nn.Dense(width)(deep))
    return nn.Dense(1)(jnp.concatenate([crossed, deep], -1))[..., 0]


def dcn(spec: ModelSpec) -> RankingModel:
  network = CrossNetwork(hidden_sizes=spec.hidden_sizes, cross_layers=spec.cross_layers)

  def init_shared(key: jax.Array, dims: ModelDims):
    return network.init(key, jnp.zeros((1, dims.num_features), jnp.float32))["params"]

  def logits(shared, personal, inputs: CandidateInputs) -> jax.Array:
    del personal
    return network.apply({"params": shared}, inputs.features)

  return RankingModel(init_shared, no_personal_state, logits)
