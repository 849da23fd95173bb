"""Privacy accounting for client-level DP, through Google's `dp-accounting` library.

What one round does to one client is described by a `RoundMechanism`; this module turns it into
dp-accounting events and asks the library for epsilon (RDP or PLD) or for the noise multiplier
that spends a target epsilon. Nothing here is an accountant of our own: the library does the
mathematics, this module only states the mechanism correctly.

Neighbouring relations, and so sensitivities, follow from the sampling:

* Poisson sampling (each client joins a round with probability q): add/remove one client, the
  clipped sum moves by at most C, so the event is PoissonSampled(q, Gaussian(z)) with z = std / C.
* Fixed-size cohorts (C of N without replacement): the population size is public, neighbours
  replace one client, the clipped sum moves by up to 2C, so the event is
  SampledWithoutReplacement(N, C, Gaussian(z / 2)) under REPLACE_ONE (RDP only: dp-accounting's
  PLD accountant does not support that event).
* Local DP (each client noises its own clipped update; the server is not trusted): a client's
  whole data may be replaced, its upload moves by up to 2C, so each round it takes part in is a
  Gaussian mechanism with multiplier z / 2 (see `_relation` for how that is stated to the
  library), and no amplification by sampling applies (the server sees who took part). Epsilon is
  reported for the client that took part most often.
"""

from __future__ import annotations

import contextlib
import logging
import math
from typing import NamedTuple

import dp_accounting
import numpy as np
from dp_accounting import pld, rdp

SAMPLINGS = ("fixed", "poisson", "local")
ACCOUNTANTS = ("rdp", "pld")


class RoundMechanism(NamedTuple):
  """What one round of training does to one client, as far as privacy is concerned.

  Attributes:
    noise_multiplier: z, the Gaussian noise std over the clip norm (for adaptive clipping the
      effective z of update and count noise together, see `update_noise_multiplier`).
    sampling: "fixed" (cohorts of `cohort_size` without replacement), "poisson" (rate
      `cohort_size / num_clients`) or "local" (local DP; one event per round taken part in).
    num_clients: N, the population the cohorts are drawn from.
    cohort_size: C, or the expected cohort size under Poisson sampling.
  """

  noise_multiplier: float
  sampling: str
  num_clients: int
  cohort_size: int

  @property
  def sampling_probability(self) -> float:
    return self.cohort_size / self.num_clients


def _relation(mechanism: RoundMechanism) -> dp_accounting.NeighboringRelation:
  if mechanism.sampling == "fixed":
    return dp_accounting.NeighboringRelation.REPLACE_ONE
  # Local DP states its sensitivity (2C) in the multiplier itself, z / 2. A plain Gaussian's
  # privacy depends on std / sensitivity only, and under ADD_OR_REMOVE both accountants read the
  # multiplier that way; dp-accounting's PLD would double the sensitivity again under REPLACE_ONE
  # (its RDP would not), so that relation would make the two accountants disagree.
  return dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE


def round_event(mechanism: RoundMechanism) -> dp_accounting.DpEvent:
  """The dp-accounting event of one round (see the module docstring for the sensitivities)."""
  if mechanism.sampling not in SAMPLINGS:
    raise ValueError(f"sampling {mechanism.sampling!r} is not one of {SAMPLINGS}")
  z = mechanism.noise_multiplier
  if mechanism.sampling == "poisson":
    return dp_accounting.PoissonSampledDpEvent(mechanism.sampling_probability,
                                              dp_accounting.GaussianDpEvent(z))
  if mechanism.sampling == "fixed":
    return dp_accounting.SampledWithoutReplacementDpEvent(
        mechanism.num_clients, mechanism.cohort_size, dp_accounting.GaussianDpEvent(z / 2))
  return dp_accounting.GaussianDpEvent(z / 2)


def _accountant(name: str, mechanism: RoundMechanism) -> dp_accounting.PrivacyAccountant:
  if name == "rdp":
    return rdp.RdpAccountant(neighboring_relation=_relation(mechanism))
  if name == "pld":
    if mechanism.sampling == "fixed":
      raise ValueError("the PLD accountant of dp-accounting does not support fixed-size cohorts "
                       "(sampling without replacement); use the RDP accountant or Poisson sampling")
    return pld.PLDAccountant(neighboring_relation=_relation(mechanism))
  raise ValueError(f"accountant {name!r} is not one of {ACCOUNTANTS}")


@contextlib.contextmanager
def _quiet_library():
  # dp-accounting logs a warning per RDP order it cannot evaluate for sampling without
  # replacement (it then skips that order, which only loosens the bound); hundreds per call.
  logger = logging.getLogger("absl")
  level = logger.level
  logger.setLevel(logging.ERROR)
  try:
    yield
  finally:
    logger.setLevel(level)


