"""The run folder's report: results.md links the figures it sits beside, metrics.jsonl has one
strict JSON line per round, and results without DP, per-user values or a curve still report."""

from __future__ import annotations

import copy
import json
import math
import re

from pprsf_jax import figures, online, report

ROUNDS = 4
PNG = b"\x89PNG\r\n\x1a\n"
ROUND_KEYS = {"round", "loss", "valid_ndcg@10", "upload_bytes", "rejected", "dropped",
              "stragglers"}


def _results(mechanism: str = "central") -> dict:
  """A results dict shaped like `pipeline.run`'s, small enough to write by hand."""
  metrics = lambda value: {"ndcg@10": value, "recall@10": value + 0.1}
  results = {
      "config": {"name": "tiny", "seed": 0, "eval": {"top_k": 10},
                 "ranking": {"loss": "bce"}, "federated": {"compression": "top_k"}},
      "dataset": {"name": "synthetic", "source_format": "synthetic", "users": 6, "items": 9},
      "test": {"central (P_Sum)": metrics(0.3), "federated (P_FL)": metrics(0.2)},
      "valid": {"central (P_Sum)": metrics(0.25), "local_only (P_i)": metrics(0.05),
                "federated (P_FL)": metrics(0.15)},
      "delta": {"metric": "ndcg@10", "p_fl": 0.2, "p_sum": 0.3, "absolute": 0.1,
                "relative": 1 / 3},
      "local_only": {"mean": 0.1, "best": 0.5, "clients": 6, "fl_beats_local_share": 0.5,
                     "fl_ties_local_share": 1 / 3,
                     "per_user": {"metric": "ndcg@10", "p_fl": [0.5, 0.2, 0.0, 0.3, 0.1, 0.0],
                                  "p_i": [0.1, 0.2, 0.0, 0.0, 0.4, 0.0]}},
      "federated": {"rounds": ROUNDS, "losses": [0.6, 0.4, 0.35, 0.3],
                    "valid_curve": [None, 0.1, None, 0.15],
                    "per_round": {"round": [1, 2, 3, 4], "loss": [0.6, 0.4, 0.35, 0.3],
                                  "valid_ndcg": [None, 0.1, None, 0.15],
                                  "upload_bytes": [2900.0, 2800.0, 2800.0, 2750.0],
                                  "rejected": [0, 1, 0, 0], "dropped": [0, 0, 2, 0],
                                  "stragglers": [1, 0, 0, 0]}},
      "privacy": {"mechanism": "none"},
      "communication_bytes_per_client_per_round": {"up_update": 2812.5,
                                                   "up_update_uncompressed": 27396.0},
  }
  if mechanism == "central":
    results["federated"]["per_round"]["clip_norm"] = [1.0, 0.9, 0.8, 0.8]
    results["privacy"] = {"mechanism": "central", "noise_multiplier": 1.1, "clip_norm": 1.0,
                          "delta": 1e-5, "target_epsilon": 3.0,
                          "epsilon_rdp_per_round": [0.8, 1.3, 1.7, 2.0]}
  elif mechanism == "local":  # the busiest client took part in 2 of the 4 rounds
    results["privacy"] = {"mechanism": "local", "noise_multiplier": 2.0, "clip_norm": 1.0,
                          "delta": 1e-5, "epsilon_rdp_per_round": [4.0, 6.5]}
  return results


def _older(results: dict) -> dict:
  """The same run as a results.json written before per-round and per-user values existed."""
  older = copy.deepcopy(results)
  del older["federated"]["per_round"], older["local_only"]["per_user"]
  del older["communication_bytes_per_client_per_round"]
  return older


def _lines(folder) -> list[dict]:
  def refuse(constant):
    raise ValueError(f"not strict JSON: {constant}")
  return [json.loads(line, parse_constant=refuse)
          for line in (folder / "metrics.jsonl").read_text().splitlines()]


def _linked(folder, markdown: str) -> list[str]:
  """The images a markdown file links, each checked to be a PNG in the folder."""
  names = re.findall(r"!\[[^\]]+\]\(([^)]+)\)", (folder / markdown).read_text())
  for name in names:
    assert (folder / name).read_bytes().startswith(PNG), name
  return names


def test_a_dp_run_writes_every_figure_and_links_it(tmp_path):
  report.write_results(_results("central"), tmp_path, "tiny")
  linked = _linked(tmp_path, "results.md")
  assert linked == [figures.TRAINING, figures.CLIENTS, figures.EPSILON, figures.UPLOAD]
  assert sorted(path.name for path in tmp_path.glob("*.png")) == sorted(linked)
  assert "(metrics.jsonl)" in (tmp_path / "results.md").read_text()
  assert json.loads((tmp_path / "results.json").read_text())["federated"]["rounds"] == ROUNDS


