"""Config validation: every field of every config dataclass rejects bad values with a
`ConfigError` naming the field, and `apply_overrides` lets nothing but `ConfigError` escape."""

from __future__ import annotations

import dataclasses
import fractions
import json
import math
import pathlib
import runpy
import typing
from typing import Any

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given, settings

from pprsf_jax import config as config_lib
from pprsf_jax.config import (RECALL_MODEL_NAMES, BaselineConfig, ConfigError, DataConfig,
                              EvalConfig, FederatedConfig, OnlineConfig, PrivacyConfig,
                              RankingConfig, RecallConfig, RerankConfig, RunConfig,
                              SyntheticConfig, apply_overrides, to_dict)
from pprsf_jax.data.tables import GENRES
from pprsf_jax.rerank import STRATEGIES

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Dotted prefix of each config dataclass, as it appears in messages and overrides.
SECTIONS: dict[str, type] = {
    "": RunConfig,
    "data": DataConfig,
    "data.synthetic": SyntheticConfig,
    "recall": RecallConfig,
    "ranking": RankingConfig,
    "federated": FederatedConfig,
    "privacy": PrivacyConfig,
    "baselines": BaselineConfig,
    "rerank": RerankConfig,
    "eval": EvalConfig,
    "online": OnlineConfig,
}


@dataclasses.dataclass(frozen=True)
class Field:
  path: str  # dotted, e.g. "federated.rounds"
  owner: type  # the dataclass the field belongs to
  name: str
  annotation: Any

  @property
  def is_section(self) -> bool:
    return dataclasses.is_dataclass(self.annotation)


def _fields() -> list[Field]:
  found = []
  for prefix, owner in SECTIONS.items():
    hints = typing.get_type_hints(owner)
    for field in dataclasses.fields(owner):
      path = f"{prefix}.{field.name}" if prefix else field.name
      found.append(Field(path, owner, field.name, hints[field.name]))
  return found


FIELDS = _fields()
BY_PATH = {field.path: field for field in FIELDS}
LEAVES = [field for field in FIELDS if not field.is_section]

