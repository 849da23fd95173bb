"""One federated round of the ranking model: vmapped client updates, then the aggregator."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from pprsf_jax.aggregation import Aggregator
from pprsf_jax.ranking.client import LocalTraining, client_update
from pprsf_jax.ranking.features import ClientExamples, ItemTable


# The server's own randomness in a round uses a stream no client id can take.
SERVER_STREAM = 2**31 - 1


class RoundMetrics(NamedTuple):
  loss: jax.Array  # [] float32 example-weighted mean client training loss
  clients: jax.Array  # [] int32 real clients in the cohort
  rejected: jax.Array  # [] int32 real clients whose upload was not finite (dropped)


def client_key(seed_key: jax.Array, round_index, client_id) -> jax.Array:
  """A client's key is derived, not threaded: results do not depend on cohort order or padding."""
  return jax.random.fold_in(jax.random.fold_in(seed_key, round_index), client_id)


def make_round(local: LocalTraining, aggregator: Aggregator, *, weighting: str) -> Callable:
  """Builds the jitted round.

  Returns:
    round_fn(params, aggregator_state, cohort, client_ids, client_mask, item_table, seed_key,
             round_index) -> (params, aggregator_state, RoundMetrics), where `cohort` is a
    ClientExamples stacked [C, S, K, ...], `client_ids` [C] int32 and `client_mask` [C] float32.
  """

  def round_fn(params, aggregator_state, cohort: ClientExamples, client_ids, client_mask,
               item_table: ItemTable, seed_key, round_index):
    keys = jax.vmap(lambda c: client_key(seed_key, round_index, c))(client_ids)
    uploads, metrics = jax.vmap(
        lambda examples, key: client_update(params, examples, item_table, key=key, local=local)
    )(cohort, keys)
    finite = jnp.all(jnp.stack([
        jnp.all(jnp.isfinite(leaf.reshape(leaf.shape[0], -1)), axis=1)
        for leaf in jax.tree.leaves(uploads.delta)]), axis=0)
    mask = client_mask * finite
    # Rejected uploads only leave the mask: every reducer honours it (by `where`, so a NaN in a
    # masked slot cannot leak through 0 * NaN).
    weights = uploads.num_examples if weighting == "examples" else jnp.ones_like(client_mask)
    update, aggregator_state = aggregator.aggregate(
        uploads.delta, aggregator_state, weights=weights, mask=mask,
        key=client_key(seed_key, round_index, SERVER_STREAM), params=params)
    params = optax.apply_updates(params, update)
    example_weights = uploads.num_examples * mask
    round_metrics = RoundMetrics(
        # where, not a product: a rejected client's loss may be NaN, and 0 * NaN is NaN.
        loss=jnp.sum(jnp.where(mask > 0, metrics.loss * example_weights, 0.0))
        / jnp.maximum(jnp.sum(example_weights), 1.0),
        clients=jnp.sum(client_mask).astype(jnp.int32),
        rejected=jnp.sum(client_mask * (1 - finite)).astype(jnp.int32),
    )
    return params, aggregator_state, round_metrics

  return jax.jit(round_fn)


def cohort_slice(examples: ClientExamples, client_ids, size: int) -> tuple[ClientExamples, Any, Any]:
  """Gathers `client_ids` from host-resident stacked examples and pads the cohort to `size`.

  Padding clients repeat client 0's arrays with mask 0 and weight 0, so shapes (and the compiled
  round) stay fixed whatever the cohort's real size.
  """
  count = len(client_ids)
  padded_ids = np.concatenate([client_ids, np.zeros(size - count, client_ids.dtype)])
  cohort = jax.tree.map(lambda a: a[padded_ids], examples)
  client_mask = (np.arange(size) < count).astype(np.float32)
  cohort = cohort._replace(
      mask=cohort.mask * client_mask.reshape((-1,) + (1,) * (cohort.mask.ndim - 1)))
  return cohort, padded_ids.astype(np.int32), client_mask
