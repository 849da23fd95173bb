"""The `pprsf` command. It only parses: the work is `pprsf_jax.pipeline.run`.

  pprsf run configs/ml100k.py [section.field=value ...] [--run-dir DIR] [--dry-run] [--debug]
  pprsf online configs/ml100k_online.py [section.field=value ...] [--run-dir DIR] [--dry-run]
  pprsf fields [SECTION | FIELD] [--markdown]

`run` trains and compares every method over a validation and a test period; `online` replays
the data day by day (`pprsf_jax.online`). Each run gets a folder (config.json, checkpoints,
results); a killed run is resumed by running the same command with `--run-dir` naming its folder.
Before a run folder is made, the data is loaded and the whole job checked against it
(`pprsf_jax.preflight`: candidates against the catalogue, the periods against the metrics, ...):
a job that cannot run is refused with one line per problem and leaves no folder. `--dry-run`
prints the resolved config, what the preflight checked and the stages, and trains nothing.
`fields` lists every config field with its type, default, allowed values and meaning
(docs/configuration.md).
Overrides may come before or after the options.

Every failure is one line on stderr, `pprsf: ...`, and an exit status: 2 a config error
(`pprsf: config error: ...`; a preset that fails to load is named by file:line) or a run folder
started with another config; 1 a data or checkpoint error, a run folder or file that cannot be
made, written or read (the line names the path and the cause: a full disk, no permission, a
damaged config.json, ...), or an internal error (a bug: `pprsf: internal error: ...`). `--debug`
prints Python's traceback before that line (same exit status). Ctrl-C stops as Python does.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import pathlib
import sys
import textwrap
import time
import traceback
import typing

# The config imports JAX (through the registries it checks names against): imported where
# needed, so that `pprsf --help` stays fast.
if typing.TYPE_CHECKING:
  from pprsf_jax.config import RunConfig


def load_config(path: str) -> RunConfig:
  """Imports a preset file and returns its `get_config()`.

  Raises:
    ConfigError: The file is missing or defines no `get_config()` returning a `RunConfig`; or
      it failed to import or in `get_config()` (a syntax error, a NameError, an invalid field
      value, ...): then a `ConfigFileError`, one line `<file>:<line>: <problem>`.
  """
  from pprsf_jax.config import ConfigError, RunConfig  # pylint: disable=import-outside-toplevel
  file = pathlib.Path(path)
  if not file.is_file():
    raise ConfigError(f"config file {path!r} does not exist")
  spec = importlib.util.spec_from_file_location(f"pprsf_config_{file.stem}", file)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except Exception as error:  # pylint: disable=broad-except  (any failure of the user's file)
    raise _located(error, file, path) from None
  if not hasattr(module, "get_config"):
    raise ConfigError(f"config file {path!r} defines no get_config()")
  try:
    config = module.get_config()
  except Exception as error:  # pylint: disable=broad-except
    raise _located(error, file, path) from None
  if not isinstance(config, RunConfig):
    raise ConfigError(f"{path}: get_config() returned {type(config).__name__}, not RunConfig")
  return config


def _located(error: Exception, file: pathlib.Path, shown: str) -> Exception:
  """`error`, raised while loading the preset `file`, as a one-line `ConfigFileError`: the
  preset's line it came through (the innermost), and what went wrong."""
  from pprsf_jax.config import ConfigError, ConfigFileError
  if isinstance(error, ConfigFileError):
    return error  # a preset that loads another (configs/ml1m.py): located by the inner load
  if isinstance(error, SyntaxError):  # no frame runs: the parser names the file and line
    name = shown if error.filename and _same_file(error.filename, file) else error.filename
    where, problem = f"{name}:{error.lineno}", f"{type(error).__name__}: {error.msg}"
  else:
    lines = [frame.lineno for frame in traceback.extract_tb(error.__traceback__)
             if _same_file(frame.filename, file)]
    where = f"{shown}:{lines[-1]}" if lines else shown
    problem = (str(error) if isinstance(error, ConfigError)
               else f"{type(error).__name__}: {error}" if str(error) else type(error).__name__)
  return ConfigFileError(f"{where}: {' '.join(problem.split())}")


