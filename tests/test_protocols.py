"""Evaluation protocols: the leave-one-out split by time and the sampled-negatives candidates."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from pprsf_jax import pipeline
from pprsf_jax.config import DataConfig, RecallConfig, RunConfig, SyntheticConfig, apply_overrides
from pprsf_jax.data.dataset import build_dataset
from pprsf_jax.data.synthetic import generate_synthetic
from pprsf_jax.metrics.sampled import sample_candidates
from pprsf_jax.recall import RecallParams, score
from pprsf_jax.recall.retrieve import rank_given
from pprsf_jax.rerank import evaluation_grid
from pprsf_jax.types import Interactions

SYNTHETIC = SyntheticConfig(num_users=30, num_items=60, interactions_per_user=12)


def _all(data) -> Interactions:
  return (data.public.history + data.private.history + data.valid.interactions
          + data.test.interactions)


def test_leave_one_out_holds_out_each_users_latest_two_interactions():
  tables = generate_synthetic(SYNTHETIC, 0)
  data = build_dataset(tables, DataConfig(source="synthetic", split="leave_one_out"), 0)
  for user in range(tables.num_users):
    rows = np.flatnonzero(tables.user_ids == user)
    # Latest by time; among equal times the later row of the file.
    order = rows[np.lexsort((rows, tables.timestamps[rows]))]
    test_items = data.test.interactions.item[data.test.interactions.user == user]
    valid_items = data.valid.interactions.item[data.valid.interactions.user == user]
    assert test_items.tolist() == [tables.item_ids[order[-1]]]
    assert valid_items.tolist() == [tables.item_ids[order[-2]]]
  # Everything else trains, once.
  assert _all(data).size == tables.num_ratings


def test_leave_one_out_with_tied_times_and_short_histories():
  tables = generate_synthetic(SYNTHETIC, 1)
  user = tables.user_ids
  tied = dataclasses.replace(tables, timestamps=np.zeros_like(tables.timestamps))
  data = build_dataset(tied, DataConfig(source="synthetic", split="leave_one_out"), 0)
  for u in range(3):
    rows = np.flatnonzero(user == u)
    assert data.test.interactions.item[data.test.interactions.user == u].tolist() == [
        tables.item_ids[rows[-1]]]


def test_sampled_candidates_are_the_held_out_item_and_unseen_negatives():
  tables = generate_synthetic(SYNTHETIC, 0)
  data = build_dataset(tables, DataConfig(source="synthetic", split="leave_one_out"), 0)
  everything = _all(data)
  lists = sample_candidates(data.test.interactions, everything, 30, 60, 20, seed=3, period=2)
  assert lists.shape == (30, 21)
  for user in range(30):
    held = data.test.interactions.item[data.test.interactions.user == user]
    assert lists[user, 0] == held[0]
    negatives = lists[user, 1:]
    assert len(set(negatives.tolist())) == 20
    assert not everything.contains(np.full(20, user), negatives, 60).any()
  again = sample_candidates(data.test.interactions, everything, 30, 60, 20, seed=3, period=2)
  np.testing.assert_array_equal(lists, again)
  other = sample_candidates(data.test.interactions, everything, 30, 60, 20, seed=3, period=1)
  assert not np.array_equal(lists, other)


def test_sampled_candidates_refuse_what_cannot_be_sampled():
  held = Interactions(np.array([0, 0], np.int32), np.array([1, 2], np.int32))
  with pytest.raises(ValueError, match="one held-out item per user"):
    sample_candidates(held, Interactions.empty(), 2, 10, 3, seed=0)
  held = Interactions(np.array([0], np.int32), np.array([1], np.int32))
  seen = Interactions(np.zeros(8, np.int32), np.arange(2, 10, dtype=np.int32))
  with pytest.raises(ValueError, match="only 1 unseen"):
    sample_candidates(held, seen, 1, 10, 3, seed=0)


def test_rank_given_orders_each_users_items_by_score():
  rng = np.random.default_rng(0)
  params = RecallParams(user=jnp.asarray(rng.normal(size=(7, 4)), jnp.float32),
                        item=jnp.asarray(rng.normal(size=(12, 4)), jnp.float32),
                        item_bias=jnp.asarray(rng.normal(size=12), jnp.float32))
  items = np.stack([rng.permutation(12)[:5] for _ in range(7)]).astype(np.int32)
  items[2, 3] = -1
  got = rank_given(params, items, user_chunk=3)
  for user in range(7):
    real = items[user][items[user] >= 0]
    want = np.asarray(score(params, jnp.asarray([user]), jnp.asarray(real)))[0]
    order = np.argsort(-want, kind="stable")
    assert got.items[user][: real.size].tolist() == real[order].tolist()
    np.testing.assert_allclose(got.scores[user][: real.size], want[order], rtol=1e-5)
  assert got.items[2, -1] == -1


def test_pipeline_under_the_sampled_protocol_scores_one_held_out_item_per_user():
  config = apply_overrides(RunConfig(
      data=DataConfig(source="synthetic", synthetic=SYNTHETIC),
      recall=RecallConfig(epochs=3, num_candidates=24, user_chunk=16, item_chunk=16)),
      ["data.split=leave_one_out", "eval.sampled_negatives=30", "federated.rounds=3",
       "federated.clients_per_round=10", "ranking.top_t=12", "baselines.central_epochs=1",
       "baselines.local_only_epochs=1", "baselines.recall_models=(popularity, item_knn)"])
  results = pipeline.run(config, progress=False)
  # The re-rank grid re-uses the same requests: its "none" is P_FL, its configured one PPRSF.
  settings = results["rerank_settings"]
  assert settings["none"] == results["test"]["federated (P_FL)"]
  assert settings["configured (cold_start + mmr)"] == results["test"]["pprsf (P_FL + re-rank)"]
  assert set(settings) == set(evaluation_grid(config.rerank))
  for method, metrics in results["test"].items():
    # One held-out item per user: recall@10 is HR@10, and precision is HR / 10.
    assert metrics["recall@10"] == pytest.approx(metrics["hit@10"]), method
    assert metrics["precision@10"] == pytest.approx(metrics["hit@10"] / 10), method
