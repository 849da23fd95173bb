"""Shared fixtures: one tiny synthetic federation and the objects every layer test builds on.

Everything here is session-scoped and deliberately small (60 users, 50 items) so the whole suite
stays fast on a 2-core CPU. Ranking examples are only ever built through
`pprsf_jax.ranking.examples.build_examples` (and `stack_lists`, which concatenates its outputs)
or derived from them with `jax.tree.map`, so the tests do not depend on the exact list of
`ClientExamples` fields. Fields are recognised by shape instead: per-candidate fields share the
`items` shape as a prefix, per-list fields share `items.shape[:-1]`.
"""

from __future__ import annotations

import gc
import os
import pathlib
from typing import Any, Callable

# JAX's persistent compilation cache, for this process and every process a test starts (the CLI
# runs, the Flower deployment, the sharding jobs inherit the environment). Compiling dominates
# the suite on CPU, and the same programs are compiled again and again: after every module
# (`_release_compiled_programs` below clears the in-memory caches), in each subprocess and in each
# xdist worker. A cached executable is the program XLA compiled, so results are bit-identical.
# Every program is cached (no minimum compile time or size). Entries are checksummed streams: one
# read while another process writes it fails to decompress and JAX compiles the program instead.
# A fresh clone starts empty; `make clean` removes the folder (git ignores it). Set
# JAX_COMPILATION_CACHE_DIR yourself to use another folder.
JAX_CACHE = {
    "JAX_COMPILATION_CACHE_DIR": str(pathlib.Path(__file__).resolve().parents[1] / ".jax_cache"),
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1",
}
for _name, _value in JAX_CACHE.items():
  os.environ.setdefault(_name, _value)

import jax  # noqa: E402  (after the environment above, which JAX reads when it is imported)
import numpy as np
import pytest

from pprsf_jax import pipeline
from pprsf_jax.cli import load_config
from pprsf_jax.config import DataConfig, RecallConfig, SyntheticConfig, apply_overrides
from pprsf_jax.data.dataset import FederatedDataset, build_dataset
from pprsf_jax.data.synthetic import generate_synthetic
from pprsf_jax.deploy import coordinator, local_data
from pprsf_jax.ranking import (ClientExamples, ItemTable, LocalTraining, ModelDims, ModelSpec,
                               build_model, candidate_training, init_personal_states,
                               make_item_table)
from pprsf_jax.ranking.examples import build_examples, stack_lists
from pprsf_jax.types import Candidates, Interactions

# Implicit rank promotion ([N] + [N, M] broadcasting) is a classic source of silent shape bugs;
# the package is written without it, so any new instance fails the suite.
jax.config.update("jax_numpy_rank_promotion", "raise")
# In case something imported JAX before this file: the same settings, from the environment.
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs",
                  float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))
