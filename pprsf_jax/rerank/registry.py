"""Re-rank strategies by name, built from the config."""

from __future__ import annotations

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
