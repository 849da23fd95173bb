"""Re-rank strategies on small hand-built inputs with known answers, their composition, the
invariants every strategy keeps, and their selection and validation through the config."""

from __future__ import annotations

import dataclasses
import functools
import math

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings

from pprsf_jax import pipeline
from pprsf_jax.config import ConfigError, RerankConfig, RunConfig, apply_overrides
from pprsf_jax.data.tables import GENRES
from pprsf_jax.rerank import (STRATEGIES, RerankContext, compose, evaluation_grid,
                              fairness, freshness, head_items, make_reranker, new_items,
                              popularity, rules)
from pprsf_jax.types import Interactions, ItemCatalogue, PublicData, TopTRequest


# ------------------------------------------------------------------------------------ helpers
def _context(num_items: int, *, genres=None, popularity=None, known=((-1,),), cold=None,
             year=None, year_known=None) -> RerankContext:
  genres = np.zeros((num_items, 3), np.float32) if genres is None else genres
  popularity = np.ones(num_items) if popularity is None else popularity
  known = np.array(known, np.int32)
  cold = np.all(known < 0, axis=1) if cold is None else np.array(cold, bool)
  if year_known is None:  # a given year is known; no year, none known
    year_known = np.zeros(num_items) if year is None else np.ones(num_items)
  year = np.zeros(num_items) if year is None else year
  return RerankContext(
      genres=jnp.asarray(genres, jnp.float32), popularity=jnp.asarray(popularity, jnp.float32),
      known=jnp.asarray(known), cold=jnp.asarray(cold),
      year=jnp.asarray(year, jnp.float32), year_known=jnp.asarray(year_known, jnp.float32))


def _request(items, scores=None) -> TopTRequest:
  """Scores default to descending positions."""
  items = np.array(items, np.int32)
  if scores is None:
    scores = np.broadcast_to(np.arange(items.shape[1], 0, -1), items.shape)
  scores = np.where(items >= 0, np.array(scores, np.float32), -np.inf).astype(np.float32)
  return TopTRequest(items=jnp.asarray(items), scores=jnp.asarray(scores))


def _items(request: TopTRequest) -> list[list[int]]:
  return np.asarray(request.items).tolist()


def _z(values) -> np.ndarray:
  values = np.asarray(values, np.float64)
  return (values - values.mean()) / values.std()


def _assert_well_formed(result: TopTRequest, request: TopTRequest) -> None:
  """Shape kept; real items first, no duplicates; scores descending on them, -inf after."""
  items, scores = np.asarray(result.items), np.asarray(result.scores)
  assert items.shape == request.items.shape and scores.shape == request.scores.shape
  assert items.dtype == np.int32 and scores.dtype == np.float32
  for row, row_scores in zip(items, scores):
    real = row >= 0
    count = int(real.sum())
    assert real[:count].all() and not real[count:].any(), row  # no -1 before a real item
    assert len(set(row[:count].tolist())) == count, row
    assert np.isfinite(row_scores[:count]).all() and np.isneginf(row_scores[count:]).all()
    assert np.all(np.diff(row_scores[:count]) <= 0), row_scores


# ---------------------------------------------------------------------------------- freshness
def test_freshness_with_zero_weight_keeps_the_order():
  request = _request([[3, 7, 0, 9, 5, 1], [2, 8, 6, -1, -1, -1]],
                     [[2.0, 1.5, 0.3, 0.2, -1.0, -4.0], [9.0, 1.0, 0.5, 0, 0, 0]])
  context = _context(10, year=np.random.default_rng(0).normal(size=10),
                     known=((-1,), (-1,)))
  result = freshness(0.0)(request, context)
  assert _items(result) == _items(request)
  _assert_well_formed(result, request)


