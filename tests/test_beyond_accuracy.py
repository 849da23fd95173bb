"""Beyond-accuracy metrics on hand-computed cases, and ItemKNN recall against brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pprsf_jax.metrics import beyond_accuracy, exposure_gini, intra_list_diversity, novelty
from pprsf_jax.recall import retrieve
from pprsf_jax.recall.item_knn import item_neighbors, train_item_knn
from pprsf_jax.types import Interactions

# Items 0 and 1 share genre 0; item 2 is genre 1 only; item 3 has both.
GENRES = np.array([[1, 0], [1, 0], [0, 1], [1, 1]], np.float32)


def test_diversity_is_zero_for_same_genre_lists_and_one_for_disjoint_ones():
  assert intra_list_diversity(np.array([[0, 1]]), GENRES) == 0.0
  assert intra_list_diversity(np.array([[0, 2]]), GENRES) == 1.0
  # [0, 2, 3]: pairs (0,2) 1, (0,3) 1 - 1/sqrt2, (2,3) 1 - 1/sqrt2; mean of the three.
  want = (1 + 2 * (1 - 1 / math.sqrt(2))) / 3
  assert intra_list_diversity(np.array([[0, 2, 3]]), GENRES) == pytest.approx(want)
  # Empty slots count for nothing; a list with one item has no pair and is left out.
  assert intra_list_diversity(np.array([[0, 2, -1], [1, -1, -1]]), GENRES) == 1.0


def test_novelty_is_the_mean_self_information_of_smoothed_popularity():
  counts = np.array([9, 0, 4, 1], np.float32)  # 9 users
  lists = np.array([[0, 1], [2, -1]])
  want = np.mean([-math.log2(10 / 10), -math.log2(1 / 10), -math.log2(5 / 10)])
  assert novelty(lists, counts, num_users=9) == pytest.approx(want)
  assert math.isnan(novelty(np.full((2, 3), -1), counts, num_users=9))


def test_gini_is_zero_for_equal_exposure_and_maximal_for_one_item():
  assert exposure_gini(np.array([[0, 1], [2, 3]]), 4) == pytest.approx(0.0)
  assert exposure_gini(np.array([[2, 2], [2, -1]]), 4) == pytest.approx(3 / 4)
  # Exposure (2, 1, 1, 0): sorted (0, 1, 1, 2), G = 2*(1*0 + 2*1 + 3*1 + 4*2)/(4*4) - 5/4.
  assert exposure_gini(np.array([[0, 1], [0, 2]]), 4) == pytest.approx(2 * 13 / 16 - 5 / 4)


def test_beyond_accuracy_names_carry_k():
  result = beyond_accuracy(np.array([[0, 2, 3]]), GENRES, np.ones(4, np.float32), 5)
  assert set(result) == {"diversity@3", "novelty@3", "gini@3"}


def test_item_knn_retrieval_equals_summed_neighbour_similarity():
  rng = np.random.default_rng(0)
  users, items = 30, 25
  pairs = np.unique(np.stack([rng.integers(0, users, 300), rng.integers(0, items, 300)], 1), axis=0)
  log = Interactions(pairs[:, 0].astype(np.int32), pairs[:, 1].astype(np.int32))
  neighbors = item_neighbors(log, users, items, num_neighbors=5)
  params = train_item_knn(log, neighbors, users, items)
  brute = np.zeros((users, items))
  for user, item in pairs:
    for neighbor, similarity in zip(neighbors.items[item], neighbors.similarity[item]):
      if neighbor >= 0:
        brute[user, neighbor] += similarity
  got = retrieve(params, 4, log, user_chunk=7, item_chunk=6)
  seen = log.contains(np.repeat(np.arange(users), items), np.tile(np.arange(items), users),
                      items).reshape(users, items)
  brute = np.where(seen, -np.inf, brute)
  for user in range(users):
    real = got.items[user] >= 0
    np.testing.assert_allclose(got.scores[user][real], brute[user, got.items[user][real]],
                               rtol=1e-5, atol=1e-6)
    # The 4th best brute-force score is the smallest one retrieved (ties may reorder ids).
    best = np.sort(brute[user][np.isfinite(brute[user])])[::-1][:4]
    np.testing.assert_allclose(np.sort(got.scores[user][real])[::-1], best[:real.sum()],
                               rtol=1e-5, atol=1e-6)
