"""Which clients take part in which round: fixed-size, Poisson or sweeping cohorts, from the seed
alone.

Each round's cohort is a function of (seed, round), never of data, so a resumed run samples the
same clients, a privacy accountant may count participations before training, and a Poisson run
can find its largest cohort (the padded shape it compiles for) up front.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np


class CohortSchedule(Sequence):
  """The cohort of every round, each computed when asked for: [rounds] sorted int32 arrays.

  A round's cohort is a pure function of (seed, round), so nothing is built up front: a run's
  start-up does not grow with `rounds`, and a resumed run asks for the same cohorts again.
  """

  def __init__(self, num_clients: int, cohort_size: int, rounds: int, seed: int,
               sampling: str = "fixed"):
    if sampling not in ("fixed", "poisson", "sweep"):
      raise ValueError(f"sampling {sampling!r} is not 'fixed', 'poisson' or 'sweep'")
    self.num_clients, self.rounds, self.seed, self.sampling = num_clients, rounds, seed, sampling
    self.cohort_size = min(cohort_size, num_clients)
    self._per_sweep = -(-num_clients // self.cohort_size)

  def __len__(self) -> int:
    return self.rounds

  def __getitem__(self, index):
    if isinstance(index, slice):
      return [self[i] for i in range(*index.indices(self.rounds))]
    if not -self.rounds <= index < self.rounds:
      raise IndexError(f"round {index} of a {self.rounds}-round schedule")
    return self._cohort(index % self.rounds)

  def _cohort(self, round_index: int) -> np.ndarray:
    if self.sampling == "sweep":
      start = (round_index % self._per_sweep) * self.cohort_size
      order = _sweep_order(self.num_clients, self.seed, round_index // self._per_sweep)
      return np.sort(order[start:start + self.cohort_size])
    rng = np.random.default_rng(np.random.SeedSequence([self.seed, 0xC0407, round_index]))
    if self.sampling == "fixed":
      ids = np.sort(rng.choice(self.num_clients, self.cohort_size, replace=False))
    else:
      ids = np.flatnonzero(rng.random(self.num_clients) < self.cohort_size / self.num_clients)
    return ids.astype(np.int32)

  def largest_cohort(self) -> int:
    """The most clients any round draws: the padded cohort a run compiles for. Known for fixed
    and sweeping cohorts; Poisson cohorts vary, so every round is drawn to find it (a start-up
    that does grow with `rounds`, the price of an exact padded shape)."""
    if self.sampling != "poisson":
      return self.cohort_size if self.rounds else 0
    return max((len(ids) for ids in self), default=0)


@functools.lru_cache(maxsize=2)
def _sweep_order(num_clients: int, seed: int, sweep: int) -> np.ndarray:
  """Sweep `sweep`'s random order of every client (cut into consecutive cohorts)."""
  rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EEE9, sweep]))
  return rng.permutation(num_clients).astype(np.int32)


def cohort_schedule(num_clients: int, cohort_size: int, rounds: int, seed: int,
                    sampling: str = "fixed") -> CohortSchedule:
  """The run's cohorts, computed round by round (`CohortSchedule`).

  Args:
    num_clients: N.
    cohort_size: C, or the expected cohort size for Poisson sampling. Capped at N here, so a
      caller may ask for "everyone"; a run's config never reaches the cap, since
      `pprsf_jax.config.check_against_data` refuses `federated.clients_per_round` > N once the
      data has loaded (a silent cap would make the config misstate the cohort).
    rounds: Number of rounds.
    seed: The run's seed.
    sampling: "fixed" (C distinct clients uniformly), "poisson" (each client independently
      with probability C / N, so cohorts vary in size and may be empty) or "sweep" (every
      ceil(N / C) rounds a fresh random order of all clients, cut into consecutive cohorts: each
      sweep covers every client exactly once).
  """
  return CohortSchedule(num_clients, cohort_size, rounds, seed, sampling)


def participations(schedule: Sequence[np.ndarray], num_clients: int) -> np.ndarray:
  """[N] int64: rounds each client takes part in."""
  counts = np.zeros(num_clients, np.int64)
  for ids in schedule:
    counts[ids] += 1
  return counts
