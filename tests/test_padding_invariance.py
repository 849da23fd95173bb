"""Padding never changes a federated round: neither padding clients nor padding examples.

Shapes are fixed so the jitted round compiles once; these tests check that what fills the
fixed shapes contributes nothing: mask-0 clients from `cohort_slice`, mask-0 candidate lists
appended on the list axis S, and mask-0 candidates appended on the candidate axis K.

Rounds are compared within 1e-6 rather than bit for bit: a different cohort or example count
changes XLA's reduction shapes and so possibly its summation order.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pprsf_jax.aggregation import (FederatedAlgorithm, init_server_state,
                                   make_algorithm)
from pprsf_jax.ranking import init_device_states
from pprsf_jax.config import FederatedConfig
from pprsf_jax.ranking import (client_key, client_update, cohort_slice, gather_client_states,
                               make_round)

ATOL = 1e-6
SEED_KEY = jax.random.key(42)
# Every client-side algorithm and compressor, and the reducer that reads step counts.
ALGORITHMS = {
    "fedavg": FederatedConfig(),
    "fedavg_uniform": FederatedConfig(weighting="uniform"),
    "fedprox": FederatedConfig(local_algorithm="fedprox", fedprox_mu=0.5),
    "scaffold": FederatedConfig(local_algorithm="scaffold"),
    "fednova": FederatedConfig(aggregator="fednova"),
    "quantize": FederatedConfig(compression="quantize", quantization_bits=4),
    "top_k": FederatedConfig(compression="top_k", top_k_fraction=0.2),
}


def _random_like(tree, seed: int, scale: float):
  """A non-zero stand-in for state that later rounds would have built up."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda leaf: (scale * rng.normal(size=leaf.shape)).astype(leaf.dtype), tree)


class RoundSetup:
  """A jitted round for one algorithm, with non-zero server and per-client state."""

  def __init__(self, local, theta0, num_clients: int, config: FederatedConfig):
    self.algorithm: FederatedAlgorithm = make_algorithm(config, num_clients)
    self.round_fn = make_round(local, self.algorithm)
    server = init_server_state(self.algorithm, theta0)
    self.server = server._replace(broadcast=_random_like(server.broadcast, 1, 0.01))
    self.clients = _random_like(init_device_states(self.algorithm, theta0, (), num_clients), 2, 0.01)


@pytest.fixture(scope="module", params=sorted(ALGORITHMS))
def round_setup(request, local, theta0, examples) -> RoundSetup:
  return RoundSetup(local, theta0, examples.mask.shape[0], ALGORITHMS[request.param])


@pytest.fixture(scope="module")
def fedavg_setup(local, theta0, examples) -> RoundSetup:
  """For the slower candidate-axis checks: the candidate axis is only read by local training,
  which every algorithm shares."""
  return RoundSetup(local, theta0, examples.mask.shape[0], ALGORITHMS["fedavg"])


@pytest.fixture(scope="module")
def real_ids(examples) -> np.ndarray:
  """Six clients that all have something to train on (sorted, as the pipeline samples them)."""
  counts = np.asarray(examples.mask).reshape(examples.mask.shape[0], -1).sum(1)
  ids = np.flatnonzero(counts >= 5)[:6].astype(np.int32)
  assert len(ids) == 6
  return ids


def _run_round(setup: RoundSetup, theta0, item_table, cohort, client_ids, client_mask):
  del theta0  # the setup's server state starts from it
  server, _, metrics = setup.round_fn(setup.server, gather_client_states(setup.clients, client_ids),
                                      cohort, client_ids, client_mask, item_table, SEED_KEY, 0)
  return server.params, metrics


def _round_on(round_setup, theta0, item_table, examples, ids, size, pad=None):
  """One round on clients `ids` in a cohort of `size`; `pad` transforms the cohort's examples."""
  cohort, client_ids, client_mask = cohort_slice(examples, ids, size)
  if pad is not None:
    cohort = pad(cohort)
  return _run_round(round_setup, theta0, item_table, cohort, client_ids, client_mask)


