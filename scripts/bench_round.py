"""Benchmark one federated ranking round (vmapped client updates + aggregation) and print JSON.

  python scripts/bench_round.py [--cohorts 100 1000] [--lists 4] [--candidates 100] [--rounds 5]
                                [--aggregator fedavg] [--local-algorithm sgd] [--compression none]
                                [--model feature_mlp]

Client data are random (features do not matter for speed); shapes follow the ML-100K job:
S candidate lists of K slots per client, the ranking model `--model` (any of
`pprsf_jax.ranking.RANKING_MODELS`, default settings) and the default local training. Reports
compile time, steady-state seconds per round, client updates per second and upload bytes per
client (as encoded, and uncompressed) for each cohort size.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from pprsf_jax.aggregation import (COMPRESSORS, LOCAL_ALGORITHMS, REDUCERS, dense_bits,
                                   init_client_states, init_server_state, make_algorithm)
from pprsf_jax import pipeline
from pprsf_jax.config import FederatedConfig, RankingConfig, RunConfig
from pprsf_jax.ranking import (RANKING_MODELS, ClientExamples, DeviceState, ItemTable,
                               gather_client_states, init_personal_states, make_round)

NUM_ITEMS, NUM_GENRES, NUM_USER_FEATURES = 2000, 19, 42


def random_cohort(rng, clients: int, lists: int, candidates: int) -> ClientExamples:
  shape = (clients, lists, candidates)
  return ClientExamples(
      items=rng.integers(0, NUM_ITEMS, shape).astype(np.int32),
      recall_scores=np.sort(rng.normal(size=shape), axis=-1)[..., ::-1].astype(np.float32),
      popularity=rng.normal(size=shape).astype(np.float32),
      neighbor_scores=rng.random(shape + (2,)).astype(np.float32),
      labels=(rng.random(shape) < 0.05).astype(np.float32),
      mask=(rng.random(shape) < 0.9).astype(np.float32),
      user_features=rng.random((clients, NUM_USER_FEATURES)).astype(np.float32),
      profile=rng.random((clients, lists, NUM_GENRES + 1)).astype(np.float32),
  )


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--cohorts", type=int, nargs="+", default=[100, 1000])
  parser.add_argument("--lists", type=int, default=4)
  parser.add_argument("--candidates", type=int, default=100)
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--aggregator", default="fedavg", choices=sorted(REDUCERS))
  parser.add_argument("--local-algorithm", default="sgd", choices=sorted(LOCAL_ALGORITHMS))
  parser.add_argument("--compression", default="none", choices=sorted(COMPRESSORS))
  parser.add_argument("--model", default="feature_mlp", choices=sorted(RANKING_MODELS))
  args = parser.parse_args()

  rng = np.random.default_rng(0)
  genres = (rng.random((NUM_ITEMS, NUM_GENRES)) < 0.1).astype(np.float32)
  table = ItemTable(features=jnp.asarray(np.concatenate([genres, rng.normal(size=(NUM_ITEMS, 2))],
                                                        axis=1).astype(np.float32)),
                    genres=jnp.asarray(genres))
  ranking = RankingConfig(model=args.model)
  local = pipeline.local_training(RunConfig(ranking=ranking))
  dims = pipeline.model_dims(NUM_USER_FEATURES, table)
  theta0 = local.task.init_shared(jax.random.key(0), dims)
  federated = FederatedConfig(aggregator=args.aggregator, local_algorithm=args.local_algorithm,
                              compression=args.compression)
  results = []
  for clients in args.cohorts:
    algorithm = make_algorithm(federated, clients)
    round_fn = make_round(local, algorithm)
    cohort = jax.device_put(random_cohort(rng, clients, args.lists, args.candidates))
    ids = jnp.arange(clients, dtype=jnp.int32)
    client_mask = jnp.ones(clients, jnp.float32)
    server = init_server_state(algorithm, theta0)
    states = jax.device_put(gather_client_states(
        DeviceState(init_client_states(algorithm, theta0, clients),
                    init_personal_states(local.task, dims, jax.random.key(2), clients)),
        np.arange(clients)))
    start = time.perf_counter()
    server, states, metrics = round_fn(server, states, cohort, ids, client_mask, table,
                                       jax.random.key(1), 0)
    jax.block_until_ready(server)
    compile_and_first = time.perf_counter() - start
    start = time.perf_counter()
    for round_index in range(1, args.rounds + 1):
      server, states, metrics = round_fn(server, states, cohort, ids, client_mask, table,
                                         jax.random.key(1), round_index)
    jax.block_until_ready(server)
    per_round = (time.perf_counter() - start) / args.rounds
    results.append({"clients": clients, "first_round_s": round(compile_and_first, 3),
                    "seconds_per_round": round(per_round, 4),
                    "client_updates_per_s": round(clients / per_round, 1),
                    "upload_bytes_per_client": float(metrics.upload_bytes),
                    "uncompressed_upload_bytes": dense_bits(theta0) / 8})
  print(json.dumps({
      "benchmark": "federated_ranking_round", "device": str(jax.devices()[0]),
      "backend": jax.default_backend(), "machine": platform.machine(),
      "model": args.model,
      "lists": args.lists, "candidates": args.candidates, "aggregator": args.aggregator,
      "local_algorithm": args.local_algorithm, "compression": args.compression,
      "local_epochs": ranking.local_epochs, "batch_size": ranking.batch_size,
      "results": results}, indent=2))


if __name__ == "__main__":
  main()
