"""Server-side checks of uploads that arrive one by one (from real devices, or a simulated
attacker), before they are stacked for a jitted aggregator.

Inside the simulated round every upload has Theta's structure by construction and only
finiteness and norm can fail (`make_round` checks those on device). An upload received from
outside can be anything; `stack_uploads` refuses what does not fit, with the reason, and gives
the aggregator a mask so that refused uploads never reach Theta.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import jax
import numpy as np


class StackedUploads(NamedTuple):
  updates: Any  # the accepted uploads stacked [C, ...] (refused slots hold zeros)
  mask: np.ndarray  # [C] float32: 1 accepted, 0 refused
  reasons: list[str | None]  # per upload: why it was refused, None if accepted


def check_upload(delta: Any, params: Any, *, max_norm: float = 0.0) -> str | None:
  """Why `delta` cannot be aggregated into `params`, or None if it can.

  Refused: a different tree structure, a leaf of another shape or dtype (no silent casts), a
  non-finite entry, or (max_norm > 0) an L2 norm above max_norm.
  """
  want_leaves, want_structure = jax.tree.flatten(params)
  try:
    got_leaves, got_structure = jax.tree.flatten(delta)
  except Exception as error:  # pylint: disable=broad-except  (an upload may be any object)
    return f"not a parameter tree ({type(error).__name__})"
  if got_structure != want_structure:
    return f"structure {got_structure} differs from the model's {want_structure}"
  squared = 0.0
  for path_and_want, got in zip(jax.tree_util.tree_leaves_with_path(params), got_leaves):
    path, want = path_and_want
    where = jax.tree_util.keystr(path)
    if not hasattr(got, "shape") or not hasattr(got, "dtype"):
      return f"{where} is a {type(got).__name__}, not an array"
    if tuple(got.shape) != tuple(np.shape(want)):
      return f"{where} has shape {tuple(got.shape)}, the model's is {tuple(np.shape(want))}"
    if np.dtype(got.dtype) != np.dtype(want.dtype):
      return f"{where} has dtype {np.dtype(got.dtype)}, the model's is {np.dtype(want.dtype)}"
    values = np.asarray(got, np.float64)
    if not np.all(np.isfinite(values)):
      return f"{where} holds non-finite values"
    squared += float(np.sum(values * values))
  if max_norm > 0 and np.sqrt(squared) > max_norm:
    return f"L2 norm {np.sqrt(squared):.4g} exceeds the bound {max_norm:g}"
  return None


def stack_uploads(deltas: Sequence[Any], params: Any, *,
                  max_norm: float = 0.0) -> StackedUploads:
  """Stacks the uploads that pass `check_upload`; refused ones become masked zero slots."""
  reasons = [check_upload(delta, params, max_norm=max_norm) for delta in deltas]
  zeros = jax.tree.map(lambda leaf: np.zeros(np.shape(leaf), leaf.dtype), params)
  rows = [delta if reason is None else zeros for delta, reason in zip(deltas, reasons)]
  updates = jax.tree.map(lambda *leaves: np.stack([np.asarray(x) for x in leaves]), *rows) \
      if rows else jax.tree.map(lambda leaf: np.zeros((0,) + np.shape(leaf), leaf.dtype), params)
  mask = np.asarray([reason is None for reason in reasons], np.float32)
  return StackedUploads(updates=updates, mask=mask, reasons=reasons)
