"""Re-rank strategies by name, built from the config."""

from __future__ import annotations

import dataclasses
from typing import Callable

from pprsf_jax.config import RerankConfig
from pprsf_jax.rerank.base import Strategy, compose
from pprsf_jax.rerank.cold_start import cold_start
from pprsf_jax.rerank.mmr import mmr

STRATEGIES: dict[str, Callable[[RerankConfig], Strategy]] = {
    "mmr": lambda config: mmr(config.mmr_lambda),
    "cold_start": lambda config: cold_start(config.cold_start_popularity_weight),
}


def make_reranker(config: RerankConfig) -> Strategy:
  unknown = [name for name in config.strategies if name not in STRATEGIES]
  if unknown:
    raise ValueError(f"rerank.strategies: unknown {unknown}; known {sorted(STRATEGIES)}")
  return compose(*(STRATEGIES[name](config) for name in config.strategies))


def evaluation_grid(config: RerankConfig) -> dict[str, RerankConfig]:
  """The re-rank settings every run also evaluates on the same Top-T requests: none, each
  strategy alone, cold start + MMR at three trade-offs, and the configured one."""
  grid = {"none": dataclasses.replace(config, strategies=())}
  for name in STRATEGIES:
    grid[name if name != "mmr" else f"mmr λ={config.mmr_lambda:g}"] = dataclasses.replace(
        config, strategies=(name,))
  for trade_off in (0.9, 0.7, 0.5):
    grid[f"cold_start + mmr λ={trade_off:g}"] = dataclasses.replace(
        config, strategies=("cold_start", "mmr"), mmr_lambda=trade_off)
  grid[f"configured ({' + '.join(config.strategies) or 'none'})"] = config
  return grid
