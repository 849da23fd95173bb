"""Recall layer (server side): models trained on public data, and chunked top-K retrieval."""

from pprsf_jax.recall.bpr import train_bpr
from pprsf_jax.recall.model import RecallParams, score
from pprsf_jax.recall.popularity import item_counts, train_popularity
from pprsf_jax.recall.retrieve import retrieve

__all__ = ["RecallParams", "item_counts", "retrieve", "score", "train_bpr", "train_popularity"]
