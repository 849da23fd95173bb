"""The whole job checked against its data before training (`pprsf_jax.preflight`), and ratings
read as the format and the config say (`data.feedback`).

The command-line cases run `pprsf` in a subprocess, as a user does: exit status, no traceback,
the field (or file and line) named, and no run folder left behind. The rest call the checks
in-process on small tables.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest

from pprsf_jax import cli, preflight
from pprsf_jax.config import apply_overrides
from pprsf_jax.data.dataset import Partition, build_dataset, draw_partition, select_feedback
from pprsf_jax.data.grouplens import read_grouplens
from pprsf_jax.data.synthetic import generate_synthetic
from pprsf_jax.data.timeline import build_timeline
from pprsf_jax.pipeline import stages
from test_movielens import grouplens_texts, write_files

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = "configs/synthetic_tiny.py"
ONLINE = "configs/synthetic_online.py"
# synthetic_tiny's settings fitted to a 5-user, 10-item catalogue: only the split is left short.
FITTED = ["recall.num_candidates=10", "ranking.top_t=5", "eval.top_k=5",
          "federated.clients_per_round=5"]


def _pprsf(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "pprsf_jax.cli", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=300)


def _small_folder(folder: pathlib.Path, *, per_user: int = 4,
                  ratings: dict[int, str] | None = None,
                  timestamps: dict[int, str] | None = None) -> pathlib.Path:
  """A GroupLens ML-100K folder of 5 users and 10 items, `per_user` ratings each; `ratings` and
  `timestamps` replace the values of u.data's lines (1-based) they name."""
  users = tuple((str(u + 1), 20 + u, "MF"[u % 2], "writer", "12345") for u in range(5))
  items = tuple((str(i + 1), f"Movie {i + 1} (1995)", 1995, ("Drama",)) for i in range(10))
  rows = [(str(u + 1), str((u + j) % 10 + 1), 1 + (u + j) % 5, 880_000_000 + 1000 * u + j)
          for u in range(5) for j in range(per_user)]
  for line, value in (ratings or {}).items():
    rows[line - 1] = (*rows[line - 1][:2], value, rows[line - 1][3])
  for line, value in (timestamps or {}).items():
    rows[line - 1] = (*rows[line - 1][:3], value)
  return write_files(folder, grouplens_texts(users, items, tuple(rows)), "latin-1")


def _assert_refused(result: subprocess.CompletedProcess, status: int, *fragments: str) -> None:
  """Exit `status`, every stderr line a `pprsf: ...` line (no traceback), each fragment named."""
  assert result.returncode == status, result.stderr
  assert "Traceback" not in result.stderr, result.stderr
  assert result.stdout == ""
  lines = result.stderr.splitlines()
  assert lines and all(line.startswith("pprsf: ") for line in lines), result.stderr
  for fragment in fragments:
    assert fragment in result.stderr, (fragment, result.stderr)


# ------------------------------------------------------------------------ the command, refused
def test_a_small_dataset_is_refused_before_training_naming_every_field(tmp_path):
  folder = _small_folder(tmp_path / "small")
  run_dir = tmp_path / "run"
  result = _pprsf("run", TINY, f"data.source={folder}", "--run-dir", str(run_dir))
  _assert_refused(
      result, 2,
      "pprsf: config error: federated.clients_per_round=32 is invalid: the federation has 5 "
      "clients",
      "pprsf: config error: recall.num_candidates=40 is invalid: the catalogue has 10 items",
      "pprsf: config error: ranking.top_t=20 is invalid", "pprsf: config error: eval.top_k=10",
      # 4 ratings a user: round(0.1 * 4) = 0 test rows, so no metric could be reported.
      "pprsf: config error: data.test_share=0.1 is invalid for this data: no user has a test "
      "interaction", "allowed >= 0.125")
  assert not run_dir.exists()


def test_a_small_dataset_leaves_no_folder_under_out_dir(tmp_path):
  folder = _small_folder(tmp_path / "small")
  out_dir = tmp_path / "runs"
  result = _pprsf("run", TINY, f"data.source={folder}", f"out_dir={out_dir}", *FITTED,
                  "--no-progress")
  # Only the split is left: the job that used to train everything and fail in evaluation.
  _assert_refused(result, 2, "data.test_share=0.1 is invalid", "data.valid_share=0.1 is invalid")
  assert len(result.stderr.splitlines()) == 2
  assert not out_dir.exists()


def test_a_cohort_larger_than_the_federation_leaves_no_run_folder(tmp_path):
  run_dir = tmp_path / "run"
  result = _pprsf("run", TINY, "federated.clients_per_round=121", "--run-dir", str(run_dir))
  _assert_refused(result, 2, "pprsf: config error: federated.clients_per_round=121 is invalid: "
                  "the federation has 120 clients (data: synthetic, 120 users, 80 items)")
  assert len(result.stderr.splitlines()) == 1
  assert not run_dir.exists()


