"""From raw rating tables to the federated dataset: splits, privacy partition, feature encoding.

Each user's interactions are split at random into train / valid / test (RecBole's 8:1:1 by
default), or leave-one-out by time (the latest interaction tests, the one before validates). A
configurable share of each user's interactions is private. Those draws are nature's
(`Partition`): they decide the future and which rows a user keeps to itself.

Train interactions are then dealt per user into `label_folds` cross-fitting folds (see
`PublicData`), so ranking targets never come from what the recall model that proposed them
trained on. Each side deals its own rows with its own randomness: the server's folds come from
the public rows alone (a real server could not deal rows it never sees), and each device deals
its private rows. Public folds therefore reveal nothing about private interactions, not even
how many there are.

Before any of that, `data.feedback` decides which interactions are positives at all
(`select_feedback`): every one ("implicit"), or those rated at least `data.positive_threshold`
("threshold"), the others dropped; one INFO line counts what was kept and dropped.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import NamedTuple

import numpy as np

from pprsf_jax.config import DataConfig
from pprsf_jax.data.loo_protocol import pfedrec_protocol
from pprsf_jax.data.tables import MovieLensTables
from pprsf_jax.types import Interactions, ItemCatalogue, Period, PrivateData, PublicData

logger = logging.getLogger(__name__)

# Age buckets of the MovieLens-1M documentation; they suit ML-100K ages as well.
AGE_BUCKET_EDGES = (18, 25, 35, 45, 50, 56)


# Each side's fold deal has its own random stream: nothing the server deals depends on a device's.
_PUBLIC_FOLDS, _DEVICE_FOLDS = 0, 1


class Partition(NamedTuple):
  """Nature's draw over the rating rows, fixed before either side sees anything."""

  test: np.ndarray  # [R] bool: the period methods are compared on
  valid: np.ndarray  # [R] bool: the period served and logged first
  private: np.ndarray  # [R] bool: kept on the user's device


@dataclasses.dataclass(frozen=True)
class FederatedDataset:
  """The simulator's view: what each side holds, plus the future periods."""

  public: PublicData  # server side
  private: PrivateData  # client side (stacked over users)
  valid: Period  # the next period, served and logged by the service layer
  test: Period  # the period after, on which methods are compared


def _shuffled_within_users(user: np.ndarray, eligible: np.ndarray, rng):
  """Eligible rows grouped by user in random order: (rows, their owners, position in the user's
  group, rows per user)."""
  rows = np.flatnonzero(eligible)
  order = np.lexsort((rng.random(rows.size), user[rows]))
  rows = rows[order]
  owners = user[rows]
  counts = np.bincount(owners, minlength=int(user.max(initial=-1)) + 1)
  starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
  return rows, owners, np.arange(rows.size) - starts[owners], counts


def _per_user_quota(user: np.ndarray, eligible: np.ndarray, share: float, rng) -> np.ndarray:
  """Marks round(share * n_u) of each user's eligible rows at random (at least one row is kept out)."""
  rows, owners, position, counts = _shuffled_within_users(user, eligible, rng)
  quota = np.floor(share * counts + 0.5).astype(np.int64)
  quota = np.minimum(quota, np.maximum(counts - 1, 0))
  marked = np.zeros(user.shape, bool)
  marked[rows[position < quota[owners]]] = True
  return marked


def _per_user_folds(user: np.ndarray, eligible: np.ndarray, num_folds: int, num_users: int,
                    rng) -> np.ndarray:
  """Deals each user's eligible rows, in random order, round-robin into folds 0..F-1 (-1 elsewhere).

  Reads nothing but the eligible rows (and the number of users), so rows outside `eligible`
  cannot change the deal.
  """
  rows, owners, position, _ = _shuffled_within_users(user, eligible, rng)
  # A random starting fold per user, so no fold is systematically the largest.
  offset = rng.integers(0, num_folds, num_users)
  fold = np.full(user.shape, -1, np.int32)
  fold[rows] = (position + offset[owners]) % num_folds
  return fold


def deal_folds(user: np.ndarray, train: np.ndarray, private: np.ndarray, num_folds: int,
               num_users: int, seed: int) -> np.ndarray:
  """[R] int32 each train row's cross-fitting fold (-1 elsewhere): public rows dealt among
  themselves with the server's stream, private rows among themselves with the devices'."""
  fold = np.full(user.shape, -1, np.int32)
  for side, rows in ((_PUBLIC_FOLDS, train & ~private), (_DEVICE_FOLDS, train & private)):
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xF01D, side]))
    dealt = _per_user_folds(user, rows, num_folds, num_users, rng)
    fold[rows] = dealt[rows]
  return fold


