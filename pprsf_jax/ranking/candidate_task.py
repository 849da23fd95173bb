"""The pipeline's task: rank the candidate lists the server sent, with any `RankingModel`.

A client's examples are `ClientExamples` (S candidate lists of K slots, labelled with the
interactions the client had with them) and the public side is the `ItemTable`. Two objectives:

* "bce": every candidate row is a unit, scored on its own (binary cross-entropy);
* "softmax": every candidate list with a positive is a unit — its positives compete with its
  other candidates in one softmax (the list's order is what NDCG@k reads, so the loss reads it).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from pprsf_jax.ranking.client import LocalTraining
from pprsf_jax.ranking.features import ClientExamples, ItemTable, client_features
from pprsf_jax.ranking.models.base import CandidateInputs, RankingModel
from pprsf_jax.ranking.task import ClientTask, TrainingUnits

CANDIDATE_LOSSES = ("bce", "softmax")


class LabelledCandidates(NamedTuple):
  """A unit of the candidate task: one row ("bce") or one list ("softmax", leaves [K, ...])."""

  inputs: CandidateInputs
  labels: jax.Array  # 1 = the client interacted with the candidate
  mask: jax.Array  # 1 = a real candidate the client may train on


def candidate_inputs(examples: ClientExamples, item_table: ItemTable) -> CandidateInputs:
  """[S * K] every slot's id and client-side feature row, list-major."""
  return CandidateInputs(items=examples.items.reshape(-1),
                         features=client_features(examples, item_table))


def declared_slots(items: jax.Array) -> tuple[jax.Array, jax.Array]:
  """`ClientTask.declared_units` when every real slot is a unit: (slots, the same count)."""
  real = jnp.sum(items >= 0)
  return real.astype(jnp.float32), real


def bce_per_row(logits: jax.Array, labels: jax.Array) -> jax.Array:
  return optax.sigmoid_binary_cross_entropy(logits, labels)


def softmax_per_list(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> jax.Array:
  """[B] per list [B, K]: the mean over its positives of -log softmax over its real candidates
  (finite zeros for a list with no real candidate or no positive)."""
  scores = jnp.where(mask > 0, logits, -jnp.inf)
  # A list with no real candidate would normalise over nothing: give it finite zeros instead.
  log_probs = jnp.where(mask > 0, jax.nn.log_softmax(scores, axis=-1), 0.0)
  positives = labels * mask
  return -jnp.sum(positives * log_probs, -1) / jnp.maximum(jnp.sum(positives, -1), 1.0)


@functools.cache
def candidate_task(model: RankingModel, loss: str, units_per_step: int) -> ClientTask:
  """The task of ranking server-sent candidates with `model` under `loss` ("bce" or "softmax").

  `units_per_step`: candidate rows ("bce") or candidate lists ("softmax") per local SGD step.
  Cached, so equal arguments give the same task (and jitted code on it compiles once).
  """
  if loss not in CANDIDATE_LOSSES:
    raise ValueError(f"unknown candidate loss {loss!r}; known: {', '.join(CANDIDATE_LOSSES)}")
  rows = loss == "bce"

  def units(examples: ClientExamples, item_table: ItemTable, key: jax.Array) -> TrainingUnits:
    del key  # the candidates are given: nothing to draw
    inputs = candidate_inputs(examples, item_table)
    if rows:
      data = LabelledCandidates(inputs, examples.labels.reshape(-1), examples.mask.reshape(-1))
      return TrainingUnits(data, examples.mask)
    num_lists, length = examples.mask.shape
    as_lists = jax.tree.map(lambda leaf: leaf.reshape((num_lists, length) + leaf.shape[1:]),
                            inputs)
    # Only lists with a positive have a gradient.
    has_positive = jnp.sum(examples.mask * examples.labels, -1, keepdims=True) > 0
    return TrainingUnits(LabelledCandidates(as_lists, examples.labels, examples.mask),
                         has_positive.astype(jnp.float32))

  def unit_losses(shared, personal, batch: LabelledCandidates, item_table) -> jax.Array:
    del item_table
    logits = model.logits(shared, personal, batch.inputs)
    if rows:
      return bce_per_row(logits, batch.labels)
    return softmax_per_list(logits, batch.labels, batch.mask)

  def score(shared, personal, examples: ClientExamples, item_table: ItemTable) -> jax.Array:
    return model.logits(shared, personal, candidate_inputs(examples, item_table))

  def declared_units(items: jax.Array) -> tuple[jax.Array, jax.Array]:
    if rows:
      return declared_slots(items)
    real = items >= 0
    return jnp.sum(real).astype(jnp.float32), jnp.sum(jnp.any(real, axis=-1))

  return ClientTask(init_shared=model.init_shared, init_personal=model.init_personal,
                    units=units, loss=unit_losses, score=score, declared_units=declared_units,
                    units_per_step=units_per_step)


def candidate_training(model: RankingModel, *, loss: str = "bce", units_per_step: int = 20,
                       epochs: int = 2, learning_rate: float = 0.03,
                       personal_learning_rate: float | None = None) -> LocalTraining:
  """`LocalTraining` of `model` on the candidate task (`pipeline.local_training` builds it from
  a config; code that builds its model by hand calls it directly)."""
  return LocalTraining(task=candidate_task(model, loss, units_per_step), epochs=epochs,
                       learning_rate=learning_rate,
                       personal_learning_rate=personal_learning_rate)
