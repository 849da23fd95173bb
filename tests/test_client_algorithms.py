"""Client-side algorithms (FedProx, SCAFFOLD) and upload compressors: conformance, properties,
NumPy references, and SCAFFOLD's control-variate invariant across real federated rounds."""

from __future__ import annotations

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings

from pprsf_jax.aggregation import (COMPRESSORS, LOCAL_ALGORITHMS, EmptyState, fedprox,
                                   init_server_state, make_algorithm,
                                   scaffold, stochastic_quantization, top_k_sparsification)
from pprsf_jax.ranking import init_device_states
from pprsf_jax.config import FederatedConfig
from pprsf_jax.ranking import (cohort_slice, gather_client_states, local_train, make_round,
                               scatter_client_states)

CONFIG = FederatedConfig(fedprox_mu=0.1, quantization_bits=3, top_k_fraction=0.25)
NUM_CLIENTS = 10


def _tree(rng, scale: float = 0.1):
  return {"w": jnp.asarray(rng.normal(scale=scale, size=(4, 3)), jnp.float32),
          "b": jnp.asarray(rng.normal(scale=scale, size=(3,)), jnp.float32)}


def _flat(tree) -> np.ndarray:
  return np.concatenate([np.zeros(0)] + [np.asarray(leaf, np.float64).reshape(-1)
                                         for leaf in jax.tree.leaves(tree)])


def _assert_same_layout(left, right):
  assert jax.tree.structure(left) == jax.tree.structure(right)
  for a, b in zip(jax.tree.leaves(left), jax.tree.leaves(right)):
    assert a.shape == b.shape and a.dtype == b.dtype


