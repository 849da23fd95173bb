"""The pictures of a run folder, drawn from the results dict `pipeline.run` returns.

One function per figure; each returns the PNG it wrote, or None when the results lack what the
figure shows (no DP, no per-user values, an older results.json). `write_figures` draws them all
and `CAPTIONS` gives each file the alt text results.md shows it under:

  training_per_round.png   P_FL's mean client training loss and validation metric per round
  p_fl_minus_p_i.png       per client, P_FL's test metric minus its own local-only model's
  epsilon_per_round.png    ε spent as training goes on (DP runs only)
  upload_bytes_per_round.png  bytes per client upload per round, against the uncompressed update

`round_series` is the per-round record these figures and metrics.jsonl read; it falls back to
the per-run lists older results carry (losses, valid_curve) when `federated.per_round` is absent.

Figures are `matplotlib.figure.Figure`s on an Agg canvas, never pyplot: files only (headless),
and no global backend switch or open-figure registry for a notebook that imports this module.
"""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter, MaxNLocator

TRAINING, CLIENTS, EPSILON, UPLOAD = ("training_per_round.png", "p_fl_minus_p_i.png",
                                      "epsilon_per_round.png", "upload_bytes_per_round.png")
ONLINE = "metrics_per_day.png"
CAPTIONS = {
    TRAINING: "training loss and validation metric per round",
    CLIENTS: "per-client P_FL minus P_i",
    EPSILON: "privacy spent per round",
    UPLOAD: "upload bytes per round",
    ONLINE: "accuracy and service per day",
}
# The per-round counters `pipeline.run` records besides loss and the validation metric.
COUNTERS = ("upload_bytes", "rejected", "dropped", "stragglers")
# Final validation figures drawn beside P_FL's curve: the two models the paper compares it to.
REFERENCES = ("central (P_Sum)", "local_only (P_i)")
DPI = 120


def new_figure(columns: int = 1, width: float = 6.4,
               height: float = 4.0) -> tuple[Figure, list[Any]]:
  """A figure of `columns` side-by-side axes, rendered by Agg alone."""
  figure = Figure(figsize=(width, height), layout="constrained")
  FigureCanvasAgg(figure)
  return figure, list(np.atleast_1d(figure.subplots(1, columns)))


def save(figure: Figure, path: pathlib.Path) -> pathlib.Path:
  """Writes the PNG; returns its path."""
  figure.savefig(path, dpi=DPI)
  return path


def metric_name(results: dict[str, Any]) -> str:
  """The run's headline metric (e.g. "ndcg@10"): what δ, P_i and the valid curve are scored on."""
  if "metric" in results.get("delta", {}):
    return results["delta"]["metric"]
  return f"ndcg@{results.get('config', {}).get('eval', {}).get('top_k', 10)}"


def round_series(results: dict[str, Any]) -> dict[str, list[Any]]:
  """Equal-length lists over rounds: round (1-based), loss, valid (None where not evaluated),
  the `COUNTERS` (None throughout when the results predate them) and, under central DP,
  clip_norm."""
  federated = results.get("federated", {})
  recorded = federated.get("per_round")
  if recorded is None:  # an older results.json: only the losses and the validation curve
    losses = list(federated.get("losses", []))
    recorded = {"round": list(range(1, len(losses) + 1)), "loss": losses,
                "valid_ndcg": federated.get("valid_curve") or [None] * len(losses)}
  rounds = list(recorded["round"])
  series = {"round": rounds, "loss": list(recorded["loss"]),
            "valid": list(recorded.get("valid_ndcg") or [None] * len(rounds))}
  series |= {name: list(recorded.get(name) or [None] * len(rounds)) for name in COUNTERS}
  clip_norm = recorded.get("clip_norm", results.get("privacy", {}).get("clip_norm_per_round"))
  if clip_norm is not None:
    series["clip_norm"] = list(clip_norm)
  return series


