"""PFedRec's leave-one-out split and evaluation negatives on MovieLens-100K, reproduced exactly.

PFedRec (Zhang et al., "Dual Personalization on Federated Recommendation", IJCAI 2023; code at
github.com/Zhangcx19/IJCAI-23-PFedRec, read at commit abc23809b9bc) evaluates with leave-one-out
and 99 sampled negatives. docs/pfedrec_reference.md states its protocol with file references;
this module rebuilds the same split, item for item, in numpy and the standard library:

1. Row order. PFedRec ships ML-100K as ``data/ml-100k/ratings.dat``: the GroupLens ``u.data``
   rows (the same 100,000 ratings) reordered by user id with numpy's unstable introsort argsort
   (numpy < 1.25, the sort behind ``pandas.sort_values``' default). `pfedrec_row_order` rebuilds
   that permutation from ``u.data`` order (the order our loader keeps), so no copy of their
   file is needed; row order matters because it fixes the ids and breaks timestamp ties.
2. Ids. Users and items are numbered 0.. in order of first appearance in that row order (users
   therefore by raw id; items not).
3. Split. Within each user, rows are ranked by timestamp, latest first, ties going to the row
   that comes FIRST in the file (pandas ``rank(method="first", ascending=False)``): rank 1 is
   the test item, rank 2 the validation item, the rest train. Every user needs >= 3 rows.
4. Evaluation negatives. Python's ``random`` seeded with 0 (module level, at import of their
   data.py; nothing draws from it before) draws, for users 0, 1, ... in turn,
   ``random.sample(tuple(all_items - rated), 198)`` where ``all_items`` is the set of every
   item id and ``rated`` the set of the user's items (train, validation and test). The first 99
   are the validation negatives, the last 99 the test negatives. The set operations here are
   the same Python set operations theirs are (their code ran on Python <= 3.10, whose
   ``random.sample`` turned a set into ``tuple(set)`` first), so the population order, and
   with it every draw, is the same.

Training negatives are not drawn here: the engine samples them each round on the device. The
two protocols of issue 30 differ only in their pool (4 per training positive in PFedRec):

* ``published`` (PFedRec's released code): items the user never rated at all, i.e. outside
  train, validation and test. The held-out test item is never a training negative, while its
  99 evaluation competitors (drawn from the same pool) regularly are: a leak that favours the
  test item.
* ``leak_free`` (NCF's original protocol): items outside the user's TRAINING interactions; the
  held-out validation and test items are eligible like any other unseen item.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

# Each user's 2 x 99 evaluation negatives come from one draw of this many items.
NUM_EVAL_NEGATIVES = 99
# PFedRec's data.py calls random.seed(0) at import.
PFEDREC_SEED = 0

TRAINING_NEGATIVE_POOLS = {
    "published": "items the user never rated (its validation and test items excluded)",
    "leak_free": "items outside the user's training interactions (validation and test items "
                 "eligible)",
}


class LeaveOneOutSplit(NamedTuple):
  """PFedRec's split, in PFedRec's ids (users and items numbered by first appearance).

  Attributes:
    train_user: [T] int64 user id of each training interaction, in PFedRec's row order.
    train_item: [T] int64 item id of each training interaction.
    val_item: [N] int64 each user's validation item (second latest interaction).
    test_item: [N] int64 each user's test item (latest interaction).
    val_negatives: [N, 99] int64 the items the validation item is ranked against.
    test_negatives: [N, 99] int64 the items the test item is ranked against.
    num_users: N.
    num_items: M, the items that occur in the ratings.
    raw_user: [N] int64 the raw (file) user id of each user id.
    raw_item: [M] int64 the raw (file) item id of each item id.
    val_row: [N] int64 the row (of the ratings given) of each user's validation interaction.
    test_row: [N] int64 the row of each user's test interaction.
  """

  train_user: np.ndarray
  train_item: np.ndarray
  val_item: np.ndarray
  test_item: np.ndarray
  val_negatives: np.ndarray
  test_negatives: np.ndarray
  num_users: int
  num_items: int
  raw_user: np.ndarray
  raw_item: np.ndarray
  val_row: np.ndarray
  test_row: np.ndarray


_SMALL_QUICKSORT = 15


def _sift_down(keys: Sequence[int], order: list[int], base: int, top: int, n: int) -> None:
  """Moves order[base + top] down the 1-based max-heap order[base + 1 .. base + n]."""
  moving = order[base + top]
  i, j = top, top << 1
  while j <= n:
    if j < n and keys[order[base + j]] < keys[order[base + j + 1]]:
      j += 1
    if keys[moving] < keys[order[base + j]]:
      order[base + i] = order[base + j]
      i, j = j, j + j
    else:
      break
  order[base + i] = moving


def _heap_argsort(keys: Sequence[int], order: list[int], lo: int, n: int) -> None:
  """numpy's aheapsort on order[lo:lo + n] (the introsort fallback)."""
  # 1-based heap indexing over the slice, as numpy's C code does with `a = tosort - 1`.
  base = lo - 1
  for top in range(n >> 1, 0, -1):
    _sift_down(keys, order, base, top, n)
  while n > 1:
    # The largest goes to the end; the last element sifts down from the root of what remains.
    order[base + n], order[base + 1] = order[base + 1], order[base + n]
    n -= 1
    _sift_down(keys, order, base, 1, n)


