"""Mean reducers: FedAvg's weighted mean and FedNova's normalised mean over present clients.

Both are sums in disguise, so they also come as a `SumReducer`: a partial sum per chunk of
clients, partials added, one final division. A cohort too large for one device batch can be
reduced chunk by chunk (`reduce_in_chunks`) and gives the whole-cohort result up to summation
order.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from pprsf_jax.aggregation.base import Aggregator, EmptyState, safe_divide


class MeanPartial(NamedTuple):
  """Sufficient statistics of a mean over some clients (add two to merge their clients)."""

  weighted_sum: Any  # sum_c p_c u_c / s_c, same structure as one update
  total_weight: jax.Array  # [] sum_c p_c
  weighted_steps: jax.Array  # [] sum_c p_c s_c


class SumReducer(NamedTuple):
  """A reducer whose result is a function of a sum over clients."""

  partial: Callable[..., MeanPartial]  # (updates [C, ...], *, weights, mask, steps) -> partial
  finish: Callable[[MeanPartial], Any]  # partial over all clients -> reduced update


def _partial(updates, *, weights, mask, steps, normalise_steps: bool) -> MeanPartial:
  present = mask > 0
  effective = jnp.where(present, weights * mask, 0.0)
  steps = steps.astype(effective.dtype)
  # FedNova divides each update by its own step count; a client with no steps moved nowhere.
  per_client = safe_divide(effective, steps) if normalise_steps else effective

  def reduce(leaf):
    # where, not only a zero weight: 0 * NaN is NaN, and a padding slot may hold anything.
    rows = jnp.where(present.reshape((-1,) + (1,) * (leaf.ndim - 1)), leaf, 0)
    return jnp.tensordot(per_client.astype(leaf.dtype), rows, axes=1)

  return MeanPartial(weighted_sum=jax.tree.map(reduce, updates), total_weight=jnp.sum(effective),
                     weighted_steps=jnp.sum(effective * steps))


def add_partials(left: MeanPartial, right: MeanPartial) -> MeanPartial:
  return jax.tree.map(jnp.add, left, right)


def mean_reducer() -> SumReducer:
  """sum_c w_c m_c u_c / sum_c w_c m_c (FedAvg; uniform weights give the unweighted mean)."""

  def finish(partial: MeanPartial):
    return jax.tree.map(lambda s: safe_divide(s, partial.total_weight.astype(s.dtype)),
                        partial.weighted_sum)

  return SumReducer(lambda updates, **kw: _partial(updates, **kw, normalise_steps=False), finish)


def fednova_reducer() -> SumReducer:
  """FedNova (Wang et al., 2020) for local SGD: with p_c = w_c m_c / sum w m and tau_c the local
  steps of client c, the update is tau_eff * sum_c p_c u_c / tau_c, tau_eff = sum_c p_c tau_c.
  In the round, tau_c is the step count a client declares: the steps the lists the server sent
  it plan for (`ranking.client.public_upload_counts`), not the steps it took.

  Clients that ran more steps no longer pull Theta toward their own optimum; with equal steps it
  is the weighted mean.
  """

  def finish(partial: MeanPartial):
    effective_steps = safe_divide(partial.weighted_steps, partial.total_weight)
    return jax.tree.map(
        lambda s: safe_divide(s, partial.total_weight.astype(s.dtype)) * effective_steps.astype(
            s.dtype), partial.weighted_sum)

  return SumReducer(lambda updates, **kw: _partial(updates, **kw, normalise_steps=True), finish)


def as_aggregator(reducer: SumReducer) -> Aggregator:
  """The whole cohort reduced at once, as a stateless aggregation stage."""

  def aggregate(updates, state, *, weights, mask, steps, key, params):
    del key, params
    return reducer.finish(reducer.partial(updates, weights=weights, mask=mask, steps=steps)), state

  return Aggregator(lambda params: EmptyState(), aggregate)


def reduce_in_chunks(reducer: SumReducer, updates, *, weights, mask, steps, chunk: int):
  """Reduces [C, ...] updates `chunk` clients at a time under `lax.scan` (C divisible by chunk).

  Only one chunk's partial products are live at a time; the result equals the whole-cohort
  reduction up to floating-point summation order.
  """
  clients = mask.shape[0]
  if clients % chunk:
    raise ValueError(f"reduce_in_chunks: {clients} clients do not split into chunks of {chunk}")
  split = lambda x: x.reshape((clients // chunk, chunk) + x.shape[1:])

  def step(total, part):
    chunk_updates, chunk_weights, chunk_mask, chunk_steps = part
    partial = reducer.partial(chunk_updates, weights=chunk_weights, mask=chunk_mask,
                              steps=chunk_steps)
    return add_partials(total, partial), None

  first = jax.tree.map(lambda x: x[:0], (updates, weights, mask, steps))
  zero = reducer.partial(first[0], weights=first[1], mask=first[2], steps=first[3])
  total, _ = jax.lax.scan(step, zero, jax.tree.map(split, (updates, weights, mask, steps)))
  return reducer.finish(total)


def weighted_mean() -> Aggregator:
  """FedAvg's reducer: sum_c w_c m_c u_c / sum_c w_c m_c; zero (not NaN) for an empty cohort."""
  return as_aggregator(mean_reducer())


def fednova() -> Aggregator:
  """FedNova's normalised averaging (see `fednova_reducer`)."""
  return as_aggregator(fednova_reducer())
