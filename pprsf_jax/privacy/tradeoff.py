"""Privacy-utility trade-off: one run per (mechanism, epsilon), tabulated and plotted.

`sweep` runs the pipeline with the curious-server audit on, for each mechanism at each target
epsilon (infinity = no DP, the same settings otherwise), and returns one row per run; `write`
puts the rows, a markdown table and PNG plots into a folder.
"""

from __future__ import annotations

import json
import math
import pathlib
from typing import Any, Callable

from pprsf_jax import pipeline
from pprsf_jax.config import RunConfig, apply_overrides

MECHANISMS = ("central", "local")
ATTRIBUTES = ("gender", "age_group", "occupation")
FINAL = "pprsf (P_FL + re-rank)"
FEDERATED = "federated (P_FL)"


def config_for(base: RunConfig, mechanism: str, epsilon: float) -> RunConfig:
  """`base` with the audit on and `mechanism` calibrated to `epsilon` (inf: no DP).

  Central DP weighs clients uniformly, samples Poisson cohorts, accounts with PLD and clips
  adaptively (the update norms of a new model are not known in advance); its no-DP point uses
  the same weighting and sampling, so it differs by DP only.
  """
  overrides = ["privacy.audit=true"]
  if mechanism == "central":
    # Poisson cohorts: amplification the PLD accountant can count (tighter than fixed-size RDP).
    overrides += ["federated.weighting=uniform", "federated.sampling=poisson",
                  "privacy.accountant=pld"]
  if math.isinf(epsilon):
    overrides.append("privacy.mechanism=none")
  else:
    overrides += [f"privacy.mechanism={mechanism}", f"privacy.target_epsilon={epsilon}"]
    if mechanism == "central":
      overrides.append("privacy.clipping=adaptive")
  return apply_overrides(base, overrides)


def row(mechanism: str, epsilon: float, results: dict[str, Any]) -> dict[str, Any]:
  """The figures of one run that the trade-off report shows."""
  metric = f"ndcg@{results['config']['eval']['top_k']}"
  privacy, audit = results["privacy"], results["privacy"]["audit"]
  communication = results["communication_bytes_per_client_per_round"]
  return {
      "mechanism": mechanism,
      "target_epsilon": epsilon,
      "epsilon_spent": privacy.get("epsilon", math.inf),
      "noise_multiplier": privacy.get("noise_multiplier", 0.0),
      "metric": metric,
      "pprsf": results["test"][FINAL][metric],
      "p_fl": results["test"][FEDERATED][metric],
      "upload_attribute_auc": {name: audit["attribute_from_uploads"][name]["auc"]
                               for name in ATTRIBUTES},
      "request_attribute_auc": {name: audit["attribute_from_requests"][name]["auc"]
                                for name in ATTRIBUTES},
      "candidate_attribute_auc": {name: audit["attribute_from_candidates"][name]["auc"]
                                  for name in ATTRIBUTES},
      "interaction_auc": audit["interaction_from_uploads_auc"],
      # What the uploads declare beside their updates: gender, and "more private candidates
      # than the median client" (NaN: every client declares the same).
      "declared_gender_auc": audit["attribute_from_declared"]["gender"]["auc"],
      "declared_private_count_auc": audit["private_count_from_declared"]["auc"],
      "request_membership_auc": audit["request_membership_auc"],
      "up_bytes": communication["up_update"] + communication["up_top_t"],
      "down_bytes": (communication["down_theta_and_broadcast"] + communication["down_candidates"]
                     + communication["down_neighbor_lists"]),
  }


def sweep(base: RunConfig, epsilons: list[float], mechanisms: list[str],
          decoys: tuple[int, ...] = (),
          on_row: Callable[[dict[str, Any]], None] = lambda row: None) -> list[dict[str, Any]]:
  """One run per (mechanism, epsilon), plus one per decoy count D (no DP, D decoys per request).

  Identical configs run once (the no-DP point is shared where the settings coincide).
  """
  rows, cache, done = [], {}, {}

  def run(config: RunConfig) -> dict[str, Any]:
    if config not in done:
      done[config] = pipeline.run(config, progress=False, recall_cache=cache)
    return done[config]

  for mechanism in mechanisms:
    if mechanism not in MECHANISMS:
      raise ValueError(f"mechanism {mechanism!r} is not one of {MECHANISMS}")
    for epsilon in epsilons:
      rows.append(row(mechanism, epsilon, run(config_for(base, mechanism, epsilon))))
      on_row(rows[-1])
  for count in decoys:
    config = apply_overrides(config_for(base, "local", math.inf),
                             [f"privacy.request_decoys={count}"])
    rows.append(row(f"decoys {count}", math.inf, run(config)))
    on_row(rows[-1])
  return rows