# Out-of-range values, per field (the type-level bad values come from the annotation below).
# Every field must be listed: test_invalid_table_covers_every_field keeps this table complete.
OUT_OF_RANGE: dict[str, list[Any]] = {
    "name": ["", "run\x00"],
    "seed": [-1, 2**31, -(10**5000)],
    "out_dir": ["", "runs\x00"],
    "checkpoint_every": [-1],
    "data": [RecallConfig()],
    "recall": [DataConfig()],
    "ranking": [RecallConfig()],
    "federated": [RankingConfig()],
    "privacy": [FederatedConfig()],
    "baselines": [EvalConfig()],
    "rerank": [BaselineConfig()],
    "eval": [RerankConfig()],
    "online": [EvalConfig()],
    "data.source": ["", "ml-100k\x00"],
    "data.private_share": [-0.01, 1.0, 1],
    "data.valid_share": [0.0, 0.5, -0.1],
    "data.test_share": [0.0, 0.5, 0],
    "data.split": ["loo", "", "Random"],
    "data.prefix": ["ml/100k", "ml\\100k", "ml\x00"],
    "data.feedback": ["explicit", "", "Implicit"],
    "data.positive_threshold": [0.5, 5.5, float("nan")],
    "data.label_folds": [1, 11, 0],
    "data.synthetic": [DataConfig(), RecallConfig()],
    "data.synthetic.num_users": [1, 0, -5, -(10**5000)],
    "data.synthetic.num_items": [19, 0],
    "data.synthetic.interactions_per_user": [9, 200, 10**6],  # 200 = the default num_items
    "data.synthetic.latent_dim": [0, -1],
    "data.synthetic.attribute_strength": [-0.1, -1],
    "recall.model": ["BPR", "svd", ""],
    "recall.num_candidates": [1, 0],
    "recall.embedding_dim": [0],
    "recall.epochs": [0],
    "recall.batch_size": [0],
    "recall.learning_rate": [0.0, 0, -1e-3],
    "recall.l2": [-1e-9],
    "recall.num_neighbors": [0],
    "recall.user_chunk": [0],
    "recall.item_chunk": [0, -8192],
    "recall.content_popularity_weight": [-0.1],
    "recall.lightgcn_layers": [0, -1],
    "recall.lightgcn_epochs": [0],
    "recall.lightgcn_batch_size": [0],
    "recall.lightgcn_learning_rate": [0.0, -0.01],
    "recall.lightgcn_l2": [-1e-9],
    "recall.two_tower_hidden": [0],
    "recall.two_tower_epochs": [0],
    "recall.two_tower_batch_size": [1, 0],
    "recall.two_tower_learning_rate": [0.0],
    "recall.two_tower_l2": [-1e-9],
    "recall.two_tower_temperature": [0.0, -0.1],
    "recall.approximate_top_k": ["yes", 1],
    "recall.approx_recall_target": [0.0, 1.01, -0.5],
    "ranking.hidden_sizes": [(), (0,), (64, -1), [64, 32], (64.0,), (True,), ("64",), (None,)],
    "ranking.local_epochs": [0],
    "ranking.batch_size": [0],
    "ranking.learning_rate": [0.0, -0.03],
    "ranking.top_t": [0],
    "ranking.loss": ["hinge", "", 1],
    "ranking.lists_per_step": [0, -1, 1.5],
    "ranking.model": ["word2vec", "", "MF", 1],
    "ranking.embedding_dim": [0, -4, 8.5],
    "ranking.cross_layers": [-1, 1.5],
    "ranking.embedding_init_std": [0.0, -0.1, float("nan")],
    "ranking.personal_learning_rate": [-0.1, float("inf")],
    "federated.rounds": [0, -1],
    "federated.clients_per_round": [0],
    "federated.aggregator": ["FedAvg", "no_such_rule", "", ["fedavg"]],
    "federated.weighting": ["median", ["uniform"]],
    "federated.server_optimizer": ["rmsprop", "SGD"],
    "federated.server_learning_rate": [0.0, -3.0],
    "federated.byzantine_f": [-1],
    "federated.multi_krum_m": [0],
    "federated.trimmed_mean_beta": [-0.1, 0.5],
    "federated.norm_bound": [0.0],
    "federated.clipping_tau": [0.0, -1.0],
    "federated.local_algorithm": ["adam", ("sgd",)],
    "federated.fedprox_mu": [-0.01],
    "federated.compression": ["gzip", {"none": 1}],
    "federated.quantization_bits": [0, 17],
    "federated.top_k_fraction": [0.0, 1.01],
    "federated.max_update_norm": [-1.0],
    "federated.dropout_rate": [-0.1, 1.0],
    "federated.straggler_rate": [-0.1, 1.5],
    "federated.straggler_min_work": [0.0, 1.1],
    "federated.attack": ["poison", ""],
    "federated.attacker_share": [-0.1, 0.5],
    "federated.attack_scale": [0.0],
    "federated.attack_noise_std": [-1.0],
    "federated.attack_target": [-2],
    "federated.sampling": ["random", "Poisson", "sweeping"],
    "privacy.mechanism": ["dp", "Central"],
    "privacy.clip_norm": [0.0, -1.0],
    "privacy.noise_multiplier": [-0.5],
    "privacy.target_epsilon": [-1.0],
    "privacy.delta": [0.0, 1.0, 1.5],
    "privacy.accountant": ["prv", ""],
    "privacy.clipping": ["quantile"],
    "privacy.target_quantile": [0.0, 1.0],
    "privacy.clip_learning_rate": [0.0],
    "privacy.clip_count_stddev": [-1.0],
    "privacy.audit": ["yes", 1],
    "privacy.secure_aggregation": ["on"],
    "privacy.secure_aggregation_bound": [0.0, -1.0],
    "privacy.request_decoys": [-1],
    "baselines.central_epochs": [0],
    "baselines.local_only_epochs": [0],
    "baselines.finetune_epochs": [0, 1.5],
    "baselines.recall_models": [("bpr", "bpr"), ("svd",), ["bpr"], "bpr", ("bpr", 3)],
    "rerank.strategies": [("shuffle",), ("mmr", "shuffle"), ["mmr"], ("mmr", 3), "mmr"],
    "rerank.mmr_lambda": [-0.1, 1.1],
    "rerank.cold_start_popularity_weight": [-0.1, 1.5],
    "rerank.freshness_weight": [10**400, "-0.3"],
    "rerank.popularity_weight": [-(10**400), "0.3"],
    "rerank.fairness_head_share": [0.0, 1.0, -0.2],
    "rerank.fairness_min_tail_share": [-0.1, 1.01],
    "rerank.fairness_list_length": [0, -1],
    "rerank.rules_exclude_genres": [("Sitcom",), ("Drama", "horror"), ["Drama"], "Drama",
                                    ("Drama", 3)],
    "rerank.rules_max_per_genre": [-1],
    "rerank.new_item_slots": [-1],
    "rerank.new_item_position": [-1],
    "eval.top_k": [0],
    "eval.sampled_negatives": [-1, 1.5],
    "eval.every_rounds": [-1, 2.5],
    "online.days": [0, 366],
    "online.history_share": [0.0, 1.0, -0.5],
    "online.rounds_per_day": [0],
}

