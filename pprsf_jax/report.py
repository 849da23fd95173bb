"""Results as a markdown table, and the run folder: results.json, results.md with the run's
figures (`pprsf_jax.figures`) and metrics.jsonl, one line per federated round."""

from __future__ import annotations

import contextlib
import json
import math
import os
import pathlib
import time
from typing import Any

from pprsf_jax import figures

METRIC_ORDER = ("ndcg", "recall", "mrr", "hit", "precision", "coverage", "diversity", "novelty",
                "gini")


def results_table(results: dict[str, Any]) -> str:
  """The test-period metrics of every method, one row each, plus delta and local-only lines."""
  test = results["test"]
  columns = sorted(next(iter(test.values())),
                   key=lambda name: METRIC_ORDER.index(name.split("@")[0]))
  lines = ["| method | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
  for method, metrics in test.items():
    lines.append(f"| {method} | " + " | ".join(f"{metrics[c]:.4f}" for c in columns) + " |")
  delta, local = results["delta"], results["local_only"]
  dataset = results["dataset"]
  lines += [
      "",
      f"delta = |P_Sum - P_FL| on {delta['metric']}: {delta['absolute']:.4f} "
      f"({100 * delta['relative']:.1f}% of P_Sum)",
      f"local-only P_i {delta['metric']}: mean {local['mean']:.4f}, best client {local['best']:.4f}; "
      f"P_FL beats P_i for {100 * local['fl_beats_local_share']:.1f}% of clients "
      f"(ties {100 * local['fl_ties_local_share']:.1f}%)"
      + ("" if "whole_candidate_list" not in local else
         f"; on each client's whole candidate ordering ({local['whole_candidate_list']['metric']}) "
         f"for {100 * local['whole_candidate_list']['fl_beats_local_share']:.1f}% "
         f"(ties {100 * local['whole_candidate_list']['fl_ties_local_share']:.1f}%)"),
      f"data: {dataset['name']} ({dataset['source_format']}), {dataset['users']} users, "
      f"{dataset['items']} items; seed {results['config']['seed']}",
  ]
  return "\n".join(lines)


def new_run_folder(out_dir: str, name: str) -> pathlib.Path:
  """Creates and returns a new, empty folder <out_dir>/<name>-<timestamp>[~k].

  Raises:
    RunFolderError: The folder cannot be made (naming it and the cause).
  """
  folder = pathlib.Path(out_dir) / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
  suffix = 1
  while folder.exists():
    folder = folder.with_name(f"{folder.name.split('~')[0]}~{suffix}")
    suffix += 1
  _make_folder(folder, exist_ok=False)
  return folder


class RunFolderMismatch(ValueError):
  """A run folder was started with a different config than the one given to resume it."""


class RunFolderError(RuntimeError):
  """The run folder cannot be made, written or read: the message names the path and the cause."""


def os_cause(error: OSError) -> str:
  """What went wrong in `error`, in words, without the path (the caller names it)."""
  if isinstance(error, FileExistsError) and not os.path.isdir(error.filename or ""):
    return "it exists and is not a folder"
  if isinstance(error, NotADirectoryError):
    return "a part of the path is a file, not a folder"
  return error.strerror or str(error) or type(error).__name__


def _make_folder(folder: pathlib.Path, *, exist_ok: bool) -> None:
  try:
    folder.mkdir(parents=True, exist_ok=exist_ok)
  except OSError as error:
    raise RunFolderError(f"cannot create the run folder {folder}: {os_cause(error)}") from error


def claim_run_folder(folder: pathlib.Path, config: dict[str, Any]) -> bool:
  """Records `config` in folder/config.json, or checks it equals the one recorded there.

  Returns True if the folder already held this run (a resume). A different config in the same
  folder is refused, naming the fields that differ: its checkpoints belong to another run.

  Raises:
    RunFolderMismatch: The folder holds another run's config.
    RunFolderError: The folder cannot be made or written, or its config.json cannot be read
      (missing permission, a full disk, a truncated file, ...).
  """
  _make_folder(folder, exist_ok=True)
  recorded = folder / "config.json"
  if recorded.exists():
    before = _recorded_config(recorded)
    if before != config:
      raise RunFolderMismatch(
          f"{folder} was started with a different config ({', '.join(_differences(before, config))}); "
          "use a new --run-dir or the original config")
    return True
  temporary = recorded.with_suffix(".json.tmp")
  try:
    temporary.write_text(json.dumps(config, indent=2) + "\n")
    temporary.replace(recorded)
  except OSError as error:
    with contextlib.suppress(OSError):  # a half-written file is no record; keep the first error
      temporary.unlink(missing_ok=True)
    raise RunFolderError(f"cannot write {recorded}: {os_cause(error)}") from error
  return False


def read_run_file(path: pathlib.Path, kind: type, what: str) -> Any:
  """The JSON a run folder recorded in `path` (a `kind`, e.g. dict: `what` it should hold), or
  RunFolderError naming the file and what is wrong with it."""
  # Without its own records a run folder cannot be resumed safely: no guessing.
  damaged = "restore it, or start over with a new --run-dir"
  try:
    recorded = json.loads(path.read_text(encoding="utf-8"))
  except OSError as error:
    raise RunFolderError(f"cannot read {path}: {os_cause(error)}") from error
  except ValueError as error:  # JSONDecodeError, UnicodeDecodeError: a damaged file
    raise RunFolderError(f"{path} is damaged (not valid JSON: {error}); {damaged}") from error
  if not isinstance(recorded, kind):
    raise RunFolderError(f"{path} is damaged (holds a JSON {type(recorded).__name__}, not "
                         f"{what}); {damaged}")
  return recorded


def _recorded_config(path: pathlib.Path) -> dict[str, Any]:
  """The config a run folder recorded, or RunFolderError naming the file and what is wrong."""
  return read_run_file(path, dict, "the config object")


@contextlib.contextmanager
def writing(what: str, folder: pathlib.Path):
  """Turns an OSError inside the block into RunFolderError naming the file (or `folder`)."""
  try:
    yield
  except OSError as error:
    # A failed write() names no file; the folder is then the most precise place to name.
    where = error.filename if error.filename is not None else folder
    raise RunFolderError(f"cannot write {what} to {where}: {os_cause(error)}") from error


def _differences(before: Any, after: Any, prefix: str = "") -> list[str]:
  if isinstance(before, dict) and isinstance(after, dict):
    out = []
    for key in sorted(set(before) | set(after)):
      out += _differences(before.get(key), after.get(key), f"{prefix}{key}.")
    return out
  return [] if before == after else [f"{prefix.rstrip('.')}: {before!r} -> {after!r}"]


def metrics_lines(results: dict[str, Any]) -> list[str]:
  """One JSON object per federated round, for pandas or jq.

  Keys: round (1-based), loss, valid_<metric> (null where not evaluated), upload_bytes (mean
  per client upload), rejected, dropped, stragglers (null in results that predate them); with
  DP also epsilon (RDP, spent after the round; under local DP a bound, see
  `figures.epsilon_by_round`) and under central DP clip_norm.
  """
  series = figures.round_series(results)
  columns = {"round": series["round"], "loss": series["loss"],
             f"valid_{figures.metric_name(results)}": series["valid"]}
  columns |= {name: series[name] for name in figures.COUNTERS}
  epsilon = figures.epsilon_by_round(results)
  if epsilon is not None:
    columns["epsilon"] = epsilon
  if "clip_norm" in series:
    columns["clip_norm"] = series["clip_norm"]
  return [json.dumps({name: _json_number(values[index]) for name, values in columns.items()},
                     allow_nan=False)
          for index in range(len(series["round"]))]


def _json_number(value: Any) -> Any:
  # A diverged loss is NaN, which strict JSON readers (jq) refuse; null says "no number".
  return None if isinstance(value, float) and not math.isfinite(value) else value


def results_markdown(results: dict[str, Any], name: str, pictures: list[pathlib.Path]) -> str:
  """results.md: the table, then the figures and a pointer to the per-round record."""
  lines = [f"# {name}", "", results_table(results), "", "## Figures", "",
           "The same per-round figures as data: [metrics.jsonl](metrics.jsonl), one JSON line "
           "per federated round.", ""]
  lines += [f"![{figures.CAPTIONS[path.name]}]({path.name})\n" for path in pictures]
  return "\n".join(lines)


def write_results(results: dict[str, Any], folder: pathlib.Path, name: str) -> None:
  """Writes results.json, metrics.jsonl, the figures and results.md into the run folder.

  Raises:
    RunFolderError: A file cannot be written (naming it and the cause, e.g. a full disk).
  """
  with writing("the results", folder):
    (folder / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (folder / "metrics.jsonl").write_text("".join(line + "\n" for line in metrics_lines(results)))
    pictures = figures.write_figures(results, folder)
    (folder / "results.md").write_text(results_markdown(results, name, pictures))
