"""Exposure fairness across popularity groups: a tail-item quota in the top of each list.

Items fall into two groups by public popularity: the head, the most popular items making up
`head_share` of the catalogue (ties broken by item id; never an item nobody interacted with),
and the tail, the rest. Each list is rebuilt greedily (the constrained greedy of FA*IR, Zehlike
et al., 2017, with a proportional table in place of its binomial one): every prefix of p of its
first L = min(list_length, real items) positions holds at least

    m(p) = max(floor(share * p), ceil(share * L) - (L - p))

tail items: the proportional floor, raised near the end just enough that m(L) = ceil(share * L)
stays reachable one position at a time. So at least `share` of the top L are tail items, spread
through it rather than piled at its end. At each position the greedy takes the most relevant
remaining item, or the most relevant remaining tail item when the table requires one; past L
the rest follow in relevance order. A list whose Top-T holds fewer than m(L) tail items keeps
its order (the quota cannot be met); a list that already meets every m(p) keeps it too (the
greedy then reproduces it).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from pprsf_jax.rerank.base import RerankContext, Strategy, position_scores
from pprsf_jax.types import TopTRequest


def head_items(popularity: jax.Array, head_share: float) -> jax.Array:
  """[M] bool the head group: the ceil(head_share * M) most popular items with any count."""
  num_items = popularity.shape[0]
  num_head = math.ceil(head_share * num_items - 1e-9)
  rank = jnp.zeros(num_items, jnp.int32).at[jnp.argsort(-popularity, stable=True)].set(
      jnp.arange(num_items, dtype=jnp.int32))
  return (rank < num_head) & (popularity > 0)


def _quota(length: int, covered: jax.Array, share: float) -> jax.Array:
  """[length] int32 m(p) for prefixes p = 1..length (0 past L = `covered`); it grows by at most
  one per position, which is what lets the greedy meet it."""
  prefix = jnp.arange(1, length + 1)
  # The 1e-6 keeps float32 rounding of share * p off integer boundaries.
  tail_floor = jnp.floor(share * prefix + 1e-6).astype(jnp.int32)
  at_end = jnp.ceil(share * covered - 1e-6).astype(jnp.int32)
  return jnp.where(prefix <= covered, jnp.maximum(tail_floor, at_end - (covered - prefix)), 0)


def _one_user(items, is_tail, list_length, share):
  length = items.shape[0]
  valid = items >= 0
  quota = _quota(length, jnp.minimum(jnp.sum(valid), list_length), share)
  feasible = jnp.sum(valid & is_tail) >= jnp.max(quota)
  slot = jnp.arange(length)  # lower slot = more relevant: the input is in relevance order

  def pick(carry, needed):
    chosen, tails = carry
    candidate = valid & ~chosen & (is_tail | (tails >= needed))
    best = jnp.argmin(jnp.where(candidate, slot, length))
    ok = candidate[best]
    chosen = chosen.at[best].set(chosen[best] | ok)
    tails = tails + (ok & is_tail[best]).astype(jnp.int32)
    return (chosen, tails), jnp.where(ok, items[best], -1)

  init = (jnp.zeros(length, bool), jnp.zeros((), jnp.int32))
  _, order = jax.lax.scan(pick, init, quota)
  return jnp.where(feasible, order, items)


def fairness(head_share: float, min_tail_share: float, list_length: int) -> Strategy:
  """At least `min_tail_share` tail items in the first `list_length` positions, when possible.

  Args:
    head_share: Share of the catalogue (the most popular items) in the head group.
    min_tail_share: Required share of tail items in the first `list_length` positions, spread
      by the prefix table in the module docstring.
    list_length: How many leading positions the quota covers (usually eval.top_k).

  >>> import numpy as np
  >>> context = RerankContext(genres=jnp.ones((4, 1)), popularity=jnp.array([9.0, 8.0, 1.0, 1.0]),
  ...     known=-jnp.ones((1, 1), jnp.int32), cold=jnp.zeros(1, bool),
  ...     year=jnp.zeros(4), year_known=jnp.zeros(4))
  >>> request = TopTRequest(items=jnp.array([[0, 1, 2, 3]]),
  ...                       scores=jnp.array([[4.0, 3.0, 2.0, 1.0]]))
  >>> np.asarray(fairness(0.5, 0.5, 2)(request, context).items).tolist()  # 0, 1 are the head
  [[0, 2, 1, 3]]
  """

  def run(request: TopTRequest, context: RerankContext) -> TopTRequest:
    is_tail = ~head_items(context.popularity, head_share)[jnp.clip(request.items, 0)]
    items = jax.vmap(_one_user, in_axes=(0, 0, None, None))(
        request.items, is_tail, list_length, min_tail_share)
    # A list left as it was keeps its scores; a rebuilt one is ranked by position.
    same = jnp.all(items == request.items, axis=1, keepdims=True)
    return TopTRequest(items=items, scores=jnp.where(same, request.scores, position_scores(items)))

  return run
