"""Freshness: favour recent releases.

Each item's new score is

    z(relevance) + w * freshness,   freshness = standardised release year (0 where unknown),

with z a z-score over the user's real items and the year standardised over the catalogue
(`RerankContext.year`), so w is in units of "one list-spread of relevance per catalogue-spread
of years". w > 0 favours recent releases, w < 0 older ones, w = 0 keeps the client's order.
"""

from __future__ import annotations

import jax.numpy as jnp

from pprsf_jax.rerank.base import RerankContext, Strategy, shifted_by


def item_freshness(context: RerankContext) -> jnp.ndarray:
  """[M] float32 each item's standardised release year, 0 where the year is unknown."""
  return jnp.where(context.year_known > 0, context.year, 0.0)


def freshness(weight: float) -> Strategy:
  """Re-sorts each list by z(relevance) + weight * standardised release year.

  >>> import numpy as np
  >>> from pprsf_jax.types import TopTRequest
  >>> context = RerankContext(genres=jnp.ones((3, 1)), popularity=jnp.ones(3),
  ...     known=-jnp.ones((1, 1), jnp.int32), cold=jnp.zeros(1, bool),
  ...     year=jnp.array([-1.0, 0.0, 1.0]), year_known=jnp.ones(3))
  >>> request = TopTRequest(items=jnp.array([[0, 1, 2]]), scores=jnp.array([[3.0, 2.0, 1.0]]))
  >>> np.asarray(freshness(10.0)(request, context).items).tolist()
  [[2, 1, 0]]
  """

  return shifted_by(weight, item_freshness)
