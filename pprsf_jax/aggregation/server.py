"""Server transforms: any optax optimizer applied to the pseudo-gradient.

The reduced client update is mean(theta_i) - Theta; the pseudo-gradient is its negation, so
`server_optimizer(optax.sgd(1.0))` is plain FedAvg, and momentum / Adam / Yogi / Adagrad give
FedAvgM / FedAdam / FedYogi / FedAdagrad (Reddi et al., 2021).
"""

from __future__ import annotations

import jax
import optax

from pprsf_jax.aggregation.base import Aggregator


def server_optimizer(optimizer: optax.GradientTransformation) -> Aggregator:
  """Wraps an optax optimizer as the final, server-side stage."""

  def aggregate(updates, state, *, weights, mask, steps, key, params):
    del weights, mask, steps, key
    pseudo_gradient = jax.tree.map(lambda u: -u, updates)
    return optimizer.update(pseudo_gradient, state, params)

  return Aggregator(optimizer.init, aggregate)


def make_server_optimizer(name: str, learning_rate: float) -> optax.GradientTransformation:
  """The optax optimizer a config names."""
  builders = {
      "sgd": lambda: optax.sgd(learning_rate),
      "momentum": lambda: optax.sgd(learning_rate, momentum=0.9),
      "adam": lambda: optax.adam(learning_rate, b1=0.9, b2=0.99, eps=1e-3),
      "yogi": lambda: optax.yogi(learning_rate, b1=0.9, b2=0.99, eps=1e-3),
      "adagrad": lambda: optax.adagrad(learning_rate, eps=1e-3),
  }
  if name not in builders:
    raise ValueError(f"federated.server_optimizer={name!r}: known {sorted(builders)}")
  return builders[name]()
