"""Privacy-utility report: NDCG@10, attack AUCs and bytes per (mechanism, target epsilon).

  python scripts/privacy_utility.py [--config configs/ml100k.py]
      [--epsilons 0.5 1 2 4 8 inf] [--mechanisms central local] [--decoys 20 80]
      [--out-dir runs] [overrides ...]

Each point is one `pprsf run` with `privacy.mechanism`, `privacy.target_epsilon` and the
curious-server audit (`privacy.audit=true`); see `pprsf_jax/privacy/tradeoff.py`. Prints one
JSON line per run, then the markdown table; writes rows.json, REPORT.md and PNG plots into a
new run folder.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys

from pprsf_jax.cli import load_config
from pprsf_jax.config import apply_overrides
from pprsf_jax.privacy import tradeoff
from pprsf_jax.report import new_run_folder


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", default="configs/ml100k.py")
  parser.add_argument("--epsilons", nargs="+", type=float, default=[0.5, 1, 2, 4, 8, float("inf")])
  parser.add_argument("--mechanisms", nargs="+", default=["central", "local"],
                      choices=tradeoff.MECHANISMS)
  parser.add_argument("--decoys", nargs="*", type=int, default=[20, 80],
                      help="one extra no-DP run per count of decoys per Top-T request")
  parser.add_argument("--out-dir", default="runs")
  parser.add_argument("overrides", nargs="*", help="section.field=value for every run")
  args = parser.parse_args()
  base = apply_overrides(load_config(args.config), args.overrides)
  rows = tradeoff.sweep(base, args.epsilons, args.mechanisms, tuple(args.decoys),
                        on_row=lambda row: print(json.dumps(row), flush=True))
  folder = new_run_folder(args.out_dir, f"{base.name}-privacy-utility")
  written = tradeoff.write(rows, folder, " ".join(map(shlex.quote, ["python", *sys.argv])))
  print(tradeoff.markdown(rows))
  print("wrote " + ", ".join(str(path) for path in written))


if __name__ == "__main__":
  main()
