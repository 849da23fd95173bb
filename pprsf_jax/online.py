"""The multi-day service loop: every day recall → rank → re-rank → responses → logs → next day.

  day d: server retrains recall on the public log so far ─► clients (those already on the
  platform) continue federated training of Θ from day d-1 ─► every user active on day d ranks
  its candidates with Θ and its private data, sends Top-T ─► server re-ranks ─► the user's
  interactions of day d are its responses: clicks where they hit the shown list; public ones
  are logged to the server, private ones stay on the device ─► day d+1 sees both.

The interactions are replayed in time order (`pprsf_jax.data.timeline`), so users and items
arrive as they did in the data: a user whose first interaction falls on day d is served with no
history (recall falls back to its popularity bias; the ranking model still reads the user's
private attributes; re-rank's cold start blends toward popularity), and an item first seen on
day d has no public interactions yet (re-rank's `new_items` strategy gives it slots). On
synthetic data the replayed interactions are draws from the planted model, so they are its
responses.

After every day the run folder gets that day's record (`days.json`) and a checkpoint of Θ; a
killed run resumes after the last completed day and ends where an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import pathlib
import time
from typing import Any

import jax
import numpy as np

from pprsf_jax import checkpoint
from pprsf_jax import config as config_lib
from pprsf_jax import figures
from pprsf_jax import pipeline, preflight
from pprsf_jax import progress as progress_lib
from pprsf_jax import report
from pprsf_jax.config import ConfigError, RunConfig
from pprsf_jax.data.timeline import Timeline, build_timeline
from pprsf_jax.metrics import beyond_accuracy, hit_matrix, per_user_metrics
from pprsf_jax.privacy.server_view import IGNORED
from pprsf_jax.ranking import init_personal_states, make_item_table
from pprsf_jax.recall import item_counts
from pprsf_jax.rerank import final_list, make_reranker
from pprsf_jax.service import serve_period
from pprsf_jax.types import Interactions

logger = logging.getLogger(__name__)

DAYS_FILE = "days.json"
CHECKPOINTS = "day_checkpoints"


def check_online(config: RunConfig) -> None:
  """Refuses settings the loop cannot honour, naming the field to change."""
  why = {
      "privacy.mechanism": (config.privacy.mechanism == "none",
                            '"none": the DP accountant does not yet compose budgets across days'),
      "privacy.audit": (not config.privacy.audit, "false: the audit is a single-run analysis"),
      "eval.sampled_negatives": (config.eval.sampled_negatives == 0,
                                 "0: the online loop serves from the whole catalogue"),
      "federated.attack": (config.federated.attack == "none",
                           '"none": attacks are simulated by `pprsf run`'),
  }
  for field, (ok, allowed) in why.items():
    if not ok:
      value = getattr(getattr(config, field.split(".")[0]), field.split(".")[1])
      raise ConfigError(f"{field}={value!r} is invalid in the online loop: allowed {allowed}")


def day_seed(seed: int, day: int) -> int:
  """The seed of one day's recall training and cohorts: distinct per day, fixed by (seed, day)."""
  return int(np.random.SeedSequence([seed, day]).generate_state(1)[0] % (2**31 - 1))


def _list_metrics(lists: np.ndarray, truth: Interactions, active: np.ndarray, genres: np.ndarray,
                  counts: np.ndarray, num_users: int) -> dict[str, float]:
  """Accuracy of the lists shown to `active` users against their day, and beyond accuracy."""
  num_items = genres.shape[0]
  if not active.any():
    return {}
  hits, num_relevant = hit_matrix(lists, truth, num_items)
  per_user = per_user_metrics(hits[active], num_relevant[active])
  shown = lists[active]
  k = lists.shape[1]
  return ({name: float(np.nanmean(values)) for name, values in per_user.items()}
          | {f"coverage@{k}": float(np.unique(shown[shown >= 0]).size / num_items)}
          | beyond_accuracy(shown, genres, counts, num_users))


def _date(seconds: int) -> str:
  return datetime.datetime.fromtimestamp(int(seconds), datetime.timezone.utc).date().isoformat()