jax.config.update("jax_persistent_cache_min_entry_size_bytes",
                  int(os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"]))

SYNTHETIC = SyntheticConfig(num_users=60, num_items=50, interactions_per_user=15)
DATA_CONFIG = DataConfig(source="synthetic", synthetic=SYNTHETIC)
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


def _fold_examples(data: FederatedDataset, source: pipeline.Recall, candidates: Candidates,
                   fold: int) -> ClientExamples:
  """The client stage for one cross-fitting fold, on the candidates the server sent: [N, 1, K]."""
  public, private = data.public, data.private
  return build_examples(
      candidates, private.user_features, history=source.known + private.context(fold),
      positives=public.labels(fold) + private.labels(fold), genres=public.catalogue.genres,
      neighbors=source.neighbors, public_counts=source.counts)


def _training_examples(data: FederatedDataset, recall: pipeline.RecallModels,
                       config: RecallConfig) -> ClientExamples:
  """Ranking-training examples as `pipeline.run` builds them: one list per fold, [N, S, K]."""
  lists = []
  for fold, source in enumerate(recall.folds):
    candidates = pipeline.candidates_for(source.params, config.num_candidates, source.known,
                                         config)
    lists.append(_fold_examples(data, source, candidates, fold))
  return stack_lists(lists)


@pytest.fixture(scope="session")
def examples(dataset, recall_models) -> ClientExamples:
  """Training examples of every client, [N, S, K, ...] with S = the number of folds."""
  built = _training_examples(dataset, recall_models, RECALL_CONFIG)
  assert built.items.ndim == 3 and built.items.shape[1] == dataset.public.num_folds > 1
  return built


@pytest.fixture(scope="session")
def single_list_examples(dataset, recall_models) -> ClientExamples:
  """Training examples of fold 0 only, [N, 1, K, ...]: trailing K padding is trailing overall."""
  source = recall_models.folds[0]
  candidates = pipeline.candidates_for(source.params, RECALL_CONFIG.num_candidates, source.known,
                                       RECALL_CONFIG)
  return _fold_examples(dataset, source, candidates, 0)


@pytest.fixture(scope="session")
def serving_examples(dataset, recall_models) -> ClientExamples:
  """What clients rank at serving time (as in `pipeline.run`'s `serve`): [N, 1, K, ...]."""
  public, private = dataset.public, dataset.private
  serving = recall_models.serving
  candidates = pipeline.candidates_for(serving.params, RECALL_CONFIG.num_candidates,
                                       public.history, RECALL_CONFIG)
  return build_examples(
      candidates, private.user_features, history=public.history + private.history,
      positives=Interactions.empty(), genres=public.catalogue.genres,
      neighbors=serving.neighbors, public_counts=serving.counts)


@pytest.fixture(scope="session")
def item_table(dataset) -> ItemTable:
  return make_item_table(dataset.public.catalogue)


def mlp_training(hidden_sizes=(16,), **training) -> LocalTraining:
  """Local training of a small feature MLP on the candidate task (keywords: loss,
  units_per_step, epochs, learning_rate)."""
  training = {"units_per_step": 8, "epochs": 2, "learning_rate": 0.1} | training
  return candidate_training(build_model("feature_mlp", ModelSpec(hidden_sizes=hidden_sizes)),
                            **training)


@pytest.fixture(scope="session")
def local() -> LocalTraining:
  return mlp_training()


@pytest.fixture(scope="session")
def dims(dataset, item_table) -> ModelDims:
  return pipeline.model_dims(dataset.private.user_features.shape[1], item_table)


@pytest.fixture(scope="session")
def theta0(dims, local):
  return local.task.init_shared(jax.random.key(3), dims)


def _pad_axis(examples: ClientExamples, extra: int, prefix: tuple[int, ...]) -> ClientExamples:
  """Appends `extra` zero entries on axis len(prefix) - 1 of every leaf whose shape starts with
  `prefix` (a prefix of `items.shape`); padded item ids are -1."""
  axis = len(prefix) - 1

  def pad(leaf):
    leaf = np.asarray(leaf)
    if leaf.shape[:len(prefix)] != prefix:
      return leaf
    widths = [(0, 0)] * leaf.ndim
    widths[axis] = (0, extra)
    return np.pad(leaf, widths)

  padded = jax.tree.map(pad, examples)
  widths = [(0, 0)] * examples.items.ndim
  widths[axis] = (0, extra)
  return padded._replace(items=np.pad(np.asarray(examples.items), widths, constant_values=-1))


def _pad_candidates(examples: ClientExamples, extra: int) -> ClientExamples:
  """`extra` padding candidates (item -1, mask 0, label 0, score 0) at the end of every list."""
  return _pad_axis(examples, extra, tuple(examples.items.shape))


def _pad_lists(examples: ClientExamples, extra: int) -> ClientExamples:
  """`extra` whole padding lists (every slot padding) after a client's real lists."""
  return _pad_axis(examples, extra, tuple(examples.items.shape[:-1]))


@pytest.fixture(scope="session")
def pad_candidates() -> Callable[[ClientExamples, int], ClientExamples]:
  """Pads the candidate (last `items`) axis; works for one client or a stacked cohort."""
  return _pad_candidates


@pytest.fixture(scope="session")
def pad_lists() -> Callable[[ClientExamples, int], ClientExamples]:
  """Pads the list axis (`items.shape[-2]`); works for one client or a stacked cohort."""
  return _pad_lists


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


# ------------------------------------------------------------------------------ deployments
# One tiny federation (configs/deploy_tiny.py: 4 users) for the deployment tests: the server's
# setup, every device's own data, and the simulator's training on the same data and seed.
DEPLOY_CONFIG_FILE = str(pathlib.Path(__file__).parents[1] / "configs" / "deploy_tiny.py")


@pytest.fixture(scope="session")
def deploy_config():
  return load_config(DEPLOY_CONFIG_FILE)


@pytest.fixture(scope="session")
def deploy_setup(deploy_config):
  return coordinator.prepare(deploy_config, local_data.server_part(deploy_config))


@pytest.fixture(scope="session")
def deploy_devices(deploy_config, deploy_setup):
  return [local_data.device_part(deploy_config, user)
          for user in range(deploy_setup.public.num_users)]


@pytest.fixture(scope="session")
def deploy_simulated(deploy_config, deploy_setup, deploy_devices):
  """(training examples [N, S, K], the simulator's FederatedTraining)."""
  data = local_data.load_federation(deploy_config)
  examples = pipeline.training_examples(deploy_setup.recall, data.public, data.private,
                                        deploy_config.recall)
  theta0 = coordinator.initial_theta(deploy_setup, deploy_devices[0][0].user_features.size)
  return examples, pipeline.train_federated(theta0, (), examples, deploy_setup.item_table,
                                            deploy_config, deploy_setup.local)


# FedMF deployed: a model with personal state (each device's user embedding).
DEPLOY_MF_OVERRIDES = ("ranking.model=mf", "ranking.embedding_dim=4",
                       "ranking.personal_learning_rate=1.0")


@pytest.fixture(scope="session")
def deploy_mf(deploy_config):
  """FedMF on the tiny federation: (config, server setup, the simulator's FederatedTraining)."""
  config = apply_overrides(deploy_config, list(DEPLOY_MF_OVERRIDES))
  setup = coordinator.prepare(config, local_data.server_part(config))
  data = local_data.load_federation(config)
  examples = pipeline.training_examples(setup.recall, data.public, data.private, config.recall)
  width = data.private.user_features.shape[1]
  dims = pipeline.model_dims(width, setup.item_table)
  personal0 = init_personal_states(setup.local.task, dims,
                                   pipeline.stream_key(config.seed, "personal"),
                                   data.public.num_users)
  return config, setup, pipeline.train_federated(
      coordinator.initial_theta(setup, width), personal0, examples, setup.item_table, config,
      setup.local)


# ------------------------------------------------------------------------------ the run's order
# The slowest files first (measured on a fresh clone, 2 cores): with one file per xdist worker
# (`--dist loadfile` in setup.cfg), a long file started last would leave the other worker idle.
SLOW_FILES = (
    "test_padding_invariance.py", "test_dp_rounds.py", "test_flower_deployment.py",
    "test_checkpoint.py", "test_sharding.py", "test_privacy_boundary_end_to_end.py",
    "test_dp.py", "test_determinism.py", "test_faults.py", "test_decoys.py", "test_layers.py",
    "test_recall_models.py", "test_aggregation.py", "test_protocols.py",
    "test_pipeline_stages.py", "test_ranking_models.py", "test_literature.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
  """Runs the files of SLOW_FILES first, in that order; every file keeps its own order."""
  rank = {name: index for index, name in enumerate(SLOW_FILES)}
  items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FILES)))


@pytest.fixture(scope="module", autouse=True)
def _release_compiled_programs():
  """Drops JAX's compiled programs after each test module.

  Every XLA:CPU executable holds memory mappings of its own, and the kernel caps a process at
  vm.max_map_count of them (65,530 by default). The suite compiles thousands of programs in one
  process: without this it passes that cap near its end and XLA segfaults while compiling.
  A program a later module needs again is read back from the persistent cache (above).
  """
  yield
  jax.clear_caches()
  gc.collect()