INF, NAN = float("inf"), float("nan")


def _wrong_types(field: Field) -> list[Any]:
  """Values of the wrong type (or non-finite) for the field's annotation."""
  common = [None, object()]
  if field.is_section:
    return common + [{}, "x", 3]
  if field.annotation is int:
    return common + ["3", 3.0, 2.5, True, False, NAN, INF, 3 + 0j, np.float64(3.0)]
  if field.annotation is float:
    return common + ["0.1", True, NAN, INF, -INF, 10**400, 0.1 + 0j, np.bool_(True)]
  if field.annotation is str:
    return common + [3, b"abc", ("abc",), ["abc"]]
  if field.annotation is bool:
    return common + [0, 1, 1.0, "true", np.bool_(True)]
  return common + [3, 3.5, b"ab", {"a": 1}]  # tuple fields


def _invalid_cases() -> list[tuple[str, Any]]:
  cases = []
  for field in FIELDS:
    for value in OUT_OF_RANGE.get(field.path, []) + _wrong_types(field):
      cases.append(pytest.param(field.path, value, id=f"{field.path}-{len(cases)}"))
  return cases


def _build(field: Field, value: Any) -> Any:
  return field.owner(**{field.name: value})


def _assert_names(error: ConfigError, path: str) -> None:
  message = str(error)
  assert message.startswith(f"{path}="), message
  assert "is invalid: allowed " in message, message
  assert len(message) < 1000, message  # huge values are cut, not dumped


# ------------------------------------------------------------------- (a) every field is checked
def test_sections_list_every_config_dataclass():
  in_module = {value for value in vars(config_lib).values()
               if isinstance(value, type) and dataclasses.is_dataclass(value)
               and value.__module__ == config_lib.__name__}
  assert in_module == set(SECTIONS.values())


def test_invalid_table_covers_every_field():
  assert set(OUT_OF_RANGE) == set(BY_PATH)
  assert all(OUT_OF_RANGE[path] for path in OUT_OF_RANGE)


def test_defaults_and_presets_are_valid():
  for owner in SECTIONS.values():
    owner()
  for preset in sorted((ROOT / "configs").glob("*.py")):
    assert isinstance(runpy.run_path(str(preset))["get_config"](), RunConfig), preset


@pytest.mark.parametrize("path,value", _invalid_cases())
def test_invalid_value_is_rejected_naming_the_field(path, value):
  with pytest.raises(ConfigError) as caught:
    _build(BY_PATH[path], value)
  _assert_names(caught.value, path)


@pytest.mark.parametrize("overrides,path", [
    (["recall.num_candidates=20"], "ranking.top_t"),  # T must stay below K (default T = 20)
    (["eval.top_k=21"], "eval.top_k"),  # k <= T
    (["eval.sampled_negatives=99"], "data.split"),  # sampled ranking needs leave-one-out
    (["eval.sampled_negatives=10", "data.split=leave_one_out"], "eval.sampled_negatives"),
    (["data.valid_share=0.3", "data.test_share=0.3"], "data.valid_share + data.test_share"),
    (["data.synthetic.num_items=30"], "data.synthetic.interactions_per_user"),  # default 30
    # DP: combinations under which the guarantee would not hold name the field to change.
    (["privacy.mechanism=central"], "federated.weighting"),
    (["privacy.mechanism=central", "federated.weighting=uniform", "federated.aggregator=median"],
     "federated.aggregator"),
    (["privacy.mechanism=local", "federated.local_algorithm=scaffold"],
     "federated.local_algorithm"),
    (["privacy.mechanism=central", "federated.weighting=uniform", "privacy.accountant=pld"],
     "privacy.accountant"),
    (["privacy.clipping=adaptive", "privacy.noise_multiplier=12", "privacy.clip_count_stddev=5"],
     "privacy.clip_count_stddev"),
    (["privacy.mechanism=local", "privacy.clipping=adaptive"], "privacy.clipping"),
    (["privacy.mechanism=local", "federated.sampling=sweep"], "federated.sampling"),
    (["privacy.secure_aggregation=true", "federated.aggregator=krum"], "federated.aggregator"),
    (["privacy.secure_aggregation=true", "federated.compression=top_k"], "federated.compression"),
    (["privacy.secure_aggregation=true", "federated.max_update_norm=1"],
     "federated.max_update_norm"),
    (["privacy.secure_aggregation=true", "privacy.mechanism=central",
      "federated.weighting=uniform"], "privacy.mechanism"),
])
def test_cross_field_limits_name_the_field(overrides, path):
  with pytest.raises(ConfigError) as caught:
    apply_overrides(RunConfig(), overrides)
  assert str(caught.value).startswith(f"{path}="), str(caught.value)