def test_freshness_scores_and_orders_by_year_when_the_weight_is_large():
  year = np.array([-1.0, 0.5, 2.0, -0.5, 1.0])
  year_known = np.array([1.0, 1.0, 0.0, 1.0, 1.0])  # item 2's year is unknown: freshness 0
  request = _request([[0, 1, 2, 3, 4]], [[5.0, 4.0, 3.0, 2.0, 1.0]])
  context = _context(5, year=year, year_known=year_known)
  fresh = np.where(year_known > 0, year, 0.0)
  result = freshness(0.4)(request, context)
  expected = _z([5, 4, 3, 2, 1]) + 0.4 * fresh[[0, 1, 2, 3, 4]]
  order = np.argsort(-expected, kind="stable")
  assert _items(result)[0] == order.tolist()
  np.testing.assert_allclose(np.asarray(result.scores)[0], expected[order], atol=1e-5)
  # A large weight sorts by freshness alone: 4 (1.0), 1 (0.5), 2 (unknown: 0), 3, 0.
  assert _items(freshness(100.0)(request, context)) == [[4, 1, 2, 3, 0]]
  assert _items(freshness(-100.0)(request, context)) == [[0, 3, 2, 1, 4]]


# --------------------------------------------------------------------------------- popularity
# log(1 + count) is 0, 0, 0 and x > 0: its catalogue z-scores are -1/sqrt(3) (x3) and sqrt(3)
# whatever x, so the head item's boost over the others is exactly 4/sqrt(3) per unit weight.
HEAD_COUNTS = np.array([0.0, 0.0, 0.0, 30.0])
Z_TAIL, Z_HEAD = -1 / math.sqrt(3), math.sqrt(3)


@pytest.mark.parametrize("weight,position", [(0.0, 3), (0.3, 3), (0.5, 2), (1.0, 1), (2.0, 0)])
def test_a_positive_weight_moves_the_head_item_up(weight, position):
  request = _request([[0, 1, 2, 3]], [[3.0, 2.0, 1.0, 0.0]])  # the head item last
  result = popularity(weight)(request, _context(4, popularity=HEAD_COUNTS))
  relevance = _z([3, 2, 1, 0])
  # The head item passes a tail item with relevance r once w > (r - r_head) / (4 / sqrt(3)).
  thresholds = (relevance[:3] - relevance[3]) / (Z_HEAD - Z_TAIL)
  assert position == 3 - int(np.sum(weight > thresholds))
  assert _items(result)[0].index(3) == position
  expected = relevance + weight * np.array([Z_TAIL, Z_TAIL, Z_TAIL, Z_HEAD])
  np.testing.assert_allclose(np.sort(np.asarray(result.scores)[0])[::-1],
                             np.sort(expected)[::-1], atol=1e-5)


@pytest.mark.parametrize("weight,position", [(0.0, 0), (-0.3, 0), (-0.5, 1), (-1.0, 2),
                                             (-2.0, 3)])
def test_a_negative_weight_moves_the_head_item_down(weight, position):
  request = _request([[3, 0, 1, 2]], [[3.0, 2.0, 1.0, 0.0]])  # the head item first
  result = popularity(weight)(request, _context(4, popularity=HEAD_COUNTS))
  assert _items(result)[0].index(3) == position
  # The tail items keep their relative order: their boost is the same.
  assert [item for item in _items(result)[0] if item != 3] == [0, 1, 2]


# ----------------------------------------------------------------------------------- fairness
# 20 items: 0-9 are the head (the most popular half), 10-19 the tail.
FAIR_COUNTS = np.concatenate([np.arange(100, 90, -1), np.ones(10)])
# With a share of 0.4 over 5 positions the prefix quotas are m = 0, 0, 1, 1, 2.
FAIR = fairness(head_share=0.5, min_tail_share=0.4, list_length=5)


