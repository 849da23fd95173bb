"""The paper's claims over seeds: every method's metrics as mean ± 95% CI, P_FL against P_i,
δ = |P_Sum − P_FL|, the ranking layer's gain over the best recall-only model, and the bytes
PPRSF moves against a design that ships the whole catalogue to every client.

`summarize` takes the `results.json` of one `pipeline.run` per seed; `markdown` and `write`
turn the summary into REPORT.md, summary.json and PNGs of P_FL's validation metric per round
(against every method's final figure) and of the training loss per round.
"""

from __future__ import annotations

import json
import math
import pathlib
from typing import Any, Sequence

import numpy as np
from scipy import stats

# Ranking methods of a run; every other method in results["test"] is recall-only.
RANKING_METHODS = ("local_only (P_i)", "central (P_Sum)", "federated (P_FL)",
                   "personalised (P_FL + fine-tune)", "pprsf (P_FL + re-rank)")
FINAL, FEDERATED, CENTRAL = "pprsf (P_FL + re-rank)", "federated (P_FL)", "central (P_Sum)"
ACCURACY = ("ndcg", "recall", "mrr", "hit", "precision")
BEYOND = ("coverage", "diversity", "novelty", "gini")


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
  """Mean and the half-width of its Student-t confidence interval (NaN with one value)."""
  values = np.asarray(values, np.float64)
  if values.size < 2:
    return float(values.mean()), math.nan
  half = stats.t.ppf(0.5 + level / 2, values.size - 1) * values.std(ddof=1) / math.sqrt(values.size)
  return float(values.mean()), float(half)


def _comparison_over_seeds(comparisons: Sequence[dict[str, Any]]) -> dict[str, Any]:
  """One per-client P_FL vs P_i comparison (`metrics.compare_per_user`'s fields), one per seed:
  shares as mean ± CI, the largest sign-test p. A field some seed's results.json lacks (written
  before it was measured) comes out None rather than averaged over fewer seeds."""
  def present(field):
    values = [comparison.get(field) for comparison in comparisons]
    return None if any(value is None for value in values) else values

  over_seeds = lambda field: None if present(field) is None else mean_ci(present(field))
  p_values = present("sign_test_p")
  return {"fl_beats_local_share": over_seeds("fl_beats_local_share"),
          "fl_ties_local_share": over_seeds("fl_ties_local_share"),
          "fl_beats_local_among_differing": over_seeds("fl_beats_local_among_differing"),
          "sign_test_p_max": None if p_values is None else float(max(p_values))}


