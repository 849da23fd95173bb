"""Byzantine-robust reducers and per-client bounds over updates stacked [C, ...].

Every reducer honours the client mask explicitly (a padding client is never a candidate, a
neighbour or a coordinate value) and treats a non-finite client update as absent where it says so.
Assumptions (n = clients present, f = tolerated Byzantine clients):

| operator | needs | non-finite uploads |
|---|---|---|
| coordinate_median | f < n / 2 | NaN ignored per coordinate |
| trimmed_mean(beta) | f <= floor(beta * n) per side | NaN sorted as +inf, so trimmed |
| krum(f, m) | n > 2f + 2 | client ignored |
| bulyan(f) | n >= 4f + 3 | client ignored |
| geometric_median | f < n / 2 | client ignored |
| norm_bounding(max_norm) | (a per-client map, chain it before a reducer) | left as is |
| centered_clipping(tau) | f < n / 2, tau of the honest spread | client ignored |
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from pprsf_jax.aggregation.base import Aggregator, EmptyState, safe_divide


# ------------------------------------------------------------------------------ flat client rows
def _flatten(updates) -> tuple[jax.Array, Any]:
  """[C, P] rows (one per client) and a function mapping a [P] row back to one update."""
  leaves, treedef = jax.tree.flatten(updates)
  clients = leaves[0].shape[0]
  shapes = [leaf.shape[1:] for leaf in leaves]
  sizes = [math.prod(shape) for shape in shapes]
  rows = jnp.concatenate([leaf.reshape(clients, -1) for leaf in leaves], axis=1)

  def unflatten(row: jax.Array):
    parts, start = [], 0
    for shape, size, leaf in zip(shapes, sizes, leaves):
      parts.append(row[start:start + size].reshape(shape).astype(leaf.dtype))
      start += size
    return jax.tree.unflatten(treedef, parts)

  return rows, unflatten


def _present(rows: jax.Array, mask: jax.Array) -> jax.Array:
  """[C] bool: a real client whose update is finite."""
  return (mask > 0) & jnp.all(jnp.isfinite(rows), axis=1)


def _reducer(reduce_rows) -> Aggregator:
  """A stateless reducer from a function (rows [C, P], present [C], weights [C]) -> [P]."""

  def aggregate(updates, state, *, weights, mask, steps, key, params):
    del steps, key, params
    rows, unflatten = _flatten(updates)
    return unflatten(reduce_rows(rows, mask, weights)), state

  return Aggregator(lambda params: EmptyState(), aggregate)


# ---------------------------------------------------------------------------- coordinate-wise
def coordinate_median() -> Aggregator:
  """Per-coordinate median of the present clients (Yin et al., 2018). Weights are ignored."""

  def reduce_rows(rows, mask, weights):
    del weights
    values = jnp.where(mask[:, None] > 0, rows, jnp.nan)
    median = jnp.nanmedian(values, axis=0)
    return jnp.where(jnp.isfinite(median), median, 0.0)

  return _reducer(reduce_rows)


def trimmed_mean(beta: float) -> Aggregator:
  """Per coordinate, drops the floor(beta * n) largest and smallest present values and averages
  the rest (Yin et al., 2018). Weights are ignored."""
  if not 0.0 <= beta < 0.5:
    raise ValueError(f"trimmed_mean: beta={beta} must be in [0, 0.5)")

  def reduce_rows(rows, mask, weights):
    del weights
    present = mask > 0
    count = jnp.sum(present)
    cut = jnp.floor(beta * count).astype(jnp.int32)
    # Absent clients sort last (NaN); a present NaN counts as +inf, so it is trimmed from the top.
    values = jnp.where(jnp.isnan(rows), jnp.inf, rows)
    values = jnp.where(present[:, None], values, jnp.nan)
    ordered = jnp.sort(values, axis=0)
    position = jnp.arange(rows.shape[0])[:, None]
    keep = (position >= cut) & (position < count - cut)
    total = jnp.sum(jnp.where(keep, ordered, 0.0), axis=0)
    return safe_divide(total, jnp.maximum(count - 2 * cut, 0).astype(rows.dtype))

  return _reducer(reduce_rows)


# -------------------------------------------------------------------------------- distance-based
def _pairwise_sq_distances(rows: jax.Array, present: jax.Array) -> jax.Array:
  """[C, C] squared distances between present clients; +inf to or from anyone else.

  Uses the Gram form |a|^2 + |b|^2 - 2 a.b: memory O(C^2 + C P), not O(C^2 P). An overflowing
  outlier gives inf (or NaN, mapped to inf): it is simply far from everyone.
  """
  safe = jnp.where(present[:, None], rows, 0.0)
  squares = jnp.sum(safe * safe, axis=1)
  distances = jnp.maximum(squares[:, None] + squares[None, :] - 2.0 * safe @ safe.T, 0.0)
  valid = present[:, None] & present[None, :] & ~jnp.eye(rows.shape[0], dtype=bool)
  return jnp.where(valid & jnp.isfinite(distances), distances, jnp.inf)


def _krum_scores(distances: jax.Array, present: jax.Array, f: int) -> jax.Array:
  """Sum of squared distances to the n - f - 2 nearest others; +inf for absent clients."""
  count = jnp.sum(present)
  neighbours = jnp.maximum(count - f - 2, 1)
  nearest = jnp.sort(distances, axis=1)
  take = jnp.arange(distances.shape[0])[None, :] < neighbours
  scores = jnp.sum(jnp.where(take, nearest, 0.0), axis=1)
  return jnp.where(present, scores, jnp.inf)


def _tie_break(rows: jax.Array) -> jax.Array:
  """[C] a per-client value from the update's content, for breaking equal Krum scores."""
  return jnp.sum(jnp.where(jnp.isfinite(rows), rows, 0.0) ** 2, axis=1)


