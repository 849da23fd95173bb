"""The command's front door: a preset that fails to load is one `file:line` line and exit 2,
`--dry-run` shows the config and stages and runs nothing, limits that need the data
(`check_against_data`) are refused naming the federation's size, and the config imports the
registries, never the other way round."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import textwrap

import pytest

from pprsf_jax import cli
from pprsf_jax import pipeline
from pprsf_jax.config import ConfigError, ConfigFileError, RunConfig, apply_overrides, \
    check_against_data
from pprsf_jax.data.movielens import DataUnavailableError

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = "configs/synthetic_tiny.py"


def _pprsf(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "pprsf_jax.cli", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=180)


def _preset(folder: pathlib.Path, name: str, source: str) -> pathlib.Path:
  path = folder / name
  path.write_text(textwrap.dedent(source))
  return path


# ------------------------------------------------------------------ a preset that fails to load
BROKEN = {
    "syntax": ("def get_config(:\n  pass\n", 1, "SyntaxError: "),
    "name_error_at_import": (
        "from pprsf_jax.config import RunConfig\n\nCOHORT = cohort_size\n", 3,
        "NameError: name 'cohort_size' is not defined"),
    "raises_in_get_config": (
        "def helper():\n  return {}['rounds']\n\n\ndef get_config():\n  return helper()\n", 2,
        "KeyError: 'rounds'"),
    "invalid_value": (
        "from pprsf_jax.config import FederatedConfig, RunConfig\n\n\ndef get_config():\n"
        "  return RunConfig(\n      federated=FederatedConfig(rounds=0))\n", 6,
        "federated.rounds=0 is invalid: allowed an integer >= 1"),
    "multi_line_message": (
        "def get_config():\n  raise RuntimeError('first\\nsecond')\n", 2,
        "RuntimeError: first second"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_preset_that_fails_to_load_is_one_line_naming_file_and_line(case, tmp_path, capsys):
  source, line, problem = BROKEN[case]
  path = _preset(tmp_path, f"{case}.py", source)
  assert cli.main(["run", str(path), "--dry-run"]) == 2
  captured = capsys.readouterr()
  assert captured.out == ""
  assert captured.err.startswith(f"pprsf: config error: {path}:{line}: {problem}"), captured.err
  assert captured.err.count("\n") == 1


def test_a_preset_that_loads_a_broken_one_names_the_broken_one(tmp_path):
  inner = _preset(tmp_path, "inner.py", "X = missing\n")
  outer = _preset(tmp_path, "outer.py", f"""\
      from pprsf_jax.cli import load_config


      def get_config():
        return load_config({str(inner)!r})
      """)
  with pytest.raises(ConfigFileError) as caught:
    cli.load_config(str(outer))
  assert str(caught.value) == f"{inner}:1: NameError: name 'missing' is not defined"


def test_the_command_prints_no_traceback_and_exits_2(tmp_path):
  path = _preset(tmp_path, "broken.py", "def get_config():\n  return RunConfig(\n")
  result = _pprsf("run", str(path))
  assert result.returncode == 2
  assert result.stdout == "" and "Traceback" not in result.stderr
  assert result.stderr.startswith(f"pprsf: config error: {path}:2: SyntaxError: "), result.stderr
  assert len(result.stderr.splitlines()) == 1


# ---------------------------------------------------------------------------------- --dry-run
def test_dry_run_prints_the_config_and_stages_and_runs_nothing(tmp_path):
  out_dir = tmp_path / "runs"
  result = _pprsf("run", TINY, "federated.rounds=2", f"out_dir={out_dir}", "--dry-run")
  assert result.returncode == 0, result.stderr
  assert not out_dir.exists()
  out = result.stdout
  assert "dry run" in out.splitlines()[0]
  # Fields set by the preset show their default; those set on the command line say so.
  assert "  data.synthetic.num_users=120" in out and "# default 300" in out
  assert "federated.rounds=2" in out and "# command line (preset 5, default 300)" in out
  assert "  recall.model=" not in out  # the preset keeps the default
  stage_lines = out[out.index("stages:"):].splitlines()[1:]
  assert [line.split()[0] for line in stage_lines] == [name for name, _ in pipeline.STAGES]


def test_online_dry_run_prints_the_day_loop_and_checks_the_online_limits(tmp_path, capsys):
  online = "configs/synthetic_online.py"
  assert cli.main(["online", online, "online.days=4", f"out_dir={tmp_path}", "--dry-run"]) == 0
  out = capsys.readouterr().out
  assert "online.days=4" in out and "  day 1..4 " in out
  assert list(tmp_path.iterdir()) == []
  # The online loop's own limits are checked before a dry run says all is well.
  assert cli.main(["online", online, "privacy.audit=true", "--dry-run"]) == 2
  assert capsys.readouterr().err.startswith("pprsf: config error: privacy.audit=")


# ------------------------------------------------------------------- limits that need the data
def test_a_cohort_larger_than_the_federation_is_refused_naming_its_size():
  config = apply_overrides(RunConfig(), ["federated.clients_per_round=100000",
                                         "data.source=synthetic"])
  with pytest.raises(ConfigError) as caught:
    check_against_data(config, num_users=120, num_items=80)
  assert str(caught.value).startswith(
      "federated.clients_per_round=100000 is invalid: the federation has 120 clients "
      "(data: synthetic, 120 users, 80 items)"), str(caught.value)
  check_against_data(config, num_users=100000, num_items=80)  # every client, every round


def test_an_attack_target_outside_the_catalogue_is_refused():
  config = apply_overrides(RunConfig(), ["federated.attack_target=80"])
  with pytest.raises(ConfigError, match=r"^federated.attack_target=80 is invalid: allowed -1 or "
                     r"an item id < 80$"):
    check_against_data(config, num_users=500, num_items=80)
  check_against_data(config, num_users=500, num_items=81)


def test_the_presets_fit_their_synthetic_federations():
  for preset in sorted((ROOT / "configs").glob("*.py")):
    config = cli.load_config(str(preset))
    if config.data.source == "synthetic":
      synthetic = config.data.synthetic
      check_against_data(config, synthetic.num_users, synthetic.num_items)


def test_a_config_error_during_the_run_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
  def refuse(config, **kwargs):
    check_against_data(config, num_users=120, num_items=80)

  monkeypatch.setattr(pipeline, "run", refuse)
  code = cli.main(["run", TINY, "federated.clients_per_round=121", f"out_dir={tmp_path}",
                   "--no-progress"])
  assert code == 2
  err = capsys.readouterr().err.splitlines()
  assert err[-1].startswith("pprsf: config error: federated.clients_per_round=121 is invalid: "
                            "the federation has 120 clients"), err


def test_pprsf_run_refuses_a_cohort_larger_than_the_data(tmp_path):
  """End to end: the pipeline checks right after loading, before training or a long wait."""
  result = _pprsf("run", TINY, "federated.clients_per_round=121", f"out_dir={tmp_path}",
                  "--no-progress")
  assert result.returncode == 2, result.stderr
  assert "Traceback" not in result.stderr
  assert ("pprsf: config error: federated.clients_per_round=121 is invalid: the federation has "
          "120 clients") in result.stderr


def test_data_errors_still_exit_1(tmp_path, capsys, monkeypatch):
  def unavailable(config, **kwargs):
    raise DataUnavailableError("no network")

  monkeypatch.setattr(pipeline, "run", unavailable)
  assert cli.main(["run", TINY, f"out_dir={tmp_path}", "--no-progress"]) == 1
  assert "pprsf: data error: no network" in capsys.readouterr().err


# ----------------------------------------------------------------------------- import order
def test_the_registries_do_not_import_the_config_and_the_config_imports_alone():
  registries = ("import sys, pprsf_jax.aggregation.registry, pprsf_jax.rerank.registry; "
                "assert 'pprsf_jax.config' not in sys.modules, 'a registry imported the config'")
  config_first = ("import pprsf_jax.config as c; c.RunConfig(); "
                  "import pprsf_jax.aggregation.registry as r; assert c.REDUCERS is r.REDUCERS")
  for code in (registries, config_first):
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=180)
    assert result.returncode == 0, result.stderr


def test_pprsf_help_does_not_start_jax():
  code = "import sys, pprsf_jax.cli, pprsf_jax.fields; assert 'jax' not in sys.modules"
  result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
  assert result.returncode == 0, result.stderr
