"""Cohorts streamed from ragged client data: the scale generator, sweeping cohorts, cohort
building and prefetching, and training on streamed cohorts equal to training on stacked ones."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pprsf_jax import pipeline
from pprsf_jax.config import ConfigError, FederatedConfig, RankingConfig, RunConfig, apply_overrides
from pprsf_jax.data.synthetic_scale import generate_at_scale
from pprsf_jax.ranking import make_item_table
from pprsf_jax.ranking.examples import build_examples
from pprsf_jax.ranking.sampling import cohort_schedule, participations
from pprsf_jax.ranking.streaming import StackedCohorts, StreamedCohorts, prefetched
from pprsf_jax.recall import item_counts, retrieve
from pprsf_jax.recall.content import train_content
from pprsf_jax.recall.item_knn import item_neighbors
from pprsf_jax.types import Candidates

USERS, ITEMS = 300, 400


@pytest.fixture(scope="module")
def federation():
  return generate_at_scale(USERS, ITEMS, interactions_per_user=12, seed=3, num_clusters=16,
                           user_chunk=128)


def test_the_generator_is_deterministic_and_its_csr_is_well_formed(federation):
  again = generate_at_scale(USERS, ITEMS, interactions_per_user=12, seed=3, num_clusters=16,
                            user_chunk=128)
  for field in ("offsets", "items", "private", "fold", "user_features"):
    np.testing.assert_array_equal(getattr(again, field), getattr(federation, field))
  offsets = federation.offsets
  assert offsets[0] == 0 and offsets[-1] == federation.items.size and np.all(np.diff(offsets) >= 1)
  assert federation.items.min() >= 0 and federation.items.max() < ITEMS
  keys = federation.users_of_rows().astype(np.int64) * ITEMS + federation.items
  assert np.unique(keys).size == keys.size  # one interaction per (user, item)
  assert np.all(np.diff(federation.users_of_rows()) >= 0)


def test_private_attributes_plant_shared_tastes(federation):
  """Users with the same attributes share more items than users who share none."""
  features = federation.user_features
  history = [set(federation.items[a:b]) for a, b in zip(federation.offsets[:-1],
                                                        federation.offsets[1:])]
  same, different = [], []
  for u in range(USERS):
    for v in range(u + 1, USERS):
      overlap = len(history[u] & history[v]) / len(history[u] | history[v])
      shared = features[u, 1:] @ features[v, 1:]  # one-hot groups in common (age scale left out)
      if shared >= 3 + 1:  # bucket, gender, occupation (+ zip region)
        same.append(overlap)
      elif shared == 0:
        different.append(overlap)
  assert len(same) > 10 and len(different) > 10
  assert np.mean(same) > 1.5 * np.mean(different)


def test_rows_of_equals_a_loop_over_users(federation):
  users = np.array([7, 0, 299, 7, 150], np.int32)
  rows, owner = federation.rows_of(users)
  want_rows = np.concatenate([np.arange(federation.offsets[u], federation.offsets[u + 1])
                              for u in users])
  want_owner = np.concatenate([np.full(federation.offsets[u + 1] - federation.offsets[u], i)
                               for i, u in enumerate(users)])
  np.testing.assert_array_equal(rows, want_rows)
  np.testing.assert_array_equal(owner, want_owner)


@pytest.mark.parametrize("clients, cohort", [(10, 3), (12, 4), (5, 5), (5, 9)])
def test_a_sweep_covers_every_client_once(clients, cohort):
  per_sweep = -(-clients // cohort)
  schedule = cohort_schedule(clients, cohort, 2 * per_sweep + 1, seed=0, sampling="sweep")
  assert len(schedule) == 2 * per_sweep + 1
  for sweep in range(2):
    rounds = schedule[sweep * per_sweep:(sweep + 1) * per_sweep]
    np.testing.assert_array_equal(participations(rounds, clients), np.ones(clients))
    assert all(len(ids) <= cohort for ids in rounds)
  same_seed = cohort_schedule(clients, cohort, 2 * per_sweep + 1, 0, "sweep")
  assert [list(ids) for ids in schedule] == [list(ids) for ids in same_seed]


def test_sweeps_are_drawn_afresh():
  first, second = cohort_schedule(100, 10, 20, seed=0, sampling="sweep")[::10]
  assert list(first) != list(second)
  assert list(first) != list(cohort_schedule(100, 10, 1, seed=1, sampling="sweep")[0])


def test_sweeping_cohorts_are_refused_under_dp():
  with pytest.raises(ConfigError, match="federated.sampling"):
    apply_overrides(RunConfig(), ["federated.sampling=sweep", "privacy.mechanism=local"])


@pytest.fixture(scope="module")
def streamed(federation):
  public = federation.select(~federation.private & (federation.fold != 0))
  recall = train_content(public, federation.catalogue, USERS, ITEMS, popularity_weight=0.1)
  candidates = retrieve(recall, 30, public, user_chunk=64, item_chunk=128)
  neighbors = item_neighbors(public, USERS, ITEMS, num_neighbors=5)
  counts = item_counts(public, ITEMS)
  source = StreamedCohorts(federation, candidates, neighbors=neighbors, public_counts=counts)
  labels = federation.fold == 0
  every_client = build_examples(
      candidates, federation.user_features, history=federation.select(~labels),
      positives=federation.select(labels), genres=federation.catalogue.genres,
      neighbors=neighbors, public_counts=counts)
  return source, every_client


def test_a_streamed_cohort_equals_the_rows_of_every_clients_examples(streamed):
  source, every_client = streamed
  stacked = StackedCohorts(every_client)
  for ids in (np.array([3, 17, 250], np.int32), np.array([], np.int32), np.arange(9, dtype=np.int32)):
    got, want = source.cohort(ids, 12), stacked.cohort(ids, 12)
    for field in got[0]._fields:
      np.testing.assert_array_equal(getattr(got[0], field), getattr(want[0], field), err_msg=field)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[2], want[2])


def test_prefetching_yields_every_round_in_order(streamed):
  source, _ = streamed
  schedule = cohort_schedule(USERS, 50, 7, seed=0, sampling="sweep")
  seen = list(prefetched(source, schedule, 50, range(2, 7)))
  assert [round_index for round_index, _, _ in seen] == [2, 3, 4, 5, 6]
  for round_index, ids, (cohort, padded, mask) in seen:
    np.testing.assert_array_equal(ids, schedule[round_index])
    direct = source.cohort(schedule[round_index], 50)
    np.testing.assert_array_equal(cohort.items, direct[0].items)
    assert mask.sum() == len(ids)


def test_training_on_streamed_cohorts_equals_training_on_stacked_ones(streamed, federation,
                                                                      assert_trees_identical):
  source, every_client = streamed
  config = RunConfig(checkpoint_every=0, ranking=RankingConfig(local_epochs=1),
                     federated=FederatedConfig(rounds=3, clients_per_round=128, sampling="sweep"))
  config = dataclasses.replace(config, eval=dataclasses.replace(config.eval, every_rounds=0))
  item_table = make_item_table(federation.catalogue)
  local = pipeline.local_training(config)
  theta0 = local.task.init_shared(
      pipeline.stream_key(0, "theta0"),
      pipeline.model_dims(federation.user_features.shape[1], item_table))
  from_stream = pipeline.train_federated(theta0, (), source, item_table, config, local)
  from_stack = pipeline.train_federated(theta0, (), every_client, item_table, config, local)
  assert_trees_identical(from_stream.params, from_stack.params)
  assert from_stream.losses == from_stack.losses
  assert from_stream.losses[-1] < from_stream.losses[0]


def test_streamed_cohorts_need_a_candidate_list_per_client(federation):
  short = Candidates(np.zeros((3, 4), np.int32), np.zeros((3, 4), np.float32))
  with pytest.raises(ValueError, match="3 candidate lists for 300 clients"):
    StreamedCohorts(federation, short, neighbors=None, public_counts=np.zeros(ITEMS))