def introsort_argsort(keys: np.ndarray) -> np.ndarray:
  """The permutation that numpy < 1.25's ``argsort(kind="quicksort")`` returns, on any machine.

  numpy's default argsort is an unstable introsort (median-of-3 quicksort, insertion sort below
  16 elements, heapsort past a depth limit); from numpy 1.25 on x86 it may dispatch to a SIMD
  sort that orders equal keys differently. This is the portable algorithm step for step, so
  equal keys come out in the order the old numpy put them in. Pure Python: about a second per
  100,000 keys.

  Args:
    keys: [R] integer keys.

  Returns:
    [R] int64 indices that sort `keys` (ascending).
  """
  keys_list = np.asarray(keys).tolist()
  num = len(keys_list)
  order = list(range(num))
  if num < 2:
    return np.asarray(order, dtype=np.int64)
  v = keys_list
  stack: list[int] = []
  depth_stack: list[int] = []
  pl, pr = 0, num - 1
  cdepth = (num.bit_length() - 1) * 2
  while True:
    if cdepth < 0:
      _heap_argsort(v, order, pl, pr - pl + 1)
    else:
      while pr - pl > _SMALL_QUICKSORT:
        pm = pl + ((pr - pl) >> 1)
        if v[order[pm]] < v[order[pl]]:
          order[pm], order[pl] = order[pl], order[pm]
        if v[order[pr]] < v[order[pm]]:
          order[pr], order[pm] = order[pm], order[pr]
        if v[order[pm]] < v[order[pl]]:
          order[pm], order[pl] = order[pl], order[pm]
        pivot = v[order[pm]]
        pi, pj = pl, pr - 1
        order[pm], order[pj] = order[pj], order[pm]
        while True:
          pi += 1
          while v[order[pi]] < pivot:
            pi += 1
          pj -= 1
          while pivot < v[order[pj]]:
            pj -= 1
          if pi >= pj:
            break
          order[pi], order[pj] = order[pj], order[pi]
        pk = pr - 1
        order[pi], order[pk] = order[pk], order[pi]
        # The larger part waits on the stack; the loop goes on with the smaller.
        if pi - pl < pr - pi:
          stack += (pi + 1, pr)
          pr = pi - 1
        else:
          stack += (pl, pi - 1)
          pl = pi + 1
        cdepth -= 1
        depth_stack.append(cdepth)
      for pi in range(pl + 1, pr + 1):  # insertion sort
        moving = order[pi]
        key = v[moving]
        pj = pi
        while pj > pl and key < v[order[pj - 1]]:
          order[pj] = order[pj - 1]
          pj -= 1
        order[pj] = moving
    if not stack:
      break
    pr = stack.pop()
    pl = stack.pop()
    cdepth = depth_stack.pop()
  return np.asarray(order, dtype=np.int64)


def pfedrec_row_order(raw_user: np.ndarray) -> np.ndarray:
  """The permutation taking GroupLens ``u.data`` rows to the rows of PFedRec's ratings.dat.

  PFedRec's ``data/ml-100k/ratings.dat`` holds the ``u.data`` ratings sorted by raw user id with
  numpy's (pre-1.25) introsort argsort: ``ratings_dat = u_data[pfedrec_row_order(u_data_user)]``
  (checked row for row against their file, see docs/pfedrec_reference.md).

  Args:
    raw_user: [R] raw user ids of the ratings in ``u.data`` order.
  """
  return introsort_argsort(np.asarray(raw_user, dtype=np.int64))