def test_numbers_must_be_json_able_python_numbers():
  # The config goes into results.json: np.float64 is a float, np.int64 and Fraction are not.
  config = FederatedConfig(server_learning_rate=np.float64(0.5), fedprox_mu=0)
  assert json.loads(json.dumps(to_dict(config)))["server_learning_rate"] == 0.5
  for field, value in (("rounds", np.int64(5)), ("server_learning_rate", np.float32(0.5)),
                       ("fedprox_mu", fractions.Fraction(1, 2))):
    with pytest.raises(ConfigError, match=f"federated.{field}="):
      FederatedConfig(**{field: value})
  with pytest.raises(ConfigError, match="ranking.hidden_sizes="):
    RankingConfig(hidden_sizes=(np.int32(8),))


# ---------------------------------------------------------- (c) random values to constructors
_NAMES = sorted({"bpr", "popularity", "examples", "uniform", "sgd", "adam", "fedavg", "krum",
                 "none", "top_k", "quantize", "fedprox", "synthetic", "ml-100k", *STRATEGIES,
                 "Drama", "Sci-Fi"})
_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-3, 300),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-1.0, 2.0),
    st.fractions(),
    st.text(max_size=12),
    st.sampled_from(_NAMES),
    st.lists(st.integers(-3, 100), max_size=4).map(tuple),
    st.lists(st.sampled_from(_NAMES), max_size=3).map(tuple),
    st.lists(st.integers(1, 64), max_size=3),
    st.builds(SyntheticConfig),
    st.binary(max_size=4),
)


def _assert_well_typed(field: Field, value: Any) -> None:
  """What any accepted value must satisfy, whatever its range."""
  if field.is_section:
    assert isinstance(value, field.annotation)
  elif field.annotation is int:
    assert isinstance(value, int) and not isinstance(value, bool)
  elif field.annotation is float:
    assert isinstance(value, (int, float)) and not isinstance(value, bool)
    assert math.isfinite(value)
  elif field.annotation is str:
    assert isinstance(value, str) and value and "\x00" not in value
  elif field.annotation is bool:
    assert isinstance(value, bool)
  elif field.path == "ranking.hidden_sizes":
    assert isinstance(value, tuple) and value
    assert all(isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in value)
  elif field.path == "rerank.rules_exclude_genres":
    assert isinstance(value, tuple) and all(name in GENRES for name in value)
  elif field.path == "baselines.recall_models":
    assert isinstance(value, tuple) and all(name in RECALL_MODEL_NAMES for name in value)
    assert len(set(value)) == len(value)
  else:
    assert field.path == "rerank.strategies"
    assert isinstance(value, tuple) and all(name in STRATEGIES for name in value)


@settings(max_examples=600, deadline=None)
@given(field=st.sampled_from(FIELDS), value=_VALUES)
def test_random_constructor_values_are_valid_or_config_error(field, value):
  try:
    built = _build(field, value)
  except ConfigError as error:
    assert " is invalid: allowed " in str(error)
    return
  assert getattr(built, field.name) is value  # accepted as given, never silently converted
  _assert_well_typed(field, value)
  json.dumps(to_dict(built))  # results.json must be writable


# ---------------------------------------------------------------- (b) fuzzed override strings
def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  flat = {}
  for key, value in data.items():
    path = f"{prefix}{key}"
    flat.update(_flat(value, f"{path}.") if isinstance(value, dict) else {path: value})
  return flat


BASE = RunConfig()
BASE_FLAT = _flat(to_dict(BASE))