def test_head_items_are_the_most_popular_share_with_any_count():
  counts = jnp.asarray([5.0, 9.0, 9.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0])
  np.testing.assert_array_equal(np.asarray(head_items(counts, 0.2)), [0, 1, 1, 0, 0, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(np.asarray(head_items(counts, 0.25)),  # ceil(2.5) = 3
                                [1, 1, 1, 0, 0, 0, 0, 0, 0, 0])
  # Never an item nobody interacted with, however large the share.
  assert np.asarray(head_items(counts, 0.9)).sum() == 4


@pytest.mark.parametrize("items,expected", [
    # Head-only top: tail items move up to positions 3 and 5, the rest keep their order.
    ([0, 1, 2, 3, 4, 10, 11, 5], [0, 1, 10, 2, 11, 3, 4, 5]),
    # Already fair (every prefix quota met): unchanged.
    ([0, 1, 10, 2, 11, 3, 4, 5], [0, 1, 10, 2, 11, 3, 4, 5]),
    ([10, 11, 12, 0, 1, 2, 3, 4], [10, 11, 12, 0, 1, 2, 3, 4]),
    # One tail item where two are needed: impossible, so unchanged.
    ([0, 1, 2, 3, 4, 10, 5, 6], [0, 1, 2, 3, 4, 10, 5, 6]),
    # Four real items: the quota is over those four (m = 0, 0, 1, 2).
    ([0, 1, 10, 11, -1, -1, -1, -1], [0, 1, 10, 11, -1, -1, -1, -1]),
    ([0, 1, 2, 10, -1, -1, -1, -1], [0, 1, 2, 10, -1, -1, -1, -1]),  # 1 < 2 tail: impossible
    ([0, 1, 2, 10, 11, -1, -1, -1], [0, 1, 10, 2, 11, -1, -1, -1]),
])
def test_fairness_meets_the_tail_quota_when_possible(items, expected):
  request = _request([items])
  result = FAIR(request, _context(20, popularity=FAIR_COUNTS))
  assert _items(result) == [expected]
  _assert_well_formed(result, request)
  if expected == items:  # a list left alone keeps its scores
    np.testing.assert_array_equal(np.asarray(result.scores), np.asarray(request.scores))


@functools.lru_cache(maxsize=None)
def _jitted_fairness(share: float, list_length: int):
  return jax.jit(fairness(0.5, share, list_length))  # compiled once per setting


@settings(max_examples=60, deadline=None)
@given(st.permutations(list(range(20))), st.integers(0, 12),
       st.sampled_from([(0.0, 5), (0.3, 12), (0.4, 5), (0.55, 2), (0.7, 3), (1.0, 12)]))
def test_fairness_quota_holds_at_every_prefix(order, real, setting):
  share, list_length = setting
  items = np.full((1, 12), -1, np.int32)
  items[0, :real] = order[:real]
  request = _request(items)
  result = _jitted_fairness(share, list_length)(request, _context(20, popularity=FAIR_COUNTS))
  _assert_well_formed(result, request)
  out = np.asarray(result.items)[0]
  assert sorted(out[:real].tolist()) == sorted(items[0, :real].tolist())
  tail = (items[0, :real] >= 10).sum()
  length = min(list_length, real)
  need = math.ceil(share * length - 1e-6)
  tails = np.cumsum(out[:length] >= 10)
  if tail >= need:
    for p in range(1, length + 1):  # the proportional share of every prefix, and the quota
      assert tails[p - 1] >= max(math.floor(share * p + 1e-6), need - (length - p))
  else:
    np.testing.assert_array_equal(out, items[0])


# -------------------------------------------------------------------------------------- rules
# Items 0-7 over 3 genre columns; primary genre = first set column (item 6 has none).
RULE_GENRES = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1],
                        [0, 1, 1], [1, 0, 0], [0, 0, 0], [0, 1, 0]], np.float32)


@pytest.mark.parametrize("excluded,cap,expected", [
    ((), 0, [0, 1, 2, 3, 4, 5, 6, 7]),
    ((1,), 0, [0, 3, 5, 6, -1, -1, -1, -1]),  # every item carrying genre 1 goes
    ((), 1, [0, 1, 3, 6, -1, -1, -1, -1]),  # the first of each primary genre; 6 is uncapped
    ((), 2, [0, 1, 2, 3, 4, 6, -1, -1]),
    ((2,), 1, [0, 1, 6, -1, -1, -1, -1, -1]),
])
def test_rules_remove_excluded_genres_and_cap_each_primary_genre(excluded, cap, expected):
  request = _request([[0, 1, 2, 3, 4, 5, 6, 7]])
  result = rules(excluded, cap)(request, _context(8, genres=RULE_GENRES))
  assert _items(result) == [expected]
  _assert_well_formed(result, request)
  kept = [item for item in expected if item >= 0]
  np.testing.assert_array_equal(np.asarray(result.scores)[0, :len(kept)], 8.0 - np.array(kept))


def test_rules_by_genre_name_through_the_config():
  genres = np.zeros((4, len(GENRES)), np.float32)
  genres[[0, 2], GENRES.index("Horror")] = 1.0
  genres[[1, 2, 3], GENRES.index("Drama")] = 1.0
  config = RerankConfig(strategies=("rules",), rules_exclude_genres=("Horror",))
  result = make_reranker(config)(_request([[0, 1, 2, 3]]), _context(4, genres=genres))
  assert _items(result) == [[1, 3, -1, -1]]