def _same_file(name: str, file: pathlib.Path) -> bool:
  try:
    return pathlib.Path(name).resolve() == file.resolve()
  except (OSError, ValueError):  # e.g. "<frozen importlib._bootstrap>" on an odd platform
    return False


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="pprsf", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  commands = parser.add_subparsers(dest="command", required=True)
  command_parsers = {}
  for command, help_text in (
      ("run", "run PPRSF end to end and print the results table"),
      ("online", "run the multi-day service loop and print the per-day table")):
    command_parser = commands.add_parser(
        command, help=help_text, usage="%(prog)s CONFIG [section.field=value ...] [options]")
    command_parsers[command] = command_parser
    command_parser.add_argument("config", metavar="CONFIG", help="a preset file under configs/")
    # default=[]: argparse would otherwise count a "*" positional as required in its messages.
    command_parser.add_argument("overrides", nargs="*", default=[],
                                metavar="section.field=value",
                                help="set a config field (`pprsf fields` lists them), e.g. "
                                "federated.rounds=3; before or after the options")
    command_parser.add_argument("--debug", action="store_true",
                                help="on a failure, print Python's traceback before the one-line "
                                "message (same exit status)")
    command_parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    command_parser.add_argument("--run-dir", type=pathlib.Path, default=None,
                                help="run folder to use, resuming from its checkpoints if it has "
                                "any (default: a new <out_dir>/<name>-<time>)")
    command_parser.add_argument("--dry-run", action="store_true",
                                help="load the data, check the whole job against it and print "
                                "the resolved config, the checks and the stages, then stop: no "
                                "run folder, no training")
    if command == "run":
      group = command_parser.add_argument_group(
          "several processes (jax.distributed): start the same command once per process; "
          "each cohort's clients are sharded over every process's devices")
      group.add_argument("--coordinator", help="host:port of process 0 (it binds exactly this)")
      group.add_argument("--num-processes", type=int, default=1)
      group.add_argument("--process-id", type=int, default=0)
      group.add_argument("--local-cpu-devices", type=int, default=None,
                         help="CPU devices per process (default: JAX's)")
  from pprsf_jax import fields  # pylint: disable=import-outside-toplevel
  fields_parser = commands.add_parser(
      "fields", help="list every config field: type, default, allowed values, meaning")
  fields.add_arguments(fields_parser)
  args = _parse(parser, command_parsers, argv)
  if args.command == "fields":
    return fields.run(args, fields_parser)
  try:
    return _command(args, parser)
  # The one error boundary. KeyboardInterrupt and SystemExit are no Exception: Ctrl-C and
  # argparse's usage errors pass through as before.
  except Exception as error:  # pylint: disable=broad-except
    return _failed(error, debug=args.debug)


def _parse(parser: argparse.ArgumentParser, command_parsers: dict[str, argparse.ArgumentParser],
           argv: list[str] | None) -> argparse.Namespace:
  """The command line's arguments; a run's overrides may come before, between or after options."""
  argv = sys.argv[1:] if argv is None else list(argv)
  # Intermixed parsing cannot go through the subcommands (their positional takes all the rest):
  # the command's own parser reads the words after its name.
  if argv and argv[0] in command_parsers:
    args = command_parsers[argv[0]].parse_intermixed_args(argv[1:])
    args.command = argv[0]
    return args
  return parser.parse_args(argv)


