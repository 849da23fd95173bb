"""DP inside real federated rounds and runs: noise is released every round, uploads are bounded,
and a configured target epsilon is what the run reports spending."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pprsf_jax import pipeline
from pprsf_jax.aggregation import init_server_state
from pprsf_jax.ranking import init_device_states
from pprsf_jax.cli import load_config
from pprsf_jax.config import FederatedConfig, PrivacyConfig, apply_overrides
from pprsf_jax.privacy import plan_privacy, private_algorithm
from pprsf_jax.ranking import cohort_slice, gather_client_states, make_round
from pprsf_jax.ranking.client import client_update
from pprsf_jax.ranking.sampling import cohort_schedule

SEED_KEY = jax.random.key(11)
CENTRAL = FederatedConfig(weighting="uniform", clients_per_round=8, server_learning_rate=1.0)


@pytest.fixture(scope="module")
def ids(examples) -> np.ndarray:
  counts = np.asarray(examples.mask).reshape(examples.mask.shape[0], -1).sum(1)
  return np.flatnonzero(counts >= 5)[:8].astype(np.int32)


def _algorithm(privacy: PrivacyConfig, fed: FederatedConfig, num_clients: int):
  schedule = cohort_schedule(num_clients, fed.clients_per_round, 3, seed=0)
  return private_algorithm(fed, num_clients, plan_privacy(privacy, fed, num_clients, schedule))


def _one_round(algorithm, local, theta0, examples, item_table, ids, *, poison=False):
  num_clients = examples.mask.shape[0]
  cohort, client_ids, client_mask = cohort_slice(examples, ids, len(ids))
  if poison:
    cohort = cohort._replace(user_features=np.full_like(cohort.user_features, np.nan))
  clients = gather_client_states(init_device_states(algorithm, theta0, (), num_clients), client_ids)
  return make_round(local, algorithm)(init_server_state(algorithm, theta0), clients, cohort,
                                      client_ids, client_mask, item_table, SEED_KEY, 0)


def _difference(left, right) -> float:
  return max(float(jnp.max(jnp.abs(a - b))) for a, b in
             zip(jax.tree.leaves(left), jax.tree.leaves(right)))


def test_central_dp_releases_noise_even_when_every_upload_is_refused(
    local, theta0, examples, item_table, ids):
  privacy = PrivacyConfig(mechanism="central", noise_multiplier=1.0, delta=1e-3)
  algorithm = _algorithm(privacy, CENTRAL, examples.mask.shape[0])
  server, _, metrics = _one_round(algorithm, local, theta0, examples, item_table, ids, poison=True)
  assert int(metrics.rejected) == len(ids)
  # Whether anything was accepted depends on client data: skipping the release would leak it.
  assert _difference(server.params, theta0) > 0
  assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(server.params))


def test_central_dp_round_is_deterministic_and_noise_free_without_noise(
    local, theta0, examples, item_table, ids):
  num_clients = examples.mask.shape[0]
  noisy = _algorithm(PrivacyConfig(mechanism="central", delta=1e-3), CENTRAL, num_clients)
  first, _, _ = _one_round(noisy, local, theta0, examples, item_table, ids)
  again, _, _ = _one_round(noisy, local, theta0, examples, item_table, ids)
  assert _difference(first.params, again.params) == 0.0
  # z = 0 with a huge clip norm is plain uniform FedAvg.
  plain = _algorithm(PrivacyConfig(mechanism="central", noise_multiplier=0.0, clip_norm=1e6,
                                   delta=1e-3), CENTRAL, num_clients)
  fedavg = private_algorithm(CENTRAL, num_clients, None)
  clipped_only, _, _ = _one_round(plain, local, theta0, examples, item_table, ids)
  reference, _, _ = _one_round(fedavg, local, theta0, examples, item_table, ids)
  assert _difference(clipped_only.params, reference.params) < 1e-6


def test_local_dp_upload_is_clipped_and_noised_on_the_client(local, theta0, examples, item_table):
  num_clients = examples.mask.shape[0]
  one = jax.tree.map(lambda leaf: leaf[3], examples)

  def upload_for(privacy):
    algorithm = _algorithm(privacy, FederatedConfig(clients_per_round=8), num_clients)
    state = jax.tree.map(lambda leaf: leaf[0], init_device_states(algorithm, theta0, (), 1))
    upload, _, _ = client_update(theta0, one, item_table, key=jax.random.key(5), local=local,
                                 algorithm=algorithm, broadcast=(), state=state)
    return jnp.sqrt(sum(jnp.sum(leaf**2) for leaf in jax.tree.leaves(upload.delta)))

  clip = 1e-3
  assert float(upload_for(PrivacyConfig(mechanism="local", clip_norm=clip, noise_multiplier=0.0,
                                        delta=1e-3))) <= clip * (1 + 1e-5)
  size = sum(leaf.size for leaf in jax.tree.leaves(theta0))
  noisy = float(upload_for(PrivacyConfig(mechanism="local", clip_norm=clip, noise_multiplier=2.0,
                                         delta=1e-3)))
  assert noisy == pytest.approx(2.0 * clip * np.sqrt(size), rel=0.1)  # noise dominates


def test_a_run_spends_its_target_epsilon_and_logs_the_clip_norm():
  config = apply_overrides(load_config("configs/synthetic_tiny.py"), [
      "privacy.mechanism=central", "federated.weighting=uniform", "federated.sampling=poisson",
      "privacy.clipping=adaptive", "privacy.target_epsilon=3", "privacy.accountant=pld",
      "privacy.delta=1e-3", "federated.rounds=4", "checkpoint_every=0"])
  results = pipeline.run(config, progress=False)
  privacy = results["privacy"]
  assert privacy["epsilon"] == pytest.approx(3.0, rel=1e-2) and privacy["epsilon"] <= 3.0
  assert privacy["epsilon_rdp"] >= privacy["epsilon_pld"]  # PLD is the tighter bound
  assert len(privacy["epsilon_rdp_per_round"]) == 4
  clip_norms = privacy["clip_norm_per_round"]
  assert clip_norms[0] == 1.0 and len(set(clip_norms)) > 1  # adaptive clipping moved it
  assert np.isfinite(results["test"]["federated (P_FL)"]["ndcg@10"])


# ----------------------------------------------------------------------------- the audit
def test_request_features_are_the_requested_items():
  from pprsf_jax.privacy.curious_server import request_features  # pylint: disable=import-outside-toplevel
  hot = request_features(np.asarray([[2, 0, -1], [1, 1, 3]]), 4)
  np.testing.assert_array_equal(hot, [[1, 0, 1, 0], [0, 1, 0, 1]])


def test_audit_finds_the_leak_and_local_dp_closes_it():
  """The curious server reads gender and interactions from plain uploads; noise removes that.
  (The first run also pads requests with D = K - T decoys, which leaves the uploads as they are
  and names every candidate in each request: request membership tells the server nothing.)"""
  base = apply_overrides(load_config("configs/synthetic_tiny.py"),
                         ["privacy.audit=true", "federated.rounds=3", "checkpoint_every=0"])
  plain_results = pipeline.run(apply_overrides(base, ["privacy.request_decoys=20"]),
                               progress=False)
  plain = plain_results["privacy"]["audit"]
  # Decoys: the request carries T + D (id, score) pairs; the candidates baseline is reported.
  assert plain_results["communication_bytes_per_client_per_round"]["up_top_t"] == (20 + 20) * 8
  assert abs(plain["request_membership_auc"] - 0.5) < 0.05
  # The declared fields come from what the server sent: no attribute, no private count in them.
  for report in (*plain["attribute_from_declared"].values(),
                 plain["private_count_from_declared"]):
    assert np.isnan(report["auc"]) or abs(report["auc"] - 0.5) < 0.1
  assert set(plain["attribute_from_candidates"]) == {"gender", "age_group", "occupation"}
  noised = pipeline.run(apply_overrides(base, [
      "privacy.mechanism=local", "privacy.noise_multiplier=4", "privacy.delta=1e-3"]),
                        progress=False)["privacy"]["audit"]
  for audit in (plain, noised):
    assert set(audit["attribute_from_uploads"]) == {"gender", "age_group", "occupation"}
    for report in (*audit["attribute_from_uploads"].values(),
                   *audit["attribute_from_requests"].values()):
      assert 0 <= report["auc"] <= 1 and 0 < report["majority_accuracy"] < 1
  assert plain["attribute_from_uploads"]["gender"]["auc"] > 0.75
  assert plain["interaction_from_uploads_auc"] > 0.7
  assert noised["attribute_from_uploads"]["gender"]["auc"] < 0.65
  assert abs(noised["interaction_from_uploads_auc"] - 0.5) < 0.1


def test_audit_treats_non_finite_uploads_as_refused():
  from pprsf_jax.privacy.curious_server import audit  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  n, k = 40, 6
  labels = np.zeros((n, 1, k), np.float32)
  labels[:, 0, :2] = 1
  examples = type("Examples", (), {"labels": labels, "mask": np.ones((n, 1, k), np.float32),
                                    "items": np.ones((n, 1, k), np.int32)})
  uploads = rng.normal(size=(n, 5)).astype(np.float32)
  lifts = np.where(labels.reshape(n, k) > 0, 1.0, 0.0) + 0.1 * rng.normal(size=(n, k))
  uploads[3] = np.nan
  lifts[3] = np.nan
  result = audit(uploads=uploads, lifts=lifts, declared=np.ones((n, 3), np.float32),
                 examples=examples, requests=rng.integers(0, 9, size=(n, 3)),
                 candidates=rng.integers(0, 9, (n, 6)), filtered=rng.random((n, 6)) < 0.2,
                 num_items=9, attributes={"gender": np.arange(n) % 2}, seed=0)
  assert result["unusable_uploads"] == 1
  assert result["interaction_from_uploads_auc"] > 0.9
