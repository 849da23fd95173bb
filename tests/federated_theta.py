"""Trains Θ on a small synthetic federation and saves it, for tests/test_sharding.py: run in a
subprocess with several (fake CPU) devices or under `jax.distributed`, and in the test process
itself on one device.

  python tests/federated_theta.py OUT.npz [--coordinator HOST:PORT --num-processes N
                                            --process-id I --local-devices D]
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
AGGREGATORS = ("fedavg", "trimmed_mean")  # a weighted mean, and a per-coordinate sort over clients


def train_thetas(aggregators=AGGREGATORS) -> dict:
  """{aggregator: (Θ leaves by path, per-round losses, evaluations made)} on this process's
  devices (every device of the job under `jax.distributed`)."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from pprsf_jax import pipeline  # pylint: disable=import-outside-toplevel
  from pprsf_jax.cli import load_config  # pylint: disable=import-outside-toplevel
  from pprsf_jax.data.dataset import build_dataset  # pylint: disable=import-outside-toplevel
  from pprsf_jax.ranking import make_item_table  # pylint: disable=import-outside-toplevel

  config = load_config(str(ROOT / "configs" / "synthetic_online.py"))
  data = build_dataset(pipeline.load_tables(config.data, config.seed), config.data, config.seed)
  recall = pipeline.train_recall(data.public, config.recall, config.seed)
  examples = pipeline.training_examples(recall, data.public, data.private, config.recall)
  item_table = make_item_table(data.public.catalogue)
  local = pipeline.local_training(config)
  theta0 = local.task.init_shared(
      pipeline.stream_key(config.seed, "theta0"),
      pipeline.model_dims(data.private.user_features.shape[1], item_table))
  results = {}
  for aggregator in aggregators:
    # 19 clients a round: not a multiple of 2, 4 or 8 devices, so cohort padding is exercised.
    run_config = dataclasses.replace(
        config, federated=dataclasses.replace(config.federated, rounds=4, clients_per_round=19,
                                              aggregator=aggregator),
        eval=dataclasses.replace(config.eval, every_rounds=2))
    evaluations = []
    training = pipeline.train_federated(
        theta0, (), examples, item_table, run_config, local,
        evaluate=lambda params, personal: evaluations.append(1) or 0.5)
    leaves = {jax.tree_util.keystr(path): np.asarray(leaf)
              for path, leaf in jax.tree_util.tree_leaves_with_path(training.params)}
    results[aggregator] = (leaves, np.asarray(training.losses), len(evaluations))
  return results


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("out", type=pathlib.Path)
  parser.add_argument("--coordinator")
  parser.add_argument("--num-processes", type=int, default=1)
  parser.add_argument("--process-id", type=int, default=0)
  parser.add_argument("--local-devices", type=int)
  parser.add_argument("--aggregators", nargs="+", default=AGGREGATORS)
  args = parser.parse_args()
  sys.path.insert(0, str(ROOT))

  from pprsf_jax.ranking import sharding  # pylint: disable=import-outside-toplevel
  if args.coordinator:
    sharding.initialize_distributed(args.coordinator, args.num_processes, args.process_id,
                                    local_cpu_devices=args.local_devices)
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  jax.config.update("jax_numpy_rank_promotion", "raise")  # as the suite runs
  arrays = {"devices": jax.device_count(), "processes": jax.process_count()}
  for aggregator, (leaves, losses, evaluations) in train_thetas(args.aggregators).items():
    arrays |= {f"{aggregator}/{path}": leaf for path, leaf in leaves.items()}
    arrays |= {f"{aggregator}/losses": losses, f"{aggregator}/evaluations": evaluations}
  if jax.process_index() == 0:
    np.savez(args.out, **arrays)


if __name__ == "__main__":
  main()
