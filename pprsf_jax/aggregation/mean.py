"""Mean reducers: FedAvg's weighted mean over the clients that are present."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pprsf_jax.aggregation.base import Aggregator, EmptyState, safe_divide


def weighted_mean() -> Aggregator:
  """Reduces [C, ...] updates to sum_c w_c m_c u_c / sum_c w_c m_c.

  Padding clients (mask 0) contribute exactly nothing; a cohort with no weight gives a zero
  update rather than NaN. Use uniform weights for the unweighted mean.
  """

  def aggregate(updates, state, *, weights, mask, key, params):
    del key, params
    effective = weights * mask
    total = jnp.sum(effective)

    def reduce(leaf):
      # where, not only a zero weight: 0 * NaN is NaN, and a padding slot may hold anything.
      present = mask.reshape((-1,) + (1,) * (leaf.ndim - 1)) > 0
      weighted = jnp.tensordot(effective.astype(leaf.dtype), jnp.where(present, leaf, 0), axes=1)
      return safe_divide(weighted, total.astype(leaf.dtype))

    return jax.tree.map(reduce, updates), state

  return Aggregator(lambda params: EmptyState(), aggregate)
