"""Interactions in time order, cut into an initial log and serving days (the online loop's data).

Every interaction gets, once and for the whole timeline: its day (0 = logged before day 1), whether
it is private (the same per-user share as `build_dataset`), and its cross-fitting fold (public
rows dealt among themselves, private rows among themselves: `deal_folds`). Every user gets a
sign-up day: the device registers with the server on its user's first day of activity, and
federated training draws its cohorts from the registered devices only. Day d's
view holds everything before day d as train history (public on the server, private on the
clients) and day d's interactions as the period the users respond with, so a user who first
appears on day d arrives as a new user and an item first interacted with on day d as a new item.
Only the interactions `data.feedback` keeps are replayed (`pprsf_jax.data.dataset.select_feedback`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from pprsf_jax.config import DataConfig, OnlineConfig
from pprsf_jax.data.dataset import (FederatedDataset, _per_user_quota, apply_feedback,
                                    deal_folds, encode_catalogue, encode_user_features)
from pprsf_jax.data.tables import MovieLensTables
from pprsf_jax.types import Interactions, Period, PrivateData, PublicData


@dataclasses.dataclass(frozen=True)
class Timeline:
  """The tables with each interaction's day, privacy and fold fixed."""

  tables: MovieLensTables
  day: np.ndarray  # [R] int32: 0 = the initial log, d in [1, days] = served on day d
  private: np.ndarray  # [R] bool: stays on the client
  fold: np.ndarray  # [R] int32 cross-fitting fold
  signup_day: np.ndarray  # [N] int32: the day each user's device registers; days + 1 if never
  num_days: int
  num_folds: int
  # Day d covers timestamps [day_start[d - 1], day_end[d - 1]] (Unix seconds).
  day_start: np.ndarray
  day_end: np.ndarray

  def _pick(self, mask: np.ndarray) -> Interactions:
    return Interactions(self.tables.user_ids[mask].astype(np.int32),
                        self.tables.item_ids[mask].astype(np.int32))

  def view(self, day: int) -> FederatedDataset:
    """Day `day`'s world: history = everything before it; `test` = its interactions.

    `valid` is empty: the online loop has no separate validation period.
    """
    if not 1 <= day <= self.num_days:
      raise ValueError(f"timeline: day {day} is outside [1, {self.num_days}]")
    before, today = self.day < day, self.day == day
    tables = self.tables
    public = PublicData(
        num_users=tables.num_users, num_items=tables.num_items,
        catalogue=encode_catalogue(tables),
        history=self._pick(before & ~self.private), fold=self.fold[before & ~self.private],
        num_folds=self.num_folds, devices=self.signup_day < day)
    private = PrivateData(user_features=encode_user_features(tables),
                          history=self._pick(before & self.private),
                          fold=self.fold[before & self.private])
    empty = Period(Interactions.empty(), np.zeros(0, bool))
    return FederatedDataset(public=public, private=private, valid=empty,
                            test=Period(self._pick(today), self.private[today]))

  def first_day(self, ids: np.ndarray, size: int) -> np.ndarray:
    """[size] the day of each user's (or item's, by `ids`) first interaction; days + 1 if none."""
    return _first_day(ids, self.day, size, self.num_days)


def _first_day(ids: np.ndarray, day: np.ndarray, size: int, num_days: int) -> np.ndarray:
  first = np.full(size, num_days + 1, np.int32)
  np.minimum.at(first, ids, day)
  return first


def build_timeline(tables: MovieLensTables, data: DataConfig, online: OnlineConfig,
                   seed: int, private: np.ndarray | None = None,
                   signup_day: np.ndarray | None = None) -> Timeline:
  """Orders the interactions `data.feedback` keeps by time (ties by file order), logs the first
  `history_share` before day 1 and deals the rest into `days` periods of equal interaction count.

  The same tables, configs and seed always give the same timeline. `private` [R] and
  `signup_day` [N] replace nature's draws (the privacy-boundary test holds them fixed while it
  rewrites what private rows say).
  """
  tables = apply_feedback(tables, data)
  count = tables.user_ids.size
  if count < online.days + 1:
    raise ValueError(f"online.days={online.days}: only {count} interactions to spread over the "
                     "initial log and the days")
  order = np.lexsort((np.arange(count), tables.timestamps))
  position = np.empty(count, np.int64)
  position[order] = np.arange(count)
  logged = max(1, min(count - online.days, int(round(online.history_share * count))))
  day = np.zeros(count, np.int32)
  later = position >= logged
  # Equal-count days: rank among the later interactions, scaled to [1, days].
  day[later] = 1 + ((position[later] - logged) * online.days) // (count - logged)
  times = tables.timestamps[order[logged:]]
  bounds = np.concatenate([[0], np.cumsum(np.bincount(day[later] - 1, minlength=online.days))])
  rng = np.random.default_rng(np.random.SeedSequence([seed, 0x0D1E]))
  user = tables.user_ids.astype(np.int32)
  every = np.ones(count, bool)
  if private is None:
    private = _per_user_quota(user, every, data.private_share, rng)
  fold = deal_folds(user, every, private, data.label_folds, tables.num_users, seed)
  if signup_day is None:  # a device registers on its user's first day of activity
    signup_day = _first_day(user, day, tables.num_users, online.days)
  return Timeline(tables=tables, day=day, private=private, fold=fold, signup_day=signup_day,
                  num_days=online.days,
                  num_folds=data.label_folds,
                  day_start=np.asarray([times[s] for s in bounds[:-1]], np.int64),
                  day_end=np.asarray([times[e - 1] for e in bounds[1:]], np.int64))
