"""PFedRec's leave-one-out split and evaluation negatives (pprsf_jax.data.loo_protocol).

Synthetic ratings only; the item-for-item check against PFedRec's own code on ML-100K is in
docs/pfedrec_reference.md.
"""

from __future__ import annotations

import types

import numpy as np
import pytest

from pprsf_jax.data import loo_protocol as loo

# 40 keys in 0..3 and what numpy 1.21.6 returned for them (argsort, quicksort and heapsort):
# the order of equal keys that PFedRec's ratings file inherited.
KEYS = [3, 2, 2, 3, 2, 3, 3, 0, 0, 1, 1, 3, 3, 0, 1, 3, 0, 3, 0, 1, 3, 1, 1, 1, 2, 1, 3, 1, 1, 2,
        2, 2, 2, 3, 3, 3, 2, 2, 1, 3]
NUMPY_121_QUICKSORT = [18, 7, 8, 16, 13, 19, 25, 23, 22, 21, 38, 27, 14, 10, 9, 28, 32, 31, 36,
                       30, 4, 37, 2, 24, 1, 29, 34, 35, 33, 0, 20, 17, 15, 12, 11, 6, 5, 3, 26, 39]
NUMPY_121_HEAPSORT = [18, 13, 7, 16, 8, 25, 19, 23, 10, 9, 22, 14, 27, 28, 38, 21, 29, 30, 24, 2,
                      4, 37, 36, 1, 32, 31, 6, 26, 12, 11, 5, 20, 39, 35, 17, 34, 33, 15, 3, 0]


def _ratings(num_users=30, num_items=400, seed=0, per_user=(3, 40)):
  """Random implicit ratings in a shuffled file order, with many timestamp ties."""
  rng = np.random.default_rng(seed)
  users, items, times = [], [], []
  for u in range(num_users):
    count = rng.integers(*per_user, endpoint=True)
    users += [1000 + u] * count
    items += (rng.choice(num_items, count, replace=False) * 7 + 5).tolist()
    times += rng.integers(0, 6, count).tolist()  # few distinct times: ties everywhere
  order = rng.permutation(len(users))
  user = np.asarray(users)[order]
  item = np.asarray(items)[order]
  return user, item, np.ones(user.size), np.asarray(times)[order]


@pytest.fixture(scope="module")
def data():
  ratings = _ratings()
  return ratings, loo.build_leave_one_out(*ratings)


def test_ids_follow_first_appearance(data):
  (user, item, _, _), split = data
  _, first = np.unique(user, return_index=True)
  assert split.raw_user.tolist() == user[np.sort(first)].tolist()
  _, first = np.unique(item, return_index=True)
  assert split.raw_item.tolist() == item[np.sort(first)].tolist()
  assert split.num_users == split.raw_user.size and split.num_items == split.raw_item.size


def test_test_is_latest_validation_second_latest_ties_to_earlier_row(data):
  (user, item, _, times), split = data
  for u, raw in enumerate(split.raw_user):
    rows = np.flatnonzero(user == raw)
    # Latest first; among equal times the earlier row of the file (pandas rank method="first").
    ranked = rows[np.lexsort((rows, -times[rows]))]
    assert split.raw_item[split.test_item[u]] == item[ranked[0]]
    assert split.raw_item[split.val_item[u]] == item[ranked[1]]


def test_tie_break_on_a_hand_made_user():
  user = np.array([7, 7, 7, 7, 7])
  item = np.array([10, 11, 12, 13, 14])
  times = np.array([5, 9, 9, 3, 9])  # rows 1, 2 and 4 share the latest time
  split = loo.build_leave_one_out(user, item, None, times, num_negatives=0)
  assert split.raw_item[split.test_item].tolist() == [11]
  assert split.raw_item[split.val_item].tolist() == [12]
  assert sorted(split.raw_item[split.train_item].tolist()) == [10, 13, 14]


