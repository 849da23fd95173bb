"""LightGCN (He et al., 2020): embeddings smoothed over the public user-item graph.

Layer l + 1 of a node is the sum of its neighbours' layer-l embeddings, each edge (u, i) weighted
1 / sqrt(deg u * deg i) (the symmetric-normalised adjacency, no self loops, no transforms and no
non-linearity); the final embedding is the mean of layers 0..L. Propagation runs over the edge
list with `jax.ops.segment_sum`, so memory is O(E * D): no (N + M)^2 or N x M matrix exists.
Training is BPR on the final embeddings with L2 on the batch's layer-0 embeddings, as in the
paper; each step propagates the whole graph (it is what the gradient needs).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from pprsf_jax.progress import steps
from pprsf_jax.config import RecallConfig
from pprsf_jax.recall.model import RecallParams, average_for_cold_users
from pprsf_jax.recall.sampling import positive_keys, shuffled_triples
from pprsf_jax.types import Interactions


class Graph(NamedTuple):
  """The bipartite interaction graph as a normalised edge list, sorted by user."""

  users: jax.Array  # [E] int32 user end of each edge
  items: jax.Array  # [E] int32 item end
  weight: jax.Array  # [E] float32 1 / sqrt(deg(user) * deg(item))


class Embeddings(NamedTuple):
  """LightGCN's trainable parameters: the layer-0 embeddings."""

  user: jax.Array  # [N, D] float32
  item: jax.Array  # [M, D] float32


def build_graph(interactions: Interactions, num_users: int, num_items: int) -> Graph:
  """The normalised graph of the distinct (user, item) pairs of `interactions`."""
  keys = np.unique(interactions.user.astype(np.int64) * num_items + interactions.item)
  users, items = (keys // num_items).astype(np.int32), (keys % num_items).astype(np.int32)
  user_degree = np.bincount(users, minlength=num_users).astype(np.float64)
  item_degree = np.bincount(items, minlength=num_items).astype(np.float64)
  weight = 1.0 / np.sqrt(user_degree[users] * item_degree[items])
  return Graph(jnp.asarray(users), jnp.asarray(items), jnp.asarray(weight, jnp.float32))


def propagate(embeddings: Embeddings, graph: Graph, *, num_layers: int) -> Embeddings:
  """The mean of layers 0..num_layers of LightGCN propagation (users and items together).

  Example:
    >>> import numpy as np
    >>> from pprsf_jax.types import Interactions
    >>> graph = build_graph(Interactions(np.array([0], np.int32), np.array([0], np.int32)), 1, 1)
    >>> out = propagate(Embeddings(jnp.ones((1, 2)), jnp.zeros((1, 2))), graph, num_layers=1)
    >>> out.item.tolist()  # (layer 0 + the user's vector passed along the one edge) / 2
    [[0.5, 0.5]]
  """
  num_users, num_items = embeddings.user.shape[0], embeddings.item.shape[0]
  weight = graph.weight[:, None]
  user, item = embeddings.user, embeddings.item
  user_sum, item_sum = user, item
  for _ in range(num_layers):
    user, item = (
        jax.ops.segment_sum(weight * item[graph.items], graph.users, num_segments=num_users,
                            indices_are_sorted=True),
        jax.ops.segment_sum(weight * user[graph.users], graph.items, num_segments=num_items),
    )
    user_sum, item_sum = user_sum + user, item_sum + item
  return Embeddings(user_sum / (num_layers + 1), item_sum / (num_layers + 1))


def _loss(embeddings: Embeddings, graph: Graph, users, positives, negatives, mask, *,
          num_layers, l2):
  final = propagate(embeddings, graph, num_layers=num_layers)
  u = final.user[users]
  margin = jnp.sum(u * (final.item[positives] - final.item[negatives]), -1)
  # The paper regularises the layer-0 (free) embeddings of the batch, not the propagated ones.
  u0, i0, j0 = embeddings.user[users], embeddings.item[positives], embeddings.item[negatives]
  penalty = l2 * (jnp.sum(u0 * u0, -1) + jnp.sum(i0 * i0, -1) + jnp.sum(j0 * j0, -1))
  per_triple = -jax.nn.log_sigmoid(margin) + penalty
  return jnp.sum(per_triple * mask) / jnp.maximum(jnp.sum(mask), 1.0)


@functools.partial(jax.jit, static_argnames=("num_items", "batch_size", "num_layers", "l2",
                                             "learning_rate"))
def _train_epoch(embeddings, opt_state, graph, users, items, keys, *, key, num_items, batch_size,
                 num_layers, l2, learning_rate):
  """One pass over the interactions in shuffled mini-batches, a uniform negative per positive."""
  optimizer = optax.adam(learning_rate)
  batches = shuffled_triples(users, items, keys, key=key, num_items=num_items,
                             batch_size=batch_size)
  loss_fn = functools.partial(_loss, num_layers=num_layers, l2=l2)

  def step(carry, batch):
    embeddings, opt_state = carry
    loss, grads = jax.value_and_grad(loss_fn)(embeddings, graph, *batch)
    updates, opt_state = optimizer.update(grads, opt_state, embeddings)
    return (optax.apply_updates(embeddings, updates), opt_state), loss

  (embeddings, opt_state), losses = jax.lax.scan(step, (embeddings, opt_state), batches)
  return embeddings, opt_state, jnp.mean(losses)


def train_lightgcn(interactions: Interactions, num_users: int, num_items: int,
                   config: RecallConfig, *, key: jax.Array) -> tuple[RecallParams, list[float]]:
  """Trains LightGCN on public interactions.

  Uses `config.embedding_dim`, `lightgcn_layers`, `lightgcn_epochs`, `lightgcn_batch_size`,
  `lightgcn_learning_rate` and `lightgcn_l2`.

  A user with no public interaction has no edge, so propagation would leave it a random
  untrained vector: it gets the mean final vector of the other users instead, which scores
  items much as popularity does (the recall side of cold start). An item with no interaction
  keeps its (small, random) layer-0 vector / (L + 1).

  Returns:
    RecallParams holding the propagated embeddings (item_bias zeros), and each epoch's mean loss.
  """
  keys = positive_keys(interactions, num_users, num_items, model="LightGCN")
  graph = build_graph(interactions, num_users, num_items)
  init_key, train_key = jax.random.split(key)
  user_key, item_key = jax.random.split(init_key)
  dim = config.embedding_dim
  embeddings = Embeddings(
      user=0.1 * jax.random.normal(user_key, (num_users, dim), jnp.float32),
      item=0.1 * jax.random.normal(item_key, (num_items, dim), jnp.float32),
  )
  opt_state = optax.adam(config.lightgcn_learning_rate).init(embeddings)
  users = jnp.asarray(interactions.user, jnp.int32)
  items = jnp.asarray(interactions.item, jnp.int32)
  losses = []
  for epoch in steps(range(config.lightgcn_epochs), desc="recall: lightgcn epochs"):
    embeddings, opt_state, loss = _train_epoch(
        embeddings, opt_state, graph, users, items, keys,
        key=jax.random.fold_in(train_key, epoch), num_items=num_items,
        batch_size=config.lightgcn_batch_size, num_layers=config.lightgcn_layers,
        l2=config.lightgcn_l2, learning_rate=config.lightgcn_learning_rate)
    losses.append(float(loss))
  final = propagate(embeddings, graph, num_layers=config.lightgcn_layers)
  return RecallParams(user=average_for_cold_users(final.user, interactions),
                      item=final.item, item_bias=jnp.zeros((num_items,), jnp.float32)), losses