def markdown(rows: list[dict[str, Any]]) -> str:
  metric = rows[0]["metric"] if rows else "ndcg@10"
  lines = [
      f"| mechanism | target ε | ε spent | z | PPRSF {metric} | P_FL {metric} | upload AUC gender / age / occupation | request AUC gender / age / occupation | candidates AUC (baseline) | interaction AUC | declared fields AUC gender / private count | request membership AUC | up B | down B |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    auc = lambda table: " / ".join(f"{table[name]:.3f}" for name in ATTRIBUTES)
    lines.append(
        f"| {r['mechanism']} | {r['target_epsilon']:g} | {r['epsilon_spent']:.3g} | "
        f"{r['noise_multiplier']:.3g} | {r['pprsf']:.4f} | {r['p_fl']:.4f} | "
        f"{auc(r['upload_attribute_auc'])} | {auc(r['request_attribute_auc'])} | "
        f"{auc(r['candidate_attribute_auc'])} | "
        f"{r['interaction_auc']:.3f} | {r['declared_gender_auc']:.3f} / "
        f"{r['declared_private_count_auc']:.3f} | {r['request_membership_auc']:.3f} | "
        f"{r['up_bytes']:,.0f} | {r['down_bytes']:,.0f} |")
  return "\n".join(lines) + "\n"


def _plot(rows: list[dict[str, Any]], folder: pathlib.Path) -> list[pathlib.Path]:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")  # files only, no screen
  from matplotlib import pyplot  # pylint: disable=import-outside-toplevel

  finite = [r["target_epsilon"] for r in rows if math.isfinite(r["target_epsilon"])]
  infinity = 2 * max(finite) if finite else 1.0  # where "no DP" is drawn on the log axis
  x = lambda r: r["target_epsilon"] if math.isfinite(r["target_epsilon"]) else infinity
  points = sorted({x(r) for r in rows})
  no_dp = any(math.isinf(r["target_epsilon"]) for r in rows)
  labels = ["no DP" if no_dp and point == infinity else f"{point:g}" for point in points]

  def finish(axis, ylabel: str, title: str) -> None:
    axis.set(xscale="log", xlabel="target ε", ylabel=ylabel, title=title)
    axis.set_xticks(points, labels)
    axis.minorticks_off()
    axis.legend(fontsize=8)

  paths = []
  figure, axis = pyplot.subplots(figsize=(6, 4))
  for mechanism in dict.fromkeys(r["mechanism"] for r in rows if r["mechanism"] in MECHANISMS):
    mine = sorted((r for r in rows if r["mechanism"] == mechanism), key=x)
    axis.plot([x(r) for r in mine], [r["pprsf"] for r in mine], marker="o", label=mechanism)
  finish(axis, f"PPRSF {rows[0]['metric']}", "Utility vs privacy")
  paths.append(folder / "utility_vs_epsilon.png")
  figure.savefig(paths[-1], dpi=120, bbox_inches="tight")
  pyplot.close(figure)

  figure, axis = pyplot.subplots(figsize=(6, 4))
  for mechanism in dict.fromkeys(r["mechanism"] for r in rows if r["mechanism"] in MECHANISMS):
    mine = sorted((r for r in rows if r["mechanism"] == mechanism), key=x)
    axis.plot([x(r) for r in mine], [r["upload_attribute_auc"]["gender"] for r in mine],
              marker="o", label=f"{mechanism}: gender from uploads")
    axis.plot([x(r) for r in mine], [r["interaction_auc"] for r in mine], marker="s",
              linestyle="--", label=f"{mechanism}: interactions from uploads")
  axis.axhline(0.5, color="grey", linewidth=0.8)
  finish(axis, "attack AUC (0.5: chance)", "What a curious server infers")
  paths.append(folder / "attack_auc_vs_epsilon.png")
  figure.savefig(paths[-1], dpi=120, bbox_inches="tight")
  pyplot.close(figure)
  return paths


def write(rows: list[dict[str, Any]], folder: pathlib.Path, command: str) -> list[pathlib.Path]:
  """rows.json, REPORT.md (the table and the command) and the PNG plots, into `folder`."""
  folder.mkdir(parents=True, exist_ok=True)
  (folder / "rows.json").write_text(json.dumps(rows, indent=2) + "\n")
  plots = _plot(rows, folder)
  report = ["# Privacy-utility trade-off", "", f"Command: `{command}`", "", markdown(rows), ""]
  report += [f"![{path.stem}]({path.name})" for path in plots]
  (folder / "REPORT.md").write_text("\n".join(report) + "\n")
  return [folder / "rows.json", folder / "REPORT.md", *plots]
