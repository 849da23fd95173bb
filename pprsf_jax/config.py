"""Typed run configuration: frozen, keyword-only dataclasses nested by concern.

Every field is validated on construction; an impossible value raises `ConfigError` naming the
field and the allowed range. Presets live in `configs/*.py` as `get_config() -> RunConfig`;
`apply_overrides` turns command-line `section.field=value` strings into a new config.

This module is also the field reference (`pprsf fields`, docs/configuration.md, both rendered by
`pprsf_jax.fields`): a field's meaning is its `# comment` here (the lines above it and the one
after it), and its allowed values are what its checks say (`allowed_values`), so neither can
drift from the code. Limits that need the data (the federation's size, the catalogue's, the
split's) are checked once it has loaded, by the job's preflight (`pprsf_jax.preflight`, which
includes `check_against_data`).
"""

from __future__ import annotations

import contextvars
import dataclasses
import math
import typing
from typing import Any, Iterable

# The registries name the aggregators and re-rank strategies a config may select; they import
# nothing from this module, so the dependency runs one way.
from pprsf_jax.aggregation.registry import COMPRESSORS, LOCAL_ALGORITHMS, REDUCERS
from pprsf_jax.data.tables import GENRES
from pprsf_jax.rerank.registry import STRATEGIES


class ConfigError(ValueError):
  """A config field holds a value outside its allowed range."""


class ConfigFileError(ConfigError):
  """A preset file failed to load (`pprsf_jax.cli.load_config`): the message is one line,
  `<file>:<line>: <problem>`."""


_MAX_SHOWN = 200  # characters of a value shown in a message; a huge value must not bury the field


def _describe(value: Any) -> str:
  """`repr(value)` cut to a readable length; never raises, so a message can always be built."""
  try:
    text = repr(value)
  except Exception:  # pylint: disable=broad-except
    # E.g. an int past sys.get_int_max_str_digits(); any failure here would hide the real error.
    if isinstance(value, int):
      return f"<int of {value.bit_length()} bits>"
    return f"<unprintable {type(value).__name__}>"
  return text if len(text) <= _MAX_SHOWN else f"{text[:_MAX_SHOWN]}... ({len(text)} characters)"


def _show(path: str) -> str:
  """A field path as typed when it prints plainly, else quoted like a value."""
  return path if path.isprintable() and len(path) <= _MAX_SHOWN else _describe(path)


# While `allowed_values` builds a default config, every check notes what it allows here. A check
# that only applies under some setting runs anyway, as `_check(not setting or ok, ...)`, so that
# it is noted too; its `allowed` text names the setting.
_noted: contextvars.ContextVar[dict[str, list[str]] | None] = contextvars.ContextVar(
    "_noted", default=None)


def _check(condition: bool, field: str, allowed: str, value: Any) -> None:
  noted = _noted.get()
  if noted is not None and allowed not in noted.setdefault(field, []):
    noted[field].append(allowed)
  if not condition:
    raise ConfigError(f"{field}={_describe(value)} is invalid: allowed {allowed}")


# Numbers must be Python ints and floats (or subclasses, such as np.float64): the config is
# written to results.json, which np.int64, np.float32 or Fraction would break at the end of a run.
def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)  # True is no count


def _is_finite_real(value: Any) -> bool:
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return False
  try:
    return math.isfinite(value)
  except OverflowError:  # an int too large to become a float
    return False


def _interval(low: Any, high: Any, low_open: bool, high_open: bool) -> str:
  if high is None:
    return f"{'>' if low_open else '>='} {low}"
  return f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"


def _check_int(value: Any, field: str, low: int, high: int | None = None) -> None:
  """`value` is an integer (not a bool) in [low, high] (high None: unbounded)."""
  ok = _is_int(value) and value >= low and (high is None or value <= high)
  _check(ok, field, f"an integer {_interval(low, high, False, False)}", value)


def _check_real(value: Any, field: str, low: float, high: float | None = None, *,
                low_open: bool = False, high_open: bool = False) -> None:
  """`value` is a finite real number (not a bool) from `low` to `high`, ends closed unless open."""
  ok = (_is_finite_real(value)
        and (value > low if low_open else value >= low)
        and (high is None or (value < high if high_open else value <= high)))
  _check(ok, field, f"a finite number {_interval(low, high, low_open, high_open)}", value)


def _check_choice(value: Any, field: str, choices: Iterable[str],
                  allowed: str | None = None) -> None:
  """`value` is one of the strings `choices` (the type test first: lists are unhashable)."""
  choices = sorted(choices)
  _check(isinstance(value, str) and value in choices, field, allowed or f"one of {choices}", value)


def _check_text(value: Any, field: str, allowed: str) -> None:
  """`value` is a non-empty string; NUL is refused because no name or path can hold it."""
  _check(isinstance(value, str) and bool(value) and "\x00" not in value, field, allowed, value)


def _unknown(names: list[str]) -> str:
  """The names a message should point out, if any (none in the field reference's words)."""
  return f" (unknown: {_describe(names)})" if names else ""


