"""The re-rank interface: strategies map each user's ranked list to a new ranked list.

A strategy is a pure function `(TopTRequest, RerankContext) -> TopTRequest` over [U, T] arrays
(written for one user and vmapped where that is clearer). Strategies compose left to right; the
final list is the first k entries of the last one.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax

from pprsf_jax.types import TopTRequest


class RerankContext(NamedTuple):
  """Public, server-side facts a strategy may use."""

  genres: jax.Array  # [M, G] float32 item genres
  popularity: jax.Array  # [M] float32 public interaction counts
  known: jax.Array  # [U, X] int32 each user's public history (-1 padded): never recommended again
  cold: jax.Array  # [U] bool users with no public history


Strategy = Callable[[TopTRequest, RerankContext], TopTRequest]


def compose(*strategies: Strategy) -> Strategy:
  """Applies strategies in order."""

  def run(request: TopTRequest, context: RerankContext) -> TopTRequest:
    for strategy in strategies:
      request = strategy(request, context)
    return request

  return run


def final_list(request: TopTRequest, k: int) -> jax.Array:
  """[U, k] int32: the first k items of each re-ranked list."""
  return request.items[:, :k]
