"""Cold start: popularity for users the server knows nothing about, and for empty slots.

A user with no public history got recall candidates scored by item bias alone; here its list is
blended toward public popularity, and any empty slot (a client that returned fewer than T items,
or none) is filled with the most popular items the user has not already seen (and, given an
item filter, that the business rules allow: `rules`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pprsf_jax.rerank.base import ItemFilter, RerankContext, Strategy, standardise
from pprsf_jax.types import TopTRequest


def _one_user(items, scores, known, cold, popularity, popular_items, weight):
  length = items.shape[0]
  valid = items >= 0
  blended = (1.0 - weight) * standardise(scores, valid) + weight * standardise(
      jnp.log1p(popularity[jnp.clip(items, 0)]), valid)
  new_scores = jnp.where(cold, blended, jnp.where(valid, scores, -jnp.inf))
  order = jnp.argsort(-new_scores, stable=True)
  items, new_scores = items[order], new_scores[order]
  valid = items >= 0

  # Fill empty slots from the popularity list, skipping items already listed or seen (-1: the
  # pool ran out of allowed items).
  taken = jnp.any(popular_items[:, None] == items[None, :], axis=1) | (popular_items < 0)
  known = jnp.sort(known)
  seen = known[jnp.clip(jnp.searchsorted(known, popular_items), 0, known.shape[0] - 1)] == popular_items
  eligible = ~(taken | seen)
  rank = jnp.cumsum(eligible)  # 1-based rank among eligible popular items
  num_valid = jnp.sum(valid)
  slot = jnp.arange(length)
  wanted = slot - num_valid + 1  # which eligible popular item fills this empty slot
  source = jnp.searchsorted(rank, wanted)  # first index with rank >= wanted
  available = (wanted >= 1) & (source < popular_items.shape[0])
  fill = jnp.where(available, popular_items[jnp.clip(source, 0, popular_items.shape[0] - 1)], -1)
  floor = jnp.min(jnp.where(valid, new_scores, 0.0))
  fill_scores = jnp.where(available, floor - 1.0 - slot, -jnp.inf)
  return jnp.where(valid, items, fill), jnp.where(valid, new_scores, fill_scores)


def cold_start(popularity_weight: float, *, item_filter: ItemFilter | None = None) -> Strategy:
  """Blends cold users' lists toward popularity; fills empty slots with popular unseen items.

  Args:
    popularity_weight: For users with no public history, the new score is
      (1 - w) * z(relevance) + w * z(log(1 + public count)), z a z-score over the user's list.
    item_filter: Fills draw only from the items it allows (None: every item).
  """

  def run(request: TopTRequest, context: RerankContext) -> TopTRequest:
    length = request.items.shape[1]
    pool = length + context.known.shape[1] + length  # enough to skip every listed or seen item
    fillable = context.popularity
    if item_filter is not None:
      fillable = jnp.where(item_filter(context), fillable, -jnp.inf)
    drawn, popular_items = jax.lax.top_k(fillable, min(pool, fillable.shape[0]))
    popular_items = jnp.where(jnp.isfinite(drawn), popular_items, -1)
    items, scores = jax.vmap(_one_user, in_axes=(0, 0, 0, 0, None, None, None))(
        request.items, request.scores, context.known, context.cold, context.popularity,
        popular_items.astype(jnp.int32), popularity_weight)
    return TopTRequest(items=items, scores=scores)

  return run
