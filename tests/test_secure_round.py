"""Secure aggregation inside real rounds: the same Theta as plain FedAvg within the fixed-point
error, dropouts recovered, and only masked vectors on the server's side."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from pprsf_jax.aggregation import init_server_state, make_algorithm
from pprsf_jax.ranking import init_device_states
from pprsf_jax.config import FederatedConfig
from pprsf_jax.privacy.secure_aggregation import check_range
from pprsf_jax.privacy.secure_round import config_for_cohort, what_the_server_sees
from pprsf_jax.ranking import cohort_slice, gather_client_states, make_round
from pprsf_jax.ranking.faults import FaultModel

SEED_KEY = jax.random.key(3)


def test_cohort_config_is_the_finest_that_cannot_wrap():
  config = config_for_cohort(16.0, 100)
  check_range(config, 100)
  with pytest.raises(ValueError):
    check_range(config._replace(fractional_bits=config.fractional_bits + 1), 100)
  with pytest.raises(ValueError, match="secure_aggregation_bound"):
    config_for_cohort(1e6, 1000)


@pytest.mark.parametrize("weighting,dropout", [("examples", 0.0), ("uniform", 0.4)])
def test_secure_round_equals_the_plain_round(local, theta0, examples, item_table, weighting,
                                             dropout):
  num_clients = examples.mask.shape[0]
  fed = FederatedConfig(weighting=weighting, server_learning_rate=1.0)
  algorithm = make_algorithm(fed, num_clients)
  ids = np.arange(0, 24, 2, dtype=np.int32)
  cohort, client_ids, client_mask = cohort_slice(examples, ids, 16)  # 4 padding slots
  clients = gather_client_states(init_device_states(algorithm, theta0, (), num_clients), client_ids)
  secure = config_for_cohort(16.0, 16)
  faults = FaultModel(dropout_rate=dropout)
  outputs = [make_round(local, algorithm, faults=faults, secure=setting)(
      init_server_state(algorithm, theta0), clients, cohort, client_ids, client_mask, item_table,
      SEED_KEY, 0) for setting in (None, secure)]
  (plain, _, plain_metrics), (masked, _, masked_metrics) = outputs
  assert int(plain_metrics.dropped) == int(masked_metrics.dropped)
  if dropout:
    assert int(masked_metrics.dropped) > 0
  difference = ravel_pytree(masked.params)[0] - ravel_pytree(plain.params)[0]
  # Each weighted entry rounds by <= 2^-f / 2 per client; dividing by the total weight (>= 1
  # client's normalised weight) keeps the mean's error within a small multiple of that.
  assert float(jnp.max(jnp.abs(difference))) < 1e-4
  assert float(jnp.max(jnp.abs(ravel_pytree(plain.params)[0]
                               - ravel_pytree(theta0)[0]))) > 1e-3  # the round did move Theta
  assert int(masked_metrics.secure_clipped) == 0


def test_the_server_sees_only_random_looking_vectors():
  updates = {"w": jnp.tile(jnp.linspace(-1, 1, 64), (6, 1))}
  config = config_for_cohort(16.0, 6)
  seen = what_the_server_sees(updates, jnp.ones(6), client_ids=jnp.arange(6, dtype=jnp.int32),
                              round_key=jax.random.key(0), config=config)
  plain = np.concatenate([np.asarray(updates["w"]), np.ones((6, 1))], axis=1)
  assert np.mean(np.isclose(np.asarray(seen), plain, atol=1e-3)) < 0.01
