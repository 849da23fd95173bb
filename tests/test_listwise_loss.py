"""The listwise ("softmax") ranking loss: its value, its local training, P_Sum, padding, config."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import mlp_training
from pprsf_jax.aggregation import init_server_state, make_algorithm
from pprsf_jax.config import ConfigError, FederatedConfig, RankingConfig
from pprsf_jax.ranking import (client_key, client_update, init_device_states, local_train,
                               train_central)
from pprsf_jax.ranking.baselines import pooled_units
from pprsf_jax.ranking.candidate_task import softmax_per_list
from pprsf_jax.ranking.client import batch_loss, weighted_mean

SEED_KEY = jax.random.key(3)


@pytest.fixture(scope="module")
def listwise():
  return mlp_training(loss="softmax", units_per_step=1, learning_rate=0.1)


def masked_list_softmax(scores, labels, mask, weights):
  """The listwise loss of lists whose logits are given, as local training averages it."""
  return weighted_mean(softmax_per_list(scores, labels, mask), weights)


def test_list_softmax_matches_a_hand_computation():
  scores = np.array([[2.0, 1.0, 0.0, 5.0], [0.5, -0.5, 3.0, 0.0]], np.float32)
  mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], np.float32)  # a padding slot with a high score
  labels = np.array([[1, 0, 1, 1], [0, 1, 1, 0]], np.float32)  # labels on padding are ignored
  weights = np.array([1.0, 1.0], np.float32)

  def by_hand(row):
    real = mask[row] > 0
    log_z = np.log(np.exp(scores[row][real]).sum())
    positives = real & (labels[row] > 0)
    return -(scores[row][positives] - log_z).mean()

  expected = (by_hand(0) + by_hand(1)) / 2
  got = masked_list_softmax(jnp.asarray(scores), jnp.asarray(labels), jnp.asarray(mask),
                            jnp.asarray(weights))
  np.testing.assert_allclose(float(got), expected, rtol=1e-6)
  # Weights select lists: only the first.
  first = masked_list_softmax(jnp.asarray(scores), jnp.asarray(labels), jnp.asarray(mask),
                              jnp.array([1.0, 0.0]))
  np.testing.assert_allclose(float(first), by_hand(0), rtol=1e-6)


def test_list_softmax_is_zero_not_nan_without_lists_or_candidates():
  scores = jnp.zeros((2, 3))
  labels = jnp.ones((2, 3))
  empty = masked_list_softmax(scores, labels, jnp.zeros((2, 3)), jnp.ones(2))
  assert float(empty) == 0.0
  unweighted = masked_list_softmax(scores, labels, jnp.ones((2, 3)), jnp.zeros(2))
  assert float(unweighted) == 0.0
  grads = jax.grad(lambda f: masked_list_softmax(f, labels, jnp.zeros((2, 3)),
                                                 jnp.ones(2)))(scores)
  assert np.all(np.isfinite(np.asarray(grads)))


def test_softmax_units_are_the_lists_with_a_positive(examples, item_table, listwise):
  one = jax.tree.map(lambda a: jnp.asarray(np.asarray(a)[0]), examples)
  units = listwise.task.units(one, item_table, jax.random.key(0))
  num_lists, list_length = np.asarray(one.mask).shape
  assert units.data.inputs.features.shape[:2] == (num_lists, list_length)
  assert units.mask.shape == (num_lists, 1) and listwise.task.units_per_step == 1
  expected = (np.asarray(one.mask) * np.asarray(one.labels)).sum(-1) > 0
  np.testing.assert_array_equal(np.asarray(units.mask).reshape(-1), expected)


def _own_list_loss(local, params, one, item_table):
  units = local.task.units(one, item_table, jax.random.key(0))
  return float(batch_loss(local.task, params, (), units.data, units.mask.reshape(-1),
                          item_table))


@pytest.mark.parametrize("lists_per_step", [1, 2])
def test_softmax_local_training_lowers_the_clients_list_loss(examples, item_table, theta0,
                                                             listwise, lists_per_step):
  local = mlp_training(loss="softmax", units_per_step=lists_per_step, epochs=4,
                       learning_rate=0.1)
  mask, labels = np.asarray(examples.mask), np.asarray(examples.labels)
  trainable = ((mask * labels).sum(-1) > 0).sum(-1)  # [N] lists with a positive
  chosen = np.flatnonzero(trainable >= 2)[:4]
  assert len(chosen) == 4
  for client in chosen:
    one = jax.tree.map(lambda a, c=client: jnp.asarray(np.asarray(a)[c]), examples)
    params, _, metrics = local_train(theta0, (), one, item_table, key=jax.random.key(int(client)),
                                  local=local)
    assert int(metrics.steps) == local.epochs * math.ceil(trainable[client] / lists_per_step)
    before = _own_list_loss(local, theta0, one, item_table)
    assert _own_list_loss(local, params, one, item_table) < before - 1e-3, client


def test_a_client_without_positives_takes_no_softmax_step(examples, item_table, theta0, listwise):
  one = jax.tree.map(lambda a: jnp.asarray(np.asarray(a)[0]), examples)
  one = one._replace(labels=jnp.zeros_like(one.labels))
  params, _, metrics = local_train(theta0, (), one, item_table, key=jax.random.key(0), local=listwise)
  # A list without a positive has no gradient: such a client has no unit to train on.
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(theta0)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert int(metrics.steps) == 0


@pytest.mark.parametrize("padding", ["candidates", "lists"])
def test_softmax_client_update_ignores_trailing_padding(examples, item_table, theta0, listwise,
                                                        pad_candidates, pad_lists, padding):
  mask, labels = np.asarray(examples.mask), np.asarray(examples.labels)
  client = int(np.flatnonzero(((mask * labels).sum(-1) > 0).sum(-1) >= 2)[0])
  one = jax.tree.map(lambda a: np.asarray(a)[client], examples)
  padded = pad_candidates(one, 9) if padding == "candidates" else pad_lists(one, 2)
  algorithm = make_algorithm(FederatedConfig(), examples.mask.shape[0])
  server = init_server_state(algorithm, theta0)
  state = jax.tree.map(lambda leaf: leaf[0], init_device_states(algorithm, theta0, (), 1))
  update = jax.jit(lambda ex: client_update(
      theta0, ex, item_table, key=client_key(SEED_KEY, 0, client), local=listwise,
      algorithm=algorithm, broadcast=server.broadcast, state=state))
  upload, _, metrics = update(one)
  padded_upload, _, padded_metrics = update(padded)
  for a, b in zip(jax.tree.leaves(upload), jax.tree.leaves(padded_upload)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)
  assert int(metrics.steps) == int(padded_metrics.steps) > 0
  assert max(float(jnp.max(jnp.abs(leaf))) for leaf in jax.tree.leaves(upload.delta)) > 0


def _pooled_list_loss(local, params, examples, item_table) -> float:
  units, owners = pooled_units(local.task, examples, item_table, jax.random.key(0))
  return float(batch_loss(local.task, params, (), units, jnp.ones(owners.shape), item_table))


def test_central_softmax_training_lowers_the_pooled_list_loss(examples, item_table, theta0,
                                                              listwise):
  params, _ = train_central(theta0, (), examples, item_table, key=jax.random.key(0),
                            local=listwise, epochs=2)
  before = _pooled_list_loss(listwise, theta0, examples, item_table)
  assert _pooled_list_loss(listwise, params, examples, item_table) < before - 1e-2


def test_central_softmax_training_names_too_few_lists(examples, item_table, theta0, listwise):
  few = jax.tree.map(lambda a: np.asarray(a)[:1], examples)
  local = mlp_training(loss="softmax", units_per_step=10_000)
  with pytest.raises(ValueError, match="lists with a positive"):
    train_central(theta0, (), few, item_table, key=jax.random.key(0), local=local, epochs=1)


@pytest.mark.parametrize("field, value", [("loss", "hinge"), ("loss", 1), ("lists_per_step", 0)])
def test_ranking_config_refuses_an_unknown_loss_or_empty_steps(field, value):
  with pytest.raises(ConfigError, match=f"ranking.{field}="):
    RankingConfig(**{field: value})
