"""Local training of the ranking model, written for ONE client and lifted with `jax.vmap`.

A client starts from the global parameters, runs `local_epochs` passes of mini-batch SGD over its
own examples (`lax.scan` over a fixed number of steps, masked beyond the client's own count), and
uploads theta_i - Theta. Mini-batch order comes from per-slot random priorities, so trailing
padding (examples or whole clients) never changes what a real client computes.

Two losses: "bce" scores every candidate row on its own (mini-batches of rows); "softmax" is
listwise — a mini-batch is whole candidate lists, and each list's positives compete with its
other candidates in one softmax (the list's ranking is what NDCG@k reads, so the loss reads it
too; on ML-100K it is the difference between re-ordering recall and trailing it: see README).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from pprsf_jax.aggregation import ClientState, FederatedAlgorithm, dense_bits
from pprsf_jax.ranking.features import ClientExamples, ItemTable, client_features
from pprsf_jax.ranking.model import RankingMLP, logits
from pprsf_jax.types import ClientUpload


@dataclasses.dataclass(frozen=True)
class LocalTraining:
  """Static description of a client's local optimisation (hashable, closed over by jit)."""

  model: RankingMLP
  epochs: int
  batch_size: int  # "bce": candidate rows per step
  learning_rate: float
  loss: str = "bce"  # "bce" (pointwise) or "softmax" (listwise)
  lists_per_step: int = 1  # "softmax": whole candidate lists per step

  @property
  def units_per_step(self) -> int:
    """What one SGD step averages over: candidate rows ("bce") or candidate lists ("softmax")."""
    return self.batch_size if self.loss == "bce" else self.lists_per_step


# Training uses the client's key itself; compression and local DP noise draw from sub-streams.
COMPRESSION_STREAM = 0xC0DE
PRIVACY_STREAM = 0xD9

GradientCorrection = Callable[[Any, Any], Any]  # (grads, params) -> grads


class ClientMetrics(NamedTuple):
  loss: jax.Array  # [] float32 mean training loss over the client's steps (0 if none)
  steps: jax.Array  # [] int32 local steps taken
  diverged: jax.Array  # [] bool: parameters or state went non-finite (nothing uploaded)


