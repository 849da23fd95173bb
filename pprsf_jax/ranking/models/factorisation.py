"""Federated matrix factorisation (FedMF) and neural collaborative filtering (FedNCF).

Both score a candidate by its id alone: the item side (embeddings, biases, the NCF network) is
shared and aggregated; the user embeddings are personal — each client learns its own on its
device and never uploads it (FedMF: Chai et al., 2020; FedNCF: Perifanis & Efraimidis, 2022).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from pprsf_jax.ranking.models.base import (CandidateInputs, ModelDims, ModelSpec, RankingModel,
                                           item_ids)

def embedding(spec: ModelSpec, key: jax.Array, *shape: int) -> jax.Array:
  """An embedding table drawn from N(0, spec.embedding_init_std^2)."""
  return spec.embedding_init_std * jax.random.normal(key, shape, jnp.float32)


def mf(spec: ModelSpec) -> RankingModel:
  """FedMF: score = <user, item> + item bias."""
  d = spec.embedding_dim

  def init_shared(key: jax.Array, dims: ModelDims):
    return {"items": embedding(spec, key, dims.num_items, d),
            "item_bias": jnp.zeros((dims.num_items,), jnp.float32)}

  def init_personal(key: jax.Array, dims: ModelDims):
    del dims
    return {"user": embedding(spec, key, d)}

  def logits(shared, personal, inputs: CandidateInputs) -> jax.Array:
    items = item_ids(inputs)
    return shared["items"][items] @ personal["user"] + shared["item_bias"][items]

  return RankingModel(init_shared, init_personal, logits)


class NeuMFHead(nn.Module):
  """NeuMF's network: a GMF product beside an MLP tower over both embeddings, then one logit."""

  hidden_sizes: Sequence[int]

  @nn.compact
  def __call__(self, gmf_user, mlp_user, gmf_item, mlp_item) -> jax.Array:
    batch = gmf_item.shape[:-1]
    tower = jnp.concatenate([jnp.broadcast_to(mlp_user, batch + mlp_user.shape), mlp_item], -1)
    for width in self.hidden_sizes:
      tower = nn.relu(nn.Dense(width)(tower))
    gmf = jnp.broadcast_to(gmf_user, gmf_item.shape) * gmf_item
    return nn.Dense(1)(jnp.concatenate([gmf, tower], -1))[..., 0]


def ncf(spec: ModelSpec) -> RankingModel:
  """FedNCF: NeuMF with the item embeddings and the network shared, the user embeddings
  (one for GMF, one for the MLP tower) personal."""
  d = spec.embedding_dim
  head = NeuMFHead(hidden_sizes=spec.hidden_sizes)

  def init_shared(key: jax.Array, dims: ModelDims):
    gmf_key, mlp_key, head_key = jax.random.split(key, 3)
    probe = jnp.zeros((d,), jnp.float32)
    return {"gmf_items": embedding(spec, gmf_key, dims.num_items, d),
            "mlp_items": embedding(spec, mlp_key, dims.num_items, d),
            "head": head.init(head_key, probe, probe, probe[None], probe[None])["params"]}

  def init_personal(key: jax.Array, dims: ModelDims):
    del dims
    gmf_key, mlp_key = jax.random.split(key)
    return {"gmf_user": embedding(spec, gmf_key, d), "mlp_user": embedding(spec, mlp_key, d)}

  def logits(shared, personal, inputs: CandidateInputs) -> jax.Array:
    items = item_ids(inputs)
    return head.apply({"params": shared["head"]}, personal["gmf_user"], personal["mlp_user"],
                      shared["gmf_items"][items], shared["mlp_items"][items])

  return RankingModel(init_shared, init_personal, logits)