def _first_appearance_ids(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Ids 0.. in order of first appearance; returns (id of each row, raw id of each id)."""
  uniques, first, inverse = np.unique(raw, return_index=True, return_inverse=True)
  by_appearance = np.argsort(first, kind="stable")
  rank = np.empty_like(by_appearance)
  rank[by_appearance] = np.arange(by_appearance.size)
  return rank[inverse.reshape(-1)].astype(np.int64), uniques[by_appearance].astype(np.int64)


def build_leave_one_out(
    user: np.ndarray, item: np.ndarray, rating: np.ndarray | None, timestamp: np.ndarray,
    *, seed: int = PFEDREC_SEED, num_negatives: int = NUM_EVAL_NEGATIVES,
) -> LeaveOneOutSplit:
  """PFedRec's split and evaluation negatives from ratings given in PFedRec's row order.

  Rows must already be in the order of PFedRec's ratings file (for ML-100K read in ``u.data``
  order, apply `pfedrec_row_order` first, or use `pfedrec_split_from_tables`): the order fixes
  the ids and breaks timestamp ties.

  Args:
    user: [R] raw user ids.
    item: [R] raw item ids.
    rating: [R] ratings or None. PFedRec binarises every rating > 0 to a positive; a rating <= 0
      would stay in its data as a 0-labelled row, which this module does not model, so it is
      refused.
    timestamp: [R] integer times.
    seed: Seed of Python's ``random`` (PFedRec's is 0).
    num_negatives: Negatives per held-out item (PFedRec's: 99; it draws twice this many at once).

  Returns:
    The split, in PFedRec's ids.

  Raises:
    ValueError: Arrays of different lengths; a rating <= 0; a user with fewer than 3
      interactions (PFedRec's assertion in ``_split_loo`` fails on one); a user with fewer than
      ``2 * num_negatives`` unrated items (PFedRec's ``random.sample`` fails on one).
  """
  user = np.asarray(user)
  item = np.asarray(item)
  timestamp = np.asarray(timestamp, dtype=np.int64)
  lengths = {user.shape, item.shape, timestamp.shape}
  if rating is not None:
    rating = np.asarray(rating)
    lengths.add(rating.shape)
  if len(lengths) != 1 or user.ndim != 1:
    raise ValueError(f"user, item, rating and timestamp must be 1-D and of one length, got "
                     f"shapes {sorted(lengths)}")
  if rating is not None and (rating <= 0).any():
    bad = int(np.flatnonzero(rating <= 0)[0])
    raise ValueError(f"row {bad} has rating {rating[bad]}: PFedRec's protocol treats every row "
                     "as a positive (rating > 0)")
  uid, raw_user = _first_appearance_ids(user)
  iid, raw_item = _first_appearance_ids(item)
  num_users, num_items = raw_user.size, raw_item.size

  counts = np.bincount(uid, minlength=num_users)
  if counts.min(initial=3) < 3:
    short = int(np.flatnonzero(counts < 3)[0])
    raise ValueError(f"user {raw_user[short]} has {counts[short]} interaction(s): PFedRec's "
                     "leave-one-out needs at least 3 per user (test, validation, training)")

  # Latest first; among equal times the row earlier in the file ranks first.
  rows = np.arange(uid.size)
  order = np.lexsort((rows, -timestamp, uid))
  starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
  test_rows = order[starts]
  val_rows = order[starts + 1]
  held_out = np.zeros(uid.size, bool)
  held_out[test_rows] = True
  held_out[val_rows] = True
  train_user, train_item = uid[~held_out], iid[~held_out]

  # Python's random and Python sets, as PFedRec draws: see the module docstring, step 4.
  rng = random.Random(seed)
  all_items = set(range(num_items))
  draw = 2 * num_negatives
  by_user = np.argsort(uid, kind="stable")
  user_items = np.split(iid[by_user], np.cumsum(counts)[:-1])
  negatives = np.empty((num_users, draw), dtype=np.int64)
  for u in range(num_users):
    pool = all_items - set(user_items[u].tolist())
    if len(pool) < draw:
      raise ValueError(f"user {raw_user[u]} has rated all but {len(pool)} of the {num_items} "
                       f"items: PFedRec draws {draw} evaluation negatives from the unrated ones")
    negatives[u] = rng.sample(tuple(pool), draw)

  return LeaveOneOutSplit(
      train_user=train_user, train_item=train_item,
      val_item=iid[val_rows], test_item=iid[test_rows],
      val_negatives=negatives[:, :num_negatives], test_negatives=negatives[:, num_negatives:],
      num_users=int(num_users), num_items=int(num_items),
      raw_user=raw_user, raw_item=raw_item, val_row=val_rows.astype(np.int64),
      test_row=test_rows.astype(np.int64))


def _split_and_order(tables, seed: int) -> tuple[LeaveOneOutSplit, np.ndarray]:
  """PFedRec's split of `tables`, and the permutation taking the tables' rows to PFedRec's."""
  raw_user = np.asarray(tables.user_raw_ids, dtype=np.int64)[tables.user_ids]
  raw_item = np.asarray(tables.item_raw_ids, dtype=np.int64)[tables.item_ids]
  order = pfedrec_row_order(raw_user)
  return build_leave_one_out(raw_user[order], raw_item[order], tables.ratings[order],
                             np.asarray(tables.timestamps)[order], seed=seed), order


def pfedrec_split_from_tables(tables, *, seed: int = PFEDREC_SEED) -> LeaveOneOutSplit:
  """PFedRec's ML-100K split from our loader's tables (`load_movielens("ml-100k")`).

  Our tables keep the ratings in ``u.data`` order (RecBole's ``ml-100k.inter`` is ``u.data`` with
  a header); `pfedrec_row_order` puts them in PFedRec's order before `build_leave_one_out`.
  """
  return _split_and_order(tables, seed)[0]


class TablesProtocol(NamedTuple):
  """PFedRec's split and evaluation lists in the tables' own rows and ids (the pipeline's
  `data.split="pfedrec_loo"`)."""

  test: np.ndarray  # [R] bool the tables' rows that are a user's test interaction
  valid: np.ndarray  # [R] bool ... its validation interaction
  # {1: validation, 2: test} -> [N, 1 + 99] int32 per user (the tables' user order): its
  # held-out item, then its 99 evaluation negatives (the tables' item ids)
  lists: dict[int, np.ndarray]


def pfedrec_protocol(tables, *, seed: int = PFEDREC_SEED) -> TablesProtocol:
  """PFedRec's held-out rows and evaluation lists, mapped onto `tables` through the raw ids."""
  split, order = _split_and_order(tables, seed)
  rows = tables.user_ids.size
  test, valid = np.zeros(rows, bool), np.zeros(rows, bool)
  test[order[split.test_row]] = True
  valid[order[split.val_row]] = True
  ours = lambda raw_ids, wanted: _index_of(np.asarray(raw_ids, dtype=np.int64), wanted)
  user = ours(tables.user_raw_ids, split.raw_user)  # [N] the tables' user of each PFedRec user
  item = ours(tables.item_raw_ids, split.raw_item)  # [M] the tables' item of each PFedRec item
  lists = {}
  for period, held_out, negatives in ((1, split.val_item, split.val_negatives),
                                      (2, split.test_item, split.test_negatives)):
    period_lists = np.full((len(tables.user_raw_ids), 1 + negatives.shape[1]), -1, np.int32)
    period_lists[user] = item[np.concatenate([held_out[:, None], negatives], axis=1)]
    lists[period] = period_lists
  return TablesProtocol(test=test, valid=valid, lists=lists)


def _index_of(raw_ids: np.ndarray, wanted: np.ndarray) -> np.ndarray:
  """The position in `raw_ids` of each of `wanted` (every one must be there)."""
  by_raw = np.argsort(raw_ids, kind="stable")
  found = by_raw[np.searchsorted(raw_ids, wanted, sorter=by_raw).clip(0, raw_ids.size - 1)]
  if not np.array_equal(raw_ids[found], wanted):
    raise ValueError("PFedRec's split names ids the tables do not hold")
  return found


def read_pfedrec_ratings(path: str | Path) -> tuple[np.ndarray, ...]:
  """Reads PFedRec's comma-separated ``ratings.dat`` (user, item, rating, timestamp per line)."""
  table = np.loadtxt(path, delimiter=",", dtype=np.int64, ndmin=2)
  if table.shape[1] != 4:
    raise ValueError(f"{path}: expected 4 comma-separated fields per line, got {table.shape[1]}")
  return table[:, 0], table[:, 1], table[:, 2], table[:, 3]
