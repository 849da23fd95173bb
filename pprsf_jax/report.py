"""Results as a markdown table, and the run folder (results.json + results.md)."""

from __future__ import annotations

import json
import pathlib
import time
from typing import Any

METRIC_ORDER = ("ndcg", "recall", "mrr", "hit", "precision", "coverage")


def results_table(results: dict[str, Any]) -> str:
  """The test-period metrics of every method, one row each, plus delta and local-only lines."""
  test = results["test"]
  columns = sorted(next(iter(test.values())),
                   key=lambda name: METRIC_ORDER.index(name.split("@")[0]))
  lines = ["| method | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
  for method, metrics in test.items():
    lines.append(f"| {method} | " + " | ".join(f"{metrics[c]:.4f}" for c in columns) + " |")
  delta, local = results["delta"], results["local_only"]
  dataset = results["dataset"]
  lines += [
      "",
      f"delta = |P_Sum - P_FL| on {delta['metric']}: {delta['absolute']:.4f} "
      f"({100 * delta['relative']:.1f}% of P_Sum)",
      f"local-only P_i {delta['metric']}: mean {local['mean']:.4f}, best client {local['best']:.4f}; "
      f"P_FL beats P_i for {100 * local['fl_beats_local_share']:.1f}% of clients "
      f"(ties {100 * local['fl_ties_local_share']:.1f}%)",
      f"data: {dataset['name']} ({dataset['source_format']}), {dataset['users']} users, "
      f"{dataset['items']} items; seed {results['config']['seed']}",
  ]
  return "\n".join(lines)


def write_run_folder(results: dict[str, Any], out_dir: str, name: str) -> pathlib.Path:
  """Writes results.json and results.md into a new folder <out_dir>/<name>-<timestamp>."""
  folder = pathlib.Path(out_dir) / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
  suffix = 1
  while folder.exists():
    folder = folder.with_name(f"{folder.name.split('~')[0]}~{suffix}")
    suffix += 1
  folder.mkdir(parents=True)
  (folder / "results.json").write_text(json.dumps(results, indent=2) + "\n")
  (folder / "results.md").write_text(f"# {name}\n\n{results_table(results)}\n")
  return folder
