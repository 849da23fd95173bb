"""The re-rank interface: strategies map each user's ranked list to a new ranked list.

A strategy is a pure function `(TopTRequest, RerankContext) -> TopTRequest` over [U, T] arrays
(written for one user and vmapped where that is clearer). Strategies compose left to right; the
final list is the first k entries of the last one.

Every strategy keeps the request's shape and its invariants: in each row the real items come
first, with descending scores, and the empty slots (-1, score -inf) after them; no item twice.
Score-based strategies (cold_start's blend, freshness, popularity) rescore and re-sort the list;
order-based ones (mmr, fairness, new_items) choose an order and replace the scores by descending
positions, so a score-based strategy placed after them sees rank, not the client's relevance.
Put score-based strategies first.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from pprsf_jax.types import TopTRequest


class RerankContext(NamedTuple):
  """Public, server-side facts a strategy may use."""

  genres: jax.Array  # [M, G] float32 item genres
  popularity: jax.Array  # [M] float32 public interaction counts (0: a new item)
  known: jax.Array  # [U, X] int32 each user's public history (-1 padded): never recommended again
  cold: jax.Array  # [U] bool users with no public history
  year: jax.Array  # [M] float32 release year, standardised over the catalogue; 0 where unknown
  year_known: jax.Array  # [M] float32 1 where the release year is known


Strategy = Callable[[TopTRequest, RerankContext], TopTRequest]
# [M] bool: the items a strategy may add to a list (business rules; see `rules.allowed_items`).
ItemFilter = Callable[[RerankContext], jax.Array]


def compose(*strategies: Strategy) -> Strategy:
  """Applies strategies in order."""

  def run(request: TopTRequest, context: RerankContext) -> TopTRequest:
    for strategy in strategies:
      request = strategy(request, context)
    return request

  return run


def standardise(values: jax.Array, valid: jax.Array) -> jax.Array:
  """`values` as z-scores over the `valid` entries of each row (last axis); -inf elsewhere.

  A constant row gives zeros, not NaN.
  """
  count = jnp.maximum(jnp.sum(valid, axis=-1, keepdims=True), 1)
  mean = jnp.sum(jnp.where(valid, values, 0.0), axis=-1, keepdims=True) / count
  spread = jnp.where(valid, (values - mean) ** 2, 0.0)
  std = jnp.sqrt(jnp.sum(spread, axis=-1, keepdims=True) / count + 1e-9)
  return jnp.where(valid, (values - mean) / std, -jnp.inf)


def sort_by(items: jax.Array, scores: jax.Array) -> TopTRequest:
  """[U, T] items re-sorted by new `scores` (-inf for empty slots), descending; ties keep
  their order, so equal scores never swap items."""
  order = jnp.argsort(-scores, axis=-1, stable=True)
  return TopTRequest(items=jnp.take_along_axis(items, order, axis=-1),
                     scores=jnp.take_along_axis(scores, order, axis=-1))


def shifted_by(weight: float, item_values: Callable[[RerankContext], jax.Array]) -> Strategy:
  """Re-sorts each list by z(relevance) + weight * item_values(context)[item]: the shape of
  every strategy that adds a per-item prior (freshness, popularity) to the client's scores."""

  def run(request: TopTRequest, context: RerankContext) -> TopTRequest:
    valid = request.items >= 0
    prior = item_values(context)[jnp.clip(request.items, 0)]
    return sort_by(request.items, standardise(request.scores, valid) + weight * prior)

  return run


def position_scores(items: jax.Array) -> jax.Array:
  """Scores for a list whose order is the ranking: T, T - 1, ... on real items, -inf on empty."""
  length = items.shape[-1]
  positions = jnp.broadcast_to((length - jnp.arange(length)).astype(jnp.float32), items.shape)
  return jnp.where(items >= 0, positions, -jnp.inf)


def final_list(request: TopTRequest, k: int) -> jax.Array:
  """[U, k] int32: the first k items of each re-ranked list."""
  return request.items[:, :k]