def _check_section(value: Any, field: str, section: type) -> None:
  _check(isinstance(value, section), field, f"a {section.__name__}", value)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SyntheticConfig:
  """Planted-structure generator (used when `DataConfig.source == "synthetic"`)."""

  num_users: int = 300  # users (clients) to generate
  num_items: int = 200  # catalogue size M
  interactions_per_user: int = 30  # mean interactions per user (Poisson, at least 10)
  latent_dim: int = 8  # dimension of the planted taste space
  attribute_strength: float = 2.0  # how strongly private attributes steer tastes (0 = not at all)

  def __post_init__(self):
    _check_int(self.num_users, "data.synthetic.num_users", 2)
    _check_int(self.num_items, "data.synthetic.num_items", 20)
    _check(
        _is_int(self.interactions_per_user) and 10 <= self.interactions_per_user < self.num_items,
        "data.synthetic.interactions_per_user",
        f"an integer in [10, num_items) = [10, {self.num_items})",
        self.interactions_per_user,
    )
    _check_int(self.latent_dim, "data.synthetic.latent_dim", 1)
    _check_real(self.attribute_strength, "data.synthetic.attribute_strength", 0)


# How `DataConfig.feedback` may read ratings. Ratings as weights (a weighted loss in every
# recall model and in the ranking loss) is not one of them yet.
FEEDBACK = ("implicit", "threshold")


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataConfig:
  """Which data, and how interactions are split between public/private and train/eval."""

  source: str = "ml-100k"  # a dataset name the loader fetches, a directory of files, or "synthetic"
  prefix: str = ""  # RecBole files <prefix>.inter, .user, .item in the folder ("": its only ones)
  private_share: float = 0.2  # share of each user's interactions kept private on the device
  # "random": per user at random, valid_share / test_share (RecBole's 8:1:1 by default);
  # "leave_one_out": per user by time, the latest interaction tests, the one before validates;
  # "pfedrec_loo": PFedRec's own leave-one-out split of ML-100K and its 99 evaluation negatives
  # per held-out item (pprsf_jax.data.loo_protocol; needs eval.sampled_negatives=99).
  split: str = "random"
  valid_share: float = 0.1  # random split: validation share
  test_share: float = 0.1  # random split: test share
  label_folds: int = 4  # cross-fitting folds: recall trains on F-1, the held-out fold labels ranking
  # How ratings become feedback (the loader checks every rating is a MovieLens 1-5 either way):
  # "implicit", every interaction is a positive whatever its rating; "threshold", interactions
  # rated >= positive_threshold are the positives and the others are dropped before the split.
  feedback: str = "implicit"
  positive_threshold: float = 4.0  # feedback "threshold": the lowest rating kept as a positive
  synthetic: SyntheticConfig = dataclasses.field(default_factory=SyntheticConfig)

  def __post_init__(self):
    _check_text(self.source, "data.source", "a non-empty name or path (a string)")
    _check(isinstance(self.prefix, str) and not set(self.prefix) & set("/\\\x00"), "data.prefix",
           "a file name stem without a path (a string; empty: the folder's only *.inter file)",
           self.prefix)
    _check(self.prefix == "" or self.source != "synthetic", "data.prefix",
           'empty with data.source="synthetic" (no files are read)', self.prefix)
    _check_real(self.private_share, "data.private_share", 0, 1, high_open=True)
    _check_choice(self.split, "data.split", LEAVE_ONE_OUT_SPLITS + ("random",),
                  '"random", "leave_one_out" or "pfedrec_loo"')
    _check(self.split != "pfedrec_loo" or self.feedback == "implicit", "data.feedback",
           '"implicit" with data.split="pfedrec_loo" (PFedRec keeps every rating)',
           self.feedback)
    _check_real(self.valid_share, "data.valid_share", 0, 0.5, low_open=True, high_open=True)
    _check_real(self.test_share, "data.test_share", 0, 0.5, low_open=True, high_open=True)
    _check(
        self.valid_share + self.test_share < 0.5,
        "data.valid_share + data.test_share",
        "< 0.5 so that most interactions train",
        self.valid_share + self.test_share,
    )
    _check_int(self.label_folds, "data.label_folds", 2, 10)
    _check_choice(self.feedback, "data.feedback", FEEDBACK, '"implicit" or "threshold"')
    _check_real(self.positive_threshold, "data.positive_threshold", 1, 5)
    _check_section(self.synthetic, "data.synthetic", SyntheticConfig)