# ------------------------------------------------------------------------------- conformance
@pytest.mark.parametrize("name", sorted(COMPRESSORS))
def test_compressor_jit_equals_eager_without_retracing_and_keeps_layout(name):
  compressor = COMPRESSORS[name](CONFIG)
  rng = np.random.default_rng(0)
  params = _tree(rng)
  traces = []

  def run(delta, state, key):
    traces.append(1)
    return compressor.compress(delta, state, key)

  state0 = compressor.init(params)
  eager = run(_tree(np.random.default_rng(1)), state0, jax.random.key(3))
  jitted = jax.jit(run)
  first = jitted(_tree(np.random.default_rng(1)), state0, jax.random.key(3))
  second = jitted(_tree(rng), first[1], jax.random.key(4))
  assert len(traces) == 2, "the second jitted call retraced"  # one eager call, one trace
  np.testing.assert_allclose(_flat(first[0]), _flat(eager[0]), rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(_flat(first[1]), _flat(eager[1]), rtol=1e-6, atol=1e-7)
  _assert_same_layout(second[0], params)
  _assert_same_layout(state0, second[1])  # state layout stable: rounds can run under lax.scan


@pytest.mark.parametrize("name", sorted(LOCAL_ALGORITHMS))
def test_local_algorithm_jit_equals_eager_and_keeps_layout(name):
  algorithm = LOCAL_ALGORITHMS[name](CONFIG, NUM_CLIENTS)
  rng = np.random.default_rng(2)
  params, anchor, grads, delta = _tree(rng), _tree(rng), _tree(rng), _tree(rng)
  client0, broadcast0 = algorithm.init_client(params), algorithm.init_server(params)

  traces = []

  def run(client, broadcast):
    traces.append(1)
    corrected = algorithm.correct(grads, params, anchor, client, broadcast)
    client, upload = algorithm.finish(delta, client, broadcast, jnp.int32(7), 0.05)
    uploads = jax.tree.map(lambda leaf: jnp.stack([leaf, 2 * leaf]), upload)
    broadcast = algorithm.server_update(broadcast, uploads, jnp.asarray([1.0, 0.0]))
    return corrected, client, broadcast

  eager = run(client0, broadcast0)
  jitted = jax.jit(run)
  first = jitted(client0, broadcast0)
  for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(first)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
  second = jitted(first[1], first[2])  # the next round, fed its own outputs
  assert len(traces) == 2, "the second jitted call retraced"  # one eager call, one trace
  _assert_same_layout(first[0], grads)
  _assert_same_layout(client0, second[1])
  _assert_same_layout(broadcast0, second[2])


# ------------------------------------------------------------------------------- FedProx
def test_fedprox_adds_the_proximal_gradient():
  rng = np.random.default_rng(3)
  grads, params, anchor = _tree(rng), _tree(rng), _tree(rng)
  corrected = fedprox(0.3).correct(grads, params, anchor, EmptyState(), EmptyState())
  want = _flat(grads) + 0.3 * (_flat(params) - _flat(anchor))
  np.testing.assert_allclose(_flat(corrected), want, rtol=1e-6, atol=1e-7)


def test_fedprox_keeps_local_training_closer_to_theta(examples, item_table, theta0, local):
  one = jax.tree.map(lambda a: jnp.asarray(a)[int(np.argmax(np.asarray(examples.mask).sum(
      axis=(1, 2))))], examples)
  key = jax.random.key(5)

  def distance(mu: float | None) -> float:
    correct = None
    if mu is not None:
      prox = fedprox(mu)
      correct = lambda g, p: prox.correct(g, p, theta0, EmptyState(), EmptyState())
    params, _, _ = local_train(theta0, (), one, item_table, key=key, local=local, correct=correct)
    return float(np.linalg.norm(_flat(params) - _flat(theta0)))

  plain = distance(None)
  assert distance(0.0) == pytest.approx(plain, rel=1e-6)  # mu = 0 is plain local SGD
  assert distance(1.0) < 0.9 * plain
  assert distance(10.0) < distance(1.0)


# ------------------------------------------------------------------------------- SCAFFOLD
def test_scaffold_correction_and_control_update_match_numpy():
  rng = np.random.default_rng(4)
  algorithm = scaffold(num_clients=4)
  params = _tree(rng)
  client = algorithm.init_client(params)._replace(control=_tree(rng))
  broadcast = algorithm.init_server(params)._replace(control=_tree(rng))
  grads, delta = _tree(rng), _tree(rng)
  corrected = algorithm.correct(grads, params, params, client, broadcast)
  np.testing.assert_allclose(
      _flat(corrected), _flat(grads) - _flat(client.control) + _flat(broadcast.control),
      rtol=1e-6, atol=1e-7)
  steps, learning_rate = 6, 0.05
  new_client, change = algorithm.finish(delta, client, broadcast, jnp.int32(steps), learning_rate)
  want = (_flat(client.control) - _flat(broadcast.control)
          - _flat(delta) / (steps * learning_rate))
  np.testing.assert_allclose(_flat(new_client.control), want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(_flat(change), want - _flat(client.control), rtol=1e-5, atol=1e-6)
  # A client that took no step keeps its control variate.
  idle, idle_change = algorithm.finish(delta, client, broadcast, jnp.int32(0), learning_rate)
  np.testing.assert_array_equal(_flat(idle.control), _flat(client.control))
  assert not _flat(idle_change).any()
  # The server adds the accepted changes / num_clients.
  changes = jax.tree.map(lambda leaf: jnp.stack([leaf, 3 * leaf, 100 * leaf]), change)
  updated = algorithm.server_update(broadcast, changes, jnp.asarray([1.0, 1.0, 0.0]))
  np.testing.assert_allclose(_flat(updated.control),
                             _flat(broadcast.control) + 4 * _flat(change) / 4, rtol=1e-5,
                             atol=1e-6)


def test_scaffold_server_control_stays_the_mean_of_client_controls(examples, item_table, theta0,
                                                                   local):
  # c = (1/N) sum_i c_i holds after any sequence of partial cohorts, rejected uploads included.
  num_clients = examples.mask.shape[0]
  algorithm = make_algorithm(FederatedConfig(local_algorithm="scaffold"), num_clients)
  round_fn = make_round(local, algorithm)
  server = init_server_state(algorithm, theta0)
  clients = init_device_states(algorithm, theta0, (), num_clients)
  rng = np.random.default_rng(6)
  for round_index in range(3):
    ids = np.sort(rng.choice(num_clients, 8, replace=False)).astype(np.int32)
    cohort, padded_ids, client_mask = cohort_slice(examples, ids, 10)
    if round_index == 1:  # one client diverges: its upload and its new c_i are both dropped
      features = np.array(cohort.user_features, copy=True)
      features[3] = np.nan
      cohort = cohort._replace(user_features=features)
    server, rows, metrics = round_fn(server, gather_client_states(clients, padded_ids), cohort,
                                     padded_ids, client_mask, item_table, jax.random.key(0),
                                     round_index)
    scatter_client_states(clients, ids, rows)
    assert int(metrics.rejected) == (1 if round_index == 1 else 0)
  client_mean = jax.tree.map(lambda leaf: leaf.mean(0), clients.algorithm.local.control)
  assert np.abs(_flat(server.broadcast.control)).max() > 1e-4  # the invariant is not vacuous
  np.testing.assert_allclose(_flat(server.broadcast.control), _flat(client_mean), rtol=1e-4,
                             atol=1e-6)


# ------------------------------------------------------------------------------- compression
def test_stochastic_quantization_is_unbiased():
  # Per entry, decode - x lies within one level step and has mean 0, so over n independent keys
  # the mean error has standard deviation <= step / (2 sqrt(n)); allow 5 of them (fixed keys).
  bits, draws = 2, 4000
  x = {"v": jnp.asarray(np.random.default_rng(7).normal(size=64), jnp.float32)}
  quantizer = stochastic_quantization(bits)
  decode = jax.jit(jax.vmap(lambda key: quantizer.compress(x, EmptyState(), key)[0]["v"]))
  decoded = np.asarray(decode(jax.random.split(jax.random.key(8), draws)), np.float64)
  step = (float(x["v"].max()) - float(x["v"].min())) / (2**bits - 1)
  assert np.abs(decoded - np.asarray(x["v"])).max() <= step * (1 + 1e-5)
  levels = (decoded - float(x["v"].min())) / step
  np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)  # on the 2^bits grid
  assert len(np.unique(np.round(levels))) == 2**bits
  tolerance = 5 * step / (2 * np.sqrt(draws))
  np.testing.assert_allclose(decoded.mean(0), np.asarray(x["v"]), atol=tolerance)
  # And it is not a trivially exact (biased-but-lucky) identity: single draws do differ.
  assert np.abs(decoded[0] - np.asarray(x["v"])).max() > step / 10


def test_quantization_keeps_constant_tensors_and_propagates_nan():
  quantizer = stochastic_quantization(4)
  constant = {"v": jnp.full(5, 0.25, jnp.float32)}
  np.testing.assert_array_equal(
      np.asarray(quantizer.compress(constant, EmptyState(), jax.random.key(0))[0]["v"]), 0.25)
  bad = {"v": jnp.asarray([0.0, np.nan, 1.0], jnp.float32)}
  # The server's finiteness check must see the NaN, not a quantized-away version of it.
  assert np.isnan(np.asarray(quantizer.compress(bad, EmptyState(), jax.random.key(0))[0]["v"])).any()


@settings(deadline=None, max_examples=15)
@given(seed=st.integers(0, 2**31 - 1), fraction=st.sampled_from([0.05, 0.25, 0.5, 1.0]),
       rounds=st.integers(1, 6))
def test_error_feedback_conserves_the_total_update(seed, fraction, rounds):
  rng = np.random.default_rng(seed)
  sparsifier = top_k_sparsification(fraction)
  compress = jax.jit(sparsifier.compress)
  state = sparsifier.init(_tree(rng))
  size = _flat(state.residual).size
  k = int(np.ceil(fraction * size - 1e-9))
  total_delta, total_sent = np.zeros(size), np.zeros(size)
  for _ in range(rounds):
    delta = _tree(rng, scale=1.0)
    sent, state, bits = compress(delta, state, jax.random.key(0))
    assert np.count_nonzero(_flat(sent)) <= k
    assert float(bits) == k * 64  # value + index per sent entry
    total_delta += _flat(delta)
    total_sent += _flat(sent)
  # Nothing is lost: what was sent plus what is still held equals everything computed.
  np.testing.assert_allclose(total_sent + _flat(state.residual), total_delta, atol=1e-5)


def test_top_k_sends_the_largest_entries():
  sparsifier = top_k_sparsification(0.25)
  delta = {"v": jnp.asarray([0.1, -5.0, 0.2, 3.0, -0.3, 0.0, 0.05, 1.0], jnp.float32)}
  sent, state, _ = sparsifier.compress(delta, sparsifier.init(delta), jax.random.key(0))
  np.testing.assert_array_equal(np.asarray(sent["v"]), [0, -5.0, 0, 3.0, 0, 0, 0, 0])
  np.testing.assert_array_equal(np.asarray(state.residual["v"]),
                                np.float32([0.1, 0, 0.2, 0, -0.3, 0.0, 0.05, 1.0]))


def test_invalid_client_side_hyper_parameters_are_rejected():
  for build in (lambda: fedprox(-0.1), lambda: scaffold(0), lambda: stochastic_quantization(0),
                lambda: stochastic_quantization(17), lambda: top_k_sparsification(0.0),
                lambda: top_k_sparsification(1.5)):
    with pytest.raises(ValueError):
      build()
