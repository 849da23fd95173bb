"""Time every registered aggregation rule against the cohort size and print JSON.

  python scripts/bench_aggregation.py [--clients 100 1000 10000] [--params 7873] [--repeats 3]
                                      [--rules fedavg median ...]

Updates are random float32 rows stacked on the client axis (the default parameter count is the
ML-100K ranking MLP's). Krum, Multi-Krum and Bulyan build a [C, C] distance matrix (O(C^2 P)
time, O(C^2) memory) and Bulyan runs n - 2f Krum selections of O(C^2) each (O(C^3)), so they
are skipped above --quadratic-limit clients and reported as skipped.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from pprsf_jax.aggregation import REDUCERS, make_aggregator
from pprsf_jax.config import FederatedConfig

QUADRATIC = {"krum", "multi_krum", "bulyan"}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--clients", type=int, nargs="+", default=[100, 1000, 10000])
  parser.add_argument("--params", type=int, default=7873)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--quadratic-limit", type=int, default=2000)
  parser.add_argument("--rules", nargs="+", default=sorted(REDUCERS), choices=sorted(REDUCERS))
  args = parser.parse_args()

  rng = np.random.default_rng(0)
  params = {"theta": jnp.zeros(args.params, jnp.float32)}
  results = []
  for clients in args.clients:
    updates = {"theta": jnp.asarray(rng.normal(size=(clients, args.params)).astype(np.float32))}
    weights, mask = jnp.ones(clients), jnp.ones(clients)
    steps = jnp.full(clients, 5, jnp.int32)
    for name in args.rules:
      if name in QUADRATIC and clients > args.quadratic_limit:
        results.append({"rule": name, "clients": clients, "skipped": "O(C^2) above limit"})
        continue
      aggregator = make_aggregator(FederatedConfig(aggregator=name))
      state = aggregator.init(params)
      run = jax.jit(lambda u, s: aggregator.aggregate(u, s, weights=weights, mask=mask, steps=steps,
                                                      key=jax.random.key(0), params=params))
      start = time.perf_counter()
      jax.block_until_ready(run(updates, state))
      first = time.perf_counter() - start
      start = time.perf_counter()
      for _ in range(args.repeats):
        jax.block_until_ready(run(updates, state))
      results.append({"rule": name, "clients": clients,
                      "seconds": round((time.perf_counter() - start) / args.repeats, 5),
                      "first_call_s": round(first, 3)})
  print(json.dumps({"benchmark": "aggregation", "backend": jax.default_backend(),
                    "params": args.params, "results": results}, indent=2))


if __name__ == "__main__":
  main()
