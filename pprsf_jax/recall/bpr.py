"""BPR matrix factorisation (Rendle et al., 2009), trained with jitted epochs on public data."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from pprsf_jax.config import RecallConfig
from pprsf_jax.recall.model import RecallParams
from pprsf_jax.types import Interactions


def _bpr_loss(params: RecallParams, users, positives, negatives, mask, l2):
  u = params.user[users]
  i, j = params.item[positives], params.item[negatives]
  margin = jnp.sum(u * (i - j), -1) + params.item_bias[positives] - params.item_bias[negatives]
  penalty = l2 * (jnp.sum(u * u, -1) + jnp.sum(i * i, -1) + jnp.sum(j * j, -1))
  per_triple = -jax.nn.log_sigmoid(margin) + penalty
  return jnp.sum(per_triple * mask) / jnp.maximum(jnp.sum(mask), 1.0)


@functools.partial(jax.jit, static_argnames=("num_items", "batch_size", "l2", "learning_rate"))
def _train_epoch(params, opt_state, users, items, positive_keys, *, key, num_items, batch_size, l2,
                 learning_rate):
  """One pass over the interactions in shuffled mini-batches, a uniform negative per positive."""
  optimizer = optax.adam(learning_rate)
  count = users.shape[0]
  num_batches = -(-count // batch_size)
  padded = num_batches * batch_size
  order_key, negative_key, retry_key = jax.random.split(key, 3)
  order = jax.random.permutation(order_key, count)
  order = jnp.concatenate([order, jnp.zeros(padded - count, order.dtype)])
  mask = (jnp.arange(padded) < count).astype(jnp.float32)

  def sample_negatives(k, u):
    return jax.random.randint(k, u.shape, 0, num_items, dtype=jnp.int32)

  def is_positive(u, j):
    query = u * num_items + j
    found = jnp.clip(jnp.searchsorted(positive_keys, query), 0, positive_keys.shape[0] - 1)
    return positive_keys[found] == query

  batch_users = users[order]
  negatives = sample_negatives(negative_key, batch_users)
  # One redraw for negatives that hit a positive: cheap, and removes most false negatives.
  negatives = jnp.where(is_positive(batch_users, negatives),
                        sample_negatives(retry_key, batch_users), negatives)
  batches = (
      batch_users.reshape(num_batches, batch_size),
      items[order].reshape(num_batches, batch_size),
      negatives.reshape(num_batches, batch_size),
      mask.reshape(num_batches, batch_size),
  )

  def step(carry, batch):
    params, opt_state = carry
    loss, grads = jax.value_and_grad(_bpr_loss)(params, *batch, l2)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss

  (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), batches)
  return params, opt_state, jnp.mean(losses)


def train_bpr(interactions: Interactions, num_users: int, num_items: int, config: RecallConfig, *,
              key: jax.Array) -> tuple[RecallParams, list[float]]:
  """Trains BPR on public interactions.

  Users with no interactions keep a zero vector, so they are scored by the item bias alone
  (a learned popularity): the recall side of cold start.

  Returns:
    The parameters and the mean loss of each epoch.
  """
  if interactions.size == 0:
    raise ValueError("BPR needs at least one public interaction to train on")
  # Negative rejection keys are int32 on device: user * M + item must fit.
  if num_users * num_items >= 2**31:
    raise ValueError(
        f"BPR: num_users * num_items = {num_users * num_items} exceeds int32 keys (2**31)"
    )
  init_key, train_key = jax.random.split(key)
  user_key, item_key = jax.random.split(init_key)
  dim = config.embedding_dim
  params = RecallParams(
      user=0.1 * jax.random.normal(user_key, (num_users, dim), jnp.float32),
      item=0.1 * jax.random.normal(item_key, (num_items, dim), jnp.float32),
      item_bias=jnp.zeros((num_items,), jnp.float32),
  )
  opt_state = optax.adam(config.learning_rate).init(params)
  users = jnp.asarray(interactions.user, jnp.int32)
  items = jnp.asarray(interactions.item, jnp.int32)
  positive_keys = jnp.asarray(interactions.keys(num_items).astype(np.int32))
  losses = []
  for epoch in range(config.epochs):
    params, opt_state, loss = _train_epoch(
        params, opt_state, users, items, positive_keys,
        key=jax.random.fold_in(train_key, epoch), num_items=num_items,
        batch_size=config.batch_size, l2=config.l2, learning_rate=config.learning_rate)
    losses.append(float(loss))
  has_history = np.bincount(interactions.user, minlength=num_users) > 0
  user = jnp.where(jnp.asarray(has_history)[:, None], params.user, 0.0)
  return params._replace(user=user), losses
