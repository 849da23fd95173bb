"""Mini-batches of (user, positive, negative) triples for the pairwise recall models.

Traceable: the trainers call `shuffled_triples` inside their jitted epoch, so one epoch's
shuffling, negative sampling and every optimiser step are a single device program.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from pprsf_jax.types import Interactions


class Triples(NamedTuple):
  """One epoch of training triples, split into equal mini-batches (B = batch size)."""

  users: jax.Array  # [num_batches, B] int32
  positives: jax.Array  # [num_batches, B] int32 an item the user interacted with
  negatives: jax.Array  # [num_batches, B] int32 a uniformly drawn item (mostly not a positive)
  mask: jax.Array  # [num_batches, B] float32 1 for real triples, 0 for the last batch's padding


def is_positive(positive_keys: jax.Array, users: jax.Array, items: jax.Array, *,
                num_items: int) -> jax.Array:
  """Whether each (user, item) pair is among `positive_keys` (sorted user * M + item, int32)."""
  query = users * num_items + items
  found = jnp.clip(jnp.searchsorted(positive_keys, query), 0, positive_keys.shape[0] - 1)
  return positive_keys[found] == query


def shuffled_triples(users: jax.Array, items: jax.Array, positive_keys: jax.Array, *,
                     key: jax.Array, num_items: int, batch_size: int) -> Triples:
  """Every interaction once, in random order, with one uniform negative item each.

  Args:
    users: [R] int32 user of each interaction.
    items: [R] int32 its item.
    positive_keys: [R] int32 sorted keys user * num_items + item of the same interactions.
    key: randomness of this epoch.
    num_items: catalogue size M (negatives are drawn from [0, M)).
    batch_size: triples per mini-batch; the last batch is padded (mask 0).
  """
  count = users.shape[0]
  num_batches = -(-count // batch_size)
  padded = num_batches * batch_size
  order_key, negative_key, retry_key = jax.random.split(key, 3)
  order = jax.random.permutation(order_key, count)
  order = jnp.concatenate([order, jnp.zeros(padded - count, order.dtype)])
  mask = (jnp.arange(padded) < count).astype(jnp.float32)

  def sample_negatives(k, u):
    return jax.random.randint(k, u.shape, 0, num_items, dtype=jnp.int32)

  batch_users = users[order]
  negatives = sample_negatives(negative_key, batch_users)
  # One redraw for negatives that hit a positive: cheap, and removes most false negatives.
  negatives = jnp.where(is_positive(positive_keys, batch_users, negatives, num_items=num_items),
                        sample_negatives(retry_key, batch_users), negatives)
  shape = (num_batches, batch_size)
  return Triples(users=batch_users.reshape(shape), positives=items[order].reshape(shape),
                 negatives=negatives.reshape(shape), mask=mask.reshape(shape))


def positive_keys(interactions: Interactions, num_users: int, num_items: int, *,
                  model: str) -> jax.Array:
  """[R] int32 sorted keys user * M + item, the on-device form `is_positive` searches.

  Raises:
    ValueError: if there is no interaction, or if user * M + item would overflow int32.
  """
  if interactions.size == 0:
    raise ValueError(f"{model} needs at least one public interaction to train on")
  if num_users * num_items >= 2**31:
    raise ValueError(
        f"{model}: num_users * num_items = {num_users * num_items} exceeds int32 keys (2**31)")
  return jnp.asarray(interactions.keys(num_items).astype(np.int32))
