"""The recall models (content, LightGCN, two-tower), approximate retrieval and the registry, on
small inputs with known answers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pprsf_jax import pipeline
from pprsf_jax.config import (RECALL_MODEL_NAMES, ConfigError, DataConfig, RecallConfig,
                              SyntheticConfig)
from pprsf_jax.data.dataset import build_dataset
from pprsf_jax.data.synthetic import generate_synthetic
from pprsf_jax.metrics import evaluate_lists
from pprsf_jax.recall import (RECALL_MODELS, RecallParams, build_graph, item_counts, propagate,
                              retrieve, train_bpr, train_content, train_lightgcn,
                              train_popularity, train_two_tower)
from pprsf_jax.recall.item_knn import item_neighbors, train_item_knn
from pprsf_jax.recall.lightgcn import Embeddings
from pprsf_jax.types import Interactions, ItemCatalogue, PublicData


def _interactions(pairs) -> Interactions:
  pairs = np.asarray(pairs, np.int32).reshape(-1, 2)
  return Interactions(pairs[:, 0].copy(), pairs[:, 1].copy())


def _catalogue(genre_of_item, num_genres: int) -> ItemCatalogue:
  """One genre per item, release year unknown (so genres alone describe an item)."""
  genre_of_item = np.asarray(genre_of_item)
  return ItemCatalogue(genres=np.eye(num_genres, dtype=np.float32)[genre_of_item],
                       year=np.zeros(genre_of_item.size, np.float32),
                       year_known=np.zeros(genre_of_item.size, np.float32))


def _public(log: Interactions, num_users: int, catalogue: ItemCatalogue) -> PublicData:
  return PublicData(num_users=num_users, num_items=catalogue.genres.shape[0],
                    catalogue=catalogue, history=log, fold=np.zeros(log.size, np.int32),
                    num_folds=2, devices=np.ones(num_users, bool))


# =================================================================================== content
def test_content_recalls_the_history_genre_first_including_never_seen_items():
  # Items 0-3 are genre A, 4-9 genre B, 10-15 genre C. B and C are far more popular, and
  # item 2 (genre A) has no interaction at all.
  genre = np.array([0] * 4 + [1] * 6 + [2] * 6)
  others = [(u, i) for u in range(2, 9) for i in range(4, 16)]  # users 2-8: every B and C item
  log = _interactions([(0, 0), (0, 1), (1, 3)] + others)  # user 0: genre A only; user 9: none
  assert item_counts(log, 16)[2] == 0
  params = train_content(log, _catalogue(genre, 3), 10, 16, popularity_weight=0.1)
  got = retrieve(params, 4, log)
  # The two genre-A items user 0 has not seen come first (the one with an interaction breaks the
  # tie by popularity), then the popular rest.
  np.testing.assert_array_equal(got.items[0, :2], [3, 2])
  assert set(genre[got.items[0, 2:]]) <= {1, 2}
  # A user without public history gets popularity recall: the (equally) popular B and C items.
  assert set(got.items[9]) <= set(range(4, 16))


def test_content_item_vectors_are_unit_and_rare_genres_weigh_more():
  # Item 0 has a common genre (4 items) and a rare one (2 items); item 1 only the common one,
  # item 2 only the rare one. Unweighted, both would be equally like item 0 (cosine 1 / sqrt 2).
  genres = np.array([[1, 1], [1, 0], [0, 1], [1, 0], [1, 0]], np.float32)
  catalogue = ItemCatalogue(genres, np.zeros(5, np.float32), np.zeros(5, np.float32))
  params = train_content(_interactions([(0, 0)]), catalogue, 1, 5, popularity_weight=0.0)
  vectors = np.asarray(params.item)
  np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-6)
  similarity = vectors @ vectors.T
  assert similarity[0, 2] > 1 / np.sqrt(2) + 0.05 > similarity[0, 1] + 0.1
  # The user's vector is its history's mean, and the bias is zero at weight 0.
  np.testing.assert_allclose(params.user[0], vectors[0])
  assert not np.asarray(params.item_bias).any()


# ================================================================================== lightgcn
def _dense_lightgcn(pairs: np.ndarray, embeddings: np.ndarray, num_users: int,
                    num_layers: int) -> np.ndarray:
  """Mean over l = 0..L of A_hat^l E with A_hat the symmetric-normalised (N + M)^2 adjacency."""
  size = embeddings.shape[0]
  adjacency = np.zeros((size, size))
  adjacency[pairs[:, 0], num_users + pairs[:, 1]] = 1.0
  adjacency[num_users + pairs[:, 1], pairs[:, 0]] = 1.0
  degree = adjacency.sum(1)
  scale = np.where(degree > 0, 1.0 / np.sqrt(np.maximum(degree, 1.0)), 0.0)
  normalised = scale[:, None] * adjacency * scale[None, :]
  layers = [embeddings.astype(np.float64)]
  for _ in range(num_layers):
    layers.append(normalised @ layers[-1])
  return np.mean(layers, axis=0)


@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_lightgcn_propagation_matches_dense_reference(num_layers):
  rng = np.random.default_rng(num_layers)
  num_users, num_items, dim = 6, 8, 3
  pairs = np.array([(u, i) for u in range(5) for i in range(7) if rng.random() < 0.45])
  # A repeated interaction is one edge; user 5 and item 7 have none (isolated nodes).
  log = _interactions(np.concatenate([pairs, pairs[:2]]))
  start = rng.normal(size=(num_users + num_items, dim)).astype(np.float32)
  got = propagate(Embeddings(jnp.asarray(start[:num_users]), jnp.asarray(start[num_users:])),
                  build_graph(log, num_users, num_items), num_layers=num_layers)
  want = _dense_lightgcn(pairs, start, num_users, num_layers)
  np.testing.assert_allclose(np.concatenate([got.user, got.item]), want, rtol=1e-5, atol=1e-6)


def test_lightgcn_propagation_never_builds_a_user_by_item_array():
  num_users, num_items, dim = 53, 71, 4
  rng = np.random.default_rng(0)
  log = _interactions(np.stack([rng.integers(0, num_users, 150),
                                rng.integers(0, num_items, 150)], 1))
  graph = build_graph(log, num_users, num_items)
  embeddings = Embeddings(jnp.zeros((num_users, dim)), jnp.zeros((num_items, dim)))
  jaxpr = jax.make_jaxpr(lambda e: propagate(e, graph, num_layers=2))(embeddings)
  largest = max(int(np.prod(v.aval.shape)) for eqn in jaxpr.eqns for v in eqn.outvars)
  assert largest < num_users * num_items  # [E, D] at most (here 150 * 4 < 53 * 71)


# ============================================================= learned models on planted data
PLANTED = SyntheticConfig(num_users=200, num_items=100, interactions_per_user=20)


@pytest.fixture(scope="module")
def planted():
  data = build_dataset(generate_synthetic(PLANTED, 0),
                       DataConfig(source="synthetic", synthetic=PLANTED), 0)
  popularity = train_popularity(data.public.history, data.public.num_users,
                                data.public.num_items)
  return data, _test_recall(data, popularity)


def _test_recall(data, params: RecallParams) -> float:
  public = data.public
  known = public.history + data.private.history + data.valid.interactions
  lists = retrieve(params, 10, known).items
  return evaluate_lists(lists, data.test.interactions, public.num_items)["recall@10"]


@pytest.mark.parametrize("model", ["lightgcn", "two_tower"])
def test_learned_models_beat_popularity_on_held_out_interactions(planted, model):
  data, popularity_recall = planted
  config = RecallConfig(model=model, embedding_dim=32, lightgcn_batch_size=256,
                        two_tower_batch_size=128, lightgcn_epochs=30, two_tower_epochs=30)
  recall = pipeline.fit_recall(data.public.history, data.public, config, jax.random.key(0))
  # Measured with this seed: popularity 0.27, LightGCN 0.54, two-tower 0.50.
  assert _test_recall(data, recall.params) > popularity_recall + 0.1


def test_two_tower_scores_a_never_seen_item_by_its_features():
  # Users 0-19 like genre A (items 0-11), users 20-39 genre B (items 12-23). Items 11 (A) and
  # 23 (B) have no interaction: only their features can place them.
  rng = np.random.default_rng(0)
  pairs = []
  for user in range(40):
    liked = np.arange(11) if user < 20 else np.arange(12, 23)
    pairs += [(user, item) for item in rng.choice(liked, 6, replace=False)]
  log = _interactions(pairs)
  catalogue = _catalogue(np.repeat([0, 1], 12), 2)
  config = RecallConfig(model="two_tower", embedding_dim=16, two_tower_hidden=16,
                        two_tower_epochs=40, two_tower_batch_size=64)
  params, losses = train_two_tower(log, catalogue, 40, 24, config, key=jax.random.key(1))
  assert losses[-1] < losses[0]
  vectors = np.asarray(params.item)
  np.testing.assert_allclose(np.linalg.norm(vectors[[11, 23]], axis=1), 1.0, rtol=1e-5)
  users = np.asarray(params.user)
  margin = users @ (vectors[11] - vectors[23])  # > 0: prefers the new A item to the new B one
  assert np.all(margin[:20] > 0.1) and np.all(margin[20:] < -0.1)
  # Each user's top 6 holds its genre's new item and (nearly) only items of its genre: 6 of
  # its genre are unseen by it (measured: at least 5 of 6 for every user, over three keys).
  got = retrieve(params, 6, log).items
  for user in range(40):
    genre = 0 if user < 20 else 1
    assert 12 * genre + 11 in got[user] and np.sum(got[user] // 12 == genre) >= 5, user


# ================================================================== registry, config, determinism
def _direct(name: str, log: Interactions, public: PublicData, config: RecallConfig,
            key: jax.Array) -> RecallParams:
  """Each model's own trainer, called without the registry."""
  n, m = public.num_users, public.num_items
  if name == "popularity":
    return train_popularity(log, n, m)
  if name == "item_knn":
    return train_item_knn(log, item_neighbors(log, n, m, num_neighbors=config.num_neighbors), n, m)
  if name == "content":
    return train_content(log, public.catalogue, n, m,
                         popularity_weight=config.content_popularity_weight)
  if name == "bpr":
    return train_bpr(log, n, m, config, key=key)[0]
  if name == "lightgcn":
    return train_lightgcn(log, n, m, config, key=key)[0]
  return train_two_tower(log, public.catalogue, n, m, config, key=key)[0]


