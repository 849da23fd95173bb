"""Each layer on small inputs with known answers: recall, ranking, aggregation, re-rank,
metrics, service, data split and config parsing."""

from __future__ import annotations

import dataclasses

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from pprsf_jax.aggregation import chain, make_aggregator, server_optimizer, weighted_mean
from pprsf_jax.config import (ConfigError, DataConfig, FederatedConfig, RecallConfig, RunConfig,
                              apply_overrides)
from pprsf_jax.data.dataset import build_dataset
from pprsf_jax.metrics import evaluate_lists, hit_matrix, per_user_metrics
from conftest import mlp_training
from pprsf_jax.ranking import (client_features, local_train, num_features,
                               rank_candidates)
from pprsf_jax.ranking.candidate_task import bce_per_row
from pprsf_jax.ranking.client import weighted_mean as mean_loss
from pprsf_jax.recall import (RecallParams, item_counts, retrieve, score, train_bpr,
                              train_popularity)
from pprsf_jax.rerank import RerankContext, cold_start, final_list, make_reranker, mmr
from pprsf_jax.service import serve_period
from pprsf_jax.types import Interactions, Period, TopTRequest


def _interactions(pairs) -> Interactions:
  pairs = np.asarray(pairs, np.int32).reshape(-1, 2)
  return Interactions(pairs[:, 0].copy(), pairs[:, 1].copy())


def _keys(interactions: Interactions, num_items: int) -> np.ndarray:
  return interactions.user.astype(np.int64) * num_items + interactions.item


# ==================================================================================== recall
NUM_USERS, NUM_ITEMS, TOP_K = 37, 53, 8  # neither divisible by the chunk sizes below


@pytest.fixture(scope="module")
def random_recall():
  """Random float parameters (no ties) and an exclusion set in which user 0 has 3 items left."""
  rng = np.random.default_rng(0)
  params = RecallParams(
      user=jnp.asarray(rng.normal(size=(NUM_USERS, 6)).astype(np.float32)),
      item=jnp.asarray(rng.normal(size=(NUM_ITEMS, 6)).astype(np.float32)),
      item_bias=jnp.asarray(rng.normal(size=NUM_ITEMS).astype(np.float32)))
  pairs = [(u, i) for u in range(1, NUM_USERS) for i in rng.choice(NUM_ITEMS, 10, replace=False)]
  pairs += [(0, i) for i in range(NUM_ITEMS) if i not in (4, 20, 51)]
  return params, _interactions(pairs)


def _brute_force_top_k(params: RecallParams, k: int, exclude: Interactions):
  scores = (np.asarray(params.user, np.float64) @ np.asarray(params.item, np.float64).T
            + np.asarray(params.item_bias, np.float64)[None, :])
  users = np.repeat(np.arange(scores.shape[0]), scores.shape[1]).reshape(scores.shape)
  items = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
  scores[exclude.contains(users, items, scores.shape[1])] = -np.inf
  order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
  top = np.take_along_axis(scores, order, axis=1)
  return np.where(np.isfinite(top), order, -1), top


