"""The claims report: statistics over seeds, checked on hand-made results."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
from scipy import stats

from pprsf_jax import claims
from pprsf_jax.metrics import compare_per_user

METHODS = ("popularity", "item_knn", "bpr", "local_only (P_i)", "central (P_Sum)",
           "federated (P_FL)", "personalised (P_FL + fine-tune)", "pprsf (P_FL + re-rank)")


def fake_run(seed: int, ndcg: dict[str, float]) -> dict:
  test = {m: {"ndcg@10": ndcg[m], "recall@10": ndcg[m] / 2, "coverage@10": 0.2,
              "diversity@10": 0.5, "novelty@10": 3.0, "gini@10": 0.9} for m in METHODS}
  p_sum, p_fl = ndcg["central (P_Sum)"], ndcg["federated (P_FL)"]
  return {
      "config": {"seed": seed, "out_dir": "runs", "eval": {"top_k": 10, "sampled_negatives": 0},
                 "data": {"split": "random"}, "recall": {"num_neighbors": 50}},
      "dataset": {"name": "fake", "users": 10, "items": 200},
      "test": test,
      "delta": {"absolute": abs(p_sum - p_fl), "relative": abs(p_sum - p_fl) / p_sum},
      "local_only": {"fl_beats_local_share": 0.4 + 0.1 * seed, "fl_ties_local_share": 0.2},
      "communication_bytes_per_client_per_round": {
          "down_theta_and_broadcast": 100.0, "up_update": 100.0, "down_candidates": 1200,
          "down_neighbor_lists": 40000, "up_top_t": 160},
      "federated": {"losses": [0.7, 0.6, 0.5 - 0.01 * seed],
                    "valid_curve": [None, 0.2 + 0.01 * seed, 0.3]},
      "valid": {m: {"ndcg@10": ndcg[m] - 0.01} for m in METHODS},
      "rerank_settings": {name: {**test["pprsf (P_FL + re-rank)"], "diversity@10": value}
                          for name, value in (("none", 0.5), ("mmr λ=0.5", 0.6 + 0.01 * seed))},
  }


def runs():
  out = []
  for seed, shift in enumerate([0.0, 0.01, -0.01]):
    ndcg = {m: 0.2 + 0.01 * i + shift for i, m in enumerate(METHODS)}
    ndcg["bpr"] = 0.28 + shift
    out.append(fake_run(seed, ndcg))
  return out


def test_mean_ci_is_the_student_t_interval():
  values = [0.1, 0.2, 0.4]
  mean, half = claims.mean_ci(values)
  assert mean == pytest.approx(np.mean(values))
  want = stats.t.ppf(0.975, 2) * np.std(values, ddof=1) / math.sqrt(3)
  assert half == pytest.approx(want)
  assert math.isnan(claims.mean_ci([0.3])[1])


def test_summary_states_each_claim():
  summary = claims.summarize(runs())
  assert summary["recall_only"] == ["popularity", "item_knn", "bpr"]
  assert summary["best_recall_only"] == ["bpr"] * 3
  # pprsf = 0.27 + shift, best recall = bpr 0.28 + shift.
  gains = [(0.27 + s) / (0.28 + s) - 1 for s in (0.0, 0.01, -0.01)]
  assert summary["gain_over_best_recall"][0] == pytest.approx(np.mean(gains))
  assert summary["fl_beats_local_share"][0] == pytest.approx(0.5)
  assert summary["delta_absolute"][0] == pytest.approx(0.01)
  assert summary["communication"]["down_whole_catalogue_per_period"] == 200 * (12 + 50 * 8)
  assert summary["table"]["bpr"]["ndcg@10"][0] == pytest.approx(0.28)
  assert summary["valid_curve"] == [[2, pytest.approx(0.21)], [3, pytest.approx(0.3)]]
  assert summary["valid_final"]["bpr"] == pytest.approx(0.27)
  assert summary["rerank_table"]["mmr λ=0.5"]["diversity@10"][0] == pytest.approx(0.61)


def test_runs_that_differ_beyond_the_seed_are_refused():
  mixed = runs()
  mixed[1] = copy.deepcopy(mixed[1])
  mixed[1]["config"]["recall"]["num_neighbors"] = 20
  with pytest.raises(ValueError, match="more than their seed"):
    claims.summarize(mixed)
  with pytest.raises(ValueError, match="no runs"):
    claims.summarize([])


def test_report_files(tmp_path):
  written = claims.write(claims.summarize(runs()), tmp_path, "python scripts/claims_report.py")
  assert [p.name for p in written] == ["REPORT.md", "summary.json", "loss_per_round.png",
                                       "metric_per_round.png"]
  report = written[0].read_text()
  for section in ("## Accuracy", "## Beyond accuracy", "## Claims", "## Communication",
                  "P_FL beats", "δ = ", "best recall-only model (bpr)", "± ",
                  "full ranking over every item, random split", "re-rank setting",
                  "| mmr λ=0.5 | "):
    assert section in report
  for plot in written[2:]:
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_per_user_comparison_counts_wins_ties_losses_and_the_sign_test():
  federated = np.array([0.5, 0.4, 0.0, 0.3, 0.2, 0.9, 0.0, 0.1])
  local = np.array([0.2, 0.4, 0.0, 0.1, 0.3, 0.1, 0.0, 0.05])
  got = compare_per_user(federated, local)
  # Wins: clients 0, 3, 5, 7; ties: 1, 2, 6; loss: 4.
  assert got["clients"] == 8
  assert got["fl_beats_local_share"] == pytest.approx(4 / 8)
  assert got["fl_ties_local_share"] == pytest.approx(3 / 8)
  assert got["fl_loses_local_share"] == pytest.approx(1 / 8)
  assert got["fl_beats_local_among_differing"] == pytest.approx(4 / 5)
  assert got["sign_test_p"] == pytest.approx(stats.binomtest(4, 5).pvalue)
  all_ties = compare_per_user(np.zeros(3), np.zeros(3))
  assert all_ties["sign_test_p"] == 1.0 and all_ties["fl_beats_local_among_differing"] == 0.0


def test_report_gives_the_sign_test_when_the_runs_have_it(tmp_path):
  with_test = runs()
  for seed, run in enumerate(with_test):
    run["local_only"].update(fl_beats_local_among_differing=0.55 + 0.01 * seed,
                             sign_test_p=0.01 * (seed + 1))
  summary = claims.summarize(with_test)
  assert summary["fl_beats_local_among_differing"][0] == pytest.approx(0.56)
  assert summary["sign_test_p_max"] == pytest.approx(0.03)
  report = claims.markdown(summary)
  assert "among the clients where the two differ, P_FL wins for 56.0" in report
  assert "largest p over seeds 0.03" in report
  # Results from before the sign test existed still summarise, without it.
  assert claims.summarize(runs())["fl_beats_local_among_differing"] is None


def test_report_gives_the_whole_candidate_list_comparison_when_the_runs_have_it():
  with_whole = runs()
  for seed, run in enumerate(with_whole):
    run["local_only"]["whole_candidate_list"] = {
        "metric": "ndcg@200", "fl_beats_local_share": 0.50 + 0.02 * seed,
        "fl_ties_local_share": 0.01, "fl_beats_local_among_differing": 0.52 + 0.02 * seed,
        "sign_test_p": 0.1 / (seed + 1)}
  whole = claims.summarize(with_whole)["whole_candidate_list"]
  assert whole["metric"] == "ndcg@200"
  assert whole["fl_beats_local_share"][0] == pytest.approx(0.52)
  assert whole["fl_beats_local_among_differing"][0] == pytest.approx(0.54)
  assert whole["sign_test_p_max"] == pytest.approx(0.1)
  report = claims.markdown(claims.summarize(with_whole))
  assert "whole candidate list (ndcg@200" in report and "beats P_i for 52.0" in report
  # A seed without it (an older results.json) leaves it out rather than averaging fewer seeds.
  del with_whole[1]["local_only"]["whole_candidate_list"]
  assert claims.summarize(with_whole)["whole_candidate_list"] is None
  assert "whole candidate list" not in claims.markdown(claims.summarize(with_whole))