SMALL = dict(epochs=2, batch_size=64, lightgcn_epochs=2, lightgcn_batch_size=64,
             two_tower_epochs=2, two_tower_batch_size=64, embedding_dim=8, two_tower_hidden=8)


@pytest.mark.parametrize("name", sorted(RECALL_MODELS))
def test_each_model_is_selected_by_config_and_deterministic(dataset, assert_trees_identical,
                                                            name):
  public = dataset.public
  config = RecallConfig(model=name, **SMALL)
  log = public.context(0)  # a fold's context: not every user and item appears in it
  recall = pipeline.fit_recall(log, public, config, jax.random.key(5))
  params = recall.params
  assert params.user.shape[0] == public.num_users and params.item.shape[0] == public.num_items
  assert params.item_bias.shape == (public.num_items,)
  assert all(np.isfinite(np.asarray(leaf)).all() for leaf in params)
  # The registry dispatched to this model, and the same key gives the same parameters.
  assert_trees_identical(params, _direct(name, log, public, config, jax.random.key(5)))
  if name in ("bpr", "lightgcn", "two_tower"):
    other = pipeline.fit_recall(log, public, config, jax.random.key(6)).params
    assert not np.array_equal(np.asarray(other.item), np.asarray(params.item))


def test_cold_users_get_the_average_user_in_lightgcn(dataset):
  public = dataset.public
  log = _interactions(np.stack([public.history.user, public.history.item], 1)[
      public.history.user != 0])  # user 0 has no interaction
  params, _ = train_lightgcn(log, public.num_users, public.num_items,
                             RecallConfig(**SMALL), key=jax.random.key(0))
  users = np.asarray(params.user)
  warm = np.bincount(log.user, minlength=public.num_users) > 0
  assert not warm[0]
  np.testing.assert_allclose(users[~warm], np.broadcast_to(users[warm].mean(0), users[~warm].shape),
                             rtol=1e-5, atol=1e-6)


