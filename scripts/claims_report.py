"""The paper's claims over seeds, from one command: REPORT.md, summary.json, a PNG.

  python scripts/claims_report.py [--config configs/ml100k.py] [--seeds 0 1 2]
      [--out-dir runs] [--from-runs RUN_FOLDER ...] [overrides ...]

Runs `pprsf run` once per seed (or reads the results.json of finished run folders with
--from-runs) and summarizes them with `pprsf_jax/claims.py`: every method's metrics as mean ±
95% CI, P_FL against P_i per client, δ = |P_Sum − P_FL|, the gain over the best recall-only
model, and the bytes moved. Prints the report; writes it into a new run folder.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shlex
import sys

from pprsf_jax import claims, pipeline
from pprsf_jax.cli import load_config
from pprsf_jax.config import apply_overrides
from pprsf_jax.report import new_run_folder, write_results


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", default="configs/ml100k.py")
  parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
  parser.add_argument("--out-dir", default="runs")
  parser.add_argument("--from-runs", nargs="*", default=[],
                      help="run folders whose results.json to summarize instead of running")
  parser.add_argument("overrides", nargs="*", help="section.field=value for every run")
  args = parser.parse_args()
  base = apply_overrides(load_config(args.config), args.overrides)
  folder = new_run_folder(args.out_dir, f"{base.name}-claims")
  if args.from_runs:
    runs = [json.loads((pathlib.Path(path) / "results.json").read_text())
            for path in args.from_runs]
  else:
    runs = []
    for seed in args.seeds:
      config = apply_overrides(base, [f"seed={seed}"])
      results = pipeline.run(config, progress=False)
      (folder / f"seed{seed}").mkdir()
      write_results(results, folder / f"seed{seed}", f"{config.name} seed {seed}")
      runs.append(results)
      print(f"seed {seed}: done", flush=True)
  written = claims.write(claims.summarize(runs), folder,
                         " ".join(map(shlex.quote, ["python", *sys.argv])))
  print(written[0].read_text())
  print("wrote " + ", ".join(str(path) for path in written))


if __name__ == "__main__":
  main()
