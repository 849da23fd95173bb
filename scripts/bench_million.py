"""One full PPRSF round over a million simulated clients, timed stage by stage; prints JSON.

  python scripts/bench_million.py [--users 1000000] [--items 100000] [--cohort 10000]

Stages: a planted federation of N users × M items in host memory (`generate_at_scale`: CSR
interactions, dense private attributes); server recall trained on the public log (content-based:
IDF genre profiles, `recall.model=content`), then top-K retrieval for every user, chunked over
users and items (no [N, M] matrix); then ranking cohorts of C clients that together cover every
client once (`federated.sampling=sweep`), each cohort's examples built on the host from the
ragged data while the device trains the previous cohort (`StreamedCohorts`), each round ending
in the server's aggregation (FedAvg). Item-neighbour lists are left empty: the dense co-occurrence
the ItemKNN neighbours are computed from is refused at this size (see `item_neighbors`).

Reports seconds per stage, rounds and seconds per round, client updates per second, and peak
host memory (the process's maximum resident set).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import resource
import sys
import time

import jax
import numpy as np

from pprsf_jax import pipeline
from pprsf_jax.config import FederatedConfig, RankingConfig, RunConfig
from pprsf_jax.data.synthetic_scale import generate_at_scale
from pprsf_jax.ranking import init_personal_states, make_item_table
from pprsf_jax.ranking.streaming import StreamedCohorts
from pprsf_jax.recall import item_counts, retrieve
from pprsf_jax.recall.content import train_content
from pprsf_jax.recall.item_knn import ItemNeighbors


def peak_rss_gib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--users", type=int, default=1_000_000)
  parser.add_argument("--items", type=int, default=100_000)
  parser.add_argument("--interactions-per-user", type=int, default=20)
  parser.add_argument("--cohort", type=int, default=10_000)
  parser.add_argument("--candidates", type=int, default=100)
  parser.add_argument("--user-chunk", type=int, default=8192, help="users per retrieval call")
  parser.add_argument("--item-chunk", type=int, default=16384, help="items per retrieval scan step")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()

  stages: dict[str, float] = {}
  clock = time.perf_counter()

  def lap(name: str) -> None:
    nonlocal clock
    now = time.perf_counter()
    stages[name] = round(now - clock, 2)
    clock = now
    print(f"bench_million: {name} {stages[name]:.1f} s, peak RSS {peak_rss_gib():.2f} GiB",
          file=sys.stderr)

  federation = generate_at_scale(args.users, args.items,
                                 interactions_per_user=args.interactions_per_user, seed=args.seed)
  n, m = federation.num_users, federation.num_items
  lap("generate")

  # Server: recall on the public log outside the label fold, then K candidates for every user.
  public = federation.select(~federation.private & (federation.fold != 0))
  recall = train_content(public, federation.catalogue, n, m, popularity_weight=0.1)
  lap("recall_train")
  candidates = retrieve(recall, args.candidates, public, user_chunk=args.user_chunk,
                        item_chunk=args.item_chunk)
  lap("recall_retrieve_every_user")

  # Clients: cohorts covering every client once, examples streamed from the ragged data.
  source = StreamedCohorts(
      federation, candidates,
      neighbors=ItemNeighbors(items=np.full((m, 1), -1, np.int32),
                              similarity=np.zeros((m, 1), np.float32)),
      public_counts=item_counts(public, m))
  rounds = -(-n // args.cohort)
  config = RunConfig(
      seed=args.seed, checkpoint_every=0,
      ranking=RankingConfig(local_epochs=1),
      federated=FederatedConfig(rounds=rounds, clients_per_round=args.cohort, sampling="sweep",
                                server_learning_rate=1.0))
  config = dataclasses.replace(config, eval=dataclasses.replace(config.eval, every_rounds=0))
  item_table = make_item_table(federation.catalogue)
  local = pipeline.local_training(config)
  dims = pipeline.model_dims(federation.user_features.shape[1], item_table)
  theta0 = local.task.init_shared(pipeline.stream_key(args.seed, "theta0"), dims)
  personal0 = init_personal_states(local.task, dims, pipeline.stream_key(args.seed, "personal"), n)
  training = pipeline.train_federated(theta0, personal0, source, item_table, config, local)
  lap("ranking_round_all_clients")

  result = {
      "benchmark": "one full PPRSF round over every client",
      "users": n, "items": m, "interactions": int(federation.items.size),
      "candidates_per_user": args.candidates, "cohort_size": args.cohort, "rounds": rounds,
      "local_training": {"model": config.ranking.model, "epochs": local.epochs,
                         "batch_size": config.ranking.batch_size,
                         "learning_rate": local.learning_rate,
                         "hidden_sizes": list(config.ranking.hidden_sizes)},
      "seconds": stages,
      "seconds_total": round(sum(stages.values()), 2),
      "seconds_per_ranking_round": round(stages["ranking_round_all_clients"] / rounds, 3),
      "client_updates_per_second": round(n / stages["ranking_round_all_clients"], 1),
      "loss_first_round": training.losses[0], "loss_last_round": training.losses[-1],
      "rejected_uploads": training.rejected,
      "peak_host_memory_gib": round(peak_rss_gib(), 2),
      "jax": jax.__version__, "backend": jax.default_backend(),
      "devices": [str(device) for device in jax.devices()], "cpu": platform.processor(),
  }
  print(json.dumps(result, indent=2))


if __name__ == "__main__":
  main()
