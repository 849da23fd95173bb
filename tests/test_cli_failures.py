"""Fail fast, fail clearly (issue 26): a run folder that cannot be made, written or read, a
damaged config.json, a full disk at a checkpoint and any unexpected exception each end in one
`pprsf: ...` line naming the path and the cause, with no traceback unless `--debug`; and the
small things: the usage line, overrides after options, `data.prefix`, the count of users too
small for the metrics.

Where the class is about the process (exit status, what reaches stderr) the command runs in a
subprocess; the rest call `cli.main` in this process, with the work that would follow replaced.
"""

from __future__ import annotations

import logging
import os
import pathlib
import shutil
import stat
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from pprsf_jax import checkpoint, cli, pipeline
from pprsf_jax.config import DataConfig
from pprsf_jax.data.dataset import build_dataset
from pprsf_jax.data.tables import DataFormatError
from pprsf_jax.pipeline.server import load_tables
from test_checkpoint import _full_disk_after
from test_movielens import recbole_texts, write_files

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = "configs/synthetic_tiny.py"
# Seconds, not minutes, should a run get as far as training.
FAST = ["federated.rounds=2", "recall.epochs=1", "baselines.central_epochs=1",
        "baselines.local_only_epochs=1"]


@pytest.fixture(autouse=True)
def _package_log_level():
  """`cli.main` shows the package's INFO records, as a process would: not to the next test."""
  package = logging.getLogger("pprsf_jax")
  level = package.level
  yield
  package.setLevel(level)


