"""The server's view of a run: everything it receives or computes, recorded by name.

A run (`pipeline.run`, `online.run_online`) calls `view.record(name, value)` wherever a value
reaches the server or is computed there: its inputs (the public log, the folds it dealt, the
registered devices), the candidates it sends, the fields each upload declares beside its
update, the requests it receives, the re-rank context. By default nothing is kept (`IGNORED`);
pass a `ServerView` to keep them. The privacy-boundary test runs the same config on clean and on
poisoned private data and asks that every record but the legitimately private-dependent ones
(`PRIVATE_DEPENDENT`) be bit-identical.

The list of names is the documentation of what crosses (docs/privacy.md), kept in one place.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

# name -> what it is. Every record a run makes uses one of these names.
RECORDS = {
    "recall.history": "the public train log the recall models train on",
    "recall.folds": "the cross-fitting fold the server dealt each public train row",
    "recall.devices": "the devices registered with the server (federated cohorts come from them)",
    "candidates.training": "one fold's candidate lists, sent to every device for training",
    "candidates.serving": "the serving candidate lists of a period",
    "upload.declared": "what each upload of a round declares beside its update: client ids, "
                       "weight, planned steps, bytes",
    "request.items": "the items each Top-T request names (Top-T and decoys), in the order sent",
    "rerank.context": "the public facts re-rank reads (popularity, known items, cold users)",
    "service.public_log": "the public interactions logged to the server before a period",
}
# Records whose value legitimately depends on private data: the order of a request is the
# client's private ranking (which items a request names must not depend on it, see `members`).
PRIVATE_DEPENDENT = frozenset({"request.items"})


def members(request_items: np.ndarray) -> np.ndarray:
  """[U, L] each request's items sorted: which candidates it names, not how it ranks them."""
  return np.sort(np.asarray(request_items), axis=-1)


class ServerView:
  """Keeps every record, in the order the run made them."""

  def __init__(self) -> None:
    self.records: dict[str, list[Any]] = {}

  def record(self, name: str, value: Any) -> None:
    if name not in RECORDS:
      raise KeyError(f"unknown server-view record {name!r}; known: {sorted(RECORDS)}")
    self.records.setdefault(name, []).append(jax.tree.map(np.asarray, jax.device_get(value)))


class _Ignored:
  """The default view: records nothing, costs nothing."""

  def record(self, name: str, value: Any) -> None:
    del name, value


IGNORED: Any = _Ignored()
