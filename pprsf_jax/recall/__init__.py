"""Recall layer (server side): models trained on public data, and chunked top-K retrieval."""

from pprsf_jax.recall.bpr import train_bpr
from pprsf_jax.recall.content import item_features, train_content
from pprsf_jax.recall.lightgcn import build_graph, propagate, train_lightgcn
from pprsf_jax.recall.model import RecallParams, score
from pprsf_jax.recall.popularity import item_counts, train_popularity
from pprsf_jax.recall.registry import RECALL_MODELS, RecallTrainer
from pprsf_jax.recall.retrieve import retrieve
from pprsf_jax.recall.two_tower import train_two_tower

__all__ = ["RECALL_MODELS", "RecallParams", "RecallTrainer", "build_graph", "item_counts",
           "item_features", "propagate", "retrieve", "score", "train_bpr", "train_content",
           "train_lightgcn", "train_popularity", "train_two_tower"]
