"""What a ranking model is: pure functions over shared parameters and a client's personal state."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp


class CandidateInputs(NamedTuple):
  """What a model scores, for any batch shape [...]: the candidate and its feature row."""

  items: jax.Array  # [...] int32 candidate ids (-1 = padding: any finite score will do)
  features: jax.Array  # [..., F] float32 the client-side feature row (`ranking.features`)


class ModelDims(NamedTuple):
  """The sizes a model is built for, known once the data is loaded."""

  num_features: int  # F, the width of a feature row
  num_items: int  # M, the catalogue


class ModelSpec(NamedTuple):
  """The hyper-parameters a config gives a ranking model (each model reads those it uses)."""

  hidden_sizes: tuple[int, ...] = (64, 32)  # MLP widths (feature_mlp, ncf's tower, pfedrec, dcn)
  embedding_dim: int = 32  # user / item embedding width (mf, ncf, pfedrec)
  cross_layers: int = 2  # DCN-v2 cross layers (dcn)
  # Embeddings start from N(0, std^2): small but not tiny, since a dot product of two near-zero
  # vectors has near-zero gradients on both sides and SGD would take long to leave the origin.
  embedding_init_std: float = 0.1


class RankingModel(NamedTuple):
  """A ranking model: which parameters are shared and which personal is the model's to say.

  `logits(shared, personal, inputs)` -> [...] float32, one score per candidate of `inputs`.
  """

  init_shared: Callable[[jax.Array, ModelDims], Any]  # (key, dims) -> Θ0
  # (key, dims) -> one client's personal state (() if none)
  init_personal: Callable[[jax.Array, ModelDims], Any]
  logits: Callable[[Any, Any, CandidateInputs], jax.Array]


def no_personal_state(key: jax.Array, dims: ModelDims) -> tuple:
  del key, dims
  return ()


def item_ids(inputs: CandidateInputs) -> jax.Array:
  """Candidate ids safe to gather with: padding (-1) reads item 0 (its score is masked)."""
  return jnp.maximum(inputs.items, 0)
