"""Differential privacy: accountant agreement with dp-accounting, noise calibration, clipping.

The accountant tests compare our epsilon with dp-accounting composed by hand for the same
mechanism, and with the closed form of the Gaussian mechanism (a first-principles check that
the sensitivities we state are the right ones, which library agreement alone cannot show).
"""

from __future__ import annotations

import math

import dp_accounting
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from dp_accounting import pld, rdp
from hypothesis import given, settings
from hypothesis import strategies as st

from pprsf_jax.config import FederatedConfig, PrivacyConfig
from pprsf_jax.privacy import (AdaptiveClipping, RoundMechanism, calibrate_noise_multiplier,
                               epsilon, epsilon_curve, gaussian_mean, gaussian_privatizer,
                               plan_privacy, update_noise_multiplier)
from pprsf_jax.ranking.sampling import cohort_schedule, participations

DELTA = 1e-5
N, C = 943, 100
RELATION = dp_accounting.NeighboringRelation


# ----------------------------------------------------------------------------- accounting
def _by_hand(accountant, event, rounds, delta=DELTA):
  accountant.compose(event, rounds)
  return accountant.get_epsilon(delta)


@pytest.mark.parametrize("z,rounds", [(0.8, 50), (1.5, 300)])
def test_poisson_epsilon_equals_dp_accounting(z, rounds):
  mechanism = RoundMechanism(z, "poisson", N, C)
  event = dp_accounting.PoissonSampledDpEvent(C / N, dp_accounting.GaussianDpEvent(z))
  assert epsilon(mechanism, rounds, DELTA, "rdp") == _by_hand(rdp.RdpAccountant(), event, rounds)
  assert epsilon(mechanism, rounds, DELTA, "pld") == _by_hand(pld.PLDAccountant(), event, rounds)


def test_fixed_cohorts_use_replace_one_with_doubled_sensitivity():
  mechanism = RoundMechanism(1.2, "fixed", N, C)
  event = dp_accounting.SampledWithoutReplacementDpEvent(N, C, dp_accounting.GaussianDpEvent(0.6))
  expected = _by_hand(rdp.RdpAccountant(neighboring_relation=RELATION.REPLACE_ONE), event, 40)
  assert epsilon(mechanism, 40, DELTA) == expected
  with pytest.raises(ValueError, match="PLD"):
    epsilon(mechanism, 40, DELTA, "pld")


@pytest.mark.parametrize("z,participated", [(1.0, 1), (2.0, 10), (4.0, 30)])
def test_local_dp_matches_the_gaussian_closed_form(z, participated):
  """k local rounds = one Gaussian with multiplier (z / 2) / sqrt(k) (sensitivity 2C)."""
  exact = dp_accounting.get_epsilon_gaussian(z / 2 / math.sqrt(participated), DELTA)
  mechanism = RoundMechanism(z, "local", N, C)
  assert epsilon(mechanism, participated, DELTA, "pld") == pytest.approx(exact, rel=2e-3)
  assert exact <= epsilon(mechanism, participated, DELTA, "rdp") <= 1.5 * exact  # RDP: an upper bound


def test_poisson_with_everyone_sampled_is_the_plain_gaussian():
  exact = dp_accounting.get_epsilon_gaussian(1.0 / math.sqrt(20), DELTA)
  assert epsilon(RoundMechanism(1.0, "poisson", 50, 50), 20, DELTA, "pld") == pytest.approx(
      exact, rel=2e-3)


@pytest.mark.parametrize("sampling", ["fixed", "poisson", "local"])
def test_epsilon_curve_equals_a_fresh_accountant_each_round(sampling):
  mechanism = RoundMechanism(1.1, sampling, N, C)
  curve = epsilon_curve(mechanism, 60, DELTA)
  assert curve.shape == (60,) and np.all(np.diff(curve) > 0)
  for t in (1, 2, 17, 60):
    assert curve[t - 1] == pytest.approx(epsilon(mechanism, t, DELTA, "rdp"), rel=1e-12)


@pytest.mark.parametrize("sampling,accountant", [("fixed", "rdp"), ("poisson", "rdp"),
                                                 ("poisson", "pld"), ("local", "pld")])
@pytest.mark.parametrize("target", [1.0, 8.0])
def test_calibration_spends_the_target(sampling, accountant, target):
  mechanism = RoundMechanism(0.0, sampling, N, C)
  rounds = 100 if sampling != "local" else 12
  z = calibrate_noise_multiplier(mechanism, rounds, target, DELTA, accountant)
  spent = epsilon(mechanism._replace(noise_multiplier=z), rounds, DELTA, accountant)
  assert target * 0.99 <= spent <= target * (1 + 1e-6)
  # A little less noise would overspend: the calibrated z is the smallest (to tolerance).
  assert epsilon(mechanism._replace(noise_multiplier=z * 0.98), rounds, DELTA, accountant) > target


