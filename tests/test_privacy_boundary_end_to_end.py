"""The privacy boundary, end to end: the real runs, with private data rewritten before the split.

Each run records everything the server receives or computes (`pprsf_jax.privacy.server_view`):
its inputs (public log, the folds it dealt, the registered devices), every candidate list it
sends, what every upload declares beside its update, which candidates every request names, the
re-rank context and the public logs. The private rows of the raw tables are rewritten — moved to
other users (so every user's private count changes), item ids shifted and permuted, ratings
NaN, demographics replaced — under the same nature's draw (periods, private-row mask, sign-up
days), and the run repeated: every record must be bit-identical. Only the model updates (which
secure aggregation and DP protect) and the order of a request (the client's private ranking,
hidden among decoys) may change. The reverse check: rewriting public rows changes the records.

Runs: `pipeline.run` (recall, folds, candidates, federated rounds, serving with D = K - T
decoys, re-rank, service logs, both periods), the online loop (`online.run_online`, two days) and
the deployment's coordinator with devices built from their own rows.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from pprsf_jax import online, pipeline
from pprsf_jax.aggregation import init_server_state, make_algorithm
from pprsf_jax.config import (BaselineConfig, DataConfig, EvalConfig, FederatedConfig,
                              OnlineConfig, PrivacyConfig, RankingConfig, RecallConfig, RunConfig,
                              SyntheticConfig)
from pprsf_jax.data.dataset import build_dataset, draw_partition
from pprsf_jax.data.synthetic import generate_synthetic
from pprsf_jax.data.timeline import build_timeline
from pprsf_jax.deploy import coordinator, device, local_data
from pprsf_jax.privacy.server_view import PRIVATE_DEPENDENT, RECORDS, ServerView, members
from pprsf_jax.ranking import make_item_table
from pprsf_jax.types import TopTRequest

K, T = 24, 8
CONFIG = RunConfig(
    name="boundary",
    data=DataConfig(source="synthetic", private_share=0.3,
                    synthetic=SyntheticConfig(num_users=60, num_items=50,
                                              interactions_per_user=15)),
    recall=RecallConfig(epochs=2, num_candidates=K, user_chunk=32, item_chunk=32),
    # Listwise, one list a step (as the ML-100K preset): a step count would reveal how many of a
    # client's lists hold a positive, private ones included.
    ranking=RankingConfig(top_t=T, loss="softmax", lists_per_step=1),
    federated=FederatedConfig(rounds=2, clients_per_round=16),
    privacy=PrivacyConfig(request_decoys=K - T),  # every candidate is named in every request
    baselines=BaselineConfig(central_epochs=1, local_only_epochs=1, finetune_epochs=1,
                             recall_models=("popularity",)),
    eval=EvalConfig(every_rounds=0, top_k=5),
    online=OnlineConfig(days=2, rounds_per_day=2),
    checkpoint_every=0,
)


def rewrite_private_rows(tables, private: np.ndarray, seed: int = 7):
  """The same tables with every private row rewritten: moved to a random user, its item shifted
  and the items permuted among private rows, its rating NaN; every user's attributes replaced.
  Public rows are left exactly as they are."""
  rng = np.random.default_rng(seed)
  rows = np.flatnonzero(private)
  user, item = tables.user_ids.copy(), tables.item_ids.copy()
  user[rows] = rng.integers(0, tables.num_users, rows.size)
  item[rows] = rng.permutation((item[rows] + rng.integers(1, tables.num_items, rows.size))
                               % tables.num_items)
  ratings = tables.ratings.copy()
  ratings[rows] = np.nan
  return dataclasses.replace(
      tables, user_ids=user.astype(tables.user_ids.dtype), item_ids=item.astype(tables.item_ids.dtype),
      ratings=ratings, age=(99 - tables.age).astype(tables.age.dtype),
      gender=(1 - tables.gender).astype(tables.gender.dtype),
      occupation=((tables.occupation + 1) % len(tables.occupation_vocab)).astype(
          tables.occupation.dtype),
      zip_code=tuple("0" + z[::-1] for z in tables.zip_code))


def rewrite_public_rows(tables, private: np.ndarray, seed: int = 8):
  """The reverse: every public row's item shifted; private rows left as they are."""
  rng = np.random.default_rng(seed)
  rows = np.flatnonzero(~private)
  item = tables.item_ids.copy()
  item[rows] = (item[rows] + rng.integers(1, tables.num_items, rows.size)) % tables.num_items
  return dataclasses.replace(tables, item_ids=item.astype(tables.item_ids.dtype))


