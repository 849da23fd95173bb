"""Cold start for new items: reserved slots for items nobody has interacted with yet.

A new item is one with no interaction in the public log (`RerankContext.popularity == 0`); no
collaborative signal can reach it, so recall and ranking rarely propose it. Each list gets up
to `slots` of them, inserted together at 0-based `position` (or right after the last real item
when the list is shorter, and never past the end of the [T] list); the items below move down and
the last ones fall off.

Which new items: the most similar by content — cosine of genre vectors — to the user's profile,
the sum of the genre vectors of its public history (`RerankContext.known`). A user with no
public history (or none with a genre) gets the catalogue's profile instead, each item's genres
weighted by its public count: the new items closest to what is popular. Ties go to the lower
item id, so with no genre signal at all the first new items by id come first. An item the user
already knows or already has in the list is never inserted; with no eligible new item the list
is left exactly as it was.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pprsf_jax.rerank.base import ItemFilter, RerankContext, Strategy, position_scores
from pprsf_jax.types import TopTRequest


def _unit(vectors: jax.Array) -> jax.Array:
  return vectors / jnp.maximum(jnp.linalg.norm(vectors, axis=-1, keepdims=True), 1e-9)


def _one_user(items, scores, known, *, genres, unit_genres, eligible, fallback, slots,
              position):
  length, num_items = items.shape[0], genres.shape[0]
  profile = jnp.sum(jnp.where((known >= 0)[:, None], genres[jnp.clip(known, 0)], 0.0), axis=0)
  profile = jnp.where(jnp.any(profile > 0), profile, fallback)
  similarity = unit_genres @ _unit(profile)
  # Out-of-range indices are dropped: -1 (empty) entries mark nothing.
  usable = eligible.at[jnp.where(known >= 0, known, num_items)].set(False, mode="drop")
  usable = usable.at[jnp.where(items >= 0, items, num_items)].set(False, mode="drop")
  best, chosen = jax.lax.top_k(jnp.where(usable, similarity, -jnp.inf), slots)
  found = jnp.isfinite(best)  # the found ones come first
  count = jnp.sum(found)
  real = jnp.sum(items >= 0)
  start = jnp.minimum(jnp.minimum(position, real), length - count)

  slot = jnp.arange(length)
  inserted = (slot >= start) & (slot < start + count)
  shifted = items[jnp.clip(jnp.where(slot < start, slot, slot - count), 0, length - 1)]
  new = jnp.where(inserted, chosen[jnp.clip(slot - start, 0, slots - 1)], shifted)
  return (jnp.where(count > 0, new, items),
          jnp.where(count > 0, position_scores(new), scores))


def new_items(slots: int = 1, position: int = 5, *, item_filter: ItemFilter | None = None,
              user_batch: int = 256) -> Strategy:
  """Inserts each user's `slots` content-nearest new items at `position`.

  Args:
    slots: How many new items each list gets (at most; fewer when fewer are eligible).
    position: The 0-based position of the first one.
    item_filter: Only items it allows are inserted (None: every item).
    user_batch: Users scored at once against the whole catalogue ([user_batch, M] floats).

  >>> import numpy as np
  >>> context = RerankContext(genres=jnp.eye(3), popularity=jnp.array([5.0, 0.0, 0.0]),
  ...     known=jnp.array([[0]]), cold=jnp.zeros(1, bool),
  ...     year=jnp.zeros(3), year_known=jnp.zeros(3))
  >>> request = TopTRequest(items=jnp.array([[0, -1, -1]]),
  ...                       scores=jnp.array([[1.0, -jnp.inf, -jnp.inf]]))
  >>> np.asarray(new_items(1, 0)(request, context).items).tolist()  # no genre match: lowest id
  [[1, 0, -1]]
  """

  def run(request: TopTRequest, context: RerankContext) -> TopTRequest:
    length, num_items = request.items.shape[1], context.popularity.shape[0]
    take = min(slots, length, num_items)
    if take == 0:
      return request
    eligible = jnp.asarray(context.popularity) == 0
    if item_filter is not None:
      eligible &= item_filter(context)
    unit_genres = _unit(context.genres)
    fallback = context.popularity @ context.genres  # [G] the catalogue's public profile

    def one_user(row):
      return _one_user(*row, genres=context.genres, unit_genres=unit_genres, eligible=eligible,
                       fallback=fallback, slots=take, position=position)

    items, scores = jax.lax.map(one_user, (request.items, request.scores, context.known),
                                batch_size=user_batch)
    return TopTRequest(items=items, scores=scores)

  return run