def _apply_or_config_error(overrides: list[str]) -> RunConfig | None:
  try:
    result = apply_overrides(BASE, overrides)
  except ConfigError as error:
    assert str(error)
    return None
  assert isinstance(result, RunConfig)
  return result


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(), max_size=3))
def test_random_override_strings_give_a_config_or_config_error(overrides):
  _apply_or_config_error(overrides)


_TEXT_VALUES = st.one_of(
    st.text(),
    st.text(alphabet="0123456789.,-+e()[] _", max_size=10),
    st.integers().map(str),
    st.integers(-2, 200).map(str),
    st.floats().map(repr),
    st.sampled_from(["inf", "-inf", "nan", "1e400", "-0", "1_000", "0x10", "True", " 3 "]),
    st.floats(0, 1).map(str),
    st.sampled_from(_NAMES),
    st.lists(st.integers(-1, 100), max_size=3).map(lambda xs: ", ".join(map(str, xs))),
    st.lists(st.sampled_from(_NAMES), max_size=3).map(lambda xs: f"({', '.join(xs)})"),
)


@settings(max_examples=600, deadline=None)
@given(field=st.sampled_from(FIELDS), text=_TEXT_VALUES, extra=st.sampled_from(["", ".x", "."]))
def test_structured_override_sets_only_its_field(field, text, extra):
  result = _apply_or_config_error([f"{field.path}{extra}={text}"])
  if result is None:
    return
  assert not field.is_section and not extra  # sections and sub-paths of fields are refused
  flat = _flat(to_dict(result))
  changed = {path for path in flat if flat[path] != BASE_FLAT[path]}
  assert changed <= {field.path}
  value = flat[field.path]
  if field.annotation is int:
    assert value == int(text) and type(value) is int
  elif field.annotation is float:
    assert value == float(text) and math.isfinite(value)
  elif field.annotation is str:
    assert value == text
  elif field.annotation is bool:
    assert value is (text.lower() in ("true", "1", "yes"))
    assert text.lower() in ("true", "1", "yes", "false", "0", "no")
  else:
    assert isinstance(value, tuple)


def test_bool_overrides_take_the_documented_spellings_only():
  """The hypothesis test above reaches the bool fields rarely; spell each case out."""
  for text, expected in [("true", True), ("TRUE", True), ("1", True), ("yes", True),
                         ("false", False), ("No", False), ("0", False)]:
    config = apply_overrides(BASE, [f"privacy.audit={text}"])
    assert config.privacy.audit is expected
  for text in ("2", "on", "", "truee"):
    with pytest.raises(ConfigError, match="privacy.audit"):
      apply_overrides(BASE, [f"privacy.audit={text}"])


@pytest.mark.parametrize("override,expected", [
    ("", "section.field=value"),
    ("federated.rounds", "section.field=value"),
    ("=3", "section.field=value"),
    ("nosection.rounds=1", "unknown field 'nosection'"),
    ("federated.nope=1", "unknown field 'nope'"),
    ("federated..rounds=1", "unknown field ''"),
    (".=1", "unknown field ''"),
    ("federated.rounds =3", "unknown field 'rounds '"),
    ("ｆederated.rounds=3", "unknown field"),
    ("federated=3", "federated is a section"),
    ("data.synthetic=3", "data.synthetic is a section"),
    ("federated.rounds.deeper=3", "federated.rounds is a field"),
    ("data.synthetic.num_items.x=3", "data.synthetic.num_items is a field"),
    ("federated.rounds=", "federated.rounds='' is invalid"),
    ("federated.rounds=abc", "federated.rounds='abc' is invalid: expected an integer"),
    ("federated.rounds=2.5", "expected an integer"),
    ("federated.rounds=1e400", "expected an integer"),
    ("federated.rounds=" + "9" * 5000, "federated.rounds="),  # past Python's int-digit limit
    ("federated.rounds=\ud800", "federated.rounds="),
    ("federated.rounds=0", "federated.rounds=0 is invalid"),
    ("recall.l2=inf", "recall.l2=inf is invalid"),
    ("recall.l2=nan", "recall.l2=nan is invalid"),
    ("recall.l2=-1e400", "recall.l2=-inf is invalid"),
    ("recall.l2=", "recall.l2='' is invalid: expected a number"),
    ("ranking.hidden_sizes=(8,x)", "ranking.hidden_sizes='(8,x)' is invalid: expected integers"),
    ("ranking.hidden_sizes=", "ranking.hidden_sizes=() is invalid"),
    ("ranking.hidden_sizes=(8, 0)", "ranking.hidden_sizes=(8, 0) is invalid"),
    ("rerank.strategies=shuffle", "unknown: ['shuffle']"),
    ("federated.aggregator=FEDAVG", "federated.aggregator='FEDAVG' is invalid"),
    ("name=", "name='' is invalid"),
    ("name=a\x00b", "name='a\\x00b' is invalid"),
    ("out_dir=", "out_dir='' is invalid"),
    ("seed=-1", "seed=-1 is invalid"),
])
def test_malformed_override_raises_config_error_saying_what(override, expected):
  with pytest.raises(ConfigError) as caught:
    apply_overrides(BASE, [override])
  assert expected in str(caught.value), str(caught.value)


