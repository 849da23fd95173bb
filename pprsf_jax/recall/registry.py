"""Recall models by name, all behind one trainer signature, so a config selects the model.

Every trainer sees public data only (the interactions it is given and `PublicData`'s catalogue)
and returns a factorised `RecallParams`, which `pprsf_jax.recall.retrieve` serves.
"""

from __future__ import annotations

from typing import Protocol

import jax

from pprsf_jax.config import RecallConfig
from pprsf_jax.recall.bpr import train_bpr
from pprsf_jax.recall.content import train_content
from pprsf_jax.recall.item_knn import ItemNeighbors, train_item_knn
from pprsf_jax.recall.lightgcn import train_lightgcn
from pprsf_jax.recall.model import RecallParams
from pprsf_jax.recall.popularity import train_popularity
from pprsf_jax.recall.two_tower import train_two_tower
from pprsf_jax.types import Interactions, PublicData


class RecallTrainer(Protocol):
  """Trains one recall model.

  Args:
    interactions: the public interactions to train on (all public history, or one fold's
      context); may be a subset of `public.history`.
    public: sizes and the item catalogue.
    config: hyper-parameters.
    key: randomness (deterministic models ignore it).
    neighbors: item-item neighbour lists from the same interactions (ItemKNN reuses them).
  """

  def __call__(self, interactions: Interactions, public: PublicData, config: RecallConfig, *,
               key: jax.Array, neighbors: ItemNeighbors) -> RecallParams:
    ...


def _popularity(interactions, public, config, *, key, neighbors):
  del config, key, neighbors  # deterministic, no hyper-parameters
  return train_popularity(interactions, public.num_users, public.num_items)


def _item_knn(interactions, public, config, *, key, neighbors):
  del config, key
  return train_item_knn(interactions, neighbors, public.num_users, public.num_items)


def _content(interactions, public, config, *, key, neighbors):
  del key, neighbors
  return train_content(interactions, public.catalogue, public.num_users, public.num_items,
                       popularity_weight=config.content_popularity_weight)


def _bpr(interactions, public, config, *, key, neighbors):
  del neighbors
  return train_bpr(interactions, public.num_users, public.num_items, config, key=key)[0]


def _lightgcn(interactions, public, config, *, key, neighbors):
  del neighbors
  return train_lightgcn(interactions, public.num_users, public.num_items, config, key=key)[0]


def _two_tower(interactions, public, config, *, key, neighbors):
  del neighbors
  return train_two_tower(interactions, public.catalogue, public.num_users, public.num_items,
                         config, key=key)[0]


RECALL_MODELS: dict[str, RecallTrainer] = {
    "popularity": _popularity,
    "item_knn": _item_knn,
    "content": _content,
    "bpr": _bpr,
    "lightgcn": _lightgcn,
    "two_tower": _two_tower,
}
