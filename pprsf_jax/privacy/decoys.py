"""Request privacy: a client hides its Top-T among decoys before asking the server to re-rank.

The Top-T request reveals what a user likes. Each client adds D decoys, drawn uniformly from its
own candidates outside its Top-T, with scores that look like its real ones (drawn uniformly
between two neighbouring real scores, so no value repeats and the range is the real range), and
sends the T + D items sorted by score. The server re-ranks all of them; the client, which alone
knows the decoys, drops them before showing the list. Cost: D more (id, score) pairs up, and
re-rank decisions taken over a list that holds decoys. Both run on the client, vmapped.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def pad_request(items: jax.Array, scores: jax.Array, candidates: jax.Array,
                candidate_mask: jax.Array, key: jax.Array,
                num_decoys: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """One client's padded request.

  Args:
    items: [T] int32 its Top-T (-1 empty slots), scores: [T] float32 descending (-inf empty).
    candidates: [K] int32 every candidate it ranked, candidate_mask: [K] real ones.
    key: The client's key for this request.
    num_decoys: D.

  Returns:
    ([T + D] items, [T + D] scores, sorted by score descending; [D] int32 the decoys, -1 where
    the client had too few candidates left) — the last stays on the client.
  """
  choice_key, slot_key, mix_key = jax.random.split(key, 3)
  eligible = (candidate_mask > 0) & ~jnp.any(candidates[:, None] == items[None, :], axis=1)
  # Gumbel top-k over the eligible candidates: D distinct ones, uniformly.
  noise = jnp.where(eligible, jax.random.gumbel(choice_key, candidates.shape), -jnp.inf)
  drawn, position = jax.lax.top_k(noise, min(num_decoys, candidates.shape[0]))
  decoys = jnp.where(jnp.isfinite(drawn), candidates[position], -1)
  decoys = jnp.pad(decoys, (0, num_decoys - decoys.shape[0]), constant_values=-1)

  real = jnp.isfinite(scores)
  count = jnp.sum(real)
  ascending = jnp.sort(jnp.where(real, scores, jnp.inf))  # real scores first, ascending
  slot = jax.random.randint(slot_key, (num_decoys,), 0, jnp.maximum(count - 1, 1))
  low = ascending[slot]
  high = jnp.where(count > 1, ascending[jnp.minimum(slot + 1, count - 1)], low + 1.0)
  mix = jax.random.uniform(mix_key, (num_decoys,))
  decoy_scores = jnp.where((decoys >= 0) & (count > 0), low + mix * (high - low), -jnp.inf)

  all_items = jnp.concatenate([items, decoys])
  all_scores = jnp.concatenate([scores, decoy_scores])
  order = jnp.argsort(-all_scores, stable=True)
  return all_items[order], all_scores[order], decoys


def drop_decoys(ranked_items: jax.Array, decoys: jax.Array, k: int) -> jax.Array:
  """[k] the first k items of the server's re-ranked list that are not the client's decoys."""
  is_decoy = jnp.any((ranked_items[:, None] == decoys[None, :]) & (decoys[None, :] >= 0), axis=1)
  keep = jnp.argsort(is_decoy, stable=True)[:k]  # real items first, in the server's order
  return jnp.where(is_decoy[keep], -1, ranked_items[keep])
