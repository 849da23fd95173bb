"""Simulated Byzantine clients: who attacks, what they upload, what they train on, and that the
round applies an attack to exactly the flagged clients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pprsf_jax.aggregation import init_server_state, make_algorithm
from pprsf_jax.ranking import init_device_states
from pprsf_jax.config import FederatedConfig
from pprsf_jax.ranking import cohort_slice, gather_client_states, make_round
from pprsf_jax.ranking.attacks import Attack, choose_attackers, poison_examples, poison_upload

SEED_KEY = jax.random.key(3)


def _delta(seed: int = 0):
  rng = np.random.default_rng(seed)
  return {"w": jnp.asarray(rng.normal(size=(40, 30)), jnp.float32),
          "b": jnp.asarray(rng.normal(size=(30,)), jnp.float32)}


def test_attackers_are_an_exact_seeded_share():
  attackers = choose_attackers(943, 0.1, seed=0)
  assert attackers.sum() == 94
  np.testing.assert_array_equal(attackers, choose_attackers(943, 0.1, seed=0))
  assert (attackers != choose_attackers(943, 0.1, seed=1)).any()
  assert not choose_attackers(943, 0.0, seed=0).any()


def test_model_poisoning_uploads():
  delta, key = _delta(), jax.random.key(0)
  flat = lambda tree: np.concatenate([np.asarray(x).ravel() for x in jax.tree.leaves(tree)])
  np.testing.assert_array_equal(flat(poison_upload(delta, Attack("sign_flip"), key)), -flat(delta))
  np.testing.assert_allclose(flat(poison_upload(delta, Attack("scaling", scale=7.0), key)),
                             7.0 * flat(delta), rtol=1e-6)
  np.testing.assert_array_equal(flat(poison_upload(delta, Attack("label_flip"), key)), flat(delta))
  noise = flat(poison_upload(delta, Attack("gaussian", noise_std=0.5), key))
  # 1,230 independent N(0, 0.25) draws: sample std within 10% of 0.5, unrelated to the update.
  assert abs(noise.std() - 0.5) < 0.05 and abs(np.corrcoef(noise, flat(delta))[0, 1]) < 0.1


def test_label_flip_poisons_only_the_attackers_real_labels(examples):
  attackers = np.zeros(examples.mask.shape[0], bool)
  attackers[[1, 4]] = True
  poisoned = poison_examples(examples, attackers, Attack("label_flip"), target_item=0,
                             target_popularity=0.0)
  real = examples.mask > 0
  np.testing.assert_array_equal(poisoned.labels[~attackers], examples.labels[~attackers])
  flipped = poisoned.labels[attackers][real[attackers]]
  np.testing.assert_array_equal(flipped, 1 - examples.labels[attackers][real[attackers]])
  padding = ~real[attackers]
  np.testing.assert_array_equal(poisoned.labels[attackers][padding],
                                examples.labels[attackers][padding])


def test_item_promotion_plants_the_target_as_each_list_s_only_positive(examples):
  attackers = np.zeros(examples.mask.shape[0], bool)
  attackers[[0, 2, 5]] = True
  target = 7
  poisoned = poison_examples(examples, attackers, Attack("item_promotion"), target_item=target,
                             target_popularity=2.5)
  for field in poisoned._fields:  # honest clients untouched
    np.testing.assert_array_equal(np.asarray(getattr(poisoned, field))[~attackers],
                                  np.asarray(getattr(examples, field))[~attackers])
  for row in np.flatnonzero(attackers):
    for lst in range(examples.mask.shape[1]):
      real = examples.mask[row, lst] > 0
      if not real.any():
        continue
      slot = np.flatnonzero(poisoned.labels[row, lst] > 0)
      assert len(slot) == 1
      slot = slot[0]
      assert poisoned.items[row, lst, slot] == target
      assert poisoned.popularity[row, lst, slot] == 2.5 and poisoned.mask[row, lst, slot] == 1
      # The slot recall ranked last among the real candidates.
      assert examples.recall_scores[row, lst, slot] == examples.recall_scores[row, lst][real].min()


def test_invalid_attacks_are_rejected():
  for kwargs in ({"kind": "poison"}, {"kind": "scaling", "scale": 0.0},
                 {"kind": "gaussian", "noise_std": -1.0}):
    with pytest.raises(ValueError, match="Attack"):
      Attack(**kwargs)


def test_the_round_poisons_exactly_the_flagged_clients(local, theta0, examples, item_table):
  counts = np.asarray(examples.mask).reshape(examples.mask.shape[0], -1).sum(1)
  ids = np.flatnonzero(counts >= 5)[:8].astype(np.int32)
  config = FederatedConfig(server_learning_rate=1.0)
  algorithm = make_algorithm(config, examples.mask.shape[0])
  cohort, client_ids, client_mask = cohort_slice(examples, ids, len(ids))
  clients = gather_client_states(init_device_states(algorithm, theta0, (), examples.mask.shape[0]),
                                 client_ids)
  server = init_server_state(algorithm, theta0)
  round_fn = make_round(local, algorithm, attack=Attack("sign_flip"))

  def step(malicious):
    new, _, _ = round_fn(server, clients, cohort, client_ids, client_mask, item_table, SEED_KEY,
                         0, malicious)
    return np.concatenate([np.asarray(a - b).ravel() for a, b in
                           zip(jax.tree.leaves(new.params), jax.tree.leaves(theta0))])

  honest = step(jnp.zeros(len(ids), bool))
  assert np.abs(honest).max() > 1e-4
  # Everyone flips: FedAvg with server SGD at lr 1 steps exactly the other way.
  np.testing.assert_allclose(step(jnp.ones(len(ids), bool)), -honest, atol=1e-6)
  # Some flip: the step lies strictly between (the honest share pulls it back).
  partial = step(jnp.asarray(np.arange(len(ids)) < 2))
  assert 0 < np.dot(partial, honest) < np.dot(honest, honest)
