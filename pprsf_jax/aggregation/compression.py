"""Upload compression, run on the client (written for ONE client, vmapped over the cohort).

A `Compressor` encodes a client's update before upload and reports the bits it would take on
the wire; the server receives the decoded update. Stateful compressors keep their state on the
client across rounds:

  state = init(params)                                    # one client's state
  decoded, state, bits = compress(delta, state, key)

Bit counts: a dense float32 update costs 32 bits per parameter.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from pprsf_jax.aggregation.base import EmptyState

FLOAT_BITS = 32
INDEX_BITS = 32


class Compressor(NamedTuple):
  init: Callable[[Any], Any]
  compress: Callable[[Any, Any, jax.Array], tuple[Any, Any, jax.Array]]


def dense_bits(params) -> int:
  """Bits of an uncompressed float32 upload of `params`' shape."""
  return FLOAT_BITS * sum(leaf.size for leaf in jax.tree.leaves(params))


def no_compression() -> Compressor:
  """Uploads the float32 update as is."""

  def compress(delta, state, key):
    del key
    return delta, state, jnp.asarray(dense_bits(delta), jnp.float32)

  return Compressor(lambda params: EmptyState(), compress)


def stochastic_quantization(bits: int) -> Compressor:
  """Unbiased stochastic uniform quantization to 2^bits levels per tensor.

  Each tensor is sent as its min and max (two float32) and one `bits`-bit level per entry; a value
  between two levels rounds up with probability equal to its distance from the lower one, so the
  decoded update equals the true one in expectation (E[decode(encode(x))] = x).
  """
  if not 1 <= bits <= 16:
    raise ValueError(f"stochastic_quantization: bits={bits} must be in [1, 16]")
  levels = 2**bits - 1

  def quantize(leaf, key):
    low, high = jnp.min(leaf), jnp.max(leaf)
    span = high - low
    step = jnp.where(span > 0, span / levels, 1.0)
    position = (leaf - low) / step  # in [0, levels]
    lower = jnp.floor(position)
    up = jax.random.uniform(key, leaf.shape, leaf.dtype) < (position - lower)
    level = jnp.clip(lower + up, 0, levels)
    return jnp.where(span > 0, low + level * step, leaf).astype(leaf.dtype)

  def compress(delta, state, key):
    leaves, treedef = jax.tree.flatten(delta)
    keys = jax.random.split(key, len(leaves))
    decoded = jax.tree.unflatten(treedef, [quantize(leaf, k) for leaf, k in zip(leaves, keys)])
    size = sum(leaf.size for leaf in leaves)
    return decoded, state, jnp.asarray(bits * size + 2 * FLOAT_BITS * len(leaves), jnp.float32)

  return Compressor(lambda params: EmptyState(), compress)


class ErrorFeedbackState(NamedTuple):
  residual: Any  # what earlier rounds' compression left out, same structure as params


def top_k_sparsification(fraction: float) -> Compressor:
  """Top-k sparsification with error feedback (Stich et al., 2018; Karimireddy et al., 2019).

  The client adds last round's residual to its update, sends the k = ceil(fraction * P)
  largest-magnitude entries (value + index each) and keeps the rest as the next residual, so
  nothing is lost: the sum of what was sent plus the residual equals the sum of the updates.
  """
  if not 0 < fraction <= 1:
    raise ValueError(f"top_k_sparsification: fraction={fraction} must be in (0, 1]")

  def init(params):
    return ErrorFeedbackState(residual=jax.tree.map(jnp.zeros_like, params))

  def compress(delta, state, key):
    del key
    accumulated = jax.tree.map(jnp.add, delta, state.residual)
    flat, unravel = ravel_pytree(accumulated)
    k = min(flat.size, max(1, math.ceil(fraction * flat.size - 1e-9)))
    _, chosen = jax.lax.top_k(jnp.abs(flat), k)
    keep = jnp.zeros(flat.shape, bool).at[chosen].set(True)
    sent = jnp.where(keep, flat, 0)
    residual = jnp.where(keep, 0, flat)
    return (unravel(sent), ErrorFeedbackState(residual=unravel(residual)),
            jnp.asarray(k * (FLOAT_BITS + INDEX_BITS), jnp.float32))

  return Compressor(init, compress)