def _by_score(scores: jax.Array, tie_break: jax.Array) -> jax.Array:
  """Client order by Krum score. Ties (mutual nearest neighbours share a score) are broken by
  the update's content, not its slot, so the result does not depend on client order."""
  return jnp.lexsort((tie_break, scores))


def krum(f: int, m: int = 1) -> Aggregator:
  """(Multi-)Krum (Blanchard et al., 2017): the mean of the m clients whose n - f - 2 nearest
  neighbours are closest. m = 1 is Krum. Needs n > 2f + 2."""
  if f < 0 or m < 1:
    raise ValueError(f"krum: f={f} must be >= 0 and m={m} >= 1")

  def reduce_rows(rows, mask, weights):
    del weights
    present = _present(rows, mask)
    scores = _krum_scores(_pairwise_sq_distances(rows, present), present, f)
    order = _by_score(scores, _tie_break(rows))
    chosen = jnp.zeros(rows.shape[0], bool).at[order[:m]].set(True) & present
    chosen_rows = jnp.where(chosen[:, None], rows, 0.0)
    return safe_divide(jnp.sum(chosen_rows, axis=0), jnp.sum(chosen).astype(rows.dtype))

  return _reducer(reduce_rows)


def bulyan(f: int) -> Aggregator:
  """Bulyan (El Mhamdi et al., 2018): Krum picks n - 2f clients one at a time; per coordinate,
  the n - 4f values closest to their median are averaged. Needs n >= 4f + 3."""
  if f < 0:
    raise ValueError(f"bulyan: f={f} must be >= 0")

  def reduce_rows(rows, mask, weights):
    del weights
    present = _present(rows, mask)
    count = jnp.sum(present)
    distances = _pairwise_sq_distances(rows, present)
    tie_break = _tie_break(rows)
    # Each client's neighbours sorted once (O(C^2 log C)); a pick then scores every remaining
    # client by walking its sorted row in O(C), so the n - 2f picks cost O(C^3), not O(C^3 log C).
    neighbour_order = jnp.argsort(distances, axis=1, stable=True)
    sorted_distances = jnp.take_along_axis(distances, neighbour_order, axis=1)

    def pick(selected, step):
      remaining = present & ~selected
      remaining_count = jnp.sum(remaining)
      wanted_neighbours = jnp.maximum(remaining_count - f - 2, 1)
      alive = remaining[neighbour_order]  # [C, C]: is the j-th nearest neighbour of i remaining
      take = alive & (jnp.cumsum(alive, axis=1) <= wanted_neighbours)
      scores = jnp.sum(jnp.where(take, sorted_distances, 0.0), axis=1)
      # Remaining clients first even when their score is inf (the last of them, f = 0).
      best = jnp.lexsort((tie_break, scores, ~remaining))[0]
      wanted = step < count - 2 * f
      return selected.at[best].set(selected[best] | (wanted & remaining[best])), None

    selected, _ = jax.lax.scan(pick, jnp.zeros(rows.shape[0], bool), jnp.arange(rows.shape[0]))
    values = jnp.where(selected[:, None], rows, jnp.nan)
    median = jnp.nanmedian(values, axis=0)
    distance = jnp.where(selected[:, None], jnp.abs(rows - median[None, :]), jnp.inf)
    order = jnp.argsort(distance, axis=0, stable=True)
    closest = jnp.take_along_axis(jnp.where(selected[:, None], rows, 0.0), order, axis=0)
    keep_count = jnp.maximum(count - 4 * f, 1)
    keep = jnp.arange(rows.shape[0])[:, None] < keep_count
    total = jnp.sum(jnp.where(keep, closest, 0.0), axis=0)
    return safe_divide(total, jnp.minimum(keep_count, jnp.sum(selected)).astype(rows.dtype))

  return _reducer(reduce_rows)