# The recall models `pprsf_jax.recall.RECALL_MODELS` registers (a test keeps the two equal).
RECALL_MODEL_NAMES = ("popularity", "item_knn", "content", "bpr", "lightgcn", "two_tower")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RecallConfig:
  """Server-side recall model, trained on public interactions only."""

  # "popularity", "item_knn" (item-item cosine), "content" (item features), "bpr" (matrix
  # factorisation), "lightgcn" (graph propagation) or "two_tower" (ids + item features); see
  # pprsf_jax.recall.RECALL_MODELS
  model: str = "bpr"
  num_candidates: int = 100  # K: candidates sent to each client
  embedding_dim: int = 64  # latent dimension of bpr, lightgcn and two_tower
  epochs: int = 120  # BPR passes over the public interactions
  batch_size: int = 1024  # BPR triples per step
  learning_rate: float = 0.003  # Adam step size for BPR
  l2: float = 0.01  # L2 penalty on the embeddings in a triple (tuned on ML-100K validation)
  num_neighbors: int = 50  # item-item neighbours shipped per candidate (client-side history match)
  content_popularity_weight: float = 1.0  # content: bias of the most popular item (cosines: [0, 1])
  lightgcn_layers: int = 2  # lightgcn: propagation layers L
  lightgcn_epochs: int = 30  # lightgcn: passes over the public interactions
  lightgcn_batch_size: int = 2048  # lightgcn: BPR triples per step (each step propagates the graph)
  lightgcn_learning_rate: float = 0.01  # lightgcn: Adam step size
  lightgcn_l2: float = 1e-3  # lightgcn: L2 on a triple's layer-0 embeddings (tuned on ML-100K valid)
  two_tower_hidden: int = 64  # two_tower: hidden width of the item-feature MLP
  two_tower_epochs: int = 10  # two_tower: passes over the public interactions
  two_tower_batch_size: int = 512  # two_tower: positives per step (each the others' negatives)
  two_tower_learning_rate: float = 0.003  # two_tower: Adam step size
  two_tower_l2: float = 0.0  # two_tower: L2 penalty on a batch's user and item id embeddings
  two_tower_temperature: float = 0.2  # two_tower: softmax temperature on cosines (ML-100K tuned)
  user_chunk: int = 1024  # users scored at once during retrieval
  item_chunk: int = 8192  # items scored at once during retrieval (bounds memory at [user_chunk, item_chunk])
  approximate_top_k: bool = False  # retrieval: jax.lax.approx_max_k in each item chunk (fast on TPU)
  approx_recall_target: float = 0.95  # approximate retrieval: expected share of the exact top-K kept

  def __post_init__(self):
    _check_choice(self.model, "recall.model", RECALL_MODEL_NAMES,
                  '"popularity", "item_knn", "content", "bpr", "lightgcn" or "two_tower"')
    _check_int(self.num_candidates, "recall.num_candidates", 2)
    _check_int(self.embedding_dim, "recall.embedding_dim", 1)
    _check_int(self.epochs, "recall.epochs", 1)
    _check_int(self.batch_size, "recall.batch_size", 1)
    _check_real(self.learning_rate, "recall.learning_rate", 0, low_open=True)
    _check_real(self.l2, "recall.l2", 0)
    _check_int(self.num_neighbors, "recall.num_neighbors", 1)
    _check_real(self.content_popularity_weight, "recall.content_popularity_weight", 0)
    _check_int(self.lightgcn_layers, "recall.lightgcn_layers", 1)
    _check_int(self.lightgcn_epochs, "recall.lightgcn_epochs", 1)
    _check_int(self.lightgcn_batch_size, "recall.lightgcn_batch_size", 1)
    _check_real(self.lightgcn_learning_rate, "recall.lightgcn_learning_rate", 0, low_open=True)
    _check_real(self.lightgcn_l2, "recall.lightgcn_l2", 0)
    _check_int(self.two_tower_hidden, "recall.two_tower_hidden", 1)
    _check_int(self.two_tower_epochs, "recall.two_tower_epochs", 1)
    _check_int(self.two_tower_batch_size, "recall.two_tower_batch_size", 2)
    _check_real(self.two_tower_learning_rate, "recall.two_tower_learning_rate", 0, low_open=True)
    _check_real(self.two_tower_l2, "recall.two_tower_l2", 0)
    _check_real(self.two_tower_temperature, "recall.two_tower_temperature", 0, low_open=True)
    _check_int(self.user_chunk, "recall.user_chunk", 1)
    _check_int(self.item_chunk, "recall.item_chunk", 1)
    _check(isinstance(self.approximate_top_k, bool), "recall.approximate_top_k", "true or false",
           self.approximate_top_k)
    _check_real(self.approx_recall_target, "recall.approx_recall_target", 0, 1, low_open=True)


RANKING_LOSSES = ("bce", "softmax")
# The splits that hold out one interaction per user and period (the sampled protocol needs one).
LEAVE_ONE_OUT_SPLITS = ("leave_one_out", "pfedrec_loo")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RankingConfig:
  """Client-side ranking model and its local training."""

  # The ranking model by registry name (pprsf_jax.ranking.models.RANKING_MODELS): feature_mlp, mf
  # (FedMF), ncf (FedNCF), pfedrec (PFedRec-style) or dcn (DCN-v2).
  model: str = "feature_mlp"
  hidden_sizes: tuple[int, ...] = (64, 32)  # MLP hidden layer widths (feature_mlp, ncf, pfedrec, dcn)
  embedding_dim: int = 32  # user / item embedding width (mf, ncf, pfedrec)
  cross_layers: int = 2  # DCN-v2 cross layers (dcn)
  embedding_init_std: float = 0.1  # embeddings start from N(0, std^2) (mf, ncf, pfedrec)
  local_epochs: int = 2  # passes over a client's examples per round
  batch_size: int = 20  # loss "bce": candidate rows per local SGD step
  learning_rate: float = 0.03  # local SGD step size
  # Local SGD step size of the model's personal state (user embedding, personal score function);
  # 0: ranking.learning_rate.
  personal_learning_rate: float = 0.0
  top_t: int = 20  # T: how many ranked items a client sends back (T < K)
  # "bce": each candidate scored on its own; "softmax": listwise, a list's positives against its
  # other candidates (pprsf_jax.ranking.client).
  loss: str = "bce"
  lists_per_step: int = 1  # loss "softmax": candidate lists per local SGD step

  def __post_init__(self):
    # A tuple, not a list: configs are frozen and hashable all the way down.
    _check(
        isinstance(self.hidden_sizes, tuple) and len(self.hidden_sizes) >= 1
        and all(_is_int(h) and h >= 1 for h in self.hidden_sizes),
        "ranking.hidden_sizes",
        "a non-empty tuple of integer widths >= 1",
        self.hidden_sizes,
    )
    _check_int(self.local_epochs, "ranking.local_epochs", 1)
    _check_int(self.batch_size, "ranking.batch_size", 1)
    _check_real(self.learning_rate, "ranking.learning_rate", 0, low_open=True)
    _check_int(self.top_t, "ranking.top_t", 1)
    _check_choice(self.loss, "ranking.loss", RANKING_LOSSES)
    _check_int(self.lists_per_step, "ranking.lists_per_step", 1)
    # Imported here: the ranking package imports the privacy planner, which imports this module.
    from pprsf_jax.ranking.models import RANKING_MODELS  # pylint: disable=import-outside-toplevel
    _check_choice(self.model, "ranking.model", tuple(RANKING_MODELS))
    _check_int(self.embedding_dim, "ranking.embedding_dim", 1)
    _check_int(self.cross_layers, "ranking.cross_layers", 0)
    _check_real(self.embedding_init_std, "ranking.embedding_init_std", 0, low_open=True)
    _check_real(self.personal_learning_rate, "ranking.personal_learning_rate", 0)


