"""FedMF, FedNCF and PFedRec-style training on PFedRec's leave-one-out split of ML-100K, on the
leak-free and the published training-negative protocol; prints JSON.

  python scripts/reproduce_literature.py [--models pfedrec mf ncf] [--protocols leak_free published]
                                         [--rounds 100] [--seed 0] [--out runs/literature]

Every client trains in every round through the package's `client_update` and `server_round`
(`pprsf_jax.literature`); the split and the 99 evaluation negatives per held-out item are
PFedRec's, item for item (`pprsf_jax.data.loo_protocol`). One JSON line per round (HR@10 and
NDCG@10 of the validation and test items, for the aggregated model and for each client's own
model after local training, the round's seconds), then a summary per model and protocol: the
figures PFedRec's selection rule picks and the median seconds per round (the first round, which
compiles, excluded). `--out` also receives literature.json and literature_hr10.png.
"""

from __future__ import annotations

import argparse
import json
import logging
import pathlib
import statistics

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position

from pprsf_jax import literature  # pylint: disable=wrong-import-position
from pprsf_jax.data.loo_protocol import pfedrec_split_from_tables  # pylint: disable=wrong-import-position
from pprsf_jax.data.movielens import load_movielens  # pylint: disable=wrong-import-position


def summary(result: literature.Reproduction) -> dict:
  seconds = [record["seconds"] for record in result.per_round[1:]] or [
      result.per_round[0]["seconds"]]
  return {"summary": True, "model": result.model, "protocol": result.protocol,
          "rounds": len(result.per_round), "selected": result.selected,
          "median_seconds_per_round": round(statistics.median(seconds), 4),
          "first_round_seconds": result.per_round[0]["seconds"]}


# PFedRec's own code under each pool (`scripts/pfedrec_reference.py`), drawn beside ours.
REFERENCE = pathlib.Path(__file__).resolve().parents[1] / "docs" / "results"


def reference_curve(protocol: str) -> list[dict]:
  path = REFERENCE / f"pfedrec_own_code_{protocol}.jsonl"
  if not path.exists():
    return []
  records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
  return [r for r in records if "round" in r and not r.get("summary")]


def plot(results: list[literature.Reproduction], path: pathlib.Path) -> None:
  figure, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
  colours = {model: f"C{index}" for index, model in enumerate(literature.SETTINGS)}
  for axis, view in zip(axes, ("global", "own")):
    for result in results:
      style = "-" if result.protocol == "leak_free" else ":"
      axis.plot([r["round"] for r in result.per_round],
                [r[f"{view}_test_hr10"] for r in result.per_round], style,
                color=colours[result.model], label=f"{result.model} ({result.protocol})")
    if view == "own":  # PFedRec evaluates each client's own model
      for protocol in sorted({result.protocol for result in results}):
        curve = reference_curve(protocol)
        if curve:
          axis.plot([r["round"] + 1 for r in curve], [r["test_hr10"] for r in curve],
                    "-" if protocol == "leak_free" else ":", color="black", linewidth=1,
                    label=f"PFedRec's own code ({protocol})")
    axis.set_title({"global": "aggregated Θ + personal state",
                    "own": "each client's own model after local training"}[view])
    axis.set_xlabel("round")
    axis.grid(alpha=0.3)
  axes[0].set_ylabel("test HR@10 (99 sampled negatives)")
  axes[1].legend(fontsize=8)
  figure.suptitle("ML-100K, PFedRec's leave-one-out split: solid = leak-free negatives, "
                  "dotted = published (leaky)")
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  plt.close(figure)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--models", nargs="+", default=list(literature.SETTINGS),
                      choices=sorted(literature.SETTINGS))
  parser.add_argument("--protocols", nargs="+", default=list(literature.PROTOCOLS),
                      choices=literature.PROTOCOLS)
  parser.add_argument("--rounds", type=int, default=100)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", type=pathlib.Path, default=None)
  args = parser.parse_args()
  logging.basicConfig(level=logging.INFO, format="%(message)s")
  split = pfedrec_split_from_tables(load_movielens("ml-100k"))
  results, summaries = [], []
  for model in args.models:
    for protocol in args.protocols:
      result = literature.reproduce(split, model, protocol, rounds=args.rounds, seed=args.seed)
      for record in result.per_round:
        print(json.dumps({"model": model, "protocol": protocol, **record}), flush=True)
      summaries.append(summary(result))
      print(json.dumps(summaries[-1]), flush=True)
      results.append(result)
  if args.out is not None:
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "literature.json").write_text(json.dumps(
        {"summaries": summaries, "per_round": {f"{r.model}/{r.protocol}": r.per_round
                                               for r in results}}, indent=1) + "\n")
    plot(results, args.out / "literature_hr10.png")


if __name__ == "__main__":
  main()
