"""Item-item neighbours from public co-occurrence (cosine on the binary user-item matrix).

The server ships each candidate's neighbour list with the candidates; a client scores a
candidate against its *whole* history, private items included, on the device. The server never
learns which neighbours matched.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from pprsf_jax.recall.model import RecallParams
from pprsf_jax.types import Interactions

# The dense [users, items] matrix this implementation builds must stay well inside memory.
MAX_DENSE_ENTRIES = 2**30


class ItemNeighbors(NamedTuple):
  items: np.ndarray  # [M, P] int32 the P most similar items of each item (-1 pads)
  similarity: np.ndarray  # [M, P] float32 cosine similarity, descending (0 for padding)


@functools.partial(jax.jit, static_argnames=("num_neighbors",))
def _neighbors_of_chunk(matrix, norms, chunk_items, *, num_neighbors):
  co_counts = matrix[:, chunk_items].T @ matrix  # [c, M]
  cosine = co_counts / jnp.maximum(norms[chunk_items][:, None] * norms[None, :], 1e-9)
  cosine = cosine.at[jnp.arange(chunk_items.shape[0]), chunk_items].set(0.0)  # not its own neighbour
  similarity, items = jax.lax.top_k(cosine, num_neighbors)
  return jnp.where(similarity > 0, items, -1), jnp.maximum(similarity, 0.0)


def item_neighbors(interactions: Interactions, num_users: int, num_items: int, *,
                   num_neighbors: int, item_chunk: int = 512) -> ItemNeighbors:
  """Top-`num_neighbors` cosine neighbours of every item from public interactions."""
  if num_users * num_items > MAX_DENSE_ENTRIES:
    raise ValueError(
        f"item_neighbors builds a dense {num_users} x {num_items} matrix, over the "
        f"{MAX_DENSE_ENTRIES} entries this implementation allows")
  num_neighbors = min(num_neighbors, num_items - 1)
  matrix = jnp.zeros((num_users, num_items), jnp.float32).at[
      interactions.user, interactions.item].set(1.0)
  norms = jnp.sqrt(jnp.sum(matrix, axis=0))
  items, similarity = [], []
  for start in range(0, num_items, item_chunk):
    chunk = np.arange(start, start + item_chunk) % num_items  # fixed shape; wrapped rows dropped
    ids, sims = _neighbors_of_chunk(matrix, norms, jnp.asarray(chunk), num_neighbors=num_neighbors)
    keep = min(item_chunk, num_items - start)
    items.append(np.asarray(ids)[:keep])
    similarity.append(np.asarray(sims)[:keep])
  return ItemNeighbors(items=np.concatenate(items).astype(np.int32),
                       similarity=np.concatenate(similarity).astype(np.float32))


def train_item_knn(interactions: Interactions, neighbors: ItemNeighbors, num_users: int,
                   num_items: int) -> RecallParams:
  """ItemKNN as a factorised scorer: score(u, j) = sum of sim(i, j) over the items i in u's
  public history, sim the cosine of each item i to its listed neighbours j (Sarwar et al., 2001;
  `neighbors` from `item_neighbors` on the same interactions).

  The user vector is u's history row [M] and item j's vector the column sim(., j) [M], so the
  chunked retrieval of every other recall model serves it unchanged (D = M: for catalogues far
  beyond 10^4 items a sparse scorer would be needed).
  """
  rows = np.repeat(np.arange(num_items), neighbors.items.shape[1])
  columns = neighbors.items.reshape(-1)
  keep = columns >= 0
  similarity = np.zeros((num_items, num_items), np.float32)  # [i, j] = sim(i -> j)
  similarity[rows[keep], columns[keep]] = neighbors.similarity.reshape(-1)[keep]
  history = np.zeros((num_users, num_items), np.float32)
  history[interactions.user, interactions.item] = 1.0
  return RecallParams(user=jnp.asarray(history), item=jnp.asarray(similarity.T),
                      item_bias=jnp.zeros((num_items,), jnp.float32))
