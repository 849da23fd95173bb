"""The `pprsf` command. It only parses: the work is `pprsf_jax.pipeline.run`.

  pprsf run configs/ml100k.py [section.field=value ...] [--run-dir DIR]
  pprsf online configs/ml100k_online.py [section.field=value ...] [--run-dir DIR]

`run` trains and compares every method over a validation and a test period; `online` replays
the data day by day (`pprsf_jax.online`). Each run gets a folder (config.json, checkpoints,
results); a killed run is resumed by running the same command with `--run-dir` naming its folder.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import pathlib
import sys
import time

from pprsf_jax.config import ConfigError, RunConfig, apply_overrides, to_dict


def load_config(path: str) -> RunConfig:
  """Imports a preset file and returns its `get_config()`."""
  file = pathlib.Path(path)
  if not file.is_file():
    raise ConfigError(f"config file {path!r} does not exist")
  spec = importlib.util.spec_from_file_location(f"pprsf_config_{file.stem}", file)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ConfigError(f"config file {path!r} defines no get_config()")
  config = module.get_config()
  if not isinstance(config, RunConfig):
    raise ConfigError(f"{path}: get_config() returned {type(config).__name__}, not RunConfig")
  return config


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="pprsf", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  commands = parser.add_subparsers(dest="command", required=True)
  for command, help_text in (
      ("run", "run PPRSF end to end and print the results table"),
      ("online", "run the multi-day service loop and print the per-day table")):
    command_parser = commands.add_parser(command, help=help_text)
    command_parser.add_argument("config", help="a preset file under configs/")
    command_parser.add_argument("overrides", nargs="*", help="section.field=value")
    command_parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    command_parser.add_argument("--run-dir", type=pathlib.Path, default=None,
                                help="run folder to use, resuming from its checkpoints if it has "
                                "any (default: a new <out_dir>/<name>-<time>)")
    if command == "run":
      group = command_parser.add_argument_group(
          "several processes (jax.distributed): start the same command once per process; "
          "each cohort's clients are sharded over every process's devices")
      group.add_argument("--coordinator", help="host:port of process 0 (it binds exactly this)")
      group.add_argument("--num-processes", type=int, default=1)
      group.add_argument("--process-id", type=int, default=0)
      group.add_argument("--local-cpu-devices", type=int, default=None,
                         help="CPU devices per process (default: JAX's)")
  args = parser.parse_args(argv)
  distributed = getattr(args, "coordinator", None) is not None
  if distributed and args.run_dir is None:
    parser.error("--coordinator needs --run-dir: every process must use the same run folder")

  # Imported here so `pprsf --help` stays fast and config errors show before JAX starts.
  try:
    config = apply_overrides(load_config(args.config), args.overrides)
  except ConfigError as error:
    print(f"pprsf: config error: {error}", file=sys.stderr)
    return 2
  if distributed:  # before anything else starts JAX
    from pprsf_jax.ranking import sharding  # pylint: disable=import-outside-toplevel
    sharding.initialize_distributed(args.coordinator, args.num_processes, args.process_id,
                                    local_cpu_devices=args.local_cpu_devices)
  from pprsf_jax import pipeline, report
  from pprsf_jax.checkpoint import CheckpointError
  from pprsf_jax.data.movielens import DataFormatError, DataUnavailableError
  if args.command == "online":
    from pprsf_jax import online  # pylint: disable=import-outside-toplevel
    try:  # before a run folder exists for a run that cannot start
      online.check_online(config)
    except ConfigError as error:
      print(f"pprsf: config error: {error}", file=sys.stderr)
      return 2

  config_record = json.loads(json.dumps(to_dict(config)))  # as config.json will hold it
  try:
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
  except report.RunFolderMismatch as error:
    print(f"pprsf: {error}", file=sys.stderr)
    return 2
  print(f"pprsf: run folder {folder} (if interrupted, resume with --run-dir {folder})",
        file=sys.stderr)
  start = time.perf_counter()
  log = lambda message: print(message, file=sys.stderr)
  try:
    if args.command == "online":
      results = online.run_online(config, progress=not args.no_progress, run_dir=folder, log=log)
    else:
      results = pipeline.run(config, progress=not args.no_progress, run_dir=folder, log=log)
  except (DataFormatError, DataUnavailableError) as error:
    print(f"pprsf: data error: {error}", file=sys.stderr)
    return 1
  except CheckpointError as error:
    print(f"pprsf: checkpoint error: {error}", file=sys.stderr)
    return 1
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


if __name__ == "__main__":
  sys.exit(main())