def _max_difference(left, right) -> float:
  return max(float(jnp.max(jnp.abs(a - b))) for a, b in
             zip(jax.tree.leaves(left), jax.tree.leaves(right)))


@pytest.fixture(scope="module")
def baseline(round_setup, theta0, item_table, examples, real_ids):
  return _round_on(round_setup, theta0, item_table, examples, real_ids, len(real_ids))


@pytest.fixture(scope="module")
def single_list_baseline(fedavg_setup, theta0, item_table, single_list_examples, real_ids):
  return _round_on(fedavg_setup, theta0, item_table, single_list_examples, real_ids,
                   len(real_ids))


def test_round_moves_theta(baseline, theta0):
  """Otherwise every "Theta unchanged by padding" comparison below would be vacuous."""
  params, metrics = baseline
  assert _max_difference(params, theta0) > 1e-3
  assert int(metrics.clients) == 6 and int(metrics.rejected) == 0
  assert np.isfinite(float(metrics.loss))


def test_padding_clients_change_nothing(round_setup, theta0, item_table, examples, real_ids,
                                        baseline):
  params, metrics = _round_on(round_setup, theta0, item_table, examples, real_ids,
                              len(real_ids) + 5)
  base_params, base_metrics = baseline
  assert _max_difference(params, base_params) <= ATOL
  assert int(metrics.clients) == int(base_metrics.clients)
  assert int(metrics.rejected) == 0
  np.testing.assert_allclose(float(metrics.loss), float(base_metrics.loss), atol=ATOL)


def test_padding_lists_change_nothing(round_setup, theta0, item_table, examples, real_ids,
                                      baseline, pad_lists):
  params, metrics = _round_on(round_setup, theta0, item_table, examples, real_ids,
                              len(real_ids), pad=lambda cohort: pad_lists(cohort, 2))
  base_params, base_metrics = baseline
  assert _max_difference(params, base_params) <= ATOL
  np.testing.assert_allclose(float(metrics.loss), float(base_metrics.loss), atol=ATOL)


def test_padding_candidates_of_a_single_list_change_nothing(
    fedavg_setup, theta0, item_table, single_list_examples, real_ids, single_list_baseline,
    pad_candidates):
  params, metrics = _round_on(fedavg_setup, theta0, item_table, single_list_examples, real_ids,
                              len(real_ids), pad=lambda cohort: pad_candidates(cohort, 7))
  base_params, base_metrics = single_list_baseline
  assert _max_difference(params, base_params) <= ATOL
  np.testing.assert_allclose(float(metrics.loss), float(base_metrics.loss), atol=ATOL)


def test_padding_candidates_of_every_list_change_nothing(round_setup, theta0, item_table,
                                                         examples, real_ids, baseline,
                                                         pad_candidates):
  # Regression: shuffle priorities were once keyed by the flattened slot index, so padding K in
  # every list renumbered the real slots of lists 1..S-1 and reordered the minibatches.
  params, _ = _round_on(round_setup, theta0, item_table, examples, real_ids, len(real_ids),
                        pad=lambda cohort: pad_candidates(cohort, 7))
  assert _max_difference(params, baseline[0]) <= ATOL


def test_dropping_a_client_does_change_theta(round_setup, theta0, item_table, examples, real_ids,
                                             baseline):
  """Sanity for the tolerance: a real cohort change is far above it."""
  params, _ = _round_on(round_setup, theta0, item_table, examples, real_ids[1:], len(real_ids))
  assert _max_difference(params, baseline[0]) > 100 * ATOL


