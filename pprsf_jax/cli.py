"""The `pprsf` command. It only parses: the work is `pprsf_jax.pipeline.run`.

  pprsf run configs/ml100k.py [section.field=value ...] [--run-dir DIR]

Each run gets a folder (config.json, checkpoints/, results.json, results.md). A killed run is
resumed by running the same command with `--run-dir` naming its folder.
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
  run_parser = commands.add_parser("run", help="run PPRSF end to end and print the results table")
  run_parser.add_argument("config", help="a preset file under configs/")
  run_parser.add_argument("overrides", nargs="*", help="section.field=value")
  run_parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
  run_parser.add_argument("--run-dir", type=pathlib.Path, default=None,
                          help="run folder to use, resuming from its checkpoints if it has any "
                          "(default: a new <out_dir>/<name>-<time>)")
  args = parser.parse_args(argv)

  # Imported here so `pprsf --help` stays fast and config errors show before JAX starts.
  try:
    config = apply_overrides(load_config(args.config), args.overrides)
  except ConfigError as error:
    print(f"pprsf: config error: {error}", file=sys.stderr)
    return 2
  from pprsf_jax import pipeline, report
  from pprsf_jax.checkpoint import CheckpointError
  from pprsf_jax.data.movielens import DataFormatError, DataUnavailableError

  config_record = json.loads(json.dumps(to_dict(config)))  # as config.json will hold it
  try:
    if args.run_dir is None:
      folder = report.new_run_folder(config.out_dir, config.name)
      report.claim_run_folder(folder, config_record)
    else:
      folder = args.run_dir
      if report.claim_run_folder(folder, config_record):
        print(f"pprsf: resuming the run in {folder}", file=sys.stderr)
  except report.RunFolderMismatch as error:
    print(f"pprsf: {error}", file=sys.stderr)
    return 2
  print(f"pprsf: run folder {folder} (if interrupted, resume with --run-dir {folder})",
        file=sys.stderr)
  start = time.perf_counter()
  try:
    results = pipeline.run(config, progress=not args.no_progress, run_dir=folder,
                           log=lambda message: print(message, file=sys.stderr))
  except (DataFormatError, DataUnavailableError) as error:
    print(f"pprsf: data error: {error}", file=sys.stderr)
    return 1
  except CheckpointError as error:
    print(f"pprsf: checkpoint error: {error}", file=sys.stderr)
    return 1
  results["timings_s"]["total_wall"] = round(time.perf_counter() - start, 3)
  report.write_results(results, folder, config.name)
  print(report.results_table(results))
  print(f"\nwall time {results['timings_s']['total_wall']:.1f} s; run folder {folder}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
