"""Recall parameters shared by every recall model: score(u, i) = <user_u, item_i> + bias_i."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class RecallParams(NamedTuple):
  """A factorised scorer. Popularity is the special case of zero vectors and a count bias."""

  user: jax.Array  # [N, D] float32 user vectors (zero for users with no public history)
  item: jax.Array  # [M, D] float32 item vectors
  item_bias: jax.Array  # [M] float32


def score(params: RecallParams, users: jax.Array, items: jax.Array) -> jax.Array:
  """Scores every (user, item) pair of two id vectors.

  Returns:
    [len(users), len(items)] float32. Keep the inputs small: for whole catalogues use
    `pprsf_jax.recall.retrieve`, which never materialises [N, M].
  """
  return params.user[users] @ params.item[items].T + params.item_bias[items][None, :]
