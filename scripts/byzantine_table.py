"""NDCG@10 and target-item exposure under Byzantine clients, per aggregator, as JSON + a table.

  python scripts/byzantine_table.py [--config configs/ml100k.py] [--rounds 300]
      [--aggregators fedavg median trimmed_mean krum bulyan norm_bounding]
      [--attacks sign_flip scaling gaussian label_flip item_promotion] [--shares 0.05 0.1 0.2]
      [--out byzantine.json] [overrides ...]

Every (aggregator, attack, share) is one `pipeline.run` with `federated.attack`,
`federated.attacker_share` set (plus one clean run per aggregator). Each rule is told the share
it faces: Krum / Bulyan f = ceil(share * cohort), trimmed mean beta = max(0.1, share). Recall
models are trained once and reused. Prints one JSON line per run as it finishes, then the
markdown tables (PPRSF NDCG@10; share of final test lists containing the target item).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

from pprsf_jax import pipeline
from pprsf_jax.cli import load_config
from pprsf_jax.config import apply_overrides

FINAL = "pprsf (P_FL + re-rank)"


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", default="configs/ml100k.py")
  parser.add_argument("--rounds", type=int, default=None)
  parser.add_argument("--aggregators", nargs="+",
                      default=["fedavg", "median", "trimmed_mean", "krum", "bulyan",
                               "norm_bounding"])
  parser.add_argument("--attacks", nargs="+",
                      default=["sign_flip", "scaling", "gaussian", "label_flip",
                               "item_promotion"])
  parser.add_argument("--shares", nargs="+", type=float, default=[0.05, 0.1, 0.2])
  parser.add_argument("--out", default=None, help="also write all results here (JSON)")
  parser.add_argument("overrides", nargs="*", help="section.field=value for every run")
  args = parser.parse_args()

  base = apply_overrides(load_config(args.config), args.overrides + (
      [f"federated.rounds={args.rounds}"] if args.rounds else []))
  cohort = base.federated.clients_per_round
  cache: dict = {}
  rows = []
  settings = [("none", 0.0)] + [(a, s) for a in args.attacks for s in args.shares]
  for aggregator in args.aggregators:
    for attack, share in settings:
      tolerated = max(1, math.ceil(share * cohort))
      config = apply_overrides(base, [
          f"federated.aggregator={aggregator}", f"federated.attack={attack}",
          f"federated.attacker_share={share}", f"federated.byzantine_f={tolerated}",
          f"federated.trimmed_mean_beta={max(0.1, share)}"])
      start = time.perf_counter()
      results = pipeline.run(config, progress=False, recall_cache=cache)
      row = {"aggregator": aggregator, "attack": attack, "share": share,
             "ndcg@10": results["test"][FINAL]["ndcg@10"],
             "p_fl_ndcg@10": results["test"]["federated (P_FL)"]["ndcg@10"],
             "target_exposure": results["attack"]["target_exposure"][FINAL],
             "target_item": results["attack"]["target_item"],
             "attackers": results["attack"]["attackers"],
             "rejected_uploads": results["federated"]["rejected_uploads"],
             "seconds": round(time.perf_counter() - start, 1)}
      rows.append(row)
      print(json.dumps(row), flush=True)
  if args.out:
    with open(args.out, "w") as handle:
      json.dump({"config": args.config, "overrides": args.overrides, "rows": rows}, handle,
                indent=2)
  print(_tables(rows, args.aggregators, settings))


def _tables(rows, aggregators, settings) -> str:
  lookup = {(r["aggregator"], r["attack"], r["share"]): r for r in rows}
  header = "| attack | share | " + " | ".join(aggregators) + " |"
  rule = "|---|---|" + "---|" * len(aggregators)
  out = []
  for title, field, fmt in (("PPRSF NDCG@10", "ndcg@10", "{:.4f}"),
                            ("target-item exposure (share of final lists)", "target_exposure",
                             "{:.3f}")):
    out += ["", f"### {title}", "", header, rule]
    for attack, share in settings:
      cells = [fmt.format(lookup[(a, attack, share)][field]) for a in aggregators]
      out.append(f"| {attack} | {share:g} | " + " | ".join(cells) + " |")
  return "\n".join(out)


if __name__ == "__main__":
  sys.exit(main())
