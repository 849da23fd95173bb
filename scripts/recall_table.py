"""Recall@10 and NDCG@10 of every recall model on ML-100K under RecBole's protocol, as JSON.

  python scripts/recall_table.py [--seeds 0 1 2] [--train-on all|public]
      [--models popularity item_knn content bpr lightgcn two_tower] [overrides ...]

Protocol (RecBole's defaults for general recommendation): each user's interactions split at
random 8:1:1 into train / valid / test (`build_dataset` with the default DataConfig, one split per
seed); full ranking over the whole catalogue. At test time the user's train AND valid
interactions are masked (RecBole's sampler accumulates "used" items phase by phase, so the test
phase excludes train + valid; the valid phase excludes train only); users without a test
interaction are left out of the averages.

`--train-on all` (default) trains on the public and private train interactions pooled, as
RecBole would (it has no privacy split); `--train-on public` on the public ones only (what the
PPRSF server sees). The masks are the same either way: all of the user's train (+ valid)
interactions. Training time is the wall time of the model's trainer (ItemKNN: its neighbour
lists too), JIT compilation included, so the first seed is the slowest.

Prints one JSON object on stdout, nothing else (progress goes to stderr): per model, the mean and
95% t-interval half-width over seeds of test Recall@10, NDCG@10 (and the valid figures the
defaults were tuned on) and training seconds, plus the per-seed values. Overrides are
`section.field=value` as for `pprsf run` (e.g. `recall.lightgcn_epochs=50`, `data.source=...`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import jax

from pprsf_jax import pipeline
from pprsf_jax.claims import mean_ci
from pprsf_jax.config import RunConfig, apply_overrides, to_dict
from pprsf_jax.data.dataset import build_dataset
from pprsf_jax.metrics import evaluate_lists
from pprsf_jax.recall import RECALL_MODELS, retrieve
from pprsf_jax.recall.item_knn import item_neighbors
from pprsf_jax.types import Interactions

K = 10
# RecBole's published BPR on ML-100K (random 8:1:1, full ranking; recbole.io leaderboard).
RECBOLE_BPR = {"recall@10": 0.2523, "ndcg@10": 0.2920}


def _log(message: str) -> None:
  print(message, file=sys.stderr, flush=True)


def _summary(values: list[float]) -> dict[str, float | None]:
  mean, half = mean_ci(values)
  return {"mean": round(mean, 4), "ci95": None if math.isnan(half) else round(half, 4)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
  parser.add_argument("--train-on", choices=("all", "public"), default="all")
  parser.add_argument("--models", nargs="+", choices=sorted(RECALL_MODELS),
                      default=["popularity", "item_knn", "content", "bpr", "lightgcn",
                               "two_tower"])
  parser.add_argument("overrides", nargs="*", help="section.field=value")
  args = parser.parse_args()
  config = apply_overrides(RunConfig(), args.overrides)

  runs: dict[str, list[dict[str, float]]] = {model: [] for model in args.models}
  tables = None
  for seed in args.seeds:
    # Real datasets do not depend on the seed (only their split does): load them once.
    if tables is None or config.data.source == "synthetic":
      tables = pipeline.load_tables(config.data, seed)
    data = build_dataset(tables, config.data, seed)
    public = data.public
    train = public.history + (data.private.history if args.train_on == "all" else
                              Interactions.empty())
    known_at_valid = public.history + data.private.history
    known_at_test = known_at_valid + data.valid.interactions
    for model in args.models:
      start = time.perf_counter()
      neighbors = (item_neighbors(train, public.num_users, public.num_items,
                                  num_neighbors=config.recall.num_neighbors)
                   if model == "item_knn" else None)
      params = RECALL_MODELS[model](train, public, config.recall,
                                    key=pipeline.stream_key(seed, "recall_serving"),
                                    neighbors=neighbors)
      jax.block_until_ready(params)
      seconds = time.perf_counter() - start
      row = {"train_seconds": seconds}
      for period, truth, known in (("test", data.test, known_at_test),
                                   ("valid", data.valid, known_at_valid)):
        lists = retrieve(params, K, known, user_chunk=config.recall.user_chunk,
                         item_chunk=config.recall.item_chunk).items
        metrics = evaluate_lists(lists, truth.interactions, public.num_items)
        row[f"{period}_recall@{K}"] = metrics[f"recall@{K}"]
        row[f"{period}_ndcg@{K}"] = metrics[f"ndcg@{K}"]
      runs[model].append(row)
      _log(f"seed {seed} {model}: " + " ".join(f"{k}={v:.4f}" for k, v in row.items()))

  result = {
      "dataset": config.data.source,
      "train_on": args.train_on,
      "seeds": args.seeds,
      "protocol": ("random 8:1:1 per user; full ranking; test masks train + valid, "
                   "valid masks train"),
      "recbole_bpr_published": RECBOLE_BPR,
      "models": {model: {name: _summary([row[name] for row in rows]) for name in rows[0]}
                 for model, rows in runs.items()},
      "per_seed": {model: [{name: round(value, 4) for name, value in row.items()} for row in rows]
                   for model, rows in runs.items()},
      "recall_config": to_dict(config.recall),
  }
  print(json.dumps(result, indent=2))


if __name__ == "__main__":
  main()
