"""Simulated Byzantine clients: a fixed share of the federation attacks every round it is sampled.

Two kinds of attack, as the literature splits them:
- model poisoning, applied to the upload (one client, inside the vmapped round):
  `sign_flip` (-delta), `scaling` (scale * delta), `gaussian` (random noise instead of an update);
- data poisoning, applied once to the attackers' own training examples on the host:
  `label_flip` (every label inverted) and `item_promotion` (each list holds the target item as the
  only positive, in the slot the recall model ranked last, as FedRecAttack / PipAttack push one
  item; the resulting update is also boosted by `scale` so averaging does not wash it out).

Attackers are real clients with real data; the honest code paths are unchanged.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from pprsf_jax.ranking.features import ClientExamples

ATTACKS = ("none", "sign_flip", "scaling", "gaussian", "label_flip", "item_promotion")
ATTACK_STREAM = 0xA77AC  # a sub-stream of the client key for the attacker's own randomness


@dataclasses.dataclass(frozen=True)
class Attack:
  kind: str = "none"
  scale: float = 10.0  # `scaling` factor, and the boost of `item_promotion`
  noise_std: float = 1.0  # per-entry standard deviation of `gaussian`

  def __post_init__(self):
    if self.kind not in ATTACKS:
      raise ValueError(f"Attack: kind={self.kind!r} is not one of {ATTACKS}")
    if not (self.scale > 0 and self.noise_std > 0):
      raise ValueError(f"Attack: scale={self.scale} and noise_std={self.noise_std} must be > 0")


def choose_attackers(num_clients: int, share: float, seed: int) -> np.ndarray:
  """[N] bool: exactly round(share * N) attackers, fixed by the seed for the whole run."""
  count = int(round(share * num_clients))
  order = np.random.default_rng(np.random.SeedSequence([seed, 0xBAD])).permutation(num_clients)
  attackers = np.zeros(num_clients, bool)
  attackers[order[:count]] = True
  return attackers


def poison_upload(delta, attack: Attack, key: jax.Array):
  """What an attacking client uploads instead of its honest `delta` (one client)."""
  if attack.kind == "sign_flip":
    return jax.tree.map(jnp.negative, delta)
  if attack.kind in ("scaling", "item_promotion"):
    return jax.tree.map(lambda leaf: leaf * jnp.asarray(attack.scale, leaf.dtype), delta)
  if attack.kind == "gaussian":
    leaves, structure = jax.tree.flatten(delta)
    keys = jax.random.split(jax.random.fold_in(key, ATTACK_STREAM), len(leaves))
    return jax.tree.unflatten(structure, [
        attack.noise_std * jax.random.normal(k, leaf.shape, leaf.dtype)
        for k, leaf in zip(keys, leaves)])
  return delta  # none, label_flip: the update itself is honest (the data was not)


def poison_examples(examples: ClientExamples, attackers: np.ndarray, attack: Attack, *,
                    target_item: int, target_popularity: float) -> ClientExamples:
  """The attackers' training examples after data poisoning ([N, S, K, ...] host arrays)."""
  if attack.kind not in ("label_flip", "item_promotion") or not attackers.any():
    return examples
  labels = np.array(examples.labels, copy=True)
  rows = np.flatnonzero(attackers)
  real = examples.mask[rows] > 0
  if attack.kind == "label_flip":
    labels[rows] = np.where(real, 1.0 - labels[rows], labels[rows])
    return examples._replace(labels=labels)
  items, popularity, mask = (np.array(a, copy=True) for a in
                             (examples.items, examples.popularity, examples.mask))
  # The slot the recall model ranked last among the real ones (ties: the later slot).
  scores = np.where(real, examples.recall_scores[rows], np.inf)
  slot = scores.shape[-1] - 1 - np.argmin(scores[..., ::-1], axis=-1)  # [A, S]
  has_real = real.any(axis=-1)
  attacker_rows, lists = np.nonzero(has_real)
  index = (rows[attacker_rows], lists, slot[attacker_rows, lists])
  labels[rows] = 0.0
  labels[index] = 1.0
  items[index] = target_item
  popularity[index] = target_popularity
  mask[index] = 1.0
  return examples._replace(items=items, popularity=popularity, labels=labels, mask=mask)
