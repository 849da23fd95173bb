"""Business rules: filters on what a list may hold.

* `exclude_columns`: no item carrying any of these genres (columns of the catalogue's genre
  matrix; the config names them, `RerankConfig.rules_exclude_genres`, and resolves the names
  against `pprsf_jax.data.movielens.GENRES`).
* `max_per_genre` (0 = off): at most this many items with the same primary genre (an item's
  first genre column that is set; an item with none is never capped). The most relevant ones
  stay: the cap is applied in list order.

Removed items leave the list: the kept ones move to the front, in their order and with their
scores, and the freed slots at the end become empty (-1, -inf), for a later `cold_start` or
`new_items` to fill. Those fill only with items `allowed_items` allows (the registry gives them
this filter whenever `rules` is configured), and the registry ends the chain with `rules` again
when it is not last, so the final lists obey the rules wherever `rules` sits; its position only
decides what the strategies after it see.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp

from pprsf_jax.rerank.base import ItemFilter, RerankContext, Strategy
from pprsf_jax.types import TopTRequest


def allowed_items(genres: jax.Array, exclude_columns: Sequence[int]) -> jax.Array:
  """[M] bool items carrying none of the excluded genre columns.

  Raises:
    ValueError: A column is outside the catalogue's genre matrix.
  """
  bad = [column for column in exclude_columns if not 0 <= column < genres.shape[1]]
  if bad:
    raise ValueError(f"rules: genre columns {bad} outside the catalogue's {genres.shape[1]}")
  if not exclude_columns:
    return jnp.ones(genres.shape[0], bool)
  return ~jnp.any(genres[:, jnp.asarray(exclude_columns)] > 0, axis=1)


def item_filter(exclude_columns: Sequence[int]) -> ItemFilter:
  """What strategies that add to a list may add under the rules (see `cold_start`)."""
  exclude_columns = tuple(exclude_columns)
  return lambda context: allowed_items(context.genres, exclude_columns)


def primary_genre(genres: jax.Array) -> jax.Array:
  """[M] int32 each item's first set genre column; -1 for an item with no genre."""
  has_genre = genres > 0
  return jnp.where(jnp.any(has_genre, axis=1), jnp.argmax(has_genre, axis=1), -1)


def _one_user(items, scores, allowed, primary, max_per_genre):
  length = items.shape[0]
  keep = (items >= 0) & allowed[jnp.clip(items, 0)]
  if max_per_genre:
    genre = jnp.where(keep, primary[jnp.clip(items, 0)], -1)
    earlier = jnp.tril(jnp.ones((length, length), bool), k=-1)  # [i, j]: j is before i
    same = (genre[:, None] == genre[None, :]) & (genre[:, None] >= 0) & earlier
    keep &= jnp.sum(same, axis=1) < max_per_genre  # earlier ones are kept first
  order = jnp.argsort(~keep, stable=True)  # kept items first, in list order
  kept = keep[order]
  return jnp.where(kept, items[order], -1), jnp.where(kept, scores[order], -jnp.inf)


def rules(exclude_columns: Sequence[int] = (), max_per_genre: int = 0) -> Strategy:
  """Drops excluded-genre items and caps items per primary genre; the rest move up.

  Args:
    exclude_columns: Genre columns; an item carrying any of them is removed.
    max_per_genre: At most this many items per primary genre (0: no cap).

  >>> import numpy as np
  >>> genres = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 1.0]])
  >>> context = RerankContext(genres=genres, popularity=jnp.ones(4),
  ...     known=-jnp.ones((1, 1), jnp.int32), cold=jnp.zeros(1, bool),
  ...     year=jnp.zeros(4), year_known=jnp.zeros(4))
  >>> request = TopTRequest(items=jnp.array([[0, 1, 2, 3]]),
  ...                       scores=jnp.array([[4.0, 3.0, 2.0, 1.0]]))
  >>> np.asarray(rules((0,))(request, context).items).tolist()  # no item of genre 0
  [[1, 3, -1, -1]]
  """
  exclude_columns = tuple(exclude_columns)

  def run(request: TopTRequest, context: RerankContext) -> TopTRequest:
    one_user = functools.partial(_one_user, max_per_genre=max_per_genre)  # static: a Python int
    items, scores = jax.vmap(one_user, in_axes=(0, 0, None, None))(
        request.items, request.scores, allowed_items(context.genres, exclude_columns),
        primary_genre(context.genres))
    return TopTRequest(items=items, scores=scores)

  return run