def epsilon_by_round(results: dict[str, Any]) -> list[float] | None:
  """ε after each round, or None without DP.

  Central DP charges every round, so the accountant's curve is already per round. Local DP
  charges a client per round it takes part in, and the curve is the busiest client's, after
  each of its n participations; by round r no client has taken part more than min(r, n) times,
  so that point of the curve bounds every client's ε after round r. Both are the RDP
  accountant's figures (a PLD run reports only its final ε by PLD).
  """
  privacy = results.get("privacy", {})
  curve = privacy.get("epsilon_rdp_per_round")
  if privacy.get("mechanism", "none") == "none" or curve is None:
    return None
  rounds = round_series(results)["round"]
  return [float(curve[min(r, len(curve)) - 1]) if curve else 0.0 for r in rounds]


def _integer_x(axis, xlabel: str = "federated round") -> None:
  axis.set_xlabel(xlabel)
  axis.xaxis.set_major_locator(MaxNLocator(integer=True))
  axis.grid(alpha=0.3)


def training_curves(results: dict[str, Any], folder: pathlib.Path) -> pathlib.Path | None:
  """P_FL's mean client training loss per round and, where evaluated, its validation metric
  beside the final validation figure of P_Sum and P_i."""
  series = round_series(results)
  if not series["round"]:
    return None
  evaluated = [(r, value) for r, value in zip(series["round"], series["valid"])
               if value is not None]
  figure, axes = new_figure(2 if evaluated else 1, width=11 if evaluated else 6.4)
  loss = results.get("config", {}).get("ranking", {}).get("loss")
  axes[0].plot(series["round"], series["loss"], marker=".")
  axes[0].set(ylabel="mean client training loss" + (f" ({loss})" if loss else ""),
              title="P_FL training loss per round")
  _integer_x(axes[0])
  if evaluated:
    metric = metric_name(results)
    axes[1].plot(*zip(*evaluated), marker="o", label="federated (P_FL) during training")
    valid = results.get("valid", {})
    for index, method in enumerate(name for name in REFERENCES if metric in valid.get(name, {})):
      axes[1].axhline(valid[method][metric], color=f"C{index + 1}", linestyle="--",
                      linewidth=1, label=f"{method} (final)")
    axes[1].set(ylabel=f"validation {metric}", title=f"P_FL validation {metric} per round")
    axes[1].legend(fontsize=8)
    _integer_x(axes[1])
    axes[1].set_xlim(axes[0].get_xlim())  # the same rounds as the loss, even for one point
  return save(figure, folder / TRAINING)


def client_differences(results: dict[str, Any], folder: pathlib.Path) -> pathlib.Path | None:
  """Histogram of P_FL − P_i over the clients with test items, coloured by who wins."""
  per_user = results.get("local_only", {}).get("per_user")
  if not per_user or not per_user.get("p_fl"):
    return None
  difference = np.asarray(per_user["p_fl"], np.float64) - np.asarray(per_user["p_i"], np.float64)
  # An odd number of bins, symmetric about 0, so ties (common: both lists hit the same few
  # test items) fill exactly the middle bin.
  edge = max(float(np.abs(difference).max()), 1e-3)
  bins = np.linspace(-edge, edge, 32) * (1 + 1e-9)
  groups = [(difference < 0, "P_i better", "C3"), (difference == 0, "tie", "grey"),
            (difference > 0, "P_FL better", "C2")]
  figure, (axis,) = new_figure()
  axis.hist([difference[mask] for mask, _, _ in groups], bins=bins, stacked=True,
            color=[color for _, _, color in groups],
            label=[f"{label} ({int(mask.sum())})" for mask, label, _ in groups])
  axis.axvline(0, color="black", linewidth=0.8)
  metric = per_user.get("metric", metric_name(results))
  share = float(np.mean(difference > 0))
  axis.set(xlabel=f"P_FL {metric} − P_i {metric} (per client, test period)",
           ylabel="clients",
           title=f"P_FL beats the client's own P_i for {100 * share:.1f}% of "
                 f"{difference.size} clients\n(ties {100 * np.mean(difference == 0):.1f}%, "
                 f"mean difference {difference.mean():+.4f})")
  axis.yaxis.set_major_locator(MaxNLocator(integer=True))
  axis.legend(fontsize=8)
  return save(figure, folder / CLIENTS)


