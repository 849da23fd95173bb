"""BPR matrix factorisation (Rendle et al., 2009), trained with jitted epochs on public data."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from pprsf_jax.progress import steps
from pprsf_jax.config import RecallConfig
from pprsf_jax.recall.model import RecallParams
from pprsf_jax.recall.sampling import positive_keys, shuffled_triples
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
  batches = shuffled_triples(users, items, positive_keys, key=key, num_items=num_items,
                             batch_size=batch_size)

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
  keys = positive_keys(interactions, num_users, num_items, model="BPR")
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
  losses = []
  for epoch in steps(range(config.epochs), desc="recall: bpr epochs"):
    params, opt_state, loss = _train_epoch(
        params, opt_state, users, items, keys,
        key=jax.random.fold_in(train_key, epoch), num_items=num_items,
        batch_size=config.batch_size, l2=config.l2, learning_rate=config.learning_rate)
    losses.append(float(loss))
  has_history = np.bincount(interactions.user, minlength=num_users) > 0
  user = jnp.where(jnp.asarray(has_history)[:, None], params.user, 0.0)
  return params._replace(user=user), losses
