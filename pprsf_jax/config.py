"""Typed run configuration: frozen, keyword-only dataclasses nested by concern.

Every field is validated on construction; an impossible value raises `ConfigError` naming the
field and the allowed range. Presets live in `configs/*.py` as `get_config() -> RunConfig`;
`apply_overrides` turns command-line `section.field=value` strings into a new config.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any


class ConfigError(ValueError):
  """A config field holds a value outside its allowed range."""


def _check(condition: bool, field: str, allowed: str, value: Any) -> None:
  if not condition:
    raise ConfigError(f"{field}={value!r} is invalid: allowed {allowed}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class SyntheticConfig:
  """Planted-structure generator (used when `DataConfig.source == "synthetic"`)."""

  num_users: int = 300  # users (clients) to generate
  num_items: int = 200  # catalogue size M
  interactions_per_user: int = 30  # mean interactions per user (Poisson, at least 10)
  latent_dim: int = 8  # dimension of the planted taste space
  attribute_strength: float = 2.0  # how strongly private attributes steer tastes (0 = not at all)

  def __post_init__(self):
    _check(self.num_users >= 2, "data.synthetic.num_users", ">= 2", self.num_users)
    _check(self.num_items >= 20, "data.synthetic.num_items", ">= 20", self.num_items)
    _check(
        10 <= self.interactions_per_user < self.num_items,
        "data.synthetic.interactions_per_user",
        "in [10, num_items)",
        self.interactions_per_user,
    )
    _check(self.latent_dim >= 1, "data.synthetic.latent_dim", ">= 1", self.latent_dim)
    _check(
        self.attribute_strength >= 0,
        "data.synthetic.attribute_strength",
        ">= 0",
        self.attribute_strength,
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataConfig:
  """Which data, and how interactions are split between public/private and train/eval."""

  source: str = "ml-100k"  # a dataset name the loader fetches, a directory of files, or "synthetic"
  private_share: float = 0.2  # share of each user's interactions kept private on the device
  valid_share: float = 0.1  # per-user random split: validation share (RecBole 8:1:1 default)
  test_share: float = 0.1  # per-user random split: test share
  label_folds: int = 4  # cross-fitting folds: recall trains on F-1, the held-out fold labels ranking
  synthetic: SyntheticConfig = dataclasses.field(default_factory=SyntheticConfig)

  def __post_init__(self):
    _check(bool(self.source), "data.source", "a non-empty name or path", self.source)
    _check(0.0 <= self.private_share < 1.0, "data.private_share", "in [0, 1)", self.private_share)
    _check(0.0 < self.valid_share < 0.5, "data.valid_share", "in (0, 0.5)", self.valid_share)
    _check(0.0 < self.test_share < 0.5, "data.test_share", "in (0, 0.5)", self.test_share)
    _check(
        self.valid_share + self.test_share < 0.5,
        "data.valid_share + data.test_share",
        "< 0.5 so that most interactions train",
        self.valid_share + self.test_share,
    )
    _check(2 <= self.label_folds <= 10, "data.label_folds", "in [2, 10]", self.label_folds)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RecallConfig:
  """Server-side recall model, trained on public interactions only."""

  model: str = "bpr"  # "bpr" (matrix factorisation) or "popularity"
  num_candidates: int = 100  # K: candidates sent to each client
  embedding_dim: int = 64  # BPR latent dimension
  epochs: int = 120  # BPR passes over the public interactions
  batch_size: int = 1024  # BPR triples per step
  learning_rate: float = 0.003  # Adam step size for BPR
  l2: float = 0.01  # L2 penalty on the embeddings in a triple (tuned on ML-100K validation)
  num_neighbors: int = 50  # item-item neighbours shipped per candidate (client-side history match)
  user_chunk: int = 1024  # users scored at once during retrieval
  item_chunk: int = 8192  # items scored at once during retrieval (bounds memory at [user_chunk, item_chunk])

  def __post_init__(self):
    _check(self.model in ("bpr", "popularity"), "recall.model", '"bpr" or "popularity"', self.model)
    _check(self.num_candidates >= 2, "recall.num_candidates", ">= 2", self.num_candidates)
    _check(self.embedding_dim >= 1, "recall.embedding_dim", ">= 1", self.embedding_dim)
    _check(self.epochs >= 1, "recall.epochs", ">= 1", self.epochs)
    _check(self.batch_size >= 1, "recall.batch_size", ">= 1", self.batch_size)
    _check(self.learning_rate > 0, "recall.learning_rate", "> 0", self.learning_rate)
    _check(self.l2 >= 0, "recall.l2", ">= 0", self.l2)
    _check(self.num_neighbors >= 1, "recall.num_neighbors", ">= 1", self.num_neighbors)
    _check(self.user_chunk >= 1, "recall.user_chunk", ">= 1", self.user_chunk)
    _check(self.item_chunk >= 1, "recall.item_chunk", ">= 1", self.item_chunk)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RankingConfig:
  """Client-side ranking model and its local training."""

  hidden_sizes: tuple[int, ...] = (64, 32)  # MLP hidden layer widths
  local_epochs: int = 2  # passes over a client's examples per round
  batch_size: int = 20  # examples per local SGD step
  learning_rate: float = 0.03  # local SGD step size
  top_t: int = 20  # T: how many ranked items a client sends back (T < K)

  def __post_init__(self):
    _check(
        len(self.hidden_sizes) >= 1 and all(h >= 1 for h in self.hidden_sizes),
        "ranking.hidden_sizes",
        "one or more positive widths",
        self.hidden_sizes,
    )
    _check(self.local_epochs >= 1, "ranking.local_epochs", ">= 1", self.local_epochs)
    _check(self.batch_size >= 1, "ranking.batch_size", ">= 1", self.batch_size)
    _check(self.learning_rate > 0, "ranking.learning_rate", "> 0", self.learning_rate)
    _check(self.top_t >= 1, "ranking.top_t", ">= 1", self.top_t)


@dataclasses.dataclass(frozen=True, kw_only=True)
class FederatedConfig:
  """Federated training of the ranking model."""

  rounds: int = 300  # server rounds
  clients_per_round: int = 100  # cohort size C (capped at the number of clients)
  aggregator: str = "fedavg"  # aggregation rule by registry name (see pprsf_jax.aggregation.REDUCERS)
  weighting: str = "examples"  # client weights: "examples" (by example count) or "uniform"
  server_optimizer: str = "sgd"  # optax optimizer on the pseudo-gradient: sgd, momentum, adam, yogi, adagrad
  server_learning_rate: float = 3.0  # server step on the mean update; 1.0 with sgd is plain FedAvg
  byzantine_f: int = 1  # f: Byzantine clients tolerated by krum / multi_krum / bulyan
  multi_krum_m: int = 5  # m: clients Multi-Krum averages
  trimmed_mean_beta: float = 0.1  # share trimmed from each end per coordinate
  norm_bound: float = 1.0  # L2 bound on each client's update for norm_bounding
  clipping_tau: float = 1.0  # clipping radius of centered_clipping
  local_algorithm: str = "sgd"  # client side: sgd, fedprox or scaffold (pprsf_jax.aggregation.LOCAL_ALGORITHMS)
  fedprox_mu: float = 0.01  # FedProx proximal weight mu
  compression: str = "none"  # upload encoding: none, quantize or top_k (pprsf_jax.aggregation.COMPRESSORS)
  quantization_bits: int = 8  # bits per entry of the stochastic quantizer
  top_k_fraction: float = 0.1  # share of entries top-k sparsification sends

  def __post_init__(self):
    _check(self.rounds >= 1, "federated.rounds", ">= 1", self.rounds)
    _check(self.clients_per_round >= 1, "federated.clients_per_round", ">= 1", self.clients_per_round)
    # Imported here: the registry imports this module, and names are checked when a config is made.
    from pprsf_jax.aggregation import registry  # pylint: disable=import-outside-toplevel
    for field, table in (("aggregator", registry.REDUCERS),
                         ("local_algorithm", registry.LOCAL_ALGORITHMS),
                         ("compression", registry.COMPRESSORS)):
      _check(getattr(self, field) in table, f"federated.{field}", f"one of {sorted(table)}",
             getattr(self, field))
    _check(
        self.weighting in ("examples", "uniform"),
        "federated.weighting",
        '"examples" or "uniform"',
        self.weighting,
    )
    _check(
        self.server_optimizer in ("sgd", "momentum", "adam", "yogi", "adagrad"),
        "federated.server_optimizer",
        "sgd, momentum, adam, yogi or adagrad",
        self.server_optimizer,
    )
    _check(self.server_learning_rate > 0, "federated.server_learning_rate", "> 0", self.server_learning_rate)
    _check(self.byzantine_f >= 0, "federated.byzantine_f", ">= 0", self.byzantine_f)
    _check(self.multi_krum_m >= 1, "federated.multi_krum_m", ">= 1", self.multi_krum_m)
    _check(0.0 <= self.trimmed_mean_beta < 0.5, "federated.trimmed_mean_beta", "in [0, 0.5)",
           self.trimmed_mean_beta)
    _check(self.norm_bound > 0, "federated.norm_bound", "> 0", self.norm_bound)
    _check(self.clipping_tau > 0, "federated.clipping_tau", "> 0", self.clipping_tau)
    _check(self.fedprox_mu >= 0, "federated.fedprox_mu", ">= 0", self.fedprox_mu)
    _check(1 <= self.quantization_bits <= 16, "federated.quantization_bits", "in [1, 16]",
           self.quantization_bits)
    _check(0.0 < self.top_k_fraction <= 1.0, "federated.top_k_fraction", "in (0, 1]",
           self.top_k_fraction)


@dataclasses.dataclass(frozen=True, kw_only=True)
class BaselineConfig:
  """The comparison models: central (P_Sum) and local-only (P_i) ranking."""

  central_epochs: int = 20  # passes over the pooled examples for P_Sum
  local_only_epochs: int = 20  # passes over its own examples for each client's P_i

  def __post_init__(self):
    _check(self.central_epochs >= 1, "baselines.central_epochs", ">= 1", self.central_epochs)
    _check(self.local_only_epochs >= 1, "baselines.local_only_epochs", ">= 1", self.local_only_epochs)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RerankConfig:
  """Server-side re-rank of each user's Top-T into the final list."""

  strategies: tuple[str, ...] = ("cold_start", "mmr")  # applied in order, by registry name
  mmr_lambda: float = 0.9  # MMR relevance weight (1 = relevance only, 0 = diversity only)
  cold_start_popularity_weight: float = 0.5  # for users with no public history: blend toward popularity

  def __post_init__(self):
    _check(0.0 <= self.mmr_lambda <= 1.0, "rerank.mmr_lambda", "in [0, 1]", self.mmr_lambda)
    _check(
        0.0 <= self.cold_start_popularity_weight <= 1.0,
        "rerank.cold_start_popularity_weight",
        "in [0, 1]",
        self.cold_start_popularity_weight,
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvalConfig:
  """Evaluation protocol."""

  top_k: int = 10  # cut-off for Recall/NDCG/MRR/Hit/Precision@k and the length of the final list

  def __post_init__(self):
    _check(self.top_k >= 1, "eval.top_k", ">= 1", self.top_k)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunConfig:
  """One end-to-end PPRSF run."""

  name: str = "pprsf"  # run name, prefix of the run folder
  seed: int = 0  # the only source of randomness
  out_dir: str = "runs"  # parent folder of run folders
  data: DataConfig = dataclasses.field(default_factory=DataConfig)
  recall: RecallConfig = dataclasses.field(default_factory=RecallConfig)
  ranking: RankingConfig = dataclasses.field(default_factory=RankingConfig)
  federated: FederatedConfig = dataclasses.field(default_factory=FederatedConfig)
  baselines: BaselineConfig = dataclasses.field(default_factory=BaselineConfig)
  rerank: RerankConfig = dataclasses.field(default_factory=RerankConfig)
  eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)

  def __post_init__(self):
    _check(bool(self.name), "name", "a non-empty string", self.name)
    _check(0 <= self.seed < 2**31, "seed", "in [0, 2**31)", self.seed)
    _check(
        self.ranking.top_t < self.recall.num_candidates,
        "ranking.top_t",
        f"< recall.num_candidates ({self.recall.num_candidates})",
        self.ranking.top_t,
    )
    _check(
        self.eval.top_k <= self.ranking.top_t,
        "eval.top_k",
        f"<= ranking.top_t ({self.ranking.top_t})",
        self.eval.top_k,
    )


