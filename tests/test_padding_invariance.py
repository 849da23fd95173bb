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

from pprsf_jax.aggregation import make_aggregator
from pprsf_jax.config import FederatedConfig
from pprsf_jax.ranking import client_key, client_update, cohort_slice, make_round

ATOL = 1e-6
SEED_KEY = jax.random.key(42)


@pytest.fixture(scope="module")
def round_setup(local):
  aggregator = make_aggregator(FederatedConfig())
  return make_round(local, aggregator, weighting="examples"), aggregator


@pytest.fixture(scope="module")
def real_ids(examples) -> np.ndarray:
  """Six clients that all have something to train on (sorted, as the pipeline samples them)."""
  counts = np.asarray(examples.mask).reshape(examples.mask.shape[0], -1).sum(1)
  ids = np.flatnonzero(counts >= 5)[:6].astype(np.int32)
  assert len(ids) == 6
  return ids


def _run_round(round_setup, theta0, item_table, cohort, client_ids, client_mask):
  round_fn, aggregator = round_setup
  params, _, metrics = round_fn(theta0, aggregator.init(theta0), cohort, client_ids, client_mask,
                                item_table, SEED_KEY, 0)
  return params, metrics


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
def single_list_baseline(round_setup, theta0, item_table, single_list_examples, real_ids):
  return _round_on(round_setup, theta0, item_table, single_list_examples, real_ids,
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
    round_setup, theta0, item_table, single_list_examples, real_ids, single_list_baseline,
    pad_candidates):
  params, metrics = _round_on(round_setup, theta0, item_table, single_list_examples, real_ids,
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
  update = jax.jit(client_update, static_argnames="local")
  upload, metrics = update(theta0, one, item_table, key=key, local=local)
  padded_upload, padded_metrics = update(theta0, padded, item_table, key=key, local=local)
  # Padding slots get zero weight and sort after every real slot; only the per-list sums in
  # `client_features` (score mean/std over a longer axis) may round differently, ~1e-9.
  for a, b in zip(jax.tree.leaves(upload), jax.tree.leaves(padded_upload)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-7)
  assert int(metrics.steps) == int(padded_metrics.steps) > 0
  assert _max_difference(upload.delta, jax.tree.map(jnp.zeros_like, upload.delta)) > 0


@settings(deadline=None, max_examples=10, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(extra_clients=st.integers(0, 4), extra_candidates=st.integers(0, 6))
def test_padding_property(round_setup, theta0, item_table, single_list_examples, real_ids,
                          single_list_baseline, pad_candidates, extra_clients, extra_candidates):
  params, metrics = _round_on(
      round_setup, theta0, item_table, single_list_examples, real_ids,
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
