"""Request privacy: a client hides its Top-T among decoys before asking the server to re-rank.

The Top-T request reveals what a user likes. Each client adds decoys drawn uniformly from the
candidates the server sent it (every real one outside its Top-T — never filtered by what the
client knows privately, or a candidate's absence would tell the server it is in the private
history), with scores that look like its real ones (drawn uniformly between two neighbouring real
scores, so no value repeats and the range is the real range), and sends them with its Top-T
sorted by score. A request always names min(T + D, real candidates) items: a Top-T left short
by the private filter is topped up with more decoys, so the request's size and membership are
functions of what the server sent alone (with D = K - T, every candidate appears). The server
re-ranks all of them; the client, which alone knows the decoys, drops them before showing the
list. Cost: D more (id, score) pairs up, and re-rank decisions taken over a list that holds
decoys. Both run on the client, vmapped.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def pad_request(items: jax.Array, scores: jax.Array, candidates: jax.Array, key: jax.Array,
                num_decoys: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """One client's padded request.

  Args:
    items: [T] int32 its Top-T (-1 empty slots), scores: [T] float32 descending (-inf empty).
    candidates: [K] int32 every candidate the server sent it (-1 pads).
    key: The client's key for this request.
    num_decoys: D.

  Returns:
    ([T + D] items, [T + D] scores, sorted by score descending, -1 / -inf only where the server
    sent fewer than T + D candidates; [T + D] int32 the decoys, -1 in unused slots) — the last
    stays on the client.
  """
  choice_key, slot_key, mix_key = jax.random.split(key, 3)
  size = items.shape[0] + num_decoys
  sent = candidates >= 0
  eligible = sent & ~jnp.any(candidates[:, None] == items[None, :], axis=1)
  # As many decoys as it takes to name min(T + D, real candidates) items in all.
  wanted = jnp.minimum(size, jnp.sum(sent)) - jnp.sum(items >= 0)
  # Gumbel top-k over the eligible candidates: distinct ones, uniformly; keep the first `wanted`.
  noise = jnp.where(eligible, jax.random.gumbel(choice_key, candidates.shape), -jnp.inf)
  drawn, position = jax.lax.top_k(noise, min(size, candidates.shape[0]))
  keep = jnp.isfinite(drawn) & (jnp.arange(drawn.shape[0]) < wanted)
  decoys = jnp.where(keep, candidates[position], -1)
  decoys = jnp.pad(decoys, (0, size - decoys.shape[0]), constant_values=-1)

  real = jnp.isfinite(scores)
  count = jnp.sum(real)
  ascending = jnp.sort(jnp.where(real, scores, jnp.inf))  # real scores first, ascending
  slot = jax.random.randint(slot_key, (size,), 0, jnp.maximum(count - 1, 1))
  # With no real score to imitate (every candidate filtered out), decoys fall in [0, 1).
  low = jnp.where(count > 0, ascending[slot], 0.0)
  high = jnp.where(count > 1, ascending[jnp.minimum(slot + 1, count - 1)], low + 1.0)
  mix = jax.random.uniform(mix_key, (size,))
  decoy_scores = jnp.where(decoys >= 0, low + mix * (high - low), -jnp.inf)

  all_items = jnp.concatenate([items, decoys])
  all_scores = jnp.concatenate([scores, decoy_scores])
  order = jnp.argsort(-all_scores, stable=True)[:size]  # at most `size` are real
  return all_items[order], all_scores[order], decoys


def drop_decoys(ranked_items: jax.Array, decoys: jax.Array, k: int) -> jax.Array:
  """[k] the first k items of the server's re-ranked list that are not the client's decoys."""
  is_decoy = jnp.any((ranked_items[:, None] == decoys[None, :]) & (decoys[None, :] >= 0), axis=1)
  keep = jnp.argsort(is_decoy, stable=True)[:k]  # real items first, in the server's order
  return jnp.where(is_decoy[keep], -1, ranked_items[keep])
