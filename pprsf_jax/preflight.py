"""The whole job checked against its data before anything trains, and before a run folder exists.

A config is checked field by field when it is built (`pprsf_jax.config`). What needs the data is
checked here, once it has loaded and been split: the catalogue against the candidates, the
periods against the metrics, what the private share leaves public for recall, the federation
against the cohort. Every check is a condition some stage needs: a job that fails one would fail
later (a traceback from a stage after minutes of training, or a metric over no user), and a job
that passes them all is never refused. A failure is one line naming the config field (or the
data) and what this data allows; all of a job's failures are reported together
(`PreflightError`). The checks take well under a second on ML-100K.

`pprsf run CONFIG --dry-run` runs only this and prints what was checked; `pprsf run` and
`pprsf online` run it before they make a run folder; the pipeline's load stage runs it too.
"""

from __future__ import annotations

import math
import time
from typing import NamedTuple

import numpy as np

from pprsf_jax.config import ConfigError, RunConfig, data_limit_problems
from pprsf_jax.data.dataset import FederatedDataset, build_dataset, select_feedback
from pprsf_jax.data.tables import MovieLensTables
from pprsf_jax.data.timeline import Timeline, build_timeline
from pprsf_jax.privacy.secure_round import config_for_cohort
from pprsf_jax.recall.item_knn import MAX_DENSE_ENTRIES
from pprsf_jax.types import Interactions, PublicData

# Recall models that train on (user, item) pairs: they refuse an empty log, and key each pair
# as user * M + item in int32 (`pprsf_jax.recall.sampling.positive_keys`).
_PAIRWISE = ("bpr", "lightgcn", "two_tower")


class PreflightError(ConfigError):
  """The job cannot run on its data: one line per problem (`problems`), each naming the config
  field (or the data) and what this data allows."""

  def __init__(self, problems: list[str]):
    self.problems = tuple(problems)
    super().__init__("\n".join(self.problems))

  def __reduce__(self):
    return (type(self), (list(self.problems),))


class Preflight(NamedTuple):
  """A job that passed: its tables (to hand to the run) and what was checked."""

  tables: MovieLensTables
  checked: list[str]  # the data, then one line per check passed, for printing
  load_s: float  # seconds reading (or generating) the data
  check_s: float  # seconds splitting it and checking the job


def preflight(config: RunConfig, command: str = "run",
              tables: MovieLensTables | None = None) -> Preflight:
  """Loads the data the config names (unless `tables` are given) and checks the job of
  `command` ("run" or "online") against it.

  Raises:
    PreflightError: The job cannot run on this data.
    DataFormatError, DataUnavailableError: The data could not be loaded.
  """
  from pprsf_jax.pipeline.server import load_tables  # pylint: disable=import-outside-toplevel
  start = time.perf_counter()
  tables = load_tables(config.data, config.seed) if tables is None else tables
  loaded = time.perf_counter()
  check = check_online if command == "online" else check_run
  checked = check(config, tables)
  return Preflight(tables, checked, loaded - start, time.perf_counter() - loaded)


# ------------------------------------------------------------------------------------ the checks
class _Job:
  """The checks' shared state: the config, what the data is called, and the failures so far."""

  def __init__(self, config: RunConfig, tables: MovieLensTables, kept: int):
    self.config = config
    self.problems: list[str] = []
    self.checked: list[str] = []
    data = config.data
    count = (f"{kept} interactions" if data.feedback == "implicit" else
             f"{kept} of {tables.num_ratings} interactions rated >= {data.positive_threshold:g}")
    self.where = (f"data: {data.source}, {tables.num_users} users, {tables.num_items} items, "
                  f"{count}")

  def fail(self, problem: str) -> None:
    self.problems.append(problem)

  def done(self) -> list[str]:
    if self.problems:
      raise PreflightError(self.problems)
    return [self.where, *self.checked]


def check_run(config: RunConfig, tables: MovieLensTables,
              data: FederatedDataset | None = None) -> list[str]:
  """Checks a `pprsf run` job against its tables and their split (`data`, built from the
  tables when not given) and returns the data's description, then what was checked, one line
  each.

  Raises:
    PreflightError: Every check that failed, one line each.
  """
  data = build_dataset(tables, config.data, config.seed) if data is None else data
  public = data.public
  everything = (public.history + data.private.history + data.valid.interactions
                + data.test.interactions)
  job = _Job(config, tables, everything.size)
  _federation(job, public.num_users, public.num_items)
  _catalogue(job, public.num_items)
  _periods(job, data, everything)
  recall_models = (config.recall.model, *config.baselines.recall_models)
  _recall_data(job, public, recall_models)
  _ranking_units(job, data)
  _sampled_negatives(job, data, everything)
  _privacy(job, public.num_users)
  return job.done()


