"""The orchestrator: a run of PPRSF as a composition of named stages. No maths lives here.

  server: recall on public data ─► K candidates ─► client: features + private data, local SGD
  ─► uploads ─► server: aggregate ─► … rounds … ─► client: rank, send Top-T ─► server: re-rank
  ─► client: service logs the period (public → server, private → device) ─► next period.

`execute(config)` runs every stage and returns a typed `RunOutcome`; `run(config)` returns its
JSON-ready results. Each stage is a function of `pprsf_jax.pipeline.stages` that can be called
on its own or replaced: `execute(config, stages=DEFAULT_STAGES._replace(baselines=mine))`.
The comparison models (recall only, P_i, P_Sum) are trained beside the pipeline on the same data.
"""

from __future__ import annotations

import logging
import pathlib
from typing import Any, Callable, NamedTuple

from pprsf_jax import progress as progress_lib
from pprsf_jax.config import RunConfig
from pprsf_jax.data.dataset import Partition
from pprsf_jax.data.movielens import MovieLensTables
from pprsf_jax.pipeline import stages as _stages
from pprsf_jax.pipeline.clients import (examples_from_recall, local_training, model_dims,
                                        rank_all, training_examples)
from pprsf_jax.pipeline.federated import FederatedTraining, train_federated
from pprsf_jax.pipeline.keys import stream_key
from pprsf_jax.pipeline.server import (Recall, RecallModels, candidates_for, fit_recall,
                                       load_tables, rerank_context, train_recall)
from pprsf_jax.pipeline.stages import (Baselines, Evaluation, Loaded, Served, Serving,
                                       TrainingSet)
from pprsf_jax.privacy.server_view import IGNORED

__all__ = [
    "STAGES", "Stages", "DEFAULT_STAGES", "RunOutcome", "execute", "run",
    "Baselines", "Evaluation", "FederatedTraining", "Loaded", "Recall", "RecallModels", "Served",
    "Serving", "TrainingSet", "candidates_for", "examples_from_recall", "fit_recall",
    "load_tables", "local_training", "model_dims", "rank_all", "rerank_context", "stream_key",
    "train_federated", "train_recall", "training_examples",
]

logger = logging.getLogger(__name__)

# The run's stages, in order: (name, what it does). The vocabulary of progress lines,
# `timings_s`, `pprsf run --dry-run` and the docs.
STAGES: tuple[tuple[str, str], ...] = (
    ("load", "read the data and split it into public (server) and private (device) parts"),
    ("recall", "train the server's recall models on public data"),
    ("candidates", "send each client K candidates per training fold; clients build examples"),
    ("federated_ranking", "train the ranking model by federated rounds (P_FL)"),
    ("baselines", "train the comparison models: pooled P_Sum, local-only P_i, fine-tuned P_FL"),
    ("serve", "serve the validation and test periods: rank on device, re-rank on the server"),
    ("evaluate", "score every method's lists; the privacy audit when configured"),
    ("report", "assemble the results (the command writes them to the run folder)"),
)


class Stages(NamedTuple):
  """The function run for each stage (signatures: `pprsf_jax.pipeline.stages`)."""

  load: Callable[..., Loaded] = _stages.load
  recall: Callable[..., RecallModels] = _stages.recall
  candidates: Callable[..., TrainingSet] = _stages.candidates
  federated_ranking: Callable[..., FederatedTraining] = _stages.federated_ranking
  baselines: Callable[..., Baselines] = _stages.baselines
  serve: Callable[..., Serving] = _stages.serve
  evaluate: Callable[..., Evaluation] = _stages.evaluate
  report: Callable[..., dict[str, Any]] = _stages.report


DEFAULT_STAGES = Stages()
assert Stages._fields == tuple(name for name, _ in STAGES)


class RunOutcome(NamedTuple):
  """Every stage's output; `results` is what results.json holds."""

  loaded: Loaded
  recall: RecallModels
  training: TrainingSet
  federated: FederatedTraining
  baselines: Baselines
  serving: Serving
  evaluation: Evaluation
  results: dict[str, Any]


def execute(config: RunConfig, *, stages: Stages = DEFAULT_STAGES, progress: bool = True,
            tables: MovieLensTables | None = None, run_dir: pathlib.Path | None = None,
            recall_cache: dict | None = None, partition: Partition | None = None,
            server_view=IGNORED) -> RunOutcome:
  """Runs PPRSF end to end, stage by stage, each timed into `results["timings_s"]`.

  With `run_dir`, federated training checkpoints into `run_dir/checkpoints` and resumes from
  there; every other stage is deterministic, so it is recomputed. `recall_cache` (a dict the
  caller keeps) reuses recall models across runs that share data, recall config and seed.
  `partition` replaces nature's draw of periods and private rows
  (`pprsf_jax.data.dataset.draw_partition`); `server_view` keeps everything the server receives
  or computes (`pprsf_jax.privacy.server_view`). Progress and stage lines are INFO log records
  (`pprsf_jax.progress`); `progress=False` hides them.
  """
  if partition is not None:
    recall_cache = None  # a given partition is not part of the cache key: share no models
  timings: dict[str, float] = {}
  stage = lambda name: progress_lib.stage(name, timings)
  with progress_lib.shown(progress):
    with stage("load"):
      loaded = stages.load(config, tables=tables, partition=partition, server_view=server_view)
    with stage("recall"):
      models = stages.recall(config, loaded, cache=recall_cache)
    with stage("candidates"):
      training = stages.candidates(config, loaded, models, server_view=server_view)
    with stage("federated_ranking"):
      federated = stages.federated_ranking(config, loaded, models, training, run_dir=run_dir,
                                           server_view=server_view)
    with stage("baselines"):
      trained = stages.baselines(config, loaded, training, federated)
    with stage("serve"):
      serving = stages.serve(config, loaded, models, training, federated, trained,
                             server_view=server_view)
    with stage("evaluate"):
      evaluation = stages.evaluate(config, loaded, training, federated, serving)
    with stage("report"):
      results = stages.report(config, loaded, training, federated, serving, evaluation, timings)
    logger.info(progress_lib.summary(timings))
  return RunOutcome(loaded, models, training, federated, trained, serving, evaluation, results)


def run(config: RunConfig, **options) -> dict[str, Any]:
  """`execute(config, **options).results`: the run's JSON-ready results."""
  return execute(config, **options).results
