"""Which clients take part in which round: fixed-size, Poisson or sweeping cohorts, from the seed
alone.

The whole schedule is a function of (seed, round), never of data, so a resumed run samples the
same clients, a privacy accountant may count participations before training, and a Poisson run
knows its largest cohort (the padded shape it compiles for) up front.
"""

from __future__ import annotations

import numpy as np


def cohort_schedule(num_clients: int, cohort_size: int, rounds: int, seed: int,
                    sampling: str = "fixed") -> list[np.ndarray]:
  """[rounds] sorted int32 arrays of client ids.

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
  if sampling not in ("fixed", "poisson", "sweep"):
    raise ValueError(f"sampling {sampling!r} is not 'fixed', 'poisson' or 'sweep'")
  cohort_size = min(cohort_size, num_clients)
  if sampling == "sweep":
    return _sweeps(num_clients, cohort_size, rounds, seed)
  schedule = []
  for round_index in range(rounds):
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xC0407, round_index]))
    if sampling == "fixed":
      ids = np.sort(rng.choice(num_clients, cohort_size, replace=False))
    else:
      ids = np.flatnonzero(rng.random(num_clients) < cohort_size / num_clients)
    schedule.append(ids.astype(np.int32))
  return schedule


def _sweeps(num_clients: int, cohort_size: int, rounds: int, seed: int) -> list[np.ndarray]:
  per_sweep = -(-num_clients // cohort_size)
  schedule = []
  for sweep in range(-(-rounds // per_sweep)):
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EEE9, sweep]))
    order = rng.permutation(num_clients).astype(np.int32)
    schedule += [np.sort(order[start:start + cohort_size])
                 for start in range(0, num_clients, cohort_size)]
  return schedule[:rounds]


def participations(schedule: list[np.ndarray], num_clients: int) -> np.ndarray:
  """[N] int64: rounds each client takes part in."""
  counts = np.zeros(num_clients, np.int64)
  for ids in schedule:
    counts[ids] += 1
  return counts