@dataclasses.dataclass(frozen=True, kw_only=True)
class FederatedConfig:
  """Federated training of the ranking model."""

  rounds: int = 300  # server rounds
  clients_per_round: int = 100  # cohort size C (with sampling "poisson": the expected size)
  sampling: str = "fixed"  # cohorts: "fixed" (C clients without replacement), "poisson" (each client with probability C/N) or "sweep" (every client once per ceil(N/C) rounds)
  aggregator: str = "fedavg"  # aggregation rule by registry name (see pprsf_jax.aggregation.REDUCERS)
  # Client weights: "examples" (by the real candidate slots the server sent the client: never a
  # count of its own, which would reveal its private history) or "uniform".
  weighting: str = "examples"
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
  max_update_norm: float = 0.0  # server rejects an upload whose L2 norm exceeds this (0 = no bound)
  dropout_rate: float = 0.0  # simulated: chance a sampled client leaves before uploading
  straggler_rate: float = 0.0  # simulated: chance a sampled client runs out of time early
  straggler_min_work: float = 0.25  # a straggler completes a uniform share in [this, 1) of its steps
  attack: str = "none"  # simulated Byzantine clients: none, sign_flip, scaling, gaussian, label_flip, item_promotion
  attacker_share: float = 0.0  # share of all clients that attack (fixed by the seed)
  attack_scale: float = 10.0  # factor of `scaling`, boost of `item_promotion`
  attack_noise_std: float = 1.0  # per-entry std of `gaussian`
  attack_target: int = -1  # item `item_promotion` pushes; -1: the 100th most popular public item

  def __post_init__(self):
    _check_int(self.rounds, "federated.rounds", 1)
    _check_int(self.clients_per_round, "federated.clients_per_round", 1)
    _check_choice(self.sampling, "federated.sampling", ("fixed", "poisson", "sweep"),
                  '"fixed", "poisson" or "sweep"')
    for field, table in (("aggregator", REDUCERS), ("local_algorithm", LOCAL_ALGORITHMS),
                         ("compression", COMPRESSORS)):
      _check_choice(getattr(self, field), f"federated.{field}", table)
    _check_choice(self.weighting, "federated.weighting", ("examples", "uniform"),
                  '"examples" or "uniform"')
    _check_choice(self.server_optimizer, "federated.server_optimizer",
                  ("sgd", "momentum", "adam", "yogi", "adagrad"),
                  "sgd, momentum, adam, yogi or adagrad")
    _check_real(self.server_learning_rate, "federated.server_learning_rate", 0, low_open=True)
    _check_int(self.byzantine_f, "federated.byzantine_f", 0)
    _check_int(self.multi_krum_m, "federated.multi_krum_m", 1)
    _check_real(self.trimmed_mean_beta, "federated.trimmed_mean_beta", 0, 0.5, high_open=True)
    _check_real(self.norm_bound, "federated.norm_bound", 0, low_open=True)
    _check_real(self.clipping_tau, "federated.clipping_tau", 0, low_open=True)
    _check_real(self.fedprox_mu, "federated.fedprox_mu", 0)
    _check_int(self.quantization_bits, "federated.quantization_bits", 1, 16)
    _check_real(self.top_k_fraction, "federated.top_k_fraction", 0, 1, low_open=True)
    _check_real(self.max_update_norm, "federated.max_update_norm", 0)
    _check_real(self.dropout_rate, "federated.dropout_rate", 0, 1, high_open=True)
    _check_real(self.straggler_rate, "federated.straggler_rate", 0, 1)
    _check_real(self.straggler_min_work, "federated.straggler_min_work", 0, 1, low_open=True)
    # Imported here: the ranking package imports the recall package, whose registry imports this
    # module (it reads RecallConfig's fields).
    from pprsf_jax.ranking.attacks import ATTACKS  # pylint: disable=import-outside-toplevel
    _check_choice(self.attack, "federated.attack", ATTACKS)
    _check_real(self.attacker_share, "federated.attacker_share", 0, 0.5, high_open=True)
    _check_real(self.attack_scale, "federated.attack_scale", 0, low_open=True)
    _check_real(self.attack_noise_std, "federated.attack_noise_std", 0, low_open=True)
    _check_int(self.attack_target, "federated.attack_target", -1)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PrivacyConfig:
  """Client-level differential privacy of the federated ranking updates (off by default)."""

  mechanism: str = "none"  # "none"; "central": DP-FedAvg, the server clips and noises the sum; "local": each client clips and noises its own upload
  clip_norm: float = 1.0  # L2 bound C on a client's update (the starting bound under adaptive clipping)
  noise_multiplier: float = 1.0  # z: Gaussian noise std / C (ignored when target_epsilon > 0)
  target_epsilon: float = 0.0  # > 0: calibrate z so that the whole run spends this epsilon
  delta: float = 1e-5  # delta of (epsilon, delta); must stay below 1 / number of clients
  accountant: str = "rdp"  # calibrates z: "rdp" or "pld" (pld: not for fixed-size central cohorts)
  clipping: str = "fixed"  # central DP: "fixed" C, or "adaptive" (tracks a quantile of update norms)
  target_quantile: float = 0.5  # adaptive: share of clients whose update should fit within C
  clip_learning_rate: float = 0.2  # adaptive: geometric step of C per round
  clip_count_stddev: float = 0.0  # adaptive: std of the noise on the count of fitting clients (> z / 2); 0 = max(cohort / 20, z)
  audit: bool = False  # after training, attack what the server received (attributes, interactions)
  secure_aggregation: bool = False  # uploads travel pairwise-masked; the server learns only their sum
  secure_aggregation_bound: float = 16.0  # B: each entry of a (weighted) upload is clipped to [-B, B] for encoding
  request_decoys: int = 0  # D: decoy items each client hides its Top-T request among (0 = none)

  def __post_init__(self):
    _check_choice(self.mechanism, "privacy.mechanism", ("none", "central", "local"),
                  '"none", "central" or "local"')
    _check_real(self.clip_norm, "privacy.clip_norm", 0, low_open=True)
    _check_real(self.noise_multiplier, "privacy.noise_multiplier", 0)
    _check_real(self.target_epsilon, "privacy.target_epsilon", 0)
    _check_real(self.delta, "privacy.delta", 0, 1, low_open=True, high_open=True)
    _check_choice(self.accountant, "privacy.accountant", ("rdp", "pld"), '"rdp" or "pld"')
    _check_choice(self.clipping, "privacy.clipping", ("fixed", "adaptive"),
                  '"fixed" or "adaptive"')
    _check_real(self.target_quantile, "privacy.target_quantile", 0, 1,
                low_open=True, high_open=True)
    _check_real(self.clip_learning_rate, "privacy.clip_learning_rate", 0, low_open=True)
    _check_real(self.clip_count_stddev, "privacy.clip_count_stddev", 0)
    _check(isinstance(self.audit, bool), "privacy.audit", "true or false", self.audit)
    _check(isinstance(self.secure_aggregation, bool), "privacy.secure_aggregation",
           "true or false", self.secure_aggregation)
    _check_real(self.secure_aggregation_bound, "privacy.secure_aggregation_bound", 0,
                low_open=True)
    _check_int(self.request_decoys, "privacy.request_decoys", 0)
    # Only a fixed noise multiplier can be compared (target_epsilon > 0 calibrates it later).
    fixed_z = self.clipping == "adaptive" and self.target_epsilon == 0
    _check(not fixed_z or self.clip_count_stddev == 0
           or 2 * self.clip_count_stddev > self.noise_multiplier, "privacy.clip_count_stddev",
           f"0 or > privacy.noise_multiplier / 2 ({self.noise_multiplier / 2}) under adaptive "
           "clipping with privacy.target_epsilon=0", self.clip_count_stddev)


