"""The sampled-negatives protocol (leave-one-out with N negatives, as in NCF, FedNCF, PFedRec).

Each user's held-out item is ranked among N items drawn uniformly, without replacement, from the
items the user never interacted with (in any period, public or private). The evaluation harness
draws them; every method then ranks the same N + 1 items, and HR@k / NDCG@k follow from where
the held-out item lands (`evaluate_lists` with one relevant item per user).
"""

from __future__ import annotations

import numpy as np

from pprsf_jax.types import Interactions


def sample_candidates(held_out: Interactions, everything: Interactions, num_users: int,
                      num_items: int, count: int, seed: int, period: int = 0) -> np.ndarray:
  """[U, count + 1] int32: each user's held-out item, then `count` sampled negatives.

  Users without a held-out item get a row of -1 (they are left out of every metric).

  Raises:
    ValueError: a user has more than one held-out item, or too few unseen items to sample.
  """
  per_user = np.bincount(held_out.user, minlength=num_users)
  if per_user.max(initial=0) > 1:
    raise ValueError("the sampled protocol needs at most one held-out item per user "
                     f"(user {int(per_user.argmax())} has {int(per_user.max())})")
  seen = np.zeros((num_users, num_items), bool)
  seen[everything.user, everything.item] = True
  seen[held_out.user, held_out.item] = True
  unseen = num_items - seen.sum(1)
  short = np.flatnonzero((per_user > 0) & (unseen < count))
  if short.size:
    raise ValueError(f"user {int(short[0])} has only {int(unseen[short[0]])} unseen items; "
                     f"cannot sample {count} negatives")
  rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5A3D, period]))
  lists = np.full((num_users, count + 1), -1, np.int32)
  lists[held_out.user, 0] = held_out.item
  # Uniform without replacement among unseen items: the `count` unseen items of smallest
  # random priority (seen items get priority 2, above every draw).
  priority = np.where(seen, 2.0, rng.random((num_users, num_items)))
  negatives = np.argpartition(priority, count, axis=1)[:, :count] if count < num_items else (
      np.argsort(priority, axis=1)[:, :count])
  lists[held_out.user, 1:] = negatives[held_out.user]
  return lists


def held_out_metrics(scores, k: int) -> dict[str, float]:
  """HR@k and NDCG@k from scores [U, 1 + N]: column 0 the held-out item, the rest its negatives.

  The held-out item's rank is 1 + the negatives scored at least as high: a tie counts against
  it (as PFedRec's evaluation ranks it, negatives first), so a model that scores everything
  alike earns nothing. A score that is not finite (a diverged model) loses every comparison it
  is part of: NaN never ranks an item first.
  """
  scores = np.asarray(scores)
  held_out, negatives = scores[:, :1], scores[:, 1:]
  beaten = (negatives >= held_out) | ~np.isfinite(negatives) | ~np.isfinite(held_out)
  rank = 1 + np.sum(beaten, axis=1)
  hit = rank <= k
  return {f"hr@{k}": float(hit.mean()),
          f"ndcg@{k}": float(np.mean(np.where(hit, 1.0 / np.log2(1.0 + rank), 0.0)))}
