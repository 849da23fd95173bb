"""Recall parameters shared by every recall model: score(u, i) = <user_u, item_i> + bias_i."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from pprsf_jax.types import Interactions


class RecallParams(NamedTuple):
  """A factorised scorer. Popularity is the special case of zero vectors and a count bias."""

  user: jax.Array  # [N, D] float32 user vectors (users with no public history: see each model)
  item: jax.Array  # [M, D] float32 item vectors
  item_bias: jax.Array  # [M] float32


def score(params: RecallParams, users: jax.Array, items: jax.Array) -> jax.Array:
  """Scores every (user, item) pair of two id vectors.

  Returns:
    [len(users), len(items)] float32. Keep the inputs small: for whole catalogues use
    `pprsf_jax.recall.retrieve`, which never materialises [N, M].
  """
  return params.user[users] @ params.item[items].T + params.item_bias[items][None, :]


def average_for_cold_users(user: jax.Array, interactions: Interactions) -> jax.Array:
  """`user` [N, D] with the rows of users absent from `interactions` set to the mean row of the
  others: a model without item bias then scores a cold user's items by how well they suit the
  average user, a popularity-like fallback, instead of by an untrained random vector."""
  has_history = jnp.asarray(np.bincount(interactions.user, minlength=user.shape[0]) > 0)
  total = jnp.sum(jnp.where(has_history[:, None], user, 0.0), axis=0)
  average = total / jnp.maximum(jnp.sum(has_history), 1).astype(user.dtype)
  return jnp.where(has_history[:, None], user, average[None, :])
