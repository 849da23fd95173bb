"""The ranking model: an MLP scoring one (user, candidate) feature vector."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class RankingMLP(nn.Module):
  """Scores feature rows [..., F] -> logits [...] (higher = more likely to be interacted with)."""

  hidden_sizes: Sequence[int] = (64, 32)

  @nn.compact
  def __call__(self, features: jax.Array) -> jax.Array:
    x = features
    for width in self.hidden_sizes:
      x = nn.relu(nn.Dense(width)(x))
    return nn.Dense(1)(x)[..., 0]


def init_params(model: RankingMLP, num_features: int, *, key: jax.Array):
  """Global initial parameters Theta_0."""
  return model.init(key, jnp.zeros((1, num_features), jnp.float32))["params"]


def logits(model: RankingMLP, params, features: jax.Array) -> jax.Array:
  return model.apply({"params": params}, features)