def _pprsf(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
  """The command in a fresh process (`prefix`: a command to run it under)."""
  return subprocess.run([*prefix, sys.executable, "-m", "pprsf_jax.cli", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"))


def _one_line(stderr: str) -> str:
  """The failure line of a command's stderr, checked to be the only thing that says so."""
  assert "Traceback" not in stderr, stderr
  line = stderr.strip().splitlines()[-1]
  assert line.startswith("pprsf: "), stderr
  return line


def _files(folder: pathlib.Path) -> list[str]:
  return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


# ------------------------------------------------------------------------- the run folder
def test_a_run_folder_that_is_a_file_is_one_line(tmp_path):
  taken = tmp_path / "taken"
  taken.write_text("not a run folder\n")
  result = _pprsf("run", TINY, *FAST, "--run-dir", str(taken))
  assert result.returncode == 1
  assert _one_line(result.stderr) == (
      f"pprsf: cannot create the run folder {taken}: it exists and is not a folder")
  assert _files(tmp_path) == ["taken"] and taken.read_text() == "not a run folder\n"


@pytest.mark.parametrize("where", ["--run-dir", "out_dir"])
def test_a_run_folder_under_a_file_is_one_line(where, tmp_path, capsys):
  (tmp_path / "file").write_text("")
  below = tmp_path / "file" / "runs"
  args = ["--run-dir", str(below)] if where == "--run-dir" else [f"out_dir={below}"]
  assert cli.main(["run", TINY, *FAST, *args]) == 1
  line = _one_line(capsys.readouterr().err)
  assert line.startswith(f"pprsf: cannot create the run folder {below}"), line
  assert line.endswith(": a part of the path is a file, not a folder"), line
  assert _files(tmp_path) == ["file"]


def _read_only_prefix(folder: pathlib.Path) -> tuple[tuple[str, ...], str]:
  """How to run a command for which `folder` cannot be written, and the cause it will see.

  Not as root, permissions do it. Root writes whatever the mode says: there a mount namespace
  of the command's own lays a read-only file system over the folder (gone when it exits).
  """
  if os.geteuid() != 0:
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)  # 0o500
    return (), "Permission denied"
  command = ("unshare", "--mount", "sh", "-c",
             'mount -t tmpfs -o ro pprsf-read-only "$0" && exec "$@"', str(folder))
  probe = subprocess.run([*command, "true"], capture_output=True, text=True, check=False)
  if shutil.which("unshare") is None or probe.returncode != 0:
    pytest.skip("running as root, where chmod does not stop writes, and no mount namespace "
                f"for a read-only file system here ({probe.stderr.strip()})")
  return command, "Read-only file system"


def test_a_read_only_run_folder_is_one_line(tmp_path):
  folder = tmp_path / "read-only"
  folder.mkdir()
  prefix, cause = _read_only_prefix(folder)
  try:
    result = _pprsf("run", TINY, *FAST, "--run-dir", str(folder), prefix=prefix)
  finally:
    folder.chmod(stat.S_IRWXU)
  assert result.returncode == 1
  assert _one_line(result.stderr) == f"pprsf: cannot write {folder / 'config.json'}: {cause}"
  assert _files(tmp_path) == ["read-only"]


def test_a_truncated_config_json_of_a_resumed_run_names_the_file(tmp_path):
  run_dir = tmp_path / "run"
  run_dir.mkdir()
  recorded = run_dir / "config.json"
  recorded.write_text('{"name": "synthetic-tiny", "seed": ')  # cut short by a full disk
  result = _pprsf("run", TINY, *FAST, "--run-dir", str(run_dir))
  assert result.returncode == 1
  line = _one_line(result.stderr)
  assert line.startswith(f"pprsf: {recorded} is damaged (not valid JSON: Expecting value"), line
  assert line.endswith("restore it, or start over with a new --run-dir"), line
  assert _files(tmp_path) == ["run", "run/config.json"]
  assert recorded.read_text() == '{"name": "synthetic-tiny", "seed": '  # left for the user


# A save whose file takes a few bytes, then fails as a full disk does.
_FullDisk = _full_disk_after(16)


def test_a_full_disk_at_a_checkpoint_is_one_line_and_leaves_no_temporary_file(
    tmp_path, monkeypatch, capsys):
  run_dir = tmp_path / "run"
  checkpoints = run_dir / "checkpoints"
  state = {"w": np.arange(6, dtype=np.float32)}

  def training(config, *, run_dir, **unused):  # round 0 is saved, then the disk is full
    del config, unused
    checkpoint.save(run_dir / "checkpoints", 0, state)
    monkeypatch.setattr(checkpoint, "open", _FullDisk, raising=False)
    checkpoint.save(run_dir / "checkpoints", 1, state)

  monkeypatch.setattr(pipeline, "run", training)
  assert cli.main(["run", TINY, *FAST, "--run-dir", str(run_dir), "--no-progress"]) == 1
  assert _one_line(capsys.readouterr().err) == (
      f"pprsf: file error: {checkpoints / 'round-000001.ckpt'}: No space left on device")
  assert _files(checkpoints) == ["round-000000.ckpt"]  # no .tmp; the earlier one survives
  monkeypatch.undo()
  assert checkpoint.restore_latest(checkpoints, state)[0] == 0


# ------------------------------------------------------------------- an unexpected exception
PLANTED = """\
    from pprsf_jax import pipeline
    from pprsf_jax.cli import load_config


    def _fails(*args, **kwargs):
      raise RuntimeError("planted\\nfailure")


    def get_config():
      pipeline.run = _fails  # a bug in the run, as far as the command can tell
      return load_config({tiny!r})
    """


def test_an_unexpected_exception_is_one_internal_error_line(tmp_path):
  preset = tmp_path / "planted.py"
  preset.write_text(textwrap.dedent(PLANTED.format(tiny=str(ROOT / TINY))))
  result = _pprsf("run", str(preset), *FAST, "--run-dir", str(tmp_path / "run"))
  assert result.returncode == 1
  assert _one_line(result.stderr) == ("pprsf: internal error: RuntimeError: planted failure "
                                      "(run again with --debug for the traceback)")


def test_debug_prints_the_traceback_then_the_line(tmp_path, monkeypatch, capsys):
  def fails(*args, **kwargs):
    raise RuntimeError("planted")

  monkeypatch.setattr(pipeline, "run", fails)
  assert cli.main(["run", TINY, *FAST, "--run-dir", str(tmp_path / "run"), "--debug"]) == 1
  err = capsys.readouterr().err
  assert "Traceback (most recent call last)" in err and "in fails" in err
  assert err.strip().splitlines()[-1] == "pprsf: internal error: RuntimeError: planted"
  # The classes the command knows keep their line and status; --debug adds the traceback.
  assert cli.main(["run", TINY, "federated.rounds=0", "--debug"]) == 2
  err = capsys.readouterr().err
  assert "Traceback" in err and err.strip().splitlines()[-1].startswith(
      "pprsf: config error: federated.rounds=0 is invalid")


# -------------------------------------------------------------------------- the small things
def test_the_usage_line_shows_the_overrides_as_optional():
  result = _pprsf("run")
  assert result.returncode == 2
  assert result.stderr.splitlines()[0] == (
      "usage: pprsf run CONFIG [section.field=value ...] [options]")
  assert result.stderr.splitlines()[-1].endswith("the following arguments are required: CONFIG")


@pytest.mark.parametrize("order", ["after", "between", "before"])
def test_overrides_go_before_or_after_the_options(order, tmp_path, capsys):
  run_dir = tmp_path / "run"
  options = ["--run-dir", str(run_dir), "--dry-run"]
  overrides = ["federated.rounds=3", "recall.epochs=1"]
  args = {"after": [*options, *overrides],
          "between": [options[0], options[1], overrides[0], options[2], overrides[1]],
          "before": [*overrides, *options]}[order]
  assert cli.main(["run", TINY, *args]) == 0
  out = capsys.readouterr().out
  assert "federated.rounds=3" in out and "recall.epochs=1" in out
  assert f"run folder: {run_dir}" in out and not run_dir.exists()


def _two_recbole_datasets(folder: pathlib.Path) -> pathlib.Path:
  write_files(folder, recbole_texts(prefix="ml-100k"), "utf-8")
  texts = recbole_texts(prefix="other")
  texts["other.inter"] = "\n".join(texts["other.inter"].splitlines()[:3]) + "\n"  # 2 ratings
  return write_files(folder, texts, "utf-8")


def test_data_prefix_chooses_the_recbole_files(tmp_path):
  folder = _two_recbole_datasets(tmp_path / "two")
  assert load_tables(DataConfig(source=str(folder), prefix="other"), 0).num_ratings == 2
  assert load_tables(DataConfig(source=str(folder), prefix="ml-100k"), 0).num_ratings == 5
  with pytest.raises(DataFormatError) as caught:
    load_tables(DataConfig(source=str(folder)), 0)
  assert str(caught.value).endswith(
      "found ml-100k.inter, other.inter; name one with data.prefix=, e.g. data.prefix=ml-100k")
  with pytest.raises(DataFormatError, match=r"two/absent\.(inter|user|item): file not found"):
    load_tables(DataConfig(source=str(folder), prefix="absent"), 0)


def test_the_command_names_data_prefix_for_two_recbole_datasets(tmp_path, capsys):
  folder = _two_recbole_datasets(tmp_path / "two")
  status = cli.main(["run", TINY, f"data.source={folder}", "--run-dir", str(tmp_path / "run")])
  assert status == 1
  line = _one_line(capsys.readouterr().err)
  assert line.startswith("pprsf: data error: ") and "data.prefix=" in line, line


@pytest.mark.parametrize("split,without_test,without_valid,rule", [
    ("random", 4, 4, 'data.split="random" needs at least 5 interactions for a test row at '
     "data.test_share=0.1"),
    ("leave_one_out", 3, 4, 'data.split="leave_one_out" needs at least 2 interactions for a test '
     "row, 3 for a validation row"),
])
def test_users_too_small_for_the_metrics_are_counted(split, without_test, without_valid, rule,
                                                      tmp_path, caplog):
  # 4 users: one with 2 ratings, three with 1.
  folder = write_files(tmp_path / "d", recbole_texts(), "utf-8")
  config = DataConfig(source=str(folder), split=split)
  with caplog.at_level(logging.INFO, logger="pprsf_jax.data.dataset"):
    build_dataset(load_tables(config, 0), config, 0)
  lines = [record.getMessage() for record in caplog.records
           if record.getMessage().startswith("split: ")]
  assert lines == [
      f"split: {without_test} of 4 users have too few interactions for a test row and are left "
      f"out of the test metrics, {without_valid} out of the validation metrics (their "
      f"interactions still train; {rule})"]


def test_a_data_prefix_that_reads_nothing_is_refused():
  with pytest.raises(ValueError, match=r'data.prefix=\'x\' is invalid: allowed empty with '
                     r'data.source="synthetic"'):
    DataConfig(source="synthetic", prefix="x")
  with pytest.raises(ValueError, match=r"data.prefix='a/b' is invalid: allowed a file name stem"):
    DataConfig(source="folder", prefix="a/b")


@pytest.mark.parametrize("days", ["[{\"day\": 1", "{\"day\": 1}"])
def test_a_damaged_day_record_is_named_when_an_online_run_resumes(tmp_path, days):
  from pprsf_jax import online, report  # pylint: disable=import-outside-toplevel
  model0 = ({"w": np.zeros(3, np.float32)}, {"user": np.zeros((2, 3), np.float32)})
  checkpoint.save(tmp_path / online.CHECKPOINTS, 1, {"theta": model0[0], "personal": model0[1]})
  (tmp_path / online.DAYS_FILE).write_text(days)
  with pytest.raises(report.RunFolderError, match=f"{online.DAYS_FILE} is damaged"):
    online._resume(tmp_path, model0)  # pylint: disable=protected-access


def test_an_online_report_that_cannot_be_written_names_the_file(tmp_path):
  from pprsf_jax import online, report  # pylint: disable=import-outside-toplevel
  (tmp_path / "online.json").mkdir()  # a folder where the file must go
  results = {"config": {"name": "x", "eval": {"top_k": 10}}, "days": []}
  with pytest.raises(report.RunFolderError, match="online.json"):
    online.write_report(results, tmp_path)
