"""Aggregation operators: a conformance table over every registered rule, properties, references."""

from __future__ import annotations

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings

from pprsf_jax.aggregation import (REDUCERS, as_aggregator, bulyan, centered_clipping,
                                   coordinate_median, fednova, fednova_reducer, geometric_median,
                                   krum, make_aggregator, mean_reducer, norm_bounding,
                                   reduce_in_chunks, trimmed_mean, weighted_mean)
from pprsf_jax.config import FederatedConfig

NAMES = sorted(REDUCERS)
# Rules whose output stays inside the honest clients' coordinate range under f outliers.
RANGE_BOUNDED = {
    "median": coordinate_median(),
    "trimmed_mean": trimmed_mean(0.2),
    "krum": krum(2),
    "multi_krum": krum(2, 3),
    "bulyan": bulyan(2),
}


def _updates(rng, clients: int, scale: float = 0.1):
  return {"w": jnp.asarray(rng.normal(scale=scale, size=(clients, 3, 2)).astype(np.float32)),
          "b": jnp.asarray(rng.normal(scale=scale, size=(clients, 2)).astype(np.float32))}


def _params(updates):
  return jax.tree.map(lambda leaf: jnp.zeros(leaf.shape[1:], leaf.dtype), updates)


def _aggregate(aggregator, updates, weights=None, mask=None, state=None, steps=None):
  clients = jax.tree.leaves(updates)[0].shape[0]
  weights = jnp.ones(clients) if weights is None else jnp.asarray(weights, jnp.float32)
  mask = jnp.ones(clients) if mask is None else jnp.asarray(mask, jnp.float32)
  steps = jnp.full(clients, 5, jnp.int32) if steps is None else jnp.asarray(steps, jnp.int32)
  params = _params(updates)
  state = aggregator.init(params) if state is None else state
  return aggregator.aggregate(updates, state, weights=weights, mask=mask, steps=steps,
                              key=jax.random.key(0), params=params)


def _rule(name: str):
  # Server SGD at lr 1: the rule's reduced update is applied as is.
  return make_aggregator(FederatedConfig(aggregator=name, server_learning_rate=1.0))


def _flat(tree) -> np.ndarray:
  return np.concatenate([np.asarray(leaf, np.float64).reshape(-1)
                         for leaf in jax.tree.leaves(tree)])


# ------------------------------------------------------------------------------- conformance
@pytest.mark.parametrize("name", NAMES)
def test_jit_equals_eager_without_retracing_and_keeps_dtype_and_state(name):
  aggregator = _rule(name)
  updates = _updates(np.random.default_rng(0), 9)
  traces = []

  def run(updates, state):
    traces.append(1)
    return aggregator.aggregate(updates, state, weights=jnp.ones(9), mask=jnp.ones(9),
                                steps=jnp.full(9, 5, jnp.int32),
                                key=jax.random.key(0), params=_params(updates))

  state0 = aggregator.init(_params(updates))
  eager, eager_state = run(updates, state0)
  jitted = jax.jit(run)
  first, state1 = jitted(updates, state0)
  second, state2 = jitted(_updates(np.random.default_rng(1), 9), state1)
  assert len(traces) == 2, "the second jitted call retraced"
  np.testing.assert_allclose(_flat(first), _flat(eager), rtol=1e-5, atol=1e-6)
  for leaf, reference in zip(jax.tree.leaves(second), jax.tree.leaves(_params(updates))):
    assert leaf.dtype == reference.dtype and leaf.shape == reference.shape
  # State keeps its structure, shapes and dtypes across rounds (rounds can run under lax.scan).
  for before, after in zip(jax.tree.leaves(state0), jax.tree.leaves(state2)):
    assert before.shape == after.shape and before.dtype == after.dtype
  assert jax.tree.structure(state0) == jax.tree.structure(eager_state) == jax.tree.structure(state2)