def _command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
  """`run` or `online`: returns the exit status; a failure is raised for `main` to report."""
  distributed = getattr(args, "coordinator", None) is not None
  if distributed and args.run_dir is None:
    parser.error("--coordinator needs --run-dir: every process must use the same run folder")

  # Imported here so `pprsf --help` stays fast.
  from pprsf_jax.config import apply_overrides, to_dict
  preset = load_config(args.config)
  config = apply_overrides(preset, args.overrides)
  if args.command == "online":  # before a run folder exists for a run that cannot start
    from pprsf_jax import online  # pylint: disable=import-outside-toplevel
    online.check_online(config)
  if args.dry_run:
    checked = _preflight(args, config)
    if checked is None:
      return 2
    print(dry_run_report(args, preset, config, checked))
    return 0
  if distributed:  # before anything else starts JAX
    from pprsf_jax.ranking import sharding  # pylint: disable=import-outside-toplevel
    sharding.initialize_distributed(args.coordinator, args.num_processes, args.process_id,
                                    local_cpu_devices=args.local_cpu_devices)
  checked = _preflight(args, config)  # before the run folder: a job that cannot run leaves none
  if checked is None:
    return 2
  print(f"pprsf: preflight passed: the job fits its data ({checked.check_s:.2f} s)",
        file=sys.stderr)
  from pprsf_jax import pipeline, report

  config_record = json.loads(json.dumps(to_dict(config)))  # as config.json will hold it
  if args.run_dir is None:
    folder = report.new_run_folder(config.out_dir, config.name)
    report.claim_run_folder(folder, config_record)
  else:
    folder = args.run_dir
    # One process records the config; the others wait until it has (shared folder).
    if (not distributed or args.process_id == 0) and report.claim_run_folder(folder,
                                                                             config_record):
      print(f"pprsf: resuming the run in {folder}", file=sys.stderr)
    if distributed:
      from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
      multihost_utils.sync_global_devices("pprsf: run folder claimed")
  print(f"pprsf: run folder {folder} (if interrupted, resume with --run-dir {folder})",
        file=sys.stderr)
  start = time.perf_counter()
  # Progress, stage lines and warnings are log records: shown on stderr as `pprsf: ...` lines.
  # INFO for this package only: other libraries (JAX probing for a TPU, ...) speak at WARNING.
  logging.basicConfig(level=logging.WARNING, format="pprsf: %(message)s", stream=sys.stderr)
  logging.getLogger("pprsf_jax").setLevel(logging.INFO)
  if args.command == "online":
    results = online.run_online(config, progress=not args.no_progress, run_dir=folder,
                                tables=checked.tables)
  else:
    results = pipeline.run(config, progress=not args.no_progress, run_dir=folder,
                           tables=checked.tables)
  wall = round(time.perf_counter() - start, 3)
  if distributed and args.process_id != 0:
    return 0  # process 0 writes the results; every process computed the same ones
  if args.command == "online":
    results["wall_s"] = wall
    written = online.write_report(results, folder)
    print((folder / "days.md").read_text())
    print(f"wall time {wall:.1f} s; wrote {', '.join(path.name for path in written)} in {folder}")
    return 0
  results["timings_s"]["total_wall"] = wall
  report.write_results(results, folder, config.name)
  print(report.results_table(results))
  print(f"\nwall time {wall:.1f} s; run folder {folder}")
  return 0


def _failed(error: Exception, *, debug: bool) -> int:
  """Reports a failed command as one `pprsf: ...` line (after the traceback, with --debug) and
  returns its exit status."""
  if debug:
    traceback.print_exception(error)
  try:
    line, status = _failure(error, debug)
  except Exception:  # pylint: disable=broad-except  (e.g. the import that failed is needed here)
    line, status = _internal(error, debug), 1
  print(f"pprsf: {line}", file=sys.stderr)
  return status


def _failure(error: Exception, debug: bool) -> tuple[str, int]:
  """The line a user sees for `error`, and the exit status: 2 where the command line is to
  change (the config, or the run folder named), 1 otherwise."""
  # pylint: disable=import-outside-toplevel
  from pprsf_jax.checkpoint import CheckpointError
  from pprsf_jax.config import ConfigError
  from pprsf_jax.data.tables import DataFormatError, DataUnavailableError
  from pprsf_jax.report import RunFolderError, RunFolderMismatch, os_cause
  if isinstance(error, ConfigError):  # also a limit only the loaded data shows
    return f"config error: {error}", 2
  if isinstance(error, RunFolderMismatch):
    return str(error), 2
  if isinstance(error, (DataFormatError, DataUnavailableError)):
    return f"data error: {error}", 1
  if isinstance(error, CheckpointError):
    return f"checkpoint error: {error}", 1
  if isinstance(error, RunFolderError):
    return str(error), 1
  if isinstance(error, OSError):  # a file in the run folder (a full disk at a checkpoint, ...)
    where = "" if error.filename is None else f"{error.filename}: "
    return f"file error: {where}{os_cause(error)}", 1
  return _internal(error, debug), 1


