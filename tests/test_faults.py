"""Faults: dropouts, stragglers, refused uploads (non-finite, over the norm bound, malformed)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pprsf_jax.aggregation import (check_upload, init_server_state,
                                   make_algorithm, stack_uploads)
from pprsf_jax.ranking import init_device_states
from pprsf_jax.config import FederatedConfig
from pprsf_jax.ranking import (client_key, cohort_slice, gather_client_states, local_train,
                               make_round)
from pprsf_jax.ranking.faults import FaultModel, draw_faults

SEED_KEY = jax.random.key(7)
ATOL = 1e-6


@pytest.fixture(scope="module")
def ids(examples) -> np.ndarray:
  counts = np.asarray(examples.mask).reshape(examples.mask.shape[0], -1).sum(1)
  return np.flatnonzero(counts >= 5)[:12].astype(np.int32)


_COMPILED = {}


def _round(local, theta0, examples, item_table, ids, *, config=FederatedConfig(),
           faults=FaultModel(), max_update_norm=0.0, poison=(), round_index=0, server=None):
  algorithm = make_algorithm(config, examples.mask.shape[0])
  setting = (config, faults, max_update_norm)
  if setting not in _COMPILED:  # one jitted round per setting: compiling dominates these tests
    _COMPILED[setting] = make_round(local, algorithm, faults=faults,
                                    max_update_norm=max_update_norm)
  round_fn = _COMPILED[setting]
  server = init_server_state(algorithm, theta0) if server is None else server
  cohort, client_ids, client_mask = cohort_slice(examples, ids, len(ids))
  if len(poison):
    features = np.array(cohort.user_features, copy=True)
    features[list(poison)] = np.nan
    cohort = cohort._replace(user_features=features)
  clients = gather_client_states(init_device_states(algorithm, theta0, (), examples.mask.shape[0]),
                                 client_ids)
  return round_fn(server, clients, cohort, client_ids, client_mask, item_table, SEED_KEY,
                  round_index)


def _difference(left, right) -> float:
  return max(float(jnp.max(jnp.abs(jnp.asarray(a) - jnp.asarray(b))))
             for a, b in zip(jax.tree.leaves(left), jax.tree.leaves(right)))


# ------------------------------------------------------------------------------ refused uploads
@pytest.mark.parametrize("server_optimizer", ["sgd", "momentum", "adam"])
def test_a_round_where_every_upload_is_bad_leaves_the_server_unchanged(
    local, theta0, examples, item_table, ids, server_optimizer):
  config = FederatedConfig(server_optimizer=server_optimizer, server_learning_rate=0.1)
  # One good round first, so the optimizer carries momentum that could still move Theta.
  warm, _, _ = _round(local, theta0, examples, item_table, ids, config=config)
  after, _, metrics = _round(local, theta0, examples, item_table, ids, config=config,
                             poison=range(len(ids)), round_index=1, server=warm)
  assert int(metrics.rejected) == len(ids)
  assert _difference(after, warm) == 0.0
  # ... and the run continues: the next good round moves Theta again.
  moved, _, metrics = _round(local, theta0, examples, item_table, ids, config=config,
                             round_index=2, server=after)
  assert int(metrics.rejected) == 0 and _difference(moved.params, after.params) > 1e-4


def test_uploads_over_the_norm_bound_are_refused(local, theta0, examples, item_table, ids):
  free, _, free_metrics = _round(local, theta0, examples, item_table, ids)
  assert int(free_metrics.rejected) == 0
  bounded, _, metrics = _round(local, theta0, examples, item_table, ids, max_update_norm=1e-9)
  assert int(metrics.rejected) == len(ids)
  assert _difference(bounded.params, theta0) == 0.0
  loose, _, metrics = _round(local, theta0, examples, item_table, ids, max_update_norm=1e9)
  assert int(metrics.rejected) == 0 and _difference(loose.params, free.params) == 0.0


def test_check_upload_names_what_is_wrong():
  params = {"w": np.zeros((3, 2), np.float32), "b": np.zeros(2, np.float32)}
  good = {"w": np.full((3, 2), 0.1, np.float32), "b": np.zeros(2, np.float32)}
  assert check_upload(good, params) is None
  cases = {
      "structure": {"w": good["w"]},
      "shape (2, 3)": {"w": np.zeros((2, 3), np.float32), "b": good["b"]},
      "dtype float64": {"w": good["w"].astype(np.float64), "b": good["b"]},
      "non-finite": {"w": good["w"], "b": np.asarray([0.0, np.inf], np.float32)},
      "not an array": {"w": good["w"], "b": "0.0 0.0"},
  }
  for expected, upload in cases.items():
    reason = check_upload(upload, params)
    assert reason is not None and expected in reason, (expected, reason)
  assert "exceeds the bound" in check_upload(good, params, max_norm=0.1)
  assert check_upload(good, params, max_norm=1.0) is None


def test_stack_uploads_masks_refused_uploads_out_of_the_mean():
  from pprsf_jax.aggregation import weighted_mean  # pylint: disable=import-outside-toplevel
  params = {"w": np.zeros(4, np.float32)}
  uploads = [{"w": np.full(4, 1.0, np.float32)}, {"w": np.full(4, np.nan, np.float32)},
             {"w": np.zeros(5, np.float32)}, {"w": np.full(4, 3.0, np.float32)}, "garbage"]
  stacked = stack_uploads(uploads, params)
  np.testing.assert_array_equal(stacked.mask, [1, 0, 0, 1, 0])
  assert [reason is None for reason in stacked.reasons] == [True, False, False, True, False]
  mean, _ = weighted_mean().aggregate(
      jax.tree.map(jnp.asarray, stacked.updates), (), weights=jnp.ones(5),
      mask=jnp.asarray(stacked.mask), steps=jnp.ones(5, jnp.int32), key=jax.random.key(0),
      params=params)
  np.testing.assert_allclose(np.asarray(mean["w"]), 2.0)


# ------------------------------------------------------------------------------ dropouts
def test_dropped_clients_are_left_out_and_counted(local, theta0, examples, item_table, ids):
  faults = FaultModel(dropout_rate=0.4)
  dropped = np.asarray([bool(draw_faults(client_key(SEED_KEY, 0, int(c)), faults).dropped)
                        for c in ids])
  assert 0 < dropped.sum() < len(ids)  # the check below is not vacuous
  with_dropouts, _, metrics = _round(local, theta0, examples, item_table, ids, faults=faults)
  assert int(metrics.dropped) == dropped.sum() and int(metrics.rejected) == 0
  survivors, _, _ = _round(local, theta0, examples, item_table, ids[~dropped])
  assert _difference(with_dropouts.params, survivors.params) <= ATOL


def test_a_dropped_client_keeps_its_state(local, theta0, examples, item_table, ids):
  config = FederatedConfig(local_algorithm="scaffold")
  faults = FaultModel(dropout_rate=0.4)
  dropped = np.asarray([bool(draw_faults(client_key(SEED_KEY, 0, int(c)), faults).dropped)
                        for c in ids])
  _, rows, _ = _round(local, theta0, examples, item_table, ids, config=config, faults=faults)
  moved = np.abs(np.asarray(jax.tree.leaves(rows)[0]).reshape(len(ids), -1)).max(axis=1) > 0
  np.testing.assert_array_equal(moved, ~dropped)


# ------------------------------------------------------------------------------ stragglers
def test_a_straggler_completes_its_share_of_steps(local, theta0, examples, item_table, ids):
  one = jax.tree.map(lambda a: jnp.asarray(a)[int(ids[0])], examples)
  key = jax.random.key(1)
  _, _, full = local_train(theta0, (), one, item_table, key=key, local=local)
  planned = int(full.steps)
  assert planned >= 4
  for work, want in ((0.5, planned // 2), (1e-6, 1), (1.0, planned)):
    _, _, metrics = local_train(theta0, (), one, item_table, key=key, local=local, work=work)
    assert int(metrics.steps) == want


def test_stragglers_report_fewer_steps_and_fednova_uses_them(local, theta0, examples,
                                                            item_table, ids):
  faults = FaultModel(straggler_rate=0.5, straggler_min_work=0.2)
  works = np.asarray([float(draw_faults(client_key(SEED_KEY, 0, int(c)), faults).work)
                      for c in ids])
  assert 0 < np.sum(works < 1) < len(ids)
  _, _, metrics = _round(local, theta0, examples, item_table, ids, faults=faults)
  assert int(metrics.stragglers) == np.sum(works < 1) and int(metrics.rejected) == 0
  nova, _, _ = _round(local, theta0, examples, item_table, ids, faults=faults,
                      config=FederatedConfig(aggregator="fednova"))
  avg, _, _ = _round(local, theta0, examples, item_table, ids, faults=faults)
  assert _difference(nova.params, avg.params) > 1e-5  # unequal steps: FedNova re-weights


def test_fault_model_rejects_impossible_rates():
  for kwargs in ({"dropout_rate": 1.0}, {"straggler_rate": -0.1}, {"straggler_min_work": 0.0}):
    with pytest.raises(ValueError, match="FaultModel"):
      FaultModel(**kwargs)
