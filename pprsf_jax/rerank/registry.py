"""Re-rank strategies by name, built from the config.

The entries read a `RerankSettings`: any object with these fields, in practice
`pprsf_jax.config.RerankConfig`. This module does not import the config (the config imports it,
to check the strategy names a config selects), so the dependency runs one way.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Protocol

from pprsf_jax.rerank.base import ItemFilter, Strategy, compose
from pprsf_jax.rerank.cold_start import cold_start
from pprsf_jax.rerank.fairness import fairness
from pprsf_jax.rerank.freshness import freshness
from pprsf_jax.rerank.mmr import mmr
from pprsf_jax.rerank.new_items import new_items
from pprsf_jax.rerank.popularity import popularity
from pprsf_jax.rerank.rules import item_filter, rules


class RerankSettings(Protocol):
  """The fields of `pprsf_jax.config.RerankConfig` that the entries below read (a dataclass:
  `evaluation_grid` varies it with `dataclasses.replace`)."""

  strategies: tuple[str, ...]
  mmr_lambda: float
  cold_start_popularity_weight: float
  freshness_weight: float
  popularity_weight: float
  fairness_head_share: float
  fairness_min_tail_share: float
  fairness_list_length: int
  rules_exclude_genres: tuple[str, ...]
  rules_max_per_genre: int
  new_item_slots: int
  new_item_position: int

  @property
  def rules_exclude_columns(self) -> tuple[int, ...]: ...


def _rule_filter(config: RerankSettings) -> ItemFilter | None:
  """What strategies that add items may add: the rules' items when `rules` is configured."""
  return item_filter(config.rules_exclude_columns) if "rules" in config.strategies else None


STRATEGIES: dict[str, Callable[[RerankSettings], Strategy]] = {
    "mmr": lambda config: mmr(config.mmr_lambda),
    "cold_start": lambda config: cold_start(config.cold_start_popularity_weight,
                                            item_filter=_rule_filter(config)),
    "freshness": lambda config: freshness(config.freshness_weight),
    "popularity": lambda config: popularity(config.popularity_weight),
    "fairness": lambda config: fairness(config.fairness_head_share,
                                        config.fairness_min_tail_share,
                                        config.fairness_list_length),
    "rules": lambda config: rules(config.rules_exclude_columns, config.rules_max_per_genre),
    "new_items": lambda config: new_items(config.new_item_slots, config.new_item_position,
                                          item_filter=_rule_filter(config)),
}


def make_reranker(config: RerankSettings) -> Strategy:
  """The configured strategies, composed in order.

  When `rules` is configured but not last, the chain ends with it again (a no-op unless a
  later strategy added items), so every final list obeys the business rules.
  """
  unknown = [name for name in config.strategies if name not in STRATEGIES]
  if unknown:
    raise ValueError(f"rerank.strategies: unknown {unknown}; known {sorted(STRATEGIES)}")
  names = config.strategies
  if "rules" in names and names[-1] != "rules":
    names += ("rules",)
  return compose(*(STRATEGIES[name](config) for name in names))


def evaluation_grid(config: RerankSettings) -> dict[str, RerankSettings]:
  """The re-rank settings every run also evaluates on the same Top-T requests.

  None; each strategy alone with the configured parameters (`rules`, when no rule is
  configured, with an illustrative cap of 3 items per genre instead, so its row shows an
  effect); cold start + MMR at λ = 0.5; two combinations — long-tail exposure (popularity,
  fairness, new items) and everything but the rules; and the configured setting.
  """

  def setting(*names: str, **changes) -> RerankSettings:
    return dataclasses.replace(config, strategies=names, **changes)

  rules_on = bool(config.rules_exclude_genres or config.rules_max_per_genre)
  rule_changes = {} if rules_on else {"rules_max_per_genre": 3}
  rule_parts = ([f"exclude {', '.join(config.rules_exclude_genres)}"]
                if config.rules_exclude_genres else [])
  cap = config.rules_max_per_genre if rules_on else 3
  rule_parts += [f"max {cap}/genre"] if cap else []
  exposure = ("cold_start", "popularity", "fairness", "new_items")
  everything = ("cold_start", "freshness", "popularity", "mmr", "fairness", "new_items")
  return {
      "none": setting(),
      f"mmr λ={config.mmr_lambda:g}": setting("mmr"),
      "cold_start": setting("cold_start"),
      f"freshness w={config.freshness_weight:g}": setting("freshness"),
      f"popularity w={config.popularity_weight:+g}": setting("popularity"),
      (f"fairness tail≥{config.fairness_min_tail_share:g} in top "
       f"{config.fairness_list_length}"): setting("fairness"),
      f"rules {' '.join(rule_parts)}": setting("rules", **rule_changes),
      f"new_items {config.new_item_slots} at {config.new_item_position}": setting("new_items"),
      "cold_start + mmr λ=0.5": setting("cold_start", "mmr", mmr_lambda=0.5),
      " + ".join(exposure): setting(*exposure),
      " + ".join(everything): setting(*everything),
      f"configured ({' + '.join(config.strategies) or 'none'})": config,
  }