def geometric_median(iterations: int = 20, epsilon: float = 1e-6) -> Aggregator:
  """Weighted geometric median by Weiszfeld's iterations, started at the coordinate median
  (RFA, Pillutla et al., 2022)."""
  if iterations < 1 or epsilon <= 0:
    raise ValueError(f"geometric_median: iterations={iterations} >= 1, epsilon={epsilon} > 0")

  def reduce_rows(rows, mask, weights):
    present = _present(rows, mask)
    safe = jnp.where(present[:, None], rows, 0.0)
    client_weights = jnp.where(present, weights, 0.0)
    start = jnp.nanmedian(jnp.where(present[:, None], rows, jnp.nan), axis=0)
    start = jnp.where(jnp.isfinite(start), start, 0.0)

    def step(center, _):
      distance = jnp.maximum(jnp.linalg.norm(safe - center[None, :], axis=1), epsilon)
      beta = client_weights / distance
      return safe_divide(beta @ safe, jnp.sum(beta)), None

    center, _ = jax.lax.scan(step, start, None, length=iterations)
    return center

  return _reducer(reduce_rows)


# --------------------------------------------------------------------------------- clipping
def norm_bounding(max_norm: float) -> Aggregator:
  """Per-client map: scales each update to L2 norm at most `max_norm` (Sun et al., 2019).
  Keeps the client axis; chain it before a reducer."""
  if max_norm <= 0:
    raise ValueError(f"norm_bounding: max_norm={max_norm} must be > 0")

  def aggregate(updates, state, *, weights, mask, steps, key, params):
    del weights, mask, steps, key, params
    rows, _ = _flatten(updates)
    norms = jnp.linalg.norm(rows, axis=1)
    scale = jnp.minimum(1.0, safe_divide(jnp.full_like(norms, max_norm), norms))
    scale = jnp.where(norms > 0, scale, 1.0)
    return jax.tree.map(
        lambda leaf: leaf * scale.reshape((-1,) + (1,) * (leaf.ndim - 1)).astype(leaf.dtype),
        updates), state

  return Aggregator(lambda params: EmptyState(), aggregate)


class CenteredClippingState(NamedTuple):
  center: Any  # the previous round's aggregate, same structure as params: where clipping starts


def centered_clipping(tau: float, iterations: int = 3) -> Aggregator:
  """Centered clipping (Karimireddy et al., 2021): starting from the last aggregate v,
  repeat v <- v + weighted mean of clip(x_i - v, tau). Stateful: v carries over rounds."""
  if tau <= 0 or iterations < 1:
    raise ValueError(f"centered_clipping: tau={tau} must be > 0 and iterations={iterations} >= 1")

  def init(params):
    return CenteredClippingState(center=jax.tree.map(jnp.zeros_like, params))

  def aggregate(updates, state, *, weights, mask, steps, key, params):
    del steps, key, params
    rows, unflatten = _flatten(updates)
    center, _ = _flatten(jax.tree.map(lambda leaf: leaf[None], state.center))
    present = _present(rows, mask)
    safe = jnp.where(present[:, None], rows, 0.0)
    client_weights = jnp.where(present, weights, 0.0)

    def step(v, _):
      offset = safe - v[None, :]
      norms = jnp.linalg.norm(offset, axis=1)
      scale = jnp.where(norms > tau, tau / jnp.maximum(norms, 1e-12), 1.0)
      clipped = offset * scale[:, None]
      return v + safe_divide(client_weights @ clipped, jnp.sum(client_weights)), None

    aggregate_row, _ = jax.lax.scan(step, center[0], None, length=iterations)
    result = unflatten(aggregate_row)
    return result, CenteredClippingState(center=result)

  return Aggregator(init, aggregate)