@pytest.mark.parametrize("name", NAMES)
def test_identical_clients_give_that_update(name):
  one = _updates(np.random.default_rng(2), 1, scale=0.05)  # norm well under every bound
  stacked = jax.tree.map(lambda leaf: jnp.repeat(leaf, 7, axis=0), one)
  result, _ = _aggregate(_rule(name), stacked)
  np.testing.assert_allclose(_flat(result), _flat(jax.tree.map(lambda l: l[0], one)),
                             rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_padding_clients_never_influence_the_result(name):
  rng = np.random.default_rng(3)
  real = _updates(rng, 8)
  garbage = {"w": jnp.full((4, 3, 2), 1e30, jnp.float32).at[1].set(jnp.nan),
             "b": jnp.full((4, 2), -1e30, jnp.float32)}
  padded = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), real, garbage)
  mask = np.r_[np.ones(8), np.zeros(4)]
  weights = np.r_[rng.uniform(1, 3, 8), rng.uniform(1, 3, 4)]
  steps = rng.integers(1, 20, 12)
  want, _ = _aggregate(_rule(name), real, weights=weights[:8], steps=steps[:8])
  got, _ = _aggregate(_rule(name), padded, weights=weights, mask=mask, steps=steps)
  np.testing.assert_allclose(_flat(got), _flat(want), rtol=1e-5, atol=1e-6)


