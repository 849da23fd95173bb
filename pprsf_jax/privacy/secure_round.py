"""Secure aggregation inside the federated round: the server sums masked vectors only.

Each client encodes (w_i * update_i, w_i) as fixed point and masks it (`mask_uploads`, client
side); the server receives the `MaskedUpload` rows and recovers nothing but the sum over the
clients whose upload arrived (`unmask_sum`), from which it takes the weighted mean. It cannot
look at, clip or refuse a single update: robust rules, server-side clipping and the norm bound
need individual updates and are refused by the config in this mode; local DP (noise added
before masking) composes with it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from pprsf_jax.privacy.secure_aggregation import (SecureAggregationConfig, check_range, decode,
                                                  encode, mask_uploads, unmask_sum)

MIN_FRACTIONAL_BITS = 8  # coarser than 1/256 per entry would swamp typical updates


def config_for_cohort(bound: float, cohort: int) -> SecureAggregationConfig:
  """The finest fixed-point step for which `cohort` clients' sums never wrap.

  Raises:
    ValueError: even MIN_FRACTIONAL_BITS bits would let the sum wrap (bound too large).
  """
  for bits in range(30, MIN_FRACTIONAL_BITS - 1, -1):
    config = SecureAggregationConfig(fractional_bits=bits, max_abs_value=float(bound))
    try:
      check_range(config, cohort)
    except ValueError:
      continue
    return config
  raise ValueError(
      f"privacy.secure_aggregation_bound={bound} is too large for cohorts of {cohort}: sums "
      f"would wrap modulo 2**32 even at {MIN_FRACTIONAL_BITS} fractional bits "
      f"(need cohort * bound * 2**{MIN_FRACTIONAL_BITS} < 2**31, i.e. bound < "
      f"{2**31 / cohort / 2**MIN_FRACTIONAL_BITS:.4g})")


def _payload(updates, weights, sending) -> jax.Array:
  """[C, D + 1] what each client encodes: its weighted flat update, then its weight."""
  flat = jax.vmap(lambda update: ravel_pytree(update)[0])(updates)
  # where, not a product: a client that sends nothing may hold NaN, and 0 * NaN is NaN.
  weighted = jnp.where(sending[:, None], flat * weights[:, None], 0.0)
  return jnp.concatenate([weighted, jnp.where(sending, weights, 0.0)[:, None]], axis=1)


def secure_weighted_mean(updates, template, *, weights: jax.Array, present: jax.Array,
                         sending: jax.Array, client_ids: jax.Array, round_key: jax.Array,
                         config: SecureAggregationConfig) -> tuple[object, jax.Array, jax.Array]:
  """sum_i w_i u_i / sum_i w_i over the `sending` clients, computed through masks.

  Args:
    updates: Stacked [C, ...] client updates (client side until masked).
    template: A pytree shaped like one update (to unflatten the mean).
    weights: [C] client weights. present: [C] bool real clients. sending: [C] bool real
      clients whose upload arrives (the rest dropped after masking, or never trained).
    client_ids: [C] int32, distinct among present clients. round_key: the round's mask key.
    config: Fixed-point range (`config_for_cohort`).

  Returns:
    (the mean, shaped like `template`; entries clipped to the range, over all clients; the
    decoded total weight).
  """
  encoded, clipped = encode(_payload(updates, weights, sending), config)  # on each client
  masked = mask_uploads(encoded, client_ids, present, round_key)  # on each client
  total = decode(unmask_sum(masked, client_ids, present, sending, round_key), config)  # server
  weight = total[-1]
  mean = jnp.where(weight > 0, total[:-1] / jnp.where(weight > 0, weight, 1.0), 0.0)
  unravel = ravel_pytree(template)[1]
  return unravel(mean), jnp.sum(jnp.where(sending, clipped, 0)), weight


def what_the_server_sees(updates, weights, *, client_ids: jax.Array, round_key: jax.Array,
                         config: SecureAggregationConfig) -> jax.Array:
  """[C, D + 1] float32: each client's masked upload as a curious server would decode it alone."""
  present = jnp.ones(client_ids.shape, bool)
  encoded, _ = encode(_payload(updates, weights, present), config)
  masked = mask_uploads(encoded, client_ids, present, round_key).masked
  return jax.vmap(lambda row: decode(row, config))(masked)