@pytest.mark.parametrize("overrides", ["federated.rounds=3", [None], [3], [b"seed=1"], None, 3])
def test_overrides_that_are_not_a_list_of_strings_raise_config_error(overrides):
  with pytest.raises(ConfigError):
    apply_overrides(BASE, overrides)


# ------------------------------------------------------------------- (d) valid overrides parse
def _as_text(value: Any) -> str:
  if isinstance(value, tuple):
    return f"({', '.join(map(str, value))})"
  return repr(value) if isinstance(value, float) else str(value)


@pytest.mark.parametrize("field", LEAVES, ids=[field.path for field in LEAVES])
def test_every_field_round_trips_its_default(field):
  flat = BASE_FLAT[field.path]
  assert apply_overrides(BASE, [f"{field.path}={_as_text(flat)}"]) == BASE


@pytest.mark.parametrize("override,path,expected", [
    ("federated.rounds=7", "federated.rounds", 7),
    ("federated.rounds= 7 ", "federated.rounds", 7),
    ("seed=2147483647", "seed", 2**31 - 1),
    ("recall.l2=0", "recall.l2", 0.0),
    ("recall.learning_rate=1e-2", "recall.learning_rate", 0.01),
    ("ranking.hidden_sizes=16", "ranking.hidden_sizes", (16,)),
    ("ranking.hidden_sizes=[16, 8]", "ranking.hidden_sizes", (16, 8)),
    ("ranking.hidden_sizes=(16,8,4,)", "ranking.hidden_sizes", (16, 8, 4)),
    ("rerank.strategies=", "rerank.strategies", ()),
    ("rerank.strategies=(mmr)", "rerank.strategies", ("mmr",)),
    ("rerank.strategies=mmr, cold_start", "rerank.strategies", ("mmr", "cold_start")),
    ("data.source=/tmp/my data=1", "data.source", "/tmp/my data=1"),  # only the first = splits
    ("data.synthetic.attribute_strength=0", "data.synthetic.attribute_strength", 0.0),
    ("federated.aggregator=krum", "federated.aggregator", "krum"),
])
def test_valid_override_parses(override, path, expected):
  value = _flat(to_dict(apply_overrides(BASE, [override])))[path]
  assert value == expected and type(value) is type(expected)


def test_overrides_leave_the_input_config_alone():
  apply_overrides(BASE, ["federated.rounds=3", "data.synthetic.num_users=50"])
  assert BASE == RunConfig()


# Pairs that are only valid together: applied one at a time, some orders would pass through an
# invalid config (e.g. K = 10 while T is still 20).
_TOGETHER = ["recall.num_candidates=10", "ranking.top_t=5", "eval.top_k=3",
             "data.synthetic.num_items=25", "data.synthetic.interactions_per_user=12",
             "data.valid_share=0.42", "data.test_share=0.05", "federated.rounds=7"]


@settings(max_examples=40, deadline=None)
@given(st.permutations(_TOGETHER))
def test_override_order_does_not_matter(overrides):
  config = apply_overrides(BASE, overrides)
  assert (config.recall.num_candidates, config.ranking.top_t, config.eval.top_k) == (10, 5, 3)
  assert (config.data.synthetic.num_items, config.data.synthetic.interactions_per_user) == (25, 12)
  assert (config.data.valid_share, config.data.test_share) == (0.42, 0.05)


def test_a_repeated_override_takes_the_last_value():
  config = apply_overrides(BASE, ["federated.rounds=3", "federated.rounds=4"])
  assert config.federated.rounds == 4