@settings(deadline=None, max_examples=15)
@given(seed=st.integers(0, 2**31 - 1), clients=st.integers(7, 12), name=st.sampled_from(NAMES))
def test_permutation_invariance(seed, clients, name):
  rng = np.random.default_rng(seed)
  updates = _updates(rng, clients)
  weights = rng.uniform(1, 3, clients)
  steps = rng.integers(1, 20, clients)
  order = rng.permutation(clients)
  want, _ = _aggregate(_rule(name), updates, weights=weights, steps=steps)
  got, _ = _aggregate(_rule(name), jax.tree.map(lambda leaf: leaf[order], updates),
                      weights=weights[order], steps=steps[order])
  np.testing.assert_allclose(_flat(got), _flat(want), rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------------------- means
def _rows(updates, clients: int) -> np.ndarray:
  return np.stack([_flat(jax.tree.map(lambda l: l[i], updates)) for i in range(clients)])


@pytest.mark.parametrize("weighted", [True, False])
def test_fedavg_weighted_and_unweighted_match_numpy(weighted):
  rng = np.random.default_rng(11)
  updates = _updates(rng, 7, scale=1.0)
  rows = _rows(updates, 7)
  mask = np.array([1, 1, 0, 1, 1, 1, 0], np.float32)
  weights = rng.uniform(1, 50, 7) if weighted else np.ones(7)
  present = mask > 0
  want = (weights[present, None] * rows[present]).sum(0) / weights[present].sum()
  if not weighted:
    want_plain = rows[present].mean(0)  # unweighted FedAvg: every present client counts once
    np.testing.assert_allclose(want, want_plain, rtol=1e-12)
  got, _ = _aggregate(_rule("fedavg"), updates, weights=weights, mask=mask)
  np.testing.assert_allclose(_flat(got), want, rtol=1e-5, atol=1e-6)


def test_fednova_matches_numpy_and_is_the_mean_for_equal_steps():
  rng = np.random.default_rng(12)
  updates = _updates(rng, 6, scale=1.0)
  rows = _rows(updates, 6)
  weights, steps = rng.uniform(1, 5, 6), np.array([1, 3, 8, 2, 5, 13])
  p = weights / weights.sum()
  want = (p * steps).sum() * (p[:, None] * rows / steps[:, None]).sum(0)
  got, _ = _aggregate(fednova(), updates, weights=weights, steps=steps)
  np.testing.assert_allclose(_flat(got), want, rtol=1e-5, atol=1e-6)
  equal_steps, _ = _aggregate(fednova(), updates, weights=weights, steps=np.full(6, 4))
  mean, _ = _aggregate(weighted_mean(), updates, weights=weights)
  np.testing.assert_allclose(_flat(equal_steps), _flat(mean), rtol=1e-5, atol=1e-6)
  # Unequal steps: a client that ran many steps no longer dominates.
  assert np.abs(_flat(got) - _flat(mean)).max() > 1e-3


@settings(deadline=None, max_examples=20)
@given(seed=st.integers(0, 2**31 - 1), chunks=st.sampled_from([1, 2, 3, 4, 6, 12]),
       reducer=st.sampled_from(["mean", "fednova"]))
def test_chunked_reduction_of_sum_like_operators_equals_the_whole_cohort(seed, chunks, reducer):
  rng = np.random.default_rng(seed)
  sum_like = mean_reducer() if reducer == "mean" else fednova_reducer()
  updates = _updates(rng, 12, scale=1.0)
  weights = jnp.asarray(rng.uniform(0, 5, 12), jnp.float32)
  mask = jnp.asarray(rng.random(12) < 0.8, jnp.float32)
  steps = jnp.asarray(rng.integers(0, 10, 12), jnp.int32)
  whole, _ = _aggregate(as_aggregator(sum_like), updates, weights=weights, mask=mask, steps=steps)
  chunked = jax.jit(lambda u: reduce_in_chunks(sum_like, u, weights=weights, mask=mask,
                                               steps=steps, chunk=12 // chunks))(updates)
  np.testing.assert_allclose(_flat(chunked), _flat(whole), rtol=1e-5, atol=1e-6)


def test_chunked_reduction_rejects_a_ragged_split():
  updates = _updates(np.random.default_rng(0), 10)
  with pytest.raises(ValueError, match="do not split into chunks of 4"):
    reduce_in_chunks(mean_reducer(), updates, weights=jnp.ones(10), mask=jnp.ones(10),
                     steps=jnp.ones(10, jnp.int32), chunk=4)


# ------------------------------------------------------------------------------- robustness
@settings(deadline=None, max_examples=10)
@given(seed=st.integers(0, 2**31 - 1), outlier=st.sampled_from([1e30, -1e30, np.nan]),
       name=st.sampled_from(sorted(RANGE_BOUNDED)))
def test_robust_rules_stay_in_the_honest_range_under_f_outliers(seed, outlier, name):
  rng = np.random.default_rng(seed)
  honest = _updates(rng, 9, scale=1.0)
  attackers = jax.tree.map(lambda leaf: jnp.full((2,) + leaf.shape[1:], outlier, leaf.dtype),
                           honest)
  updates = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), honest, attackers)
  result, _ = _aggregate(RANGE_BOUNDED[name], updates)
  low = _flat(jax.tree.map(lambda leaf: leaf.min(0), honest))
  high = _flat(jax.tree.map(lambda leaf: leaf.max(0), honest))
  value = _flat(result)
  assert np.all(np.isfinite(value))
  assert np.all(value >= low - 1e-6) and np.all(value <= high + 1e-6)


@pytest.mark.parametrize("outlier", [1e30, -1e30, np.nan])
def test_geometric_median_and_centered_clipping_resist_outliers(outlier):
  rng = np.random.default_rng(4)
  honest = _updates(rng, 9, scale=1.0)
  attackers = jax.tree.map(lambda leaf: jnp.full((2,) + leaf.shape[1:], outlier, leaf.dtype),
                           honest)
  updates = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), honest, attackers)
  center = _flat(jax.tree.map(lambda leaf: leaf.mean(0), honest))
  spread = np.max(np.linalg.norm(
      np.stack([_flat(jax.tree.map(lambda l: l[i], honest)) for i in range(9)]) - center, axis=1))
  for aggregator in (geometric_median(), centered_clipping(tau=1.0, iterations=5)):
    value = _flat(_aggregate(aggregator, updates)[0])
    assert np.all(np.isfinite(value))
    # Far from the 1e30 attack: within the honest clients' own spread of their mean.
    assert np.linalg.norm(value - center) <= spread


# ------------------------------------------------------------------------------- references
def test_median_and_trimmed_mean_match_numpy():
  rng = np.random.default_rng(5)
  updates = _updates(rng, 10, scale=1.0)
  mask = np.r_[np.ones(9), 0.0]
  rows = np.stack([_flat(jax.tree.map(lambda l: l[i], updates)) for i in range(9)])
  np.testing.assert_allclose(_flat(_aggregate(coordinate_median(), updates, mask=mask)[0]),
                             np.median(rows, axis=0), rtol=1e-6, atol=1e-6)
  cut = int(np.floor(0.25 * 9))
  reference = np.sort(rows, axis=0)[cut:9 - cut].mean(0)
  np.testing.assert_allclose(_flat(_aggregate(trimmed_mean(0.25), updates, mask=mask)[0]),
                             reference, rtol=1e-5, atol=1e-6)