def test_score_agrees_with_retrieved_scores(random_recall):
  params, exclude = random_recall
  got = retrieve(params, TOP_K, exclude)
  users = np.arange(NUM_USERS)
  listed = jnp.asarray(np.maximum(got.items, 0).reshape(-1))
  pairwise = np.asarray(score(params, jnp.asarray(users), listed))  # [users, users * k]
  per_user = pairwise.reshape(NUM_USERS, NUM_USERS, TOP_K)[users, users]
  real = got.items >= 0
  np.testing.assert_allclose(per_user[real], got.scores[real], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("user_chunk,item_chunk", [(1024, 8192), (37, 53), (16, 16), (7, 10),
                                                   (5, 1)])
def test_retrieve_matches_brute_force(random_recall, user_chunk, item_chunk):
  params, exclude = random_recall
  got = retrieve(params, TOP_K, exclude, user_chunk=user_chunk, item_chunk=item_chunk)
  want_items, want_scores = _brute_force_top_k(params, TOP_K, exclude)
  assert got.items.shape == got.scores.shape == (NUM_USERS, TOP_K)
  np.testing.assert_array_equal(got.items, want_items)
  np.testing.assert_allclose(got.scores, want_scores, rtol=1e-5, atol=1e-5)


def test_retrieve_never_returns_excluded_items_and_sorts(random_recall):
  params, exclude = random_recall
  got = retrieve(params, TOP_K, exclude, user_chunk=16, item_chunk=16)
  users = np.repeat(np.arange(NUM_USERS), TOP_K).reshape(got.items.shape)
  real = got.items >= 0
  assert not exclude.contains(users, np.where(real, got.items, 0), NUM_ITEMS)[real].any()
  for row_items, row_scores in zip(got.items, got.scores):
    listed = row_items[row_items >= 0]
    assert len(set(listed.tolist())) == len(listed)
    # Real items first, best first; padding (-1, -inf) only at the end.
    assert np.all(np.diff(row_scores[: len(listed)]) <= 0)
    assert np.all(row_items[len(listed):] == -1) and np.all(np.isneginf(row_scores[len(listed):]))


def test_retrieve_pads_when_k_exceeds_eligible_items(random_recall):
  params, exclude = random_recall
  got = retrieve(params, TOP_K, exclude, user_chunk=16, item_chunk=16)
  assert sorted(got.items[0, :3].tolist()) == [4, 20, 51]
  np.testing.assert_array_equal(got.items[0, 3:], -1)
  assert np.all(np.isneginf(got.scores[0, 3:]))
  assert np.all(got.items[1:] >= 0)  # everyone else has 43 eligible items


def test_retrieve_for_a_subset_of_users(random_recall):
  params, exclude = random_recall
  subset = np.array([5, 0, 36])
  got = retrieve(params, TOP_K, exclude, users=subset, user_chunk=2, item_chunk=10)
  want_items, _ = _brute_force_top_k(params, TOP_K, exclude)
  np.testing.assert_array_equal(got.items, want_items[subset])


@pytest.mark.parametrize("k", [0, NUM_ITEMS + 1])
def test_retrieve_rejects_impossible_k(random_recall, k):
  params, exclude = random_recall
  with pytest.raises(ValueError, match="k="):
    retrieve(params, k, exclude)


def test_popularity_retrieval_returns_most_popular_items():
  rng = np.random.default_rng(1)
  num_items = 12
  counts = rng.permutation(num_items)  # distinct counts 0..11
  log = _interactions([(u % 4, item) for item in range(num_items) for u in range(counts[item])])
  np.testing.assert_array_equal(item_counts(log, num_items), counts.astype(np.float32))
  params = train_popularity(log, 4, num_items)
  by_popularity = np.argsort(-counts)
  # User 1 has seen the single most popular item: it gets the next five instead.
  got = retrieve(params, 5, _interactions([(1, by_popularity[0])]))
  for user in (0, 2, 3):
    np.testing.assert_array_equal(got.items[user], by_popularity[:5])
  np.testing.assert_array_equal(got.items[1], by_popularity[1:6])


def test_bpr_beats_random_on_held_out_recall(dataset):
  public = dataset.public
  config = RecallConfig(epochs=100, batch_size=64, learning_rate=0.02, embedding_dim=16)
  params, losses = train_bpr(public.history, public.num_users, public.num_items, config,
                             key=jax.random.key(0))
  assert losses[-1] < losses[0]
  lists = retrieve(params, 10, public.history).items
  bpr_recall = evaluate_lists(lists, dataset.test.interactions, public.num_items)["recall@10"]
  # A uniformly random list of 10 of a user's E eligible items has expected recall 10 / E.
  eligible = public.num_items - np.bincount(public.history.user, minlength=public.num_users)
  has_test = np.bincount(dataset.test.interactions.user, minlength=public.num_users) > 0
  random_recall = float(np.mean(np.minimum(10 / eligible, 1.0)[has_test]))
  # Measured with this seed: BPR 0.45 vs random 0.25; a 0.1 margin leaves room for rounding.
  assert bpr_recall > random_recall + 0.1


# =================================================================================== ranking
def _flat(array) -> np.ndarray:
  """[N, S, K] -> [N, S * K], the list-major order of `client_features` rows."""
  array = np.asarray(array)
  return array.reshape(array.shape[0], -1)


@pytest.fixture(scope="module")
def feature_rows(examples, item_table):
  return np.asarray(jax.vmap(client_features, in_axes=(0, None))(examples, item_table))


def test_client_features_are_finite_and_zero_for_padding(examples, item_table, feature_rows):
  mask = _flat(examples.mask)
  num_users, length = mask.shape
  width = num_features(examples.user_features.shape[1], item_table)
  assert feature_rows.shape == (num_users, length, width)
  assert np.isfinite(feature_rows).all()
  assert (mask == 0).any() and (mask == 1).any()  # both kinds of rows are present
  assert np.all(feature_rows[mask == 0] == 0)
  assert np.all(np.abs(feature_rows[mask == 1]).sum(-1) > 0)


def test_client_features_carry_the_private_attributes(examples, feature_rows):
  """The client's own attributes lead every real row (they are what federated ranking adds)."""
  mask = _flat(examples.mask)
  attributes = np.asarray(examples.user_features)
  width = attributes.shape[1]
  for client in range(0, mask.shape[0], 7):
    real = feature_rows[client][mask[client] > 0]
    np.testing.assert_array_equal(real[:, :width],
                                  np.broadcast_to(attributes[client], (len(real), width)))


def test_local_train_lowers_own_training_loss(examples, item_table, feature_rows, theta0, local):
  local = mlp_training(epochs=5, units_per_step=8, learning_rate=0.1)
  mask, labels = _flat(examples.mask), _flat(examples.labels)
  chosen = np.flatnonzero(((mask * labels).sum(1) >= 1) & (mask.sum(1) >= 8))[:5]
  assert len(chosen) == 5
  for client in chosen:
    # Device arrays: run eagerly, `local_train` cannot index host NumPy with traced rows.
    one = jax.tree.map(lambda a, c=client: jnp.asarray(np.asarray(a)[c]), examples)
    params, _, metrics = local_train(theta0, (), one, item_table, key=jax.random.key(int(client)),
                                  local=local)
    assert int(metrics.steps) == local.epochs * math.ceil(mask[client].sum() / 8)

    def loss(p, c=client):
      logits = local.task.score(p, (), jax.tree.map(lambda a: a[c], examples), item_table)
      return float(mean_loss(bce_per_row(logits, labels[c]), mask[c]))

    assert loss(params) < loss(theta0) - 1e-3, client


def test_rank_candidates_returns_only_unmasked_items(serving_examples, item_table, theta0,
                                                     local):
  top_t = 6
  mask = np.asarray(serving_examples.mask).copy()  # [N, 1, K]
  # Leave every third client with only 2 rankable candidates, fewer than T.
  for row in range(0, mask.shape[0], 3):
    real = np.flatnonzero(mask[row, 0])
    mask[row, 0, real[2:]] = 0
  trimmed = serving_examples._replace(mask=mask)
  rank = jax.vmap(lambda ex: rank_candidates(theta0, (), ex, item_table, task=local.task,
                                             top_t=top_t))
  items, scores = map(np.asarray, rank(trimmed))
  assert items.shape == scores.shape == (mask.shape[0], top_t)
  candidates, mask = _flat(serving_examples.items), _flat(mask)
  for row in range(mask.shape[0]):
    returned = items[row][items[row] >= 0]
    allowed = set(candidates[row][mask[row] > 0].tolist())
    assert set(returned.tolist()) <= allowed
    assert len(returned) == min(top_t, len(allowed)) == len(set(returned.tolist()))
    assert np.all(np.diff(scores[row][items[row] >= 0]) <= 0)
    assert np.all(np.isneginf(scores[row][items[row] < 0]))
  assert (items[::3, 2:] == -1).all()


# =============================================================================== aggregation
def _stacked_updates(rng, clients: int):
  return {"w": jnp.asarray(rng.normal(size=(clients, 3, 2)).astype(np.float32)),
          "b": jnp.asarray(rng.normal(size=(clients, 4)).astype(np.float32))}


def _reduce(updates, weights, mask, stage=None):
  stage = weighted_mean() if stage is None else stage
  params = jax.tree.map(lambda leaf: jnp.zeros(leaf.shape[1:], leaf.dtype), updates)
  reduced, _ = stage.aggregate(updates, stage.init(params), weights=jnp.asarray(weights),
                               mask=jnp.asarray(mask), steps=jnp.ones(len(mask), jnp.int32),
                               key=jax.random.key(0), params=params)
  return reduced


def test_weighted_mean_matches_numpy():
  rng = np.random.default_rng(2)
  updates = _stacked_updates(rng, 5)
  weights = rng.uniform(0.5, 3.0, 5).astype(np.float32)
  mask = np.ones(5, np.float32)
  reduced = _reduce(updates, weights, mask)
  for name, leaf in updates.items():
    want = np.tensordot(weights, np.asarray(leaf, np.float64), axes=1) / weights.sum()
    np.testing.assert_allclose(np.asarray(reduced[name]), want, rtol=1e-5, atol=1e-6)


def test_weighted_mean_ignores_masked_clients():
  rng = np.random.default_rng(3)
  updates = _stacked_updates(rng, 5)
  mask = np.array([1, 1, 0, 1, 0], np.float32)
  # Huge values in the masked rows would dominate the mean if they leaked in at all.
  updates = jax.tree.map(lambda leaf: leaf.at[np.flatnonzero(mask == 0)].set(1e6), updates)
  weights = np.array([1.0, 2.0, 5.0, 3.0, 7.0], np.float32)
  reduced = _reduce(updates, weights, mask)
  keep = mask > 0
  for name, leaf in updates.items():
    want = np.tensordot(weights[keep], np.asarray(leaf)[keep], axes=1) / weights[keep].sum()
    np.testing.assert_allclose(np.asarray(reduced[name]), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("weights,mask", [((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
                                          ((1.0, 2.0, 3.0), (0.0, 0.0, 0.0))])
def test_weighted_mean_of_nothing_is_zero(weights, mask):
  updates = _stacked_updates(np.random.default_rng(4), 3)
  reduced = _reduce(updates, np.array(weights, np.float32), np.array(mask, np.float32))
  for leaf in jax.tree.leaves(reduced):
    np.testing.assert_array_equal(np.asarray(leaf), 0.0)


@pytest.mark.parametrize("learning_rate", [1.0, 0.5])
def test_sgd_server_optimizer_adds_the_weighted_mean(learning_rate):
  rng = np.random.default_rng(5)
  deltas = _stacked_updates(rng, 4)
  params = jax.tree.map(lambda leaf: jnp.asarray(rng.normal(size=leaf.shape[1:]), jnp.float32),
                        deltas)
  weights, mask = np.array([1.0, 3.0, 2.0, 4.0], np.float32), np.ones(4, np.float32)
  fedavg = chain(weighted_mean(), server_optimizer(optax.sgd(learning_rate)))
  update, _ = fedavg.aggregate(deltas, fedavg.init(params), weights=jnp.asarray(weights),
                               mask=jnp.asarray(mask), steps=jnp.ones(len(mask), jnp.int32),
                               key=jax.random.key(0), params=params)
  new_params = optax.apply_updates(params, update)
  mean = _reduce(deltas, weights, mask)
  for name in params:
    want = np.asarray(params[name]) + learning_rate * np.asarray(mean[name])
    np.testing.assert_allclose(np.asarray(new_params[name]), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("server_learning_rate", [1.0, 3.0])
def test_make_aggregator_fedavg_is_the_scaled_weighted_mean(server_learning_rate):
  # With SGD at lr 1 the server step is plain FedAvg; a larger lr scales the mean update.
  rng = np.random.default_rng(6)
  deltas = _stacked_updates(rng, 3)
  params = jax.tree.map(lambda leaf: jnp.ones(leaf.shape[1:], jnp.float32), deltas)
  weights, mask = jnp.asarray([2.0, 1.0, 1.0]), jnp.ones(3)
  aggregator = make_aggregator(FederatedConfig(server_learning_rate=server_learning_rate))
  update, _ = aggregator.aggregate(deltas, aggregator.init(params), weights=weights, mask=mask,
                                   steps=jnp.ones(3, jnp.int32), key=jax.random.key(0),
                                   params=params)
  mean = _reduce(deltas, weights, mask)
  for name in params:
    np.testing.assert_allclose(np.asarray(update[name]),
                               server_learning_rate * np.asarray(mean[name]), atol=1e-5)
  with pytest.raises(ValueError, match="federated.aggregator='no_such_rule' is invalid"):
    make_aggregator(FederatedConfig(aggregator="no_such_rule"))


# =================================================================================== re-rank
NUM_RERANK_ITEMS = 10
# Distinct counts; by popularity: 1, 5, 3, 8, 0, 9, 4, 7, 2, 6.
POPULARITY = np.array([5, 9, 1, 7, 3, 8, 0, 2, 6, 4], np.float32)


def _context(genres=None, known=((-1,),), cold=(False,)) -> RerankContext:
  if genres is None:
    genres = np.random.default_rng(7).integers(0, 2, (NUM_RERANK_ITEMS, 4)).astype(np.float32)
  return RerankContext(genres=jnp.asarray(genres), popularity=jnp.asarray(POPULARITY),
                       known=jnp.asarray(np.array(known, np.int32)),
                       cold=jnp.asarray(np.array(cold, bool)),
                       year=jnp.zeros(NUM_RERANK_ITEMS), year_known=jnp.zeros(NUM_RERANK_ITEMS))


def _request(items, scores) -> TopTRequest:
  items = np.array(items, np.int32)
  scores = np.where(items >= 0, np.array(scores, np.float32), -np.inf).astype(np.float32)
  return TopTRequest(items=jnp.asarray(items), scores=jnp.asarray(scores))


def test_mmr_with_full_relevance_keeps_input_order():
  request = _request([[3, 7, 0, 9, 5, 1], [2, 8, 6, -1, -1, -1]],
                     [[2.0, 1.5, 0.3, 0.2, -1.0, -4.0], [9.0, 1.0, 0.5, 0, 0, 0]])
  context = _context(known=((-1,), (-1,)), cold=(False, False))
  result = mmr(1.0)(request, context)
  np.testing.assert_array_equal(np.asarray(result.items), np.asarray(request.items))
  scores = np.asarray(result.scores)
  assert np.all(np.diff(scores[0]) < 0) and np.all(np.isneginf(scores[1, 3:]))


def test_mmr_with_no_relevance_puts_a_dissimilar_item_second():
  genres = np.zeros((NUM_RERANK_ITEMS, 3), np.float32)
  genres[[0, 1, 2], 0] = 1.0  # three items of the same genre...
  genres[3, 1] = 1.0  # ...and one of another, ranked last by the client
  request = _request([[0, 1, 2, 3]], [[4.0, 3.0, 2.0, 1.0]])
  diverse = np.asarray(mmr(0.0)(request, _context(genres)).items)[0]
  assert diverse[0] == 0 and diverse[1] == 3
  assert sorted(diverse.tolist()) == [0, 1, 2, 3]
  np.testing.assert_array_equal(np.asarray(mmr(1.0)(request, _context(genres)).items)[0],
                                [0, 1, 2, 3])


def test_cold_start_fills_empty_slots_with_unseen_popular_items():
  request = _request([[3, 2, -1, -1, -1], [-1, -1, -1, -1, -1]],
                     [[2.0, 1.0, 0, 0, 0], [0, 0, 0, 0, 0]])
  # User 0 has already seen item 1, the most popular; user 1 has seen nothing.
  context = _context(known=((1, -1), (-1, -1)), cold=(False, False))
  result = cold_start(0.5)(request, context)
  items, scores = np.asarray(result.items), np.asarray(result.scores)
  np.testing.assert_array_equal(items[0], [3, 2, 5, 8, 0])
  np.testing.assert_array_equal(items[1], [1, 5, 3, 8, 0])
  assert np.isfinite(scores).all() and np.all(np.diff(scores, axis=1) < 0)


def _kendall_with_popularity(items: np.ndarray) -> float:
  """Share of concordant minus discordant pairs between list order and popularity order."""
  popularity = POPULARITY[items]
  total = 0.0
  for i in range(len(items)):
    for j in range(i + 1, len(items)):
      total += np.sign(popularity[i] - popularity[j])
  return total / (len(items) * (len(items) - 1) / 2)


def test_cold_start_moves_cold_users_toward_popularity():
  # The client's order is exactly anti-popular (popularity 0, 1, 2, 3, 4).
  items = [[6, 2, 7, 4, 9]] * 2
  request = _request(items, [[5.0, 4.0, 3.0, 2.0, 1.0]] * 2)
  context = _context(known=((-1,), (-1,)), cold=(True, False))
  tau = {}
  for weight in (0.0, 0.5, 1.0):
    result = np.asarray(cold_start(weight)(request, context).items)
    np.testing.assert_array_equal(result[1], items[1])  # warm users keep the client's order
    tau[weight] = _kendall_with_popularity(result[0])
  assert tau[0.0] == -1.0 and tau[1.0] == 1.0
  assert tau[0.0] < tau[0.5] < tau[1.0]


def test_reranker_composes_and_final_list_truncates():
  request = _request([[3, 2, -1, -1, -1]], [[2.0, 1.0, 0, 0, 0]])
  config = RunConfig().rerank
  final = np.asarray(final_list(make_reranker(config)(request, _context(known=((1,),))), 3))
  assert final.shape == (1, 3) and (final >= 0).all() and 1 not in final
  with pytest.raises(ValueError, match="unknown"):
    make_reranker(type(config)(strategies=("shuffle",)))


# =================================================================================== metrics
def _metrics(hits, num_relevant):
  return per_user_metrics(np.array(hits, bool), np.array(num_relevant))


def test_ndcg_with_relevant_items_at_ranks_one_and_three():
  got = _metrics([[1, 0, 1]], [2])
  dcg = 1.0 + 1.0 / math.log2(4)
  ideal = 1.0 + 1.0 / math.log2(3)
  assert got["ndcg@3"][0] == pytest.approx(dcg / ideal)
  assert got["recall@3"][0] == pytest.approx(1.0)
  assert got["precision@3"][0] == pytest.approx(2 / 3)
  assert got["mrr@3"][0] == pytest.approx(1.0)
  assert got["hit@3"][0] == pytest.approx(1.0)


def test_metrics_with_more_relevant_items_than_k():
  got = _metrics([[0, 1, 0]], [5])
  ideal = 1.0 + 1.0 / math.log2(3) + 1.0 / math.log2(4)  # capped at k relevant positions
  assert got["ndcg@3"][0] == pytest.approx((1.0 / math.log2(3)) / ideal)
  assert got["recall@3"][0] == pytest.approx(1 / 5)
  assert got["mrr@3"][0] == pytest.approx(0.5)
  assert got["precision@3"][0] == pytest.approx(1 / 3)


def test_users_without_relevant_items_are_nan_and_excluded():
  got = _metrics([[0, 0, 0], [0, 0, 0], [1, 0, 0]], [0, 1, 1])
  for name, values in got.items():
    assert math.isnan(values[0]) and values[1] == 0.0, name
    assert values[2] == pytest.approx(1 / 3 if name.startswith("precision") else 1.0), name
  lists = np.array([[4, 5, 6], [7, 8, 9]])
  truth = _interactions([(1, 8), (1, 2)])  # user 0 has nothing relevant: left out of the mean
  hits, num_relevant = hit_matrix(lists, truth, 10)
  np.testing.assert_array_equal(hits, [[False] * 3, [False, True, False]])
  np.testing.assert_array_equal(num_relevant, [0, 2])
  means = evaluate_lists(lists, truth, 10)
  assert means["recall@3"] == pytest.approx(0.5)
  assert means["hit@3"] == pytest.approx(1.0)
  assert means["coverage@3"] == pytest.approx(0.6)


# =================================================================================== service
def test_serve_period_counts_clicks_and_routes_logs():
  lists = np.array([[0, 1, 2], [3, -1, -1], [-1, -1, -1]])
  period = Period(
      interactions=_interactions([(0, 1), (0, 5), (1, 3), (1, 4), (2, 0)]),
      private=np.array([True, False, False, True, False]))
  log = serve_period(lists, period, num_items=6)
  # Clicks: (0, 1) and (1, 3). User 2's (2, 0) must not match its empty (-1) slots.
  assert log.stats.shown == 4 and log.stats.clicks == 2
  assert log.stats.click_rate == pytest.approx(0.5)
  assert log.stats.logged_public == 3 and log.stats.kept_private == 2
  public_log = _interactions([(0, 5), (1, 3), (2, 0)])
  np.testing.assert_array_equal(_keys(log.public, 6), _keys(public_log, 6))
  np.testing.assert_array_equal(_keys(log.private, 6), _keys(_interactions([(0, 1), (1, 4)]), 6))


# ====================================================================================== data
def _per_user(interactions: Interactions, num_users: int) -> np.ndarray:
  return np.bincount(interactions.user, minlength=num_users)


def test_split_shares_are_about_8_1_1(tables, dataset):
  n = tables.num_users
  total = np.bincount(tables.user_ids, minlength=n)
  test = _per_user(dataset.test.interactions, n)
  valid = _per_user(dataset.valid.interactions, n)
  train = total - test - valid
  # Per user, the test quota is round(0.1 n_u); the valid quota is rounded from the rest.
  assert np.all(np.abs(test - 0.1 * total) <= 0.5 + 1e-9)
  assert np.all(np.abs(valid - 0.1 * total) <= 1.0)
  assert test.sum() / total.sum() == pytest.approx(0.1, abs=0.01)
  assert valid.sum() / total.sum() == pytest.approx(0.1, abs=0.01)
  assert train.sum() / total.sum() == pytest.approx(0.8, abs=0.02)


def test_every_interaction_lands_in_exactly_one_place(tables, dataset):
  m = tables.num_items
  everything = np.sort(tables.user_ids.astype(np.int64) * m + tables.item_ids)
  assert np.unique(everything).size == everything.size  # (user, item) pairs are unique
  pieces = [dataset.public.history, dataset.private.history, dataset.valid.interactions,
            dataset.test.interactions]
  assert all(piece.size > 0 for piece in pieces)
  np.testing.assert_array_equal(np.sort(np.concatenate([_keys(p, m) for p in pieces])),
                                everything)


def test_private_share_is_as_configured(tables, dataset):
  n = tables.num_users
  total = np.bincount(tables.user_ids, minlength=n)
  private = (_per_user(dataset.private.history, n)
             + np.bincount(dataset.valid.interactions.user[dataset.valid.private], minlength=n)
             + np.bincount(dataset.test.interactions.user[dataset.test.private], minlength=n))
  assert np.all(np.abs(private - 0.2 * total) <= 0.5 + 1e-9)
  assert private.sum() / total.sum() == pytest.approx(0.2, abs=0.01)


@pytest.mark.parametrize("side", ["public", "private"])
def test_each_train_interaction_labels_exactly_one_fold(dataset, side):
  data = getattr(dataset, side)
  m, folds = dataset.public.num_items, dataset.public.num_folds
  assert len(data.fold) == data.history.size
  assert set(np.unique(data.fold).tolist()) == set(range(folds))
  history = np.sort(_keys(data.history, m))
  labels = [_keys(data.labels(f), m) for f in range(folds)]
  np.testing.assert_array_equal(np.sort(np.concatenate(labels)), history)
  for fold in range(folds):
    # Recall for fold f trains on the rest: never on an interaction that labels fold f.
    context = _keys(data.context(fold), m)
    assert context.size + len(labels[fold]) == len(history)
    assert not np.isin(context, labels[fold]).any()


def test_folds_are_balanced_per_user(tables, dataset):
  n, folds = tables.num_users, dataset.public.num_folds
  total = np.zeros((n, folds), np.int64)
  for data in (dataset.public, dataset.private):
    per_fold = np.zeros((n, folds), np.int64)
    np.add.at(per_fold, (data.history.user, data.fold), 1)
    # Each side deals a user's train rows round-robin: fold sizes differ by at most one.
    assert np.all(per_fold.max(1) - per_fold.min(1) <= 1)
    total += per_fold
  # Dealt apart (the server never sees private rows), the two sides differ by at most two.
  assert np.all(total.max(1) - total.min(1) <= 2)


def test_public_folds_ignore_the_private_rows(tables):
  """The server deals its folds from the public rows alone: private rows, their number included,
  do not move a public row's fold."""
  from pprsf_jax.data.dataset import draw_partition  # pylint: disable=import-outside-toplevel
  config = DataConfig(source="synthetic")
  partition = draw_partition(tables, config, 0)
  fewer = partition.private & (np.random.default_rng(3).random(partition.private.size) < 0.5)
  dropped = partition.private & ~fewer  # private rows that vanish from the tables
  keep = ~dropped
  thinner = dataclasses.replace(tables, user_ids=tables.user_ids[keep],
                                item_ids=tables.item_ids[keep], ratings=tables.ratings[keep],
                                timestamps=tables.timestamps[keep])
  full = build_dataset(tables, config, 0, partition)
  thin = build_dataset(thinner, config, 0, type(partition)(*(mask[keep] for mask in partition)))
  assert thin.private.history.size < full.private.history.size
  np.testing.assert_array_equal(thin.public.fold, full.public.fold)
  np.testing.assert_array_equal(thin.public.history.item, full.public.history.item)


def test_interactions_replace_keeps_the_other_field():
  # Regression: Interactions once overrode __len__, which NamedTuple._make uses to count fields.
  interactions = _interactions([(0, 1), (1, 2), (2, 3)])
  moved = interactions._replace(item=np.array([4, 5, 6], np.int32))
  np.testing.assert_array_equal(moved.user, interactions.user)


def test_same_seed_same_split_other_seed_other_split(tables, dataset, assert_trees_identical):
  config = DataConfig(source="synthetic")
  again = build_dataset(tables, config, 0)
  for field in ("public", "private", "valid", "test"):
    assert_trees_identical(getattr(dataset, field), getattr(again, field))
  other = build_dataset(tables, config, 1)
  assert not np.array_equal(_keys(dataset.test.interactions, tables.num_items),
                            _keys(other.test.interactions, tables.num_items))


# ==================================================================================== config
def test_apply_overrides_parses_each_type():
  base = RunConfig()
  config = apply_overrides(base, [
      "federated.rounds=3", "ranking.learning_rate=0.05", "ranking.hidden_sizes=(8, 4)",
      "rerank.strategies=mmr", "data.synthetic.num_users=80", "data.source=synthetic",
      "recall.l2=1e-3", "seed=7"])
  assert config.federated.rounds == 3 and isinstance(config.federated.rounds, int)
  assert config.ranking.learning_rate == 0.05 and isinstance(config.ranking.learning_rate, float)
  assert config.ranking.hidden_sizes == (8, 4)
  assert config.rerank.strategies == ("mmr",)
  assert config.data.synthetic.num_users == 80 and config.data.source == "synthetic"
  assert config.recall.l2 == pytest.approx(1e-3) and config.seed == 7
  assert apply_overrides(base, ["rerank.strategies=[cold_start, mmr]"]).rerank.strategies == (
      "cold_start", "mmr")
  assert base == RunConfig()  # the input config is left as it was


@pytest.mark.parametrize("override,field", [
    ("federated.nope=1", "nope"),
    ("nosection.rounds=1", "nosection"),
    ("federated.rounds=abc", "federated.rounds"),
    ("federated.rounds=2.5", "federated.rounds"),
    ("federated.rounds=0", "federated.rounds"),
    ("ranking.hidden_sizes=(8,x)", "ranking.hidden_sizes"),
    ("ranking.learning_rate=-1", "ranking.learning_rate"),
    ("data.synthetic.num_items=5", "data.synthetic.num_items"),
    ("federated.weighting=median", "federated.weighting"),
    ("ranking.top_t=500", "ranking.top_t"),
    ("federated=3", "federated"),
    ("federated.rounds.deeper=3", "federated.rounds.deeper"),
    ("federated.rounds", "federated.rounds"),
])
def test_apply_overrides_rejects_bad_input_naming_the_field(override, field):
  with pytest.raises(ConfigError, match=re.escape(field)):
    apply_overrides(RunConfig(), [override])