@dataclasses.dataclass(frozen=True, kw_only=True)
class BaselineConfig:
  """The comparison models: central (P_Sum), local-only (P_i) and personalised ranking."""

  central_epochs: int = 20  # passes over the pooled examples for P_Sum
  local_only_epochs: int = 20  # passes over its own examples for each client's P_i
  finetune_epochs: int = 2  # passes over its own examples fine-tuning P_FL on each client
  # Recall-only baselines, by recall.model name, trained on the public log beside the serving
  # model (which is always one); the claims compare PPRSF with the best of them.
  recall_models: tuple[str, ...] = ("popularity", "item_knn", "two_tower")

  def __post_init__(self):
    _check_int(self.central_epochs, "baselines.central_epochs", 1)
    _check_int(self.local_only_epochs, "baselines.local_only_epochs", 1)
    _check_int(self.finetune_epochs, "baselines.finetune_epochs", 1)
    _check(isinstance(self.recall_models, tuple)
           and all(name in RECALL_MODEL_NAMES for name in self.recall_models)
           and len(set(self.recall_models)) == len(self.recall_models),
           "baselines.recall_models", f"a tuple of distinct names from {list(RECALL_MODEL_NAMES)}",
           self.recall_models)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RerankConfig:
  """Server-side re-rank of each user's Top-T into the final list.

  Put score-based strategies (cold_start, freshness, popularity) before order-based ones (mmr,
  fairness, new_items), which rank by position (`pprsf_jax.rerank.base`); `rules` binds the
  final list wherever it sits (`pprsf_jax.rerank.rules`).
  """

  strategies: tuple[str, ...] = ("cold_start", "mmr")  # applied in order, by registry name
  mmr_lambda: float = 0.9  # MMR relevance weight (1 = relevance only, 0 = diversity only)
  cold_start_popularity_weight: float = 0.5  # for users with no public history: blend toward popularity
  # freshness: score = z(relevance) + w * standardised release year (w < 0 favours older items)
  freshness_weight: float = 0.3
  # popularity: score = z(relevance) + w * z(log(1 + public count)); w > 0 boosts popular
  # items, w < 0 debiases toward the long tail
  popularity_weight: float = -0.3
  # fairness: the most popular items making up this share of the catalogue are the head group
  fairness_head_share: float = 0.2
  fairness_min_tail_share: float = 0.3  # fairness: tail share required in the leading positions
  fairness_list_length: int = 10  # fairness: leading positions the tail quota covers
  # rules: items carrying any of these genres (names from pprsf_jax.data.tables.GENRES) are removed
  rules_exclude_genres: tuple[str, ...] = ()
  rules_max_per_genre: int = 0  # rules: at most this many items per primary genre (0 = no cap)
  new_item_slots: int = 1  # new_items: slots per list for items with no public interactions
  new_item_position: int = 5  # new_items: 0-based position of the first (the end if shorter)

  def __post_init__(self):
    _check(
        isinstance(self.strategies, tuple) and all(isinstance(s, str) for s in self.strategies),
        "rerank.strategies",
        "a tuple of strategy names (strings; empty for no re-rank)",
        self.strategies,
    )
    unknown = [name for name in self.strategies if name not in STRATEGIES]
    _check(not unknown, "rerank.strategies", f"names from {sorted(STRATEGIES)}{_unknown(unknown)}",
           self.strategies)
    _check_real(self.mmr_lambda, "rerank.mmr_lambda", 0, 1)
    _check_real(self.cold_start_popularity_weight, "rerank.cold_start_popularity_weight", 0, 1)
    for field in ("freshness_weight", "popularity_weight"):  # signed: the sign is the direction
      _check(_is_finite_real(getattr(self, field)), f"rerank.{field}", "a finite number",
             getattr(self, field))
    _check_real(self.fairness_head_share, "rerank.fairness_head_share", 0, 1,
                low_open=True, high_open=True)
    _check_real(self.fairness_min_tail_share, "rerank.fairness_min_tail_share", 0, 1)
    _check_int(self.fairness_list_length, "rerank.fairness_list_length", 1)
    genres = self.rules_exclude_genres
    _check(isinstance(genres, tuple) and all(isinstance(g, str) for g in genres),
           "rerank.rules_exclude_genres", "a tuple of genre names (strings)", genres)
    unknown = [genre for genre in genres if genre not in GENRES]
    _check(not unknown, "rerank.rules_exclude_genres",
           f"names from {list(GENRES)}{_unknown(unknown)}", genres)
    _check_int(self.rules_max_per_genre, "rerank.rules_max_per_genre", 0)
    _check_int(self.new_item_slots, "rerank.new_item_slots", 0)
    _check_int(self.new_item_position, "rerank.new_item_position", 0)

  @property
  def rules_exclude_columns(self) -> tuple[int, ...]:
    """The catalogue's genre columns of `rules_exclude_genres` (the re-rank layer, server
    code, may not import the data package that names them)."""
    return tuple(GENRES.index(genre) for genre in self.rules_exclude_genres)


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvalConfig:
  """Evaluation protocol."""

  top_k: int = 10  # cut-off for Recall/NDCG/MRR/Hit/Precision@k and the length of the final list
  # 0: full ranking over every item. N > 0: each user's held-out item is ranked among N items
  # drawn uniformly from those the user never interacted with (99 with leave-one-out is the
  # protocol of most federated recommendation papers); needs data.split="leave_one_out".
  sampled_negatives: int = 0
  every_rounds: int = 10  # P_FL's validation NDCG@k every this many rounds (0 = never)

  def __post_init__(self):
    _check_int(self.top_k, "eval.top_k", 1)
    _check_int(self.sampled_negatives, "eval.sampled_negatives", 0)
    _check_int(self.every_rounds, "eval.every_rounds", 0)