def check_online(config: RunConfig, tables: MovieLensTables,
                 timeline: Timeline | None = None) -> list[str]:
  """Checks a `pprsf online` job against its tables and their timeline (built when not given):
  the day-1 public log trains recall, every day serves from the whole catalogue.

  Raises:
    PreflightError: Every check that failed, one line each.
  """
  kept = select_feedback(tables, config.data).num_ratings if timeline is None else (
      timeline.tables.num_ratings)
  job = _Job(config, tables, kept)
  days = config.online.days
  if kept < days + 1:  # build_timeline's own limit: the log and each day need an interaction
    job.fail(f"online.days={days} is invalid: the timeline has only {kept} interactions "
             f"({job.where}); allowed an integer in [1, {max(kept - 1, 0)}]")
    return job.done()
  timeline = (build_timeline(tables, config.data, config.online, config.seed)
              if timeline is None else timeline)
  job.checked.append(f"online.days={days}: {kept} interactions, "
                     f"{int(np.sum(timeline.day == 0))} logged before day 1")
  _federation(job, tables.num_users, tables.num_items)
  _catalogue(job, tables.num_items)
  _recall_data(job, timeline.view(1).public, (config.recall.model, "popularity"),
               log="the public log before day 1")
  return job.done()


def _federation(job: _Job, num_users: int, num_items: int) -> None:
  """`check_against_data`'s limits: the cohort within the federation, the attack's target
  within the catalogue."""
  fed = job.config.federated
  problems = data_limit_problems(job.config, num_users, num_items)
  job.problems.extend(problems)
  if not problems:
    job.checked.append(f"federated.clients_per_round={fed.clients_per_round} <= {num_users} "
                       "clients" + (f"; federated.attack_target={fed.attack_target} < "
                                    f"{num_items} items" if fed.attack_target >= 0 else ""))


def _catalogue(job: _Job, num_items: int) -> None:
  """Recall retrieves K of the M items; the lists cut from them must fit as well."""
  config = job.config
  k, top_t, top_k = config.recall.num_candidates, config.ranking.top_t, config.eval.top_k
  ok = True
  if k > num_items:
    ok = False
    allowed = (f"an integer in [{top_t + 1}, {num_items}] (> ranking.top_t={top_t})"
               if top_t < num_items else
               f"an integer in [2, {num_items}], with ranking.top_t lowered below it")
    job.fail(f"recall.num_candidates={k} is invalid: the catalogue has {num_items} items "
             f"({job.where}); allowed {allowed}")
  if top_t >= num_items:
    ok = False
    job.fail(f"ranking.top_t={top_t} is invalid: the catalogue has {num_items} items; allowed "
             f"an integer in [1, {num_items - 1}] (>= eval.top_k, < recall.num_candidates)")
  if top_k >= num_items:
    job.fail(f"eval.top_k={top_k} is invalid: the catalogue has {num_items} items; allowed an "
             f"integer in [1, {num_items - 1}] (<= ranking.top_t)")
  elif ok:
    job.checked.append(f"eval.top_k={top_k} <= ranking.top_t={top_t} < recall.num_candidates="
                       f"{k} <= {num_items} items")


def _per_user(interactions: Interactions, num_users: int) -> np.ndarray:
  return np.bincount(interactions.user, minlength=num_users)


def _at_least(value: float) -> str:
  """`value` rounded up to 3 significant digits: a share at least that large suffices."""
  digits = 2 - math.floor(math.log10(value))
  return f"{math.ceil(value * 10**digits) / 10**digits:g}"