def to_dict(config: Any) -> dict[str, Any]:
  """The config as plain JSON-able data."""
  return dataclasses.asdict(config)


def _parse_value(text: str, annotation: Any, field: str) -> Any:
  """Parses `text` as a value of the field's annotated type."""
  origin = typing.get_origin(annotation)
  try:
    if annotation is bool:
      lowered = text.lower()
      if lowered in ("true", "1", "yes"):
        return True
      if lowered in ("false", "0", "no"):
        return False
      raise ValueError(text)
    if annotation in (int, float, str):
      return annotation(text)
    if origin is tuple:
      (element, _) = typing.get_args(annotation)
      parts = [p for p in text.strip("()[] ").split(",") if p.strip()]
      return tuple(_parse_value(p.strip(), element, field) for p in parts)
  except ValueError:
    raise ConfigError(f"{field}={text!r} is invalid: expected {annotation}") from None
  raise ConfigError(f"{field} cannot be set from the command line (type {annotation})")


def apply_overrides(config: Any, overrides: list[str]) -> Any:
  """Returns `config` with `section.field=value` overrides applied (and re-validated).

  >>> apply_overrides(RunConfig(), ["federated.rounds=3"]).federated.rounds
  3
  """
  for override in overrides:
    path, sep, text = override.partition("=")
    if not sep or not path:
      raise ConfigError(f"override {override!r} is not of the form section.field=value")
    config = _replace_path(config, path.split("."), text, path)
  return config


def _replace_path(node: Any, parts: list[str], text: str, full: str) -> Any:
  if not dataclasses.is_dataclass(node):
    raise ConfigError(f"{full}: {parts[0]!r} is not a config section")
  hints = typing.get_type_hints(type(node))
  name = parts[0]
  if name not in hints or name not in {f.name for f in dataclasses.fields(node)}:
    known = ", ".join(f.name for f in dataclasses.fields(node))
    raise ConfigError(f"{full}: unknown field {name!r} (known: {known})")
  if len(parts) == 1:
    if dataclasses.is_dataclass(getattr(node, name)):
      raise ConfigError(f"{full} is a section; set one of its fields")
    value = _parse_value(text, hints[name], full)
  else:
    value = _replace_path(getattr(node, name), parts[1:], text, full)
  return dataclasses.replace(node, **{name: value})

