"""Simulated client faults: dropouts (the client leaves before uploading) and stragglers (it runs
out of time after part of its local steps).

Each client's fault is drawn from its own key, so whether client c drops in round r depends only
on (seed, r, c): not on the cohort's order or padding, and the same after a resume.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

# A sub-stream of the client key that training and compression never use.
FAULT_STREAM = 0xFA17


@dataclasses.dataclass(frozen=True)
class FaultModel:
  """How often simulated clients fail (static, closed over by the jitted round)."""

  dropout_rate: float = 0.0  # chance a client leaves before uploading
  straggler_rate: float = 0.0  # chance a client stops early
  straggler_min_work: float = 0.25  # a straggler completes a uniform share in [this, 1)

  def __post_init__(self):
    if not (0 <= self.dropout_rate < 1 and 0 <= self.straggler_rate <= 1
            and 0 < self.straggler_min_work <= 1):
      raise ValueError(f"FaultModel: rates must lie in [0, 1) / [0, 1] and min work in (0, 1]: "
                       f"{self}")


class ClientFaults(NamedTuple):
  dropped: jax.Array  # [] bool: nothing arrives from this client this round
  work: jax.Array  # [] float32 in (0, 1]: share of its local steps the client completes


def draw_faults(key: jax.Array, model: FaultModel) -> ClientFaults:
  """One client's faults this round, from its round key."""
  drop_draw, straggle_draw, work_draw = jax.random.uniform(
      jax.random.fold_in(key, FAULT_STREAM), (3,))
  straggles = straggle_draw < model.straggler_rate
  work = model.straggler_min_work + (1 - model.straggler_min_work) * work_draw
  return ClientFaults(dropped=drop_draw < model.dropout_rate,
                      work=jnp.where(straggles, work, 1.0).astype(jnp.float32))
