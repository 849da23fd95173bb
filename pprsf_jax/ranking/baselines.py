"""The two comparison points of the paper's claims, with the same task and local optimiser.

* P_i — local-only: every client trains alone from Theta_0 (and its own initial personal
  state) on its own examples.
* P_Sum — central: one model trained on every client's examples pooled in one place (with each
  client's personal state as one row of a table, as a centralised recommender keeps its user
  embeddings). This is the privacy-violating upper bound (it reads all private data) and exists
  only to measure delta = |P_Sum - P_FL|; nothing in the federated pipeline calls it.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from pprsf_jax.progress import steps
from pprsf_jax.ranking.client import (UNITS_STREAM, LocalTraining, local_optimizer, local_train,
                                      weighted_mean)
from pprsf_jax.ranking.federated import client_key
from pprsf_jax.ranking.task import ClientTask, has_personal_state


@functools.partial(jax.jit, static_argnames=("local",))
def _local_only_chunk(theta0, personal, examples, client_ids, public, seed_key, *, local):
  keys = jax.vmap(lambda c: client_key(seed_key, 0, c))(client_ids)
  train = lambda mine, ex, key: local_train(theta0, mine, ex, public, key=key, local=local)[:2]
  return jax.vmap(train)(personal, examples, keys)


def train_local_only(theta0, personal, examples, public, *, seed_key: jax.Array,
                     local: LocalTraining, chunk: int = 1024) -> tuple[Any, Any]:
  """Per-client models trained only on their own data, each from `theta0` and its own row of
  `personal` ([N, ...]): (shared [N, ...], personal [N, ...])."""
  num_clients = examples.mask.shape[0]
  pieces = []
  for start in steps(range(0, num_clients, chunk), desc="local training: client chunks"):
    ids = np.arange(start, min(start + chunk, num_clients), dtype=np.int32)
    padded = np.pad(ids, (0, chunk - len(ids)), mode="edge") if num_clients > chunk else ids
    rows = lambda tree: jax.tree.map(lambda a: a[padded], tree)
    part = _local_only_chunk(theta0, rows(personal), rows(examples), padded, public, seed_key,
                             local=local)
    pieces.append(jax.tree.map(lambda a: a[: len(ids)], part))
  return jax.tree.map(lambda *parts: jnp.concatenate(parts), *pieces)


def _pooled_losses(task: ClientTask, shared, personal, batch, owners, public) -> jax.Array:
  """[B] the loss of each pooled unit, under its own client's personal row."""
  if not has_personal_state(personal):
    return task.loss(shared, personal, batch, public)
  one = lambda mine, unit: task.loss(shared, mine, jax.tree.map(lambda x: x[None], unit),
                                     public)[0]
  return jax.vmap(one)(jax.tree.map(lambda table: table[owners], personal), batch)


@functools.partial(jax.jit, static_argnames=("local",))
def _central_epoch(params, opt_state, units, owners, public, *, key, local):
  """One pass over the pooled units (with the client each came from) in mini-batches."""
  count = owners.shape[0]
  batch = local.task.units_per_step
  num_batches = count // batch
  order = jax.random.permutation(key, count)[: num_batches * batch].reshape(num_batches, batch)
  optimizer = local_optimizer(local)

  def loss_fn(params, rows):
    per_unit = _pooled_losses(local.task, *params, jax.tree.map(lambda a: a[rows], units),
                              owners[rows], public)
    return weighted_mean(per_unit, jnp.ones(rows.shape, jnp.float32))

  def step(carry, rows):
    params, opt_state = carry
    loss, grads = jax.value_and_grad(loss_fn)(params, rows)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss

  (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), order)
  return params, opt_state, jnp.mean(losses)


def pooled_units(task: ClientTask, examples, public, key: jax.Array) -> tuple[Any, np.ndarray]:
  """Every client's real training units in one pool, client by client: (units [P, ...], the
  client each came from [P])."""
  keys = jax.random.split(key, examples.mask.shape[0])
  units = jax.vmap(task.units, in_axes=(0, None, 0))(examples, public, keys)
  mask = np.asarray(units.mask)
  num_clients, per_client = mask.shape[0], mask[0].size
  real = mask.reshape(-1) > 0
  owners = np.repeat(np.arange(num_clients, dtype=np.int32), per_client)[real]
  data = jax.tree.map(lambda a: np.asarray(a).reshape((-1,) + a.shape[2:])[real], units.data)
  return data, owners


def train_central(theta0, personal, examples, public, *, key: jax.Array, local: LocalTraining,
                  epochs: int) -> tuple[Any, Any]:
  """P_Sum: mini-batch SGD over the pooled units of every client, with the clients' loss, from
  `theta0` and the clients' initial personal states [N, ...]: (shared, personal [N, ...])."""
  units, owners = pooled_units(local.task, examples, public, jax.random.fold_in(key, UNITS_STREAM))
  batch = local.task.units_per_step
  if owners.shape[0] < batch:
    raise ValueError(f"central training needs at least {batch} training units (candidate rows, "
                     f"or lists with a positive), got {owners.shape[0]}")
  units, owners = jax.tree.map(jnp.asarray, units), jnp.asarray(owners)
  params = (theta0, jax.tree.map(jnp.asarray, personal))
  opt_state = local_optimizer(local).init(params)
  for epoch in steps(range(epochs), desc="P_Sum: epochs"):
    params, opt_state, _ = _central_epoch(
        params, opt_state, units, owners, public, key=jax.random.fold_in(key, epoch),
        local=local)
  return params
