"""The orchestrator as named stages: run in order, each callable on its own, each replaceable."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import jax
import pytest

from pprsf_jax import pipeline
from pprsf_jax.config import RunConfig, apply_overrides
from pprsf_jax.pipeline import stages

CONFIG_PATH = Path(__file__).resolve().parents[1] / "configs" / "synthetic_tiny.py"
OVERRIDES = [
    "data.synthetic.num_users=40", "data.synthetic.num_items=40",
    "data.synthetic.interactions_per_user=15", "data.label_folds=2", "eval.top_k=5",
    "ranking.top_t=8",
    "recall.num_candidates=16", "recall.epochs=2", "federated.rounds=2",
    "federated.clients_per_round=8", "ranking.hidden_sizes=(8,)", "baselines.central_epochs=1",
    "baselines.local_only_epochs=1", "baselines.finetune_epochs=1", "eval.every_rounds=1",
]
NAMES = [name for name, _ in pipeline.STAGES]


def _config() -> RunConfig:
  spec = importlib.util.spec_from_file_location("synthetic_tiny", CONFIG_PATH)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return apply_overrides(module.get_config(), OVERRIDES)


def _without_timings(results: dict) -> dict:
  return {key: value for key, value in results.items() if key != "timings_s"}


class _Records(logging.Handler):
  def __init__(self):
    super().__init__(logging.INFO)
    self.records = []

  def emit(self, record):
    self.records.append(record)


@pytest.fixture(scope="module")
def outcome() -> pipeline.RunOutcome:
  """One run with progress off, checking on the way that no progress record was made."""
  handler, progress_logger = _Records(), logging.getLogger("pprsf_jax.progress")
  progress_logger.addHandler(handler)
  try:
    run = pipeline.execute(_config(), progress=False)
  finally:
    progress_logger.removeHandler(handler)
  assert not handler.records
  return run


def test_every_stage_is_timed_in_order(outcome):
  assert list(outcome.results["timings_s"]) == NAMES
  assert pipeline.Stages._fields == tuple(NAMES)


def test_the_stages_run_in_order_on_each_others_outputs(outcome, caplog):
  """Wrapped stages, with progress shown this time: same results, a line per stage."""
  called = []

  def recorded(name):
    default = getattr(pipeline.DEFAULT_STAGES, name)
    return lambda *args, **kwargs: called.append(name) or default(*args, **kwargs)

  wrapped = pipeline.Stages(**{name: recorded(name) for name in NAMES})
  with caplog.at_level(logging.INFO):
    again = pipeline.execute(_config(), stages=wrapped, progress=True)
  assert called == NAMES
  assert _without_timings(again.results) == _without_timings(outcome.results)
  shown = [record.getMessage() for record in caplog.records]
  assert [f"stage {name} done" for name in NAMES] == [
      line.split(" in ")[0] for line in shown if line.startswith("stage ") and "done" in line]
  assert shown[-1].startswith("stages: load ")


def test_stages_called_by_hand_with_one_replaced():
  """A user's own baselines stage: P_Sum replaced by P_FL's Θ, so their test rows agree."""
  config = _config()
  loaded = stages.load(config)
  models = stages.recall(config, loaded)
  training = stages.candidates(config, loaded, models)
  federated = stages.federated_ranking(config, loaded, models, training)
  trained = stages.baselines(config, loaded, training, federated)._replace(
      central=(federated.params, federated.clients.personal))
  serving = stages.serve(config, loaded, models, training, federated, trained)
  evaluation = stages.evaluate(config, loaded, training, federated, serving)
  results = stages.report(config, loaded, training, federated, serving, evaluation, {})
  assert results["test"]["central (P_Sum)"] == results["test"]["federated (P_FL)"]
  assert results["delta"]["absolute"] == 0.0


def test_results_record_every_round_and_every_user(outcome):
  results = outcome.results
  per_round = results["federated"]["per_round"]
  assert per_round["round"] == [1, 2]
  assert per_round["loss"] == results["federated"]["losses"]
  assert per_round["valid_ndcg"] == results["federated"]["valid_curve"]
  assert all(value is not None for value in per_round["valid_ndcg"])
  assert {"upload_bytes", "rejected", "dropped", "stragglers"} <= per_round.keys()
  per_user = results["local_only"]["per_user"]
  assert len(per_user["p_fl"]) == len(per_user["p_i"]) > 0
  assert per_user["metric"] == results["delta"]["metric"]


def test_the_outcome_is_typed(outcome):
  assert isinstance(outcome.federated, pipeline.FederatedTraining)
  shared, personal = outcome.baselines.central  # (Θ, every client's personal state)
  assert jax.tree.structure(outcome.federated.params) == jax.tree.structure(shared)
  assert jax.tree.structure(outcome.federated.clients.personal) == jax.tree.structure(personal)
  assert outcome.serving.test.lists.keys() == outcome.results["test"].keys()