def _periods(job: _Job, data: FederatedDataset, everything: Interactions) -> None:
  """Both periods reach some user: validation (P_FL's curve, the service log) and test (every
  method's metrics, the per-client comparison)."""
  num_users = data.public.num_users
  counts = _per_user(everything, num_users)
  test_users = int(np.count_nonzero(_per_user(data.test.interactions, num_users)))
  valid_users = int(np.count_nonzero(_per_user(data.valid.interactions, num_users)))
  if test_users and valid_users:
    job.checked.append(f"test period: {test_users} users with {data.test.interactions.size} "
                       f"interactions; validation period: {valid_users} users with "
                       f"{data.valid.interactions.size}")
    return
  split = job.config.data
  busiest = int(counts.max(initial=0))
  if split.split in ("leave_one_out", "pfedrec_loo"):
    needed, period = (2, "test") if not test_users else (3, "validation")
    job.fail(f'data.split="{split.split}" is invalid for this data: no user has a {period} '
             f"interaction ({job.where}): a user needs {needed} interactions for one (the "
             f"latest tests, the one before validates, one trains) and the most active has "
             f'{busiest}; allowed "random", or data with users of >= {needed} interactions')
    return
  if not test_users:
    # A user with n interactions tests on round(share * n) of them, keeping one to train.
    if busiest < 2:
      job.fail(f"data.source={split.source!r} is invalid: no user has a test interaction "
               f"({job.where}): a user needs 2 interactions for one and the most active has "
               f"{busiest}; allowed data with users of >= 2 interactions")
    else:
      job.fail(f"data.test_share={split.test_share:g} is invalid for this data: no user has a "
               f"test interaction ({job.where}): a user with n interactions tests on "
               f"round(share * n) of them and the most active has {busiest}; allowed "
               f">= {_at_least(0.5 / busiest)} (and data.valid_share + data.test_share < 0.5)")
  if not valid_users:
    # Validation takes round(valid_share / (1 - test_share) * n') of the n' rows left.
    rest = counts - _per_user(data.test.interactions, num_users)
    most = int(rest.max(initial=0))
    if most < 2:
      job.fail(f"data.source={split.source!r} is invalid: no user has a validation interaction "
               f"({job.where}): a user needs 2 interactions beside its test ones and the most "
               f"active has {most}; allowed data with users of >= 3 interactions")
    else:
      job.fail(f"data.valid_share={split.valid_share:g} is invalid for this data: no user has "
               f"a validation interaction ({job.where}): the most active user has {most} "
               "beside its test ones; allowed "
               f">= {_at_least(0.5 * (1 - split.test_share) / most)} (and data.valid_share + "
               "data.test_share < 0.5)")


def _recall_data(job: _Job, public: PublicData, models: tuple[str, ...], *,
                 log: str = "the public train log") -> None:
  """Recall trains on the public log (the serving model and the baselines) and on each fold's
  rest (the cross-fitted models), with item-item neighbours from a dense [N, M] matrix."""
  config = job.config
  names = list(dict.fromkeys(models))
  n, m = public.num_users, public.num_items
  share = config.data.private_share
  size = public.history.size
  pairwise = [name for name in names if name in _PAIRWISE]
  ok = True
  if n * m > MAX_DENSE_ENTRIES:
    ok = False
    job.fail(f"data.source={config.data.source!r} is invalid: {n} users x {m} items = {n * m} "
             f"entries, over the {MAX_DENSE_ENTRIES} (2**30) of the item-item neighbour matrix "
             "recall builds; allowed data within it")
  if size == 0:
    ok = False
    job.fail(f"data.private_share={share:g} is invalid for this data: {log} is empty "
             f"({job.where}), and recall (models {', '.join(names)}) trains on it; allowed a "
             "smaller share that leaves some train interaction public")
  elif config.recall.model in _PAIRWISE:  # the cross-fitted models are recall.model's
    in_fold = np.bincount(public.fold, minlength=public.num_folds)
    rest = size - in_fold
    if rest.min() == 0:
      ok = False
      fold = int(rest.argmin())
      job.fail(f"data.private_share={share:g} is invalid for this data: recall fold {fold} "
               f"would train on no interaction ({log} holds {size}, all in fold {fold} of "
               f'data.label_folds={public.num_folds}), and recall.model="{config.recall.model}"'
               ' needs one; allowed a smaller share, or recall.model="popularity" or "item_knn"')
  if pairwise and n * m >= 2**31:
    ok = False
    job.fail(f"recall.model / baselines.recall_models {', '.join(pairwise)} cannot train on "
             f"{n} users x {m} items (user * items + item overflows int32 keys); allowed "
             '"popularity", "item_knn" or "content" on this data')
  if ok:
    fewest = size - int(np.bincount(public.fold, minlength=public.num_folds).max())
    job.checked.append(f"{log}: {size} interactions (each of the {public.num_folds} recall "
                       f"folds trains on >= {fewest}); recall models {', '.join(names)} fit "
                       f"{n} x {m}")


