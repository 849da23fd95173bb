"""The client task: everything the federated core needs to know about a ranking model.

The round (`make_round`), local training (`local_train`, `client_update`), the baselines
(`train_central`, `train_local_only`), streamed cohorts and the deployed device are written
against a `ClientTask` alone — a value made of pure functions, in the optax spirit — so any
model trains federated without the core naming it.

A model declares which of its parameters are *shared* (Θ: aggregated by the server, the only
thing a client's update is made of) and which are *personal* (a user embedding, a personal score
function: they live on the device, are trained there, and never appear in anything uploaded).

A task's examples are any pytree with two fields the core reads: `items` [S, K] int32 — the
candidate ids the server sent, -1 for padding — and `mask` [S, K] float32 — 1 where a slot
holds a real candidate the client may train on and rank. The core pads a cohort by zeroing
`mask`, ranks by `items`; everything else in the examples is the task's business.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import numpy as np

from pprsf_jax.aggregation import ClientState, FederatedAlgorithm, init_client_states
from pprsf_jax.progress import steps


class TrainingUnits(NamedTuple):
  """What one client's local SGD samples its mini-batches from."""

  data: Any  # pytree, every leaf with a leading unit axis [U, ...] (a row, or a whole list)
  # [S, P] float32, U = S * P units laid out by list (P = K for row units, 1 for list units):
  # 1 = a unit the client trains on. A unit's shuffling priority depends only on its (list,
  # position), so padding appended to a list, or whole padding lists, reorder no real unit.
  mask: jax.Array


class ClientTask(NamedTuple):
  """A ranking model and its training objective, as the federated core sees them.

  Every function is pure and written for ONE client (the core vmaps it over a cohort).
  """

  # (key, dims) -> Θ0, the shared parameters every client starts each round from; `dims`
  # (`ModelDims`) are the feature-row width and the catalogue size, known once data is loaded.
  init_shared: Callable[[jax.Array, Any], Any]
  # (key, dims) -> one client's personal state before its first round (an empty tuple if none).
  init_personal: Callable[[jax.Array, Any], Any]
  # (examples, public, key) -> TrainingUnits; `public` is what every client is shipped alike
  # (the item table); `key` draws anything random (sampled negatives), fresh every round.
  units: Callable[[Any, Any, jax.Array], TrainingUnits]
  # (shared, personal, batch, public) -> [B] float32 each unit's loss: `batch` holds B units
  # (leaves [B, ...]); the core weights and averages them. Finite on padding units.
  loss: Callable[[Any, Any, Any, Any], jax.Array]
  # (shared, personal, examples, public) -> [S * K] float32 score of every slot, list-major
  # (higher ranks first; the core ignores padding and filtered slots).
  score: Callable[[Any, Any, Any, Any], jax.Array]
  # items [S, K] -> ([] float32 real candidate slots, [] int32 training units), counted from the
  # candidate ids the server sent alone: what an upload declares beside its update. It is never
  # given the client's own data (a count of that would tell the server about its history).
  declared_units: Callable[[jax.Array], tuple[jax.Array, jax.Array]]
  units_per_step: int  # units per local SGD step (the mini-batch size)


class DeviceState(NamedTuple):
  """Everything one client keeps on its device between rounds (stacked [N, ...] on the host in
  simulation; only a cohort's rows travel to the accelerator). Nothing in it is ever uploaded,
  and no server-side function receives it."""

  algorithm: ClientState  # the federated algorithm's client state (SCAFFOLD's c_i, EF residual)
  personal: Any  # the model's personal state (user embedding, personal score function, ...)


def has_personal_state(personal) -> bool:
  return bool(jax.tree.leaves(personal))


# A client's personal state is drawn from a key derived from its id alone, like its round keys:
# it does not depend on how many clients there are or in which chunk it is initialised.
def personal_key(seed_key: jax.Array, client_id) -> jax.Array:
  return jax.random.fold_in(seed_key, client_id)


def init_personal_states(task: ClientTask, dims, seed_key: jax.Array, num_clients: int, *,
                         chunk: int = 65536) -> Any:
  """Every client's initial personal state, stacked [N, ...] as host (NumPy) arrays."""
  if not has_personal_state(jax.eval_shape(lambda: task.init_personal(seed_key, dims))):
    return task.init_personal(seed_key, dims)  # nothing to stack: the empty structure itself
  init = jax.jit(jax.vmap(lambda c: task.init_personal(personal_key(seed_key, c), dims)))
  pieces = [jax.tree.map(np.asarray, init(np.arange(start, min(start + chunk, num_clients))))
            for start in steps(range(0, num_clients, chunk), desc="personal state: clients")]
  return jax.tree.map(lambda *parts: np.concatenate(parts), *pieces)


def init_device_states(algorithm: FederatedAlgorithm, theta0, personal, num_clients: int
                       ) -> DeviceState:
  """Every client's state before its first round, on the host: the algorithm's initial client
  state and a copy of `personal` (stacked [N, ...], or () for a model without personal state);
  the round writes rows in place, so the caller's `personal` is never changed."""
  return DeviceState(init_client_states(algorithm, theta0, num_clients),
                     jax.tree.map(np.array, personal))
