"""The privacy-utility report: configs per point, the table, and the files it writes."""

from __future__ import annotations

import json
import math

import pytest

from pprsf_jax.config import RunConfig
from pprsf_jax.privacy import tradeoff


def _row(mechanism, epsilon, ndcg):
  auc = {name: 0.5 + 0.01 * k for k, name in enumerate(tradeoff.ATTRIBUTES)}
  return {"mechanism": mechanism, "target_epsilon": epsilon, "epsilon_spent": epsilon,
          "noise_multiplier": 0.0 if math.isinf(epsilon) else 1.0 / epsilon, "metric": "ndcg@10",
          "pprsf": ndcg, "p_fl": ndcg, "upload_attribute_auc": auc, "request_attribute_auc": auc,
          "candidate_attribute_auc": auc, "interaction_auc": 0.6, "declared_gender_auc": 0.5,
          "declared_private_count_auc": float("nan"), "request_membership_auc": 0.5,
          "up_bytes": 1000.0, "down_bytes": 2000.0}


def test_configs_differ_from_the_base_by_the_privacy_point_only():
  base = RunConfig()
  central = tradeoff.config_for(base, "central", 2.0)
  assert (central.privacy.mechanism, central.privacy.target_epsilon) == ("central", 2.0)
  assert central.privacy.clipping == "adaptive" and central.federated.weighting == "uniform"
  assert central.federated.sampling == "poisson" and central.privacy.accountant == "pld"
  assert central.privacy.audit
  no_dp = tradeoff.config_for(base, "central", math.inf)
  assert no_dp.privacy.mechanism == "none" and no_dp.federated.weighting == "uniform"
  assert no_dp.federated.sampling == "poisson"
  local = tradeoff.config_for(base, "local", 8.0)
  assert local.privacy.mechanism == "local" and local.federated.weighting == "examples"
  assert local.federated == base.federated


def test_unknown_mechanism_is_refused():
  with pytest.raises(ValueError, match="secure"):
    tradeoff.sweep(RunConfig(), [1.0], ["secure"])


def test_write_produces_table_rows_and_plots(tmp_path):
  rows = [_row("central", 1.0, 0.25), _row("central", math.inf, 0.30), _row("local", 1.0, 0.1),
          _row("decoys 20", math.inf, 0.29)]
  written = tradeoff.write(rows, tmp_path / "report", "python scripts/privacy_utility.py")
  names = {path.name for path in written}
  assert names == {"rows.json", "REPORT.md", "utility_vs_epsilon.png",
                   "attack_auc_vs_epsilon.png"}
  for path in written:
    assert path.is_file() and path.stat().st_size > 0
  assert (tmp_path / "report" / "utility_vs_epsilon.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert len(json.loads((tmp_path / "report" / "rows.json").read_text())) == 4
  report = (tmp_path / "report" / "REPORT.md").read_text()
  assert "| central | inf | inf | 0 | 0.3000 |" in report
  assert "| local | 1 | 1 | 1 | 0.1000 |" in report
  assert "0.500 / 0.510 / 0.520" in report
  assert "| decoys 20 | inf | inf | 0 | 0.2900 |" in report
