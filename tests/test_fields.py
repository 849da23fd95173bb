"""The field reference (`pprsf fields`, docs/configuration.md): every field once, its meaning
from its comment in pprsf_jax/config.py, its allowed values from its checks, the page current."""

from __future__ import annotations

import dataclasses
import pathlib
import subprocess
import sys
import typing

import pytest

from pprsf_jax import cli, fields
from pprsf_jax import config as config_lib
from pprsf_jax.config import ConfigError, RunConfig

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "configuration.md"
SECTIONS = fields.sections()
BY_PATH = {field.path: field for section in SECTIONS for field in section.fields}


def _leaf_paths(cls: type = RunConfig, prefix: str = "") -> list[str]:
  """Every leaf field of the config dataclasses, found independently of `fields`."""
  hints, paths = typing.get_type_hints(cls), []
  for field in dataclasses.fields(cls):
    if dataclasses.is_dataclass(hints[field.name]):
      paths += _leaf_paths(hints[field.name], f"{prefix}{field.name}.")
    else:
      paths.append(f"{prefix}{field.name}")
  return paths


def _owner(path: str) -> tuple[type, str]:
  """(the dataclass holding `path`, the field's name)."""
  *sections, name = path.split(".")
  cls = RunConfig
  for section in sections:
    cls = typing.get_type_hints(cls)[section]
  return cls, name


def test_every_field_is_listed_once_with_a_meaning_and_allowed_values():
  listed = [field.path for section in SECTIONS for field in section.fields]
  assert sorted(listed) == sorted(_leaf_paths())
  assert len(listed) == len(set(listed))
  for field in BY_PATH.values():
    assert field.meaning, f"{field.path} has no # comment in pprsf_jax/config.py"
    assert field.allowed, f"{field.path} has no check in pprsf_jax/config.py"


def test_sections_are_the_nested_dataclasses_and_the_top_level():
  assert [section.name for section in SECTIONS] == [
      "run", "data", "data.synthetic", "recall", "ranking", "federated", "privacy", "baselines",
      "rerank", "eval", "online"]
  assert [field.path for field in SECTIONS[0].fields] == [
      "name", "seed", "out_dir", "checkpoint_every"]
  assert SECTIONS[5].summary == "Federated training of the ranking model."


@pytest.mark.parametrize("path", sorted(BY_PATH))
def test_allowed_values_are_what_the_check_says(path):
  """The reference's words are the error message's: None is no value of any field."""
  cls, name = _owner(path)
  with pytest.raises(ConfigError) as caught:
    cls(**{name: None})
  stated = str(caught.value).split(" is invalid: allowed ", 1)[1]
  assert stated in BY_PATH[path].allowed


def test_rules_that_depend_on_other_fields_are_listed_under_each_field():
  # Checks that only apply under another setting are listed too (they run on every config).
  sampling = BY_PATH["federated.sampling"].allowed
  assert any("under privacy.mechanism != none" in text for text in sampling), sampling
  assert any("when eval.sampled_negatives > 0" in text for text in BY_PATH["data.split"].allowed)
  for path in ("data.valid_share", "data.test_share"):  # one check on their sum
    assert any(text.startswith("data.valid_share + data.test_share <")
               for text in BY_PATH[path].allowed), path
  # Limits that need the data are listed from the same table check_against_data reads.
  assert any(config_lib.DATA_LIMITS["federated.clients_per_round"] in text
             for text in BY_PATH["federated.clients_per_round"].allowed)


def test_meaning_and_default_come_from_the_source():
  assert BY_PATH["federated.rounds"].meaning == "server rounds"
  assert (BY_PATH["federated.rounds"].default, BY_PATH["federated.rounds"].type) == ("300", "int")
  # Comment lines above a field are joined, in order.
  split = BY_PATH["data.split"].meaning
  assert split.startswith('"random": per user at random') and split.endswith(
      "(pprsf_jax.data.loo_protocol; needs eval.sampled_negatives=99).")
  assert '"leave_one_out": per user by time' in split
  assert BY_PATH["ranking.hidden_sizes"].default == "(64, 32)"
  assert BY_PATH["ranking.hidden_sizes"].type == "tuple[int, ...]"
  assert BY_PATH["privacy.audit"].default == "false"
  assert BY_PATH["rerank.rules_exclude_genres"].default == "()"


@pytest.mark.parametrize("path", sorted(BY_PATH))
def test_every_default_is_written_as_an_override_takes_it(path):
  assert config_lib.apply_overrides(RunConfig(), [f"{path}={BY_PATH[path].default}"]) == RunConfig()


def test_allowed_values_leaves_checks_as_they_were():
  config_lib.allowed_values()
  assert config_lib._noted.get() is None  # pylint: disable=protected-access
  with pytest.raises(ConfigError, match="federated.rounds=0"):
    config_lib.FederatedConfig(rounds=0)


def test_select_one_section_one_field_or_refuse_naming_the_sections():
  assert [section.name for section in fields.select("data.synthetic")] == ["data.synthetic"]
  (section,) = fields.select("federated.rounds")
  assert [field.path for field in section.fields] == ["federated.rounds"]
  with pytest.raises(fields.UnknownSection) as caught:
    fields.select("federate")
  message = str(caught.value)
  assert "'federate'" in message
  assert all(section.name in message for section in SECTIONS)


def test_pprsf_fields_prints_a_section(capsys):
  assert cli.main(["fields", "federated"]) == 0
  out = capsys.readouterr().out
  assert out.startswith("[federated] Federated training of the ranking model.")
  for field in SECTIONS[5].fields:
    assert f"  {field.path}={field.default}  ({field.type})" in out
  assert "allowed: an integer >= 1" in out
  assert "[recall]" not in out


def test_pprsf_fields_lists_every_section_and_refuses_an_unknown_one():
  listing = subprocess.run([sys.executable, "-m", "pprsf_jax.cli", "fields"], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
  assert listing.returncode == 0, listing.stderr
  for section in SECTIONS:
    assert f"[{section.name}] " in listing.stdout
  for path in BY_PATH:
    assert f"  {path}=" in listing.stdout
  unknown = subprocess.run([sys.executable, "-m", "pprsf_jax.cli", "fields", "nope"], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
  assert unknown.returncode == 2 and unknown.stdout == ""
  assert unknown.stderr.startswith("pprsf: fields: unknown section 'nope'; known: run, data, "
                                   "data.synthetic, recall"), unknown.stderr
  assert len(unknown.stderr.strip().splitlines()) == 1


def test_the_markdown_page_lists_every_field_and_says_how_to_regenerate_it():
  page = fields.render_markdown()
  assert fields.REGENERATE in page.splitlines()[2] and "Generated" in page.splitlines()[2]
  for field in BY_PATH.values():
    assert f"| `{field.path}` | `{field.type}` | `{field.default}` |" in page


def test_docs_configuration_md_is_up_to_date():
  assert PAGE.is_file() and PAGE.read_text() == fields.render_markdown(), (
      f"docs/configuration.md is out of date with pprsf_jax/config.py: regenerate it with "
      f"`{fields.REGENERATE}` (or `python -m pprsf_jax.fields --markdown > "
      "docs/configuration.md`)")
