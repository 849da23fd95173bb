"""Top-K retrieval, chunked over users and items so an [N, M] score matrix never exists.

Memory is bounded by [user_chunk, item_chunk + K] scores on the device, whatever N and M are; a
user's excluded items (its known history) are masked chunk by chunk. Each chunk's best can be
selected exactly (`jax.lax.top_k`) or approximately (`jax.lax.approx_max_k`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from pprsf_jax.progress import steps
from pprsf_jax.recall.model import RecallParams
from pprsf_jax.types import Candidates, Interactions


def padded_item_lists(interactions: Interactions, num_users: int) -> np.ndarray:
  """Each user's items as one row, right-padded with -1: [N, max items per user] int32."""
  counts = np.bincount(interactions.user, minlength=num_users)
  width = max(int(counts.max(initial=0)), 1)
  order = np.argsort(interactions.user, kind="stable")
  users, items = interactions.user[order], interactions.item[order]
  starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
  columns = np.arange(len(users)) - starts[users]
  table = np.full((num_users, width), -1, np.int32)
  table[users, columns] = items
  return table


@functools.partial(jax.jit, static_argnames=("k", "item_chunk", "approximate", "recall_target"))
def _top_k_for_users(user_vectors, item_vectors, item_bias, excluded, *, k, item_chunk,
                     approximate, recall_target):
  """Top-k items for a chunk of users, scanning the catalogue in chunks of `item_chunk`."""
  num_users = user_vectors.shape[0]
  num_chunks = item_vectors.shape[0] // item_chunk
  rows = jnp.arange(num_users)[:, None]

  def scan_chunk(best, chunk):
    best_scores, best_items = best
    start = chunk * item_chunk
    vectors = jax.lax.dynamic_slice_in_dim(item_vectors, start, item_chunk)
    bias = jax.lax.dynamic_slice_in_dim(item_bias, start, item_chunk)
    scores = user_vectors @ vectors.T + bias[None, :]
    inside = (excluded >= start) & (excluded < start + item_chunk)
    columns = jnp.where(inside, excluded - start, item_chunk)  # out of range: dropped
    scores = scores.at[rows, columns].set(-jnp.inf, mode="drop")
    # The chunk's own best first ([U, k], not [U, item_chunk], enters the merge). Only this
    # selection may be approximate; the merge with the running best below stays exact, so an
    # item once kept is never lost to a later chunk's approximation.
    if approximate:
      scores, position = jax.lax.approx_max_k(scores, min(k, item_chunk),
                                              recall_target=recall_target)
    else:
      scores, position = jax.lax.top_k(scores, min(k, item_chunk))
    ids = start + position.astype(jnp.int32)
    merged_scores = jnp.concatenate([best_scores, scores], axis=1)
    merged_items = jnp.concatenate([best_items, ids], axis=1)
    top_scores, position = jax.lax.top_k(merged_scores, k)
    return (top_scores, jnp.take_along_axis(merged_items, position, axis=1)), None

  init = (jnp.full((num_users, k), -jnp.inf, jnp.float32), jnp.full((num_users, k), -1, jnp.int32))
  (scores, items), _ = jax.lax.scan(scan_chunk, init, jnp.arange(num_chunks))
  items = jnp.where(jnp.isfinite(scores), items, -1)
  return scores, items


def retrieve(params: RecallParams, k: int, exclude: Interactions, *, users: np.ndarray | None = None,
             user_chunk: int = 1024, item_chunk: int = 8192, approximate: bool = False,
             recall_target: float = 0.95) -> Candidates:
  """The k best-scoring items per user, excluding items in `exclude`.

  Args:
    params: a trained recall model.
    k: candidates per user; rows are padded with item -1 (score -inf) where fewer items remain.
    exclude: (user, item) pairs never to return, typically the user's known history.
    users: which users (default all); ids index `params.user`.
    user_chunk: users scored per device call.
    item_chunk: catalogue items scored per scan step.
    approximate: select each chunk's best with `jax.lax.approx_max_k` (Chern et al., 2022)
      instead of an exact top-k: much faster on TPU; XLA's CPU and GPU fallback may be exact.
      Excluded items are masked before the selection, so they are never returned either way.
    recall_target: with `approximate`, the expected share of each chunk's exact top-k kept.

  Returns:
    Candidates with items and scores of shape [len(users), k], best first.

  Example:
    >>> import jax.numpy as jnp
    >>> from pprsf_jax.types import Interactions
    >>> params = RecallParams(user=jnp.ones((1, 1)), item=jnp.arange(4.0)[:, None],
    ...                       item_bias=jnp.zeros(4))
    >>> seen = Interactions(np.array([0], np.int32), np.array([3], np.int32))
    >>> retrieve(params, 2, seen).items.tolist()
    [[2, 1]]
  """
  num_users, num_items = params.user.shape[0], params.item.shape[0]
  if not 1 <= k <= num_items:
    raise ValueError(f"retrieve: k={k} must be in [1, num_items={num_items}]")
  users = np.arange(num_users) if users is None else np.asarray(users)
  item_chunk = min(item_chunk, num_items)
  padded_items = -(-num_items // item_chunk) * item_chunk
  # Padding items score -inf, so they never enter a top-k.
  item_vectors = jnp.pad(params.item, ((0, padded_items - num_items), (0, 0)))
  item_bias = jnp.pad(params.item_bias, (0, padded_items - num_items), constant_values=-jnp.inf)
  excluded_table = padded_item_lists(exclude, num_users)
  user_chunk = min(user_chunk, max(len(users), 1))

  all_scores, all_items = [], []
  for start in steps(range(0, len(users), user_chunk), desc="retrieval: user chunks"):
    chunk_users = users[start:start + user_chunk]
    pad = user_chunk - len(chunk_users)  # a constant chunk shape: one compilation
    chunk_users = np.pad(chunk_users, (0, pad))
    scores, items = _top_k_for_users(
        params.user[chunk_users], item_vectors, item_bias,
        jnp.asarray(excluded_table[chunk_users]), k=k, item_chunk=item_chunk,
        approximate=approximate, recall_target=float(recall_target))
    all_scores.append(np.asarray(scores)[: user_chunk - pad])
    all_items.append(np.asarray(items)[: user_chunk - pad])
  return Candidates(items=np.concatenate(all_items), scores=np.concatenate(all_scores))


def rank_given(params: RecallParams, items: np.ndarray, *, user_chunk: int) -> Candidates:
  """Orders each user's own given items [U, S] (-1 = empty) by the model's score: the server's
  candidate list for a fixed item set (the sampled-negatives protocol). Chunked over users."""
  scores = np.empty(items.shape, np.float32)
  for start in range(0, items.shape[0], user_chunk):
    rows = slice(start, start + user_chunk)
    block = jnp.asarray(np.maximum(items[rows], 0))
    users = jnp.arange(start, start + block.shape[0])
    got = (jnp.einsum("ud,usd->us", params.user[users], params.item[block])
           + params.item_bias[block])
    scores[rows] = np.asarray(got)
  scores = np.where(items >= 0, scores, -np.inf)
  order = np.argsort(-scores, axis=1, kind="stable")
  ranked = np.take_along_axis(items, order, 1)
  ranked_scores = np.take_along_axis(scores, order, 1)
  return Candidates(items=ranked.astype(np.int32),
                    scores=np.where(ranked >= 0, ranked_scores, 0.0).astype(np.float32))
