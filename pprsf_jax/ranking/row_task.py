"""A task over plain labelled feature rows: the cross-framework "standard round"
(`scripts/bench_standard_round.py`) and any supervised per-client data set.

Each client holds E rows of F features with a binary label; every row is a unit, the loss is
binary cross-entropy of the model's logit. The rows travel as one list of E "candidates" so the
core's layout rules hold: `items` (unused ids, -1 for padding rows) and `mask`.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from pprsf_jax.ranking.candidate_task import bce_per_row, declared_slots
from pprsf_jax.ranking.models.base import CandidateInputs, RankingModel
from pprsf_jax.ranking.task import ClientTask, TrainingUnits


class LabelledRows(NamedTuple):
  """One client's rows (a cohort's stacked on a leading client axis)."""

  items: jax.Array  # [1, E] int32 row ids, -1 for padding rows
  mask: jax.Array  # [1, E] float32 1 = a real row
  features: jax.Array  # [E, F] float32
  labels: jax.Array  # [E] float32 0 or 1


def labelled_rows(features, labels) -> LabelledRows:
  """Every row real: features [..., E, F], labels [..., E] (a leading client axis allowed)."""
  shape = labels.shape[:-1] + (1, labels.shape[-1])
  ids = jnp.broadcast_to(jnp.arange(labels.shape[-1], dtype=jnp.int32), labels.shape)
  return LabelledRows(items=ids.reshape(shape), mask=jnp.ones(shape, jnp.float32),
                      features=jnp.asarray(features, jnp.float32),
                      labels=jnp.asarray(labels, jnp.float32))


@functools.cache
def labelled_rows_task(model: RankingModel, units_per_step: int) -> ClientTask:
  """Binary cross-entropy over each client's rows, `units_per_step` rows per SGD step."""

  def inputs(rows: LabelledRows) -> CandidateInputs:
    return CandidateInputs(items=rows.items.reshape(-1), features=rows.features)

  def units(rows: LabelledRows, public, key: jax.Array) -> TrainingUnits:
    del public, key
    return TrainingUnits((inputs(rows), rows.labels), rows.mask)

  def loss(shared, personal, batch, public) -> jax.Array:
    del public
    batch_inputs, labels = batch
    return bce_per_row(model.logits(shared, personal, batch_inputs), labels)

  def score(shared, personal, rows: LabelledRows, public) -> jax.Array:
    del public
    return model.logits(shared, personal, inputs(rows))

  return ClientTask(init_shared=model.init_shared, init_personal=model.init_personal,
                    units=units, loss=loss, score=score, declared_units=declared_slots,
                    units_per_step=units_per_step)