def epsilon(mechanism: RoundMechanism, rounds: int, delta: float, accountant: str = "rdp") -> float:
  """Epsilon spent after `rounds` rounds (for local DP: rounds the client took part in)."""
  if rounds == 0:
    return 0.0
  if mechanism.noise_multiplier == 0:
    return math.inf
  ledger = _accountant(accountant, mechanism)
  with _quiet_library():
    ledger.compose(round_event(mechanism), rounds)
    return float(ledger.get_epsilon(delta))


def epsilon_curve(mechanism: RoundMechanism, rounds: int, delta: float) -> np.ndarray:
  """[rounds] float64: RDP epsilon spent after each round 1..rounds.

  RDP composes by adding, so one round's RDP vector times t is round t's; dp-accounting computes
  that vector once (it keeps it in `_rdp`: the library has no public getter) and converts each
  multiple to epsilon with its public `compute_epsilon`. A test checks every value against a
  fresh accountant composed t times, so a library change that broke this would be caught.
  """
  if mechanism.noise_multiplier == 0:
    return np.full(rounds, math.inf)
  ledger = _accountant("rdp", mechanism)
  with _quiet_library():
    ledger.compose(round_event(mechanism))
  one_round = np.asarray(ledger._rdp, dtype=np.float64)  # pylint: disable=protected-access
  orders = np.asarray(ledger._orders, dtype=np.float64)  # pylint: disable=protected-access
  return np.asarray([rdp.compute_epsilon(orders, t * one_round, delta)[0]
                     for t in range(1, rounds + 1)])


def calibrate_noise_multiplier(mechanism: RoundMechanism, rounds: int, target_epsilon: float,
                               delta: float, accountant: str = "rdp") -> float:
  """The smallest noise multiplier whose run of `rounds` spends at most `target_epsilon`.

  `mechanism.noise_multiplier` is ignored. Uses dp-accounting's `calibrate_dp_mechanism`
  (bisection on the accountant's own epsilon, relative tolerance 1e-4). PLD is searched below the
  RDP answer only (PLD is the tighter bound, so it never needs more noise) and not below
  `_PLD_FLOOR`: tiny multipliers make PLD's discretised loss grid explode in size (z = 0.1
  allocates tens of GiB), and a floor that already meets the target is a safe answer.
  """
  if not (math.isfinite(target_epsilon) and target_epsilon > 0):
    raise ValueError(f"target_epsilon must be a finite number > 0, got {target_epsilon}")
  if rounds == 0:
    return 0.0

  def event(z: float) -> dp_accounting.DpEvent:
    return dp_accounting.SelfComposedDpEvent(
        round_event(mechanism._replace(noise_multiplier=z)), rounds)

  with _quiet_library():
    z_rdp = float(dp_accounting.calibrate_dp_mechanism(
        lambda: _accountant("rdp", mechanism), event, target_epsilon, delta,
        bracket_interval=dp_accounting.LowerEndpointAndGuess(1e-3, 1.0), tol=1e-4))
    if accountant == "rdp":
      return z_rdp
    _accountant(accountant, mechanism)  # refuses unsupported combinations by name
    floor = max(_PLD_FLOOR, z_rdp / 2)
    if floor >= z_rdp or epsilon(mechanism._replace(noise_multiplier=floor), rounds, delta,
                                 accountant) <= target_epsilon:
      return min(floor, z_rdp)
    return float(dp_accounting.calibrate_dp_mechanism(
        lambda: _accountant(accountant, mechanism), event, target_epsilon, delta,
        bracket_interval=dp_accounting.ExplicitBracketInterval(floor, z_rdp), tol=1e-4))


_PLD_FLOOR = 0.3


def update_noise_multiplier(noise_multiplier: float, count_stddev: float) -> float:
  """Noise multiplier left for the update when adaptive clipping also releases a noisy count.

  Andrew et al. (2021), "Differentially Private Learning with Adaptive Clipping": releasing the
  clipped sum with multiplier z_u and the count of unclipped clients (each contributing 1/2
  around a centre, sensitivity 1/2) with std s costs as much as one Gaussian with
  z = (z_u^-2 + (2 s)^-2)^-1/2, so z_u = (z^-2 - (2 s)^-2)^-1/2, which needs 2 s > z.
  """
  if noise_multiplier == 0:
    return 0.0
  if 2 * count_stddev <= noise_multiplier:
    raise ValueError(
        f"adaptive clipping: privacy.clip_count_stddev ({count_stddev}) must exceed half the "
        f"noise multiplier ({noise_multiplier} / 2), else the count alone spends the budget")
  return (noise_multiplier**-2 - (2 * count_stddev)**-2) ** -0.5
