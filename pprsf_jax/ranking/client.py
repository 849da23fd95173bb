"""Local training of any `ClientTask`, written for ONE client and lifted with `jax.vmap`.

A client starts from the global shared parameters and its own personal state, runs
`local_epochs` passes of mini-batch SGD over its training units (`lax.scan` over a fixed number
of steps, masked beyond the client's own count), and uploads the change of the shared part
alone: its personal state stays on the device. Mini-batch order comes from per-slot random
priorities, so trailing padding (units or whole clients) never changes what a real client
computes.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from pprsf_jax.aggregation import ClientState, FederatedAlgorithm, dense_bits
from pprsf_jax.ranking.task import ClientTask, DeviceState
from pprsf_jax.types import ClientUpload


@dataclasses.dataclass(frozen=True)
class LocalTraining:
  """Static description of a client's local optimisation (hashable, closed over by jit)."""

  task: ClientTask
  epochs: int
  learning_rate: float
  # False: every epoch takes the units in their layout order (real units first), as the
  # cross-framework standard round fixes it; True: a fresh random order per epoch.
  shuffle: bool = True
  # The personal state's SGD step size; None: `learning_rate`, like the shared parameters.
  personal_learning_rate: float | None = None


def local_optimizer(local: LocalTraining) -> optax.GradientTransformation:
  """Plain SGD on (shared, personal), each part at its own step size."""
  if local.personal_learning_rate is None:
    return optax.sgd(local.learning_rate)
  labels = lambda params: (jax.tree.map(lambda _: "shared", params[0]),
                           jax.tree.map(lambda _: "personal", params[1]))
  return optax.multi_transform({"shared": optax.sgd(local.learning_rate),
                                "personal": optax.sgd(local.personal_learning_rate)}, labels)


# Training uses the client's key itself; compression, local DP noise and the task's own draws
# (sampled negatives) use sub-streams.
COMPRESSION_STREAM = 0xC0DE
PRIVACY_STREAM = 0xD9
UNITS_STREAM = 0x5A

GradientCorrection = Callable[[Any, Any], Any]  # (grads, params) -> grads, on the shared part


class ClientMetrics(NamedTuple):
  loss: jax.Array  # [] float32 mean training loss over the client's steps (0 if none)
  steps: jax.Array  # [] int32 local steps taken
  diverged: jax.Array  # [] bool: parameters or state went non-finite (nothing uploaded)


