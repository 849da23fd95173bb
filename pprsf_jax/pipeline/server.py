"""Server-side building blocks of a run: recall models on public data, candidates, the public
facts re-rank reads. Nothing here receives private data (see `pprsf_jax.types`)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from pprsf_jax.config import DataConfig, RecallConfig
from pprsf_jax.data.movielens import MovieLensTables, load_movielens
from pprsf_jax.data.synthetic import generate_synthetic
from pprsf_jax.pipeline.keys import stream_key
from pprsf_jax.recall import RECALL_MODELS, item_counts, retrieve
from pprsf_jax.recall.item_knn import ItemNeighbors, item_neighbors
from pprsf_jax.recall.model import RecallParams
from pprsf_jax.recall.retrieve import padded_item_lists
from pprsf_jax.rerank import RerankContext
from pprsf_jax.types import Candidates, Interactions, PublicData


def load_tables(config: DataConfig, seed: int) -> MovieLensTables:
  """The raw tables a data config names: synthetic, a dataset name, or a directory."""
  if config.source == "synthetic":
    return generate_synthetic(config.synthetic, seed)
  return load_movielens(config.source, prefix=config.prefix)


class Recall(NamedTuple):
  """One recall model with what ships beside its candidates."""

  params: RecallParams
  neighbors: ItemNeighbors  # item-item neighbour lists from the same public interactions
  counts: np.ndarray  # [M] public interaction counts it was trained on (candidate popularity)
  # Public interactions the server knows: never proposed again; the client's public history.
  known: Interactions


class RecallModels(NamedTuple):
  # Recall-only baselines by model name, trained on all public history (the serving model's
  # own name maps to its parameters).
  baselines: dict[str, RecallParams]
  serving: Recall  # trained on all public history: candidates at serving time
  folds: tuple[Recall, ...]  # fold f trained on public.context(f): candidates for ranking training


def fit_recall(interactions: Interactions, public: PublicData, config: RecallConfig,
               key: jax.Array) -> Recall:
  """One recall model (and neighbour lists) from public interactions only."""
  n, m = public.num_users, public.num_items
  neighbors = item_neighbors(interactions, n, m, num_neighbors=config.num_neighbors)
  params = RECALL_MODELS[config.model](interactions, public, config, key=key, neighbors=neighbors)
  return Recall(params, neighbors, item_counts(interactions, m), interactions)


def train_recall(public: PublicData, config: RecallConfig, seed: int,
                 baselines: tuple[str, ...] = ()) -> RecallModels:
  """The serving model, one cross-fitted model per fold, and the recall-only `baselines`
  (model names) on the same public log."""
  serving = fit_recall(public.history, public, config, stream_key(seed, "recall_serving"))
  models = {config.model: serving.params}
  for name in baselines:
    if name not in models:
      # Keyed by the name's place in the registry: adding a baseline changes no other's key.
      key = stream_key(seed, "recall_baselines", sorted(RECALL_MODELS).index(name))
      # Neighbour lists come from the same log: ItemKNN reuses the serving model's.
      models[name] = RECALL_MODELS[name](public.history, public, config, key=key,
                                         neighbors=serving.neighbors)
  return RecallModels(
      baselines={name: models[name] for name in (*baselines, config.model)},
      serving=serving,
      folds=tuple(
          fit_recall(public.context(f), public, config, stream_key(seed, "recall_fold", f))
          for f in range(public.num_folds)),
  )


def candidates_for(params: RecallParams, k: int, exclude: Interactions,
                   config: RecallConfig) -> Candidates:
  return retrieve(params, k, exclude, user_chunk=config.user_chunk, item_chunk=config.item_chunk,
                  approximate=config.approximate_top_k, recall_target=config.approx_recall_target)


def rerank_context(public: PublicData, known_public: Interactions) -> RerankContext:
  """The public facts re-rank strategies use, from the public log as it stands."""
  n, m = public.num_users, public.num_items
  return RerankContext(
      genres=jnp.asarray(public.catalogue.genres),
      popularity=jnp.asarray(item_counts(known_public, m)),
      known=jnp.asarray(padded_item_lists(known_public, n)),
      cold=jnp.asarray(np.bincount(known_public.user, minlength=n) == 0),
      year=jnp.asarray(public.catalogue.year),
      year_known=jnp.asarray(public.catalogue.year_known))