def run_day(timeline: Timeline, day: int, model: tuple[Any, Any], config: RunConfig, *,
            server_view=IGNORED) -> tuple[tuple[Any, Any], dict[str, Any]]:
  """One day of the loop from `model` = (Θ, every user's personal state [N, ...], kept on the
  devices); returns the day's model and its record. What the server receives or computes is
  recorded in `server_view` (`pprsf_jax.privacy.server_view`)."""
  theta, personal = model
  clock = time.perf_counter()
  timings: dict[str, float] = {}

  def lap(name: str) -> None:
    nonlocal clock
    now = time.perf_counter()
    timings[name] = round(now - clock, 3)
    clock = now

  data = timeline.view(day)
  public, private, today = data.public, data.private, data.test
  n, m = public.num_users, public.num_items
  seed = day_seed(config.seed, day)

  # Server: recall retrained on the public log as it stands this morning.
  server_view.record("recall.history", public.history)
  server_view.record("recall.folds", public.fold)
  server_view.record("recall.devices", public.devices)
  recall = pipeline.train_recall(public, config.recall, seed, ("popularity",))
  lap("recall")

  # Devices already registered with the server continue federated training from yesterday's Θ.
  present = np.flatnonzero(public.devices)
  examples = pipeline.training_examples(recall, public, private, config.recall, server_view)
  examples = jax.tree.map(lambda leaf: leaf[present], examples)
  item_table = make_item_table(public.catalogue)
  local = pipeline.local_training(config)
  day_config = dataclasses.replace(
      config, seed=seed,
      federated=dataclasses.replace(config.federated, rounds=config.online.rounds_per_day),
      eval=dataclasses.replace(config.eval, every_rounds=0))
  # Cohorts draw positions in `present`: the declared uploads are recorded by those positions.
  rows = lambda tree: jax.tree.map(lambda leaf: leaf[present], tree)
  training = pipeline.train_federated(theta, rows(personal), examples, item_table, day_config,
                                      local, server_view=server_view)
  theta = training.params
  personal = jax.tree.map(np.array, personal)  # yesterday's states stay as they were
  for table, trained in zip(jax.tree.leaves(personal),
                            jax.tree.leaves(training.clients.personal)):
    table[present] = trained
  lap("federated_training")

  # Serving: every user ranks the server's candidates on its device; the server re-ranks.
  candidates = pipeline.candidates_for(recall.serving.params, config.recall.num_candidates,
                                       recall.serving.known, config.recall)
  server_view.record("candidates.serving", candidates)
  serving = pipeline.examples_from_recall(recall.serving, private.history, Interactions.empty(),
                                          public=public, private=private, config=config.recall,
                                          candidates=candidates)
  top_t, top_k = config.ranking.top_t, config.eval.top_k
  request = pipeline.rank_all(theta, personal, serving, item_table, local=local, top_t=top_t,
                              per_client_params=False)
  server_view.record("request.items", request.items)
  context = pipeline.rerank_context(public, public.history)
  server_view.record("rerank.context", context)
  final = np.asarray(final_list(make_reranker(config.rerank)(request, context), top_k))
  everything = public.history + private.history
  lists = {
      "pprsf (P_FL + re-rank)": final,
      "federated (P_FL)": np.asarray(request.items[:, :top_k]),
      f"recall only ({config.recall.model})": pipeline.candidates_for(
          recall.serving.params, top_k, everything, config.recall).items,
      "popularity": pipeline.candidates_for(recall.baselines["popularity"], top_k, everything,
                                            config.recall).items,
  }
  lap("serve")

  # The day happens: responses, and the logs that feed tomorrow.
  service = serve_period(final, today, m)
  active = np.zeros(n, bool)
  active[today.interactions.user] = True
  new_users = timeline.first_day(timeline.tables.user_ids, n) == day
  counts = item_counts(public.history, m)
  genres = public.catalogue.genres
  new_item = counts[np.maximum(final, 0)] == 0  # no public interaction before today
  shown = final[active]
  metrics = {name: _list_metrics(lists_, today.interactions, active, genres, counts, n)
             for name, lists_ in lists.items()}
  new_user_metrics = {name: _list_metrics(lists_, today.interactions, active & new_users, genres,
                                          counts, n)
                      for name, lists_ in lists.items()}
  first_item_day = timeline.first_day(timeline.tables.item_ids, m)
  lap("responses")
  record = {
      "day": day,
      "from": _date(timeline.day_start[day - 1]), "to": _date(timeline.day_end[day - 1]),
      "interactions": today.interactions.size,
      "active_users": int(active.sum()),
      "new_users": int((active & new_users).sum()),
      "new_items": int((first_item_day == day).sum()),
      "devices_training": int(present.size),
      "federated": {"rounds": config.online.rounds_per_day, "final_loss": training.losses[-1],
                    "rejected_uploads": training.rejected},
      "service": service.stats._asdict(),
      # Share of the shown slots holding an item with no public interaction before the day.
      "new_item_exposure": float(np.mean(new_item[active][shown >= 0])) if shown.size else 0.0,
      "metrics": metrics,
      "new_user_metrics": new_user_metrics,
      "timings_s": timings,
  }
  ndcg = metrics["pprsf (P_FL + re-rank)"].get(f"ndcg@{top_k}", float("nan"))
  logger.info("day %d (%s to %s): %d active users (%d new), %d new items, NDCG@%d %.4f, "
              "click rate %.4f", day, record["from"], record["to"], record["active_users"],
              record["new_users"], record["new_items"], top_k, ndcg, service.stats.click_rate)
  return (theta, personal), record