# Popularity order of items 0-7: 7, 6, 5, ... ; items 7 and 5 carry genre 1.
FILL_COUNTS = np.arange(8, dtype=np.float32)
FILL_GENRES = np.zeros((8, 3), np.float32)
FILL_GENRES[[1, 5, 7], 1] = 1.0
FILL_GENRES[[0, 2, 3, 4, 6], 0] = 1.0


def test_rules_then_cold_start_refills_the_slots_with_allowed_items():
  config = RerankConfig(strategies=("rules", "cold_start"), rules_exclude_genres=(GENRES[1],))
  genres = np.zeros((8, len(GENRES)), np.float32)
  genres[:, :3] = FILL_GENRES
  context = _context(8, genres=genres, popularity=FILL_COUNTS, known=((2,),))
  request = _request([[0, 1, -1, -1]])
  # Item 1 carries the excluded genre: it goes, and the three most popular allowed items the
  # user has not seen fill in (7 and 5 are excluded as well, 2 is seen).
  assert _items(make_reranker(config)(request, context)) == [[0, 6, 4, 3]]
  # The other order fills first (two slots, allowed items only), then drops item 1.
  reverse = dataclasses.replace(config, strategies=("cold_start", "rules"))
  assert _items(make_reranker(reverse)(request, context)) == [[0, 6, 4, -1]]


def test_the_final_list_obeys_the_cap_even_when_a_later_strategy_fills():
  genres = np.zeros((8, len(GENRES)), np.float32)
  genres[:, :3] = FILL_GENRES
  context = _context(8, genres=genres, popularity=FILL_COUNTS, known=((2,),))
  config = RerankConfig(strategies=("rules", "cold_start"), rules_max_per_genre=1)
  result = make_reranker(config)(_request([[0, 1, -1, -1]]), context)
  # One item per primary genre: 0 (genre 0) and 1 (genre 1); the fills 7 and 6 break the cap
  # and the closing rules pass removes them.
  assert _items(result) == [[0, 1, -1, -1]]
  _assert_well_formed(result, _request([[0, 1, -1, -1]]))


# ---------------------------------------------------------------------------------- new items
# Items 6 and 7 are new (no public count); 6 is genre 0, 7 genre 2; popular items are genre 0.
NEW_GENRES = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1],
                       [0, 1, 0], [1, 1, 0], [1, 0, 0], [0, 0, 1]], np.float32)
NEW_COUNTS = np.array([50, 40, 5, 5, 3, 2, 0, 0], np.float32)


def test_new_items_insert_the_content_nearest_new_item_at_the_slot():
  request = _request([[0, 1, 2, 4, 5, -1],  # knows genre 2: gets 7
                      [2, 3, 4, 5, 0, 1],  # knows genre 0: gets 6; the last item falls off
                      [0, 1, 2, -1, -1, -1],  # no history: the popular genre, 6; list is short
                      [0, 1, 2, 4, 5, -1],  # knows genre 2 and item 7 itself: gets 6
                      [0, 1, 7, 4, 5, -1]])  # has 7 already: gets 6
  known = ((3, -1), (0, 1), (-1, -1), (3, 7), (3, -1))
  context = _context(8, genres=NEW_GENRES, popularity=NEW_COUNTS, known=known)
  result = new_items(slots=1, position=2)(request, context)
  assert _items(result) == [[0, 1, 7, 2, 4, 5],
                            [2, 3, 6, 4, 5, 0],
                            [0, 1, 6, 2, -1, -1],
                            [0, 1, 6, 2, 4, 5],
                            [0, 1, 6, 7, 4, 5]]
  _assert_well_formed(result, request)
  # Past the end of a short list: right after its last item.
  assert _items(new_items(1, 5)(request, context))[2] == [0, 1, 2, 6, -1, -1]
  # Two slots: both new items, the nearer first.
  assert _items(new_items(2, 0)(request, context))[0] == [7, 6, 0, 1, 2, 4]


