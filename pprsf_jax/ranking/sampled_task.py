"""The federated-recommendation papers' task: each client's own positives against negatives it
samples on its device, afresh every round (FedMF, FedNCF, PFedRec under leave-one-out).

A client holds its training positives and its negative pool — the items it may draw negatives
from. Which items the pool holds is the protocol (`pprsf_jax.data.loo_protocol`): under the
leak-free one, everything outside the client's training positives (held-out items eligible);
under the published one, everything the client never rated. Each positive is a unit with its
`num_negatives` negatives: binary cross-entropy over the 1 + n rows. Only id models apply
(`ranking.models.ID_MODELS`): the rows carry no feature row.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from pprsf_jax.ranking.candidate_task import bce_per_row
from pprsf_jax.ranking.models.base import CandidateInputs, RankingModel
from pprsf_jax.ranking.task import ClientTask, TrainingUnits


class ClientInteractions(NamedTuple):
  """One client's training data (a cohort's stacked on a leading client axis)."""

  items: jax.Array  # [1, P] int32 its training positives, -1 for padding
  mask: jax.Array  # [1, P] float32 1 = a real positive
  pool: jax.Array  # [M] int32 the items it may draw negatives from, first; -1 after them
  pool_size: jax.Array  # [] int32 how many of `pool` are real


class RankedLists(NamedTuple):
  """Lists a client scores with its model (held-out item and its sampled negatives)."""

  items: jax.Array  # [1, L] int32
  mask: jax.Array  # [1, L] float32


def client_interactions(user: np.ndarray, item: np.ndarray, excluded: np.ndarray
                        ) -> ClientInteractions:
  """Every client's positives (padded to the longest) and negative pool, as host arrays.

  Args:
    user, item: [T] the training interactions.
    excluded: [N, M] bool, per client the items its negatives never come from.
  """
  num_users = excluded.shape[0]
  counts = np.bincount(user, minlength=num_users)
  width = max(int(counts.max(initial=0)), 1)
  order = np.argsort(user, kind="stable")
  slot = np.arange(user.size) - np.repeat(np.cumsum(counts) - counts, counts)
  items = np.full((num_users, width), -1, np.int32)
  items[user[order], slot] = item[order]
  allowed = ~excluded
  # Each row's allowed items first (ascending), then -1: a stable sort on "not allowed".
  rank = np.argsort(~allowed, axis=1, kind="stable").astype(np.int32)
  pool = np.where(np.take_along_axis(allowed, rank, axis=1), rank, -1).astype(np.int32)
  return ClientInteractions(items=items[:, None], mask=(items >= 0).astype(np.float32)[:, None],
                            pool=pool, pool_size=allowed.sum(1).astype(np.int32))


def _id_inputs(items: jax.Array) -> CandidateInputs:
  return CandidateInputs(items=items, features=jnp.zeros(items.shape + (0,), jnp.float32))


@functools.cache
def sampled_negatives_task(model: RankingModel, num_negatives: int,
                           units_per_step: int) -> ClientTask:
  """Each positive with `num_negatives` negatives drawn uniformly (with replacement) from the
  client's pool every round; `units_per_step` positives (with their negatives) per SGD step."""

  def units(own: ClientInteractions, public, key: jax.Array) -> TrainingUnits:
    del public
    positives = own.items.reshape(-1)  # [P]
    draws = jax.random.randint(key, (positives.size, num_negatives), 0,
                               jnp.maximum(own.pool_size, 1))
    negatives = own.pool[draws]  # [P, n]
    items = jnp.concatenate([positives[:, None], negatives], axis=1)  # [P, 1 + n]
    labels = jnp.zeros(items.shape, jnp.float32).at[:, 0].set(1.0)
    # A positive is a unit only if the client has a negative to contrast it with.
    mask = own.mask.reshape(-1, 1) * (own.pool_size > 0)
    return TrainingUnits((items, labels), mask)

  def loss(shared, personal, batch, public) -> jax.Array:
    del public
    items, labels = batch  # [B, 1 + n]
    return jnp.mean(bce_per_row(model.logits(shared, personal, _id_inputs(items)), labels), -1)

  def score(shared, personal, lists, public) -> jax.Array:
    del public
    return model.logits(shared, personal, _id_inputs(lists.items.reshape(-1)))

  def declared_units(items: jax.Array) -> tuple[jax.Array, jax.Array]:
    # The items here are the client's own positives, not a list the server sent: a client
    # declares nothing of them, only the padded capacity every client shares (so weights are
    # uniform, and FedNova's tau is that common bound).
    return jnp.ones((), jnp.float32), jnp.asarray(items.size, jnp.int32)

  return ClientTask(init_shared=model.init_shared, init_personal=model.init_personal,
                    units=units, loss=loss, score=score, declared_units=declared_units,
                    units_per_step=units_per_step)