def _write_days(folder: pathlib.Path, records: list[dict[str, Any]]) -> None:
  path = folder / DAYS_FILE
  temporary = path.with_suffix(".json.tmp")
  with report.writing("the day records", folder):
    temporary.write_text(json.dumps(records, indent=2) + "\n")
    temporary.replace(path)


def _resume(folder: pathlib.Path, model0: tuple[Any, Any]
            ) -> tuple[tuple[Any, Any], list[dict[str, Any]]]:
  """(Θ, personal states) after the last completed day and the records up to it (nothing done:
  `model0`, [])."""
  restored = checkpoint.restore_latest(folder / CHECKPOINTS,
                                       {"theta": model0[0], "personal": model0[1]})
  if restored is None:
    return model0, []
  day, state = restored
  path = folder / DAYS_FILE
  records = report.read_run_file(path, list, "a list of days") if path.exists() else []
  # days.json is written before the checkpoint: it may hold one day more, never one fewer.
  records = [record for record in records if record["day"] <= day]
  if [record["day"] for record in records] != list(range(1, day + 1)):
    raise checkpoint.CheckpointError(
        f"{path}: holds days {[record['day'] for record in records]} but the checkpoint is "
        f"after day {day}; the run folder is inconsistent, start a new one")
  logger.info("resumed after day %d from %s", day, folder)
  return (jax.tree.map(np.asarray, state["theta"]),
          jax.tree.map(np.array, state["personal"])), records


def summarize(records: list[dict[str, Any]], top_k: int) -> dict[str, Any]:
  """Each method's metric averaged over days (days weighted equally)."""
  keys = (f"ndcg@{top_k}", f"recall@{top_k}", f"hit@{top_k}")
  methods = records[0]["metrics"] if records else {}
  return {
      "mean_over_days": {name: {key: float(np.mean([r["metrics"][name][key] for r in records]))
                                for key in keys} for name in methods},
      "click_rate": float(np.mean([r["service"]["click_rate"] for r in records])),
      "new_users": int(sum(r["new_users"] for r in records)),
      "new_items": int(sum(r["new_items"] for r in records)),
  }