def assert_same_view(clean: ServerView, other: ServerView, what: str) -> None:
  assert clean.records.keys() == other.records.keys(), what
  for name, values in clean.records.items():
    assert len(values) == len(other.records[name]), f"{what}: {name}"
    for index, (a, b) in enumerate(zip(values, other.records[name])):
      if name in PRIVATE_DEPENDENT:
        a, b = members(a), members(b)
      for leaf_a, leaf_b in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(leaf_a, leaf_b, err_msg=f"{what}: {name} #{index}")


def differs(clean: ServerView, other: ServerView, name: str) -> bool:
  pairs = zip(clean.records[name], other.records[name])
  return any(not np.array_equal(x, y)
             for a, b in pairs for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# ---------------------------------------------------------------------------- the batch run
@pytest.fixture(scope="module")
def tables():
  return generate_synthetic(CONFIG.data.synthetic, CONFIG.seed)


@pytest.fixture(scope="module")
def partition(tables):
  return draw_partition(tables, CONFIG.data, CONFIG.seed)


def run_pipeline(tables, partition):
  view = ServerView()
  results = pipeline.run(CONFIG, progress=False, tables=tables, partition=partition,
                         server_view=view)
  return view, results


@pytest.fixture(scope="module")
def clean_run(tables, partition):
  return run_pipeline(tables, partition)


def test_the_server_view_of_a_run_ignores_private_data(tables, partition, clean_run):
  clean, clean_results = clean_run
  poisoned, poisoned_results = run_pipeline(rewrite_private_rows(tables, partition.private),
                                            partition)
  # Non-vacuous: every kind of record was made, as often as the run has stages.
  assert set(clean.records) == set(RECORDS)
  assert len(clean.records["upload.declared"]) == CONFIG.federated.rounds
  assert len(clean.records["candidates.training"]) == CONFIG.data.label_folds
  assert len(clean.records["request.items"]) == 2  # validation and test periods
  assert_same_view(clean, poisoned, "private rows rewritten")
  # Every request names every candidate the server sent (D = K - T).
  for request, candidates in zip(clean.records["request.items"],
                                 clean.records["candidates.serving"]):
    np.testing.assert_array_equal(members(request), np.sort(candidates.items, axis=1))
  # The rewrite did reach the clients: their ranking (the request order) and training changed.
  assert differs(clean, poisoned, "request.items")
  assert clean_results["federated"]["losses"] != poisoned_results["federated"]["losses"]


def test_rewriting_public_rows_changes_the_server_view(tables, partition, clean_run):
  clean, _ = clean_run
  changed, _ = run_pipeline(rewrite_public_rows(tables, partition.private), partition)
  for name in ("recall.history", "candidates.training", "candidates.serving", "rerank.context",
               "service.public_log"):
    assert differs(clean, changed, name), name
  assert any(not np.array_equal(members(a), members(b))
             for a, b in zip(clean.records["request.items"], changed.records["request.items"]))


# ---------------------------------------------------------------------------- the online loop
def run_online(tables, timeline):
  view = ServerView()
  online.run_online(CONFIG, progress=False, timeline=timeline, server_view=view)
  return view


def test_the_server_view_of_the_online_loop_ignores_private_data(tables):
  timeline = build_timeline(tables, CONFIG.data, CONFIG.online, CONFIG.seed)
  poisoned_timeline = build_timeline(rewrite_private_rows(tables, timeline.private), CONFIG.data,
                                     CONFIG.online, CONFIG.seed, private=timeline.private,
                                     signup_day=timeline.signup_day)
  clean, poisoned = run_online(tables, timeline), run_online(tables, poisoned_timeline)
  assert len(clean.records["recall.devices"]) == CONFIG.online.days
  assert len(clean.records["upload.declared"]) == CONFIG.online.days * 2
  # Without decoys a request is the client's Top-T: its membership is the private ranking
  # itself, so only the rest is compared here.
  del clean.records["request.items"], poisoned.records["request.items"]
  assert_same_view(clean, poisoned, "online loop, private rows rewritten")


# ---------------------------------------------------------------------------- the deployment
def deployed_view(tables, partition) -> tuple[ServerView, list]:
  """Round 0 of a deployment: the coordinator on the public part, each cohort device training
  on its own rows; the server's records and the replies as sent."""
  config = dataclasses.replace(CONFIG, privacy=PrivacyConfig())  # decoys are simulated only
  data = build_dataset(tables, config.data, config.seed, partition)
  view = ServerView()
  setup = coordinator.prepare(config, data.public, server_view=view)
  devices = [local_data.own_part(data, user) for user in range(data.public.num_users)]
  server = init_server_state(setup.algorithm, coordinator.initial_theta(
      setup, devices[0][0].user_features.size))
  algorithm = make_algorithm(config.federated, data.public.num_users)
  replies, received = [], []
  for user in map(int, setup.schedule[0]):
    own, catalogue = devices[user]
    examples = device.device_examples(own, coordinator.training_lists(setup, user),
                                      catalogue.genres)
    item_table = make_item_table(catalogue)
    state = device.initial_state(
        server.params, local=setup.local, algorithm=algorithm,
        dims=pipeline.model_dims(own.user_features.shape[0], item_table),
        seed_key=pipeline.stream_key(config.seed, "personal"), client_id=user)
    reply, _ = device.train_on_device(server.params, examples, item_table,
                                      seed_key=pipeline.stream_key(config.seed, "clients"),
                                      round_index=0, client_id=user, local=setup.local,
                                      algorithm=algorithm, state=state)
    replies.append(reply)
    received.append(coordinator.Received(user, reply.delta, reply.num_bytes, None))
  outcome = coordinator.aggregate(setup, server, received, 0, server_view=view)
  candidates = coordinator.serving_candidates(setup, server_view=view)
  requests = [device.rank(coordinator.serving_list(setup, candidates, user), own,
                          outcome.server.params, item_table=setup.item_table,
                          genres=catalogue.genres, local=setup.local, top_t=config.ranking.top_t)
              for user, (own, catalogue) in enumerate(devices)]
  coordinator.rerank(setup, TopTRequest(items=np.stack([r.items for r in requests]),
                                        scores=np.stack([r.scores for r in requests])),
                     server_view=view)
  return view, replies


def test_what_deployed_devices_send_and_the_coordinator_computes_ignores_private_data(
    tables, partition):
  clean, clean_replies = deployed_view(tables, partition)
  poisoned, poisoned_replies = deployed_view(rewrite_private_rows(tables, partition.private),
                                             partition)
  # A reply is the update and its size, nothing else; everything but the update is identical.
  for a, b in zip(clean_replies, poisoned_replies, strict=True):
    assert a._fields == ("delta", "num_bytes") and a.num_bytes == b.num_bytes
    assert (a.delta is None) == (b.delta is None)
  assert any(differs_tree(a.delta, b.delta) for a, b in zip(clean_replies, poisoned_replies))
  # Plain Top-T requests (no decoys in deployments) are the private ranking: order them out.
  del clean.records["request.items"], poisoned.records["request.items"]
  assert_same_view(clean, poisoned, "deployment, private rows rewritten")


def differs_tree(a, b) -> bool:
  return any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