def test_the_online_loop_is_checked_before_its_run_folder(tmp_path):
  out_dir = tmp_path / "runs"
  result = _pprsf("online", ONLINE, "federated.clients_per_round=61", "recall.num_candidates=51",
                  f"out_dir={out_dir}")
  _assert_refused(result, 2, "federated.clients_per_round=61 is invalid: the federation has 60",
                  "recall.num_candidates=51 is invalid: the catalogue has 50 items")
  assert not out_dir.exists()


@pytest.mark.parametrize("line, ratings, timestamps, problem", [
    (3, {3: -999}, {}, "rating '-999' is outside the MovieLens scale: allowed a whole number of "
                       "stars from 1 to 5"),
    (7, {7: 6}, {}, "rating '6' is outside the MovieLens scale: allowed a whole number of stars "
                    "from 1 to 5"),
    (2, {}, {2: -1}, "timestamp '-1' is negative: allowed Unix seconds >= 0"),
], ids=["rating-999", "rating6", "negative-timestamp"])
def test_values_outside_the_format_are_one_line_naming_file_and_line(tmp_path, line, ratings,
                                                                       timestamps, problem):
  folder = _small_folder(tmp_path / "bad", ratings=ratings, timestamps=timestamps)
  run_dir = tmp_path / "run"
  result = _pprsf("run", TINY, f"data.source={folder}", "--run-dir", str(run_dir))
  _assert_refused(result, 1, f"pprsf: data error: {folder / 'u.data'} line {line}: {problem}")
  assert len(result.stderr.splitlines()) == 1
  assert not run_dir.exists()


# ------------------------------------------------------------------------ the command, passed
def test_dry_run_loads_the_data_and_prints_what_it_checked(tmp_path, capsys):
  assert cli.main(["run", TINY, f"out_dir={tmp_path / 'runs'}", "--dry-run"]) == 0
  out = capsys.readouterr().out
  checks = out[out.index("preflight: passed"):out.index("stages:")].splitlines()
  assert checks[1] == "  data: synthetic, 120 users, 80 items, 2345 interactions"
  assert any(line.startswith("  eval.top_k=10 <= ranking.top_t=20 < recall.num_candidates=40 <= "
                             "80 items") for line in checks)
  assert any(line.startswith("  test period: 120 users") for line in checks)
  assert not (tmp_path / "runs").exists()


def test_the_synthetic_preset_passes_in_well_under_a_second():
  config = cli.load_config(TINY)
  tables = generate_synthetic(config.data.synthetic, config.seed)
  start = time.perf_counter()
  checked = preflight.preflight(config, "run", tables=tables)
  assert time.perf_counter() - start < 0.5
  assert checked.tables is tables and checked.check_s < 0.5
  assert checked.checked[0].startswith("data: synthetic")
  assert len(checked.checked) >= 5
  online = preflight.preflight(cli.load_config(ONLINE), "online")
  assert online.checked[1].startswith("online.days=3: ")


# ------------------------------------------------------------------------ the checks
@pytest.fixture(name="small")
def _small(tmp_path):
  return read_grouplens(_small_folder(tmp_path / "small"))


def _problems(config, tables, data=None) -> list[str]:
  with pytest.raises(preflight.PreflightError) as caught:
    preflight.check_run(config, tables, data)
  assert str(caught.value) == "\n".join(caught.value.problems)
  return list(caught.value.problems)


def _tiny(*overrides: str):
  return apply_overrides(cli.load_config(TINY), list(overrides))


def test_every_period_must_reach_a_user(small):
  problems = _problems(_tiny(*FITTED), small)
  assert [problem.split("=")[0] for problem in problems] == ["data.test_share",
                                                             "data.valid_share"]
  assert "the most active has 4; allowed >= 0.125" in problems[0]
  # The range it names works: a larger test share gives some user a test interaction.
  fixed = _tiny(*FITTED, "data.test_share=0.125", "data.valid_share=0.2")
  assert preflight.check_run(fixed, small)[0].endswith(", 5 users, 10 items, 20 interactions")
  loo = _problems(_tiny(*FITTED, "data.split=leave_one_out"), _tables_with_per_user(small, 2))
  assert loo == [loo[0]] and loo[0].startswith('data.split="leave_one_out" is invalid for this '
                                               "data: no user has a validation interaction")