def test_metrics_jsonl_has_one_line_per_round(tmp_path):
  report.write_results(_results("central"), tmp_path, "tiny")
  lines = _lines(tmp_path)
  assert [line["round"] for line in lines] == [1, 2, 3, 4]
  assert all(set(line) == ROUND_KEYS | {"epsilon", "clip_norm"} for line in lines)
  assert [line["valid_ndcg@10"] for line in lines] == [None, 0.1, None, 0.15]
  assert [line["dropped"] for line in lines] == [0, 0, 2, 0]
  assert [line["epsilon"] for line in lines] == [0.8, 1.3, 1.7, 2.0]
  assert [line["clip_norm"] for line in lines] == [1.0, 0.9, 0.8, 0.8]


def test_without_dp_there_is_no_epsilon_figure_or_key(tmp_path):
  report.write_results(_results("none"), tmp_path, "tiny")
  assert figures.EPSILON not in _linked(tmp_path, "results.md")
  assert not (tmp_path / figures.EPSILON).exists()
  assert all(set(line) == ROUND_KEYS for line in _lines(tmp_path))


def test_local_dp_epsilon_per_round_is_the_busiest_clients_bound(tmp_path):
  report.write_results(_results("local"), tmp_path, "tiny")
  # By round r no client took part more than min(r, 2) times: the curve's point there.
  assert [line["epsilon"] for line in _lines(tmp_path)] == [4.0, 6.5, 6.5, 6.5]
  assert all("clip_norm" not in line for line in _lines(tmp_path))
  assert figures.EPSILON in _linked(tmp_path, "results.md")


def test_older_results_report_what_they_hold(tmp_path):
  older = _older(_results("central"))
  del older["privacy"]["epsilon_rdp_per_round"]
  report.write_results(older, tmp_path, "tiny")
  assert _linked(tmp_path, "results.md") == [figures.TRAINING]
  lines = _lines(tmp_path)
  assert [line["loss"] for line in lines] == [0.6, 0.4, 0.35, 0.3]
  assert [line["valid_ndcg@10"] for line in lines] == [None, 0.1, None, 0.15]
  assert all(line["upload_bytes"] is None and line["rejected"] is None for line in lines)


def test_a_run_without_an_evaluation_curve_still_plots_its_loss(tmp_path):
  results = _results("none")
  results["federated"]["per_round"]["valid_ndcg"] = [None] * ROUNDS
  report.write_results(results, tmp_path, "tiny")
  assert figures.TRAINING in _linked(tmp_path, "results.md")
  assert all(line["valid_ndcg@10"] is None for line in _lines(tmp_path))


def test_a_diverged_loss_is_null_not_nan(tmp_path):
  results = _results("none")
  results["federated"]["per_round"]["loss"][2] = math.nan
  report.write_results(results, tmp_path, "tiny")
  assert [line["loss"] for line in _lines(tmp_path)] == [0.6, 0.4, None, 0.3]


def test_the_client_histogram_title_gives_the_share_p_fl_wins(tmp_path, monkeypatch):
  drawn = []
  monkeypatch.setattr(figures, "save", lambda figure, path: drawn.append(figure) or path)
  figures.client_differences(_results("none"), tmp_path)
  # p_fl - p_i = [0.4, 0, 0, 0.3, -0.3, 0]: P_FL wins for 2 of the 6 clients, ties for 3.
  title = drawn[0].axes[0].get_title()
  assert "33.3% of 6 clients" in title and "ties 50.0%" in title


def test_the_online_report_links_its_day_figure(tmp_path):
  day = lambda d, ndcg: {"day": d, "from": "2020-01-0" + str(d), "to": "2020-01-0" + str(d),
                         "active_users": 5, "new_users": 1, "new_items": 0,
                         "service": {"click_rate": 0.1 * d}, "new_item_exposure": 0.05,
                         "metrics": {"pprsf": {"ndcg@10": ndcg}, "popularity": {"ndcg@10": 0.1}}}
  results = {"config": {"name": "tiny", "eval": {"top_k": 10}},
             "days": [day(1, 0.2), day(2, 0.25)]}
  written = online.write_report(results, tmp_path)
  assert [path.name for path in written] == ["online.json", "days.md", figures.ONLINE]
  assert _linked(tmp_path, "days.md") == [figures.ONLINE]