def test_pld_calibration_needs_less_noise_than_rdp():
  mechanism = RoundMechanism(0.0, "poisson", N, C)
  assert (calibrate_noise_multiplier(mechanism, 100, 2.0, DELTA, "pld")
          < calibrate_noise_multiplier(mechanism, 100, 2.0, DELTA, "rdp"))


def test_adaptive_clipping_splits_the_noise_budget():
  z, count_std = 1.0, 5.0
  z_update = update_noise_multiplier(z, count_std)
  assert z_update > z
  assert (z_update**-2 + (2 * count_std) ** -2) ** -0.5 == pytest.approx(z, rel=1e-12)
  with pytest.raises(ValueError, match="clip_count_stddev"):
    update_noise_multiplier(1.0, 0.5)


def test_no_noise_means_no_privacy_and_no_rounds_mean_none_spent():
  assert epsilon(RoundMechanism(0.0, "poisson", N, C), 10, DELTA) == math.inf
  assert epsilon(RoundMechanism(1.0, "poisson", N, C), 0, DELTA) == 0.0


# ----------------------------------------------------------------------------- the mechanism
def _aggregate(stage, updates, mask, key, state=None):
  state = stage.init(None) if state is None else state
  count = mask.shape[0]
  return stage.aggregate(updates, state, weights=jnp.ones(count), mask=mask,
                         steps=jnp.ones(count), key=key, params=None)


def test_central_noise_std_is_z_times_clip_over_cohort():
  """Zero updates: the output is pure noise, std z * C / expected per entry (200 k draws)."""
  z, clip, expected = 1.3, 0.7, 40.0
  stage = jax.jit(lambda key: _aggregate(
      gaussian_mean(clip_norm=clip, noise_multiplier=z, expected_clients=expected),
      {"w": jnp.zeros((8, 1000))}, jnp.ones(8), key)[0]["w"])
  draws = np.concatenate([np.asarray(stage(jax.random.key(i))) for i in range(200)])
  target = z * clip / expected
  # Relative standard error of a std estimate from n draws is 1 / sqrt(2n) = 0.16%.
  assert abs(draws.std() / target - 1) < 0.01
  assert abs(draws.mean()) < 5 * target / math.sqrt(draws.size)


def test_adaptive_clipping_noises_the_update_with_the_larger_multiplier():
  z, clip, expected = 1.0, 1.0, 10.0
  adaptive = AdaptiveClipping(0.5, 0.2, count_stddev=2.0)
  stage = gaussian_mean(clip_norm=clip, noise_multiplier=z, expected_clients=expected,
                        adaptive=adaptive)
  run = jax.jit(lambda key: _aggregate(stage, {"w": jnp.zeros((4, 5000))}, jnp.ones(4), key)[0])
  draws = np.concatenate([np.asarray(run(jax.random.key(i))["w"]) for i in range(20)])
  target = update_noise_multiplier(z, 2.0) * clip / expected
  assert abs(draws.std() / target - 1) < 0.02


def test_clipping_bounds_each_client_and_ignores_refused_rows():
  updates = {"a": jnp.asarray([[3.0, 4.0], [0.3, 0.4], [np.nan, 1.0], [30.0, 40.0]]),
             "b": jnp.zeros((4, 1))}
  mask = jnp.asarray([1.0, 1.0, 0.0, 1.0])  # row 2 was refused (NaN)
  stage = gaussian_mean(clip_norm=1.0, noise_multiplier=0.0, expected_clients=4.0)
  mean, state = _aggregate(stage, updates, mask, jax.random.key(0))
  # Rows of norm 5 and 50 scale to norm 1; the row of norm 0.5 passes unchanged.
  expected = (np.array([0.6, 0.8]) + np.array([0.3, 0.4]) + np.array([0.6, 0.8])) / 4
  np.testing.assert_allclose(np.asarray(mean["a"]), expected, rtol=1e-6)
  assert float(state.clip_norm) == 1.0


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 12), scale=st.floats(1e-3, 1e3), clip=st.floats(0.01, 10.0),
       seed=st.integers(0, 2**16))
