"""Popularity recall: every user gets the most interacted-with items of the public log."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from pprsf_jax.recall.model import RecallParams
from pprsf_jax.types import Interactions


def item_counts(interactions: Interactions, num_items: int) -> np.ndarray:
  """[M] float32 public interaction count per item."""
  return np.bincount(interactions.item, minlength=num_items).astype(np.float32)


def train_popularity(interactions: Interactions, num_users: int, num_items: int) -> RecallParams:
  """A recall model that scores items by log(1 + public count), the same for every user."""
  counts = item_counts(interactions, num_items)
  return RecallParams(
      user=jnp.zeros((num_users, 1), jnp.float32),
      item=jnp.zeros((num_items, 1), jnp.float32),
      item_bias=jnp.log1p(jnp.asarray(counts)),
  )