def test_training_rows_are_the_rest_in_file_order(data):
  (user, item, _, _), split = data
  assert split.train_user.size == user.size - 2 * split.num_users
  held = {(u, int(split.val_item[u])) for u in range(split.num_users)}
  held |= {(u, int(split.test_item[u])) for u in range(split.num_users)}
  uid = {raw: k for k, raw in enumerate(split.raw_user.tolist())}
  iid = {raw: k for k, raw in enumerate(split.raw_item.tolist())}
  expected = [(uid[u], iid[i]) for u, i in zip(user.tolist(), item.tolist())
              if (uid[u], iid[i]) not in held]
  assert list(zip(split.train_user.tolist(), split.train_item.tolist())) == expected


def test_negatives_are_99_distinct_unrated_items(data):
  _, split = data
  assert split.val_negatives.shape == split.test_negatives.shape == (split.num_users, 99)
  for u in range(split.num_users):
    rated = set(split.train_item[split.train_user == u].tolist())
    rated |= {int(split.val_item[u]), int(split.test_item[u])}
    both = split.val_negatives[u].tolist() + split.test_negatives[u].tolist()
    assert len(set(both)) == 198  # one draw of 198: validation and test negatives are disjoint
    assert not rated & set(both)
    assert all(0 <= i < split.num_items for i in both)


def test_draws_are_pfedrecs_calls_of_python_random(data):
  """The negatives of user u are the u-th `random.sample` of 198 from its unrated items, the
  population in the order of the Python set PFedRec builds, from `random.seed(0)`."""
  import random

  _, split = data
  rng = random.Random(0)
  every = set(range(split.num_items))
  for u in range(split.num_users):
    rated = set(split.train_item[split.train_user == u].tolist())
    rated |= {int(split.val_item[u]), int(split.test_item[u])}
    drawn = rng.sample(tuple(every - rated), 198)
    assert split.val_negatives[u].tolist() == drawn[:99]
    assert split.test_negatives[u].tolist() == drawn[99:]


def test_same_seed_same_split_other_seed_other_negatives(data):
  ratings, split = data
  again = loo.build_leave_one_out(*ratings)
  for a, b in zip(split, again):
    np.testing.assert_array_equal(a, b)
  other = loo.build_leave_one_out(*ratings, seed=1)
  np.testing.assert_array_equal(other.test_item, split.test_item)
  assert not np.array_equal(other.test_negatives, split.test_negatives)


def test_too_few_interactions_is_a_value_error():
  user, item, rating, times = _ratings(num_users=5)
  keep = ~((user == 1002) & (np.cumsum(user == 1002) > 2))  # user 1002 keeps 2 rows
  with pytest.raises(ValueError, match=r"user 1002 has 2 interaction\(s\).*at least 3"):
    loo.build_leave_one_out(user[keep], item[keep], rating[keep], times[keep])


def test_too_few_unrated_items_is_a_value_error():
  user, item, rating, times = _ratings(num_users=4, num_items=60, per_user=(3, 40))
  with pytest.raises(ValueError, match="evaluation negatives from the unrated"):
    loo.build_leave_one_out(user, item, rating, times)
  split = loo.build_leave_one_out(user, item, rating, times, num_negatives=5)
  assert split.test_negatives.shape == (4, 5)


def test_bad_inputs_are_value_errors():
  user, item, rating, times = _ratings(num_users=3)
  with pytest.raises(ValueError, match="one length"):
    loo.build_leave_one_out(user, item[:-1], rating, times)
  rating = rating.copy()
  rating[4] = 0
  with pytest.raises(ValueError, match="row 4 has rating 0"):
    loo.build_leave_one_out(user, item, rating, times)


def test_introsort_argsort_reproduces_numpy_121():
  keys = np.asarray(KEYS)
  assert loo.introsort_argsort(keys).tolist() == NUMPY_121_QUICKSORT
  order = list(range(len(KEYS)))
  loo._heap_argsort(KEYS, order, 0, len(KEYS))
  assert order == NUMPY_121_HEAPSORT


@pytest.mark.parametrize("size", [0, 1, 2, 16, 17, 500, 3000])
def test_introsort_argsort_sorts(size):
  keys = np.random.default_rng(size).integers(0, 50, size)
  order = loo.introsort_argsort(keys)
  assert sorted(order.tolist()) == list(range(size))
  assert (np.diff(keys[order]) >= 0).all()
  distinct = np.random.default_rng(size).permutation(size)
  assert loo.introsort_argsort(distinct).tolist() == np.argsort(distinct).tolist()