def _tables_with_per_user(tables, count: int):
  """The first `count` rows of each user."""
  keep = np.zeros(tables.num_ratings, bool)
  for user in range(tables.num_users):
    keep[np.flatnonzero(tables.user_ids == user)[:count]] = True
  return dataclasses.replace(tables, user_ids=tables.user_ids[keep],
                             item_ids=tables.item_ids[keep], ratings=tables.ratings[keep],
                             timestamps=tables.timestamps[keep])


def test_the_private_share_must_leave_recall_some_public_data():
  config = _tiny()
  tables = generate_synthetic(config.data.synthetic, config.seed)
  drawn = draw_partition(tables, config.data, config.seed)
  every_train_row = ~(drawn.test | drawn.valid)  # every train row private: nothing public
  data = build_dataset(tables, config.data, config.seed,
                       Partition(drawn.test, drawn.valid, every_train_row))
  problems = _problems(config, tables, data)
  assert len(problems) == 1 and problems[0].startswith(
      "data.private_share=0.2 is invalid for this data: the public train log is empty")


def test_limits_that_need_the_data_name_field_and_range():
  config = _tiny("data.split=leave_one_out", "eval.sampled_negatives=80", "ranking.loss=softmax",
                 "ranking.lists_per_step=100000", "privacy.mechanism=local",
                 "privacy.delta=0.01", "federated.attack_target=80")
  tables = generate_synthetic(config.data.synthetic, config.seed)
  problems = {problem.split("=")[0]: problem for problem in _problems(config, tables)}
  assert set(problems) == {"federated.attack_target", "eval.sampled_negatives",
                           "ranking.lists_per_step", "privacy.delta"}
  assert problems["eval.sampled_negatives"].endswith("(> ranking.top_t - 1)")
  assert "allowed an integer in [20, " in problems["eval.sampled_negatives"]
  assert "allowed an integer in [1, " in problems["ranking.lists_per_step"]
  assert "allowed < 1 / 120 = 0.00833" in problems["privacy.delta"]


def test_the_load_stage_refuses_before_any_training(small):
  with pytest.raises(preflight.PreflightError, match=r"^recall.num_candidates=40 is invalid"):
    stages.load(_tiny("federated.clients_per_round=5"), tables=small)


def test_the_online_loop_needs_an_interaction_a_day():
  config = apply_overrides(cli.load_config(ONLINE), ["online.days=365"])
  tables = generate_synthetic(config.data.synthetic, config.seed)
  tables = _tables_with_per_user(tables, 1)  # 60 interactions for 365 days and the log
  with pytest.raises(preflight.PreflightError, match=r"^online.days=365 is invalid: the timeline "
                     r"has only 60 interactions .*allowed an integer in \[1, 59\]$"):
    preflight.check_online(config, tables)


# ------------------------------------------------------------------------ data.feedback
def test_threshold_feedback_keeps_only_ratings_at_or_above_it(small, caplog):
  config = _tiny(*FITTED, "data.feedback=threshold", "data.positive_threshold=3")
  with caplog.at_level(logging.INFO, logger="pprsf_jax.data.dataset"):
    data = build_dataset(small, config.data, config.seed)
  kept = {(u, i) for part in (data.public.history, data.private.history,
                              data.valid.interactions, data.test.interactions)
          for u, i in zip(part.user.tolist(), part.item.tolist())}
  rated = small.ratings >= 3
  assert kept == set(zip(small.user_ids[rated].tolist(), small.item_ids[rated].tolist()))
  assert 0 < len(kept) < small.num_ratings
  assert (f"kept {len(kept)} of 20 interactions as positives (rated >= 3), dropped "
          f"{20 - len(kept)} rated below 3") in caplog.text
  # The online loop replays the same interactions.
  timeline = build_timeline(small, config.data, config.online, config.seed)
  assert (timeline.tables.ratings >= 3).all() and timeline.day.size == len(kept)
  assert select_feedback(select_feedback(small, config.data), config.data).num_ratings == len(kept)


def test_implicit_feedback_keeps_every_interaction_whatever_its_rating(small, caplog):
  config = _tiny(*FITTED)
  assert select_feedback(small, config.data) is small
  with caplog.at_level(logging.INFO, logger="pprsf_jax.data.dataset"):
    data = build_dataset(small, config.data, config.seed)
  assert "kept all 20 interactions as positives, dropped none" in caplog.text
  # The ratings change nothing: every rating 1 splits exactly as the real ones.
  flat = dataclasses.replace(small, ratings=np.ones_like(small.ratings))
  again = build_dataset(flat, config.data, config.seed)
  for part, other in ((data.public.history, again.public.history),
                      (data.test.interactions, again.test.interactions)):
    np.testing.assert_array_equal(part.user, other.user)
    np.testing.assert_array_equal(part.item, other.item)