def epsilon_spent(results: dict[str, Any], folder: pathlib.Path) -> pathlib.Path | None:
  """The accountant's ε after each charged round: every round under central DP, each round the
  busiest client took part in under local DP. None without DP."""
  privacy = results.get("privacy", {})
  curve = privacy.get("epsilon_rdp_per_round")
  mechanism = privacy.get("mechanism", "none")
  if mechanism == "none" or not curve:
    return None
  figure, (axis,) = new_figure()
  axis.plot(range(1, len(curve) + 1), curve, marker=".", label="ε (RDP accountant)")
  if "epsilon_pld" in privacy:  # the tighter accountant gives the run's total only
    axis.plot([len(curve)], [privacy["epsilon_pld"]], marker="*", markersize=10, linestyle="",
              color="C1", label="ε (PLD accountant), after the last round")
  if privacy.get("target_epsilon"):
    axis.axhline(privacy["target_epsilon"], color="C3", linestyle="--", linewidth=1,
                 label=f"target ε = {privacy['target_epsilon']:g}")
  details = ", ".join(f"{name} = {privacy[key]:.3g}" for name, key in (
      ("z", "noise_multiplier"), ("C", "clip_norm"), ("δ", "delta")) if key in privacy)
  title = ("central DP: ε spent per round" if mechanism == "central" else
           f"{mechanism} DP: ε spent by the busiest client")
  axis.set(ylabel="ε spent", ylim=(0, None),
           title=title + (f"\n({details})" if details else ""))
  _integer_x(axis, "federated round" if mechanism == "central" else
                  "rounds the busiest client took part in")
  axis.legend(fontsize=8)
  return save(figure, folder / EPSILON)


def upload_bytes(results: dict[str, Any], folder: pathlib.Path) -> pathlib.Path | None:
  """Mean bytes per client upload in each round, against the uncompressed float32 update."""
  series = round_series(results)
  if not series["round"] or any(value is None for value in series["upload_bytes"]):
    return None
  compression = results.get("config", {}).get("federated", {}).get("compression")
  figure, (axis,) = new_figure()
  axis.plot(series["round"], series["upload_bytes"], marker=".",
            label="as encoded" + (f" (compression: {compression})" if compression else ""))
  dense = results.get("communication_bytes_per_client_per_round", {}).get("up_update_uncompressed")
  if dense is not None:
    axis.axhline(dense, color="grey", linestyle="--", linewidth=1,
                 label=f"uncompressed float32 update ({dense:,.0f} B)")
  axis.yaxis.set_major_formatter(EngFormatter(unit="B"))
  top = max(series["upload_bytes"] + ([] if dense is None else [dense]))
  axis.set(ylabel="mean bytes per client upload", ylim=(0, 1.15 * top or 1),
           title="Upload per client per round")
  _integer_x(axis)
  axis.legend(fontsize=8)
  return save(figure, folder / UPLOAD)


def write_figures(results: dict[str, Any], folder: pathlib.Path) -> list[pathlib.Path]:
  """Every figure the results allow, into `folder`; returns the PNGs written."""
  drawn = (training_curves(results, folder), client_differences(results, folder),
           epsilon_spent(results, folder), upload_bytes(results, folder))
  return [path for path in drawn if path is not None]


def online_days(results: dict[str, Any], folder: pathlib.Path) -> pathlib.Path:
  """The online loop's day table as a picture: every method's NDCG@k per day, and the click
  rate and new-item exposure of the service per day."""
  top_k = results["config"]["eval"]["top_k"]
  days = results["days"]
  methods = list(days[0]["metrics"]) if days else []
  figure, (left, right) = new_figure(2, width=11)
  x = [r["day"] for r in days]
  for name in methods:
    left.plot(x, [r["metrics"][name][f"ndcg@{top_k}"] for r in days], marker="o", label=name)
  left.set(ylabel=f"NDCG@{top_k} (active users)", title="accuracy per day")
  right.plot(x, [r["service"]["click_rate"] for r in days], marker="o", label="click rate")
  right.plot(x, [r["new_item_exposure"] for r in days], marker="s", label="new-item exposure")
  right.set(ylabel="share", title="service per day")
  for axis in (left, right):
    _integer_x(axis, "day")
    if axis.lines:
      axis.legend(fontsize=8)
  return save(figure, folder / ONLINE)
