"""The multi-day service loop on MovieLens-100K: half the log before day 1, then 7 days."""

import dataclasses

from pprsf_jax.config import OnlineConfig, RunConfig


def get_config() -> RunConfig:
  config = RunConfig(name="ml100k-online", online=OnlineConfig(days=7, rounds_per_day=30))
  # Recall is retrained every day: fewer BPR epochs keep a day near a minute on 2 cores.
  return dataclasses.replace(config, recall=dataclasses.replace(config.recall, epochs=60))
