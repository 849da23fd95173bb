"""The privacy boundary: server-side code never receives, and never depends on, private data.

Structural half: no function of the server-side packages (recall, aggregation, re-rank, and the
central-DP reducer) is annotated with a type that is or contains `PrivateData`, and none of their
modules imports it.
The behavioural half runs the real pipeline, online loop and deployment on rewritten private
data: `test_privacy_boundary_end_to_end.py`.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import typing
from types import ModuleType
from typing import Any

import pytest

from pprsf_jax.config import RerankConfig
from pprsf_jax.data.dataset import FederatedDataset
from pprsf_jax.deploy.device import DeviceData
from pprsf_jax.ranking.task import DeviceState
from pprsf_jax.types import Interactions, PrivateData, PublicData

SERVER_PACKAGES = ("pprsf_jax.recall", "pprsf_jax.aggregation", "pprsf_jax.rerank")
# Server-side modules of mixed packages: the DP-FedAvg reducer and the accountant it relies on.
SERVER_MODULES = ("pprsf_jax.privacy.central_dp", "pprsf_jax.privacy.accounting")
# What server-side modules may import from the project besides each other: the config, the
# boundary types and progress reporting (it counts loop steps; it imports nothing of the
# project). Anything else (ranking, service, data) is client-side or holds private data.
ALLOWED_PROJECT_IMPORTS = ("pprsf_jax.config", "pprsf_jax.types", "pprsf_jax.progress")


# ------------------------------------------------------------------------------------ helpers
def _server_modules() -> list[ModuleType]:
  modules = []
  for name in SERVER_PACKAGES:
    package = importlib.import_module(name)
    modules.append(package)
    for info in pkgutil.iter_modules(package.__path__, prefix=name + "."):
      modules.append(importlib.import_module(info.name))
  return modules + [importlib.import_module(name) for name in SERVER_MODULES]


def _mentions_private(annotation: Any, seen: set[int] | None = None) -> bool:
  """Whether a resolved annotation is PrivateData (or a deployed device's DeviceData, or the
  state a client keeps on its device, DeviceState: its personal state included) or contains it
  (generics, Callable, fields)."""
  seen = set() if seen is None else seen
  if id(annotation) in seen:
    return False
  seen.add(id(annotation))
  if annotation is PrivateData or annotation is DeviceData or annotation is DeviceState:
    return True
  if isinstance(annotation, (list, tuple)):  # Callable's argument list
    return any(_mentions_private(a, seen) for a in annotation)
  if any(_mentions_private(a, seen) for a in typing.get_args(annotation)):
    return True
  # Containers whose fields hold PrivateData (e.g. FederatedDataset) leak it just as well.
  if inspect.isclass(annotation) and annotation.__module__.startswith("pprsf_jax"):
    try:
      fields = typing.get_type_hints(annotation)
    except Exception:  # pylint: disable=broad-except
      fields = dict(getattr(annotation, "__annotations__", {}))
    return any(_mentions_private(a, seen) for a in fields.values())
  return False


def _private_parameters(function) -> list[str]:
  """Names of the parameters (or 'return') whose annotation involves PrivateData."""
  hints = typing.get_type_hints(function)
  return [name for name, hint in hints.items() if _mentions_private(hint)]


def _functions_of(module: ModuleType) -> list[Any]:
  """Every function defined in `module`, plus the methods of the classes it defines."""
  found = []
  for _, value in vars(module).items():
    if getattr(value, "__module__", None) != module.__name__:
      continue
    if inspect.isfunction(value):
      found.append(value)
    elif inspect.isclass(value):
      found.extend(v for v in vars(value).values() if inspect.isfunction(v))
  return found


def _private_imports(source: str) -> list[str]:
  """Lines of `source` that import or reference the name PrivateData (docstrings excluded)."""
  hits = []
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, (ast.Import, ast.ImportFrom)):
      if any(alias.name.split(".")[-1] == "PrivateData" for alias in node.names):
        hits.append(f"line {node.lineno}: import")
    elif isinstance(node, ast.Name) and node.id == "PrivateData":
      hits.append(f"line {node.lineno}: name")
    elif isinstance(node, ast.Attribute) and node.attr == "PrivateData":
      hits.append(f"line {node.lineno}: attribute")
  return hits


def _project_imports(source: str) -> set[str]:
  imported = set()
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pprsf_jax"):
      imported.add(node.module)
    elif isinstance(node, ast.Import):
      imported.update(a.name for a in node.names if a.name.startswith("pprsf_jax"))
  return imported


# ------------------------------------------------------------------------------- structural
def test_checkers_detect_private_data():
  """The detectors below must be able to fire, or the structural tests prove nothing."""

  def direct(data: PrivateData) -> None:
    del data

  def nested(batch: list[PrivateData], other: dict[str, tuple[int, PrivateData]]) -> None:
    del batch, other

  def through_container(data: FederatedDataset) -> None:
    del data

  def clean(data: PublicData, k: int) -> Interactions:
    del data, k
    return Interactions.empty()

  assert _private_parameters(direct) == ["data"]
  assert _private_parameters(nested) == ["batch", "other"]
  assert _private_parameters(through_container) == ["data"]
  assert _private_parameters(clean) == []
  assert _private_imports("from pprsf_jax.types import Candidates, PrivateData\n")
  assert _private_imports("import pprsf_jax.types as t\nx = t.PrivateData\n")
  assert not _private_imports('"""Mentions PrivateData in prose only."""\nx = 1\n')


def test_server_modules_are_found():
  names = {m.__name__ for m in _server_modules()}
  # A broken discovery would make the other structural tests vacuous.
  assert {"pprsf_jax.recall.bpr", "pprsf_jax.recall.retrieve", "pprsf_jax.aggregation.mean",
          "pprsf_jax.aggregation.server", "pprsf_jax.rerank.mmr",
          "pprsf_jax.rerank.cold_start", "pprsf_jax.privacy.central_dp"} <= names
  assert sum(len(_functions_of(m)) for m in _server_modules()) >= 15


@pytest.mark.parametrize("module", _server_modules(), ids=lambda m: m.__name__)
def test_server_signatures_exclude_private_data(module):
  for function in _functions_of(module):
    assert _private_parameters(function) == [], f"{module.__name__}.{function.__qualname__}"


@pytest.mark.parametrize("module", _server_modules(), ids=lambda m: m.__name__)
def test_server_modules_never_import_private_data(module):
  assert not any(value is PrivateData for value in vars(module).values())
  assert _private_imports(inspect.getsource(module)) == []


@pytest.mark.parametrize("module", _server_modules(), ids=lambda m: m.__name__)
def test_server_modules_import_only_server_side_code(module):
  for imported in _project_imports(inspect.getsource(module)):
    server_side = (any(imported == p or imported.startswith(p + ".") for p in SERVER_PACKAGES)
                   or imported in SERVER_MODULES)
    assert server_side or imported in ALLOWED_PROJECT_IMPORTS, (
        f"{module.__name__} imports {imported}")


# The server of a deployment mixes stages (it calls the pipeline's recall and the round's server
# half), so the import rule above does not apply; it must still never take or load device data.
DEPLOY_SERVER_MODULES = ("pprsf_jax.deploy.coordinator", "pprsf_jax.deploy.flower_server")
# Names that would give server code a device's data: the types, and the loaders that return it.
DEVICE_SIDE_NAMES = {"PrivateData", "DeviceData", "device_part", "load_federation", "private"}


def _device_side_references(source: str) -> list[str]:
  hits = []
  for node in ast.walk(ast.parse(source)):
    name = (node.id if isinstance(node, ast.Name) else node.attr
            if isinstance(node, ast.Attribute) else None)
    if name in DEVICE_SIDE_NAMES:
      hits.append(f"line {node.lineno}: {name}")
    if isinstance(node, ast.ImportFrom):
      hits += [f"line {node.lineno}: import {a.name}" for a in node.names
               if a.name in DEVICE_SIDE_NAMES]
  return hits


@pytest.mark.parametrize("name", DEPLOY_SERVER_MODULES)
def test_deployed_server_never_takes_or_loads_device_data(name):
  if name.endswith("flower_server"):
    pytest.importorskip("flwr", reason="the flower extra is not installed")
  module = importlib.import_module(name)
  functions = _functions_of(module)
  assert len(functions) >= 5
  for function in functions:
    assert _private_parameters(function) == [], f"{name}.{function.__qualname__}"
  assert _device_side_references(inspect.getsource(module)) == []
  assert _device_side_references("x = data.private\n")  # the detector can fire
  assert _device_side_references("from m import device_part\n")


def test_strategy_and_aggregator_closures_exclude_private_data():
  """The callables the factories return are server code as well."""
  from pprsf_jax.aggregation import make_aggregator  # pylint: disable=import-outside-toplevel
  from pprsf_jax.config import FederatedConfig  # pylint: disable=import-outside-toplevel
  from pprsf_jax.rerank import STRATEGIES  # pylint: disable=import-outside-toplevel

  closures = [build(RerankConfig()) for build in STRATEGIES.values()] + [
      make_aggregator(FederatedConfig()).aggregate, make_aggregator(FederatedConfig()).init]
  for closure in closures:
    assert _private_parameters(closure) == []