def run_online(config: RunConfig, *, progress: bool = True, tables=None,
               run_dir: pathlib.Path | None = None, timeline: Timeline | None = None,
               server_view=IGNORED) -> dict[str, Any]:
  """Runs `config.online.days` days of the service loop and returns every day's record.

  `timeline` replaces the one built from `tables` (the privacy-boundary test passes one whose
  private rows it rewrote); `server_view` keeps what the server receives or computes. Progress is
  reported through `pprsf_jax.progress` (`progress=False` hides it), each day's line at INFO.
  """
  with progress_lib.shown(progress):
    return _run_online(config, tables, run_dir, timeline, server_view)


def _run_online(config: RunConfig, tables, run_dir: pathlib.Path | None,
                timeline: Timeline | None, server_view) -> dict[str, Any]:
  check_online(config)
  if timeline is None:
    tables = pipeline.load_tables(config.data, config.seed) if tables is None else tables
    timeline = build_timeline(tables, config.data, config.online, config.seed)
  tables = timeline.tables
  # Every user the loop will ever see (arrivals included) is the federation the cohort draws from;
  # the whole job is checked against the timeline before day 1 (`pprsf_jax.preflight`).
  preflight.check_online(config, tables, timeline)
  first = timeline.view(1)
  logger.info("data: %d users, %d items, %d interactions; %d logged before day 1, %d days after",
              tables.num_users, tables.num_items, tables.num_ratings,
              int(np.sum(timeline.day == 0)), config.online.days)
  item_table = make_item_table(first.public.catalogue)
  task = pipeline.local_training(config).task
  dims = pipeline.model_dims(first.private.user_features.shape[1], item_table)
  model = (task.init_shared(pipeline.stream_key(config.seed, "theta0"), dims),
           init_personal_states(task, dims, pipeline.stream_key(config.seed, "personal"),
                                tables.num_users))
  records: list[dict[str, Any]] = []
  if run_dir is not None:
    model, records = _resume(run_dir, model)
  for day in range(len(records) + 1, config.online.days + 1):
    model, record = run_day(timeline, day, model, config, server_view=server_view)
    records.append(record)
    if run_dir is not None:
      _write_days(run_dir, records)
      checkpoint.save(run_dir / CHECKPOINTS, day, {"theta": model[0], "personal": model[1]})
  return {
      "config": config_lib.to_dict(config),
      "dataset": {"name": tables.name, "users": tables.num_users, "items": tables.num_items,
                  "interactions": tables.num_ratings,
                  "logged_before_day_1": int(np.sum(timeline.day == 0))},
      "summary": summarize(records, config.eval.top_k),
      "days": records,
  }


def write_report(results: dict[str, Any], folder: pathlib.Path) -> list[pathlib.Path]:
  """online.json, days.md (a table per day, then its figure) and metrics_per_day.png in the run
  folder (RunFolderError, naming the file, if one cannot be written)."""
  with report.writing("the online report", folder):
    return _write_report(results, folder)


def _write_report(results: dict[str, Any], folder: pathlib.Path) -> list[pathlib.Path]:
  top_k = results["config"]["eval"]["top_k"]
  days = results["days"]
  methods = list(days[0]["metrics"]) if days else []
  json_path = folder / "online.json"
  json_path.write_text(json.dumps(results, indent=2) + "\n")

  header = (["day", "dates", "active", "new users", "new items", "click rate",
             "new-item exposure"] + [f"{name} NDCG@{top_k}" for name in methods])
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for r in days:
    cells = [str(r["day"]), f"{r['from']} – {r['to']}", str(r["active_users"]),
             str(r["new_users"]), str(r["new_items"]), f"{r['service']['click_rate']:.4f}",
             f"{r['new_item_exposure']:.4f}"]
    cells += [f"{r['metrics'][name][f'ndcg@{top_k}']:.4f}" for name in methods]
    lines.append("| " + " | ".join(cells) + " |")
  plot_path = figures.online_days(results, folder)
  table_path = folder / "days.md"
  table_path.write_text(f"# {results['config']['name']}: the online loop, day by day\n\n"
                        + "\n".join(lines) + "\n\n"
                        + f"![{figures.CAPTIONS[plot_path.name]}]({plot_path.name})\n")
  return [json_path, table_path, plot_path]