@dataclasses.dataclass(frozen=True, kw_only=True)
class OnlineConfig:
  """The multi-day service loop (`pprsf online`): interactions replayed in time order.

  The first `history_share` of all interactions (by timestamp) is the log before day 1; the rest
  is cut into `days` periods of equal interaction count. This timeline replaces data.split:
  each day is served with what was logged before it, then its interactions are the users'
  responses.
  """

  days: int = 7  # serving days after the initial log
  history_share: float = 0.5  # share of interactions, in time order, logged before day 1
  rounds_per_day: int = 30  # federated rounds each day, continuing from the previous day's Theta

  def __post_init__(self):
    _check_int(self.days, "online.days", 1, 365)
    _check_real(self.history_share, "online.history_share", 0, 1, low_open=True, high_open=True)
    _check_int(self.rounds_per_day, "online.rounds_per_day", 1)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunConfig:
  """One end-to-end PPRSF run."""

  name: str = "pprsf"  # run name, prefix of the run folder
  seed: int = 0  # the only source of randomness
  out_dir: str = "runs"  # parent folder of run folders
  checkpoint_every: int = 25  # save the federated training state every k rounds (0 = never)
  data: DataConfig = dataclasses.field(default_factory=DataConfig)
  recall: RecallConfig = dataclasses.field(default_factory=RecallConfig)
  ranking: RankingConfig = dataclasses.field(default_factory=RankingConfig)
  federated: FederatedConfig = dataclasses.field(default_factory=FederatedConfig)
  privacy: PrivacyConfig = dataclasses.field(default_factory=PrivacyConfig)
  baselines: BaselineConfig = dataclasses.field(default_factory=BaselineConfig)
  rerank: RerankConfig = dataclasses.field(default_factory=RerankConfig)
  eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
  online: OnlineConfig = dataclasses.field(default_factory=OnlineConfig)

  def __post_init__(self):
    _check_text(self.name, "name", "a non-empty string")
    _check_int(self.seed, "seed", 0, 2**31 - 1)
    _check_text(self.out_dir, "out_dir", "a non-empty folder path (a string)")
    _check_int(self.checkpoint_every, "checkpoint_every", 0)
    for field, section in (("data", DataConfig), ("recall", RecallConfig),
                           ("ranking", RankingConfig), ("federated", FederatedConfig),
                           ("privacy", PrivacyConfig),
                           ("baselines", BaselineConfig), ("rerank", RerankConfig),
                           ("eval", EvalConfig), ("online", OnlineConfig)):
      _check_section(getattr(self, field), field, section)
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
    sampled = self.eval.sampled_negatives > 0
    _check(not sampled or self.data.split in LEAVE_ONE_OUT_SPLITS, "data.split",
           '"leave_one_out" or "pfedrec_loo" when eval.sampled_negatives > 0 (one held-out '
           "item per user)", self.data.split)
    _check(self.data.split != "pfedrec_loo" or self.eval.sampled_negatives == 99,
           "eval.sampled_negatives", '99 with data.split="pfedrec_loo" (PFedRec\'s negatives)',
           self.eval.sampled_negatives)
    _check(not sampled or self.eval.sampled_negatives + 1 > self.ranking.top_t,
           "eval.sampled_negatives",
           f"0 or > ranking.top_t - 1 ({self.ranking.top_t - 1}): the sampled list is what "
           "clients rank", self.eval.sampled_negatives)
    self._check_privacy()

  def _check_privacy(self) -> None:
    """Privacy combinations that cannot hold (a DP guarantee, or what secure aggregation lets
    the server see), named by the field to change."""
    privacy, fed = self.privacy, self.federated
    # The server sees only the sum: nothing that needs one client's update can run.
    secure = privacy.secure_aggregation
    why = "under privacy.secure_aggregation=true (the server sees only the sum of uploads)"
    _check(not secure or fed.aggregator == "fedavg", "federated.aggregator", f'"fedavg" {why}',
           fed.aggregator)
    _check(not secure or fed.local_algorithm != "scaffold", "federated.local_algorithm",
           f"sgd or fedprox {why}", fed.local_algorithm)
    _check(not secure or fed.compression == "none", "federated.compression",
           f'"none" {why}: masked vectors are dense whatever the encoding', fed.compression)
    _check(not secure or fed.max_update_norm == 0, "federated.max_update_norm", f"0 {why}",
           fed.max_update_norm)
    _check(not secure or privacy.mechanism != "central", "privacy.mechanism",
           f'"none" or "local" {why}: server-side clipping needs single updates',
           privacy.mechanism)
    _check(privacy.clipping == "fixed" or privacy.mechanism == "central", "privacy.clipping",
           '"fixed" unless privacy.mechanism="central" (adaptive clipping is the server\'s)',
           privacy.clipping)
    private = privacy.mechanism != "none"
    _check(not private or fed.sampling != "sweep", "federated.sampling",
           '"fixed" or "poisson" under privacy.mechanism != none (the accountant has no bound for '
           "sweeping cohorts)", fed.sampling)
    _check(not private or fed.local_algorithm != "scaffold", "federated.local_algorithm",
           "sgd or fedprox under privacy.mechanism != none (SCAFFOLD's control-variate uploads "
           "would leave the device without noise)", fed.local_algorithm)
    central = privacy.mechanism == "central"
    _check(not central or fed.aggregator == "fedavg", "federated.aggregator",
           '"fedavg" under privacy.mechanism="central" (the DP mean replaces the reducer)',
           fed.aggregator)
    _check(not central or fed.weighting == "uniform", "federated.weighting",
           '"uniform" under privacy.mechanism="central" (each client\'s weight must be bounded)',
           fed.weighting)
    _check(not central or privacy.accountant == "rdp" or fed.sampling == "poisson",
           "privacy.accountant",
           '"rdp" with fixed-size cohorts under privacy.mechanism="central" (dp-accounting\'s PLD '
           'needs federated.sampling="poisson")', privacy.accountant)


