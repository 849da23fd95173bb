"""The standard-round benchmark computes what it times: engine == loop == NumPy FedAvg."""

from __future__ import annotations

import importlib.util
import pathlib

import jax
import numpy as np
import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "bench_standard_round.py"


@pytest.fixture(scope="module")
def bench():
  spec = importlib.util.spec_from_file_location("bench_standard_round", SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_hand_written_gradients_match_jax_grad(bench):
  theta = bench.init_params(jax.random.key(1))
  assert bench.check_gradients(theta, bench.make_cohort(1, seed=3)) < 1e-5


@pytest.mark.parametrize("backprop", ["manual", "autodiff"])
def test_engine_and_loop_give_the_example_weighted_mean(bench, backprop):
  # 7 clients in chunks of 4 exercises the zero-weight padding; unequal weights exercise weighting.
  theta = bench.init_params(jax.random.key(0))
  data = bench.make_cohort(7, seed=2)._replace(
      num_examples=np.array([100, 40, 1, 0, 100, 70, 13], np.int32))
  sgd_step = bench.make_sgd_step(bench.BACKPROPS[backprop])
  cohort = jax.device_put(bench.pad_cohort(data, 4))
  chunked, loss = jax.jit(bench.make_vmapped_round(sgd_step, chunk=4))(theta, cohort)
  whole, _ = jax.jit(bench.make_vmapped_round(sgd_step, chunk=None))(theta, cohort)
  looped, _ = bench.make_loop_round(sgd_step)(theta, bench.client_batches(data, 7),
                                              data.num_examples)
  epochs = [jax.jit(bench.client_epoch, static_argnums=0)(sgd_step, theta, x, y)
            for x, y in zip(data.features, data.labels)]
  weights = data.num_examples / data.num_examples.sum()
  want = jax.tree.map(lambda *p: np.tensordot(weights, np.stack(p), axes=1),
                      *[params for params, _ in epochs])
  for got in (chunked, whole, looped):
    assert bench.max_difference(got, want) < 1e-5
  np.testing.assert_allclose(loss, weights @ np.array([l for _, l in epochs]), rtol=1e-5)


def test_the_package_round_is_the_reference_round(bench):
  """The benchmark's headline times the package's own `make_round` on a task built with the
  package's interface; it computes the reference kernel's Theta."""
  theta = bench.init_params(jax.random.key(0))
  data = bench.make_cohort(6, seed=4)
  package = bench.make_package_round(data)
  server = bench.init_server_state(package.algorithm, bench.to_package(theta))
  server, loss = package(server, 0)
  sgd_step = bench.make_sgd_step(bench.BACKPROPS["autodiff"])
  want, want_loss = jax.jit(bench.make_vmapped_round(sgd_step, chunk=None))(
      theta, jax.device_put(data))
  assert bench.max_difference(bench.from_package(server.params), want) < 1e-5
  np.testing.assert_allclose(float(loss), float(want_loss), rtol=1e-5)
