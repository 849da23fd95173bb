"""The run's random keys: independent streams derived from the seed by name."""

from __future__ import annotations

import jax

# Adding a stream changes no other: each is folded in by its own number.
_STREAMS = {"recall_serving": 2, "theta0": 3, "clients": 4, "central": 5, "local_only": 6,
            "recall_fold": 7, "decoys": 8, "finetune": 9, "recall_baselines": 10,
            "personal": 11, "audit": 12}


def stream_key(seed: int, stream: str, index: int = 0) -> jax.Array:
  """The run's key for one named stream (a simulator and a deployment derive the same keys)."""
  return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), _STREAMS[stream]), index)