def _internal(error: Exception, debug: bool) -> str:
  message = " ".join(str(error).split())
  hint = "" if debug else " (run again with --debug for the traceback)"
  return f"internal error: {type(error).__name__}{': ' + message if message else ''}{hint}"


def _preflight(args: argparse.Namespace, config: RunConfig):
  """Loads the data and checks the whole job against it (`pprsf_jax.preflight`). Returns the
  `Preflight` (its tables go on to the run, so the data is read once), or None after one
  `pprsf: config error: ...` line per problem (the caller exits 2). A data error is raised."""
  from pprsf_jax import preflight  # pylint: disable=import-outside-toplevel
  try:
    return preflight.preflight(config, args.command)
  except preflight.PreflightError as error:
    if args.debug:
      traceback.print_exception(error)
    for problem in error.problems:
      print(f"pprsf: config error: {problem}", file=sys.stderr)
    return None


def _flat(data: dict, prefix: str = "") -> dict:
  """{"federated": {"rounds": 3}} as {"federated.rounds": 3}, in field order."""
  flat = {}
  for key, value in data.items():
    flat.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict)
                else {f"{prefix}{key}": value})
  return flat


def dry_run_report(args: argparse.Namespace, preset: RunConfig, config: RunConfig,
                   checked=None) -> str:
  """What `--dry-run` prints: the fields that differ from the defaults (marking those the
  command line set), where the run would write, what the preflight checked (`checked`, a
  `pprsf_jax.preflight.Preflight`) and the stages."""
  from pprsf_jax.config import RunConfig, to_dict  # pylint: disable=import-outside-toplevel
  from pprsf_jax.fields import as_override  # pylint: disable=import-outside-toplevel
  default, given, final = (_flat(to_dict(c)) for c in (RunConfig(), preset, config))
  shown = [path for path in final if final[path] != default[path] or final[path] != given[path]]
  lines = [f"pprsf {args.command} {args.config}: dry run (the data is loaded and the job "
           "checked; nothing is trained, no folder is made)", "",
           f"config {config.name!r}: {len(shown)} field(s) differ from the defaults "
           "(`pprsf fields` lists every field)"]
  width = max([len(f"{path}={as_override(final[path])}") for path in shown], default=0)
  for path in shown:
    note = f"default {as_override(default[path])}"
    if final[path] != given[path]:
      note = f"command line (preset {as_override(given[path])}, {note})"
    lines.append(f"  {f'{path}={as_override(final[path])}':<{width}}  # {note}")
  folder = args.run_dir or pathlib.Path(config.out_dir) / f"{config.name}-<date>-<time>"
  lines += ["", f"run folder: {folder}", ""]
  if checked is not None:
    lines.append(f"preflight: passed in {checked.check_s:.2f} s (after loading the data in "
                 f"{checked.load_s:.2f} s)")
    for line in checked.checked:
      lines += textwrap.wrap(line, 100, initial_indent="  ", subsequent_indent="    ",
                             break_on_hyphens=False)
    lines.append("")
  lines.append("stages:")
  for name, text in _stages(args.command, config):
    lines += textwrap.wrap(text, 100, initial_indent=f"  {name:<18} ", subsequent_indent=" " * 21,
                           break_on_hyphens=False)
  return "\n".join(lines)


def _stages(command: str, config: RunConfig) -> list[tuple[str, str]]:
  """(name, what it does) for each stage of the command's run, in order."""
  if command == "run":
    from pprsf_jax import pipeline  # pylint: disable=import-outside-toplevel
    return list(pipeline.STAGES)
  days, share = config.online.days, config.online.history_share
  return [("load", f"read the data and replay it in time order: the first {share:.0%} of "
                   "interactions is the log before day 1"),
          (f"day 1..{days}" if days > 1 else "day 1",
           f"each day: retrain recall on the public log; {config.online.rounds_per_day} "
           "federated rounds from the previous day's Theta; users active that day rank on "
           "device, the server re-ranks; their interactions are logged for the next day"),
          ("report", "write the per-day table and figure to the run folder")]


if __name__ == "__main__":
  sys.exit(main())
