"""The literature protocol (`pprsf_jax.literature`): the two training-negative pools, the sampler
on the device, the held-out metrics and a short federated run through the package's round."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from pprsf_jax import literature
from pprsf_jax.data.loo_protocol import build_leave_one_out
from pprsf_jax.metrics.sampled import held_out_metrics
from pprsf_jax.ranking.sampled_task import client_interactions

NUM_USERS, NUM_ITEMS, NEGATIVES = 12, 230, 99


@pytest.fixture(scope="module")
def split():
  rng = np.random.default_rng(0)
  users, items, times = [], [], []
  for user in range(NUM_USERS):
    # Every item rated by someone (the split numbers the items that occur); each user leaves
    # more than 2 x 99 items unrated (its evaluation negatives).
    own = np.arange(user, NUM_ITEMS, NUM_USERS)
    extra = rng.choice(np.setdiff1d(np.arange(NUM_ITEMS), own), 3, replace=False)
    rated = np.concatenate([own, extra])
    users += [user + 1] * rated.size
    items += (rated + 1).tolist()
    times += rng.permutation(rated.size).tolist()
  return build_leave_one_out(np.array(users), np.array(items), None, np.array(times))


def test_the_published_pool_excludes_the_held_out_items_and_the_leak_free_pool_does_not(split):
  users = np.arange(split.num_users)
  for protocol, held_out_excluded in (("published", True), ("leak_free", False)):
    excluded = literature.excluded_items(split, protocol)
    assert excluded[split.train_user, split.train_item].all()  # never a training positive
    assert (excluded[users, split.test_item] == held_out_excluded).all()
    assert (excluded[users, split.val_item] == held_out_excluded).all()
    # The evaluation negatives are eligible under both: the leak is the held-out item's absence.
    assert not excluded[users[:, None], split.test_negatives].any()


def test_the_headline_sampler_draws_held_out_items_as_training_negatives(split):
  """Leak-free: a client's test item is drawn as its negative like any unseen item; published:
  never."""
  local = literature.local_training(literature.SETTINGS["mf"], "mf")
  draws = {}
  for protocol in literature.PROTOCOLS:
    clients = client_interactions(split.train_user, split.train_item,
                                  literature.excluded_items(split, protocol))
    own = jax.tree.map(lambda leaf: leaf[0], clients)
    negatives = np.concatenate([
        np.asarray(local.task.units(own, (), jax.random.key(k)).data[0])[:, 1:].ravel()
        for k in range(40)])
    assert not np.isin(negatives, split.train_item[split.train_user == 0]).any()
    draws[protocol] = negatives
  held_out = [split.test_item[0], split.val_item[0]]
  assert np.isin(held_out, draws["leak_free"]).all()
  assert not np.isin(held_out, draws["published"]).any()


def test_held_out_metrics_count_ties_against_the_held_out_item():
  scores = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 1.0, 2.0]])
  # Ranks: 1, 2 (the tie counts against it), 3.
  got = held_out_metrics(scores, 2)
  assert got["hr@2"] == pytest.approx(2 / 3)
  assert got["ndcg@2"] == pytest.approx((1.0 + 1 / np.log2(3)) / 3)
  # A diverged model's NaN scores are misses, never hits.
  assert held_out_metrics(np.full((2, 4), np.nan), 3)["hr@3"] == 0.0
  assert held_out_metrics(np.array([[1.0, np.nan, 0.0, 0.0]]), 1)["hr@1"] == 0.0


@pytest.mark.parametrize("model", sorted(literature.SETTINGS))
def test_a_short_run_learns_and_repeats_itself(split, model):
  # Small steps for tiny data (the papers' step sizes are set for batches of 256 rows).
  setting = literature.SETTINGS[model]._replace(positives_per_step=4, learning_rate=2.0,
                                                personal_learning_rate=0.2)
  first = literature.reproduce(split, model, "leak_free", rounds=3, seed=1, setting=setting)
  again = literature.reproduce(split, model, "leak_free", rounds=3, seed=1, setting=setting)
  strip = lambda result: [{k: v for k, v in r.items() if k != "seconds"}
                          for r in result.per_round]
  assert strip(first) == strip(again)
  assert [r["round"] for r in first.per_round] == [1, 2, 3]
  assert first.per_round[-1]["loss"] < first.per_round[0]["loss"]
  for view in ("global", "own"):
    assert 0 <= first.selected[view]["test_hr10"] <= 1


def test_the_run_loop_trains_a_task_of_another_example_layout(split):
  """`train_federated` (cohorts, checkpoints, DP, faults) runs the sampled-negatives task on its
  own example layout: nothing in the loop or the round names the candidate examples."""
  import dataclasses  # pylint: disable=import-outside-toplevel
  from pprsf_jax import pipeline  # pylint: disable=import-outside-toplevel
  from pprsf_jax.config import FederatedConfig, RunConfig  # pylint: disable=import-outside-toplevel
  from pprsf_jax.ranking import ModelDims, init_personal_states  # pylint: disable=import-outside-toplevel
  setting = literature.SETTINGS["mf"]._replace(positives_per_step=4, learning_rate=2.0,
                                               personal_learning_rate=0.2)
  local = literature.local_training(setting, "mf")
  clients = client_interactions(split.train_user, split.train_item,
                                literature.excluded_items(split, "leak_free"))
  dims = ModelDims(num_features=0, num_items=split.num_items)
  config = RunConfig(checkpoint_every=0, federated=FederatedConfig(
      rounds=3, clients_per_round=5, weighting="uniform", server_learning_rate=1.0))
  config = dataclasses.replace(config, eval=dataclasses.replace(config.eval, every_rounds=0))
  personal0 = init_personal_states(local.task, dims, jax.random.key(1), split.num_users)
  before = personal0["user"].copy()
  training = pipeline.train_federated(local.task.init_shared(jax.random.key(0), dims), personal0,
                                      clients, (), config, local)
  assert len(training.losses) == 3 and training.rejected == 0
  assert np.abs(training.clients.personal["user"] - before).max() > 0  # the clients trained
  np.testing.assert_array_equal(personal0["user"], before)  # the caller's states are copied
