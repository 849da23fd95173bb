"""Local DP on uploads: each client clips its own update and adds Gaussian noise before sending.

For a server that is not trusted at all: what leaves the device is already private. A client's
data may change its clipped update anywhere within the ball of radius C, so the L2 sensitivity of
one upload is 2C and one round is a Gaussian mechanism with multiplier z / 2 (see
`pprsf_jax.privacy.accounting`). This runs on the client, inside the vmapped client update.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

Privatizer = Callable[[object, jax.Array], object]  # (update, key) -> update as sent


def gaussian_privatizer(*, clip_norm: float, noise_multiplier: float) -> Privatizer:
  """Clip `update` to L2 norm `clip_norm`, then add N(0, (noise_multiplier * clip_norm)^2)."""

  def privatize(update, key):
    leaves, treedef = jax.tree.flatten(update)
    norm = jnp.sqrt(sum(jnp.sum(jnp.square(leaf)) for leaf in leaves))
    scale = jnp.minimum(1.0, clip_norm / jnp.maximum(norm, 1e-12))
    keys = jax.random.split(key, len(leaves))
    noised = [leaf * scale + noise_multiplier * clip_norm
              * jax.random.normal(leaf_key, leaf.shape, leaf.dtype)
              for leaf, leaf_key in zip(leaves, keys)]
    return jax.tree.unflatten(treedef, noised)

  return privatize