def _numpy_krum(rows: np.ndarray, f: int, m: int) -> np.ndarray:
  n = rows.shape[0]
  distances = ((rows[:, None] - rows[None]) ** 2).sum(-1)
  scores = [np.sort(np.delete(distances[i], i))[: n - f - 2].sum() for i in range(n)]
  return rows[np.argsort(scores, kind="stable")[:m]].mean(0)


@pytest.mark.parametrize("f,m", [(1, 1), (2, 1), (2, 3)])
def test_krum_matches_numpy(f, m):
  rng = np.random.default_rng(6)
  updates = _updates(rng, 10, scale=1.0)
  rows = np.stack([_flat(jax.tree.map(lambda l: l[i], updates)) for i in range(10)])
  np.testing.assert_allclose(_flat(_aggregate(krum(f, m), updates)[0]), _numpy_krum(rows, f, m),
                             rtol=1e-5, atol=1e-6)


def _numpy_bulyan(rows: np.ndarray, f: int) -> np.ndarray:
  n = rows.shape[0]
  remaining, selected = list(range(n)), []
  while len(selected) < n - 2 * f:
    k = max(len(remaining) - f - 2, 1)
    scores = [sum(sorted(((rows[i] - rows[j]) ** 2).sum() for j in remaining if j != i)[:k])
              for i in remaining]
    # Equal scores (mutual nearest neighbours, common once k = 1) go to the smaller norm.
    tied = [i for i, score in zip(remaining, scores) if score <= min(scores) * (1 + 1e-6)]
    best = min(tied, key=lambda i: (rows[i] ** 2).sum())
    selected.append(best)
    remaining.remove(best)
  chosen = rows[selected]
  median = np.median(chosen, axis=0)
  order = np.argsort(np.abs(chosen - median), axis=0, kind="stable")
  return np.take_along_axis(chosen, order, axis=0)[: n - 4 * f].mean(0)


@pytest.mark.parametrize("f,clients", [(0, 5), (1, 9), (2, 13)])
def test_bulyan_matches_numpy(f, clients):
  rng = np.random.default_rng(9)
  updates = _updates(rng, clients, scale=1.0)
  rows = _rows(updates, clients)
  np.testing.assert_allclose(_flat(_aggregate(bulyan(f), updates)[0]), _numpy_bulyan(rows, f),
                             rtol=1e-5, atol=1e-6)


def test_norm_bounding_clips_only_large_updates():
  rng = np.random.default_rng(7)
  updates = _updates(rng, 6, scale=1.0)
  bounded, _ = _aggregate(norm_bounding(1.0), updates)
  for i in range(6):
    before = _flat(jax.tree.map(lambda l: l[i], updates))
    after = _flat(jax.tree.map(lambda l: l[i], bounded))
    assert np.linalg.norm(after) <= 1.0 + 1e-5
    if np.linalg.norm(before) <= 1.0:
      np.testing.assert_allclose(after, before, rtol=1e-6)
    else:
      np.testing.assert_allclose(after / np.linalg.norm(after), before / np.linalg.norm(before),
                                 rtol=1e-5)


def test_centered_clipping_carries_its_center_across_rounds():
  aggregator = centered_clipping(tau=0.01, iterations=1)
  updates = _updates(np.random.default_rng(8), 5, scale=1.0)
  first, state = _aggregate(aggregator, updates)
  second, _ = _aggregate(aggregator, updates, state=state)
  # Each round moves at most tau from where the last one ended.
  assert np.linalg.norm(_flat(first)) <= 0.01 + 1e-6
  assert np.linalg.norm(_flat(second) - _flat(first)) <= 0.01 + 1e-6
  assert np.linalg.norm(_flat(second)) > np.linalg.norm(_flat(first))


def test_invalid_hyper_parameters_are_rejected():
  for build in (lambda: trimmed_mean(0.5), lambda: krum(-1), lambda: krum(1, 0),
                lambda: bulyan(-1), lambda: geometric_median(0), lambda: norm_bounding(0.0),
                lambda: centered_clipping(0.0)):
    with pytest.raises(ValueError):
      build()
