"""End-to-end determinism: the seed is the only source of randomness in `pipeline.run`."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

import pytest

from pprsf_jax import pipeline, report
from pprsf_jax.config import RunConfig, apply_overrides

CONFIG_PATH = Path(__file__).resolve().parents[1] / "configs" / "synthetic_tiny.py"
# Smaller than the preset so three runs stay well under a minute. top_t/top_k are lowered first
# because the run config re-validates top_t < num_candidates after every override.
OVERRIDES = [
    "data.synthetic.num_users=60", "data.synthetic.num_items=50",
    "data.synthetic.interactions_per_user=15", "data.label_folds=2", "ranking.top_t=10",
    "recall.num_candidates=20",
    "recall.epochs=2", "federated.rounds=3", "federated.clients_per_round=16",
    "ranking.hidden_sizes=(16,)", "baselines.central_epochs=1", "baselines.local_only_epochs=1",
]


def _tiny_config(seed: int) -> RunConfig:
  spec = importlib.util.spec_from_file_location("synthetic_tiny", CONFIG_PATH)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return apply_overrides(module.get_config(), OVERRIDES + [f"seed={seed}"])


def _same(left: Any, right: Any) -> bool:
  """Exact equality of nested results, with NaN equal to NaN (e.g. an undefined relative delta)."""
  if isinstance(left, dict):
    return (isinstance(right, dict) and left.keys() == right.keys()
            and all(_same(left[key], right[key]) for key in left))
  if isinstance(left, (list, tuple)):
    return len(left) == len(right) and all(_same(a, b) for a, b in zip(left, right))
  if isinstance(left, float) and isinstance(right, float) and math.isnan(left):
    return math.isnan(right)
  return left == right


@pytest.fixture(scope="module")
def runs() -> dict[str, dict[str, Any]]:
  return {
      "first": pipeline.run(_tiny_config(0), progress=False),
      "again": pipeline.run(_tiny_config(0), progress=False),
      "other_seed": pipeline.run(_tiny_config(1), progress=False),
  }


def test_comparison_helper_sees_differences():
  assert _same({"a": [1.0, float("nan")]}, {"a": [1.0, float("nan")]})
  assert not _same({"a": [1.0, 2.0]}, {"a": [1.0, 2.5]})
  assert not _same({"a": 1.0}, {"b": 1.0})
  assert not _same({"a": float("nan")}, {"a": 0.0})


def test_config_overrides_took_effect(runs):
  result = runs["first"]
  assert result["dataset"]["users"] == 60 and result["dataset"]["items"] == 50
  assert len(result["federated"]["losses"]) == 3
  assert result["config"]["seed"] == 0 and runs["other_seed"]["config"]["seed"] == 1


@pytest.mark.parametrize("section", ["test", "valid", "delta", "service", "local_only"])
def test_same_seed_gives_identical_results(runs, section):
  assert _same(runs["first"][section], runs["again"][section]), section


def test_same_seed_gives_identical_losses(runs):
  first, again = runs["first"]["federated"], runs["again"]["federated"]
  assert first["losses"] == again["losses"]
  assert first["rejected_uploads"] == again["rejected_uploads"] == 0
  assert all(math.isfinite(loss) for loss in first["losses"])


def test_other_seed_gives_other_losses(runs):
  assert runs["first"]["federated"]["losses"] != runs["other_seed"]["federated"]["losses"]
  assert not _same(runs["first"]["test"], runs["other_seed"]["test"])


def test_per_client_comparison_reads_the_final_list_and_the_whole_candidate_list(runs):
  local_only = runs["first"]["local_only"]
  whole = local_only["whole_candidate_list"]
  assert whole["metric"] == "ndcg@20"  # recall.num_candidates: every candidate, ordered
  assert whole["clients"] == local_only["clients"] > 0
  for comparison in (local_only, whole):
    shares = (comparison["fl_beats_local_share"] + comparison["fl_ties_local_share"]
              + comparison["fl_loses_local_share"])
    assert shares == pytest.approx(1.0)
    assert 0.0 <= comparison["sign_test_p"] <= 1.0
  table = report.results_table(runs["first"])
  assert (f"for {100 * local_only['fl_beats_local_share']:.1f}% of clients" in table
          and f"whole candidate ordering (ndcg@20) for {100 * whole['fl_beats_local_share']:.1f}%"
          in table)
