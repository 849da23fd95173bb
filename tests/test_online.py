"""The multi-day service loop: the timeline, logs feeding the next day, arrivals, resume, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pprsf_jax import cli, online
from pprsf_jax.cli import load_config
from pprsf_jax.config import ConfigError, apply_overrides
from pprsf_jax.data.synthetic import generate_synthetic
from pprsf_jax.data.timeline import build_timeline
from pprsf_jax.service import serve_period

CONFIG_FILE = "configs/synthetic_online.py"
CONFIG = load_config(CONFIG_FILE)
# Two days are enough to see a day resumed from the one before (and keep the suite quick).
TWO_DAYS = apply_overrides(CONFIG, ["online.days=2"])


@pytest.fixture(scope="module")
def tables():
  return generate_synthetic(CONFIG.data.synthetic, CONFIG.seed)


@pytest.fixture(scope="module")
def timeline(tables):
  return build_timeline(tables, CONFIG.data, CONFIG.online, CONFIG.seed)


def _keys(interactions, num_items):
  return np.sort(interactions.user.astype(np.int64) * num_items + interactions.item)


def test_days_follow_time_and_have_equal_counts(tables, timeline):
  count = tables.user_ids.size
  logged = int(round(CONFIG.online.history_share * count))
  assert np.sum(timeline.day == 0) == logged
  sizes = np.bincount(timeline.day[timeline.day > 0], minlength=CONFIG.online.days + 1)[1:]
  assert sizes.max() - sizes.min() <= 1 and sizes.sum() == count - logged
  # No interaction of an earlier day is later than one of a later day.
  for day in range(CONFIG.online.days):
    assert tables.timestamps[timeline.day == day].max() <= tables.timestamps[timeline.day == day + 1].min()
  assert np.all(timeline.day_start <= timeline.day_end)


def test_a_day_is_served_with_everything_logged_before_it(tables, timeline):
  m = tables.num_items
  for day in range(1, CONFIG.online.days + 1):
    view = timeline.view(day)
    before = timeline.day < day
    history = view.public.history + view.private.history
    want = np.sort(tables.user_ids[before].astype(np.int64) * m + tables.item_ids[before])
    np.testing.assert_array_equal(_keys(history, m), want)
    assert view.test.interactions.size == np.sum(timeline.day == day)
    assert view.valid.interactions.size == 0
  with pytest.raises(ValueError, match="day 0"):
    timeline.view(0)


def test_the_service_logs_of_a_day_are_the_next_days_new_history(timeline, tables):
  """Public responses reach the server's log, private ones only the clients' stores."""
  m = tables.num_items
  for day in range(1, CONFIG.online.days):
    today, tomorrow = timeline.view(day), timeline.view(day + 1)
    lists = np.full((tables.num_users, 5), -1, np.int32)
    logs = serve_period(lists, today.test, m)
    np.testing.assert_array_equal(_keys(today.public.history + logs.public, m),
                                  _keys(tomorrow.public.history, m))
    np.testing.assert_array_equal(_keys(today.private.history + logs.private, m),
                                  _keys(tomorrow.private.history, m))
    # An interaction is private for good: none of tomorrow's public log is private.
    assert not np.isin(_keys(tomorrow.public.history, m), _keys(tomorrow.private.history, m)).any()


def test_users_and_items_arrive_over_the_days(timeline, tables):
  first_user_day = timeline.first_day(tables.user_ids, tables.num_users)
  first_item_day = timeline.first_day(tables.item_ids, tables.num_items)
  assert np.any(first_user_day > 0), "synthetic data should have users joining after day 0"
  assert np.any(first_item_day > 0), "synthetic data should have items released after day 0"
  for day in range(1, CONFIG.online.days + 1):
    view = timeline.view(day)
    newcomers = np.flatnonzero(first_user_day == day)
    assert not np.isin(newcomers, view.public.history.user).any()
    assert not np.isin(newcomers, view.private.history.user).any()


@pytest.fixture(scope="module")
def uninterrupted(tables):
  return online.run_online(TWO_DAYS, progress=False, tables=tables)


def test_every_day_serves_active_users_and_records_metrics(uninterrupted):
  days = uninterrupted["days"]
  assert [record["day"] for record in days] == [1, 2]
  for record in days:
    assert record["active_users"] > 0
    assert record["service"]["shown"] > 0
    for name, metrics in record["metrics"].items():
      assert 0.0 <= metrics["ndcg@10"] <= 1.0, name
    assert 0.0 <= record["new_item_exposure"] <= 1.0
  assert sum(record["new_users"] for record in days) == uninterrupted["summary"]["new_users"]
  # New users get full lists from day one (recall's popularity bias + cold start).
  assert any(record["new_user_metrics"]["pprsf (P_FL + re-rank)"] for record in days)


def test_a_killed_run_resumes_after_its_last_day(tables, uninterrupted, tmp_path, monkeypatch):
  """Day 2 is recomputed from day 1's checkpoint and equals the uninterrupted run's (the same
  config and seed give the same day)."""
  real_run_day = online.run_day

  def dies_on_day_2(timeline, day, *args, **kwargs):
    if day == 2:
      raise KeyboardInterrupt("killed")
    return real_run_day(timeline, day, *args, **kwargs)

  monkeypatch.setattr(online, "run_day", dies_on_day_2)
  with pytest.raises(KeyboardInterrupt):
    online.run_online(TWO_DAYS, progress=False, tables=tables, run_dir=tmp_path)
  assert [record["day"] for record in json.loads((tmp_path / online.DAYS_FILE).read_text())] == [1]
  monkeypatch.setattr(online, "run_day", real_run_day)
  resumed = online.run_online(TWO_DAYS, progress=False, tables=tables, run_dir=tmp_path)
  strip = lambda result: [{key: value for key, value in record.items() if key != "timings_s"}
                          for record in result["days"]]
  assert strip(resumed) == strip(uninterrupted)


@pytest.mark.parametrize("override, field", [
    ("privacy.mechanism=local", "privacy.mechanism"),
    ("privacy.audit=true", "privacy.audit"),
    ("federated.attack=sign_flip", "federated.attack"),
])
def test_settings_the_loop_cannot_honour_are_refused_by_name(override, field):
  config = apply_overrides(CONFIG, [override])
  if field == "federated.attack":
    config = apply_overrides(config, ["federated.attacker_share=0.1"])
  with pytest.raises(ConfigError, match=field):
    online.check_online(config)


def test_online_config_is_validated():
  for override, field in (("online.days=0", "online.days"),
                          ("online.history_share=1", "online.history_share"),
                          ("online.rounds_per_day=0", "online.rounds_per_day")):
    with pytest.raises(ConfigError, match=field):
      apply_overrides(CONFIG, [override])


def test_the_cli_writes_the_day_table_and_plot(tmp_path, capsys):
  folder = tmp_path / "run"
  code = cli.main(["online", CONFIG_FILE, "online.days=1", "--no-progress", "--run-dir",
                   str(folder)])
  assert code == 0
  printed = capsys.readouterr().out
  assert "| 1 |" in printed and "click rate" in printed
  results = json.loads((folder / "online.json").read_text())
  assert len(results["days"]) == 1
  assert (folder / "metrics_per_day.png").stat().st_size > 0
  table = [line for line in (folder / "days.md").read_text().splitlines() if line.startswith("|")]
  assert len(table) == 3  # header, rule, one day


def test_the_cli_refuses_what_the_loop_cannot_honour(tmp_path, capsys):
  code = cli.main(["online", CONFIG_FILE, "privacy.audit=true", "--no-progress",
                   "--run-dir", str(tmp_path / "run")])
  assert code == 2
  assert "privacy.audit" in capsys.readouterr().err
  assert not (tmp_path / "run").exists()  # refused before any run folder was made