def summarize(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
  """Aggregates one run per seed (same config otherwise; checked)."""
  if not runs:
    raise ValueError("no runs to summarize")
  configs = [{k: v for k, v in run["config"].items() if k not in ("seed", "out_dir")}
             for run in runs]
  if any(config != configs[0] for config in configs):
    raise ValueError("the runs differ in more than their seed; summarize one config at a time")
  methods = list(runs[0]["test"])
  metrics = list(runs[0]["test"][methods[0]])
  k = runs[0]["config"]["eval"]["top_k"]
  ndcg = f"ndcg@{k}"
  recall_only = [m for m in methods if m not in RANKING_METHODS]
  per_seed = lambda method, metric: [run["test"][method][metric] for run in runs]
  table = {method: {metric: mean_ci(per_seed(method, metric)) for metric in metrics}
           for method in methods}
  settings = list(runs[0].get("rerank_settings", {}))
  rerank_table = {setting: {metric: mean_ci([run["rerank_settings"][setting][metric]
                                             for run in runs]) for metric in metrics}
                  for setting in settings}
  best_recall = [max(run["test"][m][ndcg] for m in recall_only) for run in runs]
  gains = [run["test"][FINAL][ndcg] / best - 1 for run, best in zip(runs, best_recall)]
  dataset = runs[0]["dataset"]
  communication = runs[0]["communication_bytes_per_client_per_round"]
  neighbors = runs[0]["config"]["recall"]["num_neighbors"]
  # Without recall a client would need every item with its score, popularity and neighbours.
  whole_catalogue = dataset["items"] * (12 + neighbors * 8)
  pprsf_down = communication["down_candidates"] + communication["down_neighbor_lists"]
  sampled = runs[0]["config"]["eval"].get("sampled_negatives", 0)
  protocol = (f"leave-one-out by time, the held-out item ranked among {sampled} sampled "
              "negatives" if sampled else
              f"full ranking over every item, {runs[0]['config']['data'].get('split', 'random')} "
              "split")
  return {
      "seeds": [run["config"]["seed"] for run in runs],
      "protocol": protocol,
      "dataset": dataset,
      "metric": ndcg,
      "methods": methods,
      "recall_only": recall_only,
      "table": table,
      "rerank_table": rerank_table,
      "delta_absolute": mean_ci([run["delta"]["absolute"] for run in runs]),
      "delta_relative": mean_ci([run["delta"]["relative"] for run in runs]),
      "p_fl": mean_ci(per_seed(FEDERATED, ndcg)),
      "p_sum": mean_ci(per_seed(CENTRAL, ndcg)),
      # On the final top-k lists; older results.json files lack the sign test (None).
      **_comparison_over_seeds([run["local_only"] for run in runs]),
      "whole_candidate_list": _whole_list_comparison(runs),
      "best_recall_only": [max(recall_only, key=lambda m, r=run: r["test"][m][ndcg])
                           for run in runs],
      "gain_over_best_recall": mean_ci(gains),
      "communication": {
          "down_theta_per_round": communication["down_theta_and_broadcast"],
          "up_update_per_round": communication["up_update"],
          "down_candidates_per_period": pprsf_down,
          "down_whole_catalogue_per_period": whole_catalogue,
          "up_top_t_per_period": communication["up_top_t"],
      },
      "losses": [run["federated"]["losses"] for run in runs],
      "valid_curve": _mean_curve([run["federated"].get("valid_curve") or [] for run in runs]),
      "valid_final": {method: float(np.mean([run["valid"][method][ndcg] for run in runs]))
                      for method in methods},
  }


def _whole_list_comparison(runs: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
  """P_FL vs P_i per client on each model's ordering of all the client's candidates (None for
  results.json files from before it was measured)."""
  compared = [run["local_only"].get("whole_candidate_list") for run in runs]
  if any(comparison is None for comparison in compared):
    return None
  return {"metric": compared[0]["metric"], **_comparison_over_seeds(compared)}


def _mean_curve(curves: Sequence[Sequence[float | None]]) -> list[list[float]]:
  """[(round, mean over seeds)] at the rounds every seed evaluated."""
  if not curves or not all(curves):
    return []
  points = []
  for index, values in enumerate(zip(*curves)):
    if all(value is not None for value in values):
      points.append([index + 1, float(np.mean(values))])
  return points


def _cell(value: tuple[float, float], digits: int = 4) -> str:
  mean, half = value
  return f"{mean:.{digits}f}" if math.isnan(half) else f"{mean:.{digits}f} ± {half:.{digits}f}"


def _metric_table(table: dict[str, dict], names: Sequence[str], label: str = "method") -> list[str]:
  first = next(iter(table.values()))
  columns = [c for name in names for c in first if c.split("@")[0] == name]
  lines = [f"| {label} | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
  for row_name, row in table.items():
    lines.append(f"| {row_name} | " + " | ".join(_cell(row[c]) for c in columns) + " |")
  return lines


def markdown(summary: dict[str, Any], command: str = "") -> str:
  seeds = summary["seeds"]
  dataset = summary["dataset"]
  communication = summary["communication"]
  percent = lambda value: _cell((100 * value[0], 100 * value[1]), 1) + "%"
  lines = [
      f"# The paper's claims on {dataset['name']} ({dataset['users']} users, "
      f"{dataset['items']} items), seeds {', '.join(map(str, seeds))}",
      "",
      f"Command: `{command}`" if command else "",
      "",
      f"Mean ± half-width of the 95% Student-t interval over {len(seeds)} seeds; "
      f"{summary['protocol']}; test period.",
      "",
      "## Accuracy",
      "",
      *_metric_table(summary["table"], ACCURACY),
      "",
      "## Beyond accuracy",
      "",
      *_metric_table(summary["table"], BEYOND),
      "",
      *(["## PPRSF's final list under each re-rank setting (same Top-T requests)", "",
         *_metric_table(summary["rerank_table"], ("ndcg", *BEYOND), "re-rank setting"), ""]
        if summary["rerank_table"] else []),
      "## Claims",
      "",
      f"- P_FL > P_i: P_FL beats its own client's local-only model for "
      f"{percent(summary['fl_beats_local_share'])} of clients and ties for "
      f"{percent(summary['fl_ties_local_share'])} ({summary['metric']} per user)"
      + ("." if summary["fl_beats_local_among_differing"] is None else
         f"; among the clients where the two differ, P_FL wins for "
         f"{percent(summary['fl_beats_local_among_differing'])} (two-sided sign test, "
         f"largest p over seeds {summary['sign_test_p_max']:.2g})."),
      *_whole_list_line(summary["whole_candidate_list"], percent),
      f"- |P_Sum − P_FL| < δ: δ = {_cell(summary['delta_absolute'])} absolute, "
      f"{percent(summary['delta_relative'])} of P_Sum (P_Sum {_cell(summary['p_sum'])}, "
      f"P_FL {_cell(summary['p_fl'])}).",
      f"- Ranking over recall: PPRSF's final list vs the best recall-only model "
      f"({', '.join(sorted(set(summary['best_recall_only'])))}): "
      f"{percent(summary['gain_over_best_recall'])} {summary['metric']}.",
      "",
      "## Communication (bytes per client)",
      "",
      "| what | bytes |",
      "|---|---|",
      f"| down per round: Θ (+ algorithm broadcast) | "
      f"{communication['down_theta_per_round']:,.0f} |",
      f"| up per round: the update as encoded | {communication['up_update_per_round']:,.0f} |",
      f"| down per serving period: K candidates with scores, popularity, neighbours | "
      f"{communication['down_candidates_per_period']:,.0f} |",
      f"| down per serving period without recall: the whole catalogue, same fields | "
      f"{communication['down_whole_catalogue_per_period']:,.0f} |",
      f"| up per serving period: the Top-T request | {communication['up_top_t_per_period']:,.0f} |",
      "",
      f"![validation {summary['metric']} per round](metric_per_round.png)",
      "![training loss per round](loss_per_round.png)",
      "",
  ]
  return "\n".join(lines)


def _whole_list_line(whole: dict[str, Any] | None, percent) -> list[str]:
  if whole is None:
    return []
  return [f"- P_FL > P_i on each client's whole candidate list ({whole['metric']} of each model's "
          f"ordering of all K candidates, where ties are rare): P_FL beats P_i for "
          f"{percent(whole['fl_beats_local_share'])} of clients, ties for "
          f"{percent(whole['fl_ties_local_share'])}; among the clients where the two differ it "
          f"wins for {percent(whole['fl_beats_local_among_differing'])} (largest sign-test p "
          f"over seeds {whole['sign_test_p_max']:.2g})."]


def write(summary: dict[str, Any], folder: pathlib.Path, command: str = "") -> list[pathlib.Path]:
  """REPORT.md, summary.json, loss_per_round.png and metric_per_round.png into `folder`."""
  import matplotlib  # pylint: disable=import-outside-toplevel  (plots only when writing)
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  folder.mkdir(parents=True, exist_ok=True)
  report = folder / "REPORT.md"
  report.write_text(markdown(summary, command))
  data = folder / "summary.json"
  data.write_text(json.dumps(summary, indent=1, default=float) + "\n")
  figure, axis = plt.subplots(figsize=(6, 4))
  for seed, losses in zip(summary["seeds"], summary["losses"]):
    axis.plot(np.arange(1, len(losses) + 1), losses, label=f"seed {seed}", linewidth=1)
  axis.set_xlabel("round")
  axis.set_ylabel("mean client training loss (P_FL)")
  axis.legend()
  figure.tight_layout()
  plot = folder / "loss_per_round.png"
  figure.savefig(plot, dpi=120)
  plt.close(figure)
  return [report, data, plot, _metric_plot(summary, folder, plt)]


def _metric_plot(summary: dict[str, Any], folder: pathlib.Path, plt) -> pathlib.Path:
  """P_FL's validation metric per round (mean over seeds) against every method's final one."""
  figure, axis = plt.subplots(figsize=(9, 4.5))
  if summary["valid_curve"]:
    rounds, values = zip(*summary["valid_curve"])
    axis.plot(rounds, values, marker=".", label=f"{FEDERATED} during training", linewidth=1.5)
  styles = ("--", ":", "-.")
  for index, (method, value) in enumerate(summary["valid_final"].items()):
    axis.axhline(value, linestyle=styles[index % 3], linewidth=1, color=f"C{index + 1}",
                 label=f"{method} (final)")
  axis.set_xlabel("federated round")
  axis.set_ylabel(f"validation {summary['metric']} (mean over seeds)")
  axis.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7)
  figure.tight_layout()
  plot = folder / "metric_per_round.png"
  figure.savefig(plot, dpi=120)
  plt.close(figure)
  return plot