def test_new_items_leave_lists_alone_without_eligible_new_items():
  request = _request([[0, 1, 2, 3], [6, 7, 0, 1]])
  context = _context(8, genres=NEW_GENRES, popularity=NEW_COUNTS, known=((-1,), (-1,)))
  none_new = context._replace(popularity=jnp.asarray(NEW_COUNTS + 1))
  result = new_items(1, 1)(request, none_new)
  assert _items(result) == _items(request)
  np.testing.assert_array_equal(np.asarray(result.scores), np.asarray(request.scores))
  result = new_items(1, 1)(request, context)  # the second user already has both
  assert _items(result)[1] == [6, 7, 0, 1]
  np.testing.assert_array_equal(np.asarray(result.scores)[1], np.asarray(request.scores)[1])


# -------------------------------------------------------------------------------- composition
def test_composition_order_matters_as_documented():
  # Tail items (10-19) are the oldest: a freshness pass after fairness undoes its quota,
  # fairness after freshness restores it (order-based strategies have the last word).
  year = np.concatenate([np.linspace(1.0, 2.0, 10), -np.ones(10)])
  context = _context(20, popularity=FAIR_COUNTS, year=year)
  request = _request([[0, 1, 2, 3, 4, 10, 11, 5]])
  fresh = freshness(10.0)
  fair_then_fresh = _items(compose(FAIR, fresh)(request, context))[0]
  fresh_then_fair = _items(compose(fresh, FAIR)(request, context))[0]
  assert sum(item >= 10 for item in fair_then_fresh[:5]) == 0
  assert sum(item >= 10 for item in fresh_then_fair[:5]) == 2
  assert _items(compose(fresh, FAIR)(request, context)) == _items(
      FAIR(fresh(request, context), context))


# ------------------------------------------------------------------------ every strategy: jit
def _everything_config(*names: str) -> RerankConfig:
  return RerankConfig(strategies=names, rules_exclude_genres=(GENRES[2],), rules_max_per_genre=2,
                      new_item_slots=2, new_item_position=1, fairness_list_length=5)


def _random_case(seed: int):
  rng = np.random.default_rng(seed)
  num_items, users, length = 40, 6, 8
  genres = (rng.random((num_items, len(GENRES))) < 0.15).astype(np.float32)
  counts = rng.integers(0, 30, num_items).astype(np.float32)
  counts[rng.choice(num_items, 6, replace=False)] = 0  # new items
  items = np.stack([rng.permutation(num_items)[:length] for _ in range(users)]).astype(np.int32)
  items[1, 5:] = -1
  items[2, :] = -1
  known = np.full((users, 5), -1, np.int32)
  known[0, :3] = [items[0, 0] + 1 if items[0, 0] + 1 < num_items else 0, 3, 4]
  known[3, :2] = [1, 2]
  scores = np.sort(rng.normal(size=(users, length)), axis=1)[:, ::-1]
  context = _context(num_items, genres=genres, popularity=counts, known=known,
                     year=rng.normal(size=num_items),
                     year_known=(rng.random(num_items) < 0.8).astype(np.float32))
  return _request(items, scores), context


EVERY_STRATEGY = ("rules", "cold_start", "freshness", "popularity", "mmr", "fairness",
                  "new_items")


@pytest.mark.parametrize("names", [(name,) for name in STRATEGIES] + [
    EVERY_STRATEGY, ("new_items", "cold_start", "rules", "fairness")])
def test_every_strategy_is_jittable_and_keeps_the_list_well_formed(names):
  request, context = _random_case(len(names))
  result = jax.jit(make_reranker(_everything_config(*names)))(request, context)
  _assert_well_formed(result, request)
  items = np.asarray(result.items)
  known = np.asarray(context.known)
  new = set(np.flatnonzero(np.asarray(context.popularity) == 0).tolist())
  for user in range(items.shape[0]):
    real = items[user][items[user] >= 0]
    added = set(real.tolist()) - set(np.asarray(request.items)[user].tolist())
    # Items come from the request, or are unseen fills (cold start) / new items (new_items).
    assert not added & set(known[user].tolist())
    if not {"cold_start", "new_items"} & set(names):
      assert not added
    if "rules" in names:  # the final list obeys the rules, wherever they sit
      genres = np.asarray(context.genres)[real]
      assert not genres[:, 2].any()
      primary = [int(np.argmax(g)) for g in genres if g.any()]
      assert max(np.bincount(primary), default=0) <= 2
    if names == ("new_items",):
      eligible = new - set(np.asarray(request.items)[user].tolist()) - set(known[user].tolist())
      assert added <= new and len(added) == min(2, len(eligible))


