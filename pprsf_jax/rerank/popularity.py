"""Popularity calibration: move popular items up (w > 0) or down (w < 0, debiasing).

Each item's new score is

    z(relevance) + w * p,   p = log(1 + public count), standardised over the catalogue,

with z a z-score over the user's real items. w > 0 boosts popular items (a safer, more
accurate-looking list); w < 0 debiases toward the long tail (more novelty and exposure for
unpopular items, usually at some accuracy); w = 0 keeps the client's order. The counts are the
public log's (`RerankContext.popularity`), so p is a fixed property of the item, the same in
every list.
"""

from __future__ import annotations

import jax.numpy as jnp

from pprsf_jax.rerank.base import RerankContext, Strategy, shifted_by, standardise


def item_popularity(context: RerankContext) -> jnp.ndarray:
  """[M] float32 each item's log(1 + public count), standardised over the catalogue."""
  log_counts = jnp.log1p(context.popularity)
  return standardise(log_counts, jnp.ones(log_counts.shape, bool))


def popularity(weight: float) -> Strategy:
  """Re-sorts each list by z(relevance) + weight * standardised log(1 + public count).

  >>> import numpy as np
  >>> from pprsf_jax.types import TopTRequest
  >>> context = RerankContext(genres=jnp.ones((3, 1)), popularity=jnp.array([0.0, 10.0, 100.0]),
  ...     known=-jnp.ones((1, 1), jnp.int32), cold=jnp.zeros(1, bool),
  ...     year=jnp.zeros(3), year_known=jnp.zeros(3))
  >>> request = TopTRequest(items=jnp.array([[2, 1, 0]]), scores=jnp.array([[3.0, 2.0, 1.0]]))
  >>> np.asarray(popularity(-10.0)(request, context).items).tolist()  # debiased: tail first
  [[0, 1, 2]]
  """

  return shifted_by(weight, item_popularity)