@pytest.mark.parametrize("padding", ["candidates", "lists"])
def test_client_update_ignores_trailing_padding(single_list_examples, examples, item_table,
                                                theta0, local, real_ids, pad_candidates,
                                                pad_lists, padding):
  # Trailing in the flattened [S * K] order: more slots after a single list, or whole lists.
  source = single_list_examples if padding == "candidates" else examples
  one = jax.tree.map(lambda a: np.asarray(a)[real_ids[0]], source)
  padded = pad_candidates(one, 9) if padding == "candidates" else pad_lists(one, 2)
  assert padded.items.size > one.items.size
  key = client_key(SEED_KEY, 0, int(real_ids[0]))
  algorithm = make_algorithm(FederatedConfig(), examples.mask.shape[0])
  server = init_server_state(algorithm, theta0)
  state = jax.tree.map(lambda leaf: leaf[0], init_device_states(algorithm, theta0, (), 1))
  update = jax.jit(lambda ex: client_update(theta0, ex, item_table, key=key, local=local,
                                            algorithm=algorithm, broadcast=server.broadcast,
                                            state=state))
  upload, _, metrics = update(one)
  padded_upload, _, padded_metrics = update(padded)
  # Padding slots get zero weight and sort after every real slot; only the per-list sums in
  # `client_features` (score mean/std over a longer axis) may round differently, ~1e-9.
  for a, b in zip(jax.tree.leaves(upload), jax.tree.leaves(padded_upload)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-7)
  assert int(metrics.steps) == int(padded_metrics.steps) > 0
  assert _max_difference(upload.delta, jax.tree.map(jnp.zeros_like, upload.delta)) > 0


@settings(deadline=None, max_examples=10, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(extra_clients=st.integers(0, 4), extra_candidates=st.integers(0, 6))
def test_padding_property(fedavg_setup, theta0, item_table, single_list_examples, real_ids,
                          single_list_baseline, pad_candidates, extra_clients, extra_candidates):
  params, metrics = _round_on(
      fedavg_setup, theta0, item_table, single_list_examples, real_ids,
      len(real_ids) + extra_clients, pad=lambda cohort: pad_candidates(cohort, extra_candidates))
  assert _max_difference(params, single_list_baseline[0]) <= ATOL
  assert int(metrics.clients) == len(real_ids)


def _poisoned_cohort(examples, real_ids, victim: int):
  """The cohort of `real_ids` in which client `victim` (a cohort row) has NaN attributes."""
  cohort, client_ids, client_mask = cohort_slice(examples, real_ids, len(real_ids))
  features = np.array(cohort.user_features, copy=True)
  features[victim] = np.nan
  return cohort._replace(user_features=features), client_ids, client_mask


def test_non_finite_upload_is_rejected(round_setup, theta0, item_table, examples, real_ids):
  victim = 2
  cohort, client_ids, client_mask = _poisoned_cohort(examples, real_ids, victim)
  params, metrics = _run_round(round_setup, theta0, item_table, cohort, client_ids, client_mask)
  without, without_metrics = _round_on(round_setup, theta0, item_table, examples,
                                       np.delete(real_ids, victim), len(real_ids))
  assert int(metrics.rejected) == 1
  assert int(metrics.clients) == len(real_ids)
  assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(params))
  assert _max_difference(params, without) <= ATOL
  # A rejected client's own loss is NaN; 0 * NaN in the weighted mean once made this NaN.
  assert np.isfinite(float(metrics.loss))
  np.testing.assert_allclose(float(metrics.loss), float(without_metrics.loss), atol=ATOL)


def test_rejected_client_keeps_its_state_and_accepted_clients_update_theirs(
    round_setup, item_table, examples, real_ids):
  victim = 2
  cohort, client_ids, client_mask = _poisoned_cohort(examples, real_ids, victim)
  before = gather_client_states(round_setup.clients, client_ids)
  _, after, metrics = round_setup.round_fn(round_setup.server, before, cohort, client_ids,
                                           client_mask, item_table, SEED_KEY, 0)
  assert int(metrics.rejected) == 1
  for old, new in zip(jax.tree.leaves(before), jax.tree.leaves(after)):
    np.testing.assert_array_equal(np.asarray(new[victim]), np.asarray(old[victim]))
    assert np.isfinite(np.asarray(new)).all()
    others = np.delete(np.arange(len(real_ids)), victim)
    # Stateful algorithms (SCAFFOLD's c_i, error feedback's residual) move for everyone else.
    assert np.abs(np.asarray(new)[others] - np.asarray(old)[others]).max() > 0