def test_registry_names_are_exactly_the_config_choices():
  for name in RECALL_MODELS:
    RecallConfig(model=name)
  with pytest.raises(ConfigError) as caught:
    RecallConfig(model="svd")
  for name in RECALL_MODELS:
    assert f'"{name}"' in str(caught.value)


@pytest.mark.parametrize("field,value", [
    ("lightgcn_layers", 0), ("lightgcn_epochs", 0), ("lightgcn_batch_size", 0),
    ("lightgcn_learning_rate", 0.0), ("lightgcn_l2", -1e-6), ("two_tower_hidden", 0),
    ("two_tower_epochs", 0), ("two_tower_batch_size", 1), ("two_tower_learning_rate", -1.0),
    ("two_tower_l2", -0.1), ("two_tower_temperature", 0.0), ("content_popularity_weight", -1.0),
    ("approximate_top_k", 1), ("approximate_top_k", "yes"), ("approx_recall_target", 0.0),
    ("approx_recall_target", 1.5),
])
def test_bad_recall_values_raise_naming_the_field(field, value):
  with pytest.raises(ConfigError, match=f"^recall.{field}="):
    RecallConfig(**{field: value})


# ===================================================================== approximate retrieval
def _random_params(num_users, num_items, dim, seed):
  rng = np.random.default_rng(seed)
  return RecallParams(user=jnp.asarray(rng.normal(size=(num_users, dim)), jnp.float32),
                      item=jnp.asarray(rng.normal(size=(num_items, dim)), jnp.float32),
                      item_bias=jnp.asarray(rng.normal(size=num_items), jnp.float32))


