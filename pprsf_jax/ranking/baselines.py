"""The two comparison points of the paper's claims, with the same model and local optimiser.

* P_i — local-only: every client trains alone from Theta_0 on its own examples.
* P_Sum — central: one model trained on every client's examples pooled in one place. This is
  the privacy-violating upper bound (it reads all private data) and exists only to measure
  delta = |P_Sum - P_FL|; nothing in the federated pipeline calls it.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from pprsf_jax.progress import steps
from pprsf_jax.ranking.client import LocalTraining, local_train, unit_loss
from pprsf_jax.ranking.features import ClientExamples, ItemTable, client_features
from pprsf_jax.ranking.federated import client_key


@functools.partial(jax.jit, static_argnames=("local",))
def _local_only_chunk(theta0, examples, client_ids, item_table, seed_key, *, local):
  keys = jax.vmap(lambda c: client_key(seed_key, 0, c))(client_ids)
  params, _ = jax.vmap(
      lambda ex, key: local_train(theta0, ex, item_table, key=key, local=local))(examples, keys)
  return params


def train_local_only(theta0, examples: ClientExamples, item_table: ItemTable, *,
                     seed_key: jax.Array, local: LocalTraining, chunk: int = 1024):
  """Per-client models trained only on their own data: params stacked [N, ...]."""
  num_clients = examples.mask.shape[0]
  pieces = []
  for start in steps(range(0, num_clients, chunk), desc="local training: client chunks"):
    ids = np.arange(start, min(start + chunk, num_clients), dtype=np.int32)
    padded = np.pad(ids, (0, chunk - len(ids)), mode="edge") if num_clients > chunk else ids
    part = _local_only_chunk(
        theta0, jax.tree.map(lambda a: a[padded], examples), padded, item_table, seed_key,
        local=local)
    pieces.append(jax.tree.map(lambda a: a[: len(ids)], part))
  return jax.tree.map(lambda *parts: jnp.concatenate(parts), *pieces)


@functools.partial(jax.jit, static_argnames=("local",))
def _central_epoch(params, opt_state, features, labels, mask, *, key, local):
  """One pass over the pooled units (rows for "bce", lists for "softmax") in mini-batches."""
  count = features.shape[0]
  batch = local.units_per_step
  num_batches = count // batch
  order = jax.random.permutation(key, count)[: num_batches * batch].reshape(num_batches, batch)
  optimizer = optax.sgd(local.learning_rate)
  loss_fn = functools.partial(unit_loss, local)

  def step(carry, rows):
    params, opt_state = carry
    loss, grads = jax.value_and_grad(loss_fn)(
        params, features[rows], labels[rows], mask[rows], jnp.ones(rows.shape, jnp.float32))
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss

  (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), order)
  return params, opt_state, jnp.mean(losses)


def _pooled_units(examples: ClientExamples, item_table: ItemTable, local: LocalTraining):
  """Every client's training units in one pool (features, labels, mask), real ones only: rows
  for "bce", lists with a positive for "softmax" (see `client.training_units`)."""
  features = np.asarray(jax.vmap(client_features, in_axes=(0, None))(examples, item_table))
  mask, labels = np.asarray(examples.mask), np.asarray(examples.labels)
  if local.loss == "bce":
    real = mask.reshape(-1) > 0  # [N * S * K], the same order as the rows
    return (features.reshape(-1, features.shape[-1])[real], labels.reshape(-1)[real],
            mask.reshape(-1)[real])
  list_length = mask.shape[-1]
  lists = features.reshape(-1, list_length, features.shape[-1])
  mask, labels = mask.reshape(-1, list_length), labels.reshape(-1, list_length)
  trainable = (mask * labels).sum(-1) > 0
  return lists[trainable], labels[trainable], mask[trainable]


def train_central(theta0, examples: ClientExamples, item_table: ItemTable, *, key: jax.Array,
                  local: LocalTraining, epochs: int):
  """P_Sum: mini-batch SGD over the pooled examples of every client, with the clients' loss."""
  features, labels, mask = (jnp.asarray(a) for a in _pooled_units(examples, item_table, local))
  batch = local.units_per_step
  if features.shape[0] < batch:
    unit = "examples" if local.loss == "bce" else "candidate lists with a positive"
    raise ValueError(f"central training needs at least {batch} {unit}, got {features.shape[0]}")
  params = theta0
  opt_state = optax.sgd(local.learning_rate).init(params)
  for epoch in steps(range(epochs), desc="P_Sum: epochs"):
    params, opt_state, _ = _central_epoch(
        params, opt_state, features, labels, mask, key=jax.random.fold_in(key, epoch),
        local=local)
  return params
