"""Shared fixtures: one tiny synthetic federation and the objects every layer test builds on.

Everything here is session-scoped and deliberately small (60 users, 50 items) so the whole suite
stays fast on a 2-core CPU. Ranking examples are only ever built through
`pprsf_jax.ranking.examples.build_examples` (or derived from its output with `jax.tree.map`), so
the tests do not depend on the exact list of `ClientExamples` fields.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np
import pytest

from pprsf_jax import pipeline
from pprsf_jax.config import DataConfig, RecallConfig, SyntheticConfig
from pprsf_jax.data.dataset import FederatedDataset, build_dataset
from pprsf_jax.data.synthetic import generate_synthetic
from pprsf_jax.ranking import (ClientExamples, ItemTable, LocalTraining, RankingMLP, init_params,
                               make_item_table, num_features)
from pprsf_jax.ranking.examples import build_examples
from pprsf_jax.recall import item_counts

# `jax_numpy_rank_promotion="raise"` is NOT enabled: `pprsf_jax.rerank.mmr.mmr` broadcasts a
# [T] position vector against [U, T] items in `jnp.where`, which that mode rejects.

SYNTHETIC = SyntheticConfig(num_users=60, num_items=50, interactions_per_user=15)
DATA_CONFIG = DataConfig(source="synthetic", synthetic=SYNTHETIC)
# K = 24 differs from every other trailing dimension of ClientExamples (F_u = 26, G + 1 = 20), so
# "second axis == K" identifies exactly the per-candidate fields.
RECALL_CONFIG = RecallConfig(epochs=3, num_candidates=24, user_chunk=16, item_chunk=16)
SEED = 0


@pytest.fixture(scope="session")
def recall_config() -> RecallConfig:
  return RECALL_CONFIG


@pytest.fixture(scope="session")
def tables():
  return generate_synthetic(SYNTHETIC, SEED)


@pytest.fixture(scope="session")
def dataset(tables) -> FederatedDataset:
  return build_dataset(tables, DATA_CONFIG, SEED)


@pytest.fixture(scope="session")
def recall_models(dataset) -> pipeline.RecallModels:
  return pipeline.train_recall(dataset.public, RECALL_CONFIG, SEED)


def _training_examples(data: FederatedDataset, recall: pipeline.RecallModels,
                       config: RecallConfig) -> ClientExamples:
  """Ranking-training examples exactly as `pipeline.run` builds them (host NumPy, [N, K])."""
  public, private = data.public, data.private
  candidates = pipeline.candidates_for(recall.stacked, config.num_candidates, public.context,
                                       config)
  return build_examples(
      candidates, private.user_features, history=public.context + private.context,
      positives=public.labels + private.labels, genres=public.catalogue.genres,
      neighbors=recall.stacked_neighbors)


@pytest.fixture(scope="session")
def make_training_examples() -> Callable[..., ClientExamples]:
  """The builder itself, for tests that need examples from a modified dataset."""
  return _training_examples


@pytest.fixture(scope="session")
def examples(dataset, recall_models) -> ClientExamples:
  built = _training_examples(dataset, recall_models, RECALL_CONFIG)
  # Guard the "second axis == K" rule used to pad per-candidate fields.
  assert built.user_features.shape[1] != RECALL_CONFIG.num_candidates
  assert built.profile.shape[1] != RECALL_CONFIG.num_candidates
  return built


@pytest.fixture(scope="session")
def item_table(dataset) -> ItemTable:
  public = dataset.public
  return make_item_table(public.catalogue, item_counts(public.context, public.num_items))


@pytest.fixture(scope="session")
def local() -> LocalTraining:
  return LocalTraining(model=RankingMLP(hidden_sizes=(16,)), epochs=2, batch_size=8,
                       learning_rate=0.1)


@pytest.fixture(scope="session")
def theta0(dataset, item_table, local):
  size = num_features(dataset.private.user_features.shape[1], item_table)
  return init_params(local.model, size, key=jax.random.key(3))


def _pad_candidates(examples: ClientExamples, extra: int, axis: int) -> ClientExamples:
  """Appends `extra` padding candidates along the candidate axis of every per-candidate field.

  Per-candidate fields are the arrays whose `axis` has the candidate count L. Padding rows are
  zeros (mask 0, label 0, recall score 0, ...) except the item id, which is -1.
  """
  length = examples.items.shape[axis]

  def pad(leaf):
    leaf = np.asarray(leaf)
    if leaf.ndim <= axis or leaf.shape[axis] != length:
      return leaf
    widths = [(0, 0)] * leaf.ndim
    widths[axis] = (0, extra)
    return np.pad(leaf, widths)

  padded = jax.tree.map(pad, examples)
  widths = [(0, 0)] * examples.items.ndim
  widths[axis] = (0, extra)
  return padded._replace(items=np.pad(np.asarray(examples.items), widths, constant_values=-1))


@pytest.fixture(scope="session")
def pad_candidates() -> Callable[[ClientExamples, int, int], ClientExamples]:
  """`pad(examples, extra, axis)`: axis 0 for one client's examples, 1 for a stacked cohort."""
  return _pad_candidates


def _assert_trees_identical(left: Any, right: Any) -> None:
  """Same structure, and every leaf bit-identical (dtype, shape and bytes)."""
  left_leaves, left_def = jax.tree.flatten(left)
  right_leaves, right_def = jax.tree.flatten(right)
  assert left_def == right_def
  for a, b in zip(left_leaves, right_leaves):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes()


@pytest.fixture(scope="session")
def assert_trees_identical() -> Callable[[Any, Any], None]:
  return _assert_trees_identical