def masked_bce(model: RankingMLP, params, features, labels, weights) -> jax.Array:
  """Binary cross-entropy averaged over weighted rows; zero (not NaN) when all weights are zero."""
  per_row = optax.sigmoid_binary_cross_entropy(logits(model, params, features), labels)
  return jnp.sum(per_row * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def masked_list_softmax(model: RankingMLP, params, features, labels, mask,
                        weights) -> jax.Array:
  """Listwise softmax cross-entropy, averaged over weighted lists.

  features [B, K, F], labels / mask [B, K], weights [B]: per list, the mean over its positives of
  -log softmax over its real candidates. Zero (not NaN) when no list has weight.
  """
  scores = jnp.where(mask > 0, logits(model, params, features), -jnp.inf)
  # A list with no real candidate would normalise over nothing: give it finite zeros instead.
  log_probs = jnp.where(mask > 0, jax.nn.log_softmax(scores, axis=-1), 0.0)
  positives = labels * mask
  per_list = -jnp.sum(positives * log_probs, -1) / jnp.maximum(jnp.sum(positives, -1), 1.0)
  return jnp.sum(per_list * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def training_units(examples: ClientExamples, item_table: ItemTable, local: LocalTraining):
  """What one SGD step samples from, by loss: (features, labels, mask, unit mask [S, U], batch).

  "bce": units are candidate rows ([S * K, F] features); "softmax": units are whole lists
  ([S, K, F]), and only lists with a positive count (the others have no gradient).
  """
  features = client_features(examples, item_table)  # [S * K, F]
  if local.loss == "bce":
    return (features, examples.labels.reshape(-1), examples.mask.reshape(-1), examples.mask,
            local.units_per_step)
  num_lists, list_length = examples.mask.shape
  has_positive = jnp.sum(examples.mask * examples.labels, -1, keepdims=True) > 0
  return (features.reshape(num_lists, list_length, -1), examples.labels, examples.mask,
          has_positive.astype(jnp.float32), local.units_per_step)


def unit_loss(local: LocalTraining, params, features, labels, mask, weights) -> jax.Array:
  """The loss of one mini-batch of units (rows or lists, see `training_units`)."""
  if local.loss == "bce":
    return masked_bce(local.model, params, features, labels, weights * mask)
  return masked_list_softmax(local.model, params, features, labels, mask, weights)


def _epoch_orders(mask: jax.Array, epochs: int, key: jax.Array) -> jax.Array:
  """[epochs, S * K] order of the flattened slots per epoch: real examples shuffled, padding last.

  Each slot's priority depends only on (key, epoch, list, position in list), so padding appended
  to any list, or whole padding lists, leave the order of the real examples unchanged.
  """
  num_lists, list_length = mask.shape
  lists = jnp.repeat(jnp.arange(num_lists), list_length)
  positions = jnp.tile(jnp.arange(list_length), num_lists)

  def order(epoch):
    epoch_key = jax.random.fold_in(key, epoch)
    draw = lambda s, p: jax.random.uniform(jax.random.fold_in(jax.random.fold_in(epoch_key, s), p))
    priority = jax.vmap(draw)(lists, positions)
    return jnp.argsort(jnp.where(mask.reshape(-1) > 0, priority, jnp.inf), stable=True)

  return jax.vmap(order)(jnp.arange(epochs))


def local_train(params, examples: ClientExamples, item_table: ItemTable, *, key: jax.Array,
                local: LocalTraining, correct: GradientCorrection | None = None,
                work: jax.Array | float = 1.0) -> tuple[Any, ClientMetrics]:
  """Runs one client's local SGD from `params`; returns its final parameters and metrics.

  `correct(grads, params)` rewrites every step's gradient (FedProx's proximal pull, SCAFFOLD's
  control variates); None is plain SGD. A straggler completes only the share `work` in (0, 1] of
  its steps (at least one, if it has any).
  """
  examples = jax.tree.map(jnp.asarray, examples)  # host arrays work outside jit too
  features, labels, mask, unit_mask, batch = training_units(examples, item_table, local)
  length = unit_mask.size
  steps_per_epoch_max = -(-length // batch)
  num_units = jnp.sum(unit_mask).astype(jnp.int32)
  steps_per_epoch = (num_units + batch - 1) // batch
  planned_steps = steps_per_epoch * local.epochs
  total_steps = jnp.minimum(
      planned_steps, jnp.maximum(1, jnp.floor(planned_steps * work).astype(jnp.int32)))
  orders = _epoch_orders(unit_mask, local.epochs, key)
  orders = jnp.pad(orders, ((0, 0), (0, steps_per_epoch_max * batch - length)))
  unit_mask = unit_mask.reshape(-1)
  optimizer = optax.sgd(local.learning_rate)

  def step(carry, s):
    params, opt_state, loss_sum = carry
    epoch = s // jnp.maximum(steps_per_epoch, 1)
    position = (s % jnp.maximum(steps_per_epoch, 1)) * batch
    rows = jax.lax.dynamic_slice(orders[jnp.minimum(epoch, local.epochs - 1)], (position,), (batch,))
    in_epoch = (position + jnp.arange(batch)) < num_units
    weights = in_epoch * unit_mask[rows]
    loss, grads = jax.value_and_grad(functools.partial(unit_loss, local))(
        params, features[rows], labels[rows], mask[rows], weights)
    if correct is not None:
      grads = correct(grads, params)
    updates, new_opt_state = optimizer.update(grads, opt_state, params)
    active = s < total_steps
    # Steps past this client's own count are exact no-ops: keep the old state.
    keep = lambda new, old: jnp.where(active, new, old)
    params = jax.tree.map(keep, optax.apply_updates(params, updates), params)
    opt_state = jax.tree.map(keep, new_opt_state, opt_state)
    return (params, opt_state, loss_sum + jnp.where(active, loss, 0.0)), None

  init = (params, optimizer.init(params), jnp.zeros((), jnp.float32))
  (params, _, loss_sum), _ = jax.lax.scan(
      step, init, jnp.arange(steps_per_epoch_max * local.epochs))
  metrics = ClientMetrics(loss=loss_sum / jnp.maximum(total_steps, 1), steps=total_steps,
                          diverged=~_all_finite(params))
  return params, metrics


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
  real = items >= 0
  units = jnp.sum(real) if local.loss == "bce" else jnp.sum(jnp.any(real, axis=-1))
  planned = (units + local.units_per_step - 1) // local.units_per_step * local.epochs
  steps = jnp.minimum(planned, jnp.maximum(1, jnp.floor(planned * work).astype(planned.dtype)))
  return jnp.sum(real).astype(jnp.float32), steps.astype(jnp.int32)


def client_update(global_params, examples: ClientExamples, item_table: ItemTable, *,
                  key: jax.Array, local: LocalTraining, algorithm: FederatedAlgorithm,
                  broadcast, state: ClientState,
                  work: jax.Array | float = 1.0) -> tuple[ClientUpload, ClientState, ClientMetrics]:
  """One client's round: local training from Theta under the algorithm, then the encoded upload.

  Returns what is uploaded, the client's proposed next state (which never leaves the device; the
  round keeps it only if the upload is accepted) and metrics.
  """
  compress_key = jax.random.fold_in(key, COMPRESSION_STREAM)
  privacy_key = jax.random.fold_in(key, PRIVACY_STREAM)
  correct = lambda grads, params: algorithm.local.correct(grads, params, global_params,
                                                          state.local, broadcast)
  params, metrics = local_train(global_params, examples, item_table, key=key, local=local,
                                correct=correct, work=work)
  delta = jax.tree.map(jnp.subtract, params, global_params)
  local_state, local_upload = algorithm.local.finish(delta, state.local, broadcast, metrics.steps,
                                                     local.learning_rate)
  # Local DP acts on the update itself; encoding it afterwards is post-processing.
  private_delta = algorithm.privatizer(delta, privacy_key)
  sent, compressor_state, bits = algorithm.compressor.compress(private_delta, state.compressor,
                                                               compress_key)
  # The loss and the steps actually taken stay on the device (they read private data).
  num_examples, num_steps = public_upload_counts(examples.items, local, work)
  upload = ClientUpload(delta=sent, num_examples=num_examples, num_steps=num_steps,
                        extra=local_upload,
                        num_bytes=bits / 8 + dense_bits(local_upload) / 8)
  # A client whose training diverged does not upload; its proposed state must not be kept either
  # (a NaN residual or control variate would poison all its later rounds). The round decides.
  next_state = ClientState(local=local_state, compressor=compressor_state)
  diverged = metrics.diverged | ~_all_finite(next_state)
  return upload, next_state, metrics._replace(diverged=diverged)


def _all_finite(tree) -> jax.Array:
  return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]
                             or [True]))


def rank_candidates(params, examples: ClientExamples, item_table: ItemTable, *,
                    model: RankingMLP, top_t: int) -> tuple[jax.Array, jax.Array]:
  """One client's on-device ranking: its Top-T candidate ids and scores (-1 / -inf if fewer)."""
  scores = logits(model, params, client_features(examples, item_table))
  scores = jnp.where(examples.mask.reshape(-1) > 0, scores, -jnp.inf)
  top_scores, position = jax.lax.top_k(scores, top_t)
  items = jnp.where(jnp.isfinite(top_scores), examples.items.reshape(-1)[position], -1)
  return items, top_scores
