"""Re-rank layer (server side): strategies over each user's Top-T."""

from pprsf_jax.rerank.base import RerankContext, Strategy, compose, final_list
from pprsf_jax.rerank.cold_start import cold_start
from pprsf_jax.rerank.mmr import mmr
from pprsf_jax.rerank.registry import STRATEGIES, evaluation_grid, make_reranker

__all__ = ["RerankContext", "STRATEGIES", "Strategy", "cold_start", "compose", "evaluation_grid",
           "final_list", "make_reranker", "mmr"]
