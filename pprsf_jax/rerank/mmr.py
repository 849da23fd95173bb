"""Maximal marginal relevance (Carbonell & Goldstein, 1998) over genre similarity."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pprsf_jax.rerank.base import RerankContext, Strategy, position_scores
from pprsf_jax.types import TopTRequest


def _mmr_one_user(items, scores, genres, trade_off):
  length = items.shape[0]
  valid = items >= 0
  finite = jnp.where(valid, scores, 0.0)
  low = jnp.min(jnp.where(valid, scores, jnp.inf))
  high = jnp.max(jnp.where(valid, scores, -jnp.inf))
  relevance = jnp.where(valid, (finite - low) / jnp.maximum(high - low, 1e-9), 0.0)
  vectors = genres[jnp.clip(items, 0)]
  vectors = vectors / jnp.maximum(jnp.linalg.norm(vectors, axis=-1, keepdims=True), 1e-9)
  similarity = vectors @ vectors.T

  def pick(carry, position):
    chosen, max_similarity = carry
    redundancy = jnp.where(position > 0, max_similarity, 0.0)
    value = trade_off * relevance - (1.0 - trade_off) * redundancy
    value = jnp.where(valid & ~chosen, value, -jnp.inf)
    best = jnp.argmax(value)
    ok = jnp.isfinite(value[best])
    chosen = chosen.at[best].set(chosen[best] | ok)
    max_similarity = jnp.where(ok, jnp.maximum(max_similarity, similarity[best]), max_similarity)
    return (chosen, max_similarity), jnp.where(ok, items[best], -1)

  init = (jnp.zeros(length, bool), jnp.zeros(length, jnp.float32))
  _, order = jax.lax.scan(pick, init, jnp.arange(length))
  return order


def mmr(trade_off: float) -> Strategy:
  """Greedy MMR: each next item maximises trade_off * relevance - (1 - trade_off) * max genre
  cosine similarity to the items already chosen. trade_off = 1 keeps the input order."""

  def run(request: TopTRequest, context: RerankContext) -> TopTRequest:
    items = jax.vmap(_mmr_one_user, in_axes=(0, 0, None, None))(
        request.items, request.scores, context.genres, trade_off)
    # The new order is the ranking; scores become descending positions.
    return TopTRequest(items=items, scores=position_scores(items))

  return run
