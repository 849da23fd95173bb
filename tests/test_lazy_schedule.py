"""Cohorts computed round by round: the same cohorts as a schedule built up front, and a start-up
that does not grow with the number of rounds a user typed."""

from __future__ import annotations

import dataclasses
import time
import tracemalloc

import numpy as np
import pytest

from pprsf_jax import pipeline
from pprsf_jax.config import EvalConfig, FederatedConfig, RunConfig
from pprsf_jax.ranking.sampling import cohort_schedule

SCHEMES = ("fixed", "poisson", "sweep")


def _eager_schedule(num_clients, cohort_size, rounds, seed, sampling):
  """Every round's cohort built up front: the schedule as the project always drew it."""
  cohort_size = min(cohort_size, num_clients)
  if sampling == "sweep":
    per_sweep = -(-num_clients // cohort_size)
    schedule = []
    for sweep in range(-(-rounds // per_sweep)):
      order = np.random.default_rng(np.random.SeedSequence([seed, 0x5EEE9, sweep])).permutation(
          num_clients).astype(np.int32)
      schedule += [np.sort(order[start:start + cohort_size])
                   for start in range(0, num_clients, cohort_size)]
    return schedule[:rounds]
  schedule = []
  for round_index in range(rounds):
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xC0407, round_index]))
    if sampling == "fixed":
      ids = np.sort(rng.choice(num_clients, cohort_size, replace=False))
    else:
      ids = np.flatnonzero(rng.random(num_clients) < cohort_size / num_clients)
    schedule.append(ids.astype(np.int32))
  return schedule


@pytest.mark.parametrize("sampling", SCHEMES)
@pytest.mark.parametrize("clients, cohort, rounds", [(10, 3, 17), (12, 4, 9), (5, 9, 7),
                                                     (200, 20, 40)])
def test_each_rounds_cohort_is_the_up_front_schedules(sampling, clients, cohort, rounds):
  eager = _eager_schedule(clients, cohort, rounds, 7, sampling)
  lazy = cohort_schedule(clients, cohort, rounds, 7, sampling)
  assert len(lazy) == rounds
  # Asked for in a scrambled order, as a resumed run or a prefetching thread may.
  for round_index in np.random.default_rng(0).permutation(rounds):
    got = lazy[int(round_index)]
    np.testing.assert_array_equal(got, eager[round_index])
    assert got.dtype == np.int32
  assert lazy.largest_cohort() == max(len(ids) for ids in eager)
  assert [list(ids) for ids in lazy[2:7:2]] == [list(ids) for ids in eager[2:7:2]]
  with pytest.raises(IndexError):
    lazy[rounds]  # pylint: disable=pointless-statement


def test_a_billion_round_schedule_costs_nothing_up_front():
  tracemalloc.start()
  schedule = cohort_schedule(943, 100, 10**9, seed=0)
  last = schedule[10**9 - 1]
  largest = schedule.largest_cohort()
  _, peak = tracemalloc.get_traced_memory()
  tracemalloc.stop()
  assert len(schedule) == 10**9 and len(last) == largest == 100
  assert peak < 10**6  # bytes: no per-round list


class _FirstRoundDone(Exception):
  pass


def _seconds_to_first_round(config, theta0, examples, item_table, local) -> float:
  def stop(params, personal):
    raise _FirstRoundDone

  start = time.perf_counter()
  with pytest.raises(_FirstRoundDone):
    pipeline.train_federated(theta0, (), examples, item_table, config, local, evaluate=stop)
  return time.perf_counter() - start


def test_training_reaches_round_one_as_fast_with_a_billion_rounds(theta0, examples, item_table,
                                                                  local):
  """Start-up (schedule, padded shape, per-round record) is independent of `rounds`: the first
  round of a 10**9-round run comes as fast as that of a 10-round one (same compiled round)."""
  config = RunConfig(federated=FederatedConfig(rounds=10, clients_per_round=8),
                     eval=EvalConfig(every_rounds=1), checkpoint_every=0)
  huge = dataclasses.replace(config, federated=dataclasses.replace(config.federated,
                                                                   rounds=10**9))
  _seconds_to_first_round(config, theta0, examples, item_table, local)  # compiles the round
  small = _seconds_to_first_round(config, theta0, examples, item_table, local)
  tracemalloc.start()
  large = _seconds_to_first_round(huge, theta0, examples, item_table, local)
  _, peak = tracemalloc.get_traced_memory()
  tracemalloc.stop()
  assert large < 3 * small + 2.0, (small, large)
  assert peak < 50 * 10**6  # bytes; a list of 10**9 cohorts or [rounds] arrays would be GBs
