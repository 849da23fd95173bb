"""What travels between server and devices, as Flower records.

Parameter trees travel as an `ArrayRecord` keyed by each leaf's path (`jax.tree_util.keystr`),
so the receiver rebuilds the tree from its own template and a missing, extra or misshapen
array is named, never silently reordered. Candidate lists travel as one `ArrayRecord` each.
Private data has no encoder here on purpose: nothing in this module can serialise it.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from flwr.app import Array, ArrayRecord

from pprsf_jax.types import CandidateList



class WireError(ValueError):
  """A record that does not decode into what the receiver expects."""


def tree_to_record(tree: Any) -> ArrayRecord:
  """A parameter tree as an ArrayRecord keyed by leaf path."""
  return ArrayRecord(array_dict={
      jax.tree_util.keystr(path): Array(np.ascontiguousarray(np.asarray(leaf)))
      for path, leaf in jax.tree_util.tree_leaves_with_path(tree)})


def tree_from_record(record: ArrayRecord, template: Any, *, what: str) -> Any:
  """Rebuilds a tree shaped like `template` from `record`.

  Raises:
    WireError: naming `what` and the first key that is missing, unexpected, or of another shape
      or dtype than the template's.
  """
  paths = [jax.tree_util.keystr(path)
           for path, _ in jax.tree_util.tree_leaves_with_path(template)]
  extra = sorted(set(record.keys()) - set(paths))
  if extra:
    raise WireError(f"{what}: unexpected array {extra[0]!r}")
  leaves = []
  for path, want in zip(paths, jax.tree.leaves(template)):
    if path not in record:
      raise WireError(f"{what}: missing array {path!r}")
    got = record[path].numpy()
    if got.shape != tuple(want.shape) or got.dtype != np.dtype(want.dtype):
      raise WireError(f"{what}: {path} is {got.dtype}{list(got.shape)}, expected "
                      f"{np.dtype(want.dtype)}{list(want.shape)}")
    leaves.append(got)
  return jax.tree.unflatten(jax.tree.structure(template), leaves)


_LIST_FIELDS = ("items", "scores", "neighbor_items", "neighbor_similarity", "public_counts")
_LIST_DTYPES = {"items": np.int32, "scores": np.float32, "neighbor_items": np.int32,
                "neighbor_similarity": np.float32, "public_counts": np.float32}


def candidates_to_record(shipped: CandidateList) -> ArrayRecord:
  arrays = {name: Array(np.ascontiguousarray(getattr(shipped, name), _LIST_DTYPES[name]))
            for name in _LIST_FIELDS}
  arrays["fold"] = Array(np.asarray([shipped.fold], np.int32))
  return ArrayRecord(array_dict=arrays)


def candidates_from_record(record: ArrayRecord, *, num_items: int) -> CandidateList:
  """Decodes and checks one candidate list against the catalogue size `num_items`."""
  missing = [name for name in (*_LIST_FIELDS, "fold") if name not in record]
  if missing:
    raise WireError(f"candidate list: missing array {missing[0]!r}")
  fields = {name: record[name].numpy() for name in _LIST_FIELDS}
  for name, array in fields.items():
    if array.dtype != _LIST_DTYPES[name]:
      raise WireError(f"candidate list: {name} is {array.dtype}, expected "
                      f"{np.dtype(_LIST_DTYPES[name])}")
  k = fields["items"].shape
  if (len(k) != 1 or fields["scores"].shape != k or fields["neighbor_items"].ndim != 2
      or fields["neighbor_items"].shape[0] != k[0]
      or fields["neighbor_similarity"].shape != fields["neighbor_items"].shape):
    raise WireError("candidate list: items [K], scores [K] and neighbour arrays [K, P] disagree "
                    f"(items {list(k)}, scores {list(fields['scores'].shape)}, neighbours "
                    f"{list(fields['neighbor_items'].shape)})")
  if fields["public_counts"].shape != (num_items,):
    raise WireError(f"candidate list: public_counts has shape "
                    f"{list(fields['public_counts'].shape)}, the catalogue has {num_items} items")
  for name in ("items", "neighbor_items"):
    ids = fields[name]
    if ids.size and (ids.min() < -1 or ids.max() >= num_items):
      raise WireError(f"candidate list: {name} holds ids outside [-1, {num_items})")
  return CandidateList(fold=int(record["fold"].numpy()[0]), **fields)