def _ranking_units(job: _Job, data: FederatedDataset) -> None:
  """P_Sum (`ranking.train_central`) takes whole mini-batches of the pooled training units:
  candidate rows ("bce") or candidate lists with a positive ("softmax"). Counted from above
  (before recall picks the candidates), so a job is refused only when it must fail."""
  config = job.config
  public, private = data.public, data.private
  n, m, k = public.num_users, public.num_items, config.recall.num_candidates
  folds = range(public.num_folds)
  if config.ranking.loss == "bce":
    field, batch = "ranking.batch_size", config.ranking.batch_size
    unit = "candidate rows"
    # Fold f's recall excludes the user's public rows outside fold f: at most M - those remain.
    most = sum(int(np.minimum(k, m - _per_user(public.context(f), n)).sum()) for f in folds)
  else:
    field, batch = "ranking.lists_per_step", config.ranking.lists_per_step
    unit = "candidate lists with a positive"
    # A list has a positive only if the user has a train interaction in that label fold.
    most = sum(int(np.count_nonzero(_per_user(public.labels(f) + private.labels(f), n)))
               for f in folds)
  if most >= batch:
    job.checked.append(f"{field}={batch}: P_Sum's batches fit the at most {most} {unit}")
  elif most == 0:
    job.fail(f"data.source={config.data.source!r} is invalid: it gives the ranking model no "
             f"{unit} to train on ({job.where}); allowed data with train interactions")
  else:
    job.fail(f"{field}={batch} is invalid for this data: P_Sum trains on whole batches of the "
             f"pooled {unit}, and this data gives at most {most} ({job.where}); allowed an "
             f"integer in [1, {most}]")


def _sampled_negatives(job: _Job, data: FederatedDataset, everything: Interactions) -> None:
  """The sampled protocol draws each held-out item's negatives among the items its user never
  interacted with (`metrics.sampled.sample_candidates`)."""
  sampled = job.config.eval.sampled_negatives
  if not sampled:
    return
  n, m = data.public.num_users, data.public.num_items
  held_out = _per_user(data.valid.interactions + data.test.interactions, n) > 0
  unseen = m - _per_user(everything, n)  # interactions are distinct (user, item) pairs
  fewest = int(unseen[held_out].min(initial=m))
  top_t = job.config.ranking.top_t
  if sampled > fewest:
    user = int(np.flatnonzero(held_out & (unseen == fewest))[0])
    job.fail(f"eval.sampled_negatives={sampled} is invalid for this data: user {user} never "
             f"interacted with only {fewest} items ({job.where}); allowed an integer in "
             f"[{top_t}, {fewest}] (> ranking.top_t - 1)")
  else:
    job.checked.append(f"eval.sampled_negatives={sampled} <= {fewest} items every user with a "
                       "held-out item never interacted with")


def _privacy(job: _Job, num_users: int) -> None:
  """The DP plan's delta against the federation; secure aggregation's range against the
  cohort (both checked by federated training only once recall has trained)."""
  privacy, fed = job.config.privacy, job.config.federated
  if privacy.mechanism != "none":
    if privacy.delta >= 1 / num_users:
      job.fail(f"privacy.delta={privacy.delta:g} is invalid: the federation has {num_users} "
               f"clients ({job.where}); allowed < 1 / {num_users} = {1 / num_users:.3g}")
    else:
      job.checked.append(f"privacy.delta={privacy.delta:g} < 1 / {num_users} clients")
  # Fixed and sweeping cohorts hold min(C, N) clients (padding only adds); Poisson ones vary.
  if privacy.secure_aggregation and fed.sampling != "poisson":
    cohort = min(fed.clients_per_round, num_users)
    try:
      config_for_cohort(privacy.secure_aggregation_bound, cohort)
    except ValueError as error:
      job.fail(str(error))
    else:
      job.checked.append(f"privacy.secure_aggregation_bound={privacy.secure_aggregation_bound:g}"
                         f" fits cohorts of {cohort}")