def weighted_mean(per_unit: jax.Array, weights: jax.Array) -> jax.Array:
  """The mean of per-unit losses over weighted units; zero (not NaN) when no unit has weight."""
  return jnp.sum(per_unit * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def batch_loss(task: ClientTask, shared, personal, batch, weights, public) -> jax.Array:
  return weighted_mean(task.loss(shared, personal, batch, public), weights)


def _epoch_orders(mask: jax.Array, epochs: int, key: jax.Array | None) -> jax.Array:
  """[epochs, S * K] order of the flattened slots per epoch: real examples shuffled, padding last.

  Each slot's priority depends only on (key, epoch, list, position in list), so padding appended
  to any list, or whole padding lists, leave the order of the real examples unchanged. Without a
  key, the real slots keep their layout order.
  """
  num_lists, list_length = mask.shape
  if key is None:
    slots = jnp.arange(mask.size)
    layout = jnp.where(mask.reshape(-1) > 0, slots, mask.size + slots)
    return jnp.broadcast_to(jnp.argsort(layout), (epochs, mask.size))
  lists = jnp.repeat(jnp.arange(num_lists), list_length)
  positions = jnp.tile(jnp.arange(list_length), num_lists)

  def order(epoch):
    epoch_key = jax.random.fold_in(key, epoch)
    draw = lambda s, p: jax.random.uniform(jax.random.fold_in(jax.random.fold_in(epoch_key, s), p))
    priority = jax.vmap(draw)(lists, positions)
    return jnp.argsort(jnp.where(mask.reshape(-1) > 0, priority, jnp.inf), stable=True)

  return jax.vmap(order)(jnp.arange(epochs))


def local_train(shared, personal, examples, public, *, key: jax.Array, local: LocalTraining,
                correct: GradientCorrection | None = None,
                work: jax.Array | float = 1.0) -> tuple[Any, Any, ClientMetrics]:
  """Runs one client's local SGD from (`shared`, `personal`); returns both trained, and metrics.

  `correct(grads, params)` rewrites every step's gradient of the shared part (FedProx's proximal
  pull, SCAFFOLD's control variates); None is plain SGD. A straggler completes only the share
  `work` in (0, 1] of its steps (at least one, if it has any).
  """
  task = local.task
  examples = jax.tree.map(jnp.asarray, examples)  # host arrays work outside jit too
  units = task.units(examples, public, jax.random.fold_in(key, UNITS_STREAM))
  # A task's units: a [S, P] mask and data with one leading row per unit (checked at trace time).
  chex.assert_rank(units.mask, 2)
  chex.assert_tree_shape_prefix(units.data, (units.mask.size,))
  batch = task.units_per_step
  length = units.mask.size
  steps_per_epoch_max = -(-length // batch)
  num_units = jnp.sum(units.mask).astype(jnp.int32)
  steps_per_epoch = (num_units + batch - 1) // batch
  planned_steps = steps_per_epoch * local.epochs
  total_steps = jnp.minimum(
      planned_steps, jnp.maximum(1, jnp.floor(planned_steps * work).astype(jnp.int32)))
  orders = _epoch_orders(units.mask, local.epochs, key if local.shuffle else None)
  orders = jnp.pad(orders, ((0, 0), (0, steps_per_epoch_max * batch - length)))
  unit_mask = units.mask.reshape(-1)
  optimizer = local_optimizer(local)
  loss_fn = lambda params, rows, weights: batch_loss(
      task, *params, jax.tree.map(lambda leaf: leaf[rows], units.data), weights, public)

  def step(carry, s):
    params, opt_state, loss_sum = carry
    epoch = s // jnp.maximum(steps_per_epoch, 1)
    position = (s % jnp.maximum(steps_per_epoch, 1)) * batch
    rows = jax.lax.dynamic_slice(orders[jnp.minimum(epoch, local.epochs - 1)], (position,), (batch,))
    in_epoch = (position + jnp.arange(batch)) < num_units
    loss, grads = jax.value_and_grad(loss_fn)(params, rows, in_epoch * unit_mask[rows])
    if correct is not None:
      grads = (correct(grads[0], params[0]), grads[1])
    updates, new_opt_state = optimizer.update(grads, opt_state, params)
    active = s < total_steps
    # Steps past this client's own count are exact no-ops: keep the old state.
    keep = lambda new, old: jnp.where(active, new, old)
    params = jax.tree.map(keep, optax.apply_updates(params, updates), params)
    opt_state = jax.tree.map(keep, new_opt_state, opt_state)
    return (params, opt_state, loss_sum + jnp.where(active, loss, 0.0)), None

  params = (shared, personal)
  init = (params, optimizer.init(params), jnp.zeros((), jnp.float32))
  ((shared, personal), _, loss_sum), _ = jax.lax.scan(
      step, init, jnp.arange(steps_per_epoch_max * local.epochs))
  metrics = ClientMetrics(loss=loss_sum / jnp.maximum(total_steps, 1), steps=total_steps,
                          diverged=~_all_finite((shared, personal)))
  return shared, personal, metrics


def public_upload_counts(items: jax.Array, local: LocalTraining,
                         work: jax.Array | float = 1.0) -> tuple[jax.Array, jax.Array]:
  """What an upload declares beside its update, from the candidate lists the server sent alone.

  Returns ([] float32 the client's real candidate slots — its weight under "examples"
  weighting; [] int32 the local steps those lists plan for — FedNova's tau_i). A client's own
  counts (candidates left once its private history is filtered out, lists holding a private
  positive) would tell the server about its private interactions; these cannot, and the server
  computes the same numbers from what it sent (`pprsf_jax.deploy.coordinator`).

  Args:
    items: [S, K] int32 candidate ids, -1 where the server sent none.
    local: the local optimisation (what a step averages over, epochs).
    work: a straggler's share of its steps (simulated faults).
  """
  slots, units = local.task.declared_units(items)
  per_step = local.task.units_per_step
  planned = (units + per_step - 1) // per_step * local.epochs
  steps = jnp.minimum(planned, jnp.maximum(1, jnp.floor(planned * work).astype(planned.dtype)))
  return slots, steps.astype(jnp.int32)


def client_update(global_params, examples, public, *, key: jax.Array, local: LocalTraining,
                  algorithm: FederatedAlgorithm, broadcast, state: DeviceState,
                  work: jax.Array | float = 1.0) -> tuple[ClientUpload, DeviceState, ClientMetrics]:
  """One client's round: local training from Theta under the algorithm, then the encoded upload.

  Returns what is uploaded (made from the shared parameters alone), the client's proposed next
  state — its algorithm state and personal state, which never leave the device; the round keeps
  them only if the upload is accepted — and metrics.
  """
  compress_key = jax.random.fold_in(key, COMPRESSION_STREAM)
  privacy_key = jax.random.fold_in(key, PRIVACY_STREAM)
  algorithm_state = state.algorithm
  correct = lambda grads, params: algorithm.local.correct(grads, params, global_params,
                                                          algorithm_state.local, broadcast)
  params, personal, metrics = local_train(global_params, state.personal, examples, public,
                                          key=key, local=local, correct=correct, work=work)
  delta = jax.tree.map(jnp.subtract, params, global_params)
  local_state, local_upload = algorithm.local.finish(
      delta, algorithm_state.local, broadcast, metrics.steps, local.learning_rate)
  # Local DP acts on the update itself; encoding it afterwards is post-processing.
  private_delta = algorithm.privatizer(delta, privacy_key)
  sent, compressor_state, bits = algorithm.compressor.compress(
      private_delta, algorithm_state.compressor, compress_key)
  # The loss and the steps actually taken stay on the device (they read private data).
  num_examples, num_steps = public_upload_counts(examples.items, local, work)
  upload = ClientUpload(delta=sent, num_examples=num_examples, num_steps=num_steps,
                        extra=local_upload,
                        num_bytes=bits / 8 + dense_bits(local_upload) / 8)
  # A client whose training diverged does not upload; its proposed state must not be kept either
  # (a NaN residual or control variate would poison all its later rounds). The round decides.
  next_state = DeviceState(ClientState(local=local_state, compressor=compressor_state), personal)
  diverged = metrics.diverged | ~_all_finite(next_state)
  return upload, next_state, metrics._replace(diverged=diverged)


def _all_finite(tree) -> jax.Array:
  return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]
                             or [True]))


def rank_candidates(shared, personal, examples, public, *, task: ClientTask,
                    top_t: int) -> tuple[jax.Array, jax.Array]:
  """One client's on-device ranking: its Top-T candidate ids and scores (-1 / -inf if fewer)."""
  scores = task.score(shared, personal, examples, public)
  chex.assert_shape(scores, (examples.mask.size,))  # one score per slot, list-major
  scores = jnp.where(examples.mask.reshape(-1) > 0, scores, -jnp.inf)
  top_scores, position = jax.lax.top_k(scores, top_t)
  items = jnp.where(jnp.isfinite(top_scores), examples.items.reshape(-1)[position], -1)
  return items, top_scores
