"""DP-FedAvg's server half: clip each client's update, sum, add Gaussian noise, divide.

McMahan et al. (2018), "Learning Differentially Private Recurrent Language Models": every
accepted update is scaled to L2 norm at most C, the server adds N(0, (z C)^2) to the sum and
divides by the *expected* cohort size (a data-independent denominator keeps the sensitivity at C).
Adaptive clipping (Andrew et al., 2021) moves C geometrically toward the `target_quantile` of the
update norms, using a noisy count of the clients that fit, so the bound itself stays private.

The stage is an `Aggregator` (the server-side protocol): it reads only the uploads and the mask,
weighs every client equally (bounded contribution is the point), and is the reducer of the chain;
a server optimizer may follow it.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from pprsf_jax.aggregation.base import Aggregator, client_norms
from pprsf_jax.privacy.accounting import update_noise_multiplier


class AdaptiveClipping(NamedTuple):
  target_quantile: float  # share of clients whose update should fit within the bound
  learning_rate: float  # geometric step: C <- C * exp(-lr * (fraction fitting - target))
  count_stddev: float  # std of the noise on the (centred) count of fitting clients


class GaussianMeanState(NamedTuple):
  clip_norm: jax.Array  # [] float32, the bound used in the next round


def gaussian_mean(*, clip_norm: float, noise_multiplier: float, expected_clients: float,
                  adaptive: AdaptiveClipping | None = None) -> Aggregator:
  """The DP-FedAvg reducer.

  Args:
    clip_norm: C, the L2 bound on each update (the initial bound when `adaptive`).
    noise_multiplier: z, the noise std over C for the whole release (with `adaptive`, the
      update gets z_u = `update_noise_multiplier(z, count_stddev)` and the count the rest).
    expected_clients: The denominator: the cohort size, or its expectation under Poisson
      sampling.
    adaptive: Quantile tracking of C, or None for a fixed C.

  Returns:
    An Aggregator whose output is (sum of clipped updates + noise) / expected_clients.
  """
  z_update = (noise_multiplier if adaptive is None
              else update_noise_multiplier(noise_multiplier, adaptive.count_stddev))

  def init(params):
    del params
    return GaussianMeanState(clip_norm=jnp.asarray(clip_norm, jnp.float32))

  def aggregate(updates, state, *, weights, mask, steps, key, params):
    del weights, steps, params  # every client counts once; nothing else may change that
    bound = state.clip_norm
    norms = client_norms(updates)
    live = mask > 0
    # where, not a product: a refused (masked) row may be NaN, and 0 * NaN is NaN.
    scale = jnp.where(live, jnp.minimum(1.0, bound / jnp.maximum(norms, 1e-12)), 0.0)
    leaves, treedef = jax.tree.flatten(updates)
    update_key, count_key = jax.random.split(key)
    noise_keys = jax.random.split(update_key, len(leaves))
    noised = []
    for leaf, noise_key in zip(leaves, noise_keys):
      row_scale = scale.reshape((-1,) + (1,) * (leaf.ndim - 1))
      clipped_sum = jnp.sum(jnp.where(row_scale > 0, leaf * row_scale, 0.0), axis=0)
      noise = jax.random.normal(noise_key, clipped_sum.shape, clipped_sum.dtype)
      noised.append((clipped_sum + z_update * bound * noise) / expected_clients)
    new_bound = bound
    if adaptive is not None:
      # Each client adds 1/2 if its update fits, -1/2 if not: sensitivity 1/2 per client.
      centred = jnp.sum(jnp.where(live, jnp.where(norms <= bound, 0.5, -0.5), 0.0))
      noisy = centred + adaptive.count_stddev * jax.random.normal(count_key, ())
      fitting = noisy / expected_clients + 0.5
      new_bound = bound * jnp.exp(-adaptive.learning_rate * (fitting - adaptive.target_quantile))
    return jax.tree.unflatten(treedef, noised), GaussianMeanState(clip_norm=new_bound)

  return Aggregator(init, aggregate)


def current_clip_norm(aggregator_state) -> jax.Array:
  """The bound the DP reducer will use next, found in a (chained) aggregator state."""
  found = [state for state in jax.tree.leaves(
      aggregator_state, is_leaf=lambda node: isinstance(node, GaussianMeanState))
           if isinstance(state, GaussianMeanState)]
  if len(found) != 1:
    raise ValueError(f"expected one DP reducer state in the aggregator state, found {len(found)}")
  return found[0].clip_norm
