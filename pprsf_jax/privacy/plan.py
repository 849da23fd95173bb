"""From a `PrivacyConfig` to a concrete plan: calibrated noise, the algorithm, the ledger.

The orchestrator calls `plan_privacy` once, before training, with the cohort schedule (which
depends on the seed only). A DP run's start-up is the one that grows with the rounds: local DP
draws every round's cohort to count the busiest client's participations, and the report's
per-round ε curve has an entry a round. `private_algorithm` then builds the federated algorithm with the DP
stage in place, and `privacy_report` states what the run spent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from pprsf_jax.aggregation import FederatedAlgorithm, make_aggregator, make_algorithm
from pprsf_jax.config import FederatedConfig, PrivacyConfig
from pprsf_jax.privacy import accounting
from pprsf_jax.privacy.central_dp import AdaptiveClipping, gaussian_mean
from pprsf_jax.privacy.local_dp import gaussian_privatizer
from pprsf_jax.ranking.sampling import participations


class PrivacyPlan(NamedTuple):
  mechanism: str  # "central" or "local"
  clip_norm: float  # C (the starting bound under adaptive clipping)
  noise_multiplier: float  # z actually used (calibrated when a target epsilon was given)
  expected_clients: float  # the central mean's denominator
  adaptive: AdaptiveClipping | None
  accounting: accounting.RoundMechanism
  charged_rounds: int  # rounds composed: all rounds (central) or the busiest client's (local)
  delta: float
  config: PrivacyConfig


def plan_privacy(config: PrivacyConfig, fed: FederatedConfig, num_clients: int,
                 schedule: Sequence[np.ndarray]) -> PrivacyPlan | None:
  """The run's DP plan, or None when `config.mechanism` is "none".

  Raises:
    ValueError: delta is not below 1 / num_clients (a guarantee that allows one client's data
      to leak with probability delta would then be meaningless for the population).
  """
  if config.mechanism == "none":
    return None
  if config.delta >= 1 / num_clients:
    raise ValueError(f"privacy.delta={config.delta} must be below 1 / number of clients "
                     f"(1/{num_clients} = {1 / num_clients:.3g})")
  cohort = min(fed.clients_per_round, num_clients)
  if config.mechanism == "central":
    sampling = fed.sampling
    charged = len(schedule)
  else:
    sampling = "local"
    charged = int(participations(schedule, num_clients).max(initial=0))
  mechanism = accounting.RoundMechanism(config.noise_multiplier, sampling, num_clients, cohort)
  if config.target_epsilon > 0:
    mechanism = mechanism._replace(noise_multiplier=accounting.calibrate_noise_multiplier(
        mechanism, charged, config.target_epsilon, config.delta, config.accountant))
  adaptive = None
  if config.mechanism == "central" and config.clipping == "adaptive":
    # Auto: Andrew et al.'s cohort / 20, raised to z when the noise is that large (so 2s > z;
    # the update then keeps z / sqrt(3/4), 15% more noise than without the count).
    count_stddev = config.clip_count_stddev or max(cohort / 20, mechanism.noise_multiplier)
    accounting.update_noise_multiplier(mechanism.noise_multiplier, count_stddev)  # checks 2s > z
    adaptive = AdaptiveClipping(config.target_quantile, config.clip_learning_rate, count_stddev)
  return PrivacyPlan(mechanism=config.mechanism, clip_norm=config.clip_norm,
                     noise_multiplier=mechanism.noise_multiplier, expected_clients=float(cohort),
                     adaptive=adaptive, accounting=mechanism, charged_rounds=charged,
                     delta=config.delta, config=config)


def private_algorithm(fed: FederatedConfig, num_clients: int,
                      plan: PrivacyPlan | None) -> FederatedAlgorithm:
  """The configured federated algorithm, with the plan's DP mechanism in place."""
  algorithm = make_algorithm(fed, num_clients)
  if plan is None:
    return algorithm
  if plan.mechanism == "central":
    reducer = gaussian_mean(clip_norm=plan.clip_norm, noise_multiplier=plan.noise_multiplier,
                            expected_clients=plan.expected_clients, adaptive=plan.adaptive)
    return algorithm._replace(aggregator=make_aggregator(fed, reducer=reducer), always_step=True)
  return algorithm._replace(privatizer=gaussian_privatizer(
      clip_norm=plan.clip_norm, noise_multiplier=plan.noise_multiplier))


def privacy_report(plan: PrivacyPlan | None) -> dict[str, Any]:
  """What the run spent: epsilon by RDP (and PLD where dp-accounting supports it), per round."""
  if plan is None:
    return {"mechanism": "none"}
  curve = accounting.epsilon_curve(plan.accounting, plan.charged_rounds, plan.delta)
  report = {
      "mechanism": plan.mechanism,
      "sampling": plan.accounting.sampling,
      "noise_multiplier": plan.noise_multiplier,
      "clip_norm": plan.clip_norm,
      "clipping": "adaptive" if plan.adaptive is not None else "fixed",
      "delta": plan.delta,
      "target_epsilon": plan.config.target_epsilon or None,
      "charged_rounds": plan.charged_rounds,
      "epsilon_rdp": float(curve[-1]) if len(curve) else 0.0,
      # Central DP: after each round. Local DP: after each round the busiest client took part in.
      "epsilon_rdp_per_round": [float(value) for value in curve],
  }
  if plan.accounting.sampling != "fixed":
    report["epsilon_pld"] = accounting.epsilon(plan.accounting, plan.charged_rounds, plan.delta,
                                               "pld")
  report["epsilon"] = (report["epsilon_pld"] if plan.config.accountant == "pld"
                       else report["epsilon_rdp"])
  return report