def test_noiseless_output_norm_never_exceeds_the_clipped_total(rows, scale, clip, seed):
  updates = {"w": jnp.asarray(np.random.default_rng(seed).normal(size=(rows, 7)) * scale,
                              jnp.float32)}
  stage = gaussian_mean(clip_norm=clip, noise_multiplier=0.0, expected_clients=float(rows))
  mean, _ = _aggregate(stage, updates, jnp.ones(rows), jax.random.key(seed))
  assert float(jnp.linalg.norm(mean["w"])) <= clip * (1 + 1e-5)


def test_adaptive_clip_norm_tracks_the_target_quantile():
  """Noise-free count: C moves geometrically until half the clients fit (the median norm)."""
  norms = np.linspace(1.0, 3.0, 101)
  updates = {"w": jnp.asarray(norms.reshape(-1, 1), jnp.float32)}
  stage = gaussian_mean(clip_norm=0.1, noise_multiplier=0.0, expected_clients=101.0,
                        adaptive=AdaptiveClipping(0.5, 0.2, count_stddev=1e-9))
  step = jax.jit(lambda state, key: _aggregate(stage, updates, jnp.ones(101), key, state)[1])
  state = stage.init(None)
  for i in range(300):
    state = step(state, jax.random.key(i))
  assert float(state.clip_norm) == pytest.approx(np.median(norms), rel=0.1)


def test_local_privatizer_clips_then_adds_noise_of_the_stated_size():
  update = {"w": jnp.full((4000,), 0.5)}  # norm ~31.6
  clipped = gaussian_privatizer(clip_norm=2.0, noise_multiplier=0.0)(update, jax.random.key(0))
  assert float(jnp.linalg.norm(clipped["w"])) == pytest.approx(2.0, rel=1e-5)
  small = {"w": jnp.full((4,), 0.1)}
  np.testing.assert_array_equal(
      np.asarray(gaussian_privatizer(clip_norm=2.0, noise_multiplier=0.0)(small, jax.random.key(2))["w"]),
      np.asarray(small["w"]))
  noised = gaussian_privatizer(clip_norm=2.0, noise_multiplier=1.5)(update, jax.random.key(1))
  noise = np.asarray(noised["w"] - clipped["w"])
  assert abs(noise.std() / 3.0 - 1) < 0.05  # 4,000 draws: relative error of the std ~1.1%


# ----------------------------------------------------------------------------- the plan
def test_poisson_schedule_varies_and_fixed_schedule_is_unchanged():
  poisson = cohort_schedule(200, 20, 400, seed=3, sampling="poisson")
  sizes = np.array([len(ids) for ids in poisson])
  assert sizes.min() < 20 < sizes.max() and abs(sizes.mean() - 20) < 1.0
  assert all(np.array_equal(a, b) for a, b in zip(
      poisson, cohort_schedule(200, 20, 400, seed=3, sampling="poisson")))
  fixed = cohort_schedule(200, 20, 3, seed=3)
  for round_index, ids in enumerate(fixed):  # the sampler the pipeline always used
    rng = np.random.default_rng(np.random.SeedSequence([3, 0xC0407, round_index]))
    np.testing.assert_array_equal(ids, np.sort(rng.choice(200, 20, replace=False)))
  assert participations(fixed, 200).sum() == 60


def test_plan_refuses_delta_not_below_one_over_n():
  schedule = cohort_schedule(50, 10, 5, seed=0)
  with pytest.raises(ValueError, match="privacy.delta"):
    plan_privacy(PrivacyConfig(mechanism="central", delta=0.05), FederatedConfig(), 50, schedule)


def test_local_plan_charges_the_busiest_clients_rounds():
  schedule = cohort_schedule(50, 10, 30, seed=0)
  plan = plan_privacy(PrivacyConfig(mechanism="local", target_epsilon=5.0, delta=1e-3),
                      FederatedConfig(clients_per_round=10), 50, schedule)
  assert plan.charged_rounds == participations(schedule, 50).max()
  assert epsilon(plan.accounting, plan.charged_rounds, 1e-3) == pytest.approx(5.0, rel=1e-2)


def test_automatic_count_noise_keeps_adaptive_clipping_possible_at_any_noise():
  schedule = cohort_schedule(1000, 100, 20, seed=0)
  for epsilon_target in (0.2, 8.0):
    plan = plan_privacy(PrivacyConfig(mechanism="central", clipping="adaptive",
                                      target_epsilon=epsilon_target),
                        FederatedConfig(weighting="uniform"), 1000, schedule)
    assert plan.adaptive.count_stddev == max(100 / 20, plan.noise_multiplier)
    assert update_noise_multiplier(plan.noise_multiplier, plan.adaptive.count_stddev) > 0
