"""The aggregation interface, in the optax style.

An `Aggregator` is a pair of pure functions:

  state = init(params)
  update, state = aggregate(updates, state, *, weights, mask, steps, key, params)

`updates` hold client updates stacked on a leading client axis [C, ...]; `weights` [C],
`mask` [C] (1 = a real client, 0 = padding) and `steps` [C] (local SGD steps each client took,
which FedNova normalises by) accompany them. Stages compose with `chain`:
per-client maps keep the client axis, one reducer drops it, server transforms act on the reduced
update. The final output is added to the global parameters with `optax.apply_updates`.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Protocol

import jax
import jax.numpy as jnp

Updates = Any  # pytree; stacked [C, ...] before the reducer, unstacked after it


class AggregateFn(Protocol):

  def __call__(self, updates: Updates, state: Any, *, weights: jax.Array, mask: jax.Array,
               steps: jax.Array, key: jax.Array, params: Any) -> tuple[Updates, Any]:
    ...


class Aggregator(NamedTuple):
  """A composable aggregation stage (see module docstring)."""

  init: Callable[[Any], Any]
  aggregate: AggregateFn


class EmptyState(NamedTuple):
  """State of a stateless stage."""


def chain(*stages: Aggregator) -> Aggregator:
  """Runs stages in order; the state is the tuple of the stages' states.

  >>> import optax
  >>> from pprsf_jax.aggregation import weighted_mean, server_optimizer
  >>> fedavg = chain(weighted_mean(), server_optimizer(optax.sgd(1.0)))
  """

  def init(params):
    return tuple(stage.init(params) for stage in stages)

  def aggregate(updates, state, *, weights, mask, steps, key, params):
    new_states = []
    for index, (stage, stage_state) in enumerate(zip(stages, state)):
      updates, stage_state = stage.aggregate(
          updates, stage_state, weights=weights, mask=mask, steps=steps,
          key=jax.random.fold_in(key, index), params=params)
      new_states.append(stage_state)
    return updates, tuple(new_states)

  return Aggregator(init, aggregate)


def safe_divide(numerator: jax.Array, denominator: jax.Array) -> jax.Array:
  """numerator / denominator, and 0 (not NaN) where the denominator is 0."""
  nonzero = denominator != 0
  return jnp.where(nonzero, numerator / jnp.where(nonzero, denominator, 1), 0)


def client_norms(updates: Updates) -> jax.Array:
  """[C] L2 norm of each client's slice of updates stacked on a leading client axis."""
  return jnp.sqrt(sum(jnp.sum(jnp.square(leaf.reshape(leaf.shape[0], -1)), axis=1)
                      for leaf in jax.tree.leaves(updates)))