# What the checks that need the data allow, as the field reference states them: the data's size
# and split are only known once it has loaded (`check_against_data`, and the whole job's
# preflight, `pprsf_jax.preflight`, which names the numbers of the data at hand).
DATA_LIMITS = {
    "federated.clients_per_round": "at most the number of clients (users) in the data",
    "federated.attack_target": "-1 or an item id below the number of items in the data",
    "recall.num_candidates": "at most the number of items in the data",
    "data.test_share": "a share that gives some user a test interaction",
    "data.valid_share": "a share that gives some user a validation interaction",
    "data.private_share": "a share that leaves public train interactions in every recall fold",
    "ranking.batch_size": 'loss "bce": at most the candidate rows the clients train on',
    "ranking.lists_per_step": 'loss "softmax": at most the candidate lists with a positive',
    "eval.sampled_negatives": ("at most the items each user with a held-out item never "
                               "interacted with"),
    "privacy.delta": "< 1 / the number of clients in the data, under privacy.mechanism != none",
}


def check_against_data(config: RunConfig, num_users: int, num_items: int) -> None:
  """Refuses settings the loaded data makes impossible, naming the field and the data's size.

  The deployment's coordinator calls it; a simulated run checks these limits and many more in
  its preflight (`pprsf_jax.preflight`), before any training.

  Raises:
    ConfigError: The cohort is larger than the federation (`num_users` clients), or the attack
      targets an item the catalogue (`num_items` items) does not have.
  """
  problems = data_limit_problems(config, num_users, num_items)
  if problems:
    raise ConfigError(problems[0])


def data_limit_problems(config: RunConfig, num_users: int, num_items: int) -> list[str]:
  """`check_against_data`'s refusals, one message each (empty when the config fits)."""
  fed = config.federated
  data = f"data: {_show(config.data.source)}, {num_users} users, {num_items} items"
  problems = []
  # The cohort schedule would cap C at N: refused instead, so that the config states the cohort
  # that really trains (and a privacy plan counts the sampling rate that really applies).
  if fed.clients_per_round > num_users:
    problems.append(
        f"federated.clients_per_round={fed.clients_per_round} is invalid: the federation has "
        f"{num_users} clients ({data}); allowed "
        f"{DATA_LIMITS['federated.clients_per_round']}")
  if fed.attack_target >= num_items:
    problems.append(
        f"federated.attack_target={fed.attack_target} is invalid: allowed -1 or an item id "
        f"< {num_items}")
  return problems