@pytest.mark.parametrize("k,item_chunk", [(16, 500), (24, 16)])  # k above item_chunk too
def test_approximate_retrieval_keeps_most_of_the_exact_top_k(k, item_chunk):
  num_users, num_items, target = 40, 3001, 0.9
  params = _random_params(num_users, num_items, 8, seed=k)
  rng = np.random.default_rng(1)
  exclude = _interactions(np.stack([np.repeat(np.arange(num_users), 30),
                                    rng.integers(0, num_items, num_users * 30)], 1))
  exact = retrieve(params, k, exclude, user_chunk=16, item_chunk=item_chunk)
  approx = retrieve(params, k, exclude, user_chunk=16, item_chunk=item_chunk, approximate=True,
                    recall_target=target)
  overlap = [len(set(a) & set(e)) / k for a, e in zip(approx.items, exact.items)]
  assert np.mean(overlap) >= target
  assert not exclude.contains(np.repeat(np.arange(num_users), k), approx.items.ravel(),
                              num_items).any()
  assert np.all(np.diff(approx.scores, axis=1) <= 0)
  want = np.einsum("ud,ukd->uk", np.asarray(params.user), np.asarray(params.item)[approx.items])
  np.testing.assert_allclose(approx.scores, want + np.asarray(params.item_bias)[approx.items],
                             rtol=1e-4, atol=1e-4)


def test_retrieval_over_a_million_items_in_chunks():
  num_items, k = 10**6, 5
  params = _random_params(3, num_items, 4, seed=0)
  scores = np.asarray(params.user) @ np.asarray(params.item).T + np.asarray(params.item_bias)
  best = np.argsort(-scores, axis=1)[:, :k + 1]
  exclude = _interactions([(0, best[0, 0])])  # user 0 has seen its best item
  for approximate in (False, True):
    got = retrieve(params, k, exclude, item_chunk=2**16, approximate=approximate)
    np.testing.assert_array_equal(got.items[0], best[0, 1:])
    np.testing.assert_array_equal(got.items[1:], best[1:, :k])


def test_candidates_for_passes_the_approximate_settings(monkeypatch):
  seen = {}

  def spy(params, k, exclude, **kwargs):
    seen.update(kwargs)
    return "candidates"

  monkeypatch.setattr(pipeline.server, "retrieve", spy)
  config = RecallConfig(approximate_top_k=True, approx_recall_target=0.8)
  assert pipeline.candidates_for(None, 3, Interactions.empty(), config) == "candidates"
  assert seen["approximate"] is True and seen["recall_target"] == 0.8


def test_the_config_knows_every_registered_model():
  assert sorted(RECALL_MODEL_NAMES) == sorted(RECALL_MODELS)