def _latest_two(user: np.ndarray, timestamps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Leave-one-out by time: each user's latest interaction (test) and the one before (valid).

  Ties in time go to the later row of the file. A user with two interactions keeps one for
  training and none for validation; a user with one only trains.
  """
  order = np.lexsort((np.arange(user.size), timestamps, user))  # by user, then time, then row
  owners = user[order]
  counts = np.bincount(owners, minlength=int(user.max(initial=-1)) + 1)
  ends = np.cumsum(counts)
  from_end = ends[owners] - 1 - (np.arange(order.size))  # 0 = the user's latest
  test = np.zeros(user.shape, bool)
  valid = np.zeros(user.shape, bool)
  test[order[(from_end == 0) & (counts[owners] >= 2)]] = True
  valid[order[(from_end == 1) & (counts[owners] >= 3)]] = True
  return test, valid


def encode_user_features(tables: MovieLensTables) -> np.ndarray:
  """Private attributes as dense features: age (scaled + bucket), gender, occupation, zip region.

  Returns:
    [N, 1 + 7 + 2 + |occupations| + 11] float32.
  """
  # US zip codes start with a region digit; anything else (e.g. Canadian codes) is region 10.
  region = np.array(
      [int(z[0]) if z[:1].isdigit() else 10 for z in tables.zip_code], dtype=np.int64
  )
  return encode_attributes(tables.age, tables.gender, tables.occupation,
                           len(tables.occupation_vocab), region)


def encode_attributes(age: np.ndarray, gender: np.ndarray, occupation: np.ndarray,
                      num_occupations: int, zip_region: np.ndarray) -> np.ndarray:
  """The feature layout of `encode_user_features` from attribute arrays ([N] each; zip region
  in [0, 10], 10 = not a US code)."""
  age_scaled = ((age.astype(np.float32) - 35.0) / 15.0)[:, None]
  age_bucket = np.eye(len(AGE_BUCKET_EDGES) + 1, dtype=np.float32)[
      np.searchsorted(AGE_BUCKET_EDGES, age, side="right")
  ]
  return np.concatenate([age_scaled, age_bucket,
                         np.eye(2, dtype=np.float32)[gender.astype(np.int64)],
                         np.eye(num_occupations, dtype=np.float32)[occupation],
                         np.eye(11, dtype=np.float32)[zip_region]], axis=1)


def encode_catalogue(tables: MovieLensTables) -> ItemCatalogue:
  year = tables.item_year.astype(np.float32)
  known = year > 0
  mean = year[known].mean() if known.any() else 0.0
  std = year[known].std() if known.sum() > 1 else 1.0
  standardised = np.where(known, (year - mean) / max(std, 1e-6), 0.0).astype(np.float32)
  return ItemCatalogue(
      genres=tables.item_genres.astype(np.float32),
      year=standardised,
      year_known=known.astype(np.float32),
  )


def select_feedback(tables: MovieLensTables, config: DataConfig) -> MovieLensTables:
  """The interactions `config.feedback` keeps as positives, in file order: all of them
  ("implicit": the same tables), or those rated at least `config.positive_threshold`
  ("threshold"). Users and items stay, with or without interactions; selecting twice is
  selecting once."""
  if config.feedback == "implicit":
    return tables
  keep = tables.ratings >= config.positive_threshold
  if keep.all():
    return tables
  return dataclasses.replace(tables, user_ids=tables.user_ids[keep],
                             item_ids=tables.item_ids[keep], ratings=tables.ratings[keep],
                             timestamps=tables.timestamps[keep])


def feedback_summary(tables: MovieLensTables, kept: MovieLensTables, config: DataConfig) -> str:
  """One line: how many of `tables`' interactions `kept` (`select_feedback`'s) holds, and why the
  others were dropped."""
  total = tables.num_ratings
  if config.feedback == "implicit":
    return (f"data {tables.name}: kept all {total} interactions as positives, dropped none "
            '(data.feedback="implicit": ratings are not used)')
  threshold = f"{config.positive_threshold:g}"
  silent = tables.num_users - np.unique(kept.user_ids).size
  return (f"data {tables.name}: kept {kept.num_ratings} of {total} interactions as positives "
          f"(rated >= {threshold}), dropped {total - kept.num_ratings} rated below {threshold} "
          f'(data.feedback="threshold"); {silent} of {tables.num_users} users have no positive '
          "left")


def apply_feedback(tables: MovieLensTables, config: DataConfig) -> MovieLensTables:
  """`select_feedback`, with its summary line logged (INFO)."""
  kept = select_feedback(tables, config)
  logger.info(feedback_summary(tables, kept, config))
  return kept


def _fewest_for_a_row(share: float) -> int:
  """The fewest interactions of a user for which `_per_user_quota` marks a row at `share`."""
  count = max(2, math.ceil(0.5 / share) - 1)  # the closed form, give or take rounding
  while min(math.floor(share * count + 0.5), count - 1) < 1:
    count += 1
  return count


def evaluation_summary(user: np.ndarray, test: np.ndarray, valid: np.ndarray, num_users: int,
                       config: DataConfig) -> str:
  """One line: how many users have too few interactions for a test (or validation) row, and
  the rule. They still train, but the metrics of that period leave them out."""
  without_test = num_users - np.unique(user[test]).size
  without_valid = num_users - np.unique(user[valid]).size
  if config.split in ("leave_one_out", "pfedrec_loo"):
    rule = (f'data.split="{config.split}" needs at least 2 interactions for a test row, 3 for a '
            "validation row")
  else:
    fewest = _fewest_for_a_row(config.test_share)
    rule = (f'data.split="random" needs at least {fewest} interactions for a test row at '
            f"data.test_share={config.test_share:g}")
  return (f"split: {without_test} of {num_users} users have too few interactions for a test row "
          f"and are left out of the test metrics, {without_valid} out of the validation metrics "
          f"(their interactions still train; {rule})")


def draw_partition(tables: MovieLensTables, config: DataConfig, seed: int) -> Partition:
  """The periods (random per-user quotas, or leave-one-out by time) and the private rows, over
  the interactions `config.feedback` keeps (`select_feedback`)."""
  tables = select_feedback(tables, config)
  rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5E1D]))
  user = tables.user_ids.astype(np.int32)
  every = np.ones(user.shape, bool)
  if config.split == "leave_one_out":
    test, valid = _latest_two(user, tables.timestamps)
  elif config.split == "pfedrec_loo":
    protocol = pfedrec_protocol(tables)
    test, valid = protocol.test, protocol.valid
  else:
    test = _per_user_quota(user, every, config.test_share, rng)
    share_of_rest = config.valid_share / (1.0 - config.test_share)
    valid = _per_user_quota(user, ~test, share_of_rest, rng)
  private = _per_user_quota(user, every, config.private_share, rng)
  return Partition(test=test, valid=valid, private=private)


def build_dataset(tables: MovieLensTables, config: DataConfig, seed: int,
                  partition: Partition | None = None) -> FederatedDataset:
  """Splits `tables` into what the server holds, what clients hold, and the future periods.

  The same tables, config and seed always give the same dataset. Only the interactions
  `config.feedback` keeps are split (`select_feedback`). `partition` replaces nature's draw
  (`draw_partition`) over those: the privacy-boundary test rewrites what private rows say under
  the partition of the clean tables.
  """
  tables = apply_feedback(tables, config)
  partition = draw_partition(tables, config, seed) if partition is None else partition
  if not (partition.test.shape == partition.valid.shape == partition.private.shape
          == tables.user_ids.shape):
    raise ValueError(f"partition masks must be [{tables.user_ids.size}] like the rating rows, got "
                     f"{partition.test.shape}, {partition.valid.shape}, {partition.private.shape}")
  user, item = tables.user_ids.astype(np.int32), tables.item_ids.astype(np.int32)
  test, valid, private = partition
  logger.info(evaluation_summary(user, test, valid, tables.num_users, config))
  train = ~(test | valid)
  fold = deal_folds(user, train, private, config.label_folds, tables.num_users, seed)

  def pick(mask: np.ndarray) -> Interactions:
    return Interactions(user[mask], item[mask])

  public = PublicData(
      num_users=tables.num_users,
      num_items=tables.num_items,
      catalogue=encode_catalogue(tables),
      history=pick(train & ~private),
      fold=fold[train & ~private],
      num_folds=config.label_folds,
      devices=np.ones(tables.num_users, bool),  # every user's device is on the platform
  )
  private_data = PrivateData(
      user_features=encode_user_features(tables),
      history=pick(train & private),
      fold=fold[train & private],
  )
  return FederatedDataset(
      public=public,
      private=private_data,
      valid=Period(pick(valid), private[valid]),
      test=Period(pick(test), private[test]),
  )