def allowed_values() -> dict[str, tuple[str, ...]]:
  """What each field's checks allow, in their error messages' words, by dotted field path.

  Read from the checks themselves while a default `RunConfig` is built (every check runs then,
  see `_noted`), so the field reference cannot drift from the validation; a text that quotes
  another field's value quotes its default. A check on several fields is keyed by the
  expression it names (e.g. "data.valid_share + data.test_share"). `DATA_LIMITS` come last.
  """
  noted: dict[str, list[str]] = {}
  token = _noted.set(noted)
  try:
    RunConfig()
  finally:
    _noted.reset(token)
  for field, limit in DATA_LIMITS.items():
    noted.setdefault(field, []).append(f"{limit} (checked once the data has loaded)")
  return {field: tuple(texts) for field, texts in noted.items()}


def to_dict(config: Any) -> dict[str, Any]:
  """The config as plain JSON-able data."""
  return dataclasses.asdict(config)


_EXPECTED = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
_EXPECTED_MANY = {int: "integers", float: "numbers", str: "strings", bool: "true/false values"}


def _parse_scalar(text: str, annotation: Any) -> Any:
  """`text` as an int, float, str or bool; raises ValueError when it is not one."""
  if annotation is bool:
    lowered = text.lower()
    if lowered in ("true", "1", "yes"):
      return True
    if lowered in ("false", "0", "no"):
      return False
    raise ValueError(text)
  return annotation(text)  # int() and float() raise only ValueError on a str


def _parse_value(text: str, annotation: Any, field: str) -> Any:
  """Parses `text` as the field's annotated type (the range is checked on construction)."""
  if annotation in _EXPECTED:
    try:
      return _parse_scalar(text, annotation)
    except ValueError:
      raise ConfigError(f"{field}={_describe(text)} is invalid: expected {_EXPECTED[annotation]}"
                        ) from None
  args = typing.get_args(annotation)
  if (typing.get_origin(annotation) is tuple and len(args) == 2 and args[1] is Ellipsis
      and args[0] in _EXPECTED):
    element = args[0]
    # "(8, 4)", "[8, 4]" and "8,4" all mean (8, 4); empty pieces are dropped, so "" is ().
    parts = [part.strip() for part in text.strip("()[] ").split(",")]
    try:
      return tuple(_parse_scalar(part, element) for part in parts if part)
    except ValueError:
      raise ConfigError(f"{field}={_describe(text)} is invalid: expected "
                        f"{_EXPECTED_MANY[element]} separated by commas, as in (a, b)") from None
  raise ConfigError(f"{field} cannot be set from the command line (type {annotation})")


def apply_overrides(config: Any, overrides: list[str]) -> Any:
  """Returns `config` with `section.field=value` overrides applied (and re-validated).

  All overrides are parsed first and each section is rebuilt once, so their order does not
  matter (`recall.num_candidates=10 ranking.top_t=5` works either way); a field given twice
  takes its last value.

  >>> apply_overrides(RunConfig(), ["federated.rounds=3"]).federated.rounds
  3

  Raises:
    ConfigError: An override is malformed, names no field, cannot be parsed, or gives a value
      outside the field's allowed range.
  """
  # A list or tuple only: a lone string would otherwise be read one character at a time.
  if not isinstance(overrides, (list, tuple)):
    raise ConfigError(f"overrides must be a list of section.field=value strings, "
                      f"not {_describe(overrides)}")
  changes: dict[str, Any] = {}
  for override in overrides:
    if not isinstance(override, str):
      raise ConfigError(f"override {_describe(override)} is not a section.field=value string")
    path, sep, text = override.partition("=")
    if not sep or not path:
      raise ConfigError(f"override {_describe(override)} is not of the form section.field=value")
    _record(config, path, text, changes)
  return _rebuild(config, changes)


def _record(config: Any, path: str, text: str, changes: dict[str, Any]) -> None:
  """Parses one override into `changes`, a nested {field: value or {field: ...}} dict."""
  parts = path.split(".")
  node, level = config, changes
  for depth, name in enumerate(parts):
    if not dataclasses.is_dataclass(node) or isinstance(node, type):
      where = ".".join(parts[:depth]) or f"the config ({type(node).__name__})"
      raise ConfigError(f"{_show(path)}: {where} is a field, not a config section")
    fields = [field.name for field in dataclasses.fields(node)]
    hints = typing.get_type_hints(type(node))
    if name not in fields or name not in hints:
      raise ConfigError(f"{_show(path)}: unknown field {_describe(name)} "
                        f"(known: {', '.join(fields)})")
    child = getattr(node, name)
    if depth < len(parts) - 1:
      node, level = child, level.setdefault(name, {})
    elif dataclasses.is_dataclass(child):
      raise ConfigError(f"{path} is a section; set one of its fields")
    else:
      level[name] = _parse_value(text, hints[name], path)


def _rebuild(node: Any, changes: dict[str, Any]) -> Any:
  """`node` with `changes` applied, each changed section rebuilt (and so validated) once."""
  if not changes:
    return node
  values = {name: _rebuild(getattr(node, name), change) if isinstance(change, dict) else change
            for name, change in changes.items()}
  return dataclasses.replace(node, **values)