def test_split_from_tables_reorders_like_pfedrec():
  user, item, rating, times = _ratings(num_users=30, seed=3)
  user_raw = tuple(str(u) for u in sorted(set(user.tolist())))
  item_raw = tuple(str(i) for i in sorted(set(item.tolist())))
  tables = types.SimpleNamespace(
      user_ids=np.searchsorted(np.asarray(user_raw, dtype=np.int64), user).astype(np.int32),
      item_ids=np.searchsorted(np.asarray(item_raw, dtype=np.int64), item).astype(np.int32),
      ratings=rating.astype(np.float32), timestamps=times, user_raw_ids=user_raw,
      item_raw_ids=item_raw)
  split = loo.pfedrec_split_from_tables(tables)
  order = loo.pfedrec_row_order(user)
  assert (np.diff(user[order]) >= 0).all()
  direct = loo.build_leave_one_out(user[order], item[order], rating[order], times[order])
  for a, b in zip(split, direct):
    np.testing.assert_array_equal(a, b)
  assert split.raw_user.tolist() == sorted(set(user.tolist()))  # user-sorted file: ids by raw id


def test_read_pfedrec_ratings(tmp_path):
  path = tmp_path / "ratings.dat"
  path.write_text("1,55,5,875072688\n1,203,4,878542231\n2,55,3,875072688\n")
  user, item, rating, times = loo.read_pfedrec_ratings(path)
  assert user.tolist() == [1, 1, 2] and item.tolist() == [55, 203, 55]
  assert rating.tolist() == [5, 4, 3] and times.tolist() == [875072688, 878542231, 875072688]
  path.write_text("1,55,5\n")
  with pytest.raises(ValueError, match="4 comma-separated"):
    loo.read_pfedrec_ratings(path)


def test_the_pipeline_split_is_pfedrecs_on_the_tables_own_rows_and_ids():
  """data.split="pfedrec_loo": PFedRec's held-out rows and its evaluation lists, mapped onto the
  tables through the raw ids, are what the dataset holds out and what every method ranks."""
  from pprsf_jax.config import (  # pylint: disable=import-outside-toplevel
      ConfigError, DataConfig, EvalConfig, RunConfig, SyntheticConfig)
  from pprsf_jax.data.dataset import build_dataset  # pylint: disable=import-outside-toplevel
  from pprsf_jax.data.synthetic import generate_synthetic  # pylint: disable=import-outside-toplevel
  # Enough users that nearly every item occurs: PFedRec draws 2 x 99 negatives per user.
  synthetic = SyntheticConfig(num_users=300, num_items=240, interactions_per_user=10)
  tables = generate_synthetic(synthetic, 0)
  protocol = loo.pfedrec_protocol(tables)
  split = loo.pfedrec_split_from_tables(tables)
  users, items = tables.user_ids, tables.item_ids
  assert protocol.test.sum() == protocol.valid.sum() == split.num_users
  for period, rows in ((2, protocol.test), (1, protocol.valid)):
    lists = protocol.lists[period]
    np.testing.assert_array_equal(lists[users[rows], 0], items[rows])  # held-out item first
    rated = np.zeros((lists.shape[0], len(tables.item_raw_ids)), bool)
    rated[users, items] = True
    assert not np.take_along_axis(rated, lists[:, 1:], axis=1).any()  # negatives never rated
    assert lists.shape[1] == 100
  config = DataConfig(source="synthetic", synthetic=synthetic, split="pfedrec_loo")
  data = build_dataset(tables, config, seed=0)
  test = data.test.interactions
  np.testing.assert_array_equal(np.sort(test.user * 1000 + test.item),
                                np.sort(users[protocol.test] * 1000 + items[protocol.test]))
  with pytest.raises(ConfigError, match="eval.sampled_negatives"):
    RunConfig(data=config, eval=EvalConfig(sampled_negatives=20))
  with pytest.raises(ConfigError, match="data.feedback"):
    DataConfig(split="pfedrec_loo", feedback="threshold")
