"""The multi-day service loop on MovieLens-100K: half the log before day 1, then 7 days.

New items get re-rank slots with `rerank.strategies="(cold_start, mmr, new_items)"`.
"""

import dataclasses

from pprsf_jax.config import OnlineConfig, RunConfig


def get_config() -> RunConfig:
  config = RunConfig(name="ml100k-online", online=OnlineConfig(days=7, rounds_per_day=30))
  # Recall is retrained every day: fewer BPR epochs keep a day near 20 s on 2 cores.
  return dataclasses.replace(config, recall=dataclasses.replace(config.recall, epochs=60))
