"""Re-rank layer (server side): strategies over each user's Top-T."""

from pprsf_jax.rerank.base import (ItemFilter, RerankContext, Strategy, compose, final_list,
                                   position_scores, sort_by, standardise)
from pprsf_jax.rerank.cold_start import cold_start
from pprsf_jax.rerank.fairness import fairness, head_items
from pprsf_jax.rerank.freshness import freshness
from pprsf_jax.rerank.mmr import mmr
from pprsf_jax.rerank.new_items import new_items
from pprsf_jax.rerank.popularity import popularity
from pprsf_jax.rerank.registry import STRATEGIES, evaluation_grid, make_reranker
from pprsf_jax.rerank.rules import rules

__all__ = ["ItemFilter", "RerankContext", "STRATEGIES", "Strategy", "cold_start", "compose",
           "evaluation_grid", "fairness", "final_list", "freshness", "head_items",
           "make_reranker", "mmr", "new_items", "popularity", "position_scores", "rules",
           "sort_by", "standardise"]