# -------------------------------------------------------------------------- config and grid
@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_each_strategy_is_selectable_from_the_command_line(name):
  config = apply_overrides(RunConfig(), [f"rerank.strategies=({name}, mmr)"])
  assert config.rerank.strategies == (name, "mmr")
  make_reranker(config.rerank)


def test_strategy_parameters_from_the_command_line():
  config = apply_overrides(RunConfig(), [
      "rerank.strategies=(freshness, mmr)", "rerank.freshness_weight=-1.5",
      "rerank.popularity_weight=0.7", "rerank.rules_exclude_genres=(Children's, Sci-Fi)",
      "rerank.rules_max_per_genre=2", "rerank.fairness_min_tail_share=1",
      "rerank.new_item_position=0"])
  rerank = config.rerank
  assert rerank.freshness_weight == -1.5 and rerank.popularity_weight == 0.7
  assert rerank.rules_exclude_genres == ("Children's", "Sci-Fi")
  assert rerank.rules_exclude_columns == (GENRES.index("Children's"), GENRES.index("Sci-Fi"))


@pytest.mark.parametrize("override,field,mentions", [
    ("rerank.strategies=(freshness, fresh)", "rerank.strategies", "fresh"),
    ("rerank.rules_exclude_genres=(Horror, Sitcom)", "rerank.rules_exclude_genres", "Sitcom"),
    ("rerank.rules_exclude_genres=(horror)", "rerank.rules_exclude_genres", "horror"),
    ("rerank.freshness_weight=inf", "rerank.freshness_weight", "finite"),
    ("rerank.popularity_weight=nan", "rerank.popularity_weight", "finite"),
    ("rerank.fairness_head_share=0", "rerank.fairness_head_share", "(0, 1)"),
    ("rerank.fairness_min_tail_share=1.5", "rerank.fairness_min_tail_share", "[0, 1]"),
    ("rerank.fairness_list_length=0", "rerank.fairness_list_length", ">= 1"),
    ("rerank.rules_max_per_genre=-1", "rerank.rules_max_per_genre", ">= 0"),
    ("rerank.new_item_slots=1.5", "rerank.new_item_slots", "integer"),
    ("rerank.new_item_position=-2", "rerank.new_item_position", ">= 0"),
])
def test_bad_names_and_values_raise_config_error_naming_the_field(override, field, mentions):
  with pytest.raises(ConfigError) as caught:
    apply_overrides(RunConfig(), [override])
  message = str(caught.value)
  assert message.startswith(f"{field}=") and mentions in message, message


def test_evaluation_grid_has_each_strategy_alone_and_stays_small():
  grid = evaluation_grid(RerankConfig())
  assert len(grid) <= 12 and list(grid)[0] == "none"
  alone = {setting.strategies[0] for setting in grid.values() if len(setting.strategies) == 1}
  assert alone == set(STRATEGIES)
  rules_setting, = [s for s in grid.values() if s.strategies == ("rules",)]
  assert rules_setting.rules_max_per_genre > 0  # its row shows an effect
  assert grid["configured (cold_start + mmr)"] == RerankConfig()
  configured = RerankConfig(rules_exclude_genres=("Drama",))
  rules_setting, = [s for s in evaluation_grid(configured).values() if s.strategies == ("rules",)]
  assert rules_setting == dataclasses.replace(configured, strategies=("rules",))


def test_rerank_context_carries_the_public_catalogue_facts():
  catalogue = ItemCatalogue(genres=np.eye(3, dtype=np.float32),
                            year=np.array([0.5, 0.0, -1.0], np.float32),
                            year_known=np.array([1.0, 0.0, 1.0], np.float32))
  history = Interactions(np.array([0, 0], np.int32), np.array([2, 1], np.int32))
  public = PublicData(num_users=2, num_items=3, catalogue=catalogue, history=history,
                      fold=np.zeros(2, np.int32), num_folds=1, devices=np.ones(2, bool))
  context = pipeline.rerank_context(public, history)
  np.testing.assert_array_equal(np.asarray(context.year), catalogue.year)
  np.testing.assert_array_equal(np.asarray(context.year_known), catalogue.year_known)
  np.testing.assert_array_equal(np.asarray(context.popularity), [0, 1, 1])
  np.testing.assert_array_equal(np.asarray(context.cold), [False, True])
